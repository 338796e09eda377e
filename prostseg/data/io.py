"""Read and write 3D MRI volumes in one consistent orientation.

Supported inputs are NIfTI (``.nii``, ``.nii.gz``, read with nibabel), NRRD (``.nrrd``,
``.nhdr``) and MetaImage (``.mha``, ``.mhd``) files, and folders holding one DICOM
series (all three read with ITK). :func:`load_volume` returns a :class:`Volume`.

Orientation convention
----------------------
Scanners store voxels in many orders (a ProstateX T2W NIfTI runs Right-to-Left along
its first axis, ITK files use LPS coordinates). Every :class:`Volume` is therefore
reordered to the RAS+ *closest-canonical* voxel order, exactly like
``nibabel.as_closest_canonical``:

- ``volume.data`` is indexed ``(x, y, z)``: ``x`` increases towards the patient's
  Right, ``y`` towards Anterior, ``z`` towards Superior. The axial slice ``k`` is
  ``volume.data[:, :, k]``, an array of shape ``(X, Y)``.
- ``volume.affine`` (4x4) maps a voxel index ``(i, j, k, 1)`` to RAS millimetres
  and describes ``volume.data`` as it is, so no information is lost.
- Only axes are permuted and flipped; nothing is resampled. An oblique acquisition
  (a direction matrix that is not a pure permutation, such as 3D Slicer label maps)
  keeps its exact oblique affine; its axes are merely the ones closest to R, A, S.

Because an image and its mask are reordered by the same rule, a mask written on the
image's grid lines up voxel for voxel with the image after loading, whatever order
the files used on disk (check it with :func:`check_same_grid`). Figures decide
themselves how to display a slice; data code never flips arrays.

A :class:`Volume` remembers the voxel order and affine of its file. :func:`save_like`
uses that to write a result computed in canonical order back in the file's own order
with the file's own affine, so a prediction overlays the source scan in 3D Slicer or
ITK-SNAP.

Values
------
Images are returned as ``float32`` and must be finite. Label maps
(``label=True``) must hold whole numbers ``>= 0`` and are returned in the smallest
unsigned integer type that holds them (``uint8`` for masks and zone maps). A
constant volume is accepted: a blank mask is legitimate, and preprocessing maps a
constant image to zeros instead of dividing by zero.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from prostseg.atomic import atomic_path
from prostseg.console import native_output_captured
from prostseg.errors import InputError, path_argument

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS
"""File name endings :func:`load_volume` reads; a folder is read as a DICOM series."""

GRID_TOLERANCE = 0.05
"""Largest voxel displacement, in voxels, that :func:`check_same_grid` ignores."""

MAX_VOXELS = 2**28
"""The most voxels (channels included) a file may declare: 1 GiB as ``float32``.

A header that declares more is refused before anything is allocated."""

ITK_COMPONENT_TYPES = ("unsigned_char", "char", "unsigned_short", "short", "unsigned_int", "int",
                       "unsigned_long", "long", "unsigned_long_long", "long_long", "float", "double")
"""Voxel types read from NRRD and MetaImage files, by ITK's names."""

_CIFTI_INTENTS = range(3000, 3100)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_RAS = orientations.axcodes2ornt("RAS")
_NIBABEL_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, ValueError)


