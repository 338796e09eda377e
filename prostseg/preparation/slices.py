"""Slices for the networks, and back: the NumPy half of the input pipelines.

Training (:mod:`prostseg.preparation.pipeline`), inference (:mod:`prostseg.use.inference`) and the
figures of the book all prepare volumes with the functions of this module. It needs
NumPy (and NiBabel, to read a case) only: preparing and drawing a slice does not import
TensorFlow.

Volume preparation (one place for training and inference)
---------------------------------------------------------
The ``prepare_*`` functions turn a canonical volume (see :mod:`prostseg.data.io`) into a
stack of network inputs; training, validation and inference all call them, so a model
always sees the same preprocessing. Axial slice ``k`` is ``data[:, :, k]``, so the
network's first in-plane axis (height) is ``x`` (towards the patient's Right) and the
second (width) is ``y`` (towards Anterior). Figures rotate slices for display
(:mod:`prostseg.viz`); data code never does.

* U-Net (:func:`prepare_unet_volume`, :func:`prepare_unet_mask`): per-volume
  percentile clip (0.5 and 99.5 %) and min-max scaling to ``[0, 1]`` (a constant
  volume becomes zeros, never NaN), then every slice centre padded or cropped to
  ``image_size`` (:func:`prostseg.preparation.preprocessing.center_pad_crop`). Output
  ``(Z, H, W, 1)`` float32.
* Pix2Pix (:func:`prepare_pix2pix_volume`, :func:`prepare_zone_labels`): per-volume,
  per-channel z-score of the registered ``(X, Y, Z, 3)`` stack, in-plane bilinear
  resize to ``image_size``; zone labels are resized by nearest neighbour (never
  interpolated) and one-hot encoded. Output ``(Z, H, W, 3)`` and ``(Z, H, W, 5)``.

Inference undoes exactly these geometric steps with :func:`restore_unet_slices` (the
inverse centre pad/crop) and :func:`restore_pix2pix_slices` (bilinear resize back to
the T2W matrix); the result lies on the input volume's grid, ready for
:func:`prostseg.data.io.save_like`.

Both models go through the same steps, written once in :class:`Slicing`; the two
differ only in its fields (input file, normalisation, target encoding, resize or
centre pad/crop at the native spacing). The functions above are the methods of
:data:`UNET_SLICING` and :data:`PIX2PIX_SLICING`, and :meth:`Slicing.prepare_case`
reads a case's files and prepares both input and target slices.

A common physical scale (``target_spacing``)
--------------------------------------------
Scanners store slices with in-plane spacings from about 0.3 to 1 mm, so the same
prostate covers three times more pixels in one scan than in another, and a network
trained on one spacing sees the organ at the wrong size on another. With
``target_spacing=t`` (mm) every slice is first resampled to pixels of ``t`` x ``t`` mm
(:func:`resampled_size`; images bilinear, labels nearest neighbour, never
interpolated) and *then* centre padded or cropped to ``image_size``, for both models:
``image_size`` pixels then always cover ``image_size * t`` mm around the centre of the
field of view. (Pix2Pix is not resized after resampling: resizing a whole slice to
``image_size`` makes the pixel size depend on the field of view again.) The
``restore_*`` functions take the same ``target_spacing`` and the volume's spacing and
undo both steps, so predictions come back on the original grid. The default
``target_spacing=None`` keeps the behaviour above: the U-Net at the native spacing,
Pix2Pix resized whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from prostseg.data.dataset import ALIGNED_FOLDER, MASK_CLASSES, NUM_ZONE_CLASSES, STACK, Case, volume_file
from prostseg.data.io import Volume, check_same_grid, load_volume
from prostseg.errors import InputError
from prostseg.preparation.preprocessing import (
    center_pad_crop,
    clip_percentiles,
    minmax_normalize,
    one_hot,
    resize_image,
    resize_labels,
    zscore_normalize,
)

__all__ = [
    "UNET_IMAGE_SIZE",
    "PIX2PIX_IMAGE_SIZE",
    "CLIP_PERCENTILES",
    "Slicing",
    "UNET_SLICING",
    "PIX2PIX_SLICING",
    "SLICINGS",
    "case_labels",
    "prepare_unet_volume",
    "prepare_unet_mask",
    "prepare_pix2pix_volume",
    "prepare_zone_labels",
    "restore_unet_slices",
    "restore_pix2pix_slices",
    "resampled_size",
]

#: In-plane size of U-Net input slices (centre pad/crop).
UNET_IMAGE_SIZE = 384
#: In-plane size of Pix2Pix input slices (bilinear resize).
PIX2PIX_IMAGE_SIZE = 256
#: Percentiles of the per-volume intensity clip before U-Net min-max scaling.
CLIP_PERCENTILES = (0.5, 99.5)




def _spatial_array(volume: Volume | ArrayLike, ndim: int, what: str) -> np.ndarray:
    """The array of ``volume`` (a Volume or an array), checked to have ``ndim`` axes."""
    array = volume.data if isinstance(volume, Volume) else np.asarray(volume)
    if array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} axes, got shape {array.shape}")
    return array


def resampled_size(shape: Sequence[int], spacing: Sequence[float], target_spacing: float) -> tuple[int, int]:
    """In-plane matrix of a slice resampled to pixels of ``target_spacing`` mm.

    The field of view is kept: each in-plane axis of ``n`` pixels of ``s`` mm becomes
    ``round(n * s / target_spacing)`` pixels (at least 1), which
    :func:`prostseg.preparation.preprocessing.resize_image` fills with the same pixel-centre
    geometry it always uses (the new pixels differ from ``target_spacing`` by the
    rounding only, less than half a pixel over the whole field of view).

    Parameters
    ----------
    shape : sequence of int
        The volume's shape; its first two values are the in-plane matrix ``(X, Y)``.
    spacing : sequence of float
        The volume's voxel size in mm; the first two values are used.
    target_spacing : float
        The common in-plane pixel size, in mm.

    Returns
    -------
    (int, int)

    Examples
    --------
    >>> resampled_size((320, 320, 19), (0.5, 0.5, 3.0), 1.0)
    (160, 160)
    >>> resampled_size((175, 140, 20), (0.8, 1.0, 3.0), 1.5)
    (93, 93)
    """
    target_spacing = _positive_spacing(target_spacing, "target_spacing")
    if len(shape) < 2 or len(spacing) < 2:
        raise ValueError(f"need at least two in-plane values, got shape {tuple(shape)} and spacing {tuple(spacing)}")
    return tuple(
        max(1, int(np.floor(n * _positive_spacing(s, "spacing") / target_spacing + 0.5)))
        for n, s in zip(shape[:2], spacing[:2])
    )


def _positive_spacing(value, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of mm, got {value}")
    return value


def _in_plane_spacing(volume, spacing: Sequence[float] | None) -> tuple[float, float]:
    """The in-plane spacing of ``volume``: ``spacing`` if given, else the Volume's own."""
    if spacing is None:
        if not isinstance(volume, Volume):
            raise ValueError("target_spacing needs the volume's spacing: pass a Volume, or spacing=(sx, sy) in mm")
        spacing = volume.spacing
    if len(spacing) < 2:
        raise ValueError(f"spacing needs the two in-plane values (mm), got {tuple(spacing)}")
    return tuple(_positive_spacing(value, "spacing") for value in spacing[:2])


