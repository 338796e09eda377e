"""Training runs on disk, without TensorFlow: configurations, run folders and histories.

A run is described by a configuration dataclass (:class:`UNetTrainingConfig`,
:class:`Pix2PixTrainingConfig`) and writes everything into its ``output_dir``::

    OUTPUT_DIR/
      config.json          the configuration (load it with load_config to rerun)
      split.json           the patient-level split the run used
      history.csv          one row per epoch: losses, validation metrics, seconds
      logs/                TensorBoard logs (train/ and validation/ scalars per epoch)
      checkpoints/         tf.train checkpoints: models, optimisers, epoch counter
                           (the newest two; see prostseg.training.checkpoints)
      best.keras           U-Net: the model of the epoch with the lowest validation loss
      model.keras          U-Net: the final model
      generator.keras      Pix2Pix: the final generator (discriminator.keras beside it)
      best_generator.keras Pix2Pix: the generator of the epoch with the best validation Dice
      workers/             multi-worker runs: the files of the non-chief workers

This module reads and writes those files; :mod:`prostseg.training.loop` trains. Plotting a
history (:func:`read_history`) therefore does not start TensorFlow.

Resuming
--------
Calling the training function again with the same configuration (only ``epochs``,
``verbose``, ``strategy``, ``output_dir`` and ``cache`` may change) continues the run:
after an interruption (a kill at any instant included) it restores the weights, the
optimiser state and the epoch counter of the newest intact checkpoint (a damaged one is
skipped for the one before it, :mod:`prostseg.training.checkpoints`) and trains the remaining
epochs; after a completed run it trains the extra epochs when ``epochs`` grew, and
nothing otherwise. History rows of epochs after the restored checkpoint are dropped and
trained again, so the history never misses or repeats an epoch. Every file of the run
is written atomically (:mod:`prostseg.atomic`). An ``output_dir`` holding another run,
or files that are not a run, is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from prostseg.atomic import atomic_path
from prostseg.data.dataset import LESION_VALUES, MASKS, check_output_outside_inputs
from prostseg.errors import (
    COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, InputError, Interval, path_argument,
)
from prostseg.preparation.splits import PatientSplit, patients_across_parts, read_patient_ids, split_patients

__all__ = [
    "CONFIG_FILE",
    "FIELD_CHOICES",
    "FIELD_RANGES",
    "HISTORY_FILE",
    "PIX2PIX_UPSAMPLING",
    "SPLIT_FILE",
    "STRATEGIES",
    "UNET_LOSS_NAMES",
    "Pix2PixTrainingConfig",
    "TrainingResult",
    "UNetTrainingConfig",
    "append_row",
    "load_config",
    "model_run_config",
    "patient_split",
    "prepare_run_folder",
    "read_history",
    "training_result",
    "truncate_history",
    "write_split",
]

#: Names accepted by :func:`prostseg.training.loop.make_strategy` and the ``strategy`` field.
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
#: U-Net losses by configuration name (the functions: :data:`prostseg.training.loop.UNET_LOSSES`).
UNET_LOSS_NAMES = ("bce", "dice", "bce_dice")
#: Up levels of the Pix2Pix generator (:func:`prostseg.networks.models.build_pix2pix_generator`).
PIX2PIX_UPSAMPLING = ("transpose", "resize")
#: The values a configuration field may take, for the fields that take one of a few.
FIELD_CHOICES = {
    "strategy": STRATEGIES,
    "loss": UNET_LOSS_NAMES,
    "label": MASKS,
    "lesion_value": LESION_VALUES,
    "generator_upsampling": PIX2PIX_UPSAMPLING,
    "verbose": (0, 1, 2),
}

#: The values a numeric configuration field may take (``None`` stays allowed where the
#: field is optional); the command line's flags parse with the same intervals.
FIELD_RANGES = {
    **dict.fromkeys(("image_size", "batch_size", "epochs", "base_filters", "checkpoint_every", "depth",
                     "steps_per_epoch", "generator_levels", "discriminator_filters",
                     "discriminator_downsamples"), COUNT),
    **dict.fromkeys(("seed", "decay_epochs"), NON_NEGATIVE_INT),
    **dict.fromkeys(("val_fraction", "test_fraction", "beta_1"), FRACTION),
    **dict.fromkeys(("learning_rate", "target_spacing"), POSITIVE),
    **dict.fromkeys(("l1_weight", "crossentropy_weight"), NON_NEGATIVE),
    "foreground_fraction": Interval(0, 1, low_open=True),
}

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.csv"
WORKERS_FOLDER = "workers"
# Everything a run writes; overwrite=True removes exactly these.
_RUN_ENTRIES = (
    CONFIG_FILE, SPLIT_FILE, HISTORY_FILE, "logs", "backup", "checkpoints", "best.keras",
    "model.keras", "generator.keras", "best_generator.keras", "discriminator.keras", WORKERS_FOLDER,
)
# Fields that may differ when a run is resumed.
_RESUMABLE_CHANGES = ("epochs", "verbose", "strategy", "output_dir", "cache")
#: The final model file of each kind of run.
MODEL_FILES = {"unet": "model.keras", "pix2pix": "generator.keras"}

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
    slice_cache: str | None = None
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "auto"
    deterministic: bool = False
    checkpoint_every: int = 1
    verbose: int = 2

    def __post_init__(self):
        for name in ("data_dir", "output_dir", "split_file", "slice_cache"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        for name, interval in FIELD_RANGES.items():
            if getattr(self, name, None) is not None:
                interval.check(getattr(self, name), name)
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", float(self.target_spacing))
        if self.val_fraction + self.test_fraction >= 1:
            raise InputError(None, f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction} "
                                   "leave no patient to train on: their sum must be below 1")
        for name, allowed in FIELD_CHOICES.items():
            if hasattr(self, name) and getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.cache and self.slice_cache is not None:
            raise ValueError("give cache (prepared volumes in memory) or slice_cache "
                             "(prepared slices on disk), not both")

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
        Folder of cases in the :mod:`prostseg.data.dataset` layout.
    output_dir : str
        Folder of the run (see the module documentation).
    split_file : str, optional
        A split written by :meth:`prostseg.preparation.splits.PatientSplit.to_json`. By default the
        patients are split with :func:`prostseg.preparation.splits.split_patients` using
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
        the scan's spacing (:mod:`prostseg.preparation.slices`). By default slices keep their
        own spacing. Inference reads it from the run's
        ``config.json`` (:func:`prostseg.use.inference.predict_case`).
    batch_size : int
        Slices per step *on each replica*; the global batch is ``batch_size`` times
        the number of replicas (see the module documentation on the learning rate).
    epochs : int
        Number of epochs; an epoch is ``steps_per_epoch`` batches.
    learning_rate : float
        Adam learning rate.
    base_filters, depth : int
        U-Net size (:func:`prostseg.networks.models.build_unet`).
    loss : {"bce", "dice", "bce_dice"}
        Binary cross-entropy (the original project's choice), soft Dice, or their sum.
    label : {"lesion", "zones", "gland"}
        The mask to learn: lesions, the whole gland as every non-zero zone of a zone
        map, or the whole gland from a gland mask (``gland.nii.gz``).
    lesion_value : {1, 255}
        Value of lesion voxels in the lesion masks (background is 0); 255 must be
        stated, see :func:`prostseg.data.dataset.load_mask`.
    drop_empty : bool
        Train on slices with foreground only.
    foreground_fraction : float, optional
        Draw foreground slices with this probability (oversampling; see
        :func:`prostseg.preparation.pipeline.unet_dataset`).
    steps_per_epoch : int, optional
        Batches per epoch; by default one pass over the training slices.
    cache : bool
        Keep the prepared training volumes in memory after the first epoch
        (:func:`prostseg.preparation.pipeline.unet_dataset`).
    slice_cache : str, optional
        Stream the prepared training and validation slices from this cache folder
        (:mod:`prostseg.preparation.slice_cache`; ``prostseg prepare``'s ``DATA_DIR/.prepared`` by
        default) instead of preparing the files every epoch: for training sets that
        do not fit in memory. Cases without up-to-date slices there are prepared
        first. Images are rounded to float16, masks stay exact. Not with ``cache``.
    augment : bool
        Random quarter turns and flips of the training slices.
    shuffle : bool
        Shuffle the training cases and slices.
    intensity_augment : bool
        Randomise the intensities of every training slice (gamma, bias field,
        contrast, noise; :func:`prostseg.preparation.pipeline.augment_intensity`), e.g. to train on
        phantoms for real scans.
    shape_augment : bool
        Warp every training slice and its mask together (random scale, rotation,
        shear, shift and elastic deformation; :func:`prostseg.preparation.pipeline.augment_shape`),
        e.g. to train on few phantom patients for real scans.
    mixed_precision : bool
        Compute in float16 (``mixed_float16``; for GPUs), keeping float32 weights and
        float32 output probabilities.
    jit_compile : bool
        Compile the training step with XLA. Off by default: on a CPU, XLA's own
        convolutions are slower than TensorFlow's oneDNN kernels, so the step gets
        slower (``benchmarks/training_throughput.py``); on a GPU it may fuse batch
        normalisation and activations and is worth measuring.
    strategy : {"auto", "default", "mirrored", "multiworker"}
        See :func:`prostseg.training.loop.make_strategy`.
    checkpoint_every : int
        Save a checkpoint every this many epochs (and after the last one); a resumed
        run repeats at most ``checkpoint_every - 1`` epochs.
    deterministic : bool
        Make two runs with the same configuration on the same machine give identical
        weights: TensorFlow's op determinism
        (:func:`tf.config.experimental.enable_op_determinism`, which stays on in the
        process and makes some GPU operations slower) plus the seeds of Python, NumPy
        and TensorFlow set from ``seed``. Other machines, library versions or numbers
        of replicas may still give other weights.
    verbose : int
        Progress display: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.

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
    intensity_augment: bool = False
    shape_augment: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % 2**self.depth:
            raise InputError(None, f"image_size={self.image_size} does not fit a U-Net of depth={self.depth}: "
                                   f"it must be a multiple of 2**depth = {2**self.depth}")


@dataclass(frozen=True)
class Pix2PixTrainingConfig(_TrainingConfig):
    """How to train Pix2Pix on registered T2W/DWI/ADC stacks (see :func:`train_pix2pix`).

    Fields shared with :class:`UNetTrainingConfig` mean the same; the defaults follow
    the Pix2Pix paper and the original project (300 epochs, Adam 2e-4, ``beta_1`` 0.5,
    batch 1 per replica, lambda 100, random flips and quarter turns).

    Parameters
    ----------
    image_size : int
        Side of the square slices (bilinear resize); a power of two for the default
        generator depth.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) and centre pad or crop it to
        ``image_size`` instead of resizing the whole slice (:mod:`prostseg.preparation.slices`):
        the network then sees every scan at the same physical scale, on a field of
        view of ``image_size * target_spacing`` mm. By default whole slices are
        resized.
    base_filters : int
        Filters of the generator's first level (64 in the paper).
    generator_levels : int, optional
        Down levels of the generator; by default down to 1x1 pixels.
    discriminator_filters, discriminator_downsamples : int
        PatchGAN size (:func:`prostseg.networks.models.build_pix2pix_discriminator`).
    generator_upsampling : {"transpose", "resize"}
        Up levels of the generator (:func:`prostseg.networks.models.build_pix2pix_generator`):
        the paper's transposed convolutions, or resize + convolution (no checkerboard).
    l1_weight : float
        Weight of the L1 term of the generator loss.
    crossentropy_weight : float
        Weight of a categorical cross-entropy term between the generator's zone
        probabilities and the true zones, added to the generator loss
        (:func:`prostseg.networks.losses.categorical_crossentropy`). 0 (the paper) leaves it
        out. Unlike L1, its gradient does not fade on pixels given to a wrong zone.
    intensity_augment : bool
        Randomise the intensities of every training stack slice, each channel on its
        own (gamma, bias field, contrast, noise;
        :func:`prostseg.preparation.pipeline.augment_stack_intensity`), e.g. to train on phantoms
        for real scans.
    shape_augment : bool
        Warp every training stack slice and its zones together (random scale, rotation,
        shear, shift and elastic deformation; :func:`prostseg.preparation.pipeline.augment_shape`).
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
        (:func:`prostseg.preparation.pipeline.pix2pix_epochs`); use it when they fit in memory
        (``4 * 8 * image_size**2`` bytes per slice).
    slice_cache : str, optional
        As for :class:`UNetTrainingConfig` (``prostseg prepare --model pix2pix``).
    checkpoint_every : int
        As for :class:`UNetTrainingConfig`.

    Examples
    --------
    >>> config = Pix2PixTrainingConfig("data/phantom", "runs/pix2pix")
    >>> config.learning_rate, config.beta_1, config.batch_size, config.image_size
    (0.0002, 0.5, 1, 256)
    """

    KIND: ClassVar[str] = "pix2pix"

    image_size: int = 256
    batch_size: int = 1
    epochs: int = 300
    learning_rate: float = 2e-4
    base_filters: int = 64
    augment: bool = True
    generator_levels: int | None = None
    generator_upsampling: str = "transpose"
    discriminator_filters: int = 64
    discriminator_downsamples: int = 3
    l1_weight: float = 100.0
    crossentropy_weight: float = 0.0
    intensity_augment: bool = False
    shape_augment: bool = False
    decay_epochs: int = 0
    beta_1: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        size, levels, downsamples = self.image_size, self.generator_levels, self.discriminator_downsamples
        if levels is None and size & (size - 1):
            raise InputError(None, f"image_size={size} does not fit the Pix2Pix generator: it must be a power "
                                   "of two (or give generator_levels)")
        if levels is not None and size % 2**levels:
            raise InputError(None, f"image_size={size} does not fit the Pix2Pix generator: it must be a "
                                   f"multiple of 2**generator_levels = {2**levels}")
        if size % 2**downsamples or size // 2**downsamples < 3:
            raise InputError(None, f"image_size={size} does not fit the PatchGAN: it must be a multiple of "
                                   f"2**discriminator_downsamples = {2**downsamples}, at least "
                                   f"{3 * 2**downsamples}")

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
    path = path_argument(path)
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


def model_run_config(model_path: str | os.PathLike) -> UNetTrainingConfig | Pix2PixTrainingConfig | None:
    """The configuration of the run folder that holds a model file, if it is in one.

    A run folder holds its model files beside its :data:`CONFIG_FILE`; the settings
    recorded there (``target_spacing``, ``label``, the kind) are the ones the model
    must be applied and exported with.

    Parameters
    ----------
    model_path : str or os.PathLike
        The model file; its folder is a run folder when it holds :data:`CONFIG_FILE`.

    Returns
    -------
    UNetTrainingConfig or Pix2PixTrainingConfig or None
        None when no :data:`CONFIG_FILE` lies beside the model file.

    Raises
    ------
    InputError
        When the configuration beside the model cannot be read (:func:`load_config`).

    Examples
    --------
    >>> import tempfile
    >>> run, elsewhere = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    >>> _ = Pix2PixTrainingConfig("data", str(run)).to_json(run / CONFIG_FILE)
    >>> model_run_config(run / "best_generator.keras").KIND, model_run_config(elsewhere / "model.keras")
    ('pix2pix', None)
    """
    config_path = Path(model_path).parent / CONFIG_FILE
    return load_config(config_path) if config_path.is_file() else None


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


def prepare_run_folder(config: _TrainingConfig, worker: str | None, overwrite: bool) -> Path:
    """Check the output folder (resume, refuse or overwrite) and return where to write.

    Only the chief (``worker is None``) inspects and changes ``output_dir``; another
    worker writes to ``output_dir/workers/<worker>``.
    """
    output_dir = Path(config.output_dir)
    check_output_outside_inputs(output_dir, [config.data_dir, config.split_file], flag="the run folder")
    if worker is not None:
        folder = output_dir / WORKERS_FOLDER / worker
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
        if any(entry.name != WORKERS_FOLDER for entry in output_dir.iterdir()):  # workers may be first
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


def patient_split(config: _TrainingConfig, case_ids: Sequence[str]) -> PatientSplit:
    """The configured split, checked against the cases found in ``data_dir``.

    Cases of one patient (``patients.json`` of the data folder, see
    :func:`prostseg.preparation.splits.read_patient_ids`) stay in one part; a ``split_file`` that
    puts a patient into two parts is refused.
    """
    patient_ids = read_patient_ids(config.data_dir, case_ids)
    if config.split_file is None:
        return split_patients(
            case_ids, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed,
            patient_ids=patient_ids,
        )
    split = PatientSplit.from_json(config.split_file)
    missing = sorted(set(split.train + split.val) - set(case_ids))
    if missing:
        raise InputError(config.split_file, f"cases not found in {config.data_dir}: {', '.join(missing)}")
    crossing = patients_across_parts(split, patient_ids)
    if crossing:
        raise InputError(config.split_file, f"patients in more than one part: {'; '.join(crossing[:3])}")
    return split


def write_split(split: PatientSplit, folder: Path) -> None:
    """Write ``split.json`` into ``folder``, refusing one that holds another split."""
    path = folder / SPLIT_FILE
    if path.exists() and PatientSplit.from_json(path) != split:
        raise InputError(path, "differs from the split of this configuration; the run folder was changed by hand")
    split.to_json(path, overwrite=True)



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
    global_batch_size : int
        Slices per step over all replicas: ``batch_size x num_replicas``.
    """

    output_dir: Path
    model_path: Path
    history_path: Path
    epochs_completed: int
    last: dict[str, float]
    best: dict[str, float]
    num_replicas: int
    global_batch_size: int


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


