"""Check every file a training run will read, voxels included, before the run starts.

Case discovery (:mod:`prostseg.data.dataset`) reads headers only, so a mask holding 0.5, a
zone label of 7 or a NaN voxel would otherwise surface deep inside ``tf.data`` during
training, after the run folder was written. :func:`check_case_files` reads each file
once (several at a time, with a progress bar) and reports *every* problem of the data
folder in one :class:`~prostseg.errors.InputError`, one line per file:

* ``t2w``: a 3D volume with finite values;
* ``stack`` (``aligned/stack``): a 3-channel volume with finite values;
* ``lesion``: 0 (background) and 1, or 0 and 255 when asked for with
  ``lesion_value=255`` (:func:`prostseg.data.dataset.load_mask`);
* ``zones``: labels 0..4 (:data:`prostseg.data.dataset.ZONE_NAMES`).

:func:`check_training_data` runs it on the training and validation patients of a run
and then refuses runs that cannot train (no slice left by ``drop_empty``, fewer slices
than a Pix2Pix batch) and warns (:class:`~prostseg.errors.DataWarning`) when every
training mask is empty. The training functions call it before they write anything.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> import nibabel as nib
>>> import numpy as np
>>> from prostseg.data.dataset import discover_cases
>>> from prostseg.data.phantom import write_phantom_dataset
>>> folder = Path(tempfile.mkdtemp())
>>> _ = write_phantom_dataset(folder, n_cases=2, shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))
>>> cases = discover_cases(folder, require=("t2w", "lesion"))
>>> check_case_files(cases, ("t2w", "lesion")).files
4
>>> lesion = nib.load(folder / "phantom-001" / "lesion.nii.gz")
>>> nib.save(nib.Nifti1Image(np.full(lesion.shape, 0.5, np.float32), lesion.affine),
...          folder / "phantom-001" / "lesion.nii.gz")
>>> check_case_files(cases, ("t2w", "lesion"), root=folder)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
prostseg.errors.InputError: ...: 1 of 4 files cannot be used...
  phantom-001/lesion.nii.gz: label map holds non-integer values (0.5); ...
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prostseg.data.dataset import MASKS, STACK, Case, load_mask
from prostseg.errors import DataWarning, InputError
from prostseg.data.io import Volume, load_volume
from prostseg.networks.recipes import recipe
from prostseg.preparation.slices import prepare_unet_mask

__all__ = ["DataCheck", "check_case_files", "check_training_data"]

#: Files read at the same time (decompression releases the GIL).
_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_case_files` found in files without problems.

    Attributes
    ----------
    files : int
        Files read.
    seconds : float
        Time taken.
    foreground : dict
        ``{path: n}`` for every mask: ``n`` foreground voxels, or, when a ``measure``
        was given, what it returned for the mask.
    slices : dict
        ``{path: z}``: number of axial slices of every image (``t2w``, ``stack``).
    """

    files: int
    seconds: float
    foreground: dict[Path, int]
    slices: dict[Path, int]


def _read(name: str, path: Path, lesion_value: int) -> Volume:
    if name in MASKS:
        return load_mask(path, name, lesion_value=lesion_value)
    return load_volume(path, channels=3 if name == STACK else None)