def _common_scale(array: np.ndarray, volume, spacing, target_spacing: float | None, *, labels: bool) -> np.ndarray:
    """``array`` resampled in-plane to ``target_spacing`` (unchanged when it is None)."""
    if target_spacing is None:
        return array
    size = resampled_size(array.shape, _in_plane_spacing(volume, spacing), target_spacing)
    return resize_labels(array, size) if labels else resize_image(array, size)


def _slices_first(array: np.ndarray) -> np.ndarray:
    """``(H, W, Z[, C])`` -> contiguous ``(Z, H, W, C)`` (``C = 1`` when absent)."""
    if array.ndim == 3:
        array = array[..., np.newaxis]
    return np.ascontiguousarray(np.moveaxis(array, 2, 0))


def _volume_order(slices: ArrayLike, shape: Sequence[int]) -> np.ndarray:
    """``(Z, H, W, C)`` -> ``(H, W, Z, C)``, checking ``Z`` against ``shape``."""
    slices = np.asarray(slices)
    if slices.ndim != 4 or len(shape) != 3 or slices.shape[0] != shape[2]:
        raise ValueError(
            f"expected slices (Z, H, W, C) of a volume of shape (X, Y, Z) = {tuple(shape)}, "
            f"got slices of shape {slices.shape}"
        )
    return np.moveaxis(slices, 0, 2)