@dataclass(frozen=True)
class _Source:
    """The voxel order of a volume's file: what :func:`save_like` writes back."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    header: nib.Nifti1Header | None  # NIfTI sources: reused so the output header matches


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume in RAS+ closest-canonical voxel order.

    Parameters
    ----------
    data : numpy.ndarray
        Voxel values indexed ``(x, y, z)`` or ``(x, y, z, channel)``; ``+x`` Right,
        ``+y`` Anterior, ``+z`` Superior.
    affine : numpy.ndarray
        4x4 voxel-to-RAS (mm) matrix of ``data``; must be in closest-canonical order.
    path : pathlib.Path, optional
        The file the volume was read from, used in error messages.

    Notes
    -----
    Volumes read with :func:`load_volume` also remember their file's voxel order
    (see :meth:`to_source`). For a new array on the same grid use
    ``dataclasses.replace(volume, data=new_array)``, which keeps that information.

    Examples
    --------
    >>> import numpy as np
    >>> volume = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> volume.shape, volume.spacing
    ((4, 5, 6), (0.5, 0.5, 3.0))
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    _source: _Source | None = field(default=None, repr=False)

    def __post_init__(self):
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
        if self.data.ndim not in (3, 4):
            raise ValueError(f"data must be (X, Y, Z) or (X, Y, Z, C), got shape {self.data.shape}")
        object.__setattr__(self, "affine", affine)
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))
        if self._source is None:
            if not np.array_equal(orientations.io_orientation(affine), _RAS):
                codes = "".join(orientations.aff2axcodes(affine))
                raise ValueError(
                    f"affine has voxel axes {codes}, not RAS+ closest-canonical; "
                    "read files with load_volume, which reorders them"
                )
            object.__setattr__(self, "_source", _Source(affine, self.shape, None))
        elif _canonical_shape(self._source.affine, self._source.shape) != self.shape:
            raise ValueError(
                f"data of spatial shape {self.shape} does not fit the grid of "
                f"{self.path}, whose canonical shape is "
                f"{_canonical_shape(self._source.affine, self._source.shape)}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``; ``data.shape`` adds the channel axis if any."""
        return tuple(int(n) for n in self.data.shape[:3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``x``, ``y``, ``z``, taken from the affine."""
        return tuple(float(s) for s in nib.affines.voxel_sizes(self.affine))

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """Reorder an array given in this volume's canonical order to its file's order.

        Parameters
        ----------
        array : numpy.ndarray
            Array of spatial shape :attr:`shape`, optionally with trailing axes.

        Returns
        -------
        numpy.ndarray
            The same values in the voxel order of the file the volume was read
            from, ready to store with that file's affine (see :func:`save_like`).

        Examples
        --------
        >>> import numpy as np
        >>> volume = Volume(np.zeros((2, 3, 4)), np.eye(4))
        >>> volume.to_source(np.ones((2, 3, 4))).shape
        (2, 3, 4)
        """
        array = np.asanyarray(array)
        if array.shape[:3] != self.shape:
            raise ValueError(f"array of shape {array.shape} does not match volume shape {self.shape}")
        source_ornt = orientations.io_orientation(self._source.affine)
        to_source = orientations.ornt_transform(_RAS, source_ornt)
        return np.ascontiguousarray(orientations.apply_orientation(array, to_source))

    def from_source(self, array: np.ndarray) -> np.ndarray:
        """Reorder an array given in the voxel order of this volume's file to canonical
        order; the inverse of :meth:`to_source`.

        Examples
        --------
        >>> import numpy as np
        >>> volume = Volume(np.zeros((2, 3, 4)), np.eye(4))
        >>> values = np.arange(24).reshape(2, 3, 4)
        >>> bool(np.array_equal(volume.from_source(volume.to_source(values)), values))
        True
        """
        array = np.asanyarray(array)
        expected = tuple(int(n) for n in self._source.shape[:3])
        if array.shape[:3] != expected:
            raise ValueError(f"array of shape {array.shape} does not match the file's shape {expected}")
        source_ornt = orientations.io_orientation(self._source.affine)
        return np.ascontiguousarray(orientations.apply_orientation(array, orientations.ornt_transform(source_ornt, _RAS)))


def load_volume(
    path: str | os.PathLike,
    *,
    label: bool = False,
    num_classes: int | None = None,
    channels: int | None = None,
) -> Volume:
    """Read a volume or label map and reorder it to RAS+ closest-canonical order.

    Parameters
    ----------
    path : str or os.PathLike
        A file ending in one of :data:`SUPPORTED_EXTENSIONS`, or a folder holding one
        DICOM series (slices are sorted by their position in space).
    label : bool, optional
        Read a label map: values must be whole numbers ``>= 0``; the result has the
        smallest unsigned integer dtype that holds them (``uint8`` when it fits).
        Otherwise values must be finite and the result is ``float32``.
    num_classes : int, optional
        Implies ``label=True`` and rejects values outside ``0 .. num_classes - 1``.
    channels : int, optional
        Expect a multi-channel volume of shape ``(X, Y, Z, channels)`` (for
        example the registered 3-channel stack). By default a 3D volume is
        expected; a trailing 4th axis of length 1 is dropped.

    Returns
    -------
    Volume
        ``data`` indexed ``(x, y, z[, channel])`` with ``+x`` Right, ``+y``
        Anterior, ``+z`` Superior, and the matching ``affine``.

    Raises
    ------
    InputError
        When the file is missing, has an unsupported extension, cannot be read
        (truncated or corrupt), has the wrong number of dimensions, holds NaN or
        infinite image values, or (labels) holds fractional, negative or
        out-of-range values. The message starts with the file's path.

    Examples
    --------
    A NIfTI file whose first axis runs towards the Left (as ProstateX T2W does):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib
    >>> import numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> las_affine = np.diag([-0.5, 0.5, 3.0, 1.0])
    >>> array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> nib.save(nib.Nifti1Image(array, las_affine), folder / "t2w.nii.gz")
    >>> volume = load_volume(folder / "t2w.nii.gz")
    >>> volume.data.dtype, volume.shape, volume.spacing
    (dtype('float32'), (2, 3, 4), (0.5, 0.5, 3.0))
    >>> bool(np.array_equal(volume.data, array[::-1]))  # x flipped to run Right
    True

    A mask of the same grid:

    >>> nib.save(nib.Nifti1Image((array > 20).astype(np.uint16), las_affine), folder / "lesion.nii.gz")
    >>> mask = load_volume(folder / "lesion.nii.gz", num_classes=2)
    >>> mask.data.dtype, int(mask.data.sum())
    (dtype('uint8'), 3)
    """
    path = path_argument(path)
    if num_classes is not None:
        label = True
    array, affine, header = _read(path, components=1 if channels is None else None)
    array = _checked_shape(array, path, channels)
    volume = _canonical_volume(array, affine, path, header)
    data = volume.data
    if data.dtype.kind not in "biuf":  # bool, signed, unsigned, floating
        raise InputError(path, f"unsupported voxel type {data.dtype}; expected real numbers")
    data = _checked_labels(data, path, num_classes) if label else _checked_image(data, path)
    return Volume(data, volume.affine, path, volume._source)


def volume_grid(path: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return the canonical spatial shape and affine of a file without its voxels.

    NIfTI, NRRD and MetaImage headers are read without the voxel data; a DICOM
    series folder is read in full.

    Parameters
    ----------
    path : str or os.PathLike
        Anything :func:`load_volume` accepts.

    Returns
    -------
    shape : tuple of int
        ``(X, Y, Z)`` as :attr:`Volume.shape` of ``load_volume(path)``.
    affine : numpy.ndarray
        The 4x4 affine :func:`load_volume` would return.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib
    >>> import numpy as np
    >>> file = Path(tempfile.mkdtemp()) / "adc.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.diag([-2.0, 2, 3, 1])), file)
    >>> shape, affine = volume_grid(file)
    >>> shape, affine[0, 0]
    ((4, 5, 6), np.float64(2.0))
    """
    path = path_argument(path)
    _check_readable(path)
    image_io = _check_header(path, components=None)  # the gate of check_volume_file
    if path.is_dir():
        array, affine, _ = _read_itk_volume(path)
        shape = array.shape
    elif _is_nifti(path):
        try:
            image = nib.load(path)
        except _NIBABEL_READ_ERRORS as err:
            raise InputError(path, f"cannot read NIfTI file: {err}") from err
        shape, affine = image.shape, image.affine
    else:
        shape, affine = _itk_grid(image_io)
    if len(shape) < 3:
        raise InputError(path, f"expected a 3D volume, got shape {tuple(shape)}")
    spatial = tuple(int(n) for n in shape[:3])
    ornt = orientations.io_orientation(affine)
    return _canonical_shape(affine, spatial), affine @ orientations.inv_ornt_aff(ornt, spatial)


def header_volume(path: str | os.PathLike) -> Volume:
    """A :class:`Volume` with the grid of ``path`` (see :func:`volume_grid`) and no voxels.

    Its ``data`` is a read-only view of a single zero, broadcast to the right shape:
    enough for :func:`check_same_grid` without reading the voxels.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib
    >>> file = Path(tempfile.mkdtemp()) / "zones.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.diag([-2.0, 2, 3, 1])), file)
    >>> header_volume(file).shape
    (4, 5, 6)
    """
    shape, affine = volume_grid(path)
    return Volume(np.broadcast_to(np.uint8(0), shape), affine, Path(path))


def check_same_grid(image: Volume, mask: Volume, *, tolerance: float = GRID_TOLERANCE) -> None:
    """Raise unless ``mask`` lies on the voxel grid of ``image``.

    The grids match when the canonical shapes are equal and no voxel centre of
    ``mask`` lies further than ``tolerance`` times the smallest voxel size of
    ``image`` from the same voxel of ``image``. Comparing positions rather than
    affine entries tolerates the float32 rounding of NIfTI headers (which a
    rotation spreads over the field of view) but not a real shift.

    Parameters
    ----------
    image, mask : Volume
        The volumes to compare.
    tolerance : float, optional
        Largest tolerated displacement, as a fraction of a voxel.

    Raises
    ------
    InputError
        Naming ``mask.path`` and giving both shapes and affines.

    Examples
    --------
    >>> import numpy as np
    >>> t2w = Volume(np.zeros((4, 4, 2), np.float32), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> check_same_grid(t2w, Volume(np.zeros((4, 4, 2), np.uint8), t2w.affine))
    >>> shifted = t2w.affine + [[0, 0, 0, 0.1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    >>> mask = Volume(np.zeros((4, 4, 2), np.uint8), shifted, "mask.nii.gz")
    >>> check_same_grid(t2w, mask)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: mask.nii.gz: not on the grid of the image: ...
    """
    if mask.shape == image.shape:
        corners = np.array(list(itertools.product(*[(0, n - 1) for n in image.shape] + [(1,)])))
        displacement = (mask.affine - image.affine)[:3] @ corners.T
        if np.linalg.norm(displacement, axis=0).max() <= tolerance * min(image.spacing):
            return
    image_name = "the image" if image.path is None else str(image.path)
    raise InputError(
        mask.path,
        f"not on the grid of {image_name}: shape {mask.shape} vs {image.shape}, "
        f"affine {_format_affine(mask.affine)} vs {_format_affine(image.affine)}",
    )


def crop_to_grid(volume: Volume, grid: Volume, *, tolerance: float = GRID_TOLERANCE) -> np.ndarray:
    """The voxels of ``volume`` that lie on the grid of ``grid``, a crop of its grid.

    ``grid`` must be a box of whole voxels of ``volume``'s grid: the same voxel axes and
    sizes, an origin on one of its voxel centres and an extent inside it (as when a
    scan is cropped with nibabel's ``img.slicer``). Nothing is interpolated.

    Parameters
    ----------
    volume : Volume
        The larger volume (an image or a mask).
    grid : Volume
        A volume on the smaller grid; only its shape and affine are used.
    tolerance : float, optional
        Largest tolerated displacement of a voxel centre, as a fraction of a voxel
        (NIfTI stores affines in float32).

    Returns
    -------
    numpy.ndarray
        ``volume.data`` cut to ``grid.shape`` (trailing channel axes kept), in canonical
        order, ready for :func:`save_like` with ``grid`` as the reference.

    Raises
    ------
    InputError
        Naming ``volume.path`` when ``grid`` is not a whole-voxel box inside its grid.

    Examples
    --------
    >>> import numpy as np
    >>> big = Volume(np.arange(6 * 5 * 2).reshape(6, 5, 2), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> affine = big.affine.copy()
    >>> affine[:3, 3] = big.affine[:3, :3] @ [2, 1, 0]
    >>> small = Volume(np.zeros((3, 3, 2)), affine)
    >>> bool(np.array_equal(crop_to_grid(big, small), big.data[2:5, 1:4]))
    True
    >>> crop_to_grid(small, big)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: the grid ... is not a box of whole voxels inside it: ...
    """
    offset = np.linalg.solve(volume.affine, grid.affine)  # grid voxel -> volume voxel
    start = np.round(offset[:3, 3])
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in grid.shape])), dtype=np.float64)
    mapped = corners @ offset[:3, :3].T + offset[:3, 3]
    displacement = (mapped - (corners + start)) * np.asarray(volume.spacing)
    inside = np.all(start >= 0) and np.all(start + grid.shape <= volume.shape)
    if not inside or np.linalg.norm(displacement, axis=1).max() > tolerance * min(volume.spacing):
        raise InputError(
            volume.path, f"the grid {_format_affine(grid.affine)} of shape {grid.shape} is not a box of whole voxels "
            f"inside it: shape {volume.shape}, affine {_format_affine(volume.affine)}")
    box = tuple(slice(int(s), int(s) + n) for s, n in zip(start, grid.shape))
    return volume.data[box]