def _problem(err: Exception) -> str:
    if isinstance(err, InputError):
        return err.problem
    if isinstance(err, OSError):
        return f"cannot read: {os.strerror(err.errno) if err.errno else err}"
    return f"cannot read ({type(err).__name__}: {err})"


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def check_case_files(
    cases: Sequence[Case],
    names: Sequence[str],
    *,
    lesion_value: int = 1,
    root: str | os.PathLike | None = None,
    progress: bool = False,
    measure: Callable[[Case, Volume], int] | None = None,
) -> DataCheck:
    """Read the ``names`` files of every case in full and check their values.

    Parameters
    ----------
    cases : sequence of Case
        The cases, e.g. from :func:`prostseg.data.dataset.discover_cases`.
    names : sequence of str
        Files to check in every case: ``"t2w"``, ``"stack"``, ``"lesion"``, ``"zones"``.
    lesion_value : {1, 255}, optional
        Value of lesion voxels in lesion masks (see :func:`prostseg.data.dataset.load_mask`).
    root : str or os.PathLike, optional
        The data folder: named by the error, and files are listed relative to it.
    progress : bool, optional
        Say what is checked and show a progress bar on standard error.
    measure : callable, optional
        ``measure(case, mask)`` for every mask read; its result replaces the
        foreground voxel count in :attr:`DataCheck.foreground`.

    Returns
    -------
    DataCheck

    Raises
    ------
    InputError
        Naming ``root`` (or the first case folder's parent), with one line per file
        that cannot be used: missing, unreadable, wrong shape, NaN or infinite
        values, labels outside the allowed set.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    cases = list(cases)
    root = Path(root) if root is not None else (cases[0].folder.parent if cases else None)
    jobs = [(case, name) for case in cases for name in names]
    if progress:
        print(f"checking {len(jobs)} files ({', '.join(names)}) of {len(cases)} cases in {root}, "
              "voxel values included", file=sys.stderr, flush=True)

    def check(case: Case, name: str) -> tuple[str, int | None]:
        path = case.path(name)
        volume = _read(name, path, lesion_value)
        if name in MASKS:
            return name, measure(case, volume) if measure else int(np.count_nonzero(volume.data))
        return name, volume.shape[2]

    problems: dict[str, str] = {}
    foreground, slices = {}, {}
    with ThreadPoolExecutor(_WORKERS) as pool, \
            tqdm(total=len(jobs), desc="checking data", unit="file", disable=not progress,
                 file=sys.stderr) as bar:
        futures = {pool.submit(check, case, name): (case, name) for case, name in jobs}
        for future in as_completed(futures):
            case, name = futures[future]
            bar.update()
            try:
                kind, value = future.result()
            except Exception as err:  # every problem is reported, none stops the check
                path = case.files.get(name, case.folder)
                problems[_relative(path, root)] = _problem(err)
                continue
            (foreground if kind in MASKS else slices)[case.path(name)] = value
    if problems:
        listed = "".join(f"\n  {path}: {problems[path]}" for path in sorted(problems))
        raise InputError(root, f"{len(problems)} of {len(jobs)} files cannot be used "
                         f"(nothing was written; fix them and rerun):{listed}")
    return DataCheck(len(jobs), round(time.perf_counter() - started, 2), foreground, slices)


def check_training_data(config, train_cases: Sequence[Case], val_cases: Sequence[Case] = (), *,
                        replicas: int = 1) -> DataCheck:
    """Check the data of a training run before it starts (see the module documentation).

    Parameters
    ----------
    config : prostseg.training.loop.UNetTrainingConfig or Pix2PixTrainingConfig
        The run: its ``data_dir``, ``label``, ``lesion_value``, ``drop_empty``,
        ``foreground_fraction``, ``image_size``, ``target_spacing``, ``batch_size``
        and ``verbose`` (a progress bar unless 0) are used.
    train_cases, val_cases : sequence of Case
        The cases the run reads.
    replicas : int, optional
        Replicas of the run's strategy: a global batch is ``batch_size * replicas``.

    Returns
    -------
    DataCheck
        Of the training and validation files together.

    Raises
    ------
    InputError
        Listing every file that cannot be used; or, naming ``data_dir``, when the run
        would train on nothing: ``drop_empty`` (or ``foreground_fraction``) with no
        foreground slice, ``foreground_fraction`` without an empty slice, or fewer
        training slices than one global Pix2Pix batch.

    Warns
    -----
    DataWarning
        When every training mask is empty.
    """
    is_unet = hasattr(config, "label")
    label = config.label if is_unet else "zones"
    names = (recipe(config.KIND).input, label)
    train_ids = {case.case_id for case in train_cases}
    measure = None
    if is_unet:
        def measure(case: Case, mask: Volume) -> int:
            """Training slices with foreground once prepared (validation masks: voxels)."""
            if case.case_id not in train_ids:
                return int(np.count_nonzero(mask.data))
            prepared = prepare_unet_mask(mask, config.image_size, target_spacing=config.target_spacing)
            return int(np.count_nonzero(prepared.any(axis=(1, 2, 3))))

    report = check_case_files(
        [*train_cases, *val_cases], names, lesion_value=getattr(config, "lesion_value", 1),
        root=config.data_dir, progress=bool(config.verbose), measure=measure,
    )
    train_masks = [case.path(label) for case in train_cases]
    train_images = [case.path(names[0]) for case in train_cases]
    with_foreground = sum(report.foreground[path] for path in train_masks)
    n_slices = sum(report.slices[path] for path in train_images)
    what = {"lesion": "lesion", "zones": "gland (zones)", "gland": "gland"}[label]
    if is_unet and (config.drop_empty or config.foreground_fraction is not None) and with_foreground == 0:
        option = "drop_empty=True" if config.drop_empty else f"foreground_fraction={config.foreground_fraction}"
        raise InputError(
            config.data_dir,
            f"{option} leaves nothing to train on: no slice of the {len(train_masks)} training "
            f"{what} masks has foreground within the central {config.image_size}x{config.image_size} "
            "pixels (0 steps per epoch); check the masks or train without it",
        )
    if is_unet and config.foreground_fraction is not None and with_foreground == n_slices:
        raise InputError(config.data_dir, f"foreground_fraction={config.foreground_fraction} needs slices "
                         f"without {what} too, but all "
                         f"{n_slices} training slices have foreground")
    if not is_unet and n_slices < config.batch_size * replicas:
        raise InputError(config.data_dir, f"the {len(train_cases)} training cases hold {n_slices} "
                         f"slices, fewer than one global batch (batch_size={config.batch_size} x "
                         f"{replicas} replicas): 0 steps per epoch")
    if with_foreground == 0:
        warnings.warn(f"{config.data_dir}: all {len(train_masks)} training {what} masks are empty: the model "
                      "can only learn to predict background", DataWarning, stacklevel=2)
    return report
