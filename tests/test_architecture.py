"""Tests for prostseg.networks.architecture: tables, levels, sizes, receptive fields, diagram."""

from __future__ import annotations

import io
from functools import partial

import keras
import matplotlib
import numpy as np
import pytest
from keras import layers
from PIL import Image

from prostseg.networks.architecture import (
    activation_bytes,
    block_table,
    chain_receptive_field,
    extrapolate_over_filters,
    format_blocks,
    plot_unet,
    receptive_field_maps,
    receptive_field_widths,
    unet_levels,
)
from prostseg.figure_png import BACKEND, read_text_record
from prostseg.networks.models import (
    build_pix2pix_discriminator,
    build_pix2pix_generator,
    build_unet,
    unet_receptive_field,
)
from prostseg.figure_png import PAGE_COLUMN_PX

matplotlib.use("Agg")

SHOWN_MIN_PX = 9.0  # smallest readable text on the book's page (tests/test_book_site.py)


@pytest.mark.parametrize(
    "build",
    [
        partial(build_unet, (32, 32, 1), base_filters=2, depth=2),
        partial(build_pix2pix_generator, (16, 16, 3), base_filters=2),
        partial(build_pix2pix_discriminator, (32, 32, 3), base_filters=2),
    ],
    ids=["unet", "generator", "discriminator"],
)
def test_blocks_account_for_every_parameter_and_layer(build):
    model = build()
    blocks = block_table(model)
    assert sum(block.parameters for block in blocks) == model.count_params()
    non_input = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    assert sum(len(block.layer_types) for block in blocks) == len(non_input)
    assert blocks[-1].output_shape == tuple(model.output.shape[1:])
    text = format_blocks(blocks)
    assert f"{model.count_params():,}" in text.splitlines()[-1]


def test_format_blocks_folds_repeated_layer_types():
    model = build_unet((32, 32, 1), base_filters=2, depth=1)
    first_row = format_blocks(block_table(model)).splitlines()[1]
    assert "2 x (Conv, BN, ReLU), MaxPool" in first_row


@pytest.mark.parametrize(
    "build",
    [
        partial(build_unet, (384, 384, 1), base_filters=32, depth=4),
        partial(build_pix2pix_generator, (256, 256, 3), base_filters=64),
        partial(build_pix2pix_discriminator, (256, 256, 3), base_filters=64),
    ],
    ids=["unet", "generator", "discriminator"],
)
def test_tables_of_the_book_networks_fit_a_cell_line(build):
    # chapters 6 and 9 print these; one line of a cell output shows 76 characters
    lines = format_blocks(block_table(build())).splitlines()
    assert max(map(len, lines)) <= 75, "\n".join(lines)