def save_like(
    array: np.ndarray,
    reference: Volume,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    scale: float | None = None,
) -> Path:
    """Write a canonical-order array as NIfTI in the voxel order of ``reference``'s file.

    Parameters
    ----------
    array : numpy.ndarray
        Values on the grid of ``reference`` in canonical order (spatial shape
        ``reference.shape``, optionally with trailing channel axes). Integer and
        boolean arrays are stored as labels in the smallest integer type that holds
        them (``uint8`` for masks); floating-point arrays as ``float32``.
    reference : Volume
        The volume whose file's voxel order, affine and (for NIfTI) header to reuse.
    path : str or os.PathLike
        Output file ending in ``.nii`` or ``.nii.gz``; parent folders are created.
    overwrite : bool, optional
        Replace an existing file. Without it an existing file raises.
    scale : float, optional
        For an integer ``array`` of quantised values: the value of one step, stored as
        the NIfTI ``scl_slope`` so that readers see ``array * scale`` (e.g. probabilities
        as ``uint16`` steps of ``1 / 65535``).

    Returns
    -------
    pathlib.Path
        The written file; ``nib.load(path).affine`` equals the affine of the
        reference's file (exactly for NIfTI sources; to float32 precision otherwise).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib
    >>> import numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> las_affine = np.diag([-0.5, 0.5, 3.0, 1.0])
    >>> nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), las_affine), folder / "t2w.nii.gz")
    >>> t2w = load_volume(folder / "t2w.nii.gz")
    >>> prediction = t2w.data > -1
    >>> out = save_like(prediction, t2w, folder / "prediction.nii.gz")
    >>> written = nib.load(out)
    >>> written.get_data_dtype(), bool(np.array_equal(written.affine, las_affine))
    (dtype('uint8'), True)
    """
    path = Path(path)
    if not _is_nifti(path):
        raise InputError(path, "save_like writes NIfTI; give a file name ending in .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise InputError(path, "file exists; pass overwrite=True to replace it")
    data = reference.to_source(_storage_array(np.asanyarray(array)))
    source = reference._source
    image = nib.Nifti1Image(data, source.affine, header=source.header)
    if source.header is None:
        image.set_qform(source.affine, code="scanner")
        image.set_sform(source.affine, code="scanner")
        image.header.set_xyzt_units("mm")
    image.header.set_data_dtype(data.dtype)
    image.header["cal_min"] = image.header["cal_max"] = 0
    if scale is not None:
        if not np.issubdtype(data.dtype, np.integer):
            raise ValueError(f"scale applies to quantised integer arrays, not {data.dtype}")
        image.header.set_slope_inter(scale, 0.0)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def itk_to_volume(image, path: str | os.PathLike | None = None) -> Volume:
    """Wrap an in-memory ITK image (LPS, array ``z, y, x``) as a canonical :class:`Volume`.

    The ITK geometry becomes the RAS affine
    ``diag(-1, -1, 1) @ [direction * spacing | origin]`` of the array transposed to
    ``(x, y, z)``; pixel values and dtype are kept unchecked. Use it for images
    produced in memory, e.g. by elastix; files are read with :func:`load_volume`.

    Parameters
    ----------
    image : itk.Image
        A 3D scalar or vector image.
    path : str or os.PathLike, optional
        Recorded as :attr:`Volume.path`.

    Returns
    -------
    Volume

    Examples
    --------
    >>> import itk
    >>> import numpy as np
    >>> image = itk.image_from_array(np.zeros((6, 5, 4), np.float32))  # z, y, x
    >>> image.SetSpacing([0.5, 0.5, 3.0])
    >>> volume = itk_to_volume(image)
    >>> volume.shape, volume.spacing
    ((4, 5, 6), (0.5, 0.5, 3.0))
    """
    array, affine = _itk_array_affine(image)
    return _canonical_volume(array, affine, None if path is None else Path(path), None)


def volume_to_itk(volume: Volume):
    """Convert a :class:`~prostseg.data.io.Volume` to an ``itk.Image[itk.F, 3]``.

    The inverse of :func:`itk_to_volume`; elastix works on such images.

    Parameters
    ----------
    volume : Volume
        A 3D volume (array indexed ``(x, y, z)``, affine voxel -> RAS mm).

    Returns
    -------
    itk.Image
        Float image (array indexed ``(z, y, x)``) whose LPS origin, spacing and
        direction place every voxel at the world position ``volume.affine`` gives it.

    Examples
    --------
    >>> volume = Volume(np.zeros((4, 3, 2), np.float32), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> image = volume_to_itk(volume)
    >>> tuple(image.GetLargestPossibleRegion().GetSize())  # ITK sizes run x, y, z
    (4, 3, 2)
    >>> bool(np.allclose(itk_to_volume(image).affine, volume.affine))
    True
    """
    itk = _itk()
    affine = np.asarray(volume.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = itk.image_from_array(np.ascontiguousarray(volume.data.transpose(2, 1, 0), dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in _LPS_TO_RAS[:3, :3] @ affine[:3, 3]])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(_LPS_TO_RAS[:3, :3] @ affine[:3, :3] / spacing)))
    return image


