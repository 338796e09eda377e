"""Array preprocessing: pad/crop, resize, intensity normalisation and one-hot labels.

Every function is pure NumPy and works on a 2D slice ``(H, W)``, a slice with channels
``(H, W, C)`` or a volume ``(X, Y, Z[, C])``: geometric operations always act on the first
two (in-plane) axes and leave slices and channels untouched.

Geometry conventions
--------------------
* :func:`center_pad_crop` pads ``diff // 2`` pixels before and the rest after, and crops
  starting at ``diff // 2``, so padding and then cropping back (or cropping and then
  padding back, for the kept region) restores the original pixels in place. Calling
  ``center_pad_crop(prediction, original.shape[:2])`` is therefore the inverse used to
  put a network output back on the original slice grid.
* :func:`resize_image` (bilinear) and :func:`resize_labels` (nearest neighbour) align
  pixel *centres* of the two grids as when each pixel is a square cell covering the same
  field of view (``scipy.ndimage.zoom(..., grid_mode=True)`` semantics): output pixel
  ``o`` of ``n_out`` samples input coordinate ``(o + 0.5) * n_in / n_out - 0.5``, clamped
  to the edge pixels. Labels are never interpolated.

Intensity conventions
---------------------
Normalisers compute their statistics over the whole array they are given (or over
``mask``), per channel when ``channel_axis`` is set. Pass a *volume* for per-volume
normalisation, the project default: it keeps the relative brightness of slices and lets
a blank slice stay blank. Constant input gives zeros, never NaN; NaN or Inf input is
rejected with a :class:`ValueError`. Results are ``float32``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from prostseg.errors import InputError

__all__ = [
    "center_pad_crop",
    "resize_image",
    "resize_labels",
    "clip_percentiles",
    "minmax_normalize",
    "zscore_normalize",
    "one_hot",
    "labels_from_one_hot",
]


def _in_plane_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``size`` as a pair of positive ints ``(h, w)``."""
    pair = (size, size) if np.ndim(size) == 0 else tuple(size)
    if len(pair) != 2:
        raise InputError(None, f"size must be an int or a pair (h, w), got {size!r}")
    height, width = (operator.index(value) for value in pair)
    if height < 1 or width < 1:
        raise InputError(None, f"size must be positive, got {size!r}")
    return height, width


def _at_least_2d(array: ArrayLike) -> np.ndarray:
    """Return ``array`` as an ndarray, raising InputError when it has fewer than 2 axes or no values."""
    array = np.asarray(array)
    if array.ndim < 2:
        raise InputError(None, f"expected an array with at least 2 (in-plane) axes, got shape {array.shape}")
    _non_empty(array)
    return array


