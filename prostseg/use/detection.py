"""Lesion detection metrics as the PI-CAI challenge defines them.

Why not Dice? A lesion covers a few hundred voxels of a million. Dice of a whole
volume is dominated by the largest lesion, is undefined (or arbitrarily 1) when a
patient has none, and does not say what a radiologist needs to know: *was each lesion
found, and how many false alarms came with it?* PI-CAI (Saha et al., 2024) therefore
scores detections, not voxels:

1. A probability map becomes a **detection map** (:func:`detection_map`): a few
   separate lesion candidates, each a connected region whose voxels all hold the
   candidate's confidence (its peak probability).
2. Each candidate is matched to a true lesion (:func:`match_lesions`): it is a hit
   when its overlap (IoU) with the lesion is at least 0.1; candidates and lesions are
   paired one to one, maximising the number of hits and then their overlap
   (Hungarian algorithm). Unmatched candidates are false positives; unmatched
   lesions are misses (confidence 0).
3. Over all cases (:func:`detection_metrics`):

   * **AP** -- average precision of the lesion detections (area under the
     precision-recall curve, as a step function);
   * **AUROC** -- case level: is there a lesion in this patient? The case's score
     is the highest confidence of its detection map;
   * the **PI-CAI ranking score** -- ``(AUROC + AP) / 2``;
   * **FROC** points -- lesion sensitivity at given numbers of false positives per
     case (0.25, 0.5, 1, 2 and 3 by default).

Components are 26-connected (voxels sharing a face, edge or corner), as in PI-CAI.
These definitions are those of the reference implementation ``picai_eval``
(version 1.4); the test suite checks that both give the same numbers on generated
cases. The candidate extraction follows its "dynamic" method in a simpler form (see
:func:`detection_map`).

Examples
--------
>>> truth = np.zeros((12, 12, 4), np.uint8)
>>> truth[2:5, 2:5, 1:3] = 1                       # one lesion
>>> probabilities = np.zeros(truth.shape, np.float32)
>>> probabilities[2:5, 2:5, 1:3] = 0.9             # found, confidently
>>> probabilities[8:11, 8:11, 1:3] = 0.3           # and a false alarm
>>> candidates = detection_map(probabilities, min_voxels=2)
>>> [round(float(c), 2) for c in np.unique(candidates)]
[0.0, 0.3, 0.9]
>>> [(hit, round(conf, 2)) for hit, conf, _ in match_lesions(candidates, truth)]
[(1, 0.9), (0, 0.3)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = [
    "DetectionMetrics",
    "FROC_FP_RATES",
    "MIN_OVERLAP",
    "detection_map",
    "detection_metrics",
    "match_lesions",
]

#: Smallest IoU of a candidate with a lesion that counts as a hit (PI-CAI).
MIN_OVERLAP = 0.1
#: False positives per case at which :func:`detection_metrics` reads the FROC curve.
FROC_FP_RATES = (0.25, 0.5, 1.0, 2.0, 3.0)


def _structure(ndim: int) -> np.ndarray:
    return np.ones((3,) * ndim, bool)


def detection_map(probabilities: ArrayLike, *, threshold_factor: float = 2.5, min_voxels: int = 10,
                  max_lesions: int = 5, stop_below: float = 0.01) -> np.ndarray:
    """Turn a lesion probability map into a detection map of separate candidates.

    PI-CAI's dynamic threshold (``report_guided_annotation``, method
    ``"dynamic-v2"``), with its defaults. Repeatedly, until ``max_lesions`` candidates
    are kept or the highest remaining probability ``p`` is below ``stop_below``:

    1. the regions of voxels at or above ``p / threshold_factor`` that have more than
       ``min_voxels`` voxels are found (none: the voxels above it leave the map, and
       the next round begins);
    2. the region holding the highest probability is the candidate; its voxels all
       get that confidence, unless it touches a candidate kept before (then it is
       dropped, so that candidates stay apart);
    3. its voxels leave the map.

    Parameters
    ----------
    probabilities : array_like, shape (X, Y, Z)
        Lesion probabilities in ``[0, 1]``, e.g. channel 0 of
        :func:`prostseg.use.inference.predict_probabilities`.
    threshold_factor : float, optional
        A candidate extends to ``1 / threshold_factor`` of its peak.
    min_voxels : int, optional
        Candidates need more voxels than this.
    max_lesions : int, optional
        At most this many candidates.
    stop_below : float, optional
        No candidate has a lower peak.

    Returns
    -------
    numpy.ndarray of float32, same shape
        0 outside the candidates; each candidate holds its confidence.

    Examples
    --------
    >>> probabilities = np.zeros((8, 8))
    >>> probabilities[1:4, 1:4] = [[0.2, 0.5, 0.2], [0.5, 0.8, 0.5], [0.2, 0.5, 0.2]]
    >>> detection_map(probabilities, min_voxels=1)[1:4, 1:4]  # 0.2 < 0.8 / 2.5: left out
    array([[0. , 0.8, 0. ],
           [0.8, 0.8, 0.8],
           [0. , 0.8, 0. ]], dtype=float32)
    """
    working = np.array(probabilities, dtype=np.float32)
    if working.size and (working.min() < 0 or not np.isfinite(working).all()):
        raise ValueError("probabilities must be finite and non-negative")
    structure = _structure(working.ndim)
    detections = np.zeros_like(working)
    found = 0
    while found < max_lesions and working.size:
        peak = working.max()  # float32 throughout, comparisons included
        if peak < stop_below:
            break
        threshold = peak / threshold_factor
        regions, count = ndimage.label(working >= threshold, structure=structure)
        sizes = np.bincount(regions.ravel(), minlength=count + 1)
        maxima = ndimage.maximum(working, regions, index=np.arange(count + 1))
        maxima[(sizes <= min_voxels) | (np.arange(count + 1) == 0)] = 0
        if not maxima.any():
            working[working > threshold] = 0
            continue
        region = regions == int(np.argmax(maxima))  # the first of equal maxima
        if not (region & ndimage.binary_dilation(detections > 0, structure=structure)).any():
            detections[region] = maxima.max()
            found += 1
        working[region] = 0
    return detections


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.count_nonzero(first | second)
    return np.count_nonzero(first & second) / union if union else 0.0


def match_lesions(detections: ArrayLike, truth: ArrayLike, *,
                  min_overlap: float = MIN_OVERLAP) -> list[tuple[int, float, float]]:
    """Match the candidates of one detection map to the true lesions of one case.

    Parameters
    ----------
    detections : array_like
        A detection map (:func:`detection_map`): connected candidates of constant,
        non-negative confidence.
    truth : array_like, same shape
        Lesion mask (non-zero: lesion); its connected components are the lesions.
    min_overlap : float, optional
        Smallest IoU of a hit.

    Returns
    -------
    list of (int, float, float)
        ``(is_lesion, confidence, overlap)``: one entry per hit ``(1, c, IoU)``, per
        missed lesion ``(1, 0.0, 0.0)`` and per false positive ``(0, c, 0.0)``. A
        candidate that overlaps a lesion enough but lost it to a better candidate is
        not counted as a false positive (as in PI-CAI).
    """
    detections = np.asarray(detections, dtype=np.float32)
    truth = np.asarray(truth) != 0
    if detections.shape != truth.shape:
        raise ValueError(f"detection map {detections.shape} and truth {truth.shape} differ in shape")
    if detections.size and detections.min() < 0:
        raise ValueError("detection confidences must be non-negative")
    structure = _structure(detections.ndim)
    candidates, n_candidates = ndimage.label(detections > 0, structure=structure)
    confidences = [float(detections[candidates == i + 1].max()) for i in range(n_candidates)]
    lesions, n_lesions = ndimage.label(truth, structure=structure)
    if n_lesions == 0:
        return [(0, confidence, 0.0) for confidence in confidences]
    overlap = np.zeros((n_lesions, n_candidates))
    for j in range(n_candidates):
        candidate = candidates == j + 1
        for i in np.unique(lesions[candidate]):
            if i:
                overlap[i - 1, j] = _iou(candidate, lesions == i)
    overlap[overlap < min_overlap] = 0
    priority = np.where(overlap > 0, overlap + 1, 0)  # first the number of hits, then overlap
    rows, cols = linear_sum_assignment(priority, maximize=True)
    hits = [(i, j) for i, j in zip(rows, cols) if overlap[i, j] > 0]
    results = [(1, confidences[j], float(overlap[i, j])) for i, j in hits]
    results += [(1, 0.0, 0.0)] * (n_lesions - len(hits))
    near_a_lesion = (overlap > 0).any(axis=0)
    results += [(0, confidences[j], 0.0) for j in range(n_candidates) if not near_a_lesion[j]]
    return results


@dataclass(frozen=True)
class DetectionMetrics:
    """Scores of :func:`detection_metrics`.

    Attributes
    ----------
    ap : float
        Lesion-level average precision.
    auroc : float
        Case-level area under the ROC curve (NaN unless both kinds of cases occur).
    score : float
        PI-CAI ranking score ``(auroc + ap) / 2``.
    froc : dict
        ``{false positives per case: lesion sensitivity}``.
    num_cases, num_lesions : int
    lesions : list
        Every ``(is_lesion, confidence, overlap)`` entry of every case.
    """

    ap: float
    auroc: float
    score: float
    froc: dict
    num_cases: int
    num_lesions: int
    lesions: list = field(repr=False)


def _average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Step-function area under the precision-recall curve; misses (score 0) add
    recall that no threshold reaches, so they only lower the recall."""
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    ap, previous_recall = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        if threshold <= 0:
            break  # the misses: precision 0 there (PI-CAI)
        selected = scores >= threshold
        true_positives = targets[selected].sum()
        recall = true_positives / positives
        ap += (recall - previous_recall) * true_positives / selected.sum()
        previous_recall = recall
    return float(ap)


