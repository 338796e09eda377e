"""Data for the book's chapters: the phantom dataset by default, your own folder on request.

Every chapter starts with ``data_dir = tutorial_data(data_dir)``. Without a folder it
gets the synthetic phantom dataset (:mod:`prostseg.phantom`) stored at
``<root>/phantom-data``: the first chapter that asks writes it, later chapters reuse
it. With a folder it checks that the folder follows the case layout of
:mod:`prostseg.dataset` and returns it. Chapters that have a real-data section read the
folder named by the environment variable :data:`REAL_DATA_ENV` (see
:func:`real_data_dir`), and print :func:`describe_source` so the reader always knows
which data a figure shows.

Examples
--------
>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> data_dir = tutorial_data(cases=2, root=root)
>>> data_dir.name, sorted(path.name for path in data_dir.iterdir())
('phantom-data', ['phantom-000', 'phantom-001'])
>>> tutorial_data(cases=2, root=root) == data_dir  # reused, not written again
True
>>> describe_source(data_dir)  # doctest: +ELLIPSIS
'Synthetic phantom data: 2 cases made by prostseg.phantom (seed 0, generator version 2) in .../phantom-data'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from prostseg.dataset import discover_cases, find_case
from prostseg.errors import InputError
from prostseg.phantom import GENERATOR_VERSION, write_phantom_dataset

__all__ = ["REAL_DATA_ENV", "PHANTOM_FOLDER", "tutorial_data", "real_data_dir", "describe_source"]

#: Environment variable naming a folder of real cases for the chapters' real-data sections.
REAL_DATA_ENV = "PROSTSEG_REAL_DATA"
#: Name of the phantom dataset folder inside ``root``.
PHANTOM_FOLDER = "phantom-data"

_METADATA = "phantom.json"
_GENERATOR = "prostseg.phantom"
# What write_phantom_dataset writes into a case folder, plus the registration outputs.
_VOLUME_FILES = ("t2w.nii.gz", "adc.nii.gz", "dwi.nii.gz", "lesion.nii.gz", "zones.nii.gz")
_PROSTSEG_ENTRIES = frozenset((*_VOLUME_FILES, _METADATA, "aligned"))
_CASE_NAME = re.compile(r"phantom-(\d{3})")


def _case_name(index: int) -> str:
    return f"phantom-{index:03d}"


def _phantom_metadata(folder: Path) -> dict | None:
    """The ``phantom.json`` of a case folder written by prostseg.phantom, else None."""
    try:
        metadata = json.loads((folder / _METADATA).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or metadata.get("generator") != _GENERATOR:
        return None
    return metadata


def _is_complete(folder: Path, seed: int, index: int) -> bool:
    """Whether ``folder`` holds case ``index`` of the default phantom dataset ``seed``."""
    metadata = _phantom_metadata(folder)
    return (
        metadata is not None
        and metadata.get("generator_version") == GENERATOR_VERSION
        and metadata.get("dataset_seed") == seed
        and metadata.get("case_index") == index
        and metadata.get("case_kwargs") == {}
        and all((folder / name).is_file() for name in _VOLUME_FILES)
    )


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of a case folder that neither prostseg.phantom nor registration write."""
    return sorted(entry.name for entry in folder.iterdir() if entry.name not in _PROSTSEG_ENTRIES)


