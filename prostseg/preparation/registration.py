"""Multi-modal registration with elastix: DWI and ADC onto the T2W grid.

The Pix2Pix zone model reads a 3-channel stack (T2W, DWI, ADC) on the T2W grid. The
diffusion series are acquired on a coarser grid of their own (about 2 mm in-plane
against 0.5 mm for T2W) and minutes later, so the patient may have moved: resampling
them with their headers alone ("header-only resampling", ``resample_to(moving,
fixed)``) can leave the anatomy a few millimetres off. :func:`register` finds the
rigid (then affine) transform that aligns a diffusion volume (the *moving* image) with
the T2W volume (the *fixed* image) by maximising their mutual information,
:func:`register_case` does it for a whole case folder and writes the stack, and
:func:`register_dataset` for every case of a data folder that lacks up-to-date results,
several at a time (``prostseg register-dataset``; :mod:`prostseg.parallel`).

Conventions
-----------
* Volumes are :class:`prostseg.data.io.Volume` objects (arrays indexed ``(x, y, z)`` in
  RAS+ voxel order, affine voxel -> RAS mm) or paths that :func:`prostseg.data.io.load_volume`
  reads. ITK and elastix work in LPS with arrays indexed ``(z, y, x)``;
  :func:`prostseg.data.io.volume_to_itk` converts exactly (origin, spacing and direction), and
  :func:`prostseg.data.io.itk_to_volume` converts back.
* A *transform* is the list of elastix transform parameter maps that
  :func:`register` returns (``RegistrationResult.transform``), in the order elastix
  composes them. Like every elastix transform it maps points of the fixed (T2W) world
  to points of the moving world (both LPS mm), which is what resampling the moving
  image onto the fixed grid needs.
* elastix never prints into the notebook: its log goes to ``log_dir/elastix.log``
  (a temporary folder by default).

Examples
--------
>>> from prostseg.preparation.registration import register, resample_to
>>> result = register("case/t2w.nii.gz", "case/adc.nii.gz")  # doctest: +SKIP
>>> result.quality["mi_before"] < result.quality["mi_after"]  # doctest: +SKIP
True
>>> lesion_on_t2w = resample_to("case/lesion_adc.nii.gz", "case/t2w.nii.gz",
...                             result, label=True)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import warnings

import numpy as np

from prostseg.atomic import atomic_path
from prostseg.data.dataset import (
    ALIGNED_FOLDER,
    REGISTRATION_FILE,
    STACK,
    case_folders,
    find_case,
    transform_file,
    volume_file,
)
from prostseg.errors import DataWarning, InputError, ProstsegError
from prostseg.data.io import Volume, load_volume, save_like, volume_to_itk
from prostseg.parallel import CaseRows, one_line, run_cases_with_summary

__all__ = [
    "DEFAULT_TRANSFORMS",
    "MIN_MI_GAIN",
    "PARAMETER_NOTES",
    "SUMMARY_COLUMNS",
    "DatasetRegistration",
    "RegistrationResult",
    "RegistrationState",
    "central_region",
    "default_parameter_maps",
    "input_fingerprint",
    "load_transform",
    "mutual_information",
    "register",
    "register_case",
    "register_dataset",
    "registration_state",
    "resample_to",
    "same_input",
    "save_transform",
    "translation_map",
]

#: Transforms :func:`register` estimates by default: rigid, for patient motion between
#: the series. Adding "affine" models the scaling and shear of EPI distortion and raises
#: the mutual information on ProstateX-0000, but with few thick slices its through-plane
#: parameters are poorly constrained: on 4 mm phantoms it drifts 1.5-2 mm along z where
#: rigid stays within 0.8 mm.
DEFAULT_TRANSFORMS = ("rigid",)

# Voxel size (mm) assumed by default_parameter_maps when no image is at hand:
# prostate T2W (fixed) and DWI/ADC (moving) as in ProstateX.
_TYPICAL_FIXED_SPACING = (0.5, 0.5, 3.0)
_TYPICAL_MOVING_SPACING = (2.0, 2.0, 3.0)

# RAS <-> LPS: negate x and y.
_RAS_LPS = np.diag([-1.0, -1.0, 1.0])

# Smallest overlap of the two fields of view (fraction of the smaller one) that
# register() accepts before calling elastix.
_MIN_FOV_OVERLAP = 0.05

#: Smallest relative gain in mutual information (after vs. before registration) that
#: counts as an improvement. Below it :func:`register` warns and the quality figures
#: record ``"mi_improved": false``: the images may have been aligned already, or the
#: registration failed. ProstateX-0000, nearly aligned, gains 1.3 % (ADC); misaligned
#: phantoms gain 40-80 %.
MIN_MI_GAIN = 0.005

# Quality figures are measured in the central part of the fixed grid (this fraction
# of each in-plane extent, all slices), where the prostate is, and only where both
# resampled images have data.
_QUALITY_REGION_FRACTION = 0.5

_TRANSFORM_CLASSES = {
    "rigid": "EulerTransform",
    "affine": "AffineTransform",
    "bspline": "BSplineTransform",
}

# (resolutions, iterations, samples) of each transform: coarse-to-fine levels of
# 8, 4, 2 (x the coarser voxel size / 2) mm smoothing for rigid and bspline, the two
# finest for affine, which starts from the rigid result.
_SCHEDULES = {"rigid": (3, 250, 3000), "affine": (2, 250, 4000), "bspline": (3, 500, 5000)}

#: Why each entry of :func:`default_parameter_maps` has its value. The book prints
#: this table; edit the maps, not this dictionary, to change a registration.
PARAMETER_NOTES = {
    "Registration": "MultiResolutionRegistration: coarse-to-fine, so that large "
    "misalignments are found on smooth images before details are matched.",
    "Metric": "AdvancedMattesMutualInformation: T2W, DWI and ADC show the same anatomy "
    "with unrelated intensities (urine is bright on T2W and ADC, dark on high-b DWI); "
    "mutual information needs only a statistical relation, not equal grey values.",
    "NumberOfHistogramBins": "32: enough to separate the main tissues, few enough that "
    "a few thousand samples fill the joint histogram.",
    "FixedImagePyramid / MovingImagePyramid": "Smoothing pyramids: smooth without "
    "downsampling, so the 15-25 thin-sliced axial images keep all their slices.",
    "NumberOfResolutions": "3 for rigid and bspline, 2 for affine (it starts from the "
    "rigid result and only refines).",
    "FixedImagePyramidSchedule / MovingImagePyramidSchedule": "Per-axis factors chosen "
    "from the voxel sizes so that every level smooths both images to the same physical "
    "scale (8, 4, 2 mm for 2 mm DWI): in-plane axes of the 0.5 mm T2W get large "
    "factors, the 3 mm slice axis small ones, i.e. z is smoothed much less.",
    "ImageSampler": "RandomCoordinate: fresh random points every iteration (continuous "
    "positions, no grid aliasing between 0.5 mm and 2 mm voxels); cheap and unbiased.",
    "NumberOfSpatialSamples": "3000 (rigid), 4000 (affine), 5000 (bspline): more "
    "parameters need more samples; a few thousand is plenty for 6-12 parameters.",
    "NewSamplesEveryIteration": "true: stochastic gradient descent needs new samples "
    "at every step.",
    "Optimizer": "AdaptiveStochasticGradientDescent with AutomaticParameterEstimation: "
    "step sizes estimated from the images, no tuning per dataset.",
    "MaximumNumberOfIterations": "250 per level (500 for bspline): converged well before "
    "on prostate MRI; about 2-5 s per registration.",
    "AutomaticScalesEstimation": "true: balances rotation (radians) and translation (mm) "
    "parameters of the rigid and affine transforms.",
    "AutomaticTransformInitialization": "false: the scanner headers already place both "
    "series in one patient coordinate system; centring the two fields of view (which "
    "differ for DWI and T2W) would undo that good start.",
    "Interpolator": "LinearInterpolator during optimisation: fast and good enough.",
    "ResampleInterpolator": "FinalLinearInterpolator for images (no overshoot of "
    "B-splines at the sharp edges of ADC maps); resample_to switches to "
    "FinalNearestNeighborInterpolator for labels.",
    "FinalGridSpacingInPhysicalUnits": "bspline only: 20 mm control points, a few "
    "across the gland, so only smooth EPI distortion is modelled.",
    "DefaultPixelValue": "0: value outside the moving field of view.",
    "RandomSeed": "fixed, so that the same images give the same transform.",
    "WriteResultImage": "false: resample_to resamples with transformix when asked.",
}


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes
    ----------
    transform : list of dict
        elastix transform parameter maps (``{key: [values as str]}``) in the order they
        are composed; they map fixed (T2W) world points to moving world points (LPS mm)
        and carry the fixed grid. Pass them (or the whole result) to
        :func:`resample_to` or :func:`save_transform`.
    aligned : Volume
        The moving image resampled onto the fixed grid through ``transform`` (linear
        interpolation; 0 outside the moving field of view).
    quality : dict
        ``mi_before`` (mutual information with the fixed image after header-only
        resampling), ``mi_after`` (after registration), ``mi_region`` (where they are
        measured) and ``seconds`` (registration and resampling time).
    log_dir : Path or None
        Folder holding ``elastix.log``, or None when it was a temporary folder.
    """

    transform: list[dict[str, list[str]]]
    aligned: Volume
    quality: dict = field(default_factory=dict)
    log_dir: Path | None = None