# --- the gate: a file's header is checked before any voxel is read ------------------


def check_volume_file(path: str | os.PathLike, *, components: int | None = 1) -> Path:
    """Refuse a file whose header cannot describe a volume prostseg can read.

    The gate every reader passes (:func:`load_volume`, :func:`volume_grid`, the dataset
    importers). It checks, before any voxel is read or allocated: that the file exists
    and has a supported ending; the image kind (a NIfTI volume, not CIFTI); the voxel
    type (real numbers); the number of components per voxel (``None``: any); the
    declared size (against :data:`MAX_VOXELS` and, for uncompressed files, the bytes
    the file holds); and the geometry (finite, invertible, positive spacing). A DICOM
    series folder is checked when it is read.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        One line naming the file and the first problem found.

    Examples
    --------
    >>> import tempfile
    >>> import nibabel as nib
    >>> file = Path(tempfile.mkdtemp()) / "t2w.nii"
    >>> image = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> image.header["pixdim"][3] = 0.0
    >>> image.set_sform(None, 0); image.set_qform(None, 0)
    >>> nib.save(image, file)
    >>> check_volume_file(file)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...t2w.nii: voxel spacing (pixdim) (0.5, 0.5, 0.0) is not positive ...
    """
    path = path_argument(path)
    _check_readable(path)
    _check_header(path, components=components)
    return path