def _plan(out_dir: Path, cases: int, seed: int) -> tuple[list[Path], list[int]]:
    """Case folders to delete and case indices to write; raises before anything changes."""
    stale, keep = [], set()
    for entry in sorted(out_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # notes, splits files and hidden folders are not cases
        match = _CASE_NAME.fullmatch(entry.name)
        if match is None:
            raise InputError(
                entry,
                f"is not a phantom case folder, but {out_dir} is reserved for the phantom dataset; "
                "move it elsewhere (or pass its parent folder as data_dir)",
            )
        index = int(match.group(1))
        if index < cases and _is_complete(entry, seed, index):
            keep.add(index)
            continue
        foreign = _foreign_entries(entry)
        if foreign:
            raise InputError(
                entry,
                f"looks like a phantom case but holds files prostseg did not write ({', '.join(foreign)}); "
                "move them elsewhere so that the phantom case can be written again",
            )
        stale.append(entry)
    return stale, [index for index in range(cases) if index not in keep]


def tutorial_data(
    data_dir: str | os.PathLike | None = None,
    *,
    cases: int = 6,
    seed: int = 0,
    root: str | os.PathLike = "../outputs",
) -> Path:
    """Return the data folder a chapter works on.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        A folder in the case layout of :mod:`prostseg.dataset` (your own data). It is
        checked with :func:`prostseg.dataset.discover_cases` and returned unchanged;
        nothing is written to it.
    cases : int, optional
        Number of phantom cases (used when ``data_dir`` is None).
    seed : int, optional
        Seed of the phantom dataset (used when ``data_dir`` is None).
    root : str or os.PathLike, optional
        Folder that holds the phantom dataset as ``root/phantom-data``. The default
        suits notebooks run from ``book/``.

    Returns
    -------
    pathlib.Path
        ``data_dir``, or ``root/phantom-data`` holding exactly the cases
        ``phantom-000`` .. ``phantom-{cases - 1:03d}`` of ``seed`` on the grids that
        :func:`prostseg.phantom.make_phantom_case` draws (one per patient).

    Raises
    ------
    InputError
        When ``data_dir`` is not a valid data folder, or when ``root/phantom-data``
        holds folders or files that prostseg did not write (they are never deleted).

    Notes
    -----
    The phantom folder is written on first use and reused as long as every case's
    ``phantom.json`` matches ``seed`` and the generator version. Cases that are
    missing, incomplete (an interrupted run), from another seed or generator version,
    or beyond ``cases`` are deleted and written again, together with anything
    registration stored in them. Only the phantom volumes, ``phantom.json`` and
    ``aligned/`` are ever deleted; other files stop the function with an error. All
    chapters of the book use the same ``cases`` and ``seed``, so the dataset is
    written once. New cases are generated in a hidden temporary folder and moved into
    place when complete.

    Examples
    --------
    >>> import tempfile
    >>> own = tutorial_data(cases=1, root=tempfile.mkdtemp())
    >>> tutorial_data(own) == own  # any folder in the case layout
    True
    """
    if data_dir is not None:
        data_dir = Path(data_dir)
        discover_cases(data_dir)
        return data_dir
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out_dir = Path(root) / PHANTOM_FOLDER
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder; remove it or choose another root")
    out_dir.mkdir(parents=True, exist_ok=True)
    stale, missing = _plan(out_dir, cases, seed)
    for folder in stale:
        shutil.rmtree(folder)
    if missing:
        staging = Path(tempfile.mkdtemp(prefix=".phantom-", dir=out_dir))
        try:
            written = write_phantom_dataset(staging, n_cases=max(missing) + 1, seed=seed)
            for index in missing:
                target = out_dir / _case_name(index)
                try:
                    written[index].rename(target)
                except OSError:  # another process wrote it meanwhile
                    if not _is_complete(target, seed, index):
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def real_data_dir() -> Path | None:
    """The folder of real data named by :data:`REAL_DATA_ENV`, or None when unset.

    Returns
    -------
    pathlib.Path or None

    Raises
    ------
    InputError
        When the variable is set to something that is not a folder.

    Examples
    --------
    >>> import os
    >>> os.environ.pop(REAL_DATA_ENV, None) and None
    >>> real_data_dir() is None
    True
    """
    value = os.environ.get(REAL_DATA_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise InputError(path, f"{REAL_DATA_ENV} is set to this path, but it is not a folder")
    return path


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def describe_source(path: str | os.PathLike) -> str:
    """Say in one line whether ``path`` holds phantom or real data.

    Parameters
    ----------
    path : str or os.PathLike
        A data folder (one folder per case) or a single case folder.

    Returns
    -------
    str
        ``"Synthetic phantom data: ..."`` when every case was written by
        :mod:`prostseg.phantom` (recognised by its ``phantom.json``), ``"Real data: ..."``
        when none was, and a line giving both counts for a mixture.

    Raises
    ------
    InputError
        When ``path`` is not a folder.

    Examples
    --------
    >>> import tempfile
    >>> describe_source(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    'Real data: 0 cases in ... (not generated by prostseg.phantom)'
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "no such data folder")
    try:
        find_case(path, check_grids=False)
        folders, location = [path], path.parent
        subject = f"case {path.name}"
    except InputError:  # not a case itself: a folder of cases
        folders = sorted(entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        location, subject = path, _plural(len(folders), "case")
    metadata = [_phantom_metadata(folder) for folder in folders]
    phantoms = [entry for entry in metadata if entry is not None]
    real = len(folders) - len(phantoms)
    if phantoms and not real:
        seeds = ", ".join(sorted({str(entry.get("dataset_seed")) for entry in phantoms}))
        versions = ", ".join(sorted({str(entry.get("generator_version")) for entry in phantoms}))
        return (
            f"Synthetic phantom data: {subject} made by prostseg.phantom "
            f"(seed {seeds}, generator version {versions}) in {location}"
        )
    if phantoms:
        return (
            f"Mixed data: {_plural(real, 'real case')} and "
            f"{_plural(len(phantoms), 'synthetic phantom case')} in {location}"
        )
    return f"Real data: {subject} in {location} (not generated by prostseg.phantom)"
