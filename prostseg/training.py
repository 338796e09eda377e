"""Train the U-Net and Pix2Pix models, reproducibly and resumably.

A run is described by a configuration dataclass (:class:`UNetTrainingConfig`,
:class:`Pix2PixTrainingConfig`) and writes everything into its ``output_dir``::

    OUTPUT_DIR/
      config.json          the configuration (load it with load_config to rerun)
      split.json           the patient-level split the run used
      history.csv          one row per epoch: losses and validation metrics
      logs/                TensorBoard logs (U-Net)
      backup/              U-Net: the last epoch's weights and optimiser state
      checkpoints/         Pix2Pix: tf.train checkpoints (models, optimisers, epoch)
      best.keras           U-Net: the model of the epoch with the lowest validation loss
      model.keras          U-Net: the final model
      generator.keras      Pix2Pix: the final generator (discriminator.keras beside it)
      best_generator.keras Pix2Pix: the generator of the epoch with the best validation Dice

Resuming
--------
Calling the training function again with the same configuration (only ``epochs``,
``verbose`` and ``strategy`` may change) continues the run: after an interruption it
restores the weights, the optimiser state and the epoch counter of the last backup and
trains the remaining epochs; after a completed run it trains the extra epochs when
``epochs`` grew, and nothing otherwise. An ``output_dir`` holding another run, or files
that are not a run, is refused unless ``overwrite=True``.

Pix2Pix builds a fresh data stream for every epoch from ``seed + epoch``, so a resumed
run sees exactly the data an uninterrupted run would have seen. The U-Net is trained
with ``keras.Model.fit`` on one repeated stream; a resumed U-Net run restarts that
stream, so its weights equal those of an uninterrupted run only when the stream does
not depend on the epoch (``shuffle=False``, ``augment=False``, no
``foreground_fraction``); otherwise it is an equally valid run with other random draws.

Distribution
------------
``strategy`` picks a :class:`tf.distribute.Strategy` (:func:`make_strategy`);
``batch_size`` is always the *global* batch, split over the replicas. Multi-worker
training (``strategy="multiworker"``) reads the cluster from the ``TF_CONFIG``
environment variable; start the same command on every worker. The chief writes the
run folder; the other workers keep their own files in ``OUTPUT_DIR/workers/``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import importlib.util
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from prostseg import losses
from prostseg.atomic import atomic_path
from prostseg.datacheck import check_training_data
from prostseg.dataset import (
    LESION_VALUES, MASKS, NUM_ZONE_CLASSES, STACK, ZONE_NAMES, discover_cases,
)
from prostseg.errors import InputError
from prostseg.metrics import ThresholdedDice, ThresholdedIoU, per_class_dice
from prostseg.models import PIX2PIX_UPSAMPLING, build_pix2pix_discriminator, build_pix2pix_generator, build_unet
from prostseg.pipeline import count_slices, pix2pix_dataset, pix2pix_epochs, unet_dataset
from prostseg.splits import PatientSplit, split_patients

__all__ = [
    "STRATEGIES",
    "UNET_LOSSES",
    "Pix2PixTrainingConfig",
    "TrainingResult",
    "UNetTrainingConfig",
    "load_config",
    "make_strategy",
    "read_history",
    "train_pix2pix",
    "train_unet",
]

#: Names accepted by :func:`make_strategy` and the ``strategy`` configuration field.
STRATEGIES = ("auto", "default", "mirrored", "multiworker")

#: U-Net loss functions by configuration name (see :mod:`prostseg.losses`).
UNET_LOSSES = {
    "bce": losses.binary_crossentropy,
    "dice": losses.soft_dice_loss,
    "bce_dice": losses.bce_dice_loss,
}

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.csv"
_WORKERS_FOLDER = "workers"
# Everything a run writes; overwrite=True removes exactly these.
_RUN_ENTRIES = (
    CONFIG_FILE, SPLIT_FILE, HISTORY_FILE, "logs", "backup", "checkpoints", "best.keras",
    "model.keras", "generator.keras", "best_generator.keras", "discriminator.keras", _WORKERS_FOLDER,
)
# Fields that may differ when a run is resumed.
_RESUMABLE_CHANGES = ("epochs", "verbose", "strategy", "output_dir", "cache")


# --- configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class _TrainingConfig:
    """Fields shared by both models; see the subclasses for their meaning."""

    KIND: ClassVar[str] = ""

    data_dir: str
    output_dir: str
    split_file: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    image_size: int = 0
    target_spacing: float | None = None
    batch_size: int = 1
    epochs: int = 1
    learning_rate: float = 1e-3
    base_filters: int = 32
    augment: bool = False
    shuffle: bool = True
    cache: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "auto"
    verbose: int = 2

    def __post_init__(self):
        for name in ("data_dir", "output_dir", "split_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        for name in ("image_size", "batch_size", "epochs", "base_filters"):
            _check_positive_int(getattr(self, name), name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.target_spacing is not None:
            if isinstance(self.target_spacing, bool) or not isinstance(self.target_spacing, (int, float)) \
                    or not 0 < self.target_spacing < math.inf:
                raise ValueError(f"target_spacing must be a positive number of mm or None, got {self.target_spacing!r}")
            object.__setattr__(self, "target_spacing", float(self.target_spacing))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build a configuration from a dict such as :meth:`to_dict` returns.

        A ``"kind"`` entry, when present, must name this model. Unknown keys are an
        error (a misspelt option must not be ignored silently).
        """
        values = dict(values)
        kind = values.pop("kind", cls.KIND)
        if kind != cls.KIND:
            raise ValueError(f"configuration is for a {kind!r} model, not {cls.KIND!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict, with ``"kind"`` naming the model."""
        return {"kind": self.KIND, **dataclasses.asdict(self)}

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON; an existing file needs ``overwrite=True``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise InputError(path, "file exists; pass overwrite=True to replace it")
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


@dataclass(frozen=True)
class UNetTrainingConfig(_TrainingConfig):
    """How to train a U-Net on T2W slices (see :func:`train_unet`).

    Parameters
    ----------
    data_dir : str
        Folder of cases in the :mod:`prostseg.dataset` layout.
    output_dir : str
        Folder of the run (see the module documentation).
    split_file : str, optional
        A split written by :meth:`prostseg.splits.PatientSplit.to_json`. By default the
        patients are split with :func:`prostseg.splits.split_patients` using
        ``val_fraction``, ``test_fraction`` and ``seed``. Test patients are never used.
    val_fraction, test_fraction : float
        Fractions of patients held out for validation and testing.
    seed : int
        Seeds the split, the weight initialisation and the data stream.
    image_size : int
        Side of the square slices (centre pad/crop); divisible by ``2**depth``.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) before the centre pad/crop,
        so that ``image_size`` pixels cover ``image_size * target_spacing`` mm whatever
        the scan's spacing (:mod:`prostseg.pipeline`). By default (as in the seed
        project) slices keep their own spacing. Inference reads it from the run's
        ``config.json`` (:func:`prostseg.inference.predict_case`).
    batch_size : int
        Global batch size (all replicas together).
    epochs : int
        Number of epochs; an epoch is ``steps_per_epoch`` batches.
    learning_rate : float
        Adam learning rate.
    base_filters, depth : int
        U-Net size (:func:`prostseg.models.build_unet`).
    loss : {"bce", "dice", "bce_dice"}
        Binary cross-entropy (the original project's choice), soft Dice, or their sum.
    label : {"lesion", "zones"}
        The mask to learn: lesions, or the whole gland (every non-zero zone).
    lesion_value : {1, 255}
        Value of lesion voxels in the lesion masks (background is 0); 255 must be
        stated, see :func:`prostseg.dataset.load_mask`.
    drop_empty : bool
        Train on slices with foreground only.
    foreground_fraction : float, optional
        Draw foreground slices with this probability (oversampling; see
        :func:`prostseg.pipeline.unet_dataset`).
    steps_per_epoch : int, optional
        Batches per epoch; by default one pass over the training slices.
    cache : bool
        Keep the prepared training volumes in memory after the first epoch
        (:func:`prostseg.pipeline.unet_dataset`).
    augment, shuffle : bool
        Random quarter turns and flips; shuffling of cases and slices.
    mixed_precision : bool
        Compute in float16 (``mixed_float16``; for GPUs), keeping float32 weights and
        float32 output probabilities.
    jit_compile : bool
        Compile the training step with XLA.
    strategy : {"auto", "default", "mirrored", "multiworker"}
        See :func:`make_strategy`.
    verbose : int
        Keras progress display: 0 silent, 1 progress bar, 2 one line per epoch.

    Examples
    --------
    >>> config = UNetTrainingConfig("data/phantom", "runs/unet", epochs=3)
    >>> config.loss, config.label, config.image_size
    ('bce', 'lesion', 384)
    >>> UNetTrainingConfig.from_dict(config.to_dict()) == config
    True
    """

    KIND: ClassVar[str] = "unet"

    image_size: int = 384
    batch_size: int = 8
    epochs: int = 50
    learning_rate: float = 1e-3
    base_filters: int = 32
    depth: int = 4
    loss: str = "bce"
    label: str = "lesion"
    lesion_value: int = 1
    drop_empty: bool = False
    foreground_fraction: float | None = None
    steps_per_epoch: int | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_positive_int(self.depth, "depth")
        if self.loss not in UNET_LOSSES:
            raise ValueError(f"loss must be one of {tuple(UNET_LOSSES)}, got {self.loss!r}")
        if self.label not in MASKS:
            raise ValueError(f"label must be one of {MASKS}, got {self.label!r}")
        if self.lesion_value not in LESION_VALUES:
            raise ValueError(f"lesion_value must be one of {LESION_VALUES}, "
                             f"got {self.lesion_value!r}")
        if self.steps_per_epoch is not None:
            _check_positive_int(self.steps_per_epoch, "steps_per_epoch")
        if self.image_size % 2**self.depth:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**depth = {2**self.depth}"
            )