def _check_header(path: Path, *, components: int | None = 1):
    """The checks of :func:`check_volume_file`; for NRRD and MetaImage files, return the
    ITK ImageIO that read the header (None otherwise)."""
    if path.is_dir():
        return None
    if _is_nifti(path):
        _check_nifti_header(path)
        return None
    return _check_itk_header(path, components)


def _read_nifti_header(path: Path) -> nib.Nifti1Header:
    """The header as stored (nibabel's automatic fixes, such as zero spacing -> 1, left undone)."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(path) as fileobj:
            block = fileobj.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(path, f"cannot read NIfTI file: {getattr(err, 'strerror', None) or err}") from None
    if len(block) < 348:
        raise InputError(path, f"cannot read NIfTI file: {len(block)} bytes, shorter than a NIfTI header")
    order = "little" if int.from_bytes(block[:4], "little") in (348, 540) else "big"
    klass = nib.Nifti2Header if int.from_bytes(block[:4], order) == 540 else nib.Nifti1Header
    try:
        header = klass(block[:klass.sizeof_hdr], "<" if order == "little" else ">", check=False)
    except (HeaderDataError, ValueError) as err:
        raise InputError(path, f"cannot read NIfTI file: {err}") from None
    if header["magic"].item() not in (b"n+1", b"ni1", b"n+2", b"ni2"):
        raise InputError(path, "cannot read NIfTI file: no NIfTI magic in its header (not a NIfTI file?)")
    return header


def _check_nifti_header(path: Path) -> None:
    header = _read_nifti_header(path)
    if int(header["intent_code"]) in _CIFTI_INTENTS:
        raise InputError(path, f"is a CIFTI file (intent code {int(header['intent_code'])}), "
                               "not a volume; give a 3D NIfTI volume")
    dims = [int(n) for n in header["dim"]]
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise InputError(path, f"header declares {ndim} dimensions; a NIfTI file has 1 to 7")
    shape = tuple(dims[1:ndim + 1])
    if min(shape) < 1:
        raise InputError(path, f"header declares shape {shape}, with an axis of no voxels")
    try:
        dtype = header.get_data_dtype()
    except (HeaderDataError, KeyError, ValueError):
        raise InputError(path, f"unsupported voxel type (NIfTI datatype code {int(header['datatype'])})") from None
    if dtype.fields is not None or dtype.kind == "V":
        raise InputError(path, f"holds RGB or other multi-component voxels ({dtype}); "
                               "expected one real number per voxel")
    if dtype.kind not in "biuf":
        raise InputError(path, f"unsupported voxel type {dtype}; expected real numbers")
    _check_voxel_count(path, shape)
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    offset = int(header["vox_offset"])
    if not path.name.lower().endswith(".gz"):
        available = path.stat().st_size - offset
        if available < declared:
            raise InputError(path, f"cannot read NIfTI file: its header declares {_size_text(shape, dtype.itemsize)} "
                                   f"of voxels, the file holds {max(available, 0):,} after the header "
                                   "(truncated, or a wrong header)")
    _check_nifti_geometry(path, header, ndim)


def _check_nifti_geometry(path: Path, header, ndim: int) -> None:
    """The affine nibabel will use must be finite, with positive spacing, and invertible."""
    spatial = min(ndim, 3)
    pixdim = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if int(header["sform_code"]) > 0:
        rows = np.array([header["srow_x"], header["srow_y"], header["srow_z"]], dtype=np.float64)
        _check_affine(path, rows, "sform")
        return
    if not np.isfinite(pixdim[:spatial]).all() or (pixdim[:spatial] <= 0).any():
        raise InputError(path, f"voxel spacing (pixdim) {tuple(float(v) for v in pixdim)} is not "
                               "positive and finite: the file's geometry is unknown")
    if int(header["qform_code"]) > 0:
        quaternion = [float(header[name]) for name in
                      ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")]
        if not np.isfinite(quaternion).all():
            raise InputError(path, "qform holds NaN or infinite values: the file's geometry is unknown")
        _check_affine(path, header.get_qform()[:3], "qform")


def _check_affine(path: Path, rows: np.ndarray, name: str) -> None:
    """``rows``: the top 3 rows of a voxel-to-world affine."""
    if not np.isfinite(rows).all():
        raise InputError(path, f"{name} holds NaN or infinite values: the file's geometry is unknown")
    spacing = np.linalg.norm(rows[:, :3], axis=0)
    if (spacing == 0).any():
        raise InputError(path, f"{name} gives voxel spacing {tuple(round(float(v), 6) for v in spacing)}: "
                               "an axis of zero size")
    if abs(np.linalg.det(rows[:, :3] / spacing)) < 1e-6:
        raise InputError(path, f"{name} is singular (its axes are not independent): "
                               "the file's geometry is unknown")


def _check_voxel_count(path: Path, shape: tuple[int, ...]) -> None:
    voxels = int(np.prod(shape, dtype=object))
    if voxels > MAX_VOXELS:
        raise InputError(path, f"header declares shape {shape} = {voxels:,} voxels, more than "
                               f"the {MAX_VOXELS:,} prostseg reads (prostseg.data.io.MAX_VOXELS)")


def _size_text(shape: tuple[int, ...], itemsize: int) -> str:
    return f"shape {shape} ({int(np.prod(shape, dtype=object)) * itemsize:,} bytes)"


def _check_itk_header(path: Path, components: int | None):
    try:
        fields, data_offset = _text_header(path)
    except OSError as err:
        raise InputError(path, f"cannot read file: {err.strerror or err}") from None
    _check_header_numbers(path, fields)
    image_io = _itk_image_io(path)
    component = image_io.GetComponentTypeAsString(image_io.GetComponentType())
    if component not in ITK_COMPONENT_TYPES:
        raise InputError(path, f"unsupported voxel type {component!r}; expected real numbers")
    pixel = image_io.GetPixelTypeAsString(image_io.GetPixelType())
    count = int(image_io.GetNumberOfComponents())
    if pixel in ("complex", "fixed_array") or "complex" in pixel:
        raise InputError(path, f"holds {pixel} voxels; expected real numbers")
    if components is not None and count != components:
        wanted = "one value per voxel" if components == 1 else f"{components} channels per voxel"
        raise InputError(path, f"holds {count}-component ({pixel}) voxels; expected {wanted}")
    shape = tuple(int(image_io.GetDimensions(i)) for i in range(image_io.GetNumberOfDimensions()))
    _check_voxel_count(path, shape + ((count,) if count > 1 else ()))
    spacing = np.array([image_io.GetSpacing(i) for i in range(len(shape))], dtype=np.float64)
    if not np.isfinite(spacing).all() or (spacing <= 0).any():
        raise InputError(path, f"voxel spacing {tuple(float(v) for v in spacing)} is not positive and finite")
    direction = np.array([image_io.GetDirection(i) for i in range(len(shape))], dtype=np.float64).T
    _check_affine(path, direction * spacing, "direction matrix")
    _check_attached_data_size(path, data_offset, shape, count * image_io.GetComponentSize())
    return image_io


def _itk_image_io(path: Path):
    """An ITK ImageIO that has read the header of ``path`` (nothing of the voxels)."""
    itk = _itk()
    with native_output_captured():
        image_io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
        if image_io is None:
            raise InputError(path, "cannot read file: no ITK reader recognises its contents")
        image_io.SetFileName(str(path))
        try:
            image_io.ReadImageInformation()
        except RuntimeError as err:
            raise InputError(path, f"cannot read file: {_itk_reason(err)}") from None
    return image_io


def _text_header(path: Path) -> tuple[dict[str, str], int]:
    """The fields of a NRRD or MetaImage text header and where its voxels start.

    The offset is 0 when the voxels are not stored raw right after the header
    (a separate data file, or compressed data).
    """
    with open(path, "rb") as file:
        head = file.read(65536)
    fields, offset, nrrd = {}, 0, head.startswith(b"NRRD")
    lines = head.split(b"\n")
    position = 0
    for raw in lines[:-1]:
        position += len(raw) + 1
        line = raw.decode("latin-1").strip()
        if nrrd and not line:
            offset = position
            break
        key, sep, value = line.partition(":=" if ":=" in line else (":" if nrrd else "="))
        if not sep or line.startswith("#"):
            continue
        key = key.strip().lower()
        fields[key] = value.strip()
        if not nrrd and key == "elementdatafile":
            offset = position if value.strip().upper() == "LOCAL" else 0
            break
    compressed = fields.get("compresseddata", "false").lower() == "true" or \
        fields.get("encoding", "raw").lower() not in ("raw",)
    if compressed or "data file" in fields or "datafile" in fields:
        offset = 0
    return fields, offset


_GEOMETRY_FIELDS = ("spacings", "space directions", "space origin", "elementspacing", "elementsize",
                    "transformmatrix", "offset", "origin", "position", "rotation", "orientation")


def _check_header_numbers(path: Path, fields: dict[str, str]) -> None:
    """NaN or infinite numbers in a NRRD/MetaImage geometry field (ITK would read them as 1 mm)."""
    for key in _GEOMETRY_FIELDS:
        value = fields.get(key)
        if value is None:
            continue
        numbers = [token for token in re.split(r"[\s,()]+", value) if token and token.lower() != "none"]
        for token in numbers:
            try:
                number = float(token)
            except ValueError:
                continue
            if not math.isfinite(number):
                raise InputError(path, f"header field '{key}' holds {token}: the file's geometry is unknown")


def _check_attached_data_size(path: Path, offset: int, shape: tuple[int, ...], voxel_bytes: int) -> None:
    """A NRRD or MetaImage file with raw voxels from ``offset`` on (0: elsewhere, or
    compressed) must hold all of them."""
    if not offset:
        return
    declared = int(np.prod(shape, dtype=object)) * voxel_bytes
    available = path.stat().st_size - offset
    if available < declared:
        raise InputError(path, f"cannot read file: its header declares shape {shape} ({declared:,} bytes) "
                               f"of voxels, the file holds {max(available, 0):,} after the header "
                               "(truncated, or a wrong header)")


# --- reading -----------------------------------------------------------------------


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_EXTENSIONS)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        return
    if not path.name.lower().endswith(SUPPORTED_EXTENSIONS):
        raise InputError(
            path,
            f"unsupported file type; supported: {', '.join(SUPPORTED_EXTENSIONS)}, "
            "or a folder holding one DICOM series",
        )


def _read(path: Path, *, components: int | None = 1) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header | None]:
    """Voxels in the file's order ``(x, y, z, ...)``, its RAS affine and NIfTI header."""
    check_volume_file(path, components=components)
    if path.is_dir() or not _is_nifti(path):
        return _read_itk_volume(path)
    try:
        image = nib.load(path, mmap=False)  # the array must not stay tied to the file
        array = np.asanyarray(image.dataobj)
    except _NIBABEL_READ_ERRORS as err:
        raise InputError(path, f"cannot read NIfTI file: {err}") from err
    return array, image.affine, image.header


