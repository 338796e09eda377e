"""Detection metrics agree with the PI-CAI reference implementation (picai_eval) on
generated cases: lesions, near misses, false alarms, healthy patients, ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from prostseg.use.detection import FROC_FP_RATES, detection_map, detection_metrics, match_lesions

SHAPE = (40, 40, 8)


def _blob(centre, radius, shape=SHAPE) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    scale = np.array([1.0, 1.0, 3.0])[:, None, None, None]  # thick slices, as in MRI
    distance = np.sqrt((((grid - np.array(centre)[:, None, None, None]) / scale) ** 2).sum(0))
    return np.clip(1.0 - distance / radius, 0.0, 1.0)


def _generated_cases(seed: int, n_cases: int = 14):
    """Truth masks and probability maps: each lesion found (with a random shift and
    confidence), or missed; random false alarms; some patients healthy."""
    rng = np.random.default_rng(seed)
    truths, probabilities = [], []
    for _ in range(n_cases):
        truth = np.zeros(SHAPE, np.uint8)
        prob = np.zeros(SHAPE, np.float32)
        for _ in range(rng.integers(0, 3)):
            centre = rng.uniform([6, 6, 1], [34, 34, 7])
            truth |= (_blob(centre, 4.0) > 0).astype(np.uint8)
            if rng.random() < 0.75:
                shift = rng.normal(0, 1.5, 3) * [1, 1, 0.3]
                prob = np.maximum(prob, rng.uniform(0.2, 1.0) * _blob(centre + shift, rng.uniform(3, 5)))
        for _ in range(rng.integers(0, 3)):
            prob = np.maximum(prob, rng.uniform(0.05, 0.9) * _blob(rng.uniform([4, 4, 1], [36, 36, 7]), 3.5))
        probabilities.append(prob.round(2))  # rounding makes tied confidences
        truths.append(truth)
    return truths, probabilities


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_picai_eval(seed):
    picai_eval = pytest.importorskip("picai_eval")
    truths, probabilities = _generated_cases(seed)
    maps = [detection_map(prob) for prob in probabilities]
    ours = detection_metrics(maps, truths)
    reference = picai_eval.evaluate(y_det=maps, y_true=truths, num_parallel_calls=1)
    assert ours.num_lesions == reference.num_lesions > 3 and ours.num_cases == reference.num_cases
    assert 0 < ours.ap < 1 and 0 < ours.auroc < 1  # cases that are neither trivial nor hopeless
    assert ours.ap == pytest.approx(reference.AP, abs=1e-9)
    assert ours.auroc == pytest.approx(reference.auroc, abs=1e-9)
    assert ours.score == pytest.approx(reference.score, abs=1e-9)
    for rate in FROC_FP_RATES:
        assert ours.froc[rate] == pytest.approx(reference.lesion_TPR_at_FPR(rate), abs=1e-9)
    for case, (truth, detections) in enumerate(zip(truths, maps)):
        ours_case, reference_case = sorted(match_lesions(detections, truth)), sorted(reference.lesion_results[case])
        assert len(ours_case) == len(reference_case)
        if ours_case:
            np.testing.assert_allclose(np.array(ours_case, float), np.array(reference_case, float), atol=1e-6)


def test_detection_map_agrees_with_picai_candidate_extraction():
    extraction = pytest.importorskip("report_guided_annotation")
    _, probabilities = _generated_cases(5, n_cases=10)
    for prob in probabilities:
        ours = detection_map(prob)
        reference = extraction.extract_lesion_candidates(prob, threshold="dynamic-v2")[0]
        np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_detection_map_keeps_candidates_apart_and_drops_small_ones():
    prob = np.zeros(SHAPE, np.float32)
    prob[10:14, 10:14, 2:4] = 0.9
    prob[14:18, 10:14, 2:4] = 0.6      # touches the first: a second candidate?
    prob[30, 30, 3:6] = 0.95           # three voxels: too small
    detections = detection_map(prob)
    assert not detections[30, 30].any()
    _, count = ndimage.label(detections > 0, structure=np.ones((3, 3, 3)))
    assert count == 1 and detections.max() == pytest.approx(0.9)


def test_healthy_cases_only_make_false_positives_and_misses_count():
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[5:10, 5:10, 2:4] = 1
    far = np.zeros(SHAPE, np.float32)
    far[30:34, 30:34, 2:4] = 0.7
    assert match_lesions(far, lesion) == [(1, 0.0, 0.0), (0, pytest.approx(0.7), 0.0)]
    assert match_lesions(far, np.zeros(SHAPE)) == [(0, pytest.approx(0.7), 0.0)]
    with pytest.raises(ValueError, match="differ in shape"):
        match_lesions(far, lesion[:-1])
