"""The on-disk case layout and its discovery.

Phantom cases (:func:`prostseg.data.phantom.write_phantom_dataset`) and imported real data
use the same layout, so every chapter of the book runs on either. Bring your own data
by arranging it like this::

    DATA_DIR/
      CASE_ID/              one folder per patient; the folder name is the case id
        t2w.nii.gz          required: axial T2-weighted volume
        adc.nii.gz          optional: ADC map (on its own grid)
        dwi.nii.gz          optional: high-b diffusion-weighted volume (own grid);
                            may also be called hbv.*
        lesion.nii.gz       optional: binary lesion mask on the T2W grid
        zones.nii.gz        optional: zone labels on the T2W grid,
                            0 background, 1 PZ, 2 TZ, 3 CZ, 4 AFS (ZONE_NAMES)
        gland.nii.gz        optional: whole-gland mask on the T2W grid, 0 and 1
                            (for data whose gland outline has no zones)
        phantom.json        only in generated cases: how prostseg.data.phantom made them
        aligned/            written by prostseg.preparation.registration
          stack.nii.gz      (X, Y, Z, 3) float32: T2W, DWI, ADC on the T2W grid
          dwi.nii.gz        DWI and ADC resampled onto the T2W grid,
          adc.nii.gz
          dwi_transform.txt their transforms (elastix parameter files),
          adc_transform.txt
          registration.json and the report, written last

Rules:

* Every file may use any extension of :data:`EXTENSIONS` (``.nii.gz``, ``.nii``,
  ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) instead of ``.nii.gz``; a folder with the
  same name (``t2w/``) is read as a DICOM series. File names are matched without
  regard to case (``T2W.mha`` is the T2W volume).
* Each volume must appear once: ``t2w.nii.gz`` next to ``t2w.mha``, or ``dwi.*`` next
  to ``hbv.*``, is an error rather than a guess.
* Masks (``lesion``, ``zones``, ``gland``) and ``aligned/stack`` must lie on the T2W grid: same
  canonical shape and affine (see :func:`prostseg.data.io.volume_grid`), whatever voxel
  order each file uses. ADC and DWI have grids of their own.
* Other files (notes, ``.raw`` data files of ``.mhd`` headers, ``phantom.json``,
  splits) are ignored. Folders and files whose name starts with ``.`` are skipped.
  Every other sub-folder of ``DATA_DIR`` is a case.

This module owns these names; every other module asks it (:data:`CASE_ROLES`,
:data:`ALIGNED_FOLDER`, :func:`volume_file`, :func:`stack_file`, ...). prostseg writes
volumes as ``.nii.gz`` (:data:`WRITE_EXTENSION`).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from prostseg.data.phantom import write_phantom_dataset
>>> data_dir = Path(tempfile.mkdtemp())
>>> _ = write_phantom_dataset(data_dir, n_cases=2, shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))
>>> cases = discover_cases(data_dir)
>>> [case.case_id for case in cases]
['phantom-000', 'phantom-001']
>>> sorted(cases[0].files)
['adc', 'dwi', 'gland', 'lesion', 't2w', 'zones']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from prostseg.errors import InputError, path_argument
from prostseg.data.io import SUPPORTED_EXTENSIONS, Volume, check_same_grid, header_volume, load_volume

__all__ = [
    "ALIGNED_FOLDER",
    "CASE_ROLES",
    "PATIENTS_FILE",
    "PHANTOM_FILE",
    "REGISTRATION_FILE",
    "WRITE_EXTENSION",
    "ZONE_NAMES",
    "NUM_ZONE_CLASSES",
    "MODALITIES",
    "MASKS",
    "MASK_CLASSES",
    "STACK",
    "EXTENSIONS",
    "FILE_ALIASES",
    "Case",
    "LESION_VALUES",
    "find_case",
    "case_folders",
    "check_output_outside_inputs",
    "discover_cases",
    "load_mask",
    "stack_file",
    "transform_file",
    "volume_file",
]

#: Class names of the zone label maps, indexed by label value.
ZONE_NAMES = (
    "background",
    "peripheral zone",
    "transition zone",
    "central zone",
    "anterior fibromuscular stroma",
)
#: Number of zone classes, background included.
NUM_ZONE_CLASSES = len(ZONE_NAMES)

#: Values a lesion mask may use for lesion voxels: 1, or 255 when stated explicitly
#: (``lesion_value=255``); background is always 0.
LESION_VALUES = (1, 255)

#: Image volumes of a case.
MODALITIES = ("t2w", "adc", "dwi")
#: Label maps of a case; all lie on the T2W grid. ``gland`` is a whole-gland mask (0, 1),
#: for data whose gland outline has no zones (the real cases that ship with prostseg).
MASKS = ("lesion", "zones", "gland")
#: Number of label values of the masks whose values are 0 .. n - 1 (a lesion mask's
#: lesion value may be 1 or 255: :data:`LESION_VALUES`).
MASK_CLASSES = MappingProxyType({"zones": NUM_ZONE_CLASSES, "gland": 2})
#: Name of the registered 3-channel volume, stored as ``aligned/stack.*``.
STACK = "stack"
#: File name endings a case file may have.
EXTENSIONS = SUPPORTED_EXTENSIONS
#: Other file names accepted for a volume (``hbv`` is ProstateX's name for high-b DWI).
FILE_ALIASES = MappingProxyType({"hbv": "dwi"})
#: Every volume a case folder may hold (its roles), images first, in this order.
CASE_ROLES = (*MODALITIES, *MASKS)
#: The folder of a case that :mod:`prostseg.preparation.registration` writes.
ALIGNED_FOLDER = "aligned"
#: The report :mod:`prostseg.preparation.registration` writes last into :data:`ALIGNED_FOLDER`.
REGISTRATION_FILE = "registration.json"
#: What :mod:`prostseg.data.phantom` writes into each generated case folder (its settings).
PHANTOM_FILE = "phantom.json"
#: The data folder's map of case ids to patient ids (:mod:`prostseg.preparation.splits`).
PATIENTS_FILE = "patients.json"
#: The file name ending of the volumes prostseg writes.
WRITE_EXTENSION = ".nii.gz"
_TRANSFORM_SUFFIX = "_transform.txt"
_ON_T2W_GRID = (*MASKS, STACK)


@dataclass(frozen=True)
class Case:
    """The files of one case folder.

    Attributes
    ----------
    case_id : str
        The folder name (the patient id).
    folder : pathlib.Path
        The case folder.
    files : Mapping[str, pathlib.Path]
        Read-only map from names of :data:`MODALITIES`, :data:`MASKS` and :data:`STACK`
        to the files found; names without a file are absent.

    Examples
    --------
    >>> from pathlib import Path
    >>> case = Case("p1", Path("data/p1"), {"t2w": Path("data/p1/t2w.nii.gz")})
    >>> case.has("t2w"), case.has("lesion")
    (True, False)
    >>> case.path("lesion")
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: data/p1: case p1 has no lesion file
    """

    case_id: str
    folder: Path
    files: Mapping[str, Path] = field(hash=False)

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "files", MappingProxyType({k: Path(v) for k, v in self.files.items()}))

    def has(self, name: str) -> bool:
        """Whether the case has a file for ``name`` (``"t2w"``, ``"lesion"``, ...)."""
        return name in self.files

    def path(self, name: str) -> Path:
        """The file for ``name``; :class:`InputError` naming the folder when absent."""
        if name not in self.files:
            raise InputError(self.folder, f"case {self.case_id} has no {name} file")
        return self.files[name]


def volume_file(name: str) -> str:
    """The file name prostseg writes the volume ``name`` (a role, or :data:`STACK`) under.

    Examples
    --------
    >>> volume_file("t2w"), volume_file(STACK)
    ('t2w.nii.gz', 'stack.nii.gz')
    """
    return name + WRITE_EXTENSION


def stack_file(case_folder: str | os.PathLike) -> Path:
    """Where :mod:`prostseg.preparation.registration` writes the registered stack of a case.

    Examples
    --------
    >>> stack_file("data/p1").as_posix()
    'data/p1/aligned/stack.nii.gz'
    """
    return Path(case_folder) / ALIGNED_FOLDER / volume_file(STACK)


def transform_file(aligned_folder: str | os.PathLike, name: str) -> Path:
    """The transform file registration writes for the volume ``name`` ("dwi", "adc").

    Examples
    --------
    >>> transform_file("data/p1/aligned", "adc").as_posix()
    'data/p1/aligned/adc_transform.txt'
    """
    return Path(aligned_folder) / (name + _TRANSFORM_SUFFIX)


def _file_name(path: Path) -> str | None:
    """The layout name a folder entry stands for (aliases resolved), or None."""
    lowered = path.name.lower()
    if path.is_dir():
        stem = lowered
    else:
        ending = next((ext for ext in EXTENSIONS if lowered.endswith(ext)), None)
        if ending is None:
            return None
        stem = lowered[: -len(ending)]
    stem = FILE_ALIASES.get(stem, stem)
    return stem if stem in MODALITIES or stem in MASKS else None


def _holds_case(folder: Path) -> bool:
    """Whether ``folder`` is a case folder: it holds a file or folder of the layout."""
    try:
        return folder.is_dir() and any(_file_name(entry) for entry in folder.iterdir())
    except OSError:
        return False


def check_output_outside_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                                *, flag: str = "output") -> None:
    """Refuse an output that is one of a command's inputs or lies inside an input case folder.

    ``overwrite`` replaces a command's earlier outputs, never its inputs: a prediction
    written over its own T2W, or a score table inside a case folder, would destroy or
    mix up the user's data.

    Parameters
    ----------
    output : str or os.PathLike
        The file or folder the command is about to write.
    inputs : iterable of str or os.PathLike or None
        What the command reads: files, case folders, data folders (their case folders
        are inputs too). A file inside a case folder makes its folder an input.
        ``None`` entries are skipped.
    flag : str, optional
        How the output is named in the message (``--out`` on the command line).

    Raises
    ------
    InputError
        Naming the output and the input it would write into.

    Examples
    --------
    >>> import tempfile
    >>> data = Path(tempfile.mkdtemp())
    >>> (data / "case-01").mkdir()
    >>> (data / "case-01" / "t2w.nii.gz").touch()
    >>> check_output_outside_inputs(data / "predictions", [data])  # beside the cases: fine
    >>> check_output_outside_inputs(data / "case-01" / "t2w.nii.gz", [data])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...t2w.nii.gz: output lies inside the input case folder ...case-01; ...
    """
    out = Path(os.path.abspath(output))
    for given in inputs:
        if given is None:
            continue
        source = Path(os.path.abspath(given))
        if out == source or (out.exists() and source.exists() and os.path.samefile(out, source)):
            raise InputError(output, f"{flag} is one of this command's inputs; write it elsewhere")
        if source.is_dir():
            cases = [source] if _holds_case(source) else [
                folder for folder in (source / part for part in out.relative_to(source).parts[:1])
                if _holds_case(folder)] if out.is_relative_to(source) else []
        else:
            cases = [source.parent] if _holds_case(source.parent) else []
        for case in cases:
            if out.is_relative_to(case):
                raise InputError(output, f"{flag} lies inside the input case folder {case}; "
                                         "write outputs outside the case folders")


def _entries(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _scan(folder: Path, require: tuple[str, ...], check_grids: bool) -> tuple[Case, list[str]]:
    """The case in ``folder`` and the problems found with it."""
    found: dict[str, list[Path]] = {}
    entries = _entries(folder)
    for entry in entries:
        name = _file_name(entry)
        if name is not None:
            found.setdefault(name, []).append(entry)
    aligned = folder / ALIGNED_FOLDER
    if aligned.is_dir():
        for entry in _entries(aligned):
            lowered = entry.name.lower()
            if entry.is_file() and any(lowered == STACK + ext for ext in EXTENSIONS):
                found.setdefault(STACK, []).append(entry)

    problems = []
    for name, paths in found.items():
        if len(paths) > 1:
            listed = ", ".join(str(path.relative_to(folder)) for path in paths)
            problems.append(f"{len(paths)} files for {name}: {listed}; keep one")
    for name in require:
        if name not in found:
            present = ", ".join(entry.name for entry in entries) or "nothing"
            problems.append(f"missing {name} (e.g. {name}.nii.gz); the folder holds {present}")
    case = Case(folder.name, folder, {name: paths[0] for name, paths in found.items()})
    if check_grids and not problems and case.has("t2w"):
        problems.extend(_grid_problems(case))
    return case, problems


def _grid_problems(case: Case) -> list[str]:
    """Problems with files that must lie on the T2W grid (headers only where possible)."""
    try:
        t2w = header_volume(case.files["t2w"])
    except InputError as err:
        return [f"{case.files['t2w'].name}: {err.problem}"]
    problems = []
    for name in _ON_T2W_GRID:
        if not case.has(name):
            continue
        label = str(case.files[name].relative_to(case.folder))
        try:
            check_same_grid(t2w, header_volume(case.files[name]))
        except InputError as err:
            problems.append(f"{label}: {err.problem}")
    return problems


def _checked_require(require: Iterable[str]) -> tuple[str, ...]:
    require = (require,) if isinstance(require, str) else tuple(require)
    known = (*MODALITIES, *MASKS, STACK)
    unknown = [name for name in require if name not in known]
    if unknown:
        raise ValueError(f"unknown file names in require: {unknown}; choose from {known}")
    return require


def find_case(
    folder: str | os.PathLike, *, require: Iterable[str] = ("t2w",), check_grids: bool = True
) -> Case:
    """Read one case folder of the layout described in this module.

    Parameters
    ----------
    folder : str or os.PathLike
        The case folder; its name is the case id.
    require : iterable of str, optional
        Names that must have a file (from :data:`MODALITIES`, :data:`MASKS`, :data:`STACK`).
    check_grids : bool, optional
        Check from the file headers that masks and ``aligned/stack`` lie on the T2W grid.

    Returns
    -------
    Case

    Raises
    ------
    InputError
        Naming the folder and listing every problem: a required file missing, two files
        for one volume, a mask off the T2W grid, an unreadable header.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp()) / "case-1"
    >>> folder.mkdir()
    >>> find_case(folder)
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...case-1: missing t2w (e.g. t2w.nii.gz); the folder holds nothing
    """
    require = _checked_require(require)
    folder = path_argument(folder, "folder")
    if not folder.is_dir():
        raise InputError(folder, "no such case folder")
    case, problems = _scan(folder, require, check_grids)
    if problems:
        raise InputError(folder, "; ".join(problems))
    return case


def case_folders(data_dir: str | os.PathLike) -> list[Path]:
    """The case folders of a data folder, sorted, without reading them.

    Every sub-folder of ``data_dir`` whose name does not start with ``.`` is a case.
    Commands that treat each case on its own (and report a bad case instead of
    stopping) list the cases with this function and check each with :func:`find_case`.

    Raises
    ------
    InputError
        Naming ``data_dir`` when it is missing or holds no case folder.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> data_dir = Path(tempfile.mkdtemp())
    >>> for name in ("b", "a", ".hidden"):
    ...     (data_dir / name).mkdir()
    >>> [folder.name for folder in case_folders(data_dir)]
    ['a', 'b']
    """
    data_dir = path_argument(data_dir, "data_dir")
    if not data_dir.is_dir():
        raise InputError(data_dir, "no such data folder")
    folders = [entry for entry in _entries(data_dir) if entry.is_dir()]
    if not folders:
        raise InputError(
            data_dir,
            "no case folders; expected DATA_DIR/CASE_ID/t2w.nii.gz and optional adc, dwi, "
            "lesion, zones files (see prostseg.data.dataset)",
        )
    return folders


def discover_cases(
    data_dir: str | os.PathLike, *, require: Iterable[str] = ("t2w",), check_grids: bool = True
) -> list[Case]:
    """Find all cases in a data folder.

    Every sub-folder of ``data_dir`` whose name does not start with ``.`` is a case
    (see the layout in this module's documentation); files directly in ``data_dir``
    are ignored.

    Parameters
    ----------
    data_dir : str or os.PathLike
        The folder holding one folder per case.
    require : iterable of str, optional
        Names every case must have a file for; the default needs only ``t2w``. Pass
        ``("t2w", "lesion")`` for lesion segmentation, or
        ``("t2w", "adc", "dwi", "zones")`` for zone segmentation.
    check_grids : bool, optional
        Check from the file headers that masks and ``aligned/stack`` lie on the T2W grid.

    Returns
    -------
    list of Case
        Sorted by case id.

    Raises
    ------
    InputError
        Naming ``data_dir`` when it is missing or holds no case folder, or listing
        every problem of every case at once (see :func:`find_case`).

    Examples
    --------
    >>> import tempfile
    >>> discover_cases(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...: no case folders; expected DATA_DIR/CASE_ID/t2w.nii.gz ...
    """
    require = _checked_require(require)
    folders = case_folders(data_dir)
    cases, report, bad = [], [], 0
    for folder in folders:
        case, problems = _scan(folder, require, check_grids)
        cases.append(case)
        bad += bool(problems)
        report.extend(f"\n  {case.case_id}: {problem}" for problem in problems)
    if report:
        raise InputError(data_dir, f"{bad} of {len(folders)} cases have problems:" + "".join(report))
    return sorted(cases, key=lambda case: case.case_id)


def _present_values(data: np.ndarray) -> np.ndarray:
    """The distinct values of a label array (a histogram for uint8, fast on big volumes)."""
    if data.dtype == np.uint8:
        return np.flatnonzero(np.bincount(data.ravel(), minlength=256))
    return np.unique(data)


def load_mask(path: str | os.PathLike, name: str, *, lesion_value: int = 1) -> Volume:
    """Read a mask of the case layout, checking the values its kind allows.

    Parameters
    ----------
    path : str or os.PathLike
        The file (see :func:`prostseg.data.io.load_volume`).
    name : {"lesion", "zones", "gland"}
        ``"zones"``: labels 0..4 (:data:`ZONE_NAMES`). ``"gland"``: 0 and 1.
        ``"lesion"``: 0 and ``lesion_value``.
    lesion_value : {1, 255}, optional
        The value of lesion voxels (:data:`LESION_VALUES`); 255 must be asked for, so
        that an 8-bit image saved by mistake as a mask is not taken for one.

    Returns
    -------
    Volume
        ``uint8`` labels in canonical order.

    Raises
    ------
    InputError
        Naming the file and the values it holds that its kind does not allow.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib
    >>> file = Path(tempfile.mkdtemp()) / "lesion.nii.gz"
    >>> mask = np.array([0, 255], np.uint8).reshape(1, 1, 2)
    >>> nib.save(nib.Nifti1Image(mask, np.eye(4)), file)
    >>> int(load_mask(file, "lesion", lesion_value=255).data.max())
    255
    >>> load_mask(file, "lesion")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...lesion.nii.gz: lesion mask holds 255; ... lesion_value=255
    """
    if name not in MASKS:
        raise ValueError(f"name must be one of {MASKS}, got {name!r}")
    if name in MASK_CLASSES:
        return load_volume(path, num_classes=MASK_CLASSES[name])
    if lesion_value not in LESION_VALUES:
        raise ValueError(f"lesion_value must be one of {LESION_VALUES}, got {lesion_value!r}")
    mask = load_volume(path, label=True)
    present = _present_values(mask.data)
    unexpected = [int(v) for v in present if v not in (0, lesion_value)]
    if unexpected:
        more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        hint = "; if 255 marks lesions, say so with lesion_value=255" if unexpected == [255] else ""
        raise InputError(path, f"lesion mask holds {', '.join(map(str, unexpected[:5]))}{more}; "
                         f"expected 0 (background) and {lesion_value} (lesion){hint}")
    return mask
