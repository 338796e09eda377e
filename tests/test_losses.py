"""Tests for prostseg.networks.losses against numpy formulas written out by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from prostseg.networks.losses import (
    bce_dice_loss,
    binary_crossentropy,
    discriminator_loss,
    generator_loss,
    soft_dice_loss,
)
from prostseg.networks.metrics import ThresholdedDice
from prostseg.networks.models import build_unet


def softplus(x):
    return np.log1p(np.exp(x))


def numpy_bce(y, p):
    return np.array(
        [-np.mean(yi * np.log(pi) + (1 - yi) * np.log(1 - pi)) for yi, pi in zip(y, p)]
    )


def numpy_soft_dice(y, p, smooth):
    losses = []
    for yi, pi in zip(y, p):
        scores = []
        for c in range(yi.shape[-1]):
            a, b = yi[..., c].ravel(), pi[..., c].ravel()
            scores.append((2 * np.dot(a, b) + smooth) / (a.sum() + b.sum() + smooth))
        losses.append(1 - np.mean(scores))
    return np.array(losses)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 6, 5, 2)) > 0.6).astype(np.float32)
    y_pred = rng.uniform(0.05, 0.95, (3, 6, 5, 2)).astype(np.float32)
    return y_true, y_pred


def test_binary_crossentropy_per_example(batch):
    y_true, y_pred = batch
    loss = np.asarray(binary_crossentropy(y_true, y_pred))
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss, numpy_bce(y_true, y_pred), rtol=1e-5)


def test_binary_crossentropy_known_value():
    y_true = np.array([[[1.0], [0.0]]], np.float32)  # (1, 2, 1)
    y_pred = np.array([[[0.8], [0.4]]], np.float32)
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert float(binary_crossentropy(y_true, y_pred)[0]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_soft_dice_loss_per_example(batch, smooth):
    y_true, y_pred = batch
    loss = np.asarray(soft_dice_loss(y_true, y_pred, smooth=smooth))
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss, numpy_soft_dice(y_true, y_pred, smooth), rtol=1e-5)


def test_soft_dice_loss_extremes():
    mask = np.zeros((2, 8, 8, 1), np.float32)
    mask[0, 2:5, 2:6] = 1  # example 1 stays empty
    perfect = np.asarray(soft_dice_loss(mask, mask))
    np.testing.assert_allclose(perfect, [0.0, 0.0], atol=1e-7)  # empty vs empty costs 0
    disjoint = np.asarray(soft_dice_loss(mask[:1], 1 - mask[:1], smooth=0.0))
    np.testing.assert_allclose(disjoint, [1.0], atol=1e-7)
    # 12 true pixels, 4 of them predicted at 1: dice = 2 * 4 / (12 + 4)
    half = np.zeros_like(mask[:1])
    half[0, 2, 2:6] = 1
    assert float(soft_dice_loss(mask[:1], half, smooth=0.0)[0]) == pytest.approx(0.5)


def test_soft_dice_loss_rejects_tensors_without_spatial_axes():
    with pytest.raises(ValueError, match="batch"):
        soft_dice_loss(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


def test_bce_dice_loss_is_the_sum(batch):
    y_true, y_pred = batch
    expected = numpy_bce(y_true, y_pred) + numpy_soft_dice(y_true, y_pred, 1.0)
    np.testing.assert_allclose(np.asarray(bce_dice_loss(y_true, y_pred)), expected, rtol=1e-5)


def test_losses_are_per_example(batch):
    """Changing one example leaves the other examples' losses alone."""
    y_true, y_pred = batch
    changed = y_pred.copy()
    changed[1] = 1 - changed[1]
    for loss_fn in (binary_crossentropy, soft_dice_loss, bce_dice_loss):
        before = np.asarray(loss_fn(y_true, y_pred))
        after = np.asarray(loss_fn(y_true, changed))
        np.testing.assert_allclose(after[[0, 2]], before[[0, 2]], rtol=1e-6)
        assert after[1] != pytest.approx(before[1])


