"""Segmentation metrics: numpy functions for evaluation, Keras metrics for training logs.

The numpy functions are the reference the book's results are computed with:

* :func:`iou`, :func:`dice` -- overlap of two binary masks of any dimension (a slice or
  a volume).
* :func:`per_class_iou`, :func:`per_class_dice` -- the same for each class of two label
  maps (zones).
* :func:`threshold_sweep` -- IoU of a probability map thresholded at several values.
* :func:`hausdorff95` -- 95th percentile symmetric surface distance, in mm.

:class:`ThresholdedIoU` and :class:`ThresholdedDice` are ``keras.metrics.Metric``
objects that follow the same conventions during ``model.fit``.

Conventions for empty masks
---------------------------
* Binary masks, both empty: IoU and Dice are **1.0** (``empty_score``). For lesion
  segmentation most slices, and some patients, have no lesion; a prediction of "no
  lesion" there is exactly right and scoring it 0 (or dropping it) would reward models
  that hallucinate lesions less harshly than ones that stay silent. This is also the
  limit of the smoothed Dice loss in :mod:`prostseg.networks.losses`.
* Binary masks, exactly one empty: 0.0 (no overlap; follows from the formulas).
* Per-class scores, class absent from both label maps: **NaN** (``empty_score``).
  A per-class vector is averaged over classes and cases; a class that is not annotated
  in a case (e.g. central zone, which many data sets merge into the transition zone)
  says nothing about how well it is segmented, so it must not count as a perfect 1.0.
  Average with ``np.nanmean``.
* :func:`hausdorff95`: both empty -> 0.0 (perfect agreement, consistent with Dice 1.0);
  exactly one empty -> ``inf`` (no surface to measure to; report such cases
  separately, e.g. count ``np.isinf``).

Masks are thresholded as ``probability > threshold`` everywhere (the Keras rule).

Examples
--------
>>> import numpy as np
>>> pred = np.array([0, 1, 1, 0], bool)
>>> truth = np.array([0, 1, 0, 0], bool)
>>> iou(pred, truth), dice(pred, truth)
(0.5, 0.6666666666666666)
>>> iou(np.zeros(4, bool), np.zeros(4, bool))
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops
from scipy import ndimage

__all__ = [
    "ThresholdedDice",
    "ThresholdedIoU",
    "dice",
    "hausdorff95",
    "iou",
    "per_class_dice",
    "per_class_iou",
    "threshold_sweep",
]


def _as_mask(array, name: str) -> np.ndarray:
    """``array`` as a bool array; raise ValueError unless it holds only 0/1 values."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(
            f"{name} must be a binary mask (bool or 0/1 values), got values such as "
            f"{np.unique(array)[:5].tolist()}; threshold probabilities first"
        )
    return array.astype(bool)


def _check_same_shape(first: np.ndarray, second: np.ndarray, names: str) -> None:
    if first.shape != second.shape:
        raise ValueError(f"{names} differ in shape: {first.shape} vs {second.shape}")


def _overlap_counts(pred, truth) -> tuple[int, int, int]:
    """(intersection, predicted, true) voxel counts of two binary masks."""
    pred = _as_mask(pred, "pred")
    truth = _as_mask(truth, "truth")
    _check_same_shape(pred, truth, "pred and truth")
    return (
        int(np.count_nonzero(pred & truth)),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(truth)),
    )


def iou(pred, truth, *, empty_score: float = 1.0) -> float:
    """Intersection over union (Jaccard index) of two binary masks.

    Parameters
    ----------
    pred, truth : array_like of bool or 0/1
        Masks of the same shape, any number of dimensions.
    empty_score : float
        Returned when both masks are empty (see the module notes).

    Returns
    -------
    float
        ``|pred & truth| / |pred | truth|`` in ``[0, 1]``.

    Examples
    --------
    >>> iou([1, 1, 0, 0], [0, 1, 1, 0])
    0.3333333333333333
    """
    intersection, predicted, true = _overlap_counts(pred, truth)
    union = predicted + true - intersection
    return float(empty_score) if union == 0 else intersection / union