def case_labels(case: Case, label: str) -> Volume:
    """A case's label map for training: ``"lesion"``, ``"zones"`` holding 0..4, or
    ``"gland"`` holding 0 and 1.

    Parameters
    ----------
    case : Case
        A case of :func:`prostseg.data.dataset.find_case`.
    label : {"lesion", "zones", "gland"}
        The label file (lesion values: see :mod:`prostseg.training.datacheck`).

    Returns
    -------
    Volume
        Integer labels in canonical order.

    Raises
    ------
    InputError
        When the file is missing or holds values a label map cannot (a zone label
        outside 0..4, a gland label outside 0..1).
    """
    return load_volume(case.path(label), label=True, num_classes=MASK_CLASSES.get(label))


def _unet_normalise(array: np.ndarray) -> np.ndarray:
    return minmax_normalize(clip_percentiles(array, *CLIP_PERCENTILES))


def _zscore_channels(array: np.ndarray) -> np.ndarray:
    return zscore_normalize(array, channel_axis=-1)


def _foreground(labels: np.ndarray) -> np.ndarray:
    return (labels != 0).astype(np.float32)


def _zone_one_hot(labels: np.ndarray) -> np.ndarray:
    return one_hot(labels, NUM_ZONE_CLASSES)


@dataclass(frozen=True)
class Slicing:
    """How the slices of one kind of model are made from a case, and put back.

    The U-Net and Pix2Pix prepare their slices with the same steps; they differ only
    in the fields below. :data:`UNET_SLICING` and :data:`PIX2PIX_SLICING` are the two
    built-in ones, and the recipes of :mod:`prostseg.networks.recipes` use their methods.

    Attributes
    ----------
    model : str
        The kind of model (``"unet"``, ``"pix2pix"``).
    input : str
        The case file (a role of :mod:`prostseg.data.dataset`) the input slices come
        from: ``"t2w"``, or ``"stack"`` for the registered stack.
    channels : tuple of str
        The case files the channels of ``input`` come from, in order.
    image_size : int
        Default side of the square slices.
    normalise : callable
        ``normalise(array)`` -> the array with the model's intensity normalisation,
        computed over the whole volume.
    encode : callable
        ``encode(labels)`` -> float32 targets ``(X, Y, Z[, C])`` of a label map that
        already has the slices' geometry.
    resize : bool
        Without ``target_spacing``: resize every slice to ``image_size`` (bilinear,
        labels nearest neighbour) instead of centre padding or cropping it.
    input_what, target_what : str
        What the input and the label map are, in words, for error messages.
    """

    model: str
    input: str
    channels: tuple[str, ...]
    image_size: int
    normalise: Callable[[np.ndarray], np.ndarray]
    encode: Callable[[np.ndarray], np.ndarray]
    resize: bool
    input_what: str
    target_what: str

    def _geometry(self, array: np.ndarray, image_size: int | None, volume, spacing,
                  target_spacing: float | None, *, labels: bool) -> np.ndarray:
        """Resize to ``image_size`` (``resize``, native spacing), or resample to
        ``target_spacing`` (if given) and centre pad or crop."""
        image_size = self.image_size if image_size is None else image_size
        if target_spacing is None and self.resize:
            return resize_labels(array, image_size) if labels else resize_image(array, image_size)
        return center_pad_crop(_common_scale(array, volume, spacing, target_spacing, labels=labels), image_size)

    def prepare(self, volume: Volume | ArrayLike, image_size: int | None = None, *,
                target_spacing: float | None = None, spacing: Sequence[float] | None = None) -> np.ndarray:
        """Prepare a volume as network input slices.

        Normalises the intensities over the whole volume (``normalise``), then brings
        every axial slice to ``image_size``: resampled to ``target_spacing`` (bilinear)
        if given, and centre padded or cropped (zero padding), or, at the native spacing
        with ``resize``, resized bilinearly.

        Parameters
        ----------
        volume : Volume or array_like, shape (X, Y, Z) or (X, Y, Z, C)
            The ``input`` file of a case in canonical order (as
            :func:`prostseg.data.io.load_volume` gives it): a T2W volume, or the
            registered stack (channels T2W, DWI, ADC) written by
            :func:`prostseg.preparation.registration.register_case`.
        image_size : int, optional
            Side of the square output slices (default: the slicing's ``image_size``).
        target_spacing : float, optional
            Resample every slice to pixels of this size (mm) before the centre pad/crop
            (see the module documentation). By default slices keep their own spacing.
        spacing : sequence of float, optional
            The volume's voxel size in mm (the first two values are used); only with
            ``target_spacing``, and only needed when ``volume`` is an array rather than a
            :class:`~prostseg.data.io.Volume`.

        Returns
        -------
        numpy.ndarray of float32, shape (Z, image_size, image_size, C)
            Slice ``k`` is ``data[:, :, k]``: height runs along ``x``, width along ``y``.

        Examples
        --------
        The U-Net's (:func:`prepare_unet_volume`): a percentile clip and min-max scaling
        to ``[0, 1]`` (a constant volume gives zeros), then a centre pad or crop:

        >>> volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
        >>> slices = prepare_unet_volume(volume, image_size=4)
        >>> slices.shape, slices.dtype
        ((4, 4, 4, 1), dtype('float32'))
        >>> float(slices.min()), float(slices.max()) <= 1.0
        (0.0, True)
        >>> float(prepare_unet_volume(np.full((2, 2, 3), 7.0), image_size=2).max())  # constant
        0.0

        With ``target_spacing``, 0.5 mm pixels become 1 mm pixels before the crop, so 4
        pixels cover 4 mm instead of 2 mm:

        >>> fine = np.tile(np.arange(8.0)[:, None, None], (1, 8, 1))  # (8, 8, 1), 0.5 mm
        >>> (prepare_unet_volume(fine, 4)[0, :, 0, 0] * 7).round(2)  # the central 2 mm
        array([2., 3., 4., 5.], dtype=float32)
        >>> (prepare_unet_volume(fine, 4, target_spacing=1.0, spacing=(0.5, 0.5))[0, :, 0, 0] * 7).round(2)
        array([0.5, 2.5, 4.5, 6.5], dtype=float32)

        Pix2Pix's (:func:`prepare_pix2pix_volume`): a z-score per channel, then a resize:

        >>> stack = np.random.default_rng(0).normal(5.0, 2.0, (6, 4, 2, 3))
        >>> slices = prepare_pix2pix_volume(stack, image_size=8)
        >>> slices.shape, slices.dtype
        ((2, 8, 8, 3), dtype('float32'))
        """
        ndim = 3 if len(self.channels) == 1 else 4
        array = _spatial_array(volume, ndim, self.input_what)
        return _slices_first(self._geometry(self.normalise(array), image_size, volume, spacing,
                                            target_spacing, labels=False))

    def prepare_target(self, labels: Volume | ArrayLike, image_size: int | None = None, *,
                       target_spacing: float | None = None, spacing: Sequence[float] | None = None) -> np.ndarray:
        """Prepare a label map as network target slices.

        Slices get the geometry of :meth:`prepare` by nearest neighbour (labels are
        never interpolated), so image and target stay aligned pixel for pixel; then
        ``encode`` makes the targets: for the U-Net every non-zero voxel is foreground
        (a lesion mask, or a zone map for a whole-gland mask), for Pix2Pix the zone
        labels are one-hot encoded over the
        :data:`~prostseg.data.dataset.NUM_ZONE_CLASSES` zone classes.

        Parameters
        ----------
        labels : Volume or array_like, shape (X, Y, Z)
            Label map in canonical order, on the grid of the image.
        image_size, target_spacing, spacing : optional
            As for :meth:`prepare` (``spacing`` is that of ``labels``).

        Returns
        -------
        numpy.ndarray of float32, shape (Z, image_size, image_size, C)
            U-Net: values 0 and 1 (``C = 1``); Pix2Pix: exactly one 1 per pixel
            (``C = 5``).

        Raises
        ------
        InputError
            Pix2Pix: when labels lie outside ``0 .. 4``.

        Examples
        --------
        >>> mask = np.zeros((3, 3, 2), np.uint8)
        >>> mask[1, 1, 0] = 2
        >>> target = prepare_unet_mask(mask, image_size=5)
        >>> target.shape, target[0, 2, 2, 0], float(target.sum())
        ((2, 5, 5, 1), np.float32(1.0), 1.0)
        >>> zones = np.array([[[0], [1]], [[2], [4]]], dtype=np.uint8)  # (2, 2, 1)
        >>> targets = prepare_zone_labels(zones, image_size=4)
        >>> targets.shape, bool((targets.sum(axis=-1) == 1).all())
        ((1, 4, 4, 5), True)
        >>> targets[0].argmax(axis=-1)
        array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [2, 2, 4, 4],
               [2, 2, 4, 4]])
        """
        array = _spatial_array(labels, 3, self.target_what)
        return _slices_first(self.encode(self._geometry(array, image_size, labels, spacing,
                                                        target_spacing, labels=True)))

    def restore(self, slices: ArrayLike, shape: Sequence[int], *, target_spacing: float | None = None,
                spacing: Sequence[float] | None = None) -> np.ndarray:
        """Put output slices back on the grid of the volume they came from.

        The inverse of the geometry of :meth:`prepare`: slices are stacked along ``z``;
        with ``target_spacing`` they are centre cropped or padded to the resampled size
        and resized bilinearly back to the volume's matrix; at the native spacing they
        are centre cropped or padded back to the volume's in-plane size (what padding
        added is dropped, what cropping removed comes back as zeros), or, with
        ``resize``, resized back. Resize class probabilities (bilinear) and then take
        :func:`~prostseg.preparation.preprocessing.labels_from_one_hot`, rather than
        resizing labels; padding adds zero probabilities for every class, which the
        argmax reads as background.

        Parameters
        ----------
        slices : array_like, shape (Z, H, W, C)
            Network outputs (probabilities or masks), one per axial slice.
        shape : sequence of int
            Spatial shape ``(X, Y, Z)`` of the original volume (``volume.shape``).
        target_spacing : float, optional
            The ``target_spacing`` the slices were prepared with.
        spacing : sequence of float, optional
            The volume's voxel size in mm (the first two values are used); needed with
            ``target_spacing``.

        Returns
        -------
        numpy.ndarray, shape (X, Y, Z, C)
            Same dtype as ``slices`` after a centre pad or crop alone; float32 when
            resized (interpolated).

        Examples
        --------
        >>> volume = np.random.default_rng(0).random((5, 3, 2))
        >>> slices = prepare_unet_volume(volume, image_size=8)
        >>> restored = restore_unet_slices(slices, volume.shape)
        >>> restored.shape, bool(np.array_equal(restored[..., 0], minmax_normalize(clip_percentiles(volume))))
        ((5, 3, 2, 1), True)
        >>> zones = np.random.default_rng(0).integers(0, 5, size=(4, 6, 3))
        >>> probabilities = prepare_zone_labels(zones, image_size=8)
        >>> restore_pix2pix_slices(probabilities, zones.shape).shape
        (4, 6, 3, 5)
        """
        stacked = _volume_order(slices, shape)
        if target_spacing is not None:
            stacked = center_pad_crop(stacked, resampled_size(shape, _in_plane_spacing(None, spacing), target_spacing))
        elif not self.resize:
            return center_pad_crop(stacked, tuple(shape[:2]))
        return resize_image(stacked, tuple(shape[:2]))

    def input_path(self, case: Case) -> Path:
        """The file of ``case`` the input slices come from (its ``input`` role).

        Raises
        ------
        InputError
            When the case lacks it; a stack not registered yet names the command that
            writes it.
        """
        if self.input == STACK and not case.has(STACK):
            raise InputError(
                case.folder,
                f"case {case.case_id} has no registered stack ({ALIGNED_FOLDER}/{volume_file(STACK)}); "
                f"run `prostseg register-case {case.folder}` first",
            )
        return case.path(self.input)

    def prepare_case(self, case: Case, label: str, image_size: int | None = None, *,
                     target_spacing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A case's input and target slices (:meth:`prepare`, :meth:`prepare_target`).

        Parameters
        ----------
        case : Case
            A case holding the ``input`` file and ``label``.
        label : {"lesion", "zones", "gland"}
            The label map (:func:`case_labels`); Pix2Pix learns ``"zones"``.
        image_size, target_spacing : optional
            As for :meth:`prepare`.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Input slices ``(Z, H, W, C)`` and target slices, float32.

        Raises
        ------
        InputError
            When a file is missing (a stack not registered yet names the command that
            writes it) or cannot be used, or the two do not lie on the same grid.
        """
        channels = len(self.channels) if len(self.channels) > 1 else None
        image = load_volume(self.input_path(case), channels=channels)
        labels = case_labels(case, label)
        check_same_grid(image, labels)
        return (self.prepare(image, image_size, target_spacing=target_spacing),
                self.prepare_target(labels, image_size, target_spacing=target_spacing))


#: The U-Net's slices: T2W, percentile clip (:data:`CLIP_PERCENTILES`) and min-max scaling
#: to ``[0, 1]``, centre pad or crop; binary masks (every non-zero voxel is foreground).
UNET_SLICING = Slicing(
    model="unet", input="t2w", channels=("t2w",), image_size=UNET_IMAGE_SIZE,
    normalise=_unet_normalise, encode=_foreground, resize=False,
    input_what="a T2W volume", target_what="a mask volume",
)
#: Pix2Pix's slices: the registered T2W/DWI/ADC stack, z-score per channel, resized;
#: one-hot zone labels.
PIX2PIX_SLICING = Slicing(
    model="pix2pix", input=STACK, channels=("t2w", "dwi", "adc"), image_size=PIX2PIX_IMAGE_SIZE,
    normalise=_zscore_channels, encode=_zone_one_hot, resize=True,
    input_what="a multi-channel stack (X, Y, Z, C)", target_what="a zone label map",
)
#: The slicing of each model kind that prostseg trains.
SLICINGS = {UNET_SLICING.model: UNET_SLICING, PIX2PIX_SLICING.model: PIX2PIX_SLICING}

#: U-Net input slices of a T2W volume (:meth:`Slicing.prepare`).
prepare_unet_volume = UNET_SLICING.prepare
#: U-Net target slices of a mask (:meth:`Slicing.prepare_target`).
prepare_unet_mask = UNET_SLICING.prepare_target
#: U-Net outputs back on the volume's grid (:meth:`Slicing.restore`).
restore_unet_slices = UNET_SLICING.restore
#: Pix2Pix input slices of a registered stack (:meth:`Slicing.prepare`).
prepare_pix2pix_volume = PIX2PIX_SLICING.prepare
#: One-hot Pix2Pix targets of a zone label map (:meth:`Slicing.prepare_target`).
prepare_zone_labels = PIX2PIX_SLICING.prepare_target
#: Pix2Pix outputs back on the T2W grid (:meth:`Slicing.restore`).
restore_pix2pix_slices = PIX2PIX_SLICING.restore
