"""Property tests (hypothesis): reading volumes and the preprocessing round trips.

* Any 3D array in any axis order and direction reads back, through
  :func:`prostseg.data.io.load_volume`, as the same voxels in RAS+ order, and
  :func:`prostseg.data.io.save_like` writes it back exactly as the file held it.
* Bad voxels (NaN, infinity, fractional or negative labels) anywhere always give an
  ``InputError`` naming the file, never another exception.
* Centre pad/crop, U-Net slice preparation and one-hot encoding undo exactly.
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from prostseg.errors import InputError
from prostseg.data.io import load_volume, save_like
from prostseg.preparation.slices import prepare_unet_mask, restore_unet_slices
from prostseg.preparation.preprocessing import center_pad_crop, labels_from_one_hot, minmax_normalize, one_hot, resize_labels

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
shapes = st.tuples(*[st.integers(1, 6)] * 3)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def orientations(draw):
    """A voxel-to-world affine with permuted, possibly flipped axes and positive spacings."""
    order = draw(st.permutations(range(3)))
    signs = draw(st.tuples(*[st.sampled_from((-1.0, 1.0))] * 3))
    spacing = draw(st.tuples(*[st.sampled_from((0.5, 1.0, 3.0))] * 3))
    affine = np.zeros((4, 4))
    for column, (row, sign, size) in enumerate(zip(order, signs, spacing)):
        affine[row, column] = sign * size
    affine[:3, 3] = draw(st.tuples(*[st.floats(-100, 100, width=32)] * 3))
    affine[3, 3] = 1
    return affine


@SETTINGS
@given(data=shapes.flatmap(lambda shape: arrays(np.float32, shape, elements=finite)), affine=orientations())
def test_a_volume_reads_in_ras_order_and_writes_back_as_it_was(tmp_path, data, affine):
    path = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    volume = load_volume(path)
    # every voxel sits at the same world position as in the file
    for index in itertools.islice(np.ndindex(data.shape), 20):
        world = affine @ [*index, 1]
        canonical = np.linalg.solve(volume.affine, world)[:3]
        assert volume.data[tuple(np.rint(canonical).astype(int))] == data[index]
    assert np.all(np.diag(volume.affine)[:3] > 0)
    out = save_like(volume.data, volume, tmp_path / "out.nii.gz", overwrite=True)
    written = nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), data)
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)


@SETTINGS
@given(data=shapes.flatmap(lambda shape: arrays(np.float32, shape, elements=finite)),
       bad=st.sampled_from((np.nan, np.inf, -np.inf)), where=st.integers(0, 215))
def test_a_bad_voxel_anywhere_names_the_file(tmp_path, data, bad, where):
    data = data.copy()
    data.flat[where % data.size] = bad
    path = tmp_path / "t2w.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match=f"^{path}: image holds [0-9]+ NaN or infinite values$"):
        load_volume(path)


@SETTINGS
@given(data=shapes.flatmap(lambda shape: arrays(np.int16, shape, elements=st.integers(0, 4))),
       bad=st.sampled_from((0.5, -1.0, 2.25, np.nan)), where=st.integers(0, 215))
def test_a_bad_label_anywhere_names_the_file(tmp_path, data, bad, where):
    labels = data.astype(np.float32)
    labels.flat[where % labels.size] = bad
    path = tmp_path / "zones.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
    with pytest.raises(InputError, match=f"^{path}: label map holds"):
        load_volume(path, num_classes=5)


@SETTINGS
@given(data=shapes.flatmap(lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 4))))
def test_labels_read_back_unchanged(tmp_path, data):
    path = tmp_path / "zones.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, 1, 1, 1])), path)
    zones = load_volume(path, num_classes=5)
    assert zones.data.dtype == np.uint8
    np.testing.assert_array_equal(zones.data, data[::-1])


@settings(max_examples=60, deadline=None)
@given(array=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3)).flatmap(
    lambda shape: arrays(np.float32, shape, elements=finite)), grow=st.tuples(st.integers(0, 7), st.integers(0, 7)))
def test_padding_then_cropping_back_is_the_identity(array, grow):
    size = (array.shape[0] + grow[0], array.shape[1] + grow[1])
    np.testing.assert_array_equal(center_pad_crop(center_pad_crop(array, size), array.shape[:2]), array)


@settings(max_examples=60, deadline=None)
@given(mask=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4)).flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 4))), size=st.integers(1, 16))
def test_preparing_and_restoring_unet_masks_keeps_the_voxels_in_view(mask, size):
    restored = restore_unet_slices(prepare_unet_mask(mask, size), mask.shape)[..., 0]
    in_view = center_pad_crop(center_pad_crop(np.ones(mask.shape, bool), size), mask.shape[:2])
    np.testing.assert_array_equal(restored, np.where(in_view, mask != 0, 0))


@settings(max_examples=60, deadline=None)
@given(labels=st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 4))), size=st.tuples(st.integers(1, 12),
                                                                                        st.integers(1, 12)))
def test_label_maps_survive_one_hot_and_resizing_invents_no_label(labels, size):
    np.testing.assert_array_equal(labels_from_one_hot(one_hot(labels, 5)), labels)
    assert set(np.unique(resize_labels(labels, size))) <= set(np.unique(labels))


@settings(max_examples=60, deadline=None)
@given(array=st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(lambda s: arrays(np.float32, s, elements=finite)))
def test_minmax_normalisation_stays_in_the_unit_interval(array):
    normalised = minmax_normalize(array)
    assert np.isfinite(normalised).all() and normalised.min() >= 0 and normalised.max() <= 1
