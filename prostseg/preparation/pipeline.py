"""Streaming ``tf.data`` pipelines and joint augmentation for the U-Net and Pix2Pix models.

A pipeline holds only the cases it is preparing: each case is read with
:func:`prostseg.data.io.load_volume` (``float32`` images, ``uint8`` labels), prepared as a
whole volume by the NumPy functions of :mod:`prostseg.preparation.slices`, cut into axial slices
and streamed. Memory use depends on the shuffle buffer, not on the size of the data set.

Streaming, shuffling and determinism
------------------------------------
:func:`unet_dataset` and :func:`pix2pix_dataset` map a loader over the case indices
(``num_parallel_calls=AUTOTUNE``, ``deterministic=True``, so several cases load in
parallel but come out in order), unbatch the prepared volumes into slices, shuffle
them in a buffer counted in slices, batch and prefetch. With ``shuffle=True`` the case
order is reshuffled every epoch too. All randomness is seeded from ``seed`` (shuffles,
oversampling, augmentation), so two datasets built with the same arguments yield the
same batches. With ``shuffle=False`` slices come case by case, in case order and
slice order ``k = 0, 1, ...``. :func:`pix2pix_epochs` yields one such dataset per
epoch, each seeded by the epoch's number (a resumed run repeats the same epochs);
with ``cache`` they share the prepared volumes in memory instead of reading the files
every epoch.

Prepared slices on disk (``slice_cache``)
-----------------------------------------
``cache=True`` helps only while the prepared volumes fit in memory. With
``slice_cache=DIR`` the pipelines instead stream the slices that ``prostseg prepare``
(:mod:`prostseg.preparation.slice_cache`) wrote once per case: the case files are shuffled every
epoch and read by a parallel interleave, the slices pass the same shuffle buffer,
oversampling and augmentation as the uncached stream, and without ``shuffle`` they come
in the same order. Images are stored as float16, labels as exact integers.

Sparse lesions
--------------
Lesion masks are tiny: the real ProstateX cases hold 416 to 6437 lesion voxels in
320 x 320 x 19 volumes, so most slices have no lesion at all and a network can score
well by predicting nothing. ``drop_empty=True`` keeps only slices with foreground;
``foreground_fraction=p`` instead oversamples: it draws from a stream of foreground
slices with probability ``p`` and from a stream of empty slices with ``1 - p``
(:meth:`tf.data.Dataset.sample_from_datasets`), so the network still sees empty
slices. Use :func:`count_slices` for steps per epoch.
"""

from __future__ import annotations

import itertools
import operator
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from prostseg.data.dataset import MASKS, NUM_ZONE_CLASSES, Case
from prostseg.data.io import volume_grid
from prostseg.preparation.slice_cache import SliceSpec, cached_slice_counts, cached_slices
from prostseg.preparation.slices import (
    PIX2PIX_IMAGE_SIZE,
    PIX2PIX_SLICING,
    UNET_IMAGE_SIZE,
    UNET_SLICING,
    case_labels,
    prepare_unet_mask,
)

__all__ = [
    "augment_pair",
    "augment_intensity",
    "augment_stack_intensity",
    "augment_shape",
    "count_slices",
    "unet_dataset",
    "pix2pix_dataset",
    "pix2pix_epochs",
]

_AUTOTUNE = tf.data.AUTOTUNE


# --- augmentation -------------------------------------------------------------------