@pytest.mark.parametrize("base_filters, depth", [(2, 1), (3, 3)])
def test_unet_levels_follow_the_build_arguments(base_filters, depth):
    model = build_unet((64, 48, 1), base_filters=base_filters, depth=depth)
    levels = unet_levels(model)
    assert [level.level for level in levels] == list(range(depth + 1))
    for level in levels:
        assert level.size == (64 // 2**level.level, 48 // 2**level.level)
        assert level.encoder_channels == base_filters * 2**level.level
    assert [level.decoder_channels for level in levels[:-1]] == [
        level.encoder_channels for level in levels[:-1]
    ]
    assert levels[-1].decoder_channels is None
    output_conv = model.get_layer("probabilities").count_params()
    assert sum(level.parameters for level in levels) + output_conv == model.count_params()


def test_unet_levels_rejects_other_models():
    with pytest.raises(ValueError, match="not a U-Net"):
        unet_levels(build_pix2pix_discriminator((32, 32, 3), base_filters=2))


def test_activation_bytes_counts_every_layer_output():
    inputs = keras.Input((8, 6, 1))
    x = layers.Conv2D(3, 3, padding="same")(inputs)  # 8 * 6 * 3
    outputs = layers.MaxPooling2D(2)(x)  # 4 * 3 * 3
    model = keras.Model(inputs, outputs)
    values = 8 * 6 * 1 + 8 * 6 * 3 + 4 * 3 * 3
    assert activation_bytes(model) == 4 * values
    assert activation_bytes(model, batch_size=3, bytes_per_value=2) == 2 * 3 * values


def test_activation_bytes_needs_a_fixed_input_size():
    with pytest.raises(ValueError, match="fixed input size"):
        activation_bytes(build_unet((None, None, 1), base_filters=2, depth=1))


def test_extrapolated_sizes_match_the_built_network():
    build = partial(build_unet, (32, 32, 1), depth=2, num_classes=3)
    wide = build(base_filters=7)
    assert extrapolate_over_filters(build, 7) == wide.count_params()
    assert extrapolate_over_filters(build, 7, measure=activation_bytes, degree=1) == activation_bytes(wide)


def test_extrapolate_rejects_bad_arguments():
    with pytest.raises(ValueError):
        extrapolate_over_filters(build_unet, 0)


def test_patchgan_receptive_field_is_70_pixels_every_8_pixels():
    # Isola et al. 2017: the default discriminator judges 70x70 patches.
    model = build_pix2pix_discriminator((64, 64, 3), base_filters=2)
    assert chain_receptive_field(model) == (70, 8)


def test_chain_receptive_field_grows_with_downsamples():
    two = chain_receptive_field(build_pix2pix_discriminator((32, 32, 3), base_filters=2, downsamples=2))
    # By hand: two 4x4 stride-1 convolutions (7 px), then two 4x4 stride-2 ones.
    assert two == ((((7 - 1) * 2 + 4) - 1) * 2 + 4, 4)


def test_chain_receptive_field_rejects_branching_models():
    with pytest.raises(ValueError, match="plain chain"):
        chain_receptive_field(build_unet((32, 32, 1), base_filters=2, depth=1))


def test_measured_patchgan_field_matches_the_layer_computation():
    model = build_pix2pix_discriminator((128, 128, 3), base_filters=2)
    field, _ = chain_receptive_field(model)
    maps = receptive_field_maps(model, [(6, 6), (7, 6)])
    assert maps.shape == (2, 128, 128)
    assert receptive_field_widths(maps).tolist() == [field, field]
    rows, cols = np.nonzero(maps[1])
    assert rows.min() - np.nonzero(maps[0])[0].min() == chain_receptive_field(model)[1]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_measured_unet_field_matches_unet_receptive_field(depth):
    model = build_unet((192, 192, 1), base_filters=1, depth=depth)
    centre = 96
    positions = [(centre + i, centre + i) for i in range(2**depth)]
    widths = receptive_field_widths(receptive_field_maps(model, positions))
    assert widths.max() == unet_receptive_field(depth)


def test_receptive_field_map_of_one_convolution():
    inputs = keras.Input((11, 11, 2))
    model = keras.Model(inputs, layers.Conv2D(4, 5, padding="same", activation="relu")(inputs))
    weights = receptive_field_maps(model, [(2, 7)])[0]
    assert weights.shape == (11, 11)
    assert weights.max() == 1.0 and weights.min() == 0.0
    rows, cols = np.nonzero(weights)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 4, 5, 9)


def test_plot_unet_draws_one_box_per_block_with_sizes_from_the_model():
    model = build_unet((64, 32, 1), base_filters=3, depth=2)
    figure = plot_unet(model)
    ax = figure.axes[0]
    boxes = [patch for patch in ax.patches if type(patch).__name__ == "Rectangle"]
    assert len(boxes) == 2 * 2 + 1
    texts = [text.get_text() for text in ax.texts]
    assert "16 x 8\n12 ch" in texts  # the bridge
    assert texts.count("64 x 32\n3 ch") == 2  # encoder and decoder of level 0
    matplotlib.pyplot.close(figure)


def test_plot_unet_text_is_readable_on_the_page_and_inside_the_boxes():
    figure = plot_unet(build_unet((384, 384, 1), base_filters=32, depth=4))  # chapter 6's
    png = io.BytesIO()
    figure.savefig(png, format="png", bbox_inches="tight", backend=BACKEND)  # as inline
    record = read_text_record(png.getvalue())
    shown = record.px * min(1.0, PAGE_COLUMN_PX / Image.open(png).width)
    assert shown >= SHOWN_MIN_PX, f"{record.text!r} is {shown:.1f} px tall on the page"
    renderer = figure.canvas.get_renderer()
    ax = figure.axes[0]
    boxes = [patch.get_window_extent(renderer) for patch in ax.patches if type(patch).__name__ == "Rectangle"]
    labels = [text for text in ax.texts if text.get_text().endswith(" ch") and "\n" in text.get_text()]
    assert len(labels) == len(boxes) == 9
    for label in labels:
        extent = label.get_window_extent(renderer)
        assert any(
            box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
            for box in boxes
        ), f"{label.get_text()!r} sticks out of its box"
    matplotlib.pyplot.close(figure)
