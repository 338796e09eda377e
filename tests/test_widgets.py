"""Tests of the slice browser and its static montage."""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import pytest
from PIL import Image

from prostseg.errors import InputError
from prostseg.data.io import Volume
from prostseg.book.palette import LESION_COLOUR, ZONE_COLOURS
from prostseg.book.widgets import slice_browser, slice_montage

SHAPE = (12, 10, 5)


def pixels(image_widget) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_widget.value)))


@pytest.fixture
def volume():
    data = np.random.default_rng(0).normal(100.0, 20.0, SHAPE).astype(np.float32)
    return Volume(data, np.diag([0.5, 0.5, 3.0, 1.0]))


def test_slider_covers_every_slice_and_moves_every_layer(volume):
    mask = np.zeros(SHAPE, np.uint8)
    zones = np.zeros(SHAPE, np.uint8)
    browser = slice_browser(volume, mask=mask, zones=zones)
    assert isinstance(browser, widgets.Widget)
    assert (browser.slider.min, browser.slider.max) == (0, SHAPE[2] - 1)
    assert browser.index == browser.slider.value == SHAPE[2] // 2
    for k in (0, SHAPE[2] - 1, 1):
        browser.slider.value = k
        assert browser.index == k
        assert all(stack.selected_index == k for stack in browser._slice_stacks)


def test_the_web_page_gets_links_for_slider_and_overlay(volume):
    browser = slice_browser(volume, mask=np.ones(SHAPE))
    linked = {(link.source[0], link.source[1], link.target[1]) for link in browser._links}
    assert (browser.slider, "value", "selected_index") in linked
    assert (browser.overlay, "index", "selected_index") in linked


def test_each_slice_is_shown_in_the_display_convention(volume):
    data = np.zeros(SHAPE, np.float32)
    data[-1, -1, 3] = 1.0  # the most right and most anterior voxel of slice 3
    mask = np.zeros(SHAPE, np.uint8)
    mask[-1, -1, 3] = 1
    browser = slice_browser(Volume(data, volume.affine), mask=mask, window=(0.0, 1.0))
    grey = pixels(browser._images[3])
    assert grey.shape == (SHAPE[1], SHAPE[0])
    assert grey[0, 0] == 255 and grey.sum() == 255  # top left: anterior, patient's right
    lesion = pixels(browser._slice_stacks[1].children[3])
    assert lesion.shape == (SHAPE[1], SHAPE[0], 4)
    assert np.flatnonzero(lesion[..., 3]).tolist() == [0]
    assert tuple(lesion[0, 0, :3]) == tuple(int(LESION_COLOUR[i:i + 2], 16) for i in (1, 3, 5))


def test_overlay_buttons_choose_the_layer(volume):
    browser = slice_browser(volume, mask=np.ones(SHAPE), zones=np.ones(SHAPE, np.uint8))
    assert browser.overlay.options == ("none", "lesion", "zones")
    assert browser.overlay_mode == "zones"
    browser.overlay.value = "none"
    assert browser._overlays.selected_index == 0
    browser.overlay.value = "lesion"
    assert browser._overlays.selected_index == 1
    assert slice_browser(volume).overlay is None


def test_window_renders_the_slices_again(volume):
    browser = slice_browser(volume)
    before = [image.value for image in browser._images]
    browser.window.value = (float(volume.data.min()), float(volume.data.min()) + 1.0)
    after = [image.value for image in browser._images]
    assert all(old != new for old, new in zip(before, after))
    assert pixels(browser._images[0]).mean() > 200  # nearly everything above the window


def test_aspect_ratio_follows_the_voxel_spacing():
    data = np.zeros((20, 10, 2), np.float32)
    browser = slice_browser(Volume(data, np.diag([1.0, 4.0, 3.0, 1.0])), size=200)
    layout = browser._images[0].layout
    assert (layout.width, layout.height) == ("100px", "200px")  # 20 mm wide, 40 mm high


@pytest.mark.parametrize("name", ["mask", "zones"])
def test_overlay_of_the_wrong_shape_is_refused(volume, name):
    wrong = Volume(np.zeros((12, 10, 4), np.uint8), volume.affine, path="case/lesion.nii.gz")
    with pytest.raises(InputError, match=r"case/lesion.nii.gz: the .* has shape \(12, 10, 4\), but the image has shape"):
        slice_browser(volume, **{name: wrong})


def test_zone_values_outside_the_classes_are_refused(volume):
    zones = np.zeros(SHAPE, np.uint8)
    zones[0, 0, 0] = len(ZONE_COLOURS)
    with pytest.raises(InputError, match=r"values \[5\] outside the labels 0..4"):
        slice_browser(volume, zones=zones)


def test_a_2d_image_is_refused():
    with pytest.raises(InputError, match="3D"):
        slice_browser(np.zeros((4, 4)))


def test_montage_chooses_slices_with_labels(volume):
    zones = np.zeros(SHAPE, np.uint8)
    zones[2:6, 2:6, 1:4] = 1
    figure = slice_montage(volume, zones=zones, count=8)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == [f"slice {k} (S {3 * k:+.0f} mm)" for k in (1, 2, 3)]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["peripheral zone"]
    with pytest.raises(ValueError, match="slices must be indices"):
        slice_montage(volume, slices=[SHAPE[2]])