@dataclass(frozen=True)
class Pix2PixTrainingConfig(_TrainingConfig):
    """How to train Pix2Pix on registered T2W/DWI/ADC stacks (see :func:`train_pix2pix`).

    Fields shared with :class:`UNetTrainingConfig` mean the same; the defaults follow
    the Pix2Pix paper and the original project (Adam 2e-4, ``beta_1`` 0.5, batch 1,
    lambda 100, random flips and quarter turns).

    Parameters
    ----------
    image_size : int
        Side of the square slices (bilinear resize); a power of two for the default
        generator depth.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) and centre pad or crop it to
        ``image_size`` instead of resizing the whole slice (:mod:`prostseg.pipeline`):
        the network then sees every scan at the same physical scale, on a field of
        view of ``image_size * target_spacing`` mm. By default slices are resized, as
        in the seed project.
    base_filters : int
        Filters of the generator's first level (64 in the paper).
    generator_levels : int, optional
        Down levels of the generator; by default down to 1x1 pixels.
    discriminator_filters, discriminator_downsamples : int
        PatchGAN size (:func:`prostseg.models.build_pix2pix_discriminator`).
    generator_upsampling : {"transpose", "resize"}
        Up levels of the generator (:func:`prostseg.models.build_pix2pix_generator`):
        the paper's transposed convolutions, or resize + convolution (no checkerboard).
    l1_weight : float
        Weight of the L1 term of the generator loss.
    crossentropy_weight : float
        Weight of a categorical cross-entropy term between the generator's zone
        probabilities and the true zones, added to the generator loss
        (:func:`prostseg.losses.categorical_crossentropy`). 0 (the paper) leaves it
        out. Unlike L1, its gradient does not fade on pixels given to a wrong zone.
    decay_epochs : int
        Decay both learning rates linearly over the last ``decay_epochs`` epochs, to
        ``learning_rate / (decay_epochs + 1)`` in the last one (the schedule of the
        authors' implementation: constant, then linear decay; :meth:`learning_rate_at`).
        0 (the default) keeps them constant. A run extended to more ``epochs`` follows
        the new schedule from where it stopped, so it differs from a straight run of
        that length when this is set.
    beta_1 : float
        Adam ``beta_1`` of both optimisers.
    cache : bool
        Keep the prepared training and validation volumes in memory after the first
        epoch instead of reading and preparing the files again every epoch
        (:func:`prostseg.pipeline.pix2pix_epochs`); use it when they fit in memory
        (``4 * 8 * image_size**2`` bytes per slice).
    checkpoint_every : int
        Save a checkpoint every this many epochs (and after the last one); a resumed
        run repeats at most ``checkpoint_every - 1`` epochs.

    Examples
    --------
    >>> config = Pix2PixTrainingConfig("data/phantom", "runs/pix2pix")
    >>> config.learning_rate, config.beta_1, config.batch_size, config.image_size
    (0.0002, 0.5, 1, 256)
    """

    KIND: ClassVar[str] = "pix2pix"

    image_size: int = 256
    batch_size: int = 1
    epochs: int = 100
    learning_rate: float = 2e-4
    base_filters: int = 64
    augment: bool = True
    generator_levels: int | None = None
    generator_upsampling: str = "transpose"
    discriminator_filters: int = 64
    discriminator_downsamples: int = 3
    l1_weight: float = 100.0
    crossentropy_weight: float = 0.0
    decay_epochs: int = 0
    beta_1: float = 0.5
    checkpoint_every: int = 1

    def __post_init__(self):
        super().__post_init__()
        for name in ("discriminator_filters", "discriminator_downsamples", "checkpoint_every"):
            _check_positive_int(getattr(self, name), name)
        if self.generator_levels is not None:
            _check_positive_int(self.generator_levels, "generator_levels")
        if isinstance(self.decay_epochs, bool) or not isinstance(self.decay_epochs, int) or self.decay_epochs < 0:
            raise ValueError(f"decay_epochs must be an int >= 0, got {self.decay_epochs!r}")
        for name in ("l1_weight", "crossentropy_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.generator_upsampling not in PIX2PIX_UPSAMPLING:
            raise ValueError(f"generator_upsampling must be one of {PIX2PIX_UPSAMPLING}, "
                             f"got {self.generator_upsampling!r}")


    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of both optimisers in (0-based) ``epoch``.

        Constant for the first ``epochs - decay_epochs`` epochs, then falling by
        ``learning_rate / (decay_epochs + 1)`` per epoch.

        Examples
        --------
        >>> config = Pix2PixTrainingConfig("data", "run", epochs=5, learning_rate=1.0, decay_epochs=3)
        >>> [round(config.learning_rate_at(epoch), 2) for epoch in range(5)]
        [1.0, 1.0, 0.75, 0.5, 0.25]
        """
        decayed = max(0, epoch + 1 - (self.epochs - self.decay_epochs))
        return self.learning_rate * (1.0 - decayed / (self.decay_epochs + 1))


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


_CONFIG_CLASSES = {cls.KIND: cls for cls in (UNetTrainingConfig, Pix2PixTrainingConfig)}


def load_config(path: str | os.PathLike) -> UNetTrainingConfig | Pix2PixTrainingConfig:
    """Read a configuration written by ``to_json`` (for example a run's config.json).

    Raises
    ------
    InputError
        Naming the file when it is not JSON, names no known model ``"kind"`` or holds
        invalid or unknown settings.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = UNetTrainingConfig("data", "runs/unet", epochs=3).to_json(path)
    >>> load_config(path).epochs
    3
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such configuration file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a JSON configuration: {err}") from None
    if not isinstance(values, dict) or values.get("kind") not in _CONFIG_CLASSES:
        raise InputError(path, f"expected a JSON object with \"kind\" one of {tuple(_CONFIG_CLASSES)}")
    try:
        return _CONFIG_CLASSES[values["kind"]].from_dict(values)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"invalid configuration: {err}") from None


# --- strategy and run folder --------------------------------------------------------


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the distribution strategy called ``name``.

    Parameters
    ----------
    name : {"auto", "default", "mirrored", "multiworker"}
        ``"default"``: no distribution (one device). ``"mirrored"``: synchronous
        data parallelism over all GPUs of this machine (over its logical CPUs when
        there is no GPU). ``"auto"``: ``"mirrored"`` when there are two or more GPUs,
        ``"default"`` otherwise. ``"multiworker"``: synchronous data parallelism over
        several machines described by the ``TF_CONFIG`` environment variable; create it
        before TensorFlow runs anything else in the process.

    A process gets one instance of each distributed strategy: later calls return it
    again, because the collective operations of two instances would get mixed up.

    Returns
    -------
    tf.distribute.Strategy

    Examples
    --------
    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker" and "TF_CONFIG" not in os.environ:
        raise ValueError("strategy 'multiworker' needs the TF_CONFIG environment variable")
    if name in ("mirrored", "multiworker"):
        return _collective_strategy(name)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


@functools.cache
def _collective_strategy(name: str) -> tf.distribute.Strategy:
    """One instance per process: the collective-op keys of two instances collide."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _worker_name(strategy: tf.distribute.Strategy) -> str | None:
    """None for the chief (or without a cluster), else e.g. ``'worker-1'``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    task_type, task_id = resolver.task_type, resolver.task_id
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )
    return None if is_chief else f"{task_type}-{task_id}"