def dice(pred, truth, *, empty_score: float = 1.0) -> float:
    """Dice coefficient (F1 score) of two binary masks.

    Parameters
    ----------
    pred, truth : array_like of bool or 0/1
        Masks of the same shape, any number of dimensions.
    empty_score : float
        Returned when both masks are empty (see the module notes).

    Returns
    -------
    float
        ``2 |pred & truth| / (|pred| + |truth|)`` in ``[0, 1]``.

    Examples
    --------
    >>> dice([1, 1, 0, 0], [0, 1, 1, 0])
    0.5
    """
    intersection, predicted, true = _overlap_counts(pred, truth)
    total = predicted + true
    return float(empty_score) if total == 0 else 2 * intersection / total


def _confusion_counts(pred_labels, true_labels, num_classes: int):
    """Per-class (intersection, predicted, true) counts of two label maps."""
    pred_labels = np.asarray(pred_labels)
    true_labels = np.asarray(true_labels)
    _check_same_shape(pred_labels, true_labels, "pred_labels and true_labels")
    for name, labels in (("pred_labels", pred_labels), ("true_labels", true_labels)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} holds class ids outside 0..{num_classes - 1}: "
                f"min {labels.min()}, max {labels.max()}"
            )
    pairs = true_labels.astype(np.int64).ravel() * num_classes + pred_labels.ravel()
    confusion = np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, -1)
    return np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)


def per_class_iou(
    pred_labels, true_labels, num_classes: int, *, empty_score: float = np.nan
) -> np.ndarray:
    """IoU of each class of two integer label maps.

    Parameters
    ----------
    pred_labels, true_labels : array_like of int
        Label maps of the same shape with ids ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes (background included, as class 0).
    empty_score : float
        Score of a class absent from both maps (NaN: see the module notes).

    Returns
    -------
    numpy.ndarray
        Shape ``(num_classes,)``, float64.

    Examples
    --------
    >>> per_class_iou([0, 1, 1, 2], [0, 1, 2, 2], 4)
    array([1. , 0.5, 0.5, nan])
    """
    intersection, predicted, true = _confusion_counts(pred_labels, true_labels, num_classes)
    union = predicted + true - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, empty_score)


def per_class_dice(
    pred_labels, true_labels, num_classes: int, *, empty_score: float = np.nan
) -> np.ndarray:
    """Dice coefficient of each class of two integer label maps.

    Parameters and conventions as in :func:`per_class_iou`.

    Examples
    --------
    >>> per_class_dice([0, 1, 1, 2], [0, 1, 2, 2], 4)
    array([1.        , 0.66666667, 0.66666667,        nan])
    """
    intersection, predicted, true = _confusion_counts(pred_labels, true_labels, num_classes)
    total = predicted + true
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * intersection / total, empty_score)


def threshold_sweep(
    prob, truth, thresholds: Sequence[float] = tuple(np.linspace(0.1, 0.9, 9))
) -> np.ndarray:
    """IoU of ``prob > threshold`` against ``truth`` for each threshold.

    Choose the operating threshold on validation data with this, never on the test set.

    Parameters
    ----------
    prob : array_like of float
        Foreground probabilities, any shape.
    truth : array_like of bool or 0/1
        Mask of the same shape.
    thresholds : sequence of float
        Thresholds, in any order.

    Returns
    -------
    numpy.ndarray
        IoU per threshold, in the order of ``thresholds``.

    Examples
    --------
    >>> threshold_sweep([0.2, 0.6, 0.9], [0, 1, 1], [0.1, 0.5, 0.8])
    array([0.66666667, 1.        , 0.5       ])
    """
    prob = np.asarray(prob, dtype=float)
    truth = _as_mask(truth, "truth")
    _check_same_shape(prob, truth, "prob and truth")
    if not np.all(np.isfinite(prob)):
        raise ValueError("prob holds NaN or infinite values")
    return np.array([iou(prob > threshold, truth) for threshold in thresholds])


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (or on the array border)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hausdorff95(pred, truth, spacing: Sequence[float] | None = None) -> float:
    """95th percentile Hausdorff distance between the surfaces of two binary masks.

    The surface of a mask is its voxels with a face neighbour outside it. For each
    surface voxel of one mask the Euclidean distance (in mm, via ``spacing``) to the
    nearest surface voxel of the other is measured with a distance transform; the
    result is the larger of the two directed 95th percentiles (linear interpolation),
    as in Nikolov et al. 2018 ("robust Hausdorff"). Unlike the maximum, it ignores the
    5 % most distant surface points, so one stray voxel does not dominate.

    Parameters
    ----------
    pred, truth : array_like of bool or 0/1
        Masks of the same shape (2D slice or 3D volume).
    spacing : sequence of float, optional
        Voxel size along each axis in mm (e.g. ``Volume.spacing``); 1 by default.

    Returns
    -------
    float
        Distance in the units of ``spacing``; 0.0 if both masks are empty, ``inf`` if
        exactly one is.

    Examples
    --------
    >>> square = np.zeros((20, 20), bool)
    >>> square[5:12, 5:12] = True
    >>> hausdorff95(square, np.roll(square, 3, axis=0), spacing=(0.5, 0.5))
    1.5
    """
    pred = _as_mask(pred, "pred")
    truth = _as_mask(truth, "truth")
    _check_same_shape(pred, truth, "pred and truth")
    if spacing is None:
        spacing = (1.0,) * pred.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or min(spacing) <= 0:
        raise ValueError(
            f"spacing must hold {pred.ndim} positive values, one per axis, got {spacing}"
        )
    pred_has, truth_has = pred.any(), truth.any()
    if not (pred_has or truth_has):
        return 0.0
    if not (pred_has and truth_has):
        return float("inf")
    pred_surface, truth_surface = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return float(
        max(
            np.percentile(to_truth[pred_surface], 95),
            np.percentile(to_pred[truth_surface], 95),
        )
    )


