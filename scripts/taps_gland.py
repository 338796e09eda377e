"""TAPS whole-gland masks with onnxruntime and NumPy alone: the teacher of the shipped labels.

TAPS (``lavlab-taps`` on the package index, MIT licence) is a published whole-gland
model for axial T2W prostate MRI: a 3D SegResNet whose ONNX weights ship inside its
wheel (``taps/resources/model_v1.onnx``). Its own package runs them through MONAI and
PyTorch; this module does the same steps with NumPy and SciPy, so that making the
shipped masks needs nothing beyond onnxruntime:

1. the T2W volume in RAS order (:func:`prostseg.data.io.load_volume`) resampled to
   0.8 x 0.8 x 3.0 mm (trilinear, the first voxel centre kept);
2. a z-score over the non-zero voxels (zeros stay zero);
3. the box of the voxels above that mean, grown by 5 voxels (MONAI's
   ``CropForeground`` with its default selection), padded to at least one window;
4. sliding windows of 128 x 128 x 32 voxels, half overlapping, blended with Gaussian
   weights (sigma 1/8 of the window);
5. optionally the mean of the logits over mirror images (test-time augmentation);
6. a Gaussian of sigma 2.5 voxels on the logits;
7. the logits resampled back onto the source grid (trilinear), a sigmoid and a
   threshold (TAPS: 0.55);
8. optionally the largest connected component.

Outside the box of step 3 the logit is taken as -20 (TAPS pads with 0, a probability
of 0.5, which its threshold of 0.55 also calls background; -20 keeps that true for
any threshold).

:func:`gland_logits` returns the logits of step 7 so that thresholds can be compared
without running the network again; :func:`gland_mask` applies steps 7-8.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from prostseg.use import postprocessing
from prostseg.data.io import Volume

#: TAPS's settings (``taps.inference``), recorded with every mask made here.
TAPS_SPACING = (0.8, 0.8, 3.0)
TAPS_WINDOW = (128, 128, 32)
TAPS_OVERLAP = 0.5
TAPS_LOGIT_SIGMA = 2.5
TAPS_THRESHOLD = 0.55
TAPS_CROP_MARGIN = 5
OUTSIDE_LOGIT = -20.0


def _resample(data: np.ndarray, ratio, shape, order: int = 1) -> np.ndarray:
    """Values at voxel positions ``index * ratio`` of ``data``, for an output of ``shape``."""
    grid = np.meshgrid(*(np.arange(n, dtype=np.float64) * r for n, r in zip(shape, ratio)), indexing="ij")
    return ndimage.map_coordinates(data.astype(np.float32), grid, order=order, mode="nearest")


def _window_starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step)) + [size - window]
    return sorted(set(starts))


def _gaussian_weights(window) -> np.ndarray:
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (0.125 * n)) ** 2) for n in window]
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


def sliding_window(run, image: np.ndarray, window=TAPS_WINDOW, overlap: float = TAPS_OVERLAP) -> np.ndarray:
    """Apply ``run`` (a ``(1, 1, *window)`` float32 batch to logits) over a volume.

    The volume is zero-padded to at least one window (half before, half after);
    windows start every ``window * (1 - overlap)`` voxels and the last one ends at the
    border; overlapping outputs are blended with Gaussian weights.

    Examples
    --------
    >>> image = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    >>> out = sliding_window(lambda batch: batch * 2, image, window=(4, 4, 4))
    >>> bool(np.allclose(out, image * 2))
    True
    """
    pad = [max(w - n, 0) for n, w in zip(image.shape, window)]
    padded = np.pad(image, [(p // 2, p - p // 2) for p in pad])
    total = np.zeros(padded.shape, np.float32)
    weight_sum = np.zeros(padded.shape, np.float32)
    weights = _gaussian_weights(window)
    steps = [max(int(w * (1 - overlap)), 1) for w in window]
    for i in _window_starts(padded.shape[0], window[0], steps[0]):
        for j in _window_starts(padded.shape[1], window[1], steps[1]):
            for k in _window_starts(padded.shape[2], window[2], steps[2]):
                box = (slice(i, i + window[0]), slice(j, j + window[1]), slice(k, k + window[2]))
                logits = np.asarray(run(padded[box][None, None].astype(np.float32)))[0, 0]
                total[box] += logits * weights
                weight_sum[box] += weights
    out = total / weight_sum
    return out[tuple(slice(p // 2, p // 2 + n) for p, n in zip(pad, image.shape))]


def gland_logits(run, t2w: Volume, *, flips: tuple[tuple[int, ...], ...] = ((),)) -> np.ndarray:
    """TAPS logits on the grid of ``t2w`` (steps 1-7 of the module documentation).

    Parameters
    ----------
    run : callable
        ``(1, 1, 128, 128, 32)`` float32 batch -> logits of the same shape, e.g. an
        onnxruntime session's ``run`` wrapped by :func:`onnx_runner`.
    t2w : prostseg.data.io.Volume
        The T2W volume in RAS order.
    flips : tuple of tuple of int, optional
        Test-time augmentation: for each entry the axes to mirror (``()``: none);
        the logits are averaged over the entries.

    Returns
    -------
    numpy.ndarray
        float32 logits of shape ``t2w.shape``.
    """
    spacing = np.asarray(t2w.spacing)
    ratio = np.asarray(TAPS_SPACING) / spacing
    shape = tuple(max(int(round(n / r)), 1) for n, r in zip(t2w.shape, ratio))
    image = _resample(t2w.data, ratio, shape)
    nonzero = image != 0
    values = image[nonzero]
    image = np.where(nonzero, (image - values.mean()) / max(values.std(), 1e-8), 0).astype(np.float32)
    selected = np.argwhere(image > 0)
    low = np.maximum(selected.min(axis=0) - TAPS_CROP_MARGIN, 0)
    high = np.minimum(selected.max(axis=0) + 1 + TAPS_CROP_MARGIN, image.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    logits = np.zeros(image[box].shape, np.float32)
    for axes in flips:
        flipped = np.flip(image[box], axis=axes) if axes else image[box]
        out = sliding_window(run, np.ascontiguousarray(flipped))
        logits += np.flip(out, axis=axes) if axes else out
    logits /= len(flips)
    logits = ndimage.gaussian_filter(logits, TAPS_LOGIT_SIGMA, mode="nearest")
    full = np.full(image.shape, OUTSIDE_LOGIT, np.float32)
    full[box] = logits
    return _resample(full, 1 / ratio, t2w.shape)


def gland_mask(logits: np.ndarray, *, threshold: float = TAPS_THRESHOLD, largest_component: bool = False) -> np.ndarray:
    """Binary gland mask (uint8) from :func:`gland_logits` (steps 7-8).

    Examples
    --------
    >>> logits = np.full((5, 5, 3), -5.0, np.float32)
    >>> logits[1:3, 1:3, 1] = 5.0
    >>> logits[4, 4, 2] = 5.0
    >>> int(gland_mask(logits).sum()), int(gland_mask(logits, largest_component=True).sum())
    (5, 4)
    """
    probability_logit = np.log(threshold / (1 - threshold))
    mask = (logits > probability_logit).astype(np.uint8)
    if largest_component and mask.any():
        mask = postprocessing.largest_component(mask).astype(np.uint8)
    return mask


def onnx_runner(model_path, threads: int | None = None):
    """A callable that runs the ONNX model at ``model_path`` on one batch (CPU)."""
    import onnxruntime  # the deploy extra: only this script needs it here

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]