def _differences(previous: _TrainingConfig, config: _TrainingConfig) -> list[str]:
    """Fields (other than the resumable ones) in which two configurations differ."""
    if type(previous) is not type(config):
        return ["kind"]
    old, new = previous.to_dict(), config.to_dict()
    return sorted(key for key in new if key not in _RESUMABLE_CHANGES and old[key] != new[key])


def _remove_run_entries(folder: Path) -> None:
    for name in _RUN_ENTRIES:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def _prepare_run_folder(config: _TrainingConfig, worker: str | None, overwrite: bool) -> Path:
    """Check the output folder (resume, refuse or overwrite) and return where to write.

    Only the chief (``worker is None``) inspects and changes ``output_dir``; another
    worker writes to ``output_dir/workers/<worker>``.
    """
    output_dir = Path(config.output_dir)
    if worker is not None:
        folder = output_dir / _WORKERS_FOLDER / worker
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    config_path = output_dir / CONFIG_FILE
    if config_path.exists():
        try:
            differences = _differences(load_config(config_path), config)
        except InputError:
            differences = ["config.json (unreadable)"]
        if differences and not overwrite:
            raise InputError(
                output_dir,
                f"holds another training run (its config.json differs in {', '.join(differences)}); "
                "choose another output folder, rerun with the same settings to resume, or pass "
                "overwrite=True (CLI: --overwrite) to replace it",
            )
        if differences:
            _remove_run_entries(output_dir)
    elif output_dir.exists():
        if not output_dir.is_dir():
            raise InputError(output_dir, "exists and is not a folder")
        if any(entry.name != _WORKERS_FOLDER for entry in output_dir.iterdir()):  # workers may be first
            if not overwrite:
                raise InputError(
                    output_dir,
                    "is not empty and holds no training run (config.json); choose an empty or new "
                    "folder, or pass overwrite=True (CLI: --overwrite) to write into it",
                )
            _remove_run_entries(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config.to_json(config_path, overwrite=True)
    return output_dir


def _patient_split(config: _TrainingConfig, case_ids: Sequence[str]) -> PatientSplit:
    """The configured split, checked against the cases found in ``data_dir``."""
    if config.split_file is None:
        return split_patients(
            case_ids, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
        )
    split = PatientSplit.from_json(config.split_file)
    missing = sorted(set(split.train + split.val) - set(case_ids))
    if missing:
        raise InputError(config.split_file, f"cases not found in {config.data_dir}: {', '.join(missing)}")
    return split


def _write_split(split: PatientSplit, folder: Path) -> None:
    path = folder / SPLIT_FILE
    if path.exists() and PatientSplit.from_json(path) != split:
        raise InputError(path, "differs from the split of this configuration; the run folder was changed by hand")
    split.to_json(path, overwrite=True)


@contextlib.contextmanager
def _dtype_policy(mixed_precision: bool):
    """Build models under ``mixed_float16`` when asked, restoring the global policy after."""
    if not mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_outputs(model: keras.Model) -> keras.Model:
    """``model`` unchanged under float32; else with its outputs cast to float32."""
    if model.output.dtype == "float32":
        return model
    outputs = keras.layers.Activation("linear", dtype="float32", name="float32_output")(model.output)
    return keras.Model(model.input, outputs, name=model.name)


# --- results and history ------------------------------------------------------------


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes
    ----------
    output_dir : pathlib.Path
        Where this process wrote its files (a worker's folder on non-chief workers).
    model_path : pathlib.Path
        The final model: ``model.keras`` (U-Net) or ``generator.keras`` (Pix2Pix).
    history_path : pathlib.Path
        ``history.csv``, one row per epoch (all epochs, resumed ones included).
    epochs_completed : int
        Epochs in the history.
    last : dict
        The last row of the history.
    best : dict
        The row of the best epoch: lowest ``val_loss`` (U-Net; ``loss`` without
        validation patients) or highest ``val_dice_mean`` (Pix2Pix; lowest ``gen_l1``
        without validation patients).
    num_replicas : int
        Replicas the batches were split over.
    """

    output_dir: Path
    model_path: Path
    history_path: Path
    epochs_completed: int
    last: dict[str, float]
    best: dict[str, float]
    num_replicas: int


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a run's ``history.csv`` as one dict of floats per epoch (``epoch`` as int).

    Cells without a value (Keras writes ``NA`` for validation metrics of a run without
    validation patients) become NaN.
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [{key: int(value) if key == "epoch" else _history_value(value) for key, value in row.items()}
            for row in rows]


def _history_value(cell: str) -> float:
    return math.nan if cell in ("", "NA") else float(cell)


def _truncate_history(path: Path, epochs_kept: int) -> list[dict[str, float]]:
    """Drop rows of epochs ``>= epochs_kept`` (they will be trained again); return the rest."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames, [row for row in reader if int(row["epoch"]) < epochs_kept]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return read_history(path)


def _result(folder: Path, model_path: Path, key: str, lower_is_better: bool, replicas: int) -> TrainingResult:
    history_path = folder / HISTORY_FILE
    rows = read_history(history_path) if history_path.exists() else []
    scored = [row for row in rows if math.isfinite(row.get(key, math.nan))]
    sign = 1 if lower_is_better else -1
    best = min(scored, key=lambda row: sign * row[key]) if scored else {}
    return TrainingResult(folder, model_path, history_path, len(rows), rows[-1] if rows else {}, best, replicas)


# --- U-Net --------------------------------------------------------------------------


def _backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a ``keras.callbacks.BackupAndRestore`` folder."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """A TensorBoard callback writing to ``log_dir``, or none when TensorBoard is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn("TensorBoard is not installed: no logs/ for this run (pip install tensorboard)",
                      stacklevel=3)
        return []
    return [keras.callbacks.TensorBoard(log_dir, profile_batch=0)]


def train_unet(
    config: UNetTrainingConfig,
    *,
    overwrite: bool = False,
    callbacks: Iterable[keras.callbacks.Callback] = (),
) -> TrainingResult:
    """Train a U-Net with ``keras.Model.fit`` as ``config`` says.

    Patients are split as configured (``split.json``); training slices stream from
    :func:`prostseg.pipeline.unet_dataset` (repeated, ``steps_per_epoch`` batches per
    epoch), validation slices from the validation patients. The model is built and
    compiled inside the strategy's scope with Adam, the configured loss and the
    thresholded IoU and Dice metrics (:mod:`prostseg.metrics`). Callbacks:
    ``BackupAndRestore`` (every epoch, into ``backup/``), ``ModelCheckpoint``
    (``best.keras``, lowest ``val_loss``), ``CSVLogger`` (``history.csv``) and
    ``TensorBoard`` (``logs/``, when the ``tensorboard`` package is installed). The final model is saved as ``model.keras``.

    Parameters
    ----------
    config : UNetTrainingConfig
        The run.
    overwrite : bool, optional
        Replace another run (or other files) in ``config.output_dir``.
    callbacks : iterable of keras.callbacks.Callback, optional
        Extra callbacks (e.g. a live plot), called after the built-in ones.

    Returns
    -------
    TrainingResult

    Raises
    ------
    InputError
        When ``output_dir`` holds something else (see the module documentation), or
        the data folder or split file cannot be used.
    """
    if config.strategy == "multiworker":
        raise ValueError(
            "the U-Net trains with keras.Model.fit, which in Keras 3 does not work with "
            "MultiWorkerMirroredStrategy (keras-team/keras#20585); use strategy 'mirrored' for the "
            "GPUs of one machine (Pix2Pix, trained with its own loop, does run on several workers)"
        )
    strategy = make_strategy(config.strategy)
    worker = _worker_name(strategy)
    cases = discover_cases(config.data_dir, require=("t2w", config.label))
    split = _patient_split(config, [case.case_id for case in cases])
    by_id = {case.case_id: case for case in cases}
    train_cases, val_cases = [by_id[i] for i in split.train], [by_id[i] for i in split.val]
    check_training_data(config, train_cases, val_cases)  # before anything is written
    folder = _prepare_run_folder(config, worker, overwrite)
    _write_split(split, folder)
    keras.utils.set_random_seed(config.seed)

    options = dict(image_size=config.image_size, label=config.label, target_spacing=config.target_spacing)
    steps = config.steps_per_epoch or max(
        1, count_slices(train_cases, drop_empty=config.drop_empty, **options) // config.batch_size
    )
    train_data = unet_dataset(
        train_cases, batch_size=config.batch_size, shuffle=config.shuffle, augment=config.augment,
        drop_empty=config.drop_empty, foreground_fraction=config.foreground_fraction,
        seed=config.seed, repeat=True, cache=config.cache, **options,
    )
    val_data = val_steps = None
    if val_cases:
        val_data = unet_dataset(val_cases, batch_size=config.batch_size, shuffle=False, **options)
        val_steps = math.ceil(count_slices(val_cases, **options) / config.batch_size)

    with _dtype_policy(config.mixed_precision), strategy.scope():
        model = build_unet(
            (config.image_size, config.image_size, 1), base_filters=config.base_filters, depth=config.depth
        )
        model = _float32_outputs(model)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=UNET_LOSSES[config.loss],
            metrics=[ThresholdedIoU(), ThresholdedDice()],
            jit_compile=config.jit_compile,
        )
        model.optimizer.build(model.trainable_variables)

    monitor = "val_loss" if val_cases else "loss"
    backup_dir, history_path = folder / "backup", folder / HISTORY_FILE
    earlier = _truncate_history(history_path, _backup_epoch(backup_dir))
    best_so_far = min((row[monitor] for row in earlier if monitor in row), default=None)
    # Order matters for interruptions: the history row and best model of an epoch are
    # written before its backup, so a resumed run never misses a row.
    built_in = [
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.ModelCheckpoint(
            folder / "best.keras", monitor=monitor, save_best_only=True, initial_value_threshold=best_so_far
        ),
        *_tensorboard(folder / "logs"),
        keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch", delete_checkpoint=False),
    ]
    model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=val_data,
        validation_steps=val_steps,
        shuffle=False,  # the stream shuffles itself
        callbacks=[*built_in, *callbacks],
        verbose=config.verbose,
    )
    model_path = folder / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    return _result(folder, model_path, monitor, True, strategy.num_replicas_in_sync)


