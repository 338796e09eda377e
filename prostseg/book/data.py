"""Data for the book's chapters: phantoms to train on, real MRI to look at and to score.

Every chapter gets its data through :func:`prostseg.book.setup`, which calls
:func:`tutorial_data`. Without a folder it gets the synthetic phantom dataset
(:mod:`prostseg.data.phantom`) stored at ``<root>/phantom-data``: the first chapter that asks
writes it, later chapters reuse it. Its seed, :data:`PHANTOM_SEED`, is fixed for the
whole book: no chapter parameter changes it, so no chapter rewrites the data that the
others read. With a folder it checks that the folder follows the case layout of
:mod:`prostseg.data.dataset` and returns it. ``<root>`` is :func:`outputs_root`: the
``outputs`` folder of the repository when a chapter runs in its ``book/`` folder,
else ``outputs`` next to the notebook. Chapter 10's Pix2Pix trains on other phantom
patients: :func:`pix2pix_data` writes them to ``<root>/pix2pix-data``, next to copies of
the book's validation and test patients.

Real MRI comes from :func:`real_data`: one real study, ProstateX-0000 (T2W, ADC,
high-b DWI and a lesion mask; CC BY 3.0), ships inside the package (:data:`SAMPLE_DIR`,
its ``README.md`` gives source, licence and attribution), so every chapter shows real
slices on a fresh install. When the environment variable :data:`REAL_DATA_ENV` names a
folder of more real cases (see :func:`real_data_dir`), :func:`real_data` adds them.
Chapters print :func:`describe_source` so the reader always knows which data a figure
shows.

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
'Synthetic phantom data: 2 cases made by prostseg.data.phantom (seed 0, generator version 4) in .../phantom-data'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from prostseg.atomic import atomic_path
from prostseg.data.dataset import (
    ALIGNED_FOLDER,
    CASE_ROLES,
    PHANTOM_FILE,
    STACK,
    discover_cases,
    find_case,
    volume_file,
)
from prostseg.errors import InputError
from prostseg.data.io import SUPPORTED_EXTENSIONS, crop_to_grid, load_volume, save_like, volume_grid
from prostseg.data.phantom import GENERATOR_VERSION, write_phantom_dataset
from prostseg.preparation.splits import PatientSplit

__all__ = [
    "PHANTOM_CASES",
    "PHANTOM_SEED",
    "REAL_DATA_ENV",
    "PHANTOM_FOLDER",
    "GLAND_FOLDER",
    "GLAND_PHANTOMS",
    "GLAND_PHANTOM_KWARGS",
    "GLAND_TEST_PATIENTS",
    "REAL_FOLDER",
    "SAMPLE_DIR",
    "outputs_root",
    "tutorial_data",
    "PIX2PIX_FOLDER",
    "PIX2PIX_PHANTOMS",
    "pix2pix_data",
    "real_data",
    "gland_training_data",
    "gland_training_split",
    "real_data_dir",
    "describe_source",
]

#: Environment variable naming a folder of real cases for the chapters' real-data sections.
REAL_DATA_ENV = "PROSTSEG_REAL_DATA"
#: Seed of the book's phantom dataset: one dataset for every chapter and every build.
PHANTOM_SEED = 0
#: Number of cases of the book's phantom dataset.
PHANTOM_CASES = 6
#: Name of the folder, inside a checkout of the repository, that holds the book's outputs.
OUTPUTS_FOLDER = "outputs"
#: Name of the phantom dataset folder inside ``root``.
PHANTOM_FOLDER = "phantom-data"
#: Name of the folder, inside ``root``, of the data chapter 10's Pix2Pix trains on (:func:`pix2pix_data`).
PIX2PIX_FOLDER = "pix2pix-data"
#: The phantom patients of :func:`pix2pix_data`: how many, and their seed (other patients
#: than the book's, seed :data:`PHANTOM_SEED`). Their contrast is the realistic one:
#: random tissue levels in the channels did not bring Pix2Pix closer to a real scan
#: (``benchmarks/results/zones_to_real.md``).
PIX2PIX_PHANTOMS = {"cases": 16, "seed": 1}
#: Name of the folder of real cases that :func:`real_data` keeps inside ``root``.
REAL_FOLDER = "real-data"
#: Folder of :func:`gland_training_data`: real cases and phantoms for the gland U-Net.
GLAND_FOLDER = "gland-training-data"
#: Phantom patients :func:`gland_training_data` adds to the real cases by default.
GLAND_PHANTOMS = 32
#: How those phantoms are made (:func:`prostseg.data.phantom.make_phantom_case` keywords).
GLAND_PHANTOM_KWARGS = MappingProxyType({"contrast": "mixed"})
#: The real patient chapter 7 keeps out of training (chapters 8 and 11 test on it).
GLAND_TEST_PATIENTS = ("ProstateX-0000",)
#: The real study that ships with prostseg, in the case layout (read-only package data).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
#: Where :func:`describe_source` says a shipped case comes from.
SAMPLE_ORIGIN = "shipped with prostseg"

# pix2pix_data() records here what its folder holds.
_PIX2PIX_RECIPE = ".recipe.json"
# real_data() records here which file of the real-data folder it copied from where.
_SOURCES = ".sources.json"

_METADATA = PHANTOM_FILE
_GENERATOR = "prostseg.data.phantom"
# What write_phantom_dataset writes into a case folder, plus the registration outputs.
_VOLUME_FILES = tuple(volume_file(role) for role in CASE_ROLES)
_PROSTSEG_ENTRIES = frozenset((*_VOLUME_FILES, _METADATA, ALIGNED_FOLDER))
_CASE_NAME = re.compile(r"phantom-(\d{3})")


def _case_name(index: int) -> str:
    return f"phantom-{index:03d}"


def _phantom_metadata(folder: Path) -> dict | None:
    """The ``phantom.json`` of a case folder written by prostseg.data.phantom, else None."""
    try:
        metadata = json.loads((folder / _METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or metadata.get("generator") != _GENERATOR:
        return None
    return metadata


def _is_complete(folder: Path, seed: int, index: int, case_kwargs: dict) -> bool:
    """Whether ``folder`` holds case ``index`` of the phantom dataset ``seed`` made with
    ``case_kwargs``."""
    metadata = _phantom_metadata(folder)
    return (
        metadata is not None
        and metadata.get("generator_version") == GENERATOR_VERSION
        and metadata.get("dataset_seed") == seed
        and metadata.get("case_index") == index
        and metadata.get("case_kwargs") == case_kwargs
        and all((folder / name).is_file() for name in _VOLUME_FILES)
    )


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of a case folder that neither prostseg.data.phantom nor registration write."""
    return sorted(entry.name for entry in folder.iterdir() if entry.name not in _PROSTSEG_ENTRIES)