def _itk():
    import itk  # slow to import: only when an ITK format is read

    return itk


def _read_itk_volume(path: Path) -> tuple[np.ndarray, np.ndarray, None]:
    itk = _itk()
    source = _dicom_series_files(itk, path) if path.is_dir() else str(path)
    kind = "DICOM series" if path.is_dir() else "file"
    try:
        with native_output_captured():
            try:
                image = itk.imread(source)
            except itk.TemplateTypeError:  # pixel type not wrapped in ITK Python, e.g. int8
                image = itk.imread(source, itk.F)
    except (RuntimeError, KeyError) as err:
        raise InputError(path, f"cannot read {kind}: {_itk_reason(err)}") from err
    array, affine = _itk_array_affine(image)
    return array, affine, None


def dicom_series_files(folder: str | os.PathLike) -> list[Path]:
    """The files of the one DICOM series in ``folder``, in the order :func:`load_volume`
    stacks them: file ``k`` is slice ``k`` of the volume in its file's voxel order
    (:meth:`Volume.to_source`), whose first axis runs along the columns of the images
    and second along their rows.

    Raises
    ------
    InputError
        When the folder holds no DICOM series, or more than one.
    """
    return [Path(name) for name in _dicom_series_files(_itk(), Path(folder))]


def _dicom_series_files(itk, folder: Path) -> list[str]:
    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    with native_output_captured():
        names.SetDirectory(str(folder))
        series = names.GetSeriesUIDs()
    if not series:
        raise InputError(folder, "folder holds no DICOM series; give a file or a folder of DICOM slices")
    if len(series) > 1:
        raise InputError(folder, f"folder holds {len(series)} DICOM series; give a folder with one series")
    return list(names.GetFileNames(series[0]))  # sorted by slice position