# --- Pix2Pix ------------------------------------------------------------------------

_ZONE_COLUMNS = tuple(f"val_dice_{name.replace(' ', '_')}" for name in ZONE_NAMES)
_LOSS_COLUMNS = ("gen_total", "gen_gan", "gen_l1", "disc")
_CROSSENTROPY_COLUMN = "gen_ce"


def _seed_states(*models: keras.Model) -> list:
    """The random-number states of the models' dropout layers (not tracked by tf.train)."""
    return [v for model in models for v in model.non_trainable_variables if "seed_generator" in v.path]


def _zone_dice(predict_labels, dataset: tf.data.Dataset) -> dict[str, float]:
    """Per-class Dice of ``predict_labels(images)`` (argmax zone ids), pooled over
    ``dataset``'s pixels."""
    predicted, true = [], []
    for images, targets in dataset:
        predicted.append(predict_labels(images).numpy().astype(np.uint8))
        true.append(np.argmax(targets.numpy(), axis=-1).astype(np.uint8))
    scores = per_class_dice(np.concatenate(predicted), np.concatenate(true), NUM_ZONE_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all zones absent: NaN is the answer
        mean = float(np.nanmean(scores[1:]))
    return {**dict(zip(_ZONE_COLUMNS, scores.tolist())), "val_dice_mean": mean}


def train_pix2pix(config: Pix2PixTrainingConfig, *, overwrite: bool = False) -> TrainingResult:
    """Train Pix2Pix (generator and PatchGAN discriminator) with a custom loop.

    Each step, under the strategy (``strategy.run`` on a distributed dataset), the
    generator maps a stack slice to zone probabilities; the discriminator scores
    (stack, true zones) and (stack, generated zones) pairs. Generator loss: GAN
    cross-entropy plus ``l1_weight`` times L1 (plus ``crossentropy_weight`` times the
    categorical cross-entropy, when set); discriminator loss: real plus fake
    cross-entropy (:mod:`prostseg.losses`); per-example losses are averaged over the
    global batch. Both models have their own Adam optimiser. After each epoch the
    generator is evaluated on the *validation* patients (per-class Dice of the argmax
    labels, pooled over all their slices at ``image_size``); the training patients are
    never used for that.

    ``history.csv`` holds per epoch the mean ``gen_total``, ``gen_gan``, ``gen_l1``
    and ``disc`` losses (and ``gen_ce``, the cross-entropy term, when
    ``crossentropy_weight`` is set), ``val_dice_<zone>`` for every zone of
    :data:`prostseg.dataset.ZONE_NAMES` and ``val_dice_mean`` (over the four zones,
    ignoring zones absent from the validation data), and ``seconds``. Checkpoints
    (models, optimisers, epoch counter, dropout random state) go to ``checkpoints/``
    every ``checkpoint_every`` epochs; the final models to ``generator.keras`` and
    ``discriminator.keras``, and the generator of the epoch with the highest
    ``val_dice_mean`` to ``best_generator.keras``.

    Parameters
    ----------
    config : Pix2PixTrainingConfig
        The run. Cases need ``zones`` and a registered ``aligned/stack``.
    overwrite : bool, optional
        Replace another run (or other files) in ``config.output_dir``.

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        When ``batch_size`` is not a multiple of the number of replicas.
    InputError
        As for :func:`train_unet`.
    """
    strategy = make_strategy(config.strategy)  # first: multi-worker set-up precedes other ops
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"batch_size {config.batch_size} is not a multiple of the {replicas} replicas; every replica "
            "needs the same number of slices (batch normalisation of an empty batch gives NaN)"
        )
    worker = _worker_name(strategy)
    cases = discover_cases(config.data_dir, require=("zones", STACK))
    split = _patient_split(config, [case.case_id for case in cases])
    by_id = {case.case_id: case for case in cases}
    train_cases, val_cases = [by_id[i] for i in split.train], [by_id[i] for i in split.val]
    check_training_data(config, train_cases, val_cases)  # before anything is written
    folder = _prepare_run_folder(config, worker, overwrite)
    _write_split(split, folder)
    keras.utils.set_random_seed(config.seed)

    shape = (config.image_size, config.image_size, 3)
    with _dtype_policy(config.mixed_precision), strategy.scope():
        generator = _float32_outputs(build_pix2pix_generator(
            shape, num_classes=NUM_ZONE_CLASSES, base_filters=config.base_filters, levels=config.generator_levels,
            upsampling=config.generator_upsampling,
        ))
        discriminator = _float32_outputs(build_pix2pix_discriminator(
            shape, num_classes=NUM_ZONE_CLASSES, base_filters=config.discriminator_filters,
            downsamples=config.discriminator_downsamples,
        ))
        optimizers = []
        for model in (generator, discriminator):
            optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1)
            if config.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)  # under the scope, before the first step
            optimizers.append(optimizer)
        generator_optimizer, discriminator_optimizer = optimizers
        epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")

    checkpoint = tf.train.Checkpoint(
        generator=generator, discriminator=discriminator, generator_optimizer=generator_optimizer,
        discriminator_optimizer=discriminator_optimizer, epochs_done=epochs_done,
        random_state=_seed_states(generator, discriminator),
    )
    manager = tf.train.CheckpointManager(checkpoint, folder / "checkpoints", max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(epochs_done.numpy())
    history_path = folder / HISTORY_FILE
    kept_rows = _truncate_history(history_path, start)
    best_dice = max((row["val_dice_mean"] for row in kept_rows if np.isfinite(row.get("val_dice_mean", np.nan))),
                    default=-np.inf)

    loss_columns = _LOSS_COLUMNS + ((_CROSSENTROPY_COLUMN,) if config.crossentropy_weight else ())

    def replica_step(images, targets):
        with tf.GradientTape() as generator_tape, tf.GradientTape() as discriminator_tape:
            generated = generator(images, training=True)
            real_logits = discriminator([images, targets], training=True)
            fake_logits = discriminator([images, generated], training=True)
            total, gan, l1 = losses.generator_loss(fake_logits, generated, targets, config.l1_weight)
            disc = losses.discriminator_loss(real_logits, fake_logits)
            per_example = [total, gan, l1, disc]  # the order of loss_columns
            if config.crossentropy_weight:
                crossentropy = losses.categorical_crossentropy(targets, generated)
                per_example[0] = total + config.crossentropy_weight * crossentropy
                per_example.append(crossentropy)
            averaged = [tf.nn.compute_average_loss(v, global_batch_size=config.batch_size) for v in per_example]
            generator_objective, discriminator_objective = averaged[0], averaged[3]
            if config.mixed_precision:
                generator_objective = generator_optimizer.scale_loss(generator_objective)
                discriminator_objective = discriminator_optimizer.scale_loss(discriminator_objective)
        for tape, objective, model, optimizer in (
            (generator_tape, generator_objective, generator, generator_optimizer),
            (discriminator_tape, discriminator_objective, discriminator, discriminator_optimizer),
        ):
            gradients = tape.gradient(objective, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return averaged

    @tf.function(jit_compile=config.jit_compile)
    def distributed_step(images, targets):
        per_replica = strategy.run(replica_step, args=(images, targets))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica]

    val_data = (
        pix2pix_dataset(val_cases, image_size=config.image_size, batch_size=8, augment=False, shuffle=False,
                        target_spacing=config.target_spacing, cache=config.cache)
        if val_cases else None
    )
    # A fresh stream per epoch, seeded by the epoch: a resumed run sees the same data.
    epochs_data = pix2pix_epochs(
        train_cases, first_epoch=start, image_size=config.image_size, batch_size=config.batch_size,
        augment=config.augment, shuffle=config.shuffle, seed=config.seed, target_spacing=config.target_spacing,
        cache=config.cache,
    )
    predict_labels = tf.function(lambda images: tf.argmax(generator(images, training=False), axis=-1))
    for epoch in range(start, config.epochs):
        started = time.perf_counter()
        for optimizer in optimizers:
            optimizer.learning_rate.assign(config.learning_rate_at(epoch))
        train_data = next(epochs_data).rebatch(config.batch_size, drop_remainder=True)
        sums, steps = np.zeros(len(loss_columns)), 0
        for images, targets in strategy.experimental_distribute_dataset(train_data):
            sums += [float(v) for v in distributed_step(images, targets)]
            steps += 1
        if steps == 0:
            raise ValueError(f"the training patients hold fewer than batch_size={config.batch_size} slices")
        row = {"epoch": epoch, **dict(zip(loss_columns, (sums / steps).tolist()))}
        if val_data is not None:
            row.update(_zone_dice(predict_labels, val_data))
            if row["val_dice_mean"] > best_dice:
                best_dice = row["val_dice_mean"]
                generator.save(folder / "best_generator.keras")
        row["seconds"] = time.perf_counter() - started
        _append_row(history_path, row)
        epochs_done.assign(epoch + 1)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            manager.save(checkpoint_number=epoch + 1)
        if config.verbose:
            print(f"epoch {epoch + 1}/{config.epochs}: " + ", ".join(
                f"{key} {value:.4f}" for key, value in row.items() if key != "epoch"), flush=True)

    model_path = folder / "generator.keras"
    for model, path in ((generator, model_path), (discriminator, folder / "discriminator.keras")):
        with atomic_path(path) as tmp:
            model.save(tmp)
    key, lower = ("val_dice_mean", False) if val_cases else ("gen_l1", True)
    return _result(folder, model_path, key, lower, replicas)


def _append_row(path: Path, row: dict[str, float]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
