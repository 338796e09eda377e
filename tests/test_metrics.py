"""Tests for prostseg.networks.metrics against independent (set-based) implementations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from prostseg.networks.metrics import (
    ThresholdedDice,
    ThresholdedIoU,
    dice,
    hausdorff95,
    iou,
    per_class_dice,
    per_class_iou,
    threshold_sweep,
)


def voxel_set(mask) -> set[tuple[int, ...]]:
    return {tuple(index) for index in np.argwhere(np.asarray(mask))}


def set_iou(pred, truth) -> float:
    a, b = voxel_set(pred), voxel_set(truth)
    return len(a & b) / len(a | b)


def set_dice(pred, truth) -> float:
    a, b = voxel_set(pred), voxel_set(truth)
    return 2 * len(a & b) / (len(a) + len(b))


@pytest.mark.parametrize("shape", [(50,), (12, 9), (6, 7, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_and_dice_match_set_implementation(shape, seed):
    rng = np.random.default_rng(seed)
    pred = rng.random(shape) > 0.5
    truth = (rng.random(shape) > 0.6).astype(np.uint8)
    assert iou(pred, truth) == pytest.approx(set_iou(pred, truth))
    assert dice(pred, truth) == pytest.approx(set_dice(pred, truth))


def test_dice_and_iou_are_related():
    rng = np.random.default_rng(3)
    pred, truth = rng.random((20, 20)) > 0.5, rng.random((20, 20)) > 0.5
    j = iou(pred, truth)
    assert dice(pred, truth) == pytest.approx(2 * j / (1 + j))


def test_empty_mask_conventions():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert iou(empty, full) == 0.0 and dice(full, empty) == 0.0
    assert np.isnan(iou(empty, empty, empty_score=np.nan))
    assert dice(empty, empty, empty_score=0.0) == 0.0


def test_masks_must_be_binary_and_same_shape():
    with pytest.raises(ValueError, match="binary mask"):
        iou(np.array([0.2, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def loop_per_class(pred_labels, true_labels, num_classes, score):
    result = []
    for c in range(num_classes):
        a, b = voxel_set(pred_labels == c), voxel_set(true_labels == c)
        if not a and not b:
            result.append(np.nan)
        elif score == "iou":
            result.append(len(a & b) / len(a | b))
        else:
            result.append(2 * len(a & b) / (len(a) + len(b)))
    return np.array(result)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_scores_match_loop(seed):
    rng = np.random.default_rng(seed)
    true_labels = rng.integers(0, 4, (8, 9, 3)).astype(np.uint8)  # class 4 absent
    pred_labels = rng.integers(0, 4, (8, 9, 3))
    pred_labels[0, 0, 0] = 4  # predicted only: scores 0
    ious = per_class_iou(pred_labels, true_labels, 6)
    dices = per_class_dice(pred_labels, true_labels, 6)
    assert ious.shape == dices.shape == (6,)
    np.testing.assert_allclose(ious, loop_per_class(pred_labels, true_labels, 6, "iou"))
    np.testing.assert_allclose(dices, loop_per_class(pred_labels, true_labels, 6, "dice"))
    assert ious[4] == 0.0 and np.isnan(ious[5]) and np.isnan(dices[5])


def test_per_class_agrees_with_binary_functions():
    rng = np.random.default_rng(4)
    true_labels, pred_labels = rng.integers(0, 3, (2, 10, 10)), rng.integers(0, 3, (2, 10, 10))
    for c, value in enumerate(per_class_dice(pred_labels, true_labels, 3)):
        assert value == pytest.approx(dice(pred_labels == c, true_labels == c))
    assert per_class_iou(pred_labels, true_labels, 4, empty_score=1.0)[3] == 1.0


def test_per_class_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside 0..2"):
        per_class_iou(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="integer"):
        per_class_dice(np.array([0.0, 1.0]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="differ in shape"):
        per_class_iou(np.zeros(3, int), np.zeros(4, int), 2)


def test_threshold_sweep_peaks_where_the_truth_was_cut():
    # Probability falling off with the distance from the centre; the truth is the disc
    # where it exceeds 0.55. Thresholds below give supersets, above give subsets.
    rows, cols = np.mgrid[:41, :41]
    prob = np.exp(-((rows - 20.0) ** 2 + (cols - 20.0) ** 2) / 150.0)
    truth = prob > 0.55
    thresholds = np.linspace(0.05, 0.95, 19)
    ious = threshold_sweep(prob, truth, thresholds)
    assert ious.shape == (19,)
    expected = [set_iou(prob > t, truth) for t in thresholds]
    np.testing.assert_allclose(ious, expected)
    peak = int(np.argmax(ious))
    assert thresholds[peak] == pytest.approx(0.55) and ious[peak] == 1.0
    assert np.all(np.diff(ious[: peak + 1]) >= 0) and np.all(np.diff(ious[peak:]) <= 0)
    np.testing.assert_allclose(threshold_sweep(prob, truth, thresholds[::-1]), ious[::-1])


def test_threshold_sweep_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        threshold_sweep(np.array([np.nan, 0.5]), np.array([0, 1]), [0.5])


@pytest.mark.parametrize(("axis", "shift"), [(0, 3), (1, 3), (0, -4), (1, 5)])
def test_hausdorff95_of_shifted_squares_is_the_shift(axis, shift):
    spacing = (0.5, 2.0)
    square = np.zeros((40, 40), bool)
    square[10:25, 12:27] = True
    moved = np.roll(square, shift, axis=axis)
    assert hausdorff95(square, moved, spacing) == pytest.approx(abs(shift) * spacing[axis])
    assert hausdorff95(moved, square, spacing) == pytest.approx(abs(shift) * spacing[axis])


def test_hausdorff95_of_shifted_cubes_in_3d():
    cube = np.zeros((20, 20, 12), bool)
    cube[5:13, 4:12, 2:8] = True
    moved = np.roll(cube, 2, axis=2)
    assert hausdorff95(cube, moved, spacing=(0.6, 0.6, 3.0)) == pytest.approx(6.0)
    assert hausdorff95(cube, cube) == 0.0


def test_hausdorff95_ignores_a_single_stray_voxel():
    square = np.zeros((60, 60), bool)
    square[10:40, 10:40] = True
    noisy = square.copy()
    noisy[55, 55] = True  # 1 of 117 surface voxels, 15 * sqrt(2) away
    assert hausdorff95(noisy, square) == 0.0


def test_hausdorff95_empty_conventions_and_bad_spacing():
    empty = np.zeros((5, 5), bool)
    dot = empty.copy()
    dot[2, 2] = True
    assert hausdorff95(empty, empty) == 0.0
    assert hausdorff95(dot, empty) == np.inf and hausdorff95(empty, dot) == np.inf
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(dot, dot, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(dot, dot, spacing=(1.0, 0.0))


def random_batch(seed: int, shape=(3, 16, 16, 1)):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) > 0.7).astype(np.float32), rng.random(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("metric_class", "reference"), [(ThresholdedDice, dice), (ThresholdedIoU, iou)]
)
def test_keras_metric_equals_numpy_on_a_batch(metric_class, reference):
    masks, probabilities = random_batch(0)
    metric = metric_class(threshold=0.4)
    metric.update_state(masks, probabilities)
    expected = reference(probabilities > 0.4, masks)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("metric_class", "reference"), [(ThresholdedDice, dice), (ThresholdedIoU, iou)]
)
def test_keras_metric_pools_batches_and_resets(metric_class, reference):
    first, second = random_batch(1), random_batch(2, shape=(2, 16, 16, 1))
    metric = metric_class()
    metric.update_state(*first)
    metric.update_state(second[0][..., 0], second[1])  # (batch, H, W) truth is fine
    masks = np.concatenate([first[0], second[0]])
    probabilities = np.concatenate([first[1], second[1]])
    assert float(metric.result()) == pytest.approx(reference(probabilities > 0.5, masks), rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 1.0  # nothing seen: both empty
    metric.update_state(np.zeros((1, 4, 4, 1)), np.full((1, 4, 4, 1), 0.9))
    assert float(metric.result()) == 0.0


def test_keras_metric_sample_weight_drops_an_example():
    masks, probabilities = random_batch(5)
    metric = ThresholdedDice()
    metric.update_state(masks, probabilities, sample_weight=np.array([1.0, 0.0, 1.0]))
    expected = dice(probabilities[[0, 2]] > 0.5, masks[[0, 2]])
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)


def test_keras_metric_config_round_trip():
    metric = ThresholdedIoU(threshold=0.3, name="val_iou")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(clone) is ThresholdedIoU
    assert clone.threshold == 0.3 and clone.name == "val_iou"


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from prostseg.networks.metrics import ThresholdedDice, dice

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    masks = (rng.random((4, 8, 8, 1)) > 0.6).astype("float32")
    probabilities = rng.random((4, 8, 8, 1)).astype("float32")
    with strategy.scope():
        metric = ThresholdedDice()
    dataset = tf.data.Dataset.from_tensor_slices((masks, probabilities)).batch(4)
    for batch in strategy.experimental_distribute_dataset(dataset):
        strategy.run(tf.function(metric.update_state), args=batch)
    assert strategy.num_replicas_in_sync == 2
    print(float(metric.result()), dice(probabilities > 0.5, masks))
    """
)


@pytest.mark.slow
def test_keras_metric_sums_replicas_under_mirrored_strategy():
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result, expected = map(float, completed.stdout.split()[-2:])
    assert result == pytest.approx(expected, rel=1e-6)