def test_generator_loss_known_logits():
    fake_logits = np.array([[[[0.0], [2.0]], [[-1.0], [3.0]]]], np.float32)  # (1, 2, 2, 1)
    generated = np.array([[[[0.7, 0.3]], [[0.2, 0.8]]]], np.float32)  # (1, 2, 1, 2)
    target = np.array([[[[1.0, 0.0]], [[1.0, 0.0]]]], np.float32)
    total, gan, l1 = (np.asarray(t) for t in generator_loss(fake_logits, generated, target, 10.0))
    expected_gan = np.mean(softplus(-np.array([0.0, 2.0, -1.0, 3.0])))  # -log sigmoid(x)
    expected_l1 = (0.3 + 0.3 + 0.8 + 0.8) / 4
    assert gan.shape == l1.shape == total.shape == (1,)
    assert gan[0] == pytest.approx(expected_gan, rel=1e-6)
    assert l1[0] == pytest.approx(expected_l1, rel=1e-6)
    assert total[0] == pytest.approx(expected_gan + 10.0 * expected_l1, rel=1e-6)


def test_generator_loss_default_weight_and_log2():
    logits = np.zeros((2, 3, 3, 1), np.float32)
    target = np.eye(5, dtype=np.float32)[np.zeros((2, 4, 4), int)]
    total, gan, l1 = generator_loss(logits, target, target)
    np.testing.assert_allclose(np.asarray(gan), [math.log(2)] * 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(l1), [0.0, 0.0])
    uniform = np.full_like(target, 0.2)
    total, gan, l1 = generator_loss(logits, uniform, target)
    # |0.2 - 1| + 4 * |0.2 - 0| = 1.6 per pixel, over 5 channels
    np.testing.assert_allclose(np.asarray(l1), [1.6 / 5] * 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(total), math.log(2) + 100 * 1.6 / 5, rtol=1e-6)


def test_discriminator_loss_known_logits():
    real = np.array([[[[1.0], [-2.0]]], [[[4.0], [0.5]]]], np.float32)  # (2, 1, 2, 1)
    fake = np.array([[[[-3.0], [0.0]]], [[[2.0], [1.0]]]], np.float32)
    loss = np.asarray(discriminator_loss(real, fake))
    # real vs ones: -log sigmoid(r) = softplus(-r)
    # fake vs zeros: -log(1 - sigmoid(f)) = softplus(f)
    expected = softplus(-real).mean(axis=(1, 2, 3)) + softplus(fake).mean(axis=(1, 2, 3))
    assert loss.shape == (2,)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_discriminator_loss_is_stable_for_large_logits():
    big = np.full((1, 2, 2, 1), 200.0, np.float32)
    loss = np.asarray(discriminator_loss(big, -big))
    assert np.all(np.isfinite(loss)) and loss[0] < 1e-6
    assert float(discriminator_loss(-big, big)[0]) == pytest.approx(400.0, rel=1e-6)


# The unfitted model's optimizer has no state to restore.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_compiled_model_with_prostseg_loss_and_metric_reloads_in_safe_mode(tmp_path):
    model = build_unet((16, 16, 1), base_filters=2, depth=2)
    model.compile(optimizer="adam", loss=bce_dice_loss, metrics=[ThresholdedDice()])
    rng = np.random.default_rng(1)
    images = rng.random((4, 16, 16, 1), np.float32)
    masks = (rng.random((4, 16, 16, 1)) > 0.7).astype(np.float32)
    before = model.evaluate(images, masks, verbose=0, return_dict=True)
    path = tmp_path / "compiled.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    after = loaded.evaluate(images, masks, verbose=0, return_dict=True)
    assert set(after) == {"loss", "dice"}
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-6)
    assert after["dice"] == pytest.approx(before["dice"], rel=1e-6)
    # Keras averages the per-example losses over the batch.
    probabilities = model.predict(images, verbose=0).astype(np.float64)
    per_example = numpy_bce(masks, probabilities.clip(1e-7, 1 - 1e-7)) + numpy_soft_dice(
        masks, probabilities, 1.0
    )
    assert before["loss"] == pytest.approx(per_example.mean(), rel=1e-4)