class _ThresholdedOverlap(keras.metrics.Metric):
    """Accumulates thresholded intersection and mask sizes over batches (an epoch).

    The score is computed from the totals (pooled over every pixel seen since the last
    reset), not averaged per image. State variables are sums, so replicas of a
    ``tf.distribute`` strategy are combined by adding them. Subclasses give the score
    (``result``) and the default ``name``.
    """

    #: The name of the metric in training logs, unless one is given.
    default_name: str

    def __init__(self, threshold: float = 0.5, name: str | None = None, dtype=None):
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.threshold = float(threshold)
        self.intersection = self.add_variable((), "zeros", name="intersection")
        self.predicted = self.add_variable((), "zeros", name="predicted")
        self.true = self.add_variable((), "zeros", name="true")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: ``y_true`` 0/1 masks, ``y_pred`` probabilities (same size).

        ``sample_weight``, if given, weights each example (shape ``(batch,)``) or each
        pixel (broadcastable to ``y_pred``).
        """
        y_pred = ops.convert_to_tensor(y_pred)
        predicted = ops.cast(y_pred > self.threshold, self.dtype)
        true = ops.cast(ops.not_equal(ops.reshape(y_true, ops.shape(y_pred)), 0), self.dtype)
        if sample_weight is not None:
            weight = ops.cast(sample_weight, self.dtype)
            while len(weight.shape) < len(y_pred.shape):
                weight = ops.expand_dims(weight, -1)
            predicted = predicted * weight
            true = true * weight
        self.intersection.assign_add(ops.sum(ops.minimum(predicted, true)))
        self.predicted.assign_add(ops.sum(predicted))
        self.true.assign_add(ops.sum(true))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="prostseg")
class ThresholdedIoU(_ThresholdedOverlap):
    """IoU of ``y_pred > threshold`` against ``y_true``, pooled over an epoch.

    Equals :func:`iou` of the concatenated batches; 1.0 when both are empty.

    Parameters
    ----------
    threshold : float
        Probabilities above it count as foreground.
    name : str
        Name in training logs.

    Examples
    --------
    >>> for metric in (ThresholdedIoU(), ThresholdedDice()):
    ...     metric.update_state([[0.0, 1.0, 1.0]], [[0.2, 0.7, 0.4]])
    ...     print(metric.name, round(float(metric.result()), 4))
    iou 0.5
    dice 0.6667
    """

    default_name = "iou"

    def result(self):
        union = self.predicted + self.true - self.intersection
        return ops.where(union > 0, self.intersection / ops.maximum(union, 1e-12), 1.0)


@keras.saving.register_keras_serializable(package="prostseg")
class ThresholdedDice(_ThresholdedOverlap):
    """Dice of ``y_pred > threshold`` against ``y_true``, pooled over an epoch.

    Equals :func:`dice` of the concatenated batches; 1.0 when both are empty.

    Parameters
    ----------
    threshold, name
        As for :class:`ThresholdedIoU` (examples there).
    """

    default_name = "dice"

    def result(self):
        total = self.predicted + self.true
        return ops.where(total > 0, 2.0 * self.intersection / ops.maximum(total, 1e-12), 1.0)