def _itk_reason(err: RuntimeError) -> str:
    """ITK's error text without the C++ source locations."""
    lines = (line.strip() for line in str(err).splitlines())
    return " ".join(line for line in lines if line and ".cxx:" not in line)


def _itk_array_affine(image) -> tuple[np.ndarray, np.ndarray]:
    itk = _itk()
    dimension = image.GetImageDimension()
    array = itk.array_from_image(image)  # (z, y, x[, component]); a copy we own
    spatial_axes = list(range(dimension))[::-1]
    array = array.transpose(spatial_axes + list(range(dimension, array.ndim)))
    affine = _ras_affine(
        np.asarray(image.GetSpacing(), dtype=np.float64),
        np.asarray(image.GetOrigin(), dtype=np.float64),
        itk.array_from_matrix(image.GetDirection()),
    )
    return array, affine


def _itk_grid(image_io) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and RAS affine of the file whose header ``image_io`` read."""
    axes = range(image_io.GetNumberOfDimensions())
    shape = tuple(image_io.GetDimensions(i) for i in axes)
    direction = np.array([image_io.GetDirection(i) for i in axes], dtype=np.float64).T
    affine = _ras_affine(
        np.array([image_io.GetSpacing(i) for i in axes], dtype=np.float64),
        np.array([image_io.GetOrigin(i) for i in axes], dtype=np.float64),
        direction,
    )
    return shape, affine


def _ras_affine(spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Voxel-to-RAS affine from ITK (LPS) geometry, padded to 3D for 2D images."""
    n = min(len(spacing), 3)
    lps = np.eye(4)
    lps[:n, :n] = np.asarray(direction)[:n, :n] * spacing[:n]
    lps[:n, 3] = origin[:n]
    return _LPS_TO_RAS @ lps