def _auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a case with lesions scores higher than one without (ties 1/2)."""
    positive, negative = scores[targets == 1], scores[targets == 0]
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))


def _froc(targets: np.ndarray, scores: np.ndarray, num_cases: int, rates: Sequence[float]) -> dict:
    """Lesion sensitivity at each number of false positives per case. As in
    ``picai_eval``, the curve runs over the distinct scores from high to low and its
    lowest one stands for an infinite number of false positives."""
    positives = targets.sum()
    thresholds = np.unique(scores)[::-1]
    true_positives = np.array([targets[scores >= t].sum() for t in thresholds], dtype=float)
    false_positives = np.array([(1 - targets)[scores >= t].sum() for t in thresholds], dtype=float)
    if len(thresholds) >= 2:
        true_positives[-1], false_positives[-1] = true_positives[-2], np.inf
    else:
        true_positives, false_positives = np.zeros(2), np.array([0.0, np.inf])
    sensitivity = true_positives / positives if positives else np.full(len(true_positives), np.nan)
    per_case = false_positives / num_cases
    return {float(rate): (float(sensitivity[per_case <= rate][-1]) if (per_case <= rate).any() else 0.0)
            for rate in rates}


def detection_metrics(detection_maps: Sequence[ArrayLike], truths: Sequence[ArrayLike], *,
                      min_overlap: float = MIN_OVERLAP,
                      fp_rates: Sequence[float] = FROC_FP_RATES) -> DetectionMetrics:
    """PI-CAI detection scores of a set of cases (module documentation).

    Parameters
    ----------
    detection_maps : sequence of array_like
        One detection map per case (:func:`detection_map`).
    truths : sequence of array_like
        The lesion masks, in the same order and shapes.
    min_overlap : float, optional
        Smallest IoU of a hit.
    fp_rates : sequence of float, optional
        False positives per case at which to read lesion sensitivity (FROC).

    Returns
    -------
    DetectionMetrics

    Examples
    --------
    >>> hit = np.zeros((6, 6, 2)); hit[1:3, 1:3] = 0.8
    >>> lesion = (hit > 0).astype(np.uint8)
    >>> alarm = np.zeros((6, 6, 2)); alarm[4:6, 4:6] = 0.4
    >>> healthy = np.zeros((6, 6, 2), np.uint8)
    >>> metrics = detection_metrics([hit, alarm], [lesion, healthy])
    >>> metrics.ap, metrics.auroc, metrics.score
    (1.0, 1.0, 1.0)
    >>> metrics.froc[0.25]
    1.0
    """
    if len(detection_maps) != len(truths):
        raise ValueError(f"{len(detection_maps)} detection maps but {len(truths)} truths")
    if not truths:
        raise ValueError("no cases to score")
    lesions, case_targets, case_scores = [], [], []
    for detections, truth in zip(detection_maps, truths):
        detections = np.asarray(detections, dtype=np.float32)
        lesions += match_lesions(detections, truth, min_overlap=min_overlap)
        case_targets.append(int(np.any(np.asarray(truth) != 0)))
        case_scores.append(float(detections.max()) if detections.size else 0.0)
    targets = np.array([entry[0] for entry in lesions], dtype=int)
    scores = np.array([entry[1] for entry in lesions], dtype=float)
    ap = _average_precision(targets, scores)
    auroc = _auroc(np.array(case_targets), np.array(case_scores))
    return DetectionMetrics(ap=ap, auroc=auroc, score=(ap + auroc) / 2,
                            froc=_froc(targets, scores, len(truths), fp_rates),
                            num_cases=len(truths), num_lesions=int(targets.sum()), lesions=lesions)