# --------------------------------------------------------------------------- ITK


def _itk():
    """Import itk lazily: its native modules take seconds to load."""
    import itk

    return itk


def _grid_parameters(affine: np.ndarray, shape: Sequence[int]) -> dict[str, list[str]]:
    """elastix output-grid entries (LPS; Direction column by column) of a RAS grid."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _RAS_LPS @ affine[:3, :3] / spacing
    return {
        "Size": [str(int(n)) for n in shape[:3]],
        "Index": ["0", "0", "0"],
        "Spacing": [repr(float(s)) for s in spacing],
        "Origin": [repr(float(o)) for o in _RAS_LPS @ affine[:3, 3]],
        "Direction": [repr(float(d)) for d in direction.ravel(order="F")],
    }


# ------------------------------------------------------------------ parameter maps


def _schedule(spacing: Sequence[float], scales_mm: Sequence[float]) -> list[str]:
    """Pyramid factors per level and axis: smooth each axis to ``scale`` mm."""
    return [str(max(1, round(scale / s))) for scale in scales_mm for s in spacing]


def default_parameter_maps(
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    *,
    fixed_spacing: Sequence[float] = _TYPICAL_FIXED_SPACING,
    moving_spacing: Sequence[float] = _TYPICAL_MOVING_SPACING,
) -> list[dict[str, list[str]]]:
    """Return editable elastix parameter maps for multi-modal prostate MRI.

    Parameters
    ----------
    transforms : sequence of {"rigid", "affine", "bspline"}
        Transforms to estimate, in order; each starts from the previous result.
    fixed_spacing, moving_spacing : sequence of 3 floats
        Voxel sizes (mm, along the array axes x, y, z) of the fixed and moving images;
        they set the smoothing pyramid schedules. The defaults are those of ProstateX
        T2W (0.5 x 0.5 x 3 mm) and DWI/ADC (2 x 2 x 3 mm); :func:`register` passes
        the real ones.

    Returns
    -------
    list of dict
        One ``{key: [str, ...]}`` map per transform. Change values in place (numbers
        and booleans are converted when the maps are used) and pass them to
        :func:`register` as ``parameter_maps``. :data:`PARAMETER_NOTES` says why each
        value was chosen.

    Examples
    --------
    >>> maps = default_parameter_maps(("rigid", "affine"))
    >>> [m["Transform"][0] for m in maps]
    ['EulerTransform', 'AffineTransform']
    >>> maps[0]["Metric"]
    ['AdvancedMattesMutualInformation']
    >>> maps[0]["FixedImagePyramidSchedule"]  # x y z factors, coarse to fine
    ['16', '16', '3', '8', '8', '1', '4', '4', '1']
    >>> maps[0]["MaximumNumberOfIterations"] = 500  # edits are welcome
    """
    unknown = [name for name in transforms if name not in _TRANSFORM_CLASSES]
    if unknown or not transforms:
        raise ValueError(f"transforms must be some of {sorted(_TRANSFORM_CLASSES)}, got {list(transforms)}")
    # The finest level smooths to the coarser of the two in-plane resolutions.
    finest_mm = max(float(np.median(fixed_spacing)), float(np.median(moving_spacing)))
    maps = []
    for name in transforms:
        levels, iterations, samples = _SCHEDULES[name]
        scales_mm = [finest_mm * 2 ** (levels - 1 - level) for level in range(levels)]
        maps.append(
            {
                "Registration": ["MultiResolutionRegistration"],
                "Transform": [_TRANSFORM_CLASSES[name]],
                "Metric": ["AdvancedMattesMutualInformation"],
                "NumberOfHistogramBins": ["32"],
                "FixedImagePyramid": ["FixedSmoothingImagePyramid"],
                "MovingImagePyramid": ["MovingSmoothingImagePyramid"],
                "NumberOfResolutions": [str(levels)],
                "FixedImagePyramidSchedule": _schedule(fixed_spacing, scales_mm),
                "MovingImagePyramidSchedule": _schedule(moving_spacing, scales_mm),
                "ImageSampler": ["RandomCoordinate"],
                "NumberOfSpatialSamples": [str(samples)],
                "NewSamplesEveryIteration": ["true"],
                "Optimizer": ["AdaptiveStochasticGradientDescent"],
                "AutomaticParameterEstimation": ["true"],
                "MaximumNumberOfIterations": [str(iterations)],
                "AutomaticScalesEstimation": ["true"],
                "AutomaticTransformInitialization": ["false"],
                "HowToCombineTransforms": ["Compose"],
                "Interpolator": ["LinearInterpolator"],
                "ResampleInterpolator": ["FinalLinearInterpolator"],
                "Resampler": ["DefaultResampler"],
                "FixedInternalImagePixelType": ["float"],
                "MovingInternalImagePixelType": ["float"],
                "ResultImagePixelType": ["float"],
                "DefaultPixelValue": ["0"],
                "RandomSeed": ["20240117"],
                "WriteResultImage": ["false"],
                **({"FinalGridSpacingInPhysicalUnits": ["20"]} if name == "bspline" else {}),
            }
        )
    return maps


def _as_strings(value) -> list[str]:
    """elastix parameter values: a list of strings (booleans as true/false)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


