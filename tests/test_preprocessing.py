"""Tests of prostseg.preparation.preprocessing: geometry, intensity normalisation and one-hot labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prostseg.errors import InputError
from prostseg.preparation.preprocessing import (
    center_pad_crop,
    clip_percentiles,
    labels_from_one_hot,
    minmax_normalize,
    one_hot,
    resize_image,
    resize_labels,
    zscore_normalize,
)

FEW = settings(max_examples=50, deadline=None)

in_plane_lengths = st.integers(1, 24)
sizes = st.tuples(in_plane_lengths, in_plane_lengths)
trailing_shapes = st.sampled_from([(), (1,), (3,), (2, 3)])
finite_float32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def images(draw, elements=finite_float32, dtype=np.float32):
    """Slices or volumes of shape (H, W, ...) with random values."""
    shape = draw(sizes) + draw(trailing_shapes)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def label_maps(draw):
    """Label maps with a random integer dtype and a few random label values."""
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.int32, np.uint16]))
    values = draw(st.lists(st.integers(0, 200), min_size=1, max_size=5, unique=True))
    shape = draw(sizes) + draw(trailing_shapes)
    return draw(hnp.arrays(dtype, shape, elements=st.sampled_from(values)))


def _kept(length: int, target: int) -> slice:
    """Region of an axis of ``length`` that survives a centre crop to ``target``."""
    if target >= length:
        return slice(None)
    start = (length - target) // 2
    return slice(start, start + target)


# --- centre pad / crop -----------------------------------------------------------------


@FEW
@given(image=images(elements=st.integers(1, 100), dtype=np.int16), size=sizes)
def test_center_pad_crop_round_trip_restores_the_kept_region(image, size):
    there = center_pad_crop(image, size, pad_value=-1)
    back = center_pad_crop(there, image.shape[:2], pad_value=-1)

    assert there.shape == size + image.shape[2:]
    assert back.shape == image.shape and back.dtype == image.dtype
    kept = (_kept(image.shape[0], size[0]), _kept(image.shape[1], size[1]))
    np.testing.assert_array_equal(back[kept], image[kept])
    lost = np.ones(image.shape, dtype=bool)
    lost[kept] = False
    assert np.all(back[lost] == -1)


@FEW
@given(image=images(elements=st.integers(1, 100), dtype=np.int16), size=sizes)
def test_center_pad_crop_puts_the_odd_pixel_after(image, size):
    out = center_pad_crop(image, size)
    starts = []
    for length, target in zip(image.shape[:2], size):
        starts.append(max(target - length, 0) // 2)  # where the original starts in the output
    region = out[starts[0] : starts[0] + image.shape[0], starts[1] : starts[1] + image.shape[1]]
    kept = (_kept(image.shape[0], size[0]), _kept(image.shape[1], size[1]))
    np.testing.assert_array_equal(region, image[kept])
    assert np.count_nonzero(out) == region.size  # everything else is padding


def test_center_pad_crop_odd_differences_by_hand():
    column = np.array([1, 2, 3])[:, np.newaxis]
    np.testing.assert_array_equal(center_pad_crop(column, (6, 1))[:, 0], [0, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(center_pad_crop(np.arange(5)[:, np.newaxis], (2, 1))[:, 0], [1, 2])


def test_center_pad_crop_pads_and_crops_different_axes_and_keeps_slices():
    volume = np.arange(5 * 8 * 3, dtype=np.float32).reshape(5, 8, 3)
    out = center_pad_crop(volume, (8, 5))
    assert out.shape == (8, 5, 3)
    for k in range(3):
        np.testing.assert_array_equal(out[..., k], center_pad_crop(volume[..., k], (8, 5)))
    np.testing.assert_array_equal(out[1:6, :, 0], volume[:, 1:6, 0])


def test_center_pad_crop_int_size_means_square():
    assert center_pad_crop(np.ones((3, 7)), 384).shape == (384, 384)


@pytest.mark.parametrize("size", [0, (4, 0), (4, 4, 4), -2])
def test_center_pad_crop_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="size"):
        center_pad_crop(np.ones((3, 3)), size)


def test_center_pad_crop_rejects_1d_input():
    with pytest.raises(ValueError, match="at least 2"):
        center_pad_crop(np.ones(4), 4)


# --- resizing ------------------------------------------------------------------------


@FEW
@given(labels=label_maps(), size=sizes)
def test_resize_labels_never_invents_values_and_keeps_dtype(labels, size):
    out = resize_labels(labels, size)
    assert out.shape == size + labels.shape[2:]
    assert out.dtype == labels.dtype
    assert set(np.unique(out)) <= set(np.unique(labels))


@FEW
@given(labels=label_maps(), factor=st.integers(1, 4))
def test_resize_labels_integer_upsampling_repeats_pixels(labels, factor):
    size = (labels.shape[0] * factor, labels.shape[1] * factor)
    expected = np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1)
    np.testing.assert_array_equal(resize_labels(labels, size), expected)


@FEW
@given(shape=sizes, trailing=trailing_shapes, value=finite_float32, size=sizes)
def test_resize_image_of_a_constant_stays_constant(shape, trailing, value, size):
    out = resize_image(np.full(shape + trailing, value, dtype=np.float32), size)
    assert out.shape == size + trailing and out.dtype == np.float32
    assert np.all(out == np.float32(value))


@FEW
@given(half=st.tuples(st.integers(1, 12), st.integers(1, 12)), trailing=trailing_shapes, data=st.data())
def test_resize_image_halving_averages_pixel_pairs(half, trailing, data):
    height, width = half
    image = data.draw(hnp.arrays(np.float32, (2 * height, 2 * width) + trailing, elements=finite_float32))
    blocks = image.astype(np.float64).reshape((height, 2, width, 2) + trailing)
    np.testing.assert_allclose(resize_image(image, half), blocks.mean(axis=(1, 3)), rtol=1e-6, atol=1e-3)


def test_resize_image_acts_on_each_slice_and_channel_alone():
    rng = np.random.default_rng(0)
    volume = rng.random((6, 9, 4, 2))
    out = resize_image(volume, (11, 5))
    for k in range(4):
        for c in range(2):
            np.testing.assert_array_equal(out[..., k, c], resize_image(volume[..., k, c], (11, 5)))


def test_resize_image_same_size_is_identity():
    image = np.random.default_rng(1).random((7, 5)).astype(np.float32)
    np.testing.assert_array_equal(resize_image(image, image.shape), image)
    np.testing.assert_array_equal(resize_labels(image, image.shape), image)


def test_resize_image_matches_scipy_zoom_with_grid_mode():
    ndimage = pytest.importorskip("scipy.ndimage")
    image = np.random.default_rng(2).random((13, 7, 2))
    for size in [(5, 16), (26, 7), (3, 3)]:
        zoom = (size[0] / 13, size[1] / 7, 1)
        expected = ndimage.zoom(image, zoom, order=1, grid_mode=True, mode="nearest")
        np.testing.assert_allclose(resize_image(image, size), expected, atol=1e-6)


# --- intensity normalisation -----------------------------------------------------------


@FEW
@given(image=images())
def test_minmax_normalize_maps_into_unit_range(image):
    out = minmax_normalize(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.all(np.isfinite(out))
    assert np.all((out >= 0) & (out <= 1))
    if image.min() == image.max():
        assert np.all(out == 0)
    else:
        assert out.min() == 0 and out.max() == 1
        order = np.argsort(image, axis=None)
        assert np.all(np.diff(out.ravel()[order]) >= 0)  # order kept (ties may appear in float32)


@pytest.mark.parametrize("value", [0.0, 5.0, -3.5])
def test_minmax_normalize_of_a_blank_slice_is_zeros(value):
    out = minmax_normalize(np.full((384, 384), value))
    assert out.dtype == np.float32 and not np.any(out)


def test_minmax_normalize_per_volume_keeps_a_blank_slice_blank():
    volume = np.stack([np.zeros((4, 4)), np.full((4, 4), 2.0), np.full((4, 4), 4.0)], axis=-1)
    out = minmax_normalize(volume)
    np.testing.assert_array_equal(out[..., 0], 0)
    np.testing.assert_array_equal(out[..., 1], 0.5)
    np.testing.assert_array_equal(out[..., 2], 1)


def test_minmax_normalize_per_channel():
    stack = np.stack([np.arange(4.0), 10 * np.arange(4.0) + 3, np.full(4, 7.0)], axis=-1)
    out = minmax_normalize(stack, channel_axis=-1)
    np.testing.assert_allclose(out[:, 0], out[:, 1])
    np.testing.assert_allclose(out[:, 0], [0, 1 / 3, 2 / 3, 1], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 2], 0)


@FEW
@given(image=images(), channel_axis=st.sampled_from([None, 0, -1]))
def test_zscore_normalize_gives_zero_mean_unit_std(image, channel_axis):
    out = zscore_normalize(image, channel_axis=channel_axis)
    assert out.dtype == np.float32 and out.shape == image.shape and np.all(np.isfinite(out))
    per_channel = np.moveaxis(out, channel_axis, 0) if channel_axis is not None else out[np.newaxis]
    originals = np.moveaxis(image, channel_axis, 0) if channel_axis is not None else image[np.newaxis]
    for channel, original in zip(per_channel, originals):
        if original.min() == original.max():
            assert np.all(channel == 0)
        else:
            assert abs(channel.astype(np.float64).mean()) < 1e-4
            assert abs(channel.astype(np.float64).std() - 1) < 1e-4


def test_zscore_normalize_takes_statistics_inside_the_mask():
    rng = np.random.default_rng(3)
    image = rng.normal(50, 10, (8, 8, 2))
    image[:4] = 1000  # outside the mask
    mask = np.zeros((8, 8), dtype=bool)
    mask[4:] = True
    out = zscore_normalize(image, mask=mask, channel_axis=-1)
    inside = out[4:].reshape(-1, 2)
    np.testing.assert_allclose(inside.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(inside.std(axis=0), 1, atol=1e-5)
    assert np.all(out[:4] > 10)


def test_zscore_normalize_of_a_constant_float32_volume_is_exact_zeros():
    assert not np.any(zscore_normalize(np.full((5, 5, 3), 0.1, dtype=np.float32)))


@FEW
@given(image=images(), low=st.floats(0, 50), high=st.floats(50, 100))
def test_clip_percentiles_preserves_order_and_range(image, low, high):
    out = clip_percentiles(image, low, high)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.min() >= image.min() and out.max() <= image.max()
    flat_in, flat_out = image.ravel(), out.ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= 0)


def test_clip_percentiles_tames_a_bright_outlier_only():
    image = np.arange(1000, dtype=np.float32)
    image[-1] = 1e6
    out = clip_percentiles(image, 0, 99)
    assert out[-1] < 1000
    np.testing.assert_array_equal(out[:990], image[:990])


def test_clip_percentiles_with_full_range_is_identity():
    image = np.random.default_rng(4).normal(size=(6, 6)).astype(np.float32)
    np.testing.assert_array_equal(clip_percentiles(image, 0, 100), image)


def test_clip_percentiles_takes_percentiles_inside_the_mask():
    image = np.full((4, 4), 1000.0)
    image[:2] = np.arange(8).reshape(2, 4)
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    out = clip_percentiles(image, 0, 100, mask=mask)
    np.testing.assert_array_equal(out[2:], 7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"low": 60, "high": 40}, "low <= high"),
        ({"high": 101}, "low <= high"),
        ({"mask": np.ones((2, 2), dtype=bool)}, "mask shape"),
        ({"mask": np.zeros((3, 3), dtype=bool)}, "no voxels"),
    ],
)
def test_clip_percentiles_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        clip_percentiles(np.ones((3, 3)), **kwargs)


@pytest.mark.parametrize("normalise", [minmax_normalize, zscore_normalize, clip_percentiles])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_normalisers_reject_nan_and_inf(normalise, bad):
    image = np.ones((4, 4))
    image[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        normalise(image)


def test_zscore_normalize_rejects_a_mismatched_or_empty_mask():
    with pytest.raises(ValueError, match="mask shape"):
        zscore_normalize(np.ones((4, 4, 3)), mask=np.ones((4, 4, 3), dtype=bool), channel_axis=-1)
    with pytest.raises(ValueError, match="no voxels"):
        zscore_normalize(np.ones((4, 4)), mask=np.zeros((4, 4), dtype=bool))


def test_channel_axis_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="channel_axis"):
        minmax_normalize(np.ones((2, 2)), channel_axis=2)


# --- one-hot -------------------------------------------------------------------------


@FEW
@given(data=st.data(), num_classes=st.integers(1, 6))
def test_one_hot_round_trip(data, num_classes):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=6))
    dtype = data.draw(st.sampled_from([np.uint8, np.int32, np.int64, np.float32]))
    labels = data.draw(hnp.arrays(dtype, shape, elements=st.integers(0, num_classes - 1)))
    encoded = one_hot(labels, num_classes)
    assert encoded.shape == shape + (num_classes,) and encoded.dtype == np.float32
    assert set(np.unique(encoded)) <= {0.0, 1.0}
    np.testing.assert_array_equal(encoded.sum(axis=-1), 1)
    np.testing.assert_array_equal(labels_from_one_hot(encoded), labels)


def test_one_hot_puts_the_one_at_the_label_index():
    encoded = one_hot(np.array([[4, 0], [2, 2]], dtype=np.uint8), 5)
    assert encoded[0, 0, 4] == 1 and encoded[0, 1, 0] == 1 and encoded[1, 1, 2] == 1
    assert encoded.sum() == 4


@pytest.mark.parametrize(
    "labels, named",
    [(np.array([0, 1, 5, 7]), ["5", "7"]), (np.array([0, -1]), ["-1"]), (np.array([0.0, 1.5]), ["1.5"])],
)
def test_one_hot_names_invalid_labels(labels, named):
    with pytest.raises(InputError, match="0..2") as raised:
        one_hot(labels, 3)
    assert raised.value.path is None
    for value in named:
        assert value in raised.value.problem


def test_one_hot_rejects_non_numeric_labels_and_bad_class_counts():
    with pytest.raises(InputError, match="numeric"):
        one_hot(np.array(["a", "b"]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        one_hot(np.array([0]), 0)


def test_labels_from_one_hot_takes_the_most_likely_class():
    probabilities = np.array([[0.1, 0.2, 0.6, 0.05, 0.05], [0.9, 0.0, 0.0, 0.0, 0.1]], dtype=np.float32)
    labels = labels_from_one_hot(probabilities)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [2, 0])


def test_labels_from_one_hot_rejects_nan_and_missing_class_axis():
    with pytest.raises(ValueError, match="NaN"):
        labels_from_one_hot(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="class axis"):
        labels_from_one_hot(np.float32(1.0))
