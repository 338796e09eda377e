"""A model card for every trained run: what the model was trained on, how well it
does, and where it must not be trusted.

:func:`write_model_card` writes ``MODEL_CARD.md`` into a run folder of
:mod:`prostseg.training.loop`, beside the model files. It records:

* the data: the data folder, its licence, and the patient ids of the split;
* the configuration (``config.json``), the software versions and the hardware;
* the training time and the epochs (``history.csv``);
* validation and test scores per patient, with bootstrap confidence intervals over
  patients (:func:`bootstrap_ci`): Dice and IoU of the lesion or gland (U-Net) or the
  mean zone Dice (Pix2Pix), computed by applying the model to each patient
  (:func:`evaluate_patients`);
* its intended use and known limits (phantom-only training, few patients, no test
  patients...), stated from the facts of the run, plus any the caller adds.

The training code calls nothing here; call :func:`write_model_card` when a run ends
(``prostseg.training.loop`` may call it as its last step).
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np

from prostseg import __version__
from prostseg.atomic import atomic_path
from prostseg.data.dataset import NUM_ZONE_CLASSES, PHANTOM_FILE, find_case
from prostseg.data.io import load_volume
from prostseg.errors import InputError
from prostseg.networks.metrics import dice, iou, per_class_dice
from prostseg.networks.recipes import recipe
from prostseg.networks.runs import CONFIG_FILE, HISTORY_FILE, SPLIT_FILE, load_config, read_history
from prostseg.preparation.splits import PatientSplit
from prostseg.use.inference import input_volume, predict_volume, resolve_model

__all__ = ["MODEL_CARD_FILE", "bootstrap_ci", "evaluate_patients", "write_model_card"]

MODEL_CARD_FILE = "MODEL_CARD.md"
_INTENDED_USE = (
    "Research and teaching: segmenting prostate T2-weighted MRI (U-Net) or prostate zones "
    "from registered T2W/DWI/ADC stacks (Pix2Pix) to learn how such models are built and "
    "evaluated. Not a medical device: not for diagnosis, treatment or any clinical decision."
)


def bootstrap_ci(values, *, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-patient scores and its percentile bootstrap confidence interval.

    Patients are resampled with replacement ``n_resamples`` times; the interval is
    given by the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled means. NaN scores are left out.

    Parameters
    ----------
    values : array_like
        One score per patient.
    confidence : float, optional
    n_resamples : int, optional
    seed : int, optional
        Seed of the resampling (the interval is reproducible).

    Returns
    -------
    (mean, low, high) : tuple of float
        NaN for no scores; ``(mean, mean, mean)`` for one patient (no spread to
        resample: the card says how many patients there were).

    Examples
    --------
    >>> mean, low, high = bootstrap_ci([0.8, 0.9, 0.7, 0.85, 0.75])
    >>> round(mean, 3), low < mean < high
    (0.8, True)
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"),) * 3
    mean = float(values.mean())
    if values.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_resamples, values.size), replace=True).mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return mean, float(low), float(high)


def evaluate_patients(model, data_dir: str | os.PathLike, case_ids, *, label: str = "lesion",
                      target_spacing: float | None = None) -> dict[str, dict[str, float]]:
    """Scores of a model on each of some patients.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A U-Net or Pix2Pix generator, or its file (see
        :func:`prostseg.use.inference.resolve_model`).
    data_dir : str or os.PathLike
        The data folder holding the cases.
    case_ids : iterable of str
    label : {"lesion", "zones", "gland"}, optional
        What a single-channel U-Net segments (``"zones"``, ``"gland"``: the whole gland).
    target_spacing : float, optional
        See :func:`prostseg.use.inference.resolve_model`.

    Returns
    -------
    dict
        ``{case_id: {"dice": ..., "iou": ...}}`` of the foreground (U-Net), or
        ``{case_id: {"dice": mean zone Dice}}`` (Pix2Pix, zones present in either map).
    """
    model, target_spacing, model_recipe = resolve_model(model, target_spacing)
    zone_classes = model.output_shape[-1] > 1
    scores = {}
    for case_id in case_ids:
        case_dir = Path(data_dir) / case_id
        truth_name = "zones" if zone_classes else label
        truth = load_volume(find_case(case_dir, require=(truth_name,)).path(truth_name), label=True).data
        volume, _ = input_volume(case_dir, model_recipe)
        pred = predict_volume(model, volume, target_spacing=target_spacing, kind=model_recipe.kind)
        if zone_classes:
            scores[case_id] = {"dice": float(np.nanmean(per_class_dice(pred, truth, NUM_ZONE_CLASSES)[1:]))}
        else:
            scores[case_id] = {"dice": dice(pred > 0, truth > 0), "iou": iou(pred > 0, truth > 0)}
    return scores


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"prostseg": __version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def _hardware() -> str:
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}); "
            + (f"GPUs: {', '.join(gpus)}" if gpus else "no GPU"))


def _data_licence(data_dir: Path, case_ids) -> str:
    if any((data_dir / case_id / PHANTOM_FILE).is_file() for case_id in case_ids):
        return ("synthetic phantoms generated by prostseg (no patient data; Apache-2.0 with the code)")
    return "not recorded: state the licence of the dataset (see its manifest in data_manifests/)"


def _patients(count: int) -> str:
    return f"{count} patient" + ("" if count == 1 else "s")


def _score_table(title: str, scores: dict[str, dict[str, float]]) -> list[str]:
    if not scores:
        return [f"### {title}", "", "No patients in this part of the split.", ""]
    names = list(next(iter(scores.values())))
    lines = [f"### {title} ({_patients(len(scores))})", "",
             "| score | mean | 95% CI (bootstrap over patients) |", "|---|---|---|"]
    for name in names:
        mean, low, high = bootstrap_ci([row[name] for row in scores.values()])
        lines.append(f"| {name} | {mean:.3f} | {low:.3f} to {high:.3f} |")
    lines += ["", "| patient | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {case_id} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |"
              for case_id, row in scores.items()]
    return lines + [""]


def write_model_card(run_dir: str | os.PathLike, *, model_file: str | None = None,
                     training_seconds: float | None = None, evaluate: bool = True,
                     intended_use: str = _INTENDED_USE, known_limits=(), data_licence: str | None = None,
                     overwrite: bool = True) -> Path:
    """Write ``MODEL_CARD.md`` into a training run folder (module documentation).

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run folder of :mod:`prostseg.training.loop` (``config.json``, ``split.json``,
        ``history.csv`` and the model files).
    model_file : str, optional
        The model the card describes; by default ``best.keras`` or ``model.keras``
        (U-Net), ``best_generator.keras`` or ``generator.keras`` (Pix2Pix), the first
        that exists.
    training_seconds : float, optional
        Wall time of training; by default the sum of the ``seconds`` column of the
        history when it has one.
    evaluate : bool, optional
        Score the model on the validation and test patients (takes one prediction
        per patient).
    intended_use : str, optional
    known_limits : iterable of str, optional
        Added to the limits the card states from the facts of the run.
    data_licence : str, optional
        The licence of the training data; phantoms are recognised.
    overwrite : bool, optional
        Replace an existing card (the default: a resumed run updates its card).

    Returns
    -------
    pathlib.Path
        The card, ``run_dir/MODEL_CARD.md``.

    Raises
    ------
    InputError
        When the folder is not a run folder or holds no model file.
    """
    run_dir = Path(run_dir)
    card = run_dir / MODEL_CARD_FILE
    if card.exists() and not overwrite:
        raise InputError(card, "file exists; pass overwrite=True to replace it")
    for name in (CONFIG_FILE, SPLIT_FILE):
        if not (run_dir / name).is_file():
            raise InputError(run_dir, f"not a training run folder: no {name}")
    config = load_config(run_dir / CONFIG_FILE)
    split = PatientSplit.from_json(run_dir / SPLIT_FILE)
    model_recipe = recipe(config.KIND)
    candidates = [model_file] if model_file else [model_recipe.best_file, model_recipe.model_file]
    model_path = next((run_dir / name for name in candidates if (run_dir / name).is_file()), None)
    if model_path is None:
        raise InputError(run_dir, f"holds no model file ({', '.join(candidates)})")
    history = read_history(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).is_file() else []
    if training_seconds is None and history and "seconds" in history[0]:
        training_seconds = float(np.nansum([row["seconds"] for row in history]))
    label = getattr(config, "label", "zones")
    task = model_recipe.task(config)
    data_dir = Path(config.data_dir)
    all_ids = list(split.train) + list(split.val) + list(split.test)
    licence = data_licence or _data_licence(data_dir, all_ids)

    limits = ["Not validated for clinical use; outputs must not guide diagnosis or treatment."]
    if "synthetic phantoms" in licence:
        limits.append("Trained on synthetic phantoms only: its scores say nothing about real MRI, "
                      "where it is expected to fail until it is trained on real data.")
    if len(split.train) < 50:
        limits.append(f"Trained on {len(split.train)} patients: too few to cover the variation of "
                      "scanners, protocols and anatomy; expect failures on unseen sites.")
    if not split.test:
        limits.append("No test patients: the scores below are validation scores, which also "
                      "chose the best epoch, so they are optimistic.")
    limits.extend(known_limits)

    lines = [f"# Model card: {run_dir.name}", "",
             f"Written {datetime.date.today().isoformat()} by `prostseg.use.model_card` for "
             f"`{model_path.name}`: {task}.", "",
             "## Intended use", "", intended_use, "",
             "## Known limits", ""] + [f"- {limit}" for limit in limits] + [""]
    lines += ["## Data", "", f"- data folder: `{config.data_dir}`", f"- licence: {licence}"]
    for part in ("train", "val", "test"):
        ids = getattr(split, part)
        lines.append(f"- {part} ({_patients(len(ids))}): {', '.join(ids) if ids else 'none'}")
    lines += ["", "## Training", ""]
    lines.append(f"- epochs: {len(history)}")
    lines.append("- training time: " + (f"{training_seconds:.0f} s" if training_seconds is not None
                                        else "not recorded"))
    lines.append(f"- hardware: {_hardware()}")
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    lines += ["", "Configuration (`config.json`):", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in config.to_dict().items()]
    lines += ["", "## Scores", ""]
    if evaluate:
        for title, ids in (("Validation", split.val), ("Test", split.test)):
            lines += _score_table(title, evaluate_patients(model_path, data_dir, ids, label=label)
                                  if ids else {})
    else:
        lines += ["Not evaluated when this card was written.", ""]
    with atomic_path(card) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return card