def _map_list(maps) -> list[dict[str, list[str]]]:
    """Plain list of maps from dicts or an itk ParameterObject."""
    if hasattr(maps, "GetNumberOfParameterMaps"):
        maps = [dict(maps.GetParameterMap(i)) for i in range(maps.GetNumberOfParameterMaps())]
    elif isinstance(maps, Mapping):
        maps = [maps]
    return [{key: _as_strings(value) for key, value in m.items()} for m in maps]


def _parameter_object(maps: Sequence[Mapping[str, list[str]]]):
    itk = _itk()
    parameter_object = itk.ParameterObject.New()
    for m in maps:
        parameter_object.AddParameterMap(dict(m))
    return parameter_object


# ----------------------------------------------------------------------- checks


def _volume(volume: Volume | str | os.PathLike, *, label: bool = False) -> Volume:
    return volume if isinstance(volume, Volume) else load_volume(volume, label=label)


def _name(volume: Volume) -> str:
    return str(volume.path) if getattr(volume, "path", None) is not None else "<in-memory volume>"


#: Fewest voxels along an axis that elastix's Gaussian smoothing (its image pyramids) takes.
MIN_AXIS_VOXELS = 4


def _check_3d(volume: Volume) -> None:
    shape = np.shape(volume.data)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(volume.path, f"registration needs a 3D volume, got shape {shape}")
    if min(shape) < MIN_AXIS_VOXELS:
        raise InputError(volume.path, f"registration needs at least {MIN_AXIS_VOXELS} voxels along each "
                                      f"axis (elastix smooths the image), got shape {shape}")


def _check_not_constant(volume: Volume) -> None:
    data = np.asarray(volume.data)
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise InputError(volume.path, f"every voxel is {low:g}: a constant image has nothing to "
                         "register (an empty or blank series?)")