def truncate_history(path: Path, epochs_kept: int) -> list[dict[str, float]]:
    """Drop rows of epochs ``>= epochs_kept`` (they will be trained again); return the rest.

    The file is replaced atomically (:func:`prostseg.atomic.atomic_path`).
    """
    text = path.read_bytes().decode("utf-8") if path.exists() else ""
    if not text:
        return []
    header, *lines = text.splitlines(keepends=True)
    column = next(csv.reader([header])).index("epoch")
    kept = [line for line in lines if int(next(csv.reader([line]))[column]) < epochs_kept]
    if len(kept) < len(lines):
        _write_history(path, header + "".join(kept))
    return read_history(path)


def _write_history(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            file.write(text)


def training_result(folder: Path, model_path: Path, key: str, lower_is_better: bool, replicas: int,
                    global_batch: int) -> TrainingResult:
    """The :class:`TrainingResult` of a run folder, the best epoch by ``key``."""
    history_path = folder / HISTORY_FILE
    rows = read_history(history_path) if history_path.exists() else []
    scored = [row for row in rows if math.isfinite(row.get(key, math.nan))]
    sign = 1 if lower_is_better else -1
    best = min(scored, key=lambda row: sign * row[key]) if scored else {}
    return TrainingResult(folder, model_path, history_path, len(rows), rows[-1] if rows else {}, best, replicas,
                          global_batch)



def append_row(path: Path, row: dict[str, float]) -> None:
    """Add one epoch's row to a history CSV, writing the header first when new.

    The whole (small) file is rewritten and renamed into place
    (:func:`prostseg.atomic.atomic_path`): a process killed at any instant leaves the
    history with or without the row, never with half of it.
    """
    text = path.read_bytes().decode("utf-8") if path.exists() else ""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(row))
    if not text:
        writer.writeheader()
    writer.writerow(row)
    _write_history(path, text + buffer.getvalue())
