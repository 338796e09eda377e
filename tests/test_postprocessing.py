"""Largest-connected-component clean-up of predicted masks and zone maps."""

from __future__ import annotations

import numpy as np
import pytest

from prostseg.use.postprocessing import component_sizes, largest_component, largest_gland_component


def gland_with_islands() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, the gland alone): a 3D blob over 4 slices plus 3 false islands."""
    gland = np.zeros((20, 20, 6), bool)
    gland[5:12, 6:13, 1:5] = True
    gland[8:10, 13:15, 2] = True  # an irregular bump, still part of the gland
    prediction = gland.copy()
    prediction[16:18, 16:18, 0:2] = True  # an island far away: 8 voxels
    prediction[0, 0, 5] = True  # a single voxel in a corner
    prediction[12, 12, 5] = True  # touches the gland only across an edge (no shared face)
    return prediction, gland


def test_islands_are_removed_and_the_gland_is_untouched():
    prediction, gland = gland_with_islands()
    kept = largest_component(prediction)
    assert kept.dtype == bool and kept.shape == prediction.shape
    np.testing.assert_array_equal(kept, gland)
    assert component_sizes(prediction).tolist() == [int(gland.sum()), 8, 1, 1]


def test_a_single_component_comes_back_unchanged():
    _, gland = gland_with_islands()
    np.testing.assert_array_equal(largest_component(gland), gland)
    np.testing.assert_array_equal(largest_component(gland.astype(np.uint8) * 7), gland)  # any non-zero


def test_neighbours_across_slices_join_the_component():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, :] = True  # a column through three slices: one component by faces
    mask[0, 0, 0] = True  # shares only an edge with (1, 1, 0): a component of its own
    assert component_sizes(mask).tolist() == [3, 1]
    column = np.zeros_like(mask)
    column[1, 1, :] = True
    np.testing.assert_array_equal(largest_component(mask), column)


def test_connectivity_decides_which_voxels_touch():
    prediction, gland = gland_with_islands()
    # The edge neighbour joins the gland with edge (2) or corner (3) connectivity.
    joined = largest_component(prediction, connectivity=2)
    expected = gland.copy()
    expected[12, 12, 5] = True
    np.testing.assert_array_equal(joined, expected)
    diagonal = np.zeros((3, 3, 3), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = diagonal[2, 2, 2] = True
    assert component_sizes(diagonal, connectivity=2).tolist() == [1, 1, 1]
    assert component_sizes(diagonal, connectivity=3).tolist() == [3]
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match="connectivity"):
            largest_component(diagonal, connectivity=bad)


def test_empty_masks_stay_empty():
    for shape in ((4, 5, 3), (4, 5), (0, 3, 2)):
        empty = np.zeros(shape, np.uint8)
        kept = largest_component(empty)
        assert kept.shape == shape and kept.dtype == bool and not kept.any()
        assert component_sizes(empty).size == 0
        assert not largest_gland_component(empty).any()


def test_ties_keep_the_first_component_in_c_order():
    mask = np.zeros((6, 6, 2), bool)
    mask[4:6, 4:6, :] = True  # 8 voxels, later in C order
    mask[0:2, 3:5, :] = True  # 8 voxels, first in C order
    expected = np.zeros_like(mask)
    expected[0:2, 3:5, :] = True
    np.testing.assert_array_equal(largest_component(mask), expected)
    # the rule is about order in the array, not about which blob was drawn first
    np.testing.assert_array_equal(largest_component(mask[::-1]), mask[::-1] & ~expected[::-1])


def test_zone_labels_inside_the_largest_gland_component_are_kept():
    prediction, gland = gland_with_islands()
    zones = np.zeros(prediction.shape, np.uint8)
    zones[prediction] = 1  # peripheral zone everywhere, islands included
    zones[7:10, 8:11, 1:5] = 2  # transition zone inside the gland
    zones[5, 6:13, 1:5] = 4  # stroma at the front
    zones[16:18, 16:18, 0:2] = 3  # an island predicted as central zone
    cleaned = largest_gland_component(zones)
    assert cleaned.dtype == np.uint8
    np.testing.assert_array_equal(cleaned, np.where(gland, zones, 0))
    assert set(np.unique(cleaned)) == {0, 1, 2, 4}


def test_a_zone_in_several_pieces_inside_the_gland_survives():
    # The peripheral zone split in two by the transition zone: one gland, two PZ pieces.
    zones = np.array([[1, 1, 2, 1, 1]] * 3, np.uint8)[:, :, None]
    zones = np.concatenate([zones, np.zeros((3, 5, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(largest_gland_component(zones), zones)