# --- shapes, orientation and values -----------------------------------------------


def _checked_shape(array: np.ndarray, path: Path | None, channels: int | None) -> np.ndarray:
    shape = array.shape
    if channels is None:
        if array.ndim == 4 and shape[3] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            hint = "; pass channels=k to read an (X, Y, Z, k) volume" if array.ndim == 4 else ""
            raise InputError(path, f"expected a 3D volume, got shape {shape}{hint}")
    else:
        if array.ndim == 5 and shape[3] == 1:  # NIfTI vector layout (X, Y, Z, 1, C)
            array = array[:, :, :, 0]
        if array.ndim != 4 or array.shape[3] != channels:
            expected = f"(X, Y, Z, {channels})"
            problem = f"expected a {channels}-channel volume of shape {expected}, got shape {shape}"
            raise InputError(path, problem)
    if array.size == 0:
        raise InputError(path, f"volume is empty (shape {shape})")
    return array


def _canonical_shape(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    ornt = orientations.io_orientation(affine)
    canonical = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        canonical[int(target)] = int(shape[axis])
    return tuple(canonical)


def _canonical_volume(array: np.ndarray, affine: np.ndarray, path: Path | None, header) -> Volume:
    """Volume in closest-canonical order from an array in its file's voxel order."""
    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(n) for n in array.shape[:3])
    ornt = orientations.io_orientation(affine)
    data = orientations.apply_orientation(array, ornt)
    return Volume(data, affine @ orientations.inv_ornt_aff(ornt, shape), path, _Source(affine, shape, header))


def _checked_image(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.ascontiguousarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        raise InputError(path, f"image holds {data.size - np.count_nonzero(finite)} NaN or infinite values")
    return data


def _examples(values: np.ndarray) -> str:
    unique = np.unique(values)
    shown = ", ".join(f"{v:g}" for v in unique[:5])
    return shown + (f" and {unique.size - 5} more" if unique.size > 5 else "")


def _checked_labels(data: np.ndarray, path: Path, num_classes: int | None) -> np.ndarray:
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise InputError(path, "label map holds NaN or infinite values")
        fractional = data != np.round(data)
        if fractional.any():
            raise InputError(
                path, f"label map holds non-integer values ({_examples(data[fractional])}); "
                "labels must be whole numbers 0, 1, 2, ..."
            )
    if data.min() < 0:
        raise InputError(path, f"label map holds negative values ({_examples(data[data < 0])})")
    highest = int(data.max())
    if num_classes is not None and highest >= num_classes:
        raise InputError(
            path, f"label values {_examples(data[data >= num_classes])} outside 0..{num_classes - 1} "
            f"({num_classes} classes)"
        )
    return np.ascontiguousarray(data, dtype=np.min_scalar_type(highest))


def _storage_array(array: np.ndarray) -> np.ndarray:
    """Labels in the smallest integer type that holds them; images as float32."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size == 0:
            return array.astype(np.uint8)
        dtype = np.promote_types(np.min_scalar_type(int(array.min())), np.min_scalar_type(int(array.max())))
        return array.astype(dtype)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise TypeError(f"cannot store an array of dtype {array.dtype} as NIfTI")


def _format_affine(affine: np.ndarray) -> str:
    text = np.array2string(np.asarray(affine)[:3], precision=4, suppress_small=True, separator=", ")
    return text.replace("\n", "")
