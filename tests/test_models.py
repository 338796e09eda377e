"""Tests for prostseg.networks.models: shapes, parameter counts, receptive field, .keras files."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from prostseg.networks.models import (
    build_pix2pix_discriminator,
    build_pix2pix_generator,
    build_unet,
    unet_receptive_field,
)


def conv_params(kernel: int, cin: int, cout: int, bias: bool) -> int:
    return kernel * kernel * cin * cout + (cout if bias else 0)


def bn_params(channels: int) -> int:
    return 4 * channels  # gamma, beta, moving mean, moving variance


def expected_unet_params(cin: int, base: int, depth: int, classes: int) -> int:
    """Count by hand: conv blocks without bias + BN, transposed convs with bias."""

    def block(cin_: int, cout: int) -> int:
        convs = conv_params(3, cin_, cout, False) + conv_params(3, cout, cout, False)
        return convs + 2 * bn_params(cout)

    widths = [base * 2**level for level in range(depth + 1)]
    total = 0
    channels = cin
    for width in widths[:-1]:
        total += block(channels, width)
        channels = width
    total += block(channels, widths[-1])
    for level in reversed(range(depth)):
        total += conv_params(2, widths[level + 1], widths[level], True)
        total += block(2 * widths[level], widths[level])
    return total + conv_params(1, widths[0], classes, True)


def test_unet_binary_output_shape_and_range():
    model = build_unet((64, 64, 1), base_filters=4, depth=3)
    images = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 64, 64, 1)
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_unet_multiclass_output_is_a_distribution():
    model = build_unet((32, 32, 2), num_classes=3, base_filters=2, depth=2)
    images = np.random.default_rng(1).random((1, 32, 32, 2), dtype=np.float32)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("cin", "base", "depth", "classes"), [(1, 4, 3, 1), (3, 2, 2, 4), (1, 32, 4, 1)]
)
def test_unet_parameter_count_matches_hand_count(cin, base, depth, classes):
    model = build_unet((64, 64, cin), num_classes=classes, base_filters=base, depth=depth)
    assert model.count_params() == expected_unet_params(cin, base, depth, classes)


def test_unet_dropout_adds_no_parameters_and_is_inactive_at_inference():
    model = build_unet((32, 32, 1), base_filters=2, depth=2, dropout=0.5)
    assert model.count_params() == expected_unet_params(1, 2, 2, 1)
    images = np.random.default_rng(2).random((1, 32, 32, 1), dtype=np.float32)
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))


@pytest.mark.parametrize("shape", [(100, 100, 1), (64, 100, 1), (8, 8, 1)])
def test_unet_rejects_size_not_divisible_by_two_to_the_depth(shape):
    bad = shape[1] if shape[1] % 16 else shape[0]
    with pytest.raises(ValueError, match=rf"input size {bad} is not divisible by 2\*\*4 = 16"):
        build_unet(shape, depth=4)


@pytest.mark.parametrize(
    "kwargs", [{"depth": 0}, {"num_classes": 0}, {"base_filters": 0}, {"dropout": 1.0}]
)
def test_unet_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        build_unet((32, 32, 1), **kwargs)


def test_unet_rejects_input_shape_without_channels():
    with pytest.raises(ValueError, match="height, width, channels"):
        build_unet((64, 64))


def test_unet_with_open_size_runs_on_any_divisible_size():
    model = build_unet((None, None, 1), base_filters=2, depth=2)
    assert model(np.zeros((1, 24, 40, 1), np.float32)).shape == (1, 24, 40, 1)


def _make_positive(model: keras.Model) -> None:
    """Set every kernel to positive constants and every bias to zero.

    The network is then monotone, maps an all-zero image to all-zero features (batch
    normalisation at initial statistics maps 0 to 0) and propagates a positive impulse
    as strictly positive values to every position that can depend on it: its impulse
    response is nonzero exactly where the receptive field reaches. (Input gradients would
    not do: max pooling passes the gradient to one input of each window only.)
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            layer.kernel.assign(np.ones(layer.kernel.shape, np.float32))
        elif isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(np.full(layer.kernel.shape, 1 / 9, np.float32))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.zeros(layer.bias.shape, np.float32))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_matches_impulse_response(depth):
    field = unet_receptive_field(depth)
    height = 2 ** (depth + 1) * (field // 2**depth + 2)  # room for the field
    width = 2 ** (depth + 1)
    model = build_unet((height, width, 1), base_filters=2, depth=depth)
    _make_positive(model)
    # Features before the final 1x1 convolution (which does not widen the field) avoid
    # the sigmoid's rounding of tiny logits to 0.5.
    features = keras.Model(model.input, model.get_layer("dec0_relu2").output)
    column = width // 2
    impulses = np.zeros((height, height, width, 1), np.float32)
    impulses[np.arange(height), np.arange(height), column, 0] = 1.0  # one per image
    responses = features(impulses, training=False).numpy().sum(axis=-1)
    widths = []
    centre = height // 2
    for row in range(centre, centre + 2**depth):  # every position modulo 2**depth
        sources = np.flatnonzero(responses[:, row, column] > 0)  # impulse rows it sees
        assert 0 < sources.min() and sources.max() < height - 1, "field hits the border"
        assert len(sources) == sources.max() - sources.min() + 1, "field not contiguous"
        widths.append(len(sources))
    assert max(widths) == field


def test_receptive_field_grows_with_depth():
    fields = [unet_receptive_field(depth) for depth in range(1, 6)]
    assert fields == sorted(fields) and len(set(fields)) == 5
    with pytest.raises(ValueError):
        unet_receptive_field(0)


def expected_generator_params(cin: int, base: int, levels: int, classes: int, cap: int) -> int:
    filters = [base * min(2**i, cap) for i in range(levels)]
    total = 0
    channels = cin
    for i, width in enumerate(filters):
        total += conv_params(4, channels, width, False)
        if 0 < i < levels - 1:
            total += bn_params(width)
        channels = width
    for i in reversed(range(levels - 1)):
        total += conv_params(4, channels, filters[i], False) + bn_params(filters[i])
        channels = 2 * filters[i]  # after concatenating the skip
    return total + conv_params(4, channels, classes, True)


def test_pix2pix_generator_small_shape_softmax_and_params():
    generator = build_pix2pix_generator((64, 64, 3), num_classes=5, base_filters=4)
    images = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    probabilities = generator.predict(images, verbose=0)
    assert probabilities.shape == (2, 64, 64, 5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    assert generator.count_params() == expected_generator_params(3, 4, 6, 5, 8)
    bottleneck = generator.get_layer("down5_lrelu").output
    assert tuple(bottleneck.shape[1:3]) == (1, 1)


def test_pix2pix_generator_256_matches_tutorial_size():
    generator = build_pix2pix_generator((256, 256, 3), num_classes=3)
    assert generator.output_shape == (None, 256, 256, 3)
    # The TensorFlow pix2pix tutorial's generator has 54,425,859 parameters; ours leaves
    # out the innermost BatchNormalization (4 * 512 parameters).
    assert generator.count_params() == 54_425_859 - 4 * 512
    assert generator.count_params() == expected_generator_params(3, 64, 8, 3, 8)


def test_pix2pix_generator_levels():
    generator = build_pix2pix_generator((96, 96, 3), base_filters=2, levels=5)
    assert generator.output_shape == (None, 96, 96, 5)
    with pytest.raises(ValueError, match="levels"):
        build_pix2pix_generator((96, 96, 3), base_filters=2)
    with pytest.raises(ValueError, match="input size 96 is not divisible by 2\\*\\*6 = 64"):
        build_pix2pix_generator((96, 96, 3), base_filters=2, levels=6)
    with pytest.raises(ValueError, match="num_classes"):
        build_pix2pix_generator((32, 32, 3), num_classes=1)


def test_pix2pix_discriminator_256_gives_30x30_logits():
    discriminator = build_pix2pix_discriminator((256, 256, 3), num_classes=3)
    assert discriminator.output_shape == (None, 30, 30, 1)
    # The tutorial's discriminator (3 + 3 input channels) has 2,770,433 parameters.
    assert discriminator.count_params() == 2_770_433
    five_classes = build_pix2pix_discriminator((256, 256, 3), num_classes=5)
    assert five_classes.count_params() == 2_770_433 + conv_params(4, 2, 64, False)


def test_pix2pix_discriminator_small_sizes():
    discriminator = build_pix2pix_discriminator((64, 64, 3), base_filters=4)
    rng = np.random.default_rng(4)
    pair = [rng.random((2, 64, 64, 3), np.float32), rng.random((2, 64, 64, 5), np.float32)]
    assert discriminator.predict(pair, verbose=0).shape == (2, 6, 6, 1)
    with pytest.raises(ValueError, match="too small"):
        build_pix2pix_discriminator((16, 16, 3))
    with pytest.raises(ValueError, match="not divisible"):
        build_pix2pix_discriminator((60, 60, 3))


def _randomise_weights(model: keras.Model, seed: int) -> None:
    """Random weights everywhere (positive: valid BatchNormalization variances)."""
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in weights])


@pytest.mark.parametrize(
    "build",
    [
        lambda: build_unet((32, 32, 1), base_filters=2, depth=2, dropout=0.2),
        lambda: build_unet((32, 32, 1), num_classes=3, base_filters=2, depth=2),
        lambda: build_pix2pix_generator((32, 32, 3), base_filters=2),
        lambda: build_pix2pix_discriminator((32, 32, 3), base_filters=2),
    ],
    ids=["unet", "unet-multiclass", "generator", "discriminator"],
)
def test_keras_file_round_trip_in_safe_mode(build, tmp_path):
    model = build()
    _randomise_weights(model, seed=5)
    rng = np.random.default_rng(6)
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    inputs = [rng.random((2, *shape[1:]), np.float32) for shape in shapes]
    inputs = inputs if len(inputs) > 1 else inputs[0]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.name == model.name
    np.testing.assert_array_equal(
        loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0)
    )
