"""Find the finished training run a chapter can reuse instead of training again.

The chapters that compare or evaluate models (chapter 11, say) take the runs of the
training chapters when those finished on the same patients and settings, and train
their own only when none did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prostseg.networks.recipes import recipe
from prostseg.networks.runs import CONFIG_FILE, HISTORY_FILE, SPLIT_FILE, load_config, read_history
from prostseg.preparation.splits import PatientSplit

__all__ = ["FinishedRun", "finished_run"]


@dataclass(frozen=True)
class FinishedRun:
    """A completed training run found by :func:`finished_run`.

    Attributes
    ----------
    config : UNetTrainingConfig or Pix2PixTrainingConfig
        The run's ``config.json``.
    model_path : pathlib.Path
        The final model (``model.keras`` or ``generator.keras``).
    history_path : pathlib.Path
        The run's ``history.csv``.
    """

    config: object
    model_path: Path
    history_path: Path


def finished_run(
    run_dir: str | os.PathLike,
    split: PatientSplit,
    *,
    kind: str,
    data_dir: str | os.PathLike | None = None,
    **settings,
) -> FinishedRun | None:
    """Return the run in ``run_dir`` if it finished and used ``split``, else None.

    A run qualifies when ``run_dir`` holds a ``config.json`` of the given ``kind``,
    its ``split.json`` equals ``split``, its final model exists, ``history.csv`` has
    a row for every configured epoch (an interrupted run does not qualify), it was
    trained on ``data_dir`` (compared as resolved paths; relative paths in the run's
    configuration are taken relative to the current folder), and every keyword of
    ``settings`` equals the configuration field of that name.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run folder of :func:`prostseg.training.loop.train_unet` or
        :func:`prostseg.training.loop.train_pix2pix`; it need not exist.
    split : PatientSplit
        The split the run must have used.
    kind : str
        The model kind the run must have trained (:func:`prostseg.networks.recipes.recipe`).
    data_dir : str or os.PathLike, optional
        The data folder the run must have used.
    **settings
        Further configuration fields and their required values, e.g. ``label="zones"``.

    Returns
    -------
    FinishedRun or None

    Raises
    ------
    ValueError
        For an unknown ``kind`` or a keyword that is no configuration field of it.
    InputError
        When ``run_dir`` holds a ``config.json`` or ``split.json`` that cannot be read
        (a damaged run is reported, not silently skipped).

    Examples
    --------
    >>> import tempfile
    >>> split = PatientSplit(train=["a", "b"], val=[], test=["c"], seed=0)
    >>> finished_run(tempfile.mkdtemp(), split, kind="unet") is None  # no run there
    True
    """
    model_file = recipe(kind).model_file
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    config = load_config(config_path)
    if config.KIND != kind:
        return None
    unknown = sorted(name for name in settings if not hasattr(config, name))
    if unknown:
        raise ValueError(f"{kind} configurations have no field(s) {unknown}")
    model_path, history_path, split_path = (
        run_dir / model_file, run_dir / HISTORY_FILE, run_dir / SPLIT_FILE
    )
    if not (model_path.is_file() and history_path.is_file() and split_path.is_file()):
        return None
    if PatientSplit.from_json(split_path) != split:
        return None
    if data_dir is not None and Path(config.data_dir).resolve() != Path(data_dir).resolve():
        return None
    if any(getattr(config, name) != value for name, value in settings.items()):
        return None
    if len(read_history(history_path)) < config.epochs:
        return None
    return FinishedRun(config, model_path, history_path)
