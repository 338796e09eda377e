"""Slices for the networks, and back: the NumPy half of the input pipelines.

Training (:mod:`prostseg.preparation.pipeline`), inference (:mod:`prostseg.use.inference`) and the
figures of the book all prepare volumes with the functions of this module. It needs
NumPy only: preparing and drawing a slice does not import TensorFlow.

Volume preparation (one place for training and inference)
---------------------------------------------------------
The ``prepare_*`` functions turn a canonical volume (see :mod:`prostseg.data.io`) into a
stack of network inputs; training, validation and inference all call them, so a model
always sees the same preprocessing. Axial slice ``k`` is ``data[:, :, k]``, so the
network's first in-plane axis (height) is ``x`` (towards the patient's Right) and the
second (width) is ``y`` (towards Anterior). Figures rotate slices for display
(:mod:`prostseg.viz`); data code never does.

* U-Net (:func:`prepare_unet_volume`, :func:`prepare_unet_mask`): per-volume
  percentile clip (0.5 and 99.5 %) and min-max scaling to ``[0, 1]`` (a constant
  volume becomes zeros, never NaN), then every slice centre padded or cropped to
  ``image_size`` (:func:`prostseg.preparation.preprocessing.center_pad_crop`). Output
  ``(Z, H, W, 1)`` float32.
* Pix2Pix (:func:`prepare_pix2pix_volume`, :func:`prepare_zone_labels`): per-volume,
  per-channel z-score of the registered ``(X, Y, Z, 3)`` stack, in-plane bilinear
  resize to ``image_size``; zone labels are resized by nearest neighbour (never
  interpolated) and one-hot encoded. Output ``(Z, H, W, 3)`` and ``(Z, H, W, 5)``.

Inference undoes exactly these geometric steps with :func:`restore_unet_slices` (the
inverse centre pad/crop) and :func:`restore_pix2pix_slices` (bilinear resize back to
the T2W matrix); the result lies on the input volume's grid, ready for
:func:`prostseg.data.io.save_like`.

A common physical scale (``target_spacing``)
--------------------------------------------
Scanners store slices with in-plane spacings from about 0.3 to 1 mm, so the same
prostate covers three times more pixels in one scan than in another, and a network
trained on one spacing sees the organ at the wrong size on another. With
``target_spacing=t`` (mm) every slice is first resampled to pixels of ``t`` x ``t`` mm
(:func:`resampled_size`; images bilinear, labels nearest neighbour, never
interpolated) and *then* centre padded or cropped to ``image_size``, for both models:
``image_size`` pixels then always cover ``image_size * t`` mm around the centre of the
field of view. (Pix2Pix is not resized after resampling: resizing a whole slice to
``image_size`` makes the pixel size depend on the field of view again.) The
``restore_*`` functions take the same ``target_spacing`` and the volume's spacing and
undo both steps, so predictions come back on the original grid. The default
``target_spacing=None`` keeps the behaviour above: the U-Net at the native spacing,
Pix2Pix resized whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from prostseg.data.dataset import NUM_ZONE_CLASSES
from prostseg.data.io import Volume
from prostseg.preparation.preprocessing import (
    center_pad_crop,
    clip_percentiles,
    minmax_normalize,
    one_hot,
    resize_image,
    resize_labels,
    zscore_normalize,
)

__all__ = [
    "UNET_IMAGE_SIZE",
    "PIX2PIX_IMAGE_SIZE",
    "CLIP_PERCENTILES",
    "prepare_unet_volume",
    "prepare_unet_mask",
    "prepare_pix2pix_volume",
    "prepare_zone_labels",
    "restore_unet_slices",
    "restore_pix2pix_slices",
    "resampled_size",
]

#: In-plane size of U-Net input slices (centre pad/crop).
UNET_IMAGE_SIZE = 384
#: In-plane size of Pix2Pix input slices (bilinear resize).
PIX2PIX_IMAGE_SIZE = 256
#: Percentiles of the per-volume intensity clip before U-Net min-max scaling.
CLIP_PERCENTILES = (0.5, 99.5)




def _spatial_array(volume: Volume | ArrayLike, ndim: int, what: str) -> np.ndarray:
    """The array of ``volume`` (a Volume or an array), checked to have ``ndim`` axes."""
    array = volume.data if isinstance(volume, Volume) else np.asarray(volume)
    if array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} axes, got shape {array.shape}")
    return array


def resampled_size(shape: Sequence[int], spacing: Sequence[float], target_spacing: float) -> tuple[int, int]:
    """In-plane matrix of a slice resampled to pixels of ``target_spacing`` mm.

    The field of view is kept: each in-plane axis of ``n`` pixels of ``s`` mm becomes
    ``round(n * s / target_spacing)`` pixels (at least 1), which
    :func:`prostseg.preparation.preprocessing.resize_image` fills with the same pixel-centre
    geometry it always uses (the new pixels differ from ``target_spacing`` by the
    rounding only, less than half a pixel over the whole field of view).

    Parameters
    ----------
    shape : sequence of int
        The volume's shape; its first two values are the in-plane matrix ``(X, Y)``.
    spacing : sequence of float
        The volume's voxel size in mm; the first two values are used.
    target_spacing : float
        The common in-plane pixel size, in mm.

    Returns
    -------
    (int, int)

    Examples
    --------
    >>> resampled_size((320, 320, 19), (0.5, 0.5, 3.0), 1.0)
    (160, 160)
    >>> resampled_size((175, 140, 20), (0.8, 1.0, 3.0), 1.5)
    (93, 93)
    """
    target_spacing = _positive_spacing(target_spacing, "target_spacing")
    if len(shape) < 2 or len(spacing) < 2:
        raise ValueError(f"need at least two in-plane values, got shape {tuple(shape)} and spacing {tuple(spacing)}")
    return tuple(
        max(1, int(np.floor(n * _positive_spacing(s, "spacing") / target_spacing + 0.5)))
        for n, s in zip(shape[:2], spacing[:2])
    )


def _positive_spacing(value, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of mm, got {value}")
    return value


def _in_plane_spacing(volume, spacing: Sequence[float] | None) -> tuple[float, float]:
    """The in-plane spacing of ``volume``: ``spacing`` if given, else the Volume's own."""
    if spacing is None:
        if not isinstance(volume, Volume):
            raise ValueError("target_spacing needs the volume's spacing: pass a Volume, or spacing=(sx, sy) in mm")
        spacing = volume.spacing
    if len(spacing) < 2:
        raise ValueError(f"spacing needs the two in-plane values (mm), got {tuple(spacing)}")
    return tuple(_positive_spacing(value, "spacing") for value in spacing[:2])