def _world_box(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box (RAS mm) of the voxels' extent."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in volume.data.shape[:3]], indexing="ij"))
    corners = corners.reshape(3, -1).T
    affine = np.asarray(volume.affine, dtype=float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def _check_overlap(fixed: Volume, moving: Volume) -> None:
    (fixed_low, fixed_high), (moving_low, moving_high) = _world_box(fixed), _world_box(moving)
    common = np.clip(np.minimum(fixed_high, moving_high) - np.maximum(fixed_low, moving_low), 0, None)
    smaller = min(np.prod(fixed_high - fixed_low), np.prod(moving_high - moving_low))
    if np.prod(common) < _MIN_FOV_OVERLAP * smaller:
        raise InputError(
            moving.path,
            f"its field of view does not overlap that of {_name(fixed)} "
            f"({np.prod(common) / smaller:.1%} of the smaller one is shared); "
            "check that both files belong to the same study and that their headers are right",
        )


# ------------------------------------------------------------------ registration


def register(
    fixed: Volume | str | os.PathLike,
    moving: Volume | str | os.PathLike,
    *,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    parameter_maps=None,
    log_dir: str | os.PathLike | None = None,
    number_of_threads: int | None = None,
) -> RegistrationResult:
    """Register a moving image (DWI or ADC) to a fixed image (T2W) with elastix.

    Parameters
    ----------
    fixed : Volume or path
        The image whose grid the result lives on, normally T2W.
    moving : Volume or path
        The image to align, normally the high-b DWI or the ADC map.
    transforms : sequence of {"rigid", "affine", "bspline"}
        Transforms to estimate in order (ignored when ``parameter_maps`` is given).
    parameter_maps : list of dict or itk.ParameterObject, optional
        elastix parameter maps, e.g. :func:`default_parameter_maps` edited.
        By default those maps for ``transforms`` and the two images' voxel sizes.
    log_dir : path, optional
        Folder for ``elastix.log`` (created if needed). By default a temporary folder
        that is removed afterwards; nothing is printed either way.
    number_of_threads : int, optional
        Threads elastix may use (default: all cores).

    Returns
    -------
    RegistrationResult
        The transform, the moving image resampled onto the fixed grid and the quality
        figures (mutual information after header-only resampling and after
        registration).

    Raises
    ------
    InputError
        If an image is not 3D or is constant (empty), if the fields of view do not
        overlap, or if elastix finds too few samples inside the moving image (the
        images hardly overlap).

    Warns
    -----
    prostseg.errors.DataWarning
        When the mutual information gains less than :data:`MIN_MI_GAIN` (relative);
        ``quality["mi_improved"]`` is then False.

    Examples
    --------
    >>> result = register("case/t2w.nii.gz", "case/dwi.nii.gz")  # doctest: +SKIP
    >>> result.aligned.shape == load_volume("case/t2w.nii.gz").shape  # doctest: +SKIP
    True
    """
    started = time.perf_counter()
    fixed, moving = _volume(fixed), _volume(moving)
    for volume in (fixed, moving):
        _check_3d(volume)
        _check_not_constant(volume)
    _check_overlap(fixed, moving)
    if parameter_maps is None:
        parameter_maps = default_parameter_maps(
            transforms, fixed_spacing=_spacing(fixed), moving_spacing=_spacing(moving)
        )
    maps = _map_list(parameter_maps)

    itk = _itk()
    with tempfile.TemporaryDirectory(prefix="prostseg-elastix-") as scratch:
        out = Path(log_dir) if log_dir is not None else Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        method = itk.ElastixRegistrationMethod.New(volume_to_itk(fixed), volume_to_itk(moving))
        method.SetParameterObject(_parameter_object(maps))
        method.SetOutputDirectory(str(out))
        method.SetLogToConsole(False)
        method.SetLogToFile(True)
        if number_of_threads is not None:
            method.SetNumberOfThreads(int(number_of_threads))
        try:
            method.UpdateLargestPossibleRegion()
        except RuntimeError as err:
            raise _registration_error(err, fixed, moving, out) from None
        transform = _map_list(method.GetTransformParameterObject())

    aligned = resample_to(moving, fixed, transform)
    quality = {
        **_mutual_information_before_after(fixed, moving, transform, aligned),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return RegistrationResult(transform, aligned, quality, None if log_dir is None else Path(log_dir))


def _spacing(volume: Volume) -> tuple[float, ...]:
    return tuple(float(s) for s in np.linalg.norm(np.asarray(volume.affine, float)[:3, :3], axis=0))


def _registration_error(err: RuntimeError, fixed: Volume, moving: Volume, log_dir: Path) -> Exception:
    message = str(err)
    log = log_dir / "elastix.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.is_file() else []
    if any("outside moving image buffer" in text for text in [message, *tail]):
        return InputError(
            moving.path,
            f"elastix found too few sample points inside this image when aligning it with "
            f"{_name(fixed)}: the two images hardly overlap. Check the headers (or crop the "
            "fixed image to the region both cover).",
        )
    return ProstsegError(f"elastix failed to register {_name(moving)} to {_name(fixed)}: "
                         f"{_elastix_reason([message, *tail])}")


def _elastix_reason(texts: list[str]) -> str:
    """The one line of elastix's or ITK's error text that says what went wrong."""
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    described = [line.split("Description:", 1)[1].strip() for line in lines if "Description:" in line]
    if described:
        return described[0].removeprefix("ITK ERROR: ")
    plain = [line for line in lines if not line.startswith(("File:", "Line:")) and ".cxx" not in line
             and ".hxx" not in line]
    return plain[-1] if plain else "no message"


# -------------------------------------------------------------------- resampling


def translation_map(shift_lps: Sequence[float] = (0.0, 0.0, 0.0)) -> dict[str, list[str]]:
    """An elastix transform map of a pure translation.

    Like every elastix transform it maps fixed points to moving points, in LPS mm. The
    default, no shift, resamples through the image headers alone.

    Examples
    --------
    >>> translation_map((1.5, 0, -2))["TransformParameters"]
    ['1.5', '0.0', '-2.0']
    """
    return {
        "Transform": ["TranslationTransform"],
        "NumberOfParameters": ["3"],
        "TransformParameters": [str(float(v)) for v in shift_lps],
        "HowToCombineTransforms": ["Compose"],
        "FixedImageDimension": ["3"],
        "MovingImageDimension": ["3"],
        "FixedInternalImagePixelType": ["float"],
        "MovingInternalImagePixelType": ["float"],
        "UseDirectionCosines": ["true"],
        "Resampler": ["DefaultResampler"],
        "DefaultPixelValue": ["0"],
        "ResultImagePixelType": ["float"],
    }


def _transform_maps(transform) -> list[dict[str, list[str]]]:
    if isinstance(transform, RegistrationResult):
        return [dict(m) for m in transform.transform]
    if isinstance(transform, (str, os.PathLike)):
        return load_transform(transform)
    return _map_list(transform)


def resample_to(
    moving: Volume | str | os.PathLike,
    fixed: Volume | str | os.PathLike,
    transform=None,
    *,
    label: bool = False,
) -> Volume:
    """Resample a volume onto the grid of ``fixed`` (the T2W grid).

    Parameters
    ----------
    moving : Volume or path
        Image or label map to resample (any grid).
    fixed : Volume or path
        Volume whose grid (shape, affine) the result takes.
    transform : RegistrationResult, list of dict, itk.ParameterObject or path, optional
        Transform from :func:`register` (or a file written by :func:`save_transform`).
        None resamples with the headers only: the baseline registration should beat.
    label : bool
        Nearest-neighbour interpolation for label maps: the result keeps the label
        values and the integer dtype of ``moving``. Otherwise linear interpolation and
        float32.

    Returns
    -------
    Volume
        On the grid of ``fixed``; 0 outside the field of view of ``moving``.

    Examples
    --------
    >>> adc_header_only = resample_to("case/adc.nii.gz", "case/t2w.nii.gz")  # doctest: +SKIP
    >>> zones = resample_to("dwi_zones.nii.gz", "case/t2w.nii.gz",
    ...                     "case/aligned/dwi_transform.txt", label=True)  # doctest: +SKIP
    """
    moving, fixed = _volume(moving, label=label), _volume(fixed)
    maps = [translation_map()] if transform is None else _transform_maps(transform)
    grid = _grid_parameters(np.asarray(fixed.affine, dtype=float), fixed.data.shape)
    interpolator = "FinalNearestNeighborInterpolator" if label else "FinalLinearInterpolator"
    for m in maps:
        m.update(grid)
        m.update(ResampleInterpolator=[interpolator], ResultImagePixelType=["float"])
        m.update(FinalBSplineInterpolationOrder=["0" if label else "1"])

    itk = _itk()
    transformix = itk.TransformixFilter.New(volume_to_itk(moving))
    transformix.SetTransformParameterObject(_parameter_object(maps))
    transformix.SetLogToConsole(False)
    transformix.UpdateLargestPossibleRegion()
    data = itk.array_from_image(transformix.GetOutput()).transpose(2, 1, 0)  # on the fixed grid
    data = np.rint(data).astype(moving.data.dtype) if label else data.astype(np.float32)
    return _volume_like(data, fixed)


def _volume_like(data: np.ndarray, reference: Volume) -> Volume:
    """A Volume on the grid of ``reference`` holding ``data``."""
    return replace(reference, data=np.ascontiguousarray(data), path=None)


# ----------------------------------------------------------------------- quality


def mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, bins: int = 32) -> float:
    """Mutual information (nats) of two images on the same grid.

    Computed from their joint histogram: ``sum p(a, b) log(p(a, b) / (p(a) p(b)))``.
    It is high when one image's intensity predicts the other's, whatever the relation
    between the two (so it compares T2W with ADC), and it drops when they are misaligned.

    Parameters
    ----------
    a, b : ndarray
        Images of the same shape.
    mask : ndarray of bool, optional
        Voxels to use (default: all).
    bins : int
        Histogram bins per image.

    Returns
    -------
    float

    Examples
    --------
    >>> a = np.repeat([0.0, 1.0], 50)
    >>> round(mutual_information(a, 1.0 - a, bins=2), 4)  # one predicts the other: log 2
    0.6931
    >>> round(mutual_information(a, np.tile([0.0, 1.0], 50), bins=2), 4)  # independent
    0.0
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        a, b = a[mask], b[mask]
    if a.size == 0:
        raise ValueError("no voxels to compare: the mask is empty")
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    p = joint / joint.sum()
    independent = np.outer(p.sum(axis=1), p.sum(axis=0))
    nonzero = p > 0
    return float(max(0.0, np.sum(p[nonzero] * np.log(p[nonzero] / independent[nonzero]))))


def central_region(shape: Sequence[int], fraction: float = _QUALITY_REGION_FRACTION) -> np.ndarray:
    """Boolean mask of the central ``fraction`` of the two in-plane axes, all slices.

    The prostate sits near the centre of a prostate MRI field of view; quality
    figures measured there are not dominated by the body outline.

    Examples
    --------
    >>> central_region((8, 4, 2)).sum(axis=(0, 1)).tolist()
    [8, 8]
    """
    mask = np.zeros(tuple(shape[:3]), dtype=bool)
    low = [int(round(n * (1 - fraction) / 2)) for n in shape[:2]]
    high = [max(lo + 1, int(round(n * (1 + fraction) / 2))) for lo, n in zip(low, shape[:2])]
    mask[low[0] : high[0], low[1] : high[1], :] = True
    return mask


def _mutual_information_before_after(fixed: Volume, moving: Volume, transform, aligned: Volume) -> dict:
    """MI with the fixed image in its central region, where both resamplings have data."""
    support = _volume_like(np.ones(moving.data.shape, dtype=np.uint8), moving)
    header_only = resample_to(moving, fixed)
    region = (
        central_region(fixed.data.shape)
        & (resample_to(support, fixed, label=True).data > 0)
        & (resample_to(support, fixed, transform, label=True).data > 0)
    )
    if not region.any():
        region = np.ones(fixed.data.shape, dtype=bool)
    before = round(mutual_information(fixed.data, header_only.data, region), 4)
    after = round(mutual_information(fixed.data, aligned.data, region), 4)
    improved = after >= before * (1 + MIN_MI_GAIN) and after > 0
    quality = {
        "mi_before": before,
        "mi_after": after,
        "mi_region": f"central {_QUALITY_REGION_FRACTION:.0%} in-plane, all slices, "
        "inside the moving field of view before and after",
        "mi_min_gain": MIN_MI_GAIN,
        "mi_improved": improved,
    }
    if not improved:
        quality["warning"] = (
            f"registration of {_name(moving)} did not raise the mutual information with "
            f"{_name(fixed)} by {MIN_MI_GAIN:.1%} ({before:.4f} -> {after:.4f}): the images may "
            "have been aligned already, or the registration failed; check an overlay"
        )
        warnings.warn(quality["warning"], DataWarning, stacklevel=3)
    return quality


# ------------------------------------------------------------------ transform files


def save_transform(transform, path: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write a transform as elastix TransformParameters files.

    elastix stores one map per file and chains them through
    ``InitialTransformParametersFileName``. ``path`` receives the last map; the
    earlier ones go to ``path`` with ``.0``, ``.1``, ... before the suffix (e.g.
    ``adc_transform.0.txt`` for the rigid part of ``adc_transform.txt``), referenced by
    bare file name, so the folder can be moved. The files also work with the
    ``transformix`` command line when run from their folder.

    Parameters
    ----------
    transform : RegistrationResult, list of dict or itk.ParameterObject
    path : path
        File name of the final map, conventionally ``*.txt``.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of Path
        The files written, first map first.

    Examples
    --------
    >>> save_transform(result, "case/aligned/adc_transform.txt")  # doctest: +SKIP
    [PosixPath('case/aligned/adc_transform.0.txt'), PosixPath('case/aligned/adc_transform.txt')]
    """
    maps = _transform_maps(transform)
    path = Path(path)
    paths = [path.with_name(f"{path.stem}.{i}{path.suffix}") for i in range(len(maps) - 1)] + [path]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise InputError(existing[0], "already exists; pass overwrite=True to replace it")
    itk = _itk()
    previous = "NoInitialTransform"
    for m, file in zip(maps, paths):
        with atomic_path(file) as tmp:
            chained = {**m, "InitialTransformParametersFileName": [previous]}
            itk.ParameterObject.WriteParameterFile(chained, str(tmp))
        previous = file.name
    return paths


def load_transform(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read a transform written by :func:`save_transform` (or by elastix).

    Follows ``InitialTransformParametersFileName`` (relative names are looked up
    next to the file, then in the working folder) and returns the maps in the order
    they are composed, ready for :func:`resample_to`.

    Examples
    --------
    >>> maps = load_transform("case/aligned/adc_transform.txt")  # doctest: +SKIP
    >>> [m["Transform"][0] for m in maps]  # doctest: +SKIP
    ['EulerTransform']
    """
    itk = _itk()
    maps: list[dict[str, list[str]]] = []
    path = Path(path)
    while True:
        if not path.is_file():
            raise InputError(path, "transform parameter file not found")
        try:
            parameter_object = itk.ParameterObject.New()
            parameter_object.ReadParameterFile(str(path))
        except RuntimeError as err:
            raise InputError(path, f"not an elastix transform parameter file ({err})") from None
        m = _map_list(parameter_object)[0]
        if "Transform" not in m or "TransformParameters" not in m:
            raise InputError(path, "not an elastix transform parameter file (no Transform)")
        initial = m.pop("InitialTransformParametersFileName", ["NoInitialTransform"])[0]
        maps.insert(0, m)
        if initial == "NoInitialTransform":
            return maps
        if len(maps) > 32:
            raise InputError(path, "the chain of initial transforms does not end")
        candidate = Path(initial)
        path = candidate if candidate.is_absolute() or not (path.parent / candidate).is_file() else path.parent / candidate


# ------------------------------------------------------- inputs and up-to-dateness

#: Volumes of a case that a registration reads; their checksums go into registration.json.
_REGISTERED_INPUTS = ("t2w", "dwi", "adc")
_REPORT = REGISTRATION_FILE


def _output_paths(out_dir: Path) -> list[Path]:
    """What :func:`register_case` writes, ``registration.json`` last."""
    paths = [out_dir / volume_file(STACK)]
    paths += [path for m in ("dwi", "adc")
              for path in (out_dir / volume_file(m), transform_file(out_dir, m))]
    return [*paths, out_dir / _REPORT]


def _input_files(path: Path) -> list[Path]:
    """The files whose bytes make up one input volume.

    The file itself with its siblings of the same stem (the ``.raw`` data file of a
    ``.mhd`` header), or every file of a DICOM series folder.
    """
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    stem = path.name.lower().split(".")[0]
    return sorted(p for p in path.parent.iterdir()
                  if p.is_file() and p.name.lower().split(".")[0] == stem)


def _stat(files: Sequence[Path]) -> dict:
    stats = [f.stat() for f in files]
    return {"bytes": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}


def _sha256(files: Sequence[Path], folder: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def input_fingerprint(path: Path, folder: Path) -> dict:
    """Name, SHA-256, size and newest modification time of one input volume.

    What :func:`register_case` (and :mod:`prostseg.preparation.slice_cache`) record of
    each input, so that :func:`same_input` can tell later whether it changed.

    Parameters
    ----------
    path : pathlib.Path
        The volume: a file (with its siblings of the same stem, such as the ``.raw`` of
        an ``.mhd``) or a DICOM series folder.
    folder : pathlib.Path
        The case folder; the checksum covers the files' paths relative to it.

    Returns
    -------
    dict
        ``{"file", "sha256", "bytes", "mtime_ns"}``, ready for JSON.
    """
    files = _input_files(path)
    return {"file": path.name, "sha256": _sha256(files, folder), **_stat(files)}


def same_input(recorded, path: Path, folder: Path) -> bool:
    """Whether ``path`` holds what ``recorded`` describes.

    The same size and modification time are trusted (no reading); otherwise the
    SHA-256 decides (a copied or touched file).

    Parameters
    ----------
    recorded : dict or None
        What :func:`input_fingerprint` gave when the input was used; anything else
        is never the same.
    path, folder : pathlib.Path
        As for :func:`input_fingerprint`.

    Returns
    -------
    bool
    """
    if not isinstance(recorded, dict) or recorded.get("file") != path.name:
        return False
    files = _input_files(path)
    stat = _stat(files)
    if all(recorded.get(key) == value for key, value in stat.items()):
        return True
    return recorded.get("sha256") == _sha256(files, folder)


def _parameters(transforms: Sequence[str]) -> dict:
    """The settings a registration depends on besides its inputs.

    The checksum covers every entry of :func:`default_parameter_maps` (iterations,
    samples, metric, ...), so that a change of the defaults makes results out of date;
    the entries that depend on the voxel sizes follow from the inputs.
    """
    maps = json.dumps(default_parameter_maps(transforms), sort_keys=True).encode()
    return {"transforms": list(transforms), "elastix_maps_sha256": hashlib.sha256(maps).hexdigest()}


def _read_report(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _written_by_prostseg(report) -> bool:
    return isinstance(report, dict) and "case" in report and "transforms" in report


@dataclass(frozen=True)
class RegistrationState:
    """Whether a case's registration results are up to date (see :func:`registration_state`).

    Attributes
    ----------
    up_to_date : bool
        The results exist, are complete and were made from the same input files with
        the same parameters.
    reason : str
        Why not (empty when up to date).
    replaceable : bool
        Registering again may replace what is there: nothing is there, or
        ``registration.json`` shows that prostseg wrote it. False for results
        without a ``registration.json`` (made by someone else): they are kept unless
        ``overwrite`` is asked for.
    """

    up_to_date: bool
    reason: str
    replaceable: bool


def registration_state(
    case_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
) -> RegistrationState:
    """Check whether a case's ``aligned/`` folder matches its inputs and parameters.

    Reads ``registration.json``: its status (an interrupted registration leaves
    ``incomplete``), the transforms and elastix settings, and the checksums of T2W,
    DWI and ADC, compared with the files now in the case folder (files whose size and
    modification time are unchanged are not read again). Loads no image and no ITK.

    Parameters
    ----------
    case_dir : path
        Case folder with ``t2w``, ``dwi`` (or ``hbv``) and ``adc``.
    out_dir : path, optional
        Results folder (default ``case_dir/aligned``).
    transforms : sequence of str
        The transforms the results should have been made with.

    Returns
    -------
    RegistrationState

    Raises
    ------
    InputError
        If the case folder lacks a modality (see :func:`prostseg.data.dataset.find_case`).

    Examples
    --------
    >>> state = registration_state("data/phantom/phantom-000")  # doctest: +SKIP
    >>> state.up_to_date, state.reason  # doctest: +SKIP
    (False, 'inputs changed since the registration: adc.nii.gz')
    """
    case = find_case(case_dir, require=_REGISTERED_INPUTS, check_grids=False)
    out_dir = case.folder / ALIGNED_FOLDER if out_dir is None else Path(out_dir)
    outputs = _output_paths(out_dir)
    existing = [path for path in outputs if path.exists()]
    report = _read_report(out_dir / _REPORT)
    if not _written_by_prostseg(report):
        if existing:
            return RegistrationState(False, f"{existing[0]} exists but was not written by prostseg "
                                     f"(no readable {_REPORT})", False)
        return RegistrationState(False, "not registered", True)
    if report.get("status") == "incomplete":
        return RegistrationState(False, "an earlier registration was interrupted", True)
    if "inputs" not in report:
        return RegistrationState(False, "registered by an older prostseg (no input checksums)",
                                 True)
    if report.get("parameters") != _parameters(transforms):
        return RegistrationState(False, f"registered with other parameters (transforms "
                                 f"{report.get('transforms')}, now {list(transforms)})", True)
    changed = [case.path(name).name for name in _REGISTERED_INPUTS
               if not same_input(report["inputs"].get(name), case.path(name), case.folder)]
    if changed:
        return RegistrationState(False, "inputs changed since the registration: "
                                 + ", ".join(changed), True)
    missing = [path.name for path in outputs if path not in existing]
    if missing:
        return RegistrationState(False, f"results missing: {', '.join(missing)}", True)
    return RegistrationState(True, "", True)


def _write_report(report: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------- one case


def register_case(
    case_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    number_of_threads: int | None = None,
) -> Path:
    """Register DWI and ADC of one case onto its T2W grid and write the stack.

    The transform is estimated once, between T2W (fixed) and ADC (moving), and applied
    to both diffusion volumes: ADC is computed from the DWI series, so both share one
    acquisition and one misalignment, and ADC shows the anatomy (gland, bladder,
    rectum) far better than the high-b image, which is dark except for urine and
    lesions (registering the high-b image of ProstateX-0000 directly goes ~10 mm
    astray and lowers the mutual information).

    Writes, into ``out_dir``: ``dwi.nii.gz`` and ``adc.nii.gz`` (resampled onto the
    T2W grid), ``dwi_transform.txt`` and ``adc_transform.txt`` (the same transform;
    see :func:`save_transform`), ``stack.nii.gz`` (float32, shape
    ``T2W.shape + (3,)``, channels T2W, DWI, ADC, in the T2W file's voxel order and
    affine so that it overlays the T2W in viewers) and ``registration.json`` (mutual
    information with T2W after header-only resampling and after registration, per
    modality, the seconds taken, and what :func:`registration_state` compares: the
    checksums of the three inputs and the parameters). ``registration.json`` is written
    first with ``"status": "incomplete"`` and replaced, atomically, by the full report
    once everything else is written, so that an interrupted registration is known as
    such.

    Parameters
    ----------
    case_dir : path
        Case folder (see :mod:`prostseg.data.dataset`) with ``t2w``, ``dwi`` (or ``hbv``)
        and ``adc`` volumes.
    out_dir : path, optional
        Output folder (default ``case_dir/aligned``).
    overwrite : bool
        Replace earlier results; without it existing results raise ``InputError``.
    transforms : sequence of str
        Passed to :func:`register`.
    number_of_threads : int, optional
        Passed to :func:`register`. Results are bit-identical for the same inputs and
        the same number of threads; another number of threads changes the last digits.

    Returns
    -------
    Path
        The output folder.

    Raises
    ------
    InputError
        If a modality is missing (naming the folder and the file), results exist and
        ``overwrite`` is false, or :func:`register` rejects the images.

    Examples
    --------
    >>> aligned = register_case("data/phantom/phantom-000")  # doctest: +SKIP
    >>> sorted(json.loads((aligned / "registration.json").read_text(encoding="utf-8")))  # doctest: +SKIP
    ['adc', 'case', 'dwi', 'fixed', 'inputs', 'parameters', 'seconds', 'status',
     'transform_from', 'transforms']
    """
    started = time.perf_counter()
    case = find_case(case_dir, require=_REGISTERED_INPUTS, check_grids=False)
    out_dir = case.folder / ALIGNED_FOLDER if out_dir is None else Path(out_dir)
    existing = [path for path in _output_paths(out_dir) if path.exists()]
    if existing and not overwrite:
        raise InputError(existing[0], "already exists; pass overwrite=True to replace the registration results")

    t2w, dwi = load_volume(case.path("t2w")), load_volume(case.path("dwi"))
    _check_not_constant(dwi)  # resampled with the ADC's transform, never registered itself
    report = {
        "case": case.case_id,
        "status": "incomplete",
        "transforms": list(transforms),
        "parameters": _parameters(transforms),
        "inputs": {name: input_fingerprint(case.path(name), case.folder) for name in _REGISTERED_INPUTS},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_report(report, out_dir / _REPORT)

    result = register(t2w, case.path("adc"), transforms=transforms, number_of_threads=number_of_threads)
    aligned = {"dwi": resample_to(dwi, t2w, result), "adc": result.aligned}
    report.update({
        "fixed": case.path("t2w").name,
        "transform_from": case.path("adc").name,
        "dwi": {"moving": case.path("dwi").name, **_mutual_information_before_after(t2w, dwi, result, aligned["dwi"])},
        "adc": {"moving": case.path("adc").name, **result.quality},
    })

    for modality, volume in aligned.items():
        save_like(volume.data, t2w, out_dir / volume_file(modality), overwrite=True)
        save_transform(result, transform_file(out_dir, modality), overwrite=True)
    stack = np.stack([t2w.data, aligned["dwi"].data, aligned["adc"].data], axis=-1).astype(np.float32)
    save_like(stack, t2w, out_dir / volume_file(STACK), overwrite=True)
    report.update(status="complete", seconds=round(time.perf_counter() - started, 2))
    _write_report(report, out_dir / _REPORT)
    return out_dir


# ------------------------------------------------------------------- a whole dataset

#: Columns of the summary CSV of :func:`register_dataset`.
SUMMARY_COLUMNS = ("case", "status", "adc_mi_before", "adc_mi_after", "dwi_mi_before",
                   "dwi_mi_after", "seconds", "warnings", "error")


def _use_threads(threads: int) -> None:
    """Let ITK filters of this process (transformix resampling) use ``threads`` threads;
    elastix gets the same number through ``number_of_threads``."""
    _itk().MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(threads))


def _quality_columns(report: dict) -> dict:
    return {f"{m}_mi_{when}": report[m][f"mi_{when}"]
            for m in ("adc", "dwi") for when in ("before", "after")}


def _register_task(item: tuple, threads: int) -> dict:
    """Register one case in a worker (see :func:`register_dataset`)."""
    case_dir, transforms, overwrite, note = item
    _use_threads(threads)
    out_dir = Path(case_dir) / ALIGNED_FOLDER
    replace_ours = _written_by_prostseg(_read_report(out_dir / _REPORT))
    register_case(case_dir, overwrite=overwrite or replace_ours, transforms=transforms,
                  number_of_threads=threads)
    columns = _quality_columns(json.loads((out_dir / _REPORT).read_text(encoding="utf-8")))
    notes = [note] if note else []
    for m in ("adc", "dwi"):
        before, after = columns[f"{m}_mi_before"], columns[f"{m}_mi_after"]
        if after < before:
            notes.append(f"{m} mutual information fell ({before} -> {after})")
    return {"status": "registered", **columns, "warnings": notes}


@dataclass
class DatasetRegistration(CaseRows):
    """What :func:`register_dataset` did, case by case.

    Attributes
    ----------
    rows : list of dict
        One row per case folder, with the keys of :data:`SUMMARY_COLUMNS`; ``status``
        is ``registered``, ``up to date`` (skipped) or ``failed`` (with ``error``).
    summary_csv : Path or None
        The summary file, when one was asked for.
    """

    ACTION: ClassVar[str] = "register"


def register_dataset(
    data_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    client=None,
    threads: int | None = None,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    overwrite: bool = False,
    summary_csv: str | os.PathLike | None = None,
    progress: bool = True,
) -> DatasetRegistration:
    """Register every case of a data folder that lacks up-to-date results, in parallel.

    Each case folder of ``data_dir`` (:func:`prostseg.data.dataset.case_folders`) is checked
    with :func:`registration_state`: cases whose ``aligned/`` folder matches their
    inputs and parameters are skipped, so that a run that was stopped continues where
    it stopped; the others are registered with :func:`register_case`, several at a
    time (:func:`prostseg.parallel.run_cases`). Results that prostseg wrote but that
    are out of date (inputs changed, other transforms, an interrupted run) are
    replaced; results without a ``registration.json`` are kept unless ``overwrite``.
    A case that fails (missing or unreadable file, elastix error, even a crash of its
    worker process) is reported with its one-line error; the others go on.

    Parameters
    ----------
    data_dir : path
        Folder of case folders (see :mod:`prostseg.data.dataset`).
    workers : int, optional
        Cases registered at a time on this machine (default: its usable cores); 1
        registers them in this process.
    client : dask.distributed.Client or str, optional
        Register on a Dask cluster instead: a client, or a scheduler address.
    threads : int, optional
        Threads of elastix and ITK per case. Default: the usable cores divided by the
        workers (at least 1), so that the workers together use each core once; 1 per
        case on Dask (run one single-threaded Dask worker process per core).
    transforms : sequence of str
        Passed to :func:`register_case`; results made with other transforms are out of
        date.
    overwrite : bool
        Register every case again, replacing whatever its ``aligned/`` holds.
    summary_csv : path, optional
        Write the summary (:data:`SUMMARY_COLUMNS`) here; it is rewritten as each case
        finishes, so it shows the progress of a long run.
    progress : bool
        Show a progress bar with the time left.

    Returns
    -------
    DatasetRegistration
        One row per case; :meth:`DatasetRegistration.raise_if_failed` stops on failures.

    Raises
    ------
    InputError
        If ``data_dir`` is missing or holds no case folder (a bad case is a failed row).

    Examples
    --------
    >>> result = register_dataset("data/phantom", summary_csv="registration.csv")  # doctest: +SKIP
    >>> result.counts()  # doctest: +SKIP
    {'registered': 7, 'failed': 1}
    """
    transforms = tuple(transforms)
    rows: dict[str, dict] = {}
    to_register: dict[str, tuple] = {}
    for folder in case_folders(data_dir):
        started = time.perf_counter()
        try:
            state = registration_state(folder, transforms=transforms)
        except InputError as err:
            rows[folder.name] = {"case": folder.name, "status": "failed", "error": one_line(err)}
        else:
            if state.up_to_date and not overwrite:
                report = json.loads((folder / ALIGNED_FOLDER / _REPORT).read_text(encoding="utf-8"))
                rows[folder.name] = {"case": folder.name, "status": "up to date",
                                     **_quality_columns(report)}
            else:
                fresh = overwrite or state.reason == "not registered"
                note = "" if fresh else f"replaced: {state.reason}"
                to_register[folder.name] = (folder, transforms, overwrite, note)
                rows[folder.name] = {"case": folder.name, "status": "waiting"}
        rows[folder.name]["seconds"] = round(time.perf_counter() - started, 2)
    summary_csv = None if summary_csv is None else Path(summary_csv)
    skipped = len(rows) - len(to_register)
    run_cases_with_summary(_register_task, to_register, rows, summary_csv, SUMMARY_COLUMNS,
                           workers=workers, client=client, threads=threads, progress=progress,
                           description=f"registering ({skipped} of {len(rows)} skipped)")
    return DatasetRegistration(list(rows.values()), summary_csv)
