"""Prepared training slices on disk: written once, streamed every epoch (``prostseg prepare``).

Preparing a case (reading its files, normalising, resampling, cutting it into slices;
:meth:`prostseg.preparation.slices.Slicing.prepare_case`) costs far more than reading the result back, and a training
run repeats it every epoch. The in-memory cache (``cache=True``) avoids that only while
the prepared slices fit in memory: PI-CAI's 1,500 studies at 384 x 384 are about 44 GB
as float32. :func:`prepare_dataset` writes the prepared slices of every case once; the
pipelines (``slice_cache=`` of :func:`prostseg.preparation.pipeline.unet_dataset` and
:func:`prostseg.preparation.pipeline.pix2pix_epochs`) then stream them with a parallel interleave
over the case files, shuffled and augmented exactly like the uncached stream, with
memory that does not grow with the data set.

Layout
------
The cache folder is ``DATA_DIR/.prepared`` by default (a dot folder, so it is never
taken for a case), or any folder (``cache_dir``, ``--cache-dir``: a data folder that is
read-only, a fast local disk). It holds one folder per spec, named by
:attr:`SliceSpec.name`::

    DATA_DIR/.prepared/
      unet-lesion-384-native/      U-Net, lesion masks, 384 x 384, native spacing
        phantom-000.tfrecord       one record per axial slice
        phantom-000.json           parameters, input checksums, slice counts
        summary.csv                the last prepare run, case by case
      pix2pix-256-0.5mm/           Pix2Pix, 256 x 256, resampled to 0.5 mm

Each record holds one slice: the image as float16 (``H x W x C``, half the bytes of
float32; the values differ from the uncached float32 stream by float16 rounding only,
at most ``2**-11`` of their magnitude) and the label as uint8 integers (U-Net: 0 or 1;
Pix2Pix: zone ids 0..4, one-hot encoded when read), so labels are exact, never
interpolated or rounded.

Why TFRecord files, one per case
--------------------------------
``tf.data`` reads TFRecord files in its own C++ threads (no Python and no global
interpreter lock per slice, unlike ``.npy`` memory maps read through
``tf.numpy_function``), sequentially (fast on network and spinning disks), and a
parallel interleave over many files is one call. One file per case keeps preparation
per case: each case is written, checked and resumed on its own, in parallel, and a
training split streams just the files of its cases.

Never stale
-----------
``CASE.json`` is written last (both files atomically, :mod:`prostseg.atomic`) and
records the spec's :meth:`SliceSpec.parameters` (model, image size, spacing, label,
normalisation, format) and the checksums of the input files (as
:mod:`prostseg.preparation.registration` records them: size and modification time, else SHA-256).
:func:`cache_state` compares both with the case folder now; the pipelines refuse a case
whose entry is missing or out of date, and :func:`prepare_dataset` prepares exactly
those cases again and skips the rest, so a stopped run continues where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from prostseg.atomic import atomic_path
from prostseg.data.dataset import MASKS, NUM_ZONE_CLASSES, Case, case_folders, find_case
from prostseg.errors import COUNT, POSITIVE, InputError
from prostseg.parallel import CaseRows, one_line, run_cases_with_summary
from prostseg.preparation.registration import input_fingerprint, same_input
from prostseg.preparation.slices import CLIP_PERCENTILES, SLICINGS

__all__ = [
    "CACHE_FOLDER",
    "MODELS",
    "SUMMARY_COLUMNS",
    "CacheState",
    "SliceSpec",
    "cache_state",
    "cached_slice_counts",
    "cached_slices",
    "default_cache_dir",
    "prepare_cases",
    "prepare_dataset",
]

#: Name of the cache folder inside a data folder (when no ``cache_dir`` is given).
CACHE_FOLDER = ".prepared"
#: The models a cache can hold slices for.
MODELS = tuple(SLICINGS)
#: Columns of the summary CSV of :func:`prepare_dataset`.
SUMMARY_COLUMNS = ("case", "status", "slices", "foreground_slices", "seconds", "warnings", "error")
#: Records decoded together (one parse and one cast per group instead of per slice).
_DECODE_BATCH = 16
#: Bumped whenever the record layout changes: older entries are then out of date.
_FORMAT = 1


@dataclass(frozen=True)
class SliceSpec:
    """What a cache entry was prepared for: the pipeline's arguments that shape the slices.

    Parameters
    ----------
    model : {"unet", "pix2pix"}
        The model's slicing (:data:`~prostseg.preparation.slices.SLICINGS`). U-Net: T2W slices
        (:func:`~prostseg.preparation.slices.prepare_unet_volume`) and binary masks of ``label``;
        Pix2Pix: registered 3-channel stacks
        (:func:`~prostseg.preparation.slices.prepare_pix2pix_volume`) and zone labels.
    image_size : int, optional
        Side of the square slices (default: the model's, 384 or 256).
    target_spacing : float, optional
        Common in-plane pixel size in mm (see :mod:`prostseg.preparation.pipeline`).
    label : {"lesion", "zones", "gland"}
        U-Net only: the mask (``"zones"``, ``"gland"``: the whole gland). Pix2Pix always uses zones.

    Examples
    --------
    >>> SliceSpec("unet").name, SliceSpec("pix2pix", 128, target_spacing=0.5).name
    ('unet-lesion-384-native', 'pix2pix-128-0.5mm')
    """

    model: str
    image_size: int | None = None
    target_spacing: float | None = None
    label: str = "lesion"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.label not in MASKS:
            raise ValueError(f"label must be one of {MASKS}, got {self.label!r}")
        size = SLICINGS[self.model].image_size if self.image_size is None else self.image_size
        object.__setattr__(self, "image_size", COUNT.check(size, "image_size"))
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", float(POSITIVE.check(self.target_spacing, "target_spacing")))
        if self.model == "pix2pix":
            object.__setattr__(self, "label", "zones")

    @property
    def name(self) -> str:
        """The spec's folder name in the cache."""
        spacing = "native" if self.target_spacing is None else f"{self.target_spacing:g}mm"
        kind = f"unet-{self.label}" if self.model == "unet" else "pix2pix"
        return f"{kind}-{self.image_size}-{spacing}"

    @property
    def inputs(self) -> tuple[str, str]:
        """The case files the spec reads (their checksums go into ``CASE.json``)."""
        return (SLICINGS[self.model].input, self.label)

    @property
    def channels(self) -> int:
        """Channels of the image slices."""
        return len(SLICINGS[self.model].channels)

    def parameters(self) -> dict:
        """Everything the prepared slices depend on besides the input files."""
        normalisation = (f"percentile clip {list(CLIP_PERCENTILES)} per volume, min-max to [0, 1]"
                         if self.model == "unet" else "z-score per volume and channel")
        geometry = ("centre pad/crop" if self.model == "unet" or self.target_spacing is not None
                    else "bilinear resize (labels nearest)")
        return {"model": self.model, "image_size": self.image_size,
                "target_spacing": self.target_spacing, "label": self.label,
                "normalisation": normalisation, "geometry": geometry, "format": _FORMAT,
                "image_dtype": "float16", "label_dtype": "uint8"}


def default_cache_dir(data_dir: str | os.PathLike) -> Path:
    """``DATA_DIR/.prepared``, the cache folder when none is given."""
    return Path(data_dir) / CACHE_FOLDER


def _entry(cache_dir: str | os.PathLike, spec: SliceSpec, case_id: str) -> tuple[Path, Path]:
    """The record file and the JSON description of one case."""
    folder = Path(cache_dir) / spec.name
    return folder / f"{case_id}.tfrecord", folder / f"{case_id}.json"


# --- up to date? ---------------------------------------------------------------------


@dataclass(frozen=True)
class CacheState:
    """Whether a case's cache entry matches its files and the spec (:func:`cache_state`).

    Attributes
    ----------
    up_to_date : bool
    reason : str
        Why not (empty when up to date).
    description : dict or None
        The entry's ``CASE.json`` when it is up to date.
    """

    up_to_date: bool
    reason: str
    description: dict | None = None


def cache_state(case: Case, spec: SliceSpec, cache_dir: str | os.PathLike) -> CacheState:
    """Check a case's cache entry against the spec and the case's files now.

    Reads ``CASE.json`` and compares its parameters with :meth:`SliceSpec.parameters` and
    its input checksums with the case's files (unchanged size and modification time
    are trusted, otherwise the SHA-256 decides). Reads no image.

    Parameters
    ----------
    case : Case
        The case (:func:`prostseg.data.dataset.find_case`).
    spec : SliceSpec
    cache_dir : path
        The cache folder (e.g. :func:`default_cache_dir`).

    Returns
    -------
    CacheState

    Raises
    ------
    InputError
        If the case lacks a file the spec reads.
    """
    records, description_path = _entry(cache_dir, spec, case.case_id)
    try:
        description = json.loads(description_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return CacheState(False, "not prepared")
    if not isinstance(description, dict) or description.get("parameters") != spec.parameters():
        return CacheState(False, "prepared with other parameters")
    inputs = description.get("inputs", {})
    changed = [case.path(name).name for name in spec.inputs
               if not same_input(inputs.get(name), case.path(name), case.folder)]
    if changed:
        return CacheState(False, "inputs changed since it was prepared: " + ", ".join(changed))
    if not records.is_file() or records.stat().st_size != description.get("bytes"):
        return CacheState(False, f"{records.name} is missing or incomplete")
    return CacheState(True, "", description)


def _up_to_date(cases: Sequence[Case], spec: SliceSpec, cache_dir) -> list[dict]:
    """The descriptions of every case's entry; InputError for the first stale one."""
    descriptions = []
    for case in cases:
        state = cache_state(case, spec, cache_dir)
        if not state.up_to_date:
            raise InputError(
                case.folder,
                f"no up-to-date prepared slices in {Path(cache_dir) / spec.name} "
                f"({state.reason}); run `prostseg prepare {case.folder.parent} "
                f"--model {spec.model}` with the same settings first",
            )
        descriptions.append(state.description)
    return descriptions


# --- writing ---------------------------------------------------------------------


def _prepared_volumes(case: Case, spec: SliceSpec) -> tuple[np.ndarray, np.ndarray]:
    """(images float16 (Z, H, W, C), labels uint8 (Z, H, W)) of one case."""
    images, targets = SLICINGS[spec.model].prepare_case(case, spec.label, spec.image_size,
                                                        target_spacing=spec.target_spacing)
    # binary masks (one channel) as they are, one-hot zones as zone ids
    labels = targets[..., 0] if targets.shape[-1] == 1 else np.argmax(targets, axis=-1)
    return images.astype(np.float16), labels.astype(np.uint8)


def _write_records(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    import tensorflow as tf

    def feature(array: np.ndarray) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))

    with atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for image, label in zip(images, labels):
                example = tf.train.Example(features=tf.train.Features(
                    feature={"image": feature(image), "label": feature(label)}))
                # deterministic: the feature map in one order, so every process (a Dask
                # worker, say) writes the same bytes for the same slices
                writer.write(example.SerializeToString(deterministic=True))


def _prepare_case(case: Case, spec: SliceSpec, cache_dir: Path) -> dict:
    """Prepare one case and write its entry; return its slice counts."""
    records, description_path = _entry(cache_dir, spec, case.case_id)
    inputs = {name: input_fingerprint(case.path(name), case.folder) for name in spec.inputs}
    images, labels = _prepared_volumes(case, spec)
    foreground = int(np.count_nonzero(labels.reshape(len(labels), -1).any(axis=1)))
    # Records first, description last: until the new description is in place, the old one
    # (if any) names other inputs, parameters or bytes, so the entry is never read stale; two
    # processes preparing the same case (multi-worker training) write the same bytes.
    _write_records(records, images, labels)
    description = {"case": case.case_id, "parameters": spec.parameters(), "inputs": inputs,
                   "slices": len(images), "foreground_slices": foreground,
                   "file": records.name, "bytes": records.stat().st_size}
    with atomic_path(description_path) as tmp:
        tmp.write_text(json.dumps(description, indent=2) + "\n")
    return {"slices": len(images), "foreground_slices": foreground}


def _prepare_task(item: tuple, threads: int) -> dict:
    """Prepare one case in a worker (see :func:`prepare_dataset`)."""
    case_dir, spec, cache_dir, note = item
    case = find_case(case_dir, require=spec.inputs)
    counts = _prepare_case(case, spec, Path(cache_dir))
    return {"status": "prepared", **counts, "warnings": [note] if note else []}


@dataclass
class DatasetPreparation(CaseRows):
    """What :func:`prepare_dataset` did, case by case.

    Attributes
    ----------
    rows : list of dict
        One row per case folder (:data:`SUMMARY_COLUMNS`); ``status`` is ``prepared``,
        ``up to date`` (skipped) or ``failed`` (with ``error``).
    summary_csv : Path or None
    folder : Path or None
        The spec's folder in the cache.
    """

    ACTION: ClassVar[str] = "prepare"

    folder: Path | None = None


def prepare_cases(
    case_dirs: Sequence[str | os.PathLike],
    spec: SliceSpec,
    cache_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    client=None,
    overwrite: bool = False,
    summary_csv: str | os.PathLike | None = None,
    progress: bool = True,
) -> DatasetPreparation:
    """Prepare the given case folders into ``cache_dir``, skipping up-to-date entries.

    Parameters are those of :func:`prepare_dataset`, with the case folders given
    one by one (e.g. the training and validation cases of a run).
    """
    cache_dir = Path(cache_dir)
    rows: dict[str, dict] = {}
    to_prepare: dict[str, tuple] = {}
    for folder in map(Path, case_dirs):
        started = time.perf_counter()
        try:
            case = find_case(folder, require=spec.inputs, check_grids=False)
            state = cache_state(case, spec, cache_dir)
        except InputError as err:
            rows[folder.name] = {"case": folder.name, "status": "failed", "error": one_line(err)}
        else:
            if state.up_to_date and not overwrite:
                rows[folder.name] = {"case": folder.name, "status": "up to date",
                                     "slices": state.description["slices"],
                                     "foreground_slices": state.description["foreground_slices"]}
            else:
                fresh = overwrite or state.reason == "not prepared"
                to_prepare[folder.name] = (folder, spec, cache_dir,
                                           "" if fresh else f"replaced: {state.reason}")
                rows[folder.name] = {"case": folder.name, "status": "waiting"}
        rows[folder.name]["seconds"] = round(time.perf_counter() - started, 2)
    summary_csv = None if summary_csv is None else Path(summary_csv)
    skipped = len(rows) - len(to_prepare)
    run_cases_with_summary(_prepare_task, to_prepare, rows, summary_csv, SUMMARY_COLUMNS,
                           workers=workers, client=client, threads=1, progress=progress,
                           description=f"preparing ({skipped} of {len(rows)} skipped)")
    return DatasetPreparation(list(rows.values()), summary_csv, cache_dir / spec.name)


def prepare_dataset(data_dir: str | os.PathLike, spec: SliceSpec, *, cache_dir: str | os.PathLike | None = None,
                    workers: int | None = None, client=None, overwrite: bool = False,
                    summary_csv: str | os.PathLike | None = None, progress: bool = True) -> DatasetPreparation:
    """Write the prepared training slices of every case of a data folder, in parallel.

    Each case folder (:func:`prostseg.data.dataset.case_folders`) whose cache entry is
    missing or out of date (:func:`cache_state`) is prepared exactly as the pipelines
    prepare it (:meth:`~prostseg.preparation.slices.Slicing.prepare_case`) and written as
    ``SPEC/CASE.tfrecord`` (see the module documentation); up-to-date cases are skipped,
    so that a stopped run continues. The cases run several at a time on this machine or
    on a Dask cluster (:func:`prostseg.parallel.run_cases`); a case that fails (a
    missing, unreadable or off-grid file, labels out of range, even a crash of its
    worker) is reported with its one-line error and the others go on.

    Parameters
    ----------
    data_dir : path
        Folder of case folders (:mod:`prostseg.data.dataset`). Pix2Pix needs the registered
        stacks (``prostseg register-dataset`` first).
    spec : SliceSpec
        Model, image size, spacing and label: the same values as the training run.
    cache_dir : path, optional
        The cache folder (default ``DATA_DIR/.prepared``).
    workers : int, optional
        Cases at a time on this machine (default: its usable cores; 1: one after the
        other in this process).
    client : dask.distributed.Client or str, optional
        Prepare on a Dask cluster instead: a client, or a scheduler address.
    overwrite : bool
        Prepare every case again.
    summary_csv : path, optional
        The summary (:data:`SUMMARY_COLUMNS`), rewritten as each case finishes
        (default ``CACHE_DIR/SPEC/summary.csv``).
    progress : bool
        Show a progress bar with the time left.

    Returns
    -------
    DatasetPreparation
        One row per case; ``raise_if_failed()`` stops on failures.

    Raises
    ------
    InputError
        If ``data_dir`` is missing or holds no case folder
        (:func:`~prostseg.data.dataset.case_folders`); a case that fails is a failed row.

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.data.phantom import write_phantom_dataset
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_phantom_dataset(folder, n_cases=2, shape=(48, 48, 6), spacing=(2.5, 2.5, 4.0))
    >>> result = prepare_dataset(folder, SliceSpec("unet", 64), workers=1, progress=False)
    >>> result.counts(), result.folder.name
    ({'prepared': 2}, 'unet-lesion-64-native')
    >>> prepare_dataset(folder, SliceSpec("unet", 64), workers=1, progress=False).counts()
    {'up to date': 2}
    """
    cache_dir = default_cache_dir(data_dir) if cache_dir is None else Path(cache_dir)
    folders = case_folders(data_dir)
    if summary_csv is None:
        summary_csv = cache_dir / spec.name / "summary.csv"
    return prepare_cases(folders, spec, cache_dir, workers=workers, client=client,
                         overwrite=overwrite, summary_csv=summary_csv, progress=progress)


# --- reading ---------------------------------------------------------------------


def cached_slice_counts(cases: Sequence[Case], spec: SliceSpec, cache_dir: str | os.PathLike,
                        *, foreground: bool = False) -> int:
    """Slices (with ``foreground``: slices with foreground) of the cases' cache entries.

    Raises
    ------
    InputError
        For the first case without an up-to-date entry.
    """
    key = "foreground_slices" if foreground else "slices"
    return sum(description[key] for description in _up_to_date(cases, spec, cache_dir))


def cached_slices(
    cases: Sequence[Case],
    spec: SliceSpec,
    cache_dir: str | os.PathLike,
    *,
    shuffle: bool,
    shuffle_buffer: int,
    seed: int,
    cycle_length: int = 8,
):
    """Stream the cases' prepared (image, label) slices from the cache.

    Every case must have an up-to-date entry (checked first; a stale cache is never
    read). With ``shuffle`` the case files are shuffled anew every epoch, read
    ``cycle_length`` at a time by a parallel, deterministic interleave (one slice from
    each in turn), and the slices pass a shuffle buffer; without it slices come case
    by case in case order, slice ``k = 0, 1, ...``, like the uncached stream.

    Returns
    -------
    tf.data.Dataset
        Unbatched ``(image, label)``: float32 ``(H, W, C)`` images and float32 labels,
        ``(H, W, 1)`` binary (U-Net) or ``(H, W, 5)`` one-hot (Pix2Pix).

    Raises
    ------
    InputError
        Naming the first case without an up-to-date entry.
    """
    import tensorflow as tf

    _up_to_date(cases, spec, cache_dir)
    files = [str(_entry(cache_dir, spec, case.case_id)[0]) for case in cases]
    size, channels = spec.image_size, spec.channels
    features = {"image": tf.io.FixedLenFeature([], tf.string),
                "label": tf.io.FixedLenFeature([], tf.string)}

    def decode(records):  # a batch of records at once: far fewer, larger operations
        parsed = tf.io.parse_example(records, features)
        image = tf.io.decode_raw(parsed["image"], tf.float16)
        image = tf.reshape(image, (-1, size, size, channels))
        label = tf.reshape(tf.io.decode_raw(parsed["label"], tf.uint8), (-1, size, size))
        if spec.model == "unet":
            target = tf.cast(label, tf.float32)[..., tf.newaxis]
        else:
            target = tf.one_hot(tf.cast(label, tf.int32), NUM_ZONE_CLASSES, dtype=tf.float32)
        return tf.cast(image, tf.float32), target

    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        records = names.interleave(tf.data.TFRecordDataset,
                                   cycle_length=min(cycle_length, len(files)),
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        records = names.flat_map(tf.data.TFRecordDataset)
    slices = records.batch(_DECODE_BATCH).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=True).unbatch()
    if shuffle:
        slices = slices.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return slices