def _plan(out_dir: Path, cases: int, seed: int, case_kwargs: dict,
          others: frozenset[str] = frozenset()) -> tuple[list[Path], list[int]]:
    """Case folders to delete and case indices to write; raises before anything changes.
    Folders named in ``others`` (real cases kept beside the phantoms) are left alone."""
    stale, keep = [], set()
    for entry in sorted(out_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or entry.name in others:
            continue  # notes, splits files and hidden folders are not cases
        match = _CASE_NAME.fullmatch(entry.name)
        if match is None:
            raise InputError(
                entry,
                f"is not a phantom case folder, but {out_dir} is reserved for the phantom dataset; "
                "move it elsewhere (or pass its parent folder as data_dir)",
            )
        index = int(match.group(1))
        if index < cases and _is_complete(entry, seed, index, case_kwargs):
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


def outputs_root() -> Path:
    """The folder that holds the book's outputs, relative to the current folder.

    Chapters run with their own folder as the current folder. In the ``book/`` folder of
    a checkout of the repository (``../_toc.yml`` and ``../prostseg`` exist) this is
    ``../outputs``, the repository's ``outputs/`` (ignored by git); anywhere else (a
    notebook downloaded to Colab or a JupyterHub) it is ``outputs`` next to the notebook.

    Returns
    -------
    pathlib.Path
        ``../outputs`` or ``outputs`` (relative paths, so that printed paths stay short).

    Examples
    --------
    >>> import os, tempfile
    >>> here = os.getcwd()
    >>> os.chdir(tempfile.mkdtemp())
    >>> outputs_root()
    PosixPath('outputs')
    >>> os.chdir(here)
    """
    parent = Path("..")
    if (parent / "_toc.yml").is_file() and (parent / "prostseg" / "__init__.py").is_file():
        return parent / OUTPUTS_FOLDER
    return Path(OUTPUTS_FOLDER)


def tutorial_data(
    data_dir: str | os.PathLike | None = None,
    *,
    cases: int = PHANTOM_CASES,
    seed: int = PHANTOM_SEED,
    root: str | os.PathLike | None = None,
) -> Path:
    """Return the data folder a chapter works on.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        A folder in the case layout of :mod:`prostseg.data.dataset` (your own data). It is
        checked with :func:`prostseg.data.dataset.discover_cases` and returned unchanged;
        nothing is written to it.
    cases : int, optional
        Number of phantom cases (used when ``data_dir`` is None).
    seed : int, optional
        Seed of the phantom dataset (used when ``data_dir`` is None). The chapters
        always use :data:`PHANTOM_SEED`.
    root : str or os.PathLike, optional
        Folder that holds the phantom dataset as ``root/phantom-data``; default
        :func:`outputs_root`.

    Returns
    -------
    pathlib.Path
        ``data_dir``, or ``root/phantom-data`` holding exactly the cases
        ``phantom-000`` .. ``phantom-{cases - 1:03d}`` of ``seed`` on the grids that
        :func:`prostseg.data.phantom.make_phantom_case` draws (one per patient).

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
    out_dir = Path(outputs_root() if root is None else root) / PHANTOM_FOLDER
    _phantom_cases(out_dir, cases, seed, {})
    return out_dir


def _phantom_cases(out_dir: Path, cases: int, seed: int, case_kwargs: dict,
                   others: frozenset[str] = frozenset()) -> None:
    """Make ``out_dir`` hold phantom cases ``0 .. cases - 1`` of ``seed`` (see
    :func:`tutorial_data`, Notes), besides the folders named in ``others``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder; remove it or choose another root")
    out_dir.mkdir(parents=True, exist_ok=True)
    stale, missing = _plan(out_dir, cases, seed, case_kwargs, others)
    for folder in stale:
        shutil.rmtree(folder)
    if missing:
        staging = Path(tempfile.mkdtemp(prefix=".phantom-", dir=out_dir))
        try:
            written = write_phantom_dataset(staging, n_cases=max(missing) + 1, seed=seed, **case_kwargs)
            for index in missing:
                target = out_dir / _case_name(index)
                try:
                    written[index].rename(target)
                except OSError:  # another process wrote it meanwhile
                    if not _is_complete(target, seed, index, case_kwargs):
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _training_name(index: int) -> str:
    return f"training-{index:03d}"


def pix2pix_data(
    data_dir: str | os.PathLike,
    split: PatientSplit,
    *,
    root: str | os.PathLike | None = None,
    **phantoms,
) -> tuple[Path, PatientSplit]:
    """A folder to train Pix2Pix on randomised phantoms and to score it on the book's patients.

    ``root/pix2pix-data`` receives phantom patients (``training-000``, ...) written by
    :func:`prostseg.data.phantom.write_phantom_dataset` with ``aligned_stack=True`` (the
    stack of a perfect registration, so they need no elastix run) and the settings of
    :data:`PIX2PIX_PHANTOMS` updated with ``phantoms`` (e.g. ``contrast="mixed"``), and a copy of every validation and
    test case of ``split`` (registered, ``aligned/`` included), named ``book-<case id>``.
    The split returned trains on the phantoms and keeps the validation and test patients
    of ``split`` under their new names.

    Parameters
    ----------
    data_dir : str or os.PathLike
        The data folder of ``split``; its validation and test cases must be registered.
    split : PatientSplit
        The split of ``data_dir`` whose validation and test patients to copy.
    root : str or os.PathLike, optional
        Folder that holds ``pix2pix-data``; default :func:`outputs_root`.
    **phantoms
        Changes to :data:`PIX2PIX_PHANTOMS`: ``cases`` (number of phantom patients),
        ``seed`` (their dataset seed; not :data:`PHANTOM_SEED`, whose patients are the
        book's), and keywords of :func:`prostseg.data.phantom.make_phantom_case`.

    Returns
    -------
    (pathlib.Path, PatientSplit)
        The folder and the split to train on.

    Raises
    ------
    InputError
        When a validation or test case of ``split`` has no zones or registered stack, or
        when ``root/pix2pix-data`` exists but was not written by this function.

    Notes
    -----
    The folder is reused as long as its ``.recipe.json`` records the same phantoms,
    data folder, validation and test patients and generator version; otherwise it is
    deleted and written again.

    Examples
    --------
    >>> import tempfile
    >>> root, grid = Path(tempfile.mkdtemp()), dict(shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))
    >>> book = write_phantom_dataset(root / "book", n_cases=2, aligned_stack=True, **grid)  # registered
    >>> split = PatientSplit(train=["phantom-000"], val=[], test=["phantom-001"], seed=0)
    >>> folder, training = pix2pix_data(root / "book", split, root=root, cases=2, **grid)
    >>> folder.name, training.train, training.test
    ('pix2pix-data', ('training-000', 'training-001'), ('book-phantom-001',))
    """
    settings = {**PIX2PIX_PHANTOMS, **phantoms}
    cases, seed = settings.pop("cases"), settings.pop("seed")
    if seed == PHANTOM_SEED:
        raise ValueError(f"seed {PHANTOM_SEED} draws the book's own patients; choose another seed")
    data_dir = Path(data_dir)
    held_out = {f"book-{case_id}": case_id for case_id in (*split.val, *split.test)}
    for case_id in held_out.values():
        find_case(data_dir / case_id, require=("zones", STACK))
    recipe = {"generator_version": GENERATOR_VERSION, "cases": cases, "seed": seed,
              "case_kwargs": json.loads(json.dumps(settings)), "data_dir": str(data_dir.resolve()),
              "held_out": held_out}
    out_dir = Path(outputs_root() if root is None else root) / PIX2PIX_FOLDER
    recipe_file = out_dir / _PIX2PIX_RECIPE
    if out_dir.exists():
        try:
            found = json.loads(recipe_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(out_dir, f"exists but holds no readable {_PIX2PIX_RECIPE}, so prostseg did not "
                             "write it; move it elsewhere") from None
        if found != recipe:
            shutil.rmtree(out_dir)
    if not out_dir.exists():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pix2pix-data-", dir=out_dir.parent))
        try:
            for index, folder in enumerate(write_phantom_dataset(staging, n_cases=cases, seed=seed,
                                                                 aligned_stack=True, **settings)):
                folder.rename(staging / _training_name(index))
            for name, case_id in held_out.items():
                shutil.copytree(data_dir / case_id, staging / name)
            with atomic_path(staging / _PIX2PIX_RECIPE) as tmp:
                tmp.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
            staging.rename(out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    phantom_ids = [_training_name(index) for index in range(cases)]
    rename = {case_id: name for name, case_id in held_out.items()}
    return out_dir, PatientSplit(train=phantom_ids, val=[rename[c] for c in split.val],
                                 test=[rename[c] for c in split.test], seed=split.seed)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _case_files(case_dir: Path) -> dict[str, Path]:
    """Every file below a case folder (hidden entries and ``aligned/`` excepted)."""
    files = {}
    for path in sorted(case_dir.rglob("*")):
        relative = path.relative_to(case_dir)
        if path.is_file() and not any(part.startswith(".") or part == ALIGNED_FOLDER for part in relative.parts):
            files[relative.as_posix()] = path
    return files


@dataclass(frozen=True)
class _Copy:
    """One file of the real-data folder: where it comes from, and how it is made."""

    source: Path
    origin: str
    onto: Path | None = None  # a shipped T2W: the source is cut to its grid (crop_to_grid)


def _is_volume(path: Path) -> bool:
    return any(path.name.endswith(ending) for ending in SUPPORTED_EXTENSIONS)


def _shipped_t2w(case_dir: Path) -> Path | None:
    try:
        case = find_case(case_dir, check_grids=False)
    except InputError:
        return None
    return case.path("t2w") if case.has("t2w") else None


def _same_grid(first: Path, second: Path) -> bool:
    (shape, affine), (other_shape, other_affine) = volume_grid(first), volume_grid(second)
    return shape == other_shape and np.allclose(affine, other_affine, atol=1e-3)


def _is_crop_of(shipped: Path, source: Path) -> bool:
    """Whether ``shipped`` holds the voxels of ``source`` on a box of its grid."""
    small, large = load_volume(shipped), load_volume(source)
    try:
        return bool(np.array_equal(crop_to_grid(large, small), small.data))
    except InputError:
        return False


def _real_sources(extra: Path | None) -> dict[str, _Copy]:
    """Files the real-data folder should hold, by path relative to it.

    The shipped sample first; then every case folder of ``extra`` (the folder itself
    may hold case folders, or datasets that hold case folders). A case of ``extra``
    that shares its id with one already listed adds its other files (zone masks of
    the shipped studies, say). When the shipped case holds a crop of the scan that
    ``extra`` holds in full (the shipped T2W is a box of its voxels), the volumes it adds
    are cut to the shipped grid; any other file that would replace a different file is
    an error.
    """
    wanted: dict[str, _Copy] = {}
    shipped_t2w: dict[str, Path] = {}

    def add(case_dir: Path, origin: str) -> None:
        for relative, source in _case_files(case_dir).items():
            key = f"{case_dir.name}/{relative}"
            if key in wanted and wanted[key].source.stat().st_size == source.stat().st_size \
                    and _sha256(wanted[key].source) == _sha256(source):
                continue  # the same file again (a second copy of the shipped study)
            cropped = case_dir.name in shipped_t2w and _is_volume(source)
            if key in wanted and cropped and wanted[key].source == shipped_t2w[case_dir.name] \
                    and _is_crop_of(wanted[key].source, source):
                continue  # the full scan of which the shipped T2W is a crop
            if key in wanted:
                raise InputError(
                    source, f"differs from {wanted[key].source}, which real_data() also puts at {REAL_FOLDER}/{key}; "
                    "remove one of them or rename its case folder")
            grid = shipped_t2w.get(case_dir.name) if cropped else None
            if grid is not None and _same_grid(grid, source):
                grid = None  # already on the shipped grid: a plain copy
            wanted[key] = _Copy(source, origin, grid)

    for case_dir in sorted(SAMPLE_DIR.iterdir()):
        if case_dir.is_dir():
            add(case_dir, SAMPLE_ORIGIN)
            t2w = _shipped_t2w(case_dir)
            if t2w is not None:
                shipped_t2w[case_dir.name] = t2w
    if extra is None:
        return wanted
    for entry in sorted(extra.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        candidates = [entry] if _is_case(entry) else sorted(
            sub for sub in entry.iterdir() if sub.is_dir() and not sub.name.startswith(".") and _is_case(sub))
        origin = REAL_DATA_ENV if candidates == [entry] else f"{REAL_DATA_ENV}/{entry.name}"
        for case_dir in candidates:
            add(case_dir, origin)
    return wanted


def _is_case(folder: Path) -> bool:
    try:
        find_case(folder, check_grids=False)
    except InputError:
        return False
    return True


def _write_copy(copy: _Copy, target: Path) -> None:
    """Copy a file, or write a label map cut to the grid of a shipped T2W."""
    if copy.onto is None:
        with atomic_path(target) as tmp:
            shutil.copyfile(copy.source, tmp)
        return
    grid = load_volume(copy.onto)
    volume = load_volume(copy.source, label=True)
    save_like(crop_to_grid(volume, grid), grid, target, overwrite=True)


def real_data(root: str | os.PathLike | None = None) -> Path:
    """Return a writable folder of real cases: the shipped studies, and more when available.

    The folder ``root/real-data`` holds, in the case layout of :mod:`prostseg.data.dataset`,
    the real studies that ship with prostseg (:data:`SAMPLE_DIR`: ProstateX-0000 with
    T2W, ADC, high-b DWI, a lesion mask and a gland mask; ProstateX-0101, -0152 and -0199
    with a T2W crop and a gland mask) and, when the environment variable
    :data:`REAL_DATA_ENV` names a folder, every case folder found in it or in its
    sub-folders. A case found there under the id of one already present adds its other
    files: the project's test data adds zone masks to the shipped studies this way.
    Where the shipped T2W is a crop of the scan found there, the masks it adds are cut
    to the shipped grid (:func:`prostseg.data.io.crop_to_grid`). The files are copies, so
    registration can write ``aligned/`` next to them without touching the sources.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Folder that holds ``real-data``; default :func:`outputs_root`.

    Returns
    -------
    pathlib.Path
        ``root/real-data``.

    Raises
    ------
    InputError
        When a file that :func:`real_data` did not write stands where a copy must go
        (it is never replaced), or when two sources disagree about one file.

    Notes
    -----
    Copies are renewed when their source or the copy itself changed (the SHA-256 of
    both is recorded); copies whose source is gone (the variable was unset) are
    deleted. Everything else in the folder, such as ``aligned/`` written by
    registration, is left alone. Which file came from where is recorded in
    ``real-data/.sources.json`` and reported by :func:`describe_source`.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ.pop(REAL_DATA_ENV, None) and None
    >>> folder = real_data(tempfile.mkdtemp())
    >>> sorted(path.name for path in folder.iterdir() if path.is_dir())
    ['ProstateX-0000', 'ProstateX-0101', 'ProstateX-0152', 'ProstateX-0199']
    >>> sorted(path.name for path in (folder / "ProstateX-0000").iterdir())
    ['adc.mha', 'gland.nii.gz', 'hbv.mha', 'lesion.nii.gz', 't2w.mha']
    >>> describe_source(folder)  # doctest: +ELLIPSIS
    'Real data: 4 cases in .../real-data: ProstateX-0000, ProstateX-0101, ProstateX-0152, ProstateX-0199 (shipped with prostseg)'
    """
    out_dir = Path(outputs_root() if root is None else root) / REAL_FOLDER
    wanted = _real_sources(real_data_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / _SOURCES
    try:
        written = json.loads(index_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        written = {}
    for key in sorted(set(written) - set(wanted)):  # copies whose source is gone
        (out_dir / key).unlink(missing_ok=True)
    entries = {}
    for key, copy in wanted.items():
        target = out_dir / key
        entry = {"source": str(copy.source), "origin": copy.origin, "sha256": _sha256(copy.source),
                 "onto": None if copy.onto is None else str(copy.onto)}
        recorded = written.get(key, {})
        if target.is_file() and all(recorded.get(name) == value for name, value in entry.items()) \
                and recorded.get("copy_sha256") == _sha256(target):
            entries[key] = recorded
            continue
        if target.exists() and key not in written:
            raise InputError(target, f"was not written by prostseg.book.data.real_data (its source would be "
                             f"{copy.source}); move it elsewhere")
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_copy(copy, target)
        entries[key] = {**entry, "copy_sha256": _sha256(target)}
    emptied = {parent for key in written for parent in (out_dir / key).parents if out_dir in parent.parents}
    for folder in sorted(emptied, key=lambda path: len(path.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    index = {"files": entries}
    with atomic_path(index_path) as tmp:
        tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return out_dir


def gland_training_data(
    *,
    phantoms: int = GLAND_PHANTOMS,
    seed: int = PHANTOM_SEED,
    root: str | os.PathLike | None = None,
) -> Path:
    """Return the data folder chapter 7 trains its gland U-Net on: real cases and phantoms.

    The folder ``root/gland-training-data`` holds, in the case layout of
    :mod:`prostseg.data.dataset`,

    * every real case of :func:`real_data` that has a gland mask (the four ProstateX
      studies that ship with prostseg), as ``t2w`` and ``gland`` only, and
    * ``phantoms`` phantom patients of ``seed`` with ``contrast="mixed"``
      (:func:`prostseg.data.phantom.make_phantom_case`: about half of them with a random T2W
      level per tissue), whose ``gland`` masks are their non-zero zones.

    Parameters
    ----------
    phantoms : int, optional
        Number of phantom patients (>= 0).
    seed : int, optional
        Seed of the phantom patients.
    root : str or os.PathLike, optional
        Folder that holds ``real-data`` and ``gland-training-data``; default
        :func:`outputs_root`.

    Returns
    -------
    pathlib.Path
        ``root/gland-training-data``.

    Raises
    ------
    InputError
        When the folder holds folders or files that prostseg did not write.

    Notes
    -----
    The phantoms follow the rules of :func:`tutorial_data` (written once, reused while
    their ``phantom.json`` matches); the real files are copies, renewed when they differ
    from :func:`real_data`'s. Whatever ``PROSTSEG_REAL_DATA`` adds to :func:`real_data`
    has no gland mask and does not come here, so the folder is the same with and without
    it: the independent masks of the real cases are for scoring, never for training.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ.pop(REAL_DATA_ENV, None) and None
    >>> folder = gland_training_data(phantoms=2, root=tempfile.mkdtemp())
    >>> sorted(path.name for path in folder.iterdir() if path.is_dir())  # doctest: +NORMALIZE_WHITESPACE
    ['ProstateX-0000', 'ProstateX-0101', 'ProstateX-0152', 'ProstateX-0199',
     'phantom-000', 'phantom-001']
    >>> sorted(path.name for path in (folder / "ProstateX-0000").iterdir())
    ['gland.nii.gz', 't2w.mha']
    """
    if phantoms < 0:
        raise ValueError(f"phantoms must be >= 0, got {phantoms}")
    root = Path(outputs_root() if root is None else root)
    real_cases = [case for case in discover_cases(real_data(root), require=("t2w",)) if case.has("gland")]
    out_dir = root / GLAND_FOLDER
    names = frozenset(case.case_id for case in real_cases)
    _phantom_cases(out_dir, phantoms, seed, dict(GLAND_PHANTOM_KWARGS), others=names)
    for case in real_cases:
        for role in ("t2w", "gland"):
            source = case.path(role)
            target = out_dir / case.case_id / source.name
            if target.is_file() and _sha256(target) == _sha256(source):
                continue
            target.parent.mkdir(exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
    return out_dir


def gland_training_split(data_dir: str | os.PathLike, *, test: tuple[str, ...] = GLAND_TEST_PATIENTS,
                         val_phantoms: int = 2, real: bool = True, phantoms: int | None = None) -> PatientSplit:
    """The split chapter 7 trains with on :func:`gland_training_data`.

    Parameters
    ----------
    data_dir : str or os.PathLike
        A folder written by :func:`gland_training_data`.
    test : tuple of str, optional
        The real patients kept out of training and model selection.
    val_phantoms : int, optional
        The last this many phantoms are the validation patients (they choose
        ``best.keras``; none when there are not more phantoms than this); the real
        patients are too few to spare one.
    real : bool, optional
        Train on the other real patients (False: on the phantoms alone).
    phantoms : int, optional
        Use only the first this many phantoms (validation included); default all.

    Returns
    -------
    prostseg.preparation.splits.PatientSplit

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ.pop(REAL_DATA_ENV, None) and None
    >>> folder = gland_training_data(phantoms=3, root=tempfile.mkdtemp())
    >>> split = gland_training_split(folder, val_phantoms=1)
    >>> split.train, split.val, split.test  # doctest: +NORMALIZE_WHITESPACE
    (('ProstateX-0101', 'ProstateX-0152', 'ProstateX-0199', 'phantom-000', 'phantom-001'),
     ('phantom-002',), ('ProstateX-0000',))
    >>> gland_training_split(folder, phantoms=0).train  # the real patients alone
    ('ProstateX-0101', 'ProstateX-0152', 'ProstateX-0199')
    >>> gland_training_split(folder, real=False, val_phantoms=1).train
    ('phantom-000', 'phantom-001')
    """
    cases = [case.case_id for case in discover_cases(data_dir, require=("t2w", "gland"))]
    made = [case_id for case_id in cases if _CASE_NAME.fullmatch(case_id)][:phantoms]
    val = made[len(made) - val_phantoms:] if 0 < val_phantoms < len(made) else []
    others = [case_id for case_id in cases if not _CASE_NAME.fullmatch(case_id) and case_id not in test]
    train = others if real else []
    return PatientSplit(train=train + made[:len(made) - len(val)], val=val, test=list(test), seed=None)


def _origins(data_dir: Path) -> dict[str, list[str]]:
    """Case id -> origins of its files, from the index :func:`real_data` keeps."""
    try:
        files = json.loads((data_dir / _SOURCES).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    origins: dict[str, list[str]] = {}
    for key, entry in files.items():
        case_origins = origins.setdefault(key.split("/", 1)[0], [])
        if entry["origin"] not in case_origins:
            case_origins.append(entry["origin"])
    return origins


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
        :mod:`prostseg.data.phantom` (recognised by its ``phantom.json``), ``"Real data: ..."``
        when none was (naming where each case came from in a folder written by
        :func:`real_data`), and a line giving both counts for a mixture.

    Raises
    ------
    InputError
        When ``path`` is not a folder.

    Examples
    --------
    >>> import tempfile
    >>> describe_source(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    'Real data: 0 cases in ... (not generated by prostseg.data.phantom)'
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
            f"Synthetic phantom data: {subject} made by prostseg.data.phantom "
            f"(seed {seeds}, generator version {versions}) in {location}"
        )
    if phantoms:
        return (
            f"Mixed data: {_plural(real, 'real case')} and "
            f"{_plural(len(phantoms), 'synthetic phantom case')} in {location}"
        )
    origins = _origins(location)
    if not origins or any(folder.name not in origins for folder in folders):
        return f"Real data: {subject} in {location} (not generated by prostseg.data.phantom)"
    groups: dict[str, list[str]] = {}
    for folder in folders:
        groups.setdefault(" + ".join(origins[folder.name]), []).append(folder.name)
    listed = "; ".join(f"{', '.join(ids)} ({origin})" for origin, ids in groups.items())
    return f"Real data: {subject} in {location}: {listed}"