def _common_scale(array: np.ndarray, volume, spacing, target_spacing: float | None, *, labels: bool) -> np.ndarray:
    """``array`` resampled in-plane to ``target_spacing`` (unchanged when it is None)."""
    if target_spacing is None:
        return array
    size = resampled_size(array.shape, _in_plane_spacing(volume, spacing), target_spacing)
    return resize_labels(array, size) if labels else resize_image(array, size)


def _slices_first(array: np.ndarray) -> np.ndarray:
    """``(H, W, Z[, C])`` -> contiguous ``(Z, H, W, C)`` (``C = 1`` when absent)."""
    if array.ndim == 3:
        array = array[..., np.newaxis]
    return np.ascontiguousarray(np.moveaxis(array, 2, 0))


def prepare_unet_volume(
    volume: Volume | ArrayLike,
    image_size: int = UNET_IMAGE_SIZE,
    *,
    target_spacing: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Prepare a T2W volume as U-Net input slices.

    Clips intensities to the :data:`CLIP_PERCENTILES` of the whole volume, scales them
    to ``[0, 1]`` (a constant volume gives zeros), optionally resamples every axial
    slice to ``target_spacing`` (bilinear) and centre pads or crops it to
    ``image_size`` (zero padding).

    Parameters
    ----------
    volume : Volume or array_like, shape (X, Y, Z)
        The T2W volume in canonical order (as :func:`prostseg.data.io.load_volume` gives it).
    image_size : int, optional
        Side of the square output slices.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) before the centre pad/crop
        (see the module documentation). By default slices keep their own spacing.
    spacing : sequence of float, optional
        The volume's voxel size in mm (the first two values are used); only with
        ``target_spacing``, and only needed when ``volume`` is an array rather than a
        :class:`~prostseg.data.io.Volume`.

    Returns
    -------
    numpy.ndarray of float32, shape (Z, image_size, image_size, 1)
        Slice ``k`` is ``data[:, :, k]``: height runs along ``x``, width along ``y``.

    See Also
    --------
    restore_unet_slices : puts slices of this shape back on the volume's grid.

    Examples
    --------
    >>> volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    >>> slices = prepare_unet_volume(volume, image_size=4)
    >>> slices.shape, slices.dtype
    ((4, 4, 4, 1), dtype('float32'))
    >>> float(slices.min()), float(slices.max()) <= 1.0
    (0.0, True)
    >>> float(prepare_unet_volume(np.full((2, 2, 3), 7.0), image_size=2).max())  # constant
    0.0

    With ``target_spacing``, 0.5 mm pixels become 1 mm pixels before the crop, so 4
    pixels cover 4 mm instead of 2 mm:

    >>> fine = np.tile(np.arange(8.0)[:, None, None], (1, 8, 1))  # (8, 8, 1), 0.5 mm
    >>> (prepare_unet_volume(fine, 4)[0, :, 0, 0] * 7).round(2)  # the central 2 mm
    array([2., 3., 4., 5.], dtype=float32)
    >>> (prepare_unet_volume(fine, 4, target_spacing=1.0, spacing=(0.5, 0.5))[0, :, 0, 0] * 7).round(2)
    array([0.5, 2.5, 4.5, 6.5], dtype=float32)
    """
    array = _spatial_array(volume, 3, "a T2W volume")
    scaled = minmax_normalize(clip_percentiles(array, *CLIP_PERCENTILES))
    scaled = _common_scale(scaled, volume, spacing, target_spacing, labels=False)
    return _slices_first(center_pad_crop(scaled, image_size))


def prepare_unet_mask(
    mask_volume: Volume | ArrayLike,
    image_size: int = UNET_IMAGE_SIZE,
    *,
    target_spacing: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Prepare a mask volume as U-Net target slices.

    Every non-zero voxel is foreground (a lesion mask, or a zone map for a whole-gland
    mask). Slices are resampled (nearest neighbour) and centre padded or cropped
    exactly like :func:`prepare_unet_volume`, so image and mask stay aligned pixel for
    pixel.

    Parameters
    ----------
    mask_volume : Volume or array_like, shape (X, Y, Z)
        Label map in canonical order, on the grid of the image.
    image_size : int, optional
        Side of the square output slices.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) before the centre pad/crop
        (see the module documentation). By default slices keep their own spacing.
    spacing : sequence of float, optional
        The volume's voxel size in mm (the first two values are used); only with
        ``target_spacing``, and only needed when ``mask_volume`` is an array rather than a
        :class:`~prostseg.data.io.Volume`.

    Returns
    -------
    numpy.ndarray of float32, shape (Z, image_size, image_size, 1)
        Values 0 and 1.

    Examples
    --------
    >>> mask = np.zeros((3, 3, 2), np.uint8)
    >>> mask[1, 1, 0] = 2
    >>> target = prepare_unet_mask(mask, image_size=5)
    >>> target.shape, target[0, 2, 2, 0], float(target.sum())
    ((2, 5, 5, 1), np.float32(1.0), 1.0)
    """
    array = _spatial_array(mask_volume, 3, "a mask volume")
    foreground = _common_scale(array != 0, mask_volume, spacing, target_spacing, labels=True)
    return _slices_first(center_pad_crop(foreground, image_size).astype(np.float32))