def _non_empty(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise InputError(None, f"expected an array with values, got an empty array of shape {array.shape}")
    return array


def _finite_float64(array: ArrayLike) -> np.ndarray:
    """Return ``array`` as float64, raising InputError when it is empty or holds NaN or Inf."""
    values = _non_empty(np.asarray(array, dtype=np.float64))
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
        raise InputError(None, f"array holds {bad} NaN or Inf value(s) out of {values.size}; fix or mask them first")
    return values


def _channels_last(values: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, Callable]:
    """View ``values`` as ``(..., C)`` with channels last (``C = 1`` without a channel axis).

    Returns the view and a function that puts an array of that layout back in the
    original one.
    """
    if channel_axis is None:
        return values[..., np.newaxis], lambda channels: channels[..., 0]
    channel_axis = operator.index(channel_axis)
    if not -values.ndim <= channel_axis < values.ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for an array with {values.ndim} axes")
    return np.moveaxis(values, channel_axis, -1), lambda channels: np.moveaxis(channels, -1, channel_axis)


def center_pad_crop(array: ArrayLike, size: int | tuple[int, int], *, pad_value: float = 0) -> np.ndarray:
    """Centre pad or crop the two in-plane axes of ``array`` to ``size``.

    Each in-plane axis is padded with ``pad_value`` when it is shorter than the target
    (``diff // 2`` before, the rest after) and cropped when it is longer (keeping
    ``[diff // 2, diff // 2 + target)``). One axis may be padded while the other is
    cropped. Because both directions put the odd pixel at the end, the function is its
    own inverse: ``center_pad_crop(center_pad_crop(a, s), a.shape[:2])`` gives back
    ``a`` after padding, and ``a``'s centre region (zeros elsewhere) after cropping. Use
    this to return predictions made on the padded grid to the original slice grid.

    Parameters
    ----------
    array : array_like, shape (H, W, ...)
        Slice, slice with channels, or volume; trailing axes are untouched.
    size : int or (int, int)
        Target in-plane shape ``(h, w)``; an int means a square.
    pad_value : scalar, optional
        Constant used for padding (default 0).

    Returns
    -------
    numpy.ndarray, shape (h, w, ...)
        A new array with the dtype of ``array``.

    Examples
    --------
    >>> a = np.arange(6).reshape(2, 3)
    >>> center_pad_crop(a, (4, 2))
    array([[0, 0],
           [0, 1],
           [3, 4],
           [0, 0]])
    >>> center_pad_crop(center_pad_crop(a, 5), a.shape[:2])
    array([[0, 1, 2],
           [3, 4, 5]])
    """
    array = _at_least_2d(array)
    target = _in_plane_size(size)
    crops, pads = [], []
    for current, wanted in zip(array.shape[:2], target):
        diff = abs(wanted - current)
        if wanted < current:
            crops.append(slice(diff // 2, diff // 2 + wanted))
            pads.append((0, 0))
        else:
            crops.append(slice(None))
            pads.append((diff // 2, diff - diff // 2))
    cropped = array[tuple(crops)]
    pads.extend([(0, 0)] * (array.ndim - 2))
    return np.pad(cropped, pads, mode="constant", constant_values=pad_value)


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index nearest to each output pixel centre (ties go to the higher index)."""
    # floor((o + 0.5) * n_in / n_out) in exact integer arithmetic
    return (2 * np.arange(n_out) + 1) * n_in // (2 * n_out)


def resize_image(array: ArrayLike, size: int | tuple[int, int]) -> np.ndarray:
    """Resize the in-plane axes of an image with bilinear interpolation.

    Pixel centres are aligned as described in the module docstring, so a constant image
    stays exactly constant and halving a size averages pixel pairs.

    Parameters
    ----------
    array : array_like, shape (H, W, ...)
        Intensity image; slices and channels (trailing axes) are resized independently.
    size : int or (int, int)
        Target in-plane shape ``(h, w)``.

    Returns
    -------
    numpy.ndarray of float32, shape (h, w, ...)

    See Also
    --------
    resize_labels : the same geometry for label maps, without interpolation.

    Examples
    --------
    >>> resize_image(np.array([[0.0, 2.0, 4.0, 6.0]]), (1, 2))
    array([[1., 5.]], dtype=float32)
    """
    resized = np.asarray(_at_least_2d(array), dtype=np.float64)
    for axis, n_out in enumerate(_in_plane_size(size)):
        n_in = resized.shape[axis]
        coords = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(coords).astype(np.intp)
        high = np.minimum(low + 1, n_in - 1)
        weight = (coords - low).reshape((-1,) + (1,) * (resized.ndim - axis - 1))
        below = np.take(resized, low, axis=axis)
        resized = below + (np.take(resized, high, axis=axis) - below) * weight
    return resized.astype(np.float32)


def resize_labels(array: ArrayLike, size: int | tuple[int, int]) -> np.ndarray:
    """Resize the in-plane axes of a label map with nearest-neighbour sampling.

    Every output value is copied from an input pixel, so no new label values appear and
    the dtype is kept. The geometry matches :func:`resize_image`.

    Parameters
    ----------
    array : array_like, shape (H, W, ...)
        Label map (any dtype); trailing axes are untouched.
    size : int or (int, int)
        Target in-plane shape ``(h, w)``.

    Returns
    -------
    numpy.ndarray, shape (h, w, ...)
        Same dtype as ``array``.

    Examples
    --------
    >>> resize_labels(np.array([[0, 1], [2, 3]], dtype=np.uint8), 4)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, 3, 3],
           [2, 2, 3, 3]], dtype=uint8)
    """
    array = _at_least_2d(array)
    rows, cols = (_nearest_indices(n_in, n_out) for n_in, n_out in zip(array.shape[:2], _in_plane_size(size)))
    return array[np.ix_(rows, cols)]


def clip_percentiles(
    array: ArrayLike, low: float = 0.5, high: float = 99.5, *, mask: ArrayLike | None = None
) -> np.ndarray:
    """Clip intensities to the ``low`` and ``high`` percentiles of the array.

    Suppresses the few very bright (or dark) voxels that would otherwise squeeze the
    useful intensity range after :func:`minmax_normalize`.

    Parameters
    ----------
    array : array_like
        Image or volume; NaN and Inf are rejected.
    low, high : float, optional
        Percentiles in ``[0, 100]`` with ``low <= high`` (default 0.5 and 99.5).
    mask : array_like of bool, optional
        Same shape as ``array``; the percentiles are taken over the voxels where it is
        true (at least one), and the whole array is clipped.

    Returns
    -------
    numpy.ndarray of float32
        Same shape as ``array``.

    Examples
    --------
    >>> clip_percentiles(np.arange(11.0), 10, 90)
    array([1., 1., 2., 3., 4., 5., 6., 7., 8., 9., 9.], dtype=float32)
    """
    if not 0 <= low <= high <= 100:
        raise ValueError(f"need 0 <= low <= high <= 100, got low={low}, high={high}")
    values = _finite_float64(array)
    if mask is None:
        sample = values
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} differs from array shape {values.shape}")
        if not mask.any():
            raise ValueError("mask selects no voxels")
        sample = values[mask]
    lower, upper = np.percentile(sample, [low, high])
    return np.clip(values, lower, upper).astype(np.float32)


def minmax_normalize(array: ArrayLike, *, channel_axis: int | None = None) -> np.ndarray:
    """Scale intensities linearly to ``[0, 1]``; constant input gives zeros.

    The minimum and maximum are taken over the whole array (per channel when
    ``channel_axis`` is given): pass a volume for per-volume scaling (the project's U-Net
    default, after :func:`clip_percentiles`) or a slice for per-slice scaling. A blank or
    constant array (or channel) maps to exact zeros instead of dividing by zero.

    Parameters
    ----------
    array : array_like
        Image or volume; NaN and Inf are rejected.
    channel_axis : int, optional
        Axis holding channels that are scaled independently.

    Returns
    -------
    numpy.ndarray of float32
        Same shape as ``array``, values in ``[0, 1]``.

    Examples
    --------
    >>> minmax_normalize(np.array([2.0, 4.0, 6.0]))
    array([0. , 0.5, 1. ], dtype=float32)
    >>> minmax_normalize(np.zeros((2, 2)))
    array([[0., 0.],
           [0., 0.]], dtype=float32)
    """
    values = _finite_float64(array)
    channels, restore = _channels_last(values, channel_axis)
    if values.size == 0:
        return values.astype(np.float32)
    sample = channels.reshape(-1, channels.shape[-1])
    lowest = sample.min(axis=0)
    value_range = sample.max(axis=0) - lowest
    scale = np.where(value_range > 0, value_range, 1.0)
    return restore((channels - lowest) / scale).astype(np.float32)


def zscore_normalize(
    array: ArrayLike, *, mask: ArrayLike | None = None, channel_axis: int | None = None
) -> np.ndarray:
    """Shift and scale intensities to mean 0 and standard deviation 1.

    Statistics are taken over the whole array, or over the voxels where ``mask`` is true,
    per channel when ``channel_axis`` is given (the Pix2Pix default: per volume, per
    channel). A channel whose statistics voxels are all equal is only shifted, so a
    constant channel becomes exact zeros instead of dividing by zero.

    Parameters
    ----------
    array : array_like
        Image or volume; NaN and Inf are rejected.
    mask : array_like of bool, optional
        Voxels to take the statistics from (all voxels are transformed). Its shape is
        the array's shape without the channel axis (when ``channel_axis`` is given).
    channel_axis : int, optional
        Axis holding channels that are normalised independently.

    Returns
    -------
    numpy.ndarray of float32
        Same shape as ``array``.

    Examples
    --------
    >>> zscore_normalize(np.array([1.0, 3.0]))
    array([-1.,  1.], dtype=float32)
    >>> zscore_normalize(np.array([[5.0, 7.0], [5.0, 9.0]]), channel_axis=1)
    array([[ 0., -1.],
           [ 0.,  1.]], dtype=float32)
    """
    values = _finite_float64(array)
    channels, restore = _channels_last(values, channel_axis)
    if mask is None:
        sample = channels.reshape(-1, channels.shape[-1])
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != channels.shape[:-1]:
            raise ValueError(f"mask shape {mask.shape} differs from the array's spatial shape {channels.shape[:-1]}")
        sample = channels[mask]
    if sample.shape[0] == 0:
        raise ValueError("no voxels to compute statistics from (empty array or empty mask)")
    constant = sample.min(axis=0) == sample.max(axis=0)
    # a constant channel is shifted by its exact value, so it becomes exact zeros
    mean = np.where(constant, sample[0], sample.mean(axis=0))
    std = sample.std(axis=0)
    scale = np.where(constant | (std == 0), 1.0, std)
    return restore((channels - mean) / scale).astype(np.float32)


def one_hot(labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Encode integer labels ``0..num_classes - 1`` as a trailing one-hot axis.

    Parameters
    ----------
    labels : array_like of int
        Label map of any shape. Floats are accepted when every value is a whole number.
    num_classes : int
        Number of classes ``k`` (at least 1).

    Returns
    -------
    numpy.ndarray of float32, shape ``labels.shape + (k,)``

    Raises
    ------
    prostseg.errors.InputError
        When labels are not whole numbers in ``0..k - 1``; the message lists the
        offending values.

    See Also
    --------
    labels_from_one_hot : the inverse.

    Examples
    --------
    >>> one_hot(np.array([0, 2]), 3)
    array([[1., 0., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    num_classes = operator.index(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating) or labels.dtype == bool):
        raise InputError(None, f"labels must be numeric, got dtype {labels.dtype}")
    values = np.unique(labels)
    valid = (values >= 0) & (values < num_classes) & (np.mod(values, 1) == 0)
    if not valid.all():
        shown = ", ".join(str(value) for value in values[~valid][:10])
        more = " ..." if np.count_nonzero(~valid) > 10 else ""
        raise InputError(
            None, f"labels must be whole numbers in 0..{num_classes - 1}; found {shown}{more}"
        )
    return np.eye(num_classes, dtype=np.float32)[labels.astype(np.intp)]


def labels_from_one_hot(encoded: ArrayLike) -> np.ndarray:
    """Return the class index of the largest entry along the last axis.

    The exact inverse of :func:`one_hot`; also turns per-class scores or probabilities
    (a network's output) into a label map. Ties go to the lowest class index.

    Parameters
    ----------
    encoded : array_like, shape (..., k)
        One-hot labels, scores or probabilities; NaN is rejected.

    Returns
    -------
    numpy.ndarray, shape ``encoded.shape[:-1]``
        The smallest unsigned integer dtype that holds ``k - 1`` (``uint8`` for up to
        256 classes).

    Examples
    --------
    >>> labels_from_one_hot(np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]]))
    array([1, 0], dtype=uint8)
    """
    encoded = np.asarray(encoded)
    if encoded.ndim < 1 or encoded.shape[-1] < 1:
        raise ValueError(f"expected a trailing class axis of length >= 1, got shape {encoded.shape}")
    if np.issubdtype(encoded.dtype, np.floating) and np.isnan(encoded).any():
        raise ValueError("encoded labels hold NaN values")
    return np.argmax(encoded, axis=-1).astype(np.min_scalar_type(encoded.shape[-1] - 1))