def augment_pair(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Rotate and flip an image and its label map with the same random transform.

    Draws, from ``seed`` alone, a rotation by ``k * 90`` degrees (``k`` in 0..3), a
    flip of the width axis and a flip of the height axis (the Pix2Pix recipe), which
    together give each of the 8 symmetries of the square equally often. Only pixels
    move, so label values (binary or one-hot) are never changed.

    Parameters
    ----------
    image, label : tf.Tensor, shape (H, W, C) or (B, H, W, C)
        Arrays of the same height and width (the channels may differ). Use square
        slices if they are batched afterwards: a quarter turn swaps height and width.
    seed : tf.Tensor, shape (2,), int32 or int64
        Seed of the stateless random draws; the same seed gives the same transform.

    Returns
    -------
    image, label : tf.Tensor
        Transformed copies.

    Examples
    --------
    >>> grid = tf.reshape(tf.range(4.0), (2, 2, 1))
    >>> image, label = augment_pair(grid, grid, seed=tf.constant([1, 2]))
    >>> bool(tf.reduce_all(image == label)), sorted(image.numpy().ravel().tolist())
    (True, [0.0, 1.0, 2.0, 3.0])
    """
    quarter_turns, flip_width, flip_height = tf.unstack(
        tf.random.stateless_uniform([3], seed=seed, minval=0, maxval=4, dtype=tf.int32)
    )

    def transform(tensor: tf.Tensor) -> tf.Tensor:
        tensor = tf.convert_to_tensor(tensor)
        static_shape = tensor.shape
        tensor = tf.image.rot90(tensor, k=quarter_turns)
        tensor = tf.cond(flip_width % 2 == 1, lambda: tf.reverse(tensor, axis=[-2]), lambda: tensor)
        tensor = tf.cond(flip_height % 2 == 1, lambda: tf.reverse(tensor, axis=[-3]), lambda: tensor)
        if static_shape.rank is not None and static_shape[-3] == static_shape[-2]:
            tensor = tf.ensure_shape(tensor, static_shape)  # square: the shape is unchanged
        return tensor

    return transform(image), transform(label)


def augment_intensity(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Randomise the intensities of a U-Net input slice as scanners and coils would.

    Every draw comes from ``seed`` alone. In turn: a gamma curve (exponent
    ``exp(U(-0.4, 0.4))``), a smooth multiplicative bias field (the exponential of a
    random second-order polynomial over the slice, up to about +-35 % at the edges:
    receive-coil sensitivity, the bright rim of an endorectal coil), a contrast change
    (x0.7 to x1.3 about the slice mean) with a brightness shift (+-0.1), and Gaussian
    noise (standard deviation up to 0.04); the result is clipped to [0, 1]. Only
    intensities change, so the mask keeps matching the image. It makes a network
    trained on phantoms rely less on their exact grey values (the spirit of
    synthetic-data training, where every contrast is drawn at random).

    Parameters
    ----------
    image : tf.Tensor, shape (H, W, 1), float
        A prepared slice, intensities in [0, 1] (:func:`prepare_unet_volume`).
    seed : tf.Tensor, shape (2,), int32 or int64
        Seed of the stateless random draws.

    Returns
    -------
    tf.Tensor
        The randomised slice, same shape, in [0, 1].

    Examples
    --------
    >>> ramp = tf.reshape(tf.linspace(0.0, 1.0, 64), (8, 8, 1))
    >>> out = augment_intensity(ramp, seed=tf.constant([3, 4]))
    >>> out.shape, bool(tf.reduce_min(out) >= 0.0), bool(tf.reduce_max(out) <= 1.0)
    (TensorShape([8, 8, 1]), True, True)
    >>> bool(tf.reduce_all(out == augment_intensity(ramp, seed=tf.constant([3, 4]))))
    True
    """
    image = tf.convert_to_tensor(image, tf.float32)
    seed = tf.cast(seed, tf.int64)
    draws = tf.random.stateless_uniform([9], seed=seed, minval=-1.0, maxval=1.0)
    image = tf.clip_by_value(image, 0.0, 1.0) ** tf.exp(0.4 * draws[0])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    y = tf.linspace(-1.0, 1.0, height)[:, None]
    x = tf.linspace(-1.0, 1.0, width)[None, :]
    log_field = 0.12 * (draws[1] * x + draws[2] * y + draws[3] * x * y
                        + draws[4] * (x * x - 1 / 3) + draws[5] * (y * y - 1 / 3))
    image = image * tf.exp(log_field)[..., None]
    mean = tf.reduce_mean(image)
    image = (image - mean) * (1.0 + 0.3 * draws[6]) + mean + 0.1 * draws[7]
    noise = tf.random.stateless_normal(tf.shape(image), seed=seed + 1) * 0.02 * (draws[8] + 1.0)
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def augment_stack_intensity(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Randomise the intensities of a Pix2Pix stack slice, each channel on its own.

    Each channel (z-scores, :func:`prepare_pix2pix_volume`) is mapped linearly onto
    [0, 1] by its minimum and maximum over the slice, randomised with
    :func:`augment_intensity` (gamma, bias field, contrast, noise) under a seed of its
    own derived from ``seed``, and mapped back to the mean and standard deviation it had
    on the slice. T2W, DWI and ADC thus get independent gamma curves and bias fields,
    as scans from other scanners and coils would show them.

    Parameters
    ----------
    image : tf.Tensor, shape (H, W, C), float
        A prepared stack slice.
    seed : tf.Tensor, shape (2,), int32 or int64
        Seed of the stateless random draws.

    Returns
    -------
    tf.Tensor
        The randomised slice, same shape; each channel keeps its mean and standard
        deviation over the slice (a constant channel stays as it is).

    Examples
    --------
    >>> ramps = tf.stack([tf.reshape(tf.linspace(-1.0, 1.0, 64), (8, 8))] * 3, axis=-1)
    >>> out = augment_stack_intensity(ramps, seed=tf.constant([3, 4]))
    >>> out.shape, [round(float(tf.math.reduce_std(out[..., c])), 3) for c in range(3)]
    (TensorShape([8, 8, 3]), [0.586, 0.586, 0.586])
    >>> bool(tf.reduce_any(out[..., 0] != out[..., 1]))  # the channels are randomised apart
    True
    """
    image = tf.convert_to_tensor(image, tf.float32)
    seed = tf.cast(seed, tf.int64)
    channels = []
    for channel in range(image.shape[-1]):
        values = image[..., channel:channel + 1]
        low, high = tf.reduce_min(values), tf.reduce_max(values)
        mean, std = tf.reduce_mean(values), tf.math.reduce_std(values)
        unit = (values - low) / tf.maximum(high - low, 1e-6)
        randomised = augment_intensity(unit, seed=seed + tf.constant([0, (channel + 1) << 36], tf.int64))
        spread = tf.math.reduce_std(randomised)
        channels.append((randomised - tf.reduce_mean(randomised)) * (std / tf.maximum(spread, 1e-6)) + mean)
    return tf.concat(channels, axis=-1)


def _bilinear(tensor: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """``tensor`` (H, W, C) sampled at fractional pixel positions (edges extended outside)."""
    last_row = tf.cast(tf.shape(tensor)[0] - 1, tf.float32)
    last_col = tf.cast(tf.shape(tensor)[1] - 1, tf.float32)
    rows, cols = tf.clip_by_value(rows, 0.0, last_row), tf.clip_by_value(cols, 0.0, last_col)
    top, left = tf.floor(rows), tf.floor(cols)
    fraction_row, fraction_col = (rows - top)[..., None], (cols - left)[..., None]
    bottom, right = tf.minimum(top + 1, last_row), tf.minimum(left + 1, last_col)

    def at(r, c):
        return tf.gather_nd(tensor, tf.cast(tf.stack([r, c], axis=-1), tf.int32))

    upper = at(top, left) * (1 - fraction_col) + at(top, right) * fraction_col
    lower = at(bottom, left) * (1 - fraction_col) + at(bottom, right) * fraction_col
    return upper * (1 - fraction_row) + lower * fraction_row


def augment_shape(
    image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Deform an image and its mask (binary or one-hot) with the same smooth random warp.

    Every draw comes from ``seed`` alone: an affine map about the slice centre (scale
    ``exp(U(-0.25, 0.25))`` along each axis, rotation up to +-20 degrees, shear up to
    +-0.1, shift up to +-8 % of the side) plus an elastic displacement (a random 4 x 4
    grid of offsets, up to about 4 % of the side, smoothly interpolated over the slice).
    Both tensors are sampled bilinearly (edge pixels extended outside); a one-channel
    mask is then thresholded at 0.5, so it stays binary and follows the warped image, and
    a one-hot label map (several channels) gets the most probable class of each pixel,
    so it stays one-hot. It makes a network trained on few phantom patients see many
    more gland shapes, sizes and positions.

    Parameters
    ----------
    image, label : tf.Tensor, shape (H, W, C)
        A prepared slice and its binary mask (values 0 and 1) or one-hot label map, on
        the same grid.
    seed : tf.Tensor, shape (2,), int32 or int64
        Seed of the stateless random draws; the same seed gives the same warp.

    Returns
    -------
    image, label : tf.Tensor
        Warped copies, same shapes; the label holds 0 and 1 only (one 1 per pixel for
        a one-hot label map).

    Examples
    --------
    >>> square = np.zeros((32, 32, 1), np.float32)
    >>> square[10:22, 10:22] = 1.0
    >>> image, label = augment_shape(square, square, seed=tf.constant([1, 2]))
    >>> image.shape, sorted(np.unique(label.numpy()).tolist())
    (TensorShape([32, 32, 1]), [0.0, 1.0])
    >>> bool(tf.reduce_all(label == augment_shape(square, square, seed=tf.constant([1, 2]))[1]))
    True
    """
    image = tf.convert_to_tensor(image, tf.float32)
    label = tf.convert_to_tensor(label, tf.float32)
    seed = tf.cast(seed, tf.int64)
    draws = tf.random.stateless_uniform([7], seed=seed, minval=-1.0, maxval=1.0)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    size = tf.cast(tf.stack([height, width]), tf.float32)
    centre = (size - 1) / 2
    rows, cols = tf.meshgrid(tf.range(size[0]) - centre[0], tf.range(size[1]) - centre[1], indexing="ij")
    # Output pixel -> input position: the inverse of scale, shear and rotation, then a shift.
    scale_row, scale_col = tf.exp(-0.25 * draws[0]), tf.exp(-0.25 * draws[1])
    angle = np.pi / 9 * draws[2]
    shear = 0.1 * draws[3]
    cos, sin = tf.cos(angle), tf.sin(angle)
    turned_rows = cos * rows - sin * cols
    turned_cols = sin * rows + cos * cols
    source_rows = scale_row * (turned_rows + shear * turned_cols) + 0.08 * draws[4] * size[0]
    source_cols = scale_col * turned_cols + 0.08 * draws[5] * size[1]
    offsets = tf.random.stateless_normal([4, 4, 2], seed=seed + 1) * (0.02 * (draws[6] + 1.0))
    displacement = tf.image.resize(offsets, tf.stack([height, width]), method="bicubic") * size
    source_rows += displacement[..., 0] + centre[0]
    source_cols += displacement[..., 1] + centre[1]
    warped_image = _bilinear(image, source_rows, source_cols)
    sampled = _bilinear(label, source_rows, source_cols)
    if label.shape[-1] == 1:
        warped_label = tf.cast(sampled >= 0.5, tf.float32)
    else:
        warped_label = tf.one_hot(tf.argmax(sampled, axis=-1), label.shape[-1], dtype=tf.float32)
    return tf.ensure_shape(warped_image, image.shape), tf.ensure_shape(warped_label, label.shape)


# --- streaming ----------------------------------------------------------------------


def _checked_cases(cases: Sequence[Case], names: Sequence[str]) -> list[Case]:
    """The cases as a list, raising InputError for a case that lacks one of ``names``."""
    cases = list(cases)
    if not cases:
        raise ValueError("no cases given")
    for case in cases:
        for name in names:
            case.path(name)
    return cases


def _checked_label(label: str) -> str:
    if label not in MASKS:
        raise ValueError(f"label must be one of {MASKS}, got {label!r}")
    return label


def _volumes(
    cases: list[Case],
    load_case: Callable[[Case], tuple[np.ndarray, np.ndarray]],
    channels: tuple[int, int],
    image_size: int,
    indices: tf.data.Dataset | None = None,
) -> tf.data.Dataset:
    """Prepared (image, label) volumes of ``cases[i]`` for each ``i`` of ``indices``
    (all cases in order by default), one case per parallel map call."""
    signature = [tf.TensorSpec((None, image_size, image_size, n), tf.float32) for n in channels]

    def load(index: np.int64) -> tuple[np.ndarray, np.ndarray]:
        return load_case(cases[int(index)])

    def load_tensors(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        arrays = tf.numpy_function(load, [index], [spec.dtype for spec in signature], stateful=False)
        return tuple(tf.ensure_shape(array, spec.shape) for array, spec in zip(arrays, signature))

    indices = tf.data.Dataset.range(len(cases)) if indices is None else indices
    return indices.map(load_tensors, num_parallel_calls=_AUTOTUNE, deterministic=True)


def _slice_stream(
    cases: list[Case],
    load_case: Callable[[Case], tuple[np.ndarray, np.ndarray]],
    channels: tuple[int, int],
    image_size: int,
    *,
    shuffle: bool,
    shuffle_buffer: int,
    seed: int,
    cache: bool = False,
    cached_volumes: tf.data.Dataset | None = None,
) -> tf.data.Dataset:
    """(image, label) slices of all cases, loading one case per parallel map call.

    With ``cache``, the prepared volumes are kept in memory after the first pass, and
    later epochs shuffle the cached volumes instead of reading the files again.
    ``cached_volumes`` (a cached :func:`_volumes` of the same cases) shares that
    memory between streams, e.g. one per epoch.
    """
    if cache or cached_volumes is not None:
        volumes = _volumes(cases, load_case, channels, image_size).cache() if cached_volumes is None \
            else cached_volumes
        if shuffle:
            volumes = volumes.shuffle(len(cases), seed=seed, reshuffle_each_iteration=True)
    else:
        indices = tf.data.Dataset.range(len(cases))
        if shuffle:
            indices = indices.shuffle(len(cases), seed=seed, reshuffle_each_iteration=True)
        volumes = _volumes(cases, load_case, channels, image_size, indices)
    slices = volumes.unbatch()
    if shuffle:
        slices = slices.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return slices


def _has_foreground(image: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_any(mask > 0)


def _finish(dataset: tf.data.Dataset, *, augment: bool, seed: int, batch_size: int,
            intensity: bool = False, shape: bool = False) -> tf.data.Dataset:
    """Augment (seeded by each element's position), batch and prefetch."""
    if augment or intensity or shape:
        def transform(index, pair):
            image, label = pair
            element_seed = tf.stack([tf.constant(seed, tf.int64), index])
            if augment:
                image, label = augment_pair(image, label, seed=element_seed)
            if shape:
                shape_seed = element_seed + tf.constant([0, 1 << 41], tf.int64)
                image, label = augment_shape(image, label, seed=shape_seed)
            if intensity:
                randomise = augment_intensity if image.shape[-1] == 1 else augment_stack_intensity
                image = randomise(image, seed=element_seed + tf.constant([0, 1 << 40], tf.int64))
            return image, label

        dataset = dataset.enumerate().map(transform, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(_AUTOTUNE)


def _one_cache(cache: bool, slice_cache) -> None:
    if cache and slice_cache is not None:
        raise ValueError("give cache (prepared volumes in memory) or slice_cache "
                         "(prepared slices on disk), not both")


def _positive(value: int, name: str) -> int:
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def count_slices(
    cases: Sequence[Case],
    *,
    label: str = "lesion",
    drop_empty: bool = False,
    image_size: int = UNET_IMAGE_SIZE,
    target_spacing: float | None = None,
    slice_cache: str | os.PathLike | None = None,
) -> int:
    """Number of slices :func:`unet_dataset` yields per epoch for the same arguments.

    Without ``drop_empty`` only the T2W headers are read. With it every mask is read
    and prepared, because a slice counts only when foreground remains after the
    centre pad/crop to ``image_size``; with ``slice_cache`` the counts recorded there
    are read instead.

    Parameters
    ----------
    cases : sequence of Case
        Cases with a ``t2w`` and a ``label`` file.
    label : {"lesion", "zones", "gland"}, optional
        The mask file of each case.
    drop_empty : bool, optional
        Count only slices with foreground.
    image_size, target_spacing, slice_cache : optional
        As for :func:`unet_dataset`.

    Returns
    -------
    int

    Raises
    ------
    InputError
        Naming the case folder when a case has no ``label`` file.

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.data.dataset import discover_cases
    >>> from prostseg.data.phantom import write_phantom_dataset
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_phantom_dataset(folder, n_cases=2, shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))
    >>> cases = discover_cases(folder)
    >>> count_slices(cases)
    24
    >>> count_slices(cases, drop_empty=True) < 24
    True
    """
    cases = _checked_cases(cases, ("t2w", _checked_label(label)))
    if slice_cache is not None:
        spec = SliceSpec("unet", image_size, target_spacing, label)
        return cached_slice_counts(cases, spec, slice_cache, foreground=drop_empty)
    if not drop_empty:
        return sum(volume_grid(case.path("t2w"))[0][2] for case in cases)
    total = 0
    for case in cases:
        mask = prepare_unet_mask(case_labels(case, label), image_size,
                                 target_spacing=target_spacing)
        total += int(np.count_nonzero(mask.any(axis=(1, 2, 3))))
    return total


def unet_dataset(
    cases: Sequence[Case],
    *,
    image_size: int = UNET_IMAGE_SIZE,
    batch_size: int = 8,
    label: str = "lesion",
    shuffle: bool = True,
    augment: bool = False,
    drop_empty: bool = False,
    foreground_fraction: float | None = None,
    seed: int = 0,
    repeat: bool = False,
    shuffle_buffer: int = 256,
    cache: bool = False,
    target_spacing: float | None = None,
    intensity_augment: bool = False,
    shape_augment: bool = False,
    slice_cache: str | os.PathLike | None = None,
) -> tf.data.Dataset:
    """Stream (T2W slice, mask slice) batches for U-Net training or evaluation.

    Each case's ``t2w`` and ``label`` files are read with
    :func:`prostseg.data.io.load_volume`, checked to share a grid, prepared with
    :func:`prepare_unet_volume` and :func:`prepare_unet_mask` and cut into slices.

    Parameters
    ----------
    cases : sequence of Case
        The cases to stream (e.g. the training part of a patient-level split).
    image_size : int, optional
        Side of the square slices.
    batch_size : int, optional
        Slices per batch; the last batch of an epoch may be smaller.
    label : {"lesion", "zones"}, optional
        The mask file to use; non-zero voxels are foreground (``"zones"`` gives a
        whole-gland mask).
    shuffle : bool, optional
        Shuffle case order and slices (buffer of ``shuffle_buffer`` slices), anew every
        epoch. Without it slices come in case order, slice ``k = 0, 1, ...``.
    augment : bool, optional
        Apply :func:`augment_pair` with a seed derived from ``seed`` and the slice's
        position in the stream.
    drop_empty : bool, optional
        Yield only slices with foreground.
    foreground_fraction : float, optional
        Oversample foreground: draw each slice from the foreground slices with this
        probability (``0 < p < 1``) and from the empty slices otherwise. The dataset is
        then infinite (``repeat`` is implied); set ``steps_per_epoch`` when training.
    seed : int, optional
        Seed of every random choice; the same seed gives the same batches.
    repeat : bool, optional
        Repeat the epochs forever.
    shuffle_buffer : int, optional
        Size of the slice shuffle buffer (memory: ``2 * 4 * image_size**2`` bytes per slice).
    cache : bool, optional
        Keep the prepared volumes in memory after the first epoch instead of reading
        and preparing every file again each epoch (``2 * 4 * image_size**2`` bytes per
        slice, about 1.2 MB at 384, twice with ``foreground_fraction``). Several times
        faster from the second epoch on (``benchmarks/input_pipeline.py``); use it when
        the training set fits in memory.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) before the centre pad/crop
        (:func:`prepare_unet_volume`); by default slices keep their own spacing.
    intensity_augment : bool, optional
        Randomise the intensities of every training slice with
        :func:`augment_intensity` (after ``augment``'s rotation and flip and
        ``shape_augment``'s warp), seeded like ``augment``.
    shape_augment : bool, optional
        Warp every training slice and its mask together with :func:`augment_shape`
        (random scale, rotation, shear, shift and elastic deformation; after
        ``augment``), seeded like ``augment``.
    slice_cache : path, optional
        Stream the prepared slices from this cache folder (written by
        :func:`prostseg.preparation.slice_cache.prepare_dataset`, ``prostseg prepare``, with the
        same ``image_size``, ``target_spacing`` and ``label``) instead of preparing
        the files: several times faster every epoch, with memory that does not grow
        with the data set. The slices are those of the uncached stream (images
        rounded to float16, masks exact) in the same order without ``shuffle``;
        shuffling and augmentation work alike. Not with ``cache``.

    Returns
    -------
    tf.data.Dataset
        Batches ``(image, mask)``, both float32 of shape ``(B, image_size, image_size, 1)``;
        images in ``[0, 1]``, masks 0 or 1.

    Raises
    ------
    InputError
        Naming the case folder when a case lacks its ``t2w`` or ``label`` file, or
        (with ``slice_cache``) has no up-to-date prepared slices there. A
        mask off the T2W grid is reported, with its path, when the stream reaches it.
    ValueError
        For invalid arguments, or ``foreground_fraction`` when the cases hold no
        foreground or no empty slice.

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.data.dataset import discover_cases
    >>> from prostseg.data.phantom import write_phantom_dataset
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_phantom_dataset(folder, n_cases=1, shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))
    >>> dataset = unet_dataset(discover_cases(folder), image_size=64, batch_size=4, shuffle=False)
    >>> [tuple(image.shape) for image, mask in dataset]
    [(4, 64, 64, 1), (4, 64, 64, 1), (4, 64, 64, 1)]
    """
    label = _checked_label(label)
    cases = _checked_cases(cases, ("t2w", label))
    image_size, batch_size = _positive(image_size, "image_size"), _positive(batch_size, "batch_size")
    shuffle_buffer = _positive(shuffle_buffer, "shuffle_buffer")
    _one_cache(cache, slice_cache)

    def stream() -> tf.data.Dataset:
        if slice_cache is not None:
            spec = SliceSpec("unet", image_size, target_spacing, label)
            return cached_slices(cases, spec, slice_cache, shuffle=shuffle,
                                 shuffle_buffer=shuffle_buffer, seed=seed)
        return _slice_stream(
            cases,
            lambda case: UNET_SLICING.prepare_case(case, label, image_size, target_spacing=target_spacing),
            (1, 1),
            image_size,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            cache=cache,
        )

    if foreground_fraction is None:
        slices = stream()
        if drop_empty:
            slices = slices.filter(_has_foreground)
        if repeat:
            slices = slices.repeat()
    else:
        if drop_empty:
            raise ValueError("give drop_empty or foreground_fraction, not both")
        if not 0 < foreground_fraction < 1:
            raise ValueError(
                f"foreground_fraction must lie strictly between 0 and 1, got {foreground_fraction}; "
                "use drop_empty=True for foreground slices only"
            )
        n_foreground = count_slices(cases, label=label, drop_empty=True, image_size=image_size,
                                    target_spacing=target_spacing, slice_cache=slice_cache)
        n_total = count_slices(cases, label=label, image_size=image_size,
                               target_spacing=target_spacing, slice_cache=slice_cache)
        if n_foreground in (0, n_total):
            kind = "no slice with" if n_foreground == 0 else "no slice without"
            raise ValueError(f"foreground_fraction needs both kinds of slices, but the {len(cases)} cases have "
                             f"{kind} {label} foreground")
        foreground = stream().filter(_has_foreground).repeat()
        empty = stream().filter(lambda image, mask: tf.logical_not(_has_foreground(image, mask))).repeat()
        slices = tf.data.Dataset.sample_from_datasets(
            [foreground, empty], weights=[foreground_fraction, 1 - foreground_fraction], seed=seed
        )
    return _finish(slices, augment=augment, seed=seed, batch_size=batch_size,
                   intensity=intensity_augment, shape=shape_augment)


def pix2pix_dataset(
    cases: Sequence[Case],
    *,
    image_size: int = PIX2PIX_IMAGE_SIZE,
    batch_size: int = 1,
    augment: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 256,
    target_spacing: float | None = None,
    cache: bool = False,
    slice_cache: str | os.PathLike | None = None,
    intensity_augment: bool = False,
    shape_augment: bool = False,
) -> tf.data.Dataset:
    """Stream (registered stack slice, one-hot zone slice) batches for Pix2Pix.

    Each case's ``aligned/stack`` (written by
    :func:`prostseg.preparation.registration.register_case`) and ``zones`` files are read,
    checked to share a grid and prepared with :func:`prepare_pix2pix_volume` and
    :func:`prepare_zone_labels`.

    Parameters
    ----------
    cases : sequence of Case
        Registered cases with zone labels.
    image_size : int, optional
        Side of the square slices.
    batch_size : int, optional
        Slices per batch (the Pix2Pix recipe uses 1).
    augment : bool, optional
        Apply :func:`augment_pair` (quarter turns and flips) to stack and zones alike.
    shuffle : bool, optional
        Shuffle case order and slices, anew every epoch.
    seed : int, optional
        Seed of every random choice.
    shuffle_buffer : int, optional
        Size of the slice shuffle buffer.
    target_spacing : float, optional
        Resample every slice to pixels of this size (mm) and centre pad or crop it to
        ``image_size`` (:func:`prepare_pix2pix_volume`); by default slices are resized.
    cache : bool, optional
        Keep the prepared volumes in memory after the first pass over the dataset, as
        for :func:`unet_dataset`; see :func:`pix2pix_epochs` to share them between the
        streams of several epochs.
    slice_cache : path, optional
        Stream the prepared slices from this cache folder (``prostseg prepare --model
        pix2pix`` with the same ``image_size`` and ``target_spacing``), as for
        :func:`unet_dataset` (stacks rounded to float16, zones exact). Not with ``cache``.
    intensity_augment : bool, optional
        Randomise the intensities of every stack slice, each channel on its own
        (:func:`augment_stack_intensity`, after ``augment``'s turn and flip), seeded like
        ``augment``; the zones do not change.
    shape_augment : bool, optional
        Warp every stack slice and its zones together with :func:`augment_shape`
        (after ``augment``, before ``intensity_augment``), seeded like ``augment``.

    Returns
    -------
    tf.data.Dataset
        Batches ``(stack, zones)``: float32 ``(B, H, W, 3)`` z-scores and float32
        ``(B, H, W, 5)`` one-hot labels.

    Raises
    ------
    InputError
        Naming the case folder when a case has no ``zones`` file, or no registered
        stack (then run ``prostseg register-case`` on it first).

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.data.dataset import Case
    >>> pix2pix_dataset([Case("p1", tempfile.gettempdir(), {"zones": "zones.nii.gz"})])
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...: case p1 has no registered stack ...; run `prostseg register-case ...` first
    """
    return next(pix2pix_epochs(
        cases, image_size=image_size, batch_size=batch_size, augment=augment, shuffle=shuffle, seed=seed,
        shuffle_buffer=shuffle_buffer, target_spacing=target_spacing, cache=cache,
        slice_cache=slice_cache, intensity_augment=intensity_augment, shape_augment=shape_augment,
    ))


def pix2pix_epochs(
    cases: Sequence[Case],
    *,
    first_epoch: int = 0,
    image_size: int = PIX2PIX_IMAGE_SIZE,
    batch_size: int = 1,
    augment: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 256,
    target_spacing: float | None = None,
    cache: bool = False,
    slice_cache: str | os.PathLike | None = None,
    intensity_augment: bool = False,
    shape_augment: bool = False,
) -> Iterator[tf.data.Dataset]:
    """Yield one :func:`pix2pix_dataset` per epoch, epoch ``e`` seeded by ``seed + e``.

    The stream of an epoch depends on nothing but its number, so a run resumed at
    epoch ``e`` (``first_epoch=e``) sees exactly the slices, order and augmentation
    an uninterrupted run sees there. With ``cache`` the prepared volumes are read
    once, during the first epoch, and every later epoch shuffles them in memory.

    Parameters
    ----------
    cases : sequence of Case
        Registered cases with zone labels.
    first_epoch : int, optional
        Number of the first epoch yielded.
    image_size, batch_size, augment, shuffle, seed, shuffle_buffer, target_spacing, cache
        As for :func:`pix2pix_dataset` (``seed`` is the seed of epoch 0).
    slice_cache : path, optional
        As for :func:`pix2pix_dataset`: every epoch streams the prepared slices on disk.
    intensity_augment, shape_augment : bool, optional
        As for :func:`pix2pix_dataset`.

    Yields
    ------
    tf.data.Dataset
        The batches of epochs ``first_epoch``, ``first_epoch + 1``, ... (endlessly).

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.data.dataset import Case
    >>> epochs = pix2pix_epochs([Case("p1", tempfile.gettempdir(), {"zones": "zones.nii.gz"})])
    >>> next(epochs)
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: ...: case p1 has no registered stack ...; run `prostseg register-case ...` first
    """
    cases = _checked_cases(cases, ("zones",))
    for case in cases:
        PIX2PIX_SLICING.input_path(case)
    image_size, batch_size = _positive(image_size, "image_size"), _positive(batch_size, "batch_size")
    shuffle_buffer = _positive(shuffle_buffer, "shuffle_buffer")
    _one_cache(cache, slice_cache)
    if slice_cache is not None:
        spec = SliceSpec("pix2pix", image_size, target_spacing)
        for epoch in itertools.count(operator.index(first_epoch)):
            slices = cached_slices(cases, spec, slice_cache, shuffle=shuffle,
                                   shuffle_buffer=shuffle_buffer, seed=seed + epoch)
            yield _finish(slices, augment=augment, seed=seed + epoch, batch_size=batch_size,
                          intensity=intensity_augment, shape=shape_augment)
    stream = dict(load_case=lambda case: PIX2PIX_SLICING.prepare_case(case, "zones", image_size,
                                                                   target_spacing=target_spacing),
                  channels=(3, NUM_ZONE_CLASSES), image_size=image_size)
    cached_volumes = _volumes(cases, **stream).cache() if cache else None
    epoch = operator.index(first_epoch)
    while True:
        slices = _slice_stream(cases, **stream, shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed + epoch,
                               cached_volumes=cached_volumes)
        yield _finish(slices, augment=augment, seed=seed + epoch, batch_size=batch_size,
                      intensity=intensity_augment, shape=shape_augment)
        epoch += 1
