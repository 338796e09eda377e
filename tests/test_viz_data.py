"""Tests of the registration and dataset figures of prostseg.viz (chapters 4 and 5)."""

from __future__ import annotations

import numpy as np
import pytest

from prostseg.data.io import Volume
from prostseg.preparation.registration import mutual_information
from prostseg.viz import (
    plot_alignment,
    plot_channels,
    plot_checkerboard,
    plot_colour_overlay,
    plot_contour_overlay,
    plot_joint_histograms,
    plot_modalities,
    plot_slice_grid,
    to_display,
)


def _shown(figure, panel: int = 0) -> np.ndarray:
    """The array drawn by the first image of a panel."""
    return np.asarray(figure.axes[panel].get_images()[0].get_array())


@pytest.fixture
def binary_pair():
    """A 0/1 fixed slice (its 1st and 99th percentiles are 0 and 1) and its inverse."""
    fixed = (np.indices((8, 6)).sum(axis=0) % 3 == 0).astype(float)
    return fixed, 1.0 - fixed


def test_checkerboard_alternates_tiles_of_the_two_images(binary_pair):
    fixed, moving = binary_pair
    shown = _shown(plot_checkerboard(fixed, moving, tiles=4))  # tiles of 2 x 2 voxels
    tile_parity = (np.arange(8)[:, None] // 2 + np.arange(6)[None, :] // 2) % 2
    expected = np.where(tile_parity == 0, fixed, moving)
    np.testing.assert_array_equal(shown, to_display(expected))
    np.testing.assert_array_equal(_shown(plot_checkerboard(fixed, moving, tiles=1)), to_display(fixed))


def test_colour_overlay_puts_fixed_in_magenta_and_moving_in_green(binary_pair):
    fixed, moving = binary_pair
    rgb = _shown(plot_colour_overlay(fixed, moving))
    np.testing.assert_array_equal(rgb[..., 0], to_display(fixed))
    np.testing.assert_array_equal(rgb[..., 2], to_display(fixed))
    np.testing.assert_array_equal(rgb[..., 1], to_display(moving))


def test_contour_overlay_draws_only_where_the_moving_image_varies():
    radius = np.hypot(*(np.indices((40, 40)) - 20.0))
    assert plot_contour_overlay(radius, radius).axes[0].collections
    assert not plot_contour_overlay(radius, np.ones((40, 40))).axes[0].collections  # nothing to outline


@pytest.mark.parametrize("function", [plot_checkerboard, plot_colour_overlay, plot_contour_overlay])
def test_pair_figures_need_two_slices_of_one_shape(function):
    with pytest.raises(ValueError, match="resample the moving image"):
        function(np.zeros((8, 8)), np.zeros((8, 9)))


def test_alignment_figure_shows_before_and_after_zoomed():
    rng = np.random.default_rng(0)
    fixed, before, after = rng.random((3, 40, 30))
    figure = plot_alignment(fixed, before, after, fraction=0.5, names=("T2W", "DWI"))
    assert len(figure.axes) == 6
    assert figure.axes[0].get_title().startswith("header only") and figure.axes[3].get_title().startswith("registered")
    assert "DWI" in figure.axes[1].get_title()
    rgb = _shown(figure, 4)  # registered colour overlay: the central 20 x 15 voxels
    assert rgb.shape == (15, 20, 3)
    with pytest.raises(ValueError, match="fraction"):
        plot_alignment(fixed, before, after, fraction=0)


def test_joint_histograms_report_the_mutual_information():
    rng = np.random.default_rng(1)
    fixed = rng.random((20, 20, 4))
    mask = fixed > 0.2
    figure = plot_joint_histograms(fixed, {"related": np.exp(-fixed), "noise": rng.random(fixed.shape)}, mask=mask)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == f"related: MI {mutual_information(fixed, np.exp(-fixed), mask):.3f} nats"
    informations = [float(title.split("MI ")[1].split()[0]) for title in titles]
    assert informations[0] > informations[1]
    with pytest.raises(ValueError, match="shape"):
        plot_joint_histograms(fixed, {"short": fixed[:5]})


def test_channels_are_shown_side_by_side_with_outlines():
    stack = np.random.default_rng(2).random((20, 20, 3))
    labels = np.zeros((20, 20), np.uint8)
    labels[5:10, 5:10] = 1
    figure = plot_channels(stack, labels=labels)
    assert [ax.get_title() for ax in figure.axes] == ["T2W", "DWI", "ADC"]
    assert all(ax.collections for ax in figure.axes)
    with pytest.raises(ValueError, match="channels"):
        plot_channels(stack[..., :2])


def test_modalities_are_placed_by_their_affines():
    fine_affine = np.diag([0.5, 0.5, 3.0, 1.0])
    fine_affine[:3, 3] = (-10.0, 20.0, 0.0)
    coarse_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    slices = np.arange(5, dtype=np.float32)  # the value of each voxel is its slice index
    fine = Volume(np.broadcast_to(slices, (40, 40, 5)).copy(), fine_affine)
    coarse = Volume(np.broadcast_to(slices, (10, 10, 5)).copy(), coarse_affine)
    figure = plot_modalities({"T2W": fine, "ADC": coarse}, z_mm=9.2)  # nearest slice: k = 3 (9 mm)
    image = figure.axes[0].get_images()[0]
    # patient's right (+x) on the left, anterior (+y) up; voxel edges half a voxel out
    np.testing.assert_allclose(image.get_extent(), [-10 + 39.5 * 0.5, -10 - 0.25, 20 - 0.25, 20 + 39.5 * 0.5])
    assert np.all(_shown(figure, 0) == 3) and np.all(_shown(figure, 1) == 3)
    assert "10 x 10 voxels of 2 x 2 mm" in figure.axes[1].get_title()


def test_slice_grid_outlines_labels_and_hides_spare_panels():
    images = np.random.default_rng(3).random((5, 16, 16, 1))
    labels = np.zeros_like(images, dtype=np.uint8)
    labels[0, 4:8, 4:8] = 1
    figure = plot_slice_grid(images, labels, titles=list("abcde"), columns=3)
    assert len(figure.axes) == 6
    assert [ax.get_title() for ax in figure.axes[:5]] == list("abcde")
    assert figure.axes[0].collections and not figure.axes[1].collections
    assert not figure.axes[5].get_images() and not figure.axes[5].axison
    with pytest.raises(ValueError, match="labels have shape"):
        plot_slice_grid(images, labels[:2])
    with pytest.raises(ValueError, match="titles"):
        plot_slice_grid(images, titles=["a"])