def prepare_pix2pix_volume(
    stack: Volume | ArrayLike,
    image_size: int = PIX2PIX_IMAGE_SIZE,
    *,
    target_spacing: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Prepare a registered multi-channel stack as Pix2Pix input slices.

    Each channel is z-scored over the whole volume (a constant channel gives zeros),
    then every axial slice is resized bilinearly to ``image_size``, or, with
    ``target_spacing``, resampled bilinearly to that pixel size and centre padded or
    cropped to ``image_size``.

    Parameters
    ----------
    stack : Volume or array_like, shape (X, Y, Z, C)
        The registered stack (channels T2W, DWI, ADC) in canonical order, as written
        by :func:`prostseg.preparation.registration.register_case`.
    image_size : int, optional
        Side of the square output slices.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) and centre pad or crop it to
        ``image_size`` instead of resizing it (see the module documentation).
    spacing : sequence of float, optional
        The volume's voxel size in mm (the first two values are used); only with
        ``target_spacing``, and only needed when ``stack`` is an array rather than a
        :class:`~prostseg.data.io.Volume`.

    Returns
    -------
    numpy.ndarray of float32, shape (Z, image_size, image_size, C)

    Examples
    --------
    >>> stack = np.random.default_rng(0).normal(5.0, 2.0, (6, 4, 2, 3))
    >>> slices = prepare_pix2pix_volume(stack, image_size=8)
    >>> slices.shape, slices.dtype
    ((2, 8, 8, 3), dtype('float32'))
    """
    array = _spatial_array(stack, 4, "a multi-channel stack (X, Y, Z, C)")
    return _slices_first(_pix2pix_geometry(
        zscore_normalize(array, channel_axis=-1), image_size, stack, spacing, target_spacing, labels=False
    ))


def _pix2pix_geometry(array, image_size, volume, spacing, target_spacing, *, labels: bool) -> np.ndarray:
    """Resize to ``image_size``, or resample to ``target_spacing`` and centre pad/crop."""
    if target_spacing is None:
        return resize_labels(array, image_size) if labels else resize_image(array, image_size)
    return center_pad_crop(_common_scale(array, volume, spacing, target_spacing, labels=labels), image_size)


def prepare_zone_labels(
    zones: Volume | ArrayLike,
    image_size: int = PIX2PIX_IMAGE_SIZE,
    *,
    target_spacing: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Prepare a zone label map as one-hot Pix2Pix targets.

    Slices are resized (or resampled and padded/cropped) by nearest neighbour with the
    geometry of :func:`prepare_pix2pix_volume` (labels are never interpolated), then
    one-hot encoded over the :data:`~prostseg.data.dataset.NUM_ZONE_CLASSES` zone classes.

    Parameters
    ----------
    zones : Volume or array_like, shape (X, Y, Z)
        Zone labels ``0 .. 4`` (:data:`~prostseg.data.dataset.ZONE_NAMES`) in canonical order.
    image_size : int, optional
        Side of the square output slices.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) and centre pad or crop it to
        ``image_size`` instead of resizing it (see the module documentation).
    spacing : sequence of float, optional
        The volume's voxel size in mm (the first two values are used); only with
        ``target_spacing``, and only needed when ``zones`` is an array rather than a
        :class:`~prostseg.data.io.Volume`.

    Returns
    -------
    numpy.ndarray of float32, shape (Z, image_size, image_size, 5)
        Exactly one 1 per pixel.

    Raises
    ------
    InputError
        When labels lie outside ``0 .. 4``.

    Examples
    --------
    >>> zones = np.array([[[0], [1]], [[2], [4]]], dtype=np.uint8)  # (2, 2, 1)
    >>> targets = prepare_zone_labels(zones, image_size=4)
    >>> targets.shape, bool((targets.sum(axis=-1) == 1).all())
    ((1, 4, 4, 5), True)
    >>> targets[0].argmax(axis=-1)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, 4, 4],
           [2, 2, 4, 4]])
    """
    array = _spatial_array(zones, 3, "a zone label map")
    labels = _pix2pix_geometry(array, image_size, zones, spacing, target_spacing, labels=True)
    return _slices_first(one_hot(labels, NUM_ZONE_CLASSES))


