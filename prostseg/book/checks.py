"""Check that a pipeline stage did what it promises, in numbers a chapter can print.

Each function compares what a stage produced with what it should produce:

* :func:`grid_summary` lists the voxel grid of each volume (shape, voxel size, field
  of view) from the file headers: why DWI and ADC need resampling before stacking.
* :func:`compare_with_truth` measures a registration against a known transform (the
  misalignment a phantom case was drawn with), and :func:`label_agreement` the overlap
  of label maps moved by it.
* :func:`augmentation_variants` draws :func:`prostseg.preparation.pipeline.augment_pair` many times
  and groups the results: every one of the 8 symmetries of the square should appear,
  about equally often.
* :func:`measure_stream` reads batches from a ``tf.data`` pipeline and reports the
  fraction of slices with foreground and the throughput.

Their rows print as tables with :func:`prostseg.book.tables.markdown_table`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from prostseg.data.io import Volume, volume_grid
from prostseg.preparation.registration import central_region, resample_to

__all__ = [
    "TransformComparison",
    "StreamStats",
    "augmentation_variants",
    "compare_with_truth",
    "grid_summary",
    "label_agreement",
    "measure_stream",
    "rigid_parameters",
    "world_coordinates",
]


def grid_summary(volumes: Mapping[str, Volume | str | os.PathLike]) -> list[dict]:
    """Describe the voxel grid of each volume: shape, voxel size, field of view, centre.

    Paths are read with :func:`prostseg.data.io.volume_grid` (headers only, no voxels).
    Everything is given in the canonical ``(x, y, z)`` order of :mod:`prostseg.data.io`.

    Parameters
    ----------
    volumes : mapping of name to Volume or path

    Returns
    -------
    list of dict
        One row per volume with ``volume``, ``shape``, ``voxel size (mm)``,
        ``field of view (mm)`` (shape times voxel size) and ``centre (RAS mm)`` (the
        world position of the grid's centre).

    Examples
    --------
    >>> t2w = Volume(np.zeros((384, 384, 19), np.float32), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> row = grid_summary({"T2W": t2w})[0]
    >>> row["field of view (mm)"]
    (192.0, 192.0, 57.0)
    """
    rows = []
    for name, volume in volumes.items():
        if isinstance(volume, Volume):
            shape, affine = volume.shape, np.asarray(volume.affine, dtype=float)
        else:
            shape, affine = volume_grid(volume)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + affine[:3, 3]
        rows.append(
            {
                "volume": name,
                "shape": tuple(int(n) for n in shape),
                "voxel size (mm)": tuple(round(float(s), 3) for s in spacing),
                "field of view (mm)": tuple(round(float(n * s), 1) for n, s in zip(shape, spacing)),
                "centre (RAS mm)": tuple(round(float(c), 1) for c in centre),
            }
        )
    return rows


# -------------------------------------------------------- registration truth


def world_coordinates(volume: Volume) -> np.ndarray:
    """RAS position (mm) of every voxel centre, shape ``volume.shape + (3,)``.

    Examples
    --------
    >>> volume = Volume(np.zeros((2, 1, 1), np.float32), np.diag([2.0, 1.0, 1.0, 1.0]))
    >>> world_coordinates(volume)[:, 0, 0].tolist()
    [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    """
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in volume.shape), indexing="ij"), -1)
    affine = np.asarray(volume.affine, dtype=float)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _mapped_points(transform, fixed: Volume, margin_mm: float) -> np.ndarray:
    """``T(q)`` (RAS mm) at every voxel centre ``q`` of ``fixed``.

    The world coordinates of a grid a little larger than ``fixed`` are resampled
    through the transform: linear interpolation of a linear function is exact, so each
    fixed voxel receives the coordinates of the point the transform maps it to
    (wherever that point lies within ``margin_mm`` of the fixed field of view).
    """
    affine = np.asarray(fixed.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    pad = np.ceil(margin_mm / spacing).astype(int)
    carrier_affine = affine.copy()
    carrier_affine[:3, 3] = affine[:3, :3] @ -pad + affine[:3, 3]
    carrier = Volume(np.zeros(tuple(np.add(fixed.shape, 2 * pad)), np.float32), carrier_affine)
    coordinates = world_coordinates(carrier)
    return np.stack(
        [
            resample_to(replace(carrier, data=coordinates[..., axis].astype(np.float32)), fixed, transform).data
            for axis in range(3)
        ],
        axis=-1,
    )


def _fit_affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares 4x4 matrix ``M`` with ``M @ [source, 1] ~ target``."""
    design = np.column_stack([source, np.ones(len(source))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    matrix = np.eye(4)
    matrix[:3, :] = solution.T
    return matrix


def rigid_parameters(matrix: ArrayLike, centre_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Translation (mm) and rotation angles (degrees) of a 4x4 RAS transform.

    Uses the convention of :class:`prostseg.data.phantom.RigidTransform`:
    ``p = R (q - centre) + centre + translation`` with ``R = Rz Ry Rx``, so the
    numbers compare directly with a phantom's misalignment. For an affine matrix the
    angles are those of its rotation part (its scaling and shear are ignored).

    Parameters
    ----------
    matrix : array_like, shape (4, 4)
    centre_mm : sequence of 3 floats
        World point (RAS mm) the rotation turns about.

    Returns
    -------
    translation_mm, rotation_deg : ndarray, shape (3,)

    Examples
    --------
    >>> from prostseg.data.phantom import RigidTransform
    >>> truth = RigidTransform((1.0, -2.0, 0.5), (3.0, -1.0, 2.0), (0.0, -20.0, -60.0))
    >>> shift, angles = rigid_parameters(truth.matrix, truth.centre_mm)
    >>> np.round(shift, 6).tolist(), np.round(angles, 6).tolist()
    ([1.0, -2.0, 0.5], [3.0, -1.0, 2.0])
    """
    matrix = np.asarray(matrix, dtype=float)
    centre = np.asarray(centre_mm, dtype=float)
    linear = matrix[:3, :3]
    u, _, vt = np.linalg.svd(linear)
    rotation = u @ vt  # the nearest rotation (polar decomposition)
    translation = linear @ centre + matrix[:3, 3] - centre
    ry = -np.arcsin(np.clip(rotation[2, 0], -1.0, 1.0))
    rx = np.arctan2(rotation[2, 1], rotation[2, 2])
    rz = np.arctan2(rotation[1, 0], rotation[0, 0])
    return translation, np.rad2deg([rx, ry, rz])


@dataclass(frozen=True)
class TransformComparison:
    """A registration compared with the true transform (see :func:`compare_with_truth`).

    Attributes
    ----------
    recovered, truth : ndarray, shape (4, 4)
        RAS mm matrices of the registration (fitted to it) and of the truth.
    centre_mm : ndarray, shape (3,)
        Centre of rotation used for the parameters.
    error_before_mm, error_after_mm : float
        Mean distance (mm) over the region between where the truth maps a point and
        where header-only resampling (the identity) or the registration maps it.
    max_error_after_mm : float
        Largest such distance after registration.
    """

    recovered: np.ndarray
    truth: np.ndarray
    centre_mm: np.ndarray
    error_before_mm: float
    error_after_mm: float
    max_error_after_mm: float

    def rows(self) -> list[dict]:
        """Shifts and angles, true and recovered, as table rows."""
        true_shift, true_angles = rigid_parameters(self.truth, self.centre_mm)
        shift, angles = rigid_parameters(self.recovered, self.centre_mm)
        names = [f"shift {axis} (mm)" for axis in "RAS"] + [f"rotation about {axis} (deg)" for axis in "RAS"]
        return [
            {"parameter": name, "true": round(float(t), 2), "recovered": round(float(r), 2)}
            for name, t, r in zip(names, [*true_shift, *true_angles], [*shift, *angles])
        ]


def compare_with_truth(
    transform,
    truth: ArrayLike,
    fixed: Volume,
    *,
    mask: ArrayLike | None = None,
    centre_mm: Sequence[float] | None = None,
    margin_mm: float = 10.0,
) -> TransformComparison:
    """Compare a registration transform with the true transform of a phantom case.

    Both map a point ``q`` of the fixed (T2W) world to the moving (DWI/ADC) world,
    like every elastix transform (:mod:`prostseg.preparation.registration`), and like
    :attr:`prostseg.data.phantom.PhantomCase.misalignment`. The registration is evaluated at
    every voxel of the region (nothing is assumed about its type), a 4x4 matrix is
    fitted to it, and the distances ``|T(q) - truth(q)|`` are averaged: the error of
    the registration in millimetres. Header-only resampling (``T(q) = q``) gives the
    error before registration.

    Parameters
    ----------
    transform : RegistrationResult, list of dict or path
        Anything :func:`prostseg.preparation.registration.resample_to` accepts.
    truth : array_like, shape (4, 4)
        True RAS mm transform, e.g. ``case.misalignment.matrix`` or the ``"matrix"`` of
        the misalignment in a phantom case's ``phantom.json``.
    fixed : Volume
        The fixed (T2W) volume: its grid is where the errors are measured.
    mask : array_like of bool, optional
        Voxels of ``fixed`` to measure in (e.g. the gland, ``zones > 0``); by default
        the central region of :func:`prostseg.preparation.registration.central_region`.
    centre_mm : sequence of 3 floats, optional
        Centre of rotation for :meth:`TransformComparison.rows` (a phantom's
        ``misalignment.centre_mm``); by default the centre of the region.
    margin_mm : float, optional
        How far outside the fixed field of view ``T(q)`` may fall and still be measured.

    Returns
    -------
    TransformComparison

    Raises
    ------
    ValueError
        If the mask does not match the fixed grid or is empty.

    Examples
    --------
    >>> comparison = compare_with_truth(result, case.misalignment.matrix, t2w,
    ...                                 mask=case.zones > 0)  # doctest: +SKIP
    >>> comparison.error_after_mm < comparison.error_before_mm  # doctest: +SKIP
    True
    """
    truth = np.asarray(truth, dtype=float)
    if truth.shape != (4, 4):
        raise ValueError(f"truth must be a 4x4 matrix, got shape {truth.shape}")
    mask = central_region(fixed.shape) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != tuple(fixed.shape):
        raise ValueError(f"mask has shape {mask.shape}, the fixed volume {tuple(fixed.shape)}")
    if not mask.any():
        raise ValueError("the mask is empty: no voxel to measure the transform at")
    points = world_coordinates(fixed)[mask]
    mapped = _mapped_points(transform, fixed, margin_mm)[mask]
    expected = points @ truth[:3, :3].T + truth[:3, 3]
    error_after = np.linalg.norm(mapped - expected, axis=-1)
    return TransformComparison(
        recovered=_fit_affine(points, mapped),
        truth=truth,
        centre_mm=points.mean(axis=0) if centre_mm is None else np.asarray(centre_mm, dtype=float),
        error_before_mm=float(np.linalg.norm(points - expected, axis=-1).mean()),
        error_after_mm=float(error_after.mean()),
        max_error_after_mm=float(error_after.max()),
    )


def label_agreement(
    reference: ArrayLike, candidates: Mapping[str, ArrayLike], names: Sequence[str]
) -> list[dict]:
    """Dice coefficient of each class of several label maps with a reference.

    Parameters
    ----------
    reference : array_like of int
        Reference label map (e.g. the zones on the T2W grid); 0 is background.
    candidates : mapping of str to array_like of int
        Column name to a label map of the reference's shape (e.g. the DWI-grid zones
        resampled with the headers only, and through the registration).
    names : sequence of str
        Name of each class id, background first (e.g.
        :data:`prostseg.data.dataset.ZONE_NAMES`).

    Returns
    -------
    list of dict
        One row per foreground class (``class`` and one Dice per candidate; NaN for a
        class absent from both maps) and a last row ``whole gland`` for all
        foreground classes together.

    Examples
    --------
    >>> truth = np.array([0, 1, 1, 2, 2, 0])
    >>> rows = label_agreement(truth, {"shifted": np.roll(truth, 1)}, ["background", "a", "b"])
    >>> [(row["class"], round(row["shifted"], 2)) for row in rows]
    [('a', 0.5), ('b', 0.5), ('whole gland', 0.75)]
    """
    from prostseg.networks.metrics import dice, per_class_dice  # Keras only when called

    reference = np.asarray(reference)
    scores = {}
    for column, labels in candidates.items():
        labels = np.asarray(labels)
        if labels.shape != reference.shape:
            raise ValueError(f"{column}: shape {labels.shape}, the reference {reference.shape}")
        scores[column] = (per_class_dice(labels, reference, len(names)), dice(labels > 0, reference > 0))
    rows = [{"class": names[index], **{column: float(per_class[index]) for column, (per_class, _) in scores.items()}}
            for index in range(1, len(names))]
    rows.append({"class": "whole gland", **{column: float(whole) for column, (_, whole) in scores.items()}})
    return rows


# -------------------------------------------------------------- augmentation


def augmentation_variants(
    image: ArrayLike, label: ArrayLike, *, draws: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw :func:`prostseg.preparation.pipeline.augment_pair` ``draws`` times and group the results.

    Parameters
    ----------
    image, label : array_like, shape (H, W) or (H, W, C)
        One slice and its label map (square, so that every variant has one shape).
    draws : int, optional
        Number of random transforms, with seeds ``(seed, 0) .. (seed, draws - 1)``.
    seed : int, optional

    Returns
    -------
    images, labels : ndarray, shape (V, ...)
        The V distinct augmented pairs, each with the shape and dtype of the input,
        most frequent first. For an image without symmetries of its own V is 8: the 8
        symmetries of the square.
    counts : ndarray of int, shape (V,)
        How many draws gave each pair.

    Examples
    --------
    >>> image = np.arange(16.0).reshape(4, 4)
    >>> images, labels, counts = augmentation_variants(image, image > 7, draws=40)
    >>> images.shape, int(counts.sum())
    ((8, 4, 4), 40)
    >>> bool(np.array_equal(images > 7, labels))  # moved together
    True
    """
    import tensorflow as tf

    from prostseg.preparation.pipeline import augment_pair  # TensorFlow only when called

    image, label = np.asarray(image), np.asarray(label)
    if image.shape[:2] != label.shape[:2] or image.shape[0] != image.shape[1]:
        raise ValueError(f"need a square image and a label of its size, got {image.shape} and {label.shape}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    as_tensor = [tf.constant(array[..., np.newaxis] if array.ndim == 2 else array) for array in (image, label)]
    groups: dict[bytes, list] = {}
    for index in range(draws):
        new_image, new_label = augment_pair(*as_tensor, seed=tf.constant([seed, index], tf.int64))
        new_image, new_label = new_image.numpy().reshape(image.shape), new_label.numpy().reshape(label.shape)
        key = new_image.tobytes() + new_label.tobytes()
        groups.setdefault(key, [new_image, new_label, 0])[2] += 1
    ordered = sorted(groups.values(), key=lambda group: -group[2])
    return (np.stack([group[0] for group in ordered]), np.stack([group[1] for group in ordered]),
            np.array([group[2] for group in ordered]))


# ------------------------------------------------------------------ streaming


@dataclass(frozen=True)
class StreamStats:
    """What :func:`measure_stream` saw.

    Attributes
    ----------
    batches, slices : int
        Number of batches and slices read.
    foreground_slices : int
        Slices whose label holds any non-zero voxel (for one-hot labels: any
        non-background class).
    seconds : float
        Wall time of the reading, the first batch included.
    """

    batches: int
    slices: int
    foreground_slices: int
    seconds: float

    @property
    def foreground_fraction(self) -> float:
        """Fraction of the slices that hold foreground."""
        return self.foreground_slices / self.slices if self.slices else float("nan")

    @property
    def slices_per_second(self) -> float:
        """Throughput of the pipeline on this machine."""
        return self.slices / self.seconds if self.seconds > 0 else float("nan")


def measure_stream(dataset: Iterable, batches: int, *, one_hot: bool = False) -> StreamStats:
    """Read ``batches`` batches of ``(image, label)`` and count slices and foreground.

    Parameters
    ----------
    dataset : iterable of (image, label) batches
        E.g. :func:`prostseg.preparation.pipeline.unet_dataset`; labels of shape ``(B, H, W, C)``.
    batches : int
        Batches to read (fewer when the dataset ends first).
    one_hot : bool, optional
        Labels are one-hot with background as channel 0 (Pix2Pix): foreground is any
        other channel. Otherwise any non-zero label voxel is foreground.

    Returns
    -------
    StreamStats

    Examples
    --------
    >>> masks = np.zeros((4, 2, 2, 1))
    >>> masks[0, 0, 0] = 1
    >>> stats = measure_stream([(np.zeros((4, 2, 2, 1)), masks)] * 3, batches=2)
    >>> stats.batches, stats.slices, stats.foreground_fraction
    (2, 8, 0.25)
    """
    if batches < 1:
        raise ValueError(f"batches must be at least 1, got {batches}")
    started = time.perf_counter()
    n_batches = n_slices = n_foreground = 0
    for _, labels in dataset:
        labels = np.asarray(labels)
        foreground = labels[..., 1:] > 0 if one_hot else labels != 0
        n_foreground += int(np.count_nonzero(foreground.reshape(len(labels), -1).any(axis=1)))
        n_slices += len(labels)
        n_batches += 1
        if n_batches == batches:
            break
    return StreamStats(n_batches, n_slices, n_foreground, time.perf_counter() - started)