def restore_unet_slices(
    slices: ArrayLike,
    shape: Sequence[int],
    *,
    target_spacing: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Put U-Net output slices back on the grid of the volume they came from.

    The inverse of the geometry of :func:`prepare_unet_volume`: slices are stacked
    along ``z`` and centre cropped or padded back to the volume's in-plane size (what
    padding added is dropped; what cropping removed comes back as zeros); with
    ``target_spacing`` they are cropped or padded to the resampled size and then
    resized bilinearly back to the volume's matrix.

    Parameters
    ----------
    slices : array_like, shape (Z, H, W, C)
        Network outputs (probabilities or masks), one per axial slice.
    shape : sequence of int
        Spatial shape ``(X, Y, Z)`` of the original volume (``volume.shape``).
    target_spacing : float, optional
        The ``target_spacing`` the slices were prepared with.
    spacing : sequence of float, optional
        The volume's voxel size in mm (the first two values are used); needed with
        ``target_spacing``.

    Returns
    -------
    numpy.ndarray, shape (X, Y, Z, C)
        Same dtype as ``slices``; float32 with ``target_spacing`` (interpolated).

    Examples
    --------
    >>> volume = np.random.default_rng(0).random((5, 3, 2))
    >>> slices = prepare_unet_volume(volume, image_size=8)
    >>> restored = restore_unet_slices(slices, volume.shape)
    >>> restored.shape, bool(np.array_equal(restored[..., 0], minmax_normalize(clip_percentiles(volume))))
    ((5, 3, 2, 1), True)
    """
    stacked = _volume_order(slices, shape)
    if target_spacing is None:
        return center_pad_crop(stacked, tuple(shape[:2]))
    resampled = center_pad_crop(stacked, resampled_size(shape, _in_plane_spacing(None, spacing), target_spacing))
    return resize_image(resampled, tuple(shape[:2]))


def restore_pix2pix_slices(
    slices: ArrayLike,
    shape: Sequence[int],
    *,
    target_spacing: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Resize Pix2Pix output slices back to the grid of the T2W volume.

    The inverse of the geometry of :func:`prepare_pix2pix_volume`. Resize class
    probabilities (bilinear) and then take
    :func:`~prostseg.preparation.preprocessing.labels_from_one_hot`, rather than resizing labels.
    With ``target_spacing`` the slices are first cropped or padded back to the
    resampled size; padding adds zero probabilities for every class, which the argmax
    reads as background.

    Parameters
    ----------
    slices : array_like, shape (Z, H, W, C)
        Network outputs, one per axial slice.
    shape : sequence of int
        Spatial shape ``(X, Y, Z)`` of the T2W volume.
    target_spacing : float, optional
        The ``target_spacing`` the slices were prepared with.
    spacing : sequence of float, optional
        The volume's voxel size in mm (the first two values are used); needed with
        ``target_spacing``.

    Returns
    -------
    numpy.ndarray of float32, shape (X, Y, Z, C)

    Examples
    --------
    >>> zones = np.random.default_rng(0).integers(0, 5, size=(4, 6, 3))
    >>> probabilities = prepare_zone_labels(zones, image_size=8)
    >>> restored = restore_pix2pix_slices(probabilities, zones.shape)
    >>> restored.shape
    (4, 6, 3, 5)
    """
    stacked = _volume_order(slices, shape)
    if target_spacing is not None:
        stacked = center_pad_crop(stacked, resampled_size(shape, _in_plane_spacing(None, spacing), target_spacing))
    return resize_image(stacked, tuple(shape[:2]))


def _volume_order(slices: ArrayLike, shape: Sequence[int]) -> np.ndarray:
    """``(Z, H, W, C)`` -> ``(H, W, Z, C)``, checking ``Z`` against ``shape``."""
    slices = np.asarray(slices)
    if slices.ndim != 4 or len(shape) != 3 or slices.shape[0] != shape[2]:
        raise ValueError(
            f"expected slices (Z, H, W, C) of a volume of shape (X, Y, Z) = {tuple(shape)}, "
            f"got slices of shape {slices.shape}"
        )
    return np.moveaxis(slices, 0, 2)
