"""Compare trained models on the same held-out patients.

A fair comparison of two models needs the same test patients for both, and a score
that both can be given. The U-Net of this package predicts one mask (the whole gland
when trained with ``label="zones"``); the Pix2Pix generator predicts the four zones.
Both can be scored on the whole gland, and Pix2Pix also zone by zone:

* :func:`gland_and_zone_dice` -- Dice of the whole gland and, for zone maps, of each zone.

Real zone masks are often drawn with two zones only (the Medical Segmentation Decathlon,
the PI-CAI public labels): 1 peripheral zone and 2 transition zone, where the second
takes in the central zone and the anterior fibromuscular stroma. :func:`to_two_zones`
merges a four-zone map the same way, :func:`two_zone_dice` scores a prediction against
such a map, and :func:`reference_agreement` measures how well the delineations of one
case agree with each other: the ceiling for any model scored against them.
:func:`gland_agreement` scores a gland mask against every gland delineation of a
case. :func:`score_real_case` applies a gland U-Net and a zone Pix2Pix to one real case,
registration included, and scores both against its two-zone map.

Examples
--------
>>> import numpy as np
>>> truth = np.array([[0, 1, 1], [2, 2, 0]])
>>> scores = gland_and_zone_dice(np.array([[0, 1, 2], [2, 2, 0]]), truth)
>>> round(scores["whole gland"], 3), round(scores["peripheral zone"], 3)
(1.0, 0.667)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from prostseg.data.dataset import NUM_ZONE_CLASSES, ZONE_NAMES, find_case
from prostseg.errors import InputError
from prostseg.data.io import Volume, check_same_grid, load_volume
from prostseg.networks.metrics import dice, per_class_dice
from prostseg.preparation.registration import register_case
from prostseg.use.inference import input_volume, predict_volume, resolve_model

__all__ = [
    "gland_and_zone_dice",
    "TWO_ZONE_NAMES",
    "REFERENCE_FOLDER",
    "to_two_zones",
    "two_zone_dice",
    "reference_agreement",
    "gland_agreement",
    "RealCaseResult",
    "score_real_case",
]

#: Labels of a two-zone map; its transition zone includes the central zone and the AFS.
TWO_ZONE_NAMES = ("background", "peripheral zone", "transition zone")
#: Folder of a case that holds further delineations of its anatomy (see :func:`reference_agreement`).
REFERENCE_FOLDER = "reference"



def gland_and_zone_dice(predicted, zones, *, per_zone: bool = True) -> dict[str, float]:
    """Dice of the whole gland and, optionally, of each zone of a prediction.

    Parameters
    ----------
    predicted : array_like of int
        A predicted label map: zone ids (Pix2Pix) or a binary gland mask (U-Net).
        Every non-zero voxel counts as gland.
    zones : array_like of int
        The true zone map (ids of :data:`prostseg.data.dataset.ZONE_NAMES`), same shape.
    per_zone : bool, optional
        Also score each zone (needs zone ids in ``predicted``; a binary mask would be
        read as "all peripheral zone").

    Returns
    -------
    dict
        ``"whole gland"``: Dice of the non-zero voxels (1.0 when both are empty, see
        :func:`prostseg.networks.metrics.dice`); with ``per_zone``, one entry per zone name
        (NaN for a zone absent from both maps).

    Examples
    --------
    >>> gland_and_zone_dice([[0, 1], [1, 1]], [[0, 1], [2, 3]], per_zone=False)
    {'whole gland': 1.0}
    """
    predicted, zones = np.asarray(predicted), np.asarray(zones)
    if predicted.shape != zones.shape:
        raise ValueError(f"prediction has shape {predicted.shape}, the zones {zones.shape}")
    scores = {"whole gland": dice(predicted > 0, zones > 0)}
    if per_zone:
        zone_scores = per_class_dice(predicted, zones, NUM_ZONE_CLASSES)[1:]
        scores.update((name, float(score)) for name, score in zip(ZONE_NAMES[1:], zone_scores))
    return scores


def to_two_zones(zones) -> np.ndarray:
    """Merge a four-zone map into a two-zone one: PZ stays 1, TZ, CZ and AFS become 2.

    Parameters
    ----------
    zones : array_like of int
        Zone ids of :data:`prostseg.data.dataset.ZONE_NAMES` (0..4).

    Returns
    -------
    numpy.ndarray of uint8
        0 background, 1 peripheral zone, 2 transition zone (:data:`TWO_ZONE_NAMES`).

    Examples
    --------
    >>> to_two_zones([0, 1, 2, 3, 4]).tolist()
    [0, 1, 2, 2, 2]
    """
    zones = np.asarray(zones)
    if zones.size and (zones.min() < 0 or zones.max() >= NUM_ZONE_CLASSES):
        raise ValueError(f"zone ids must lie in 0..{NUM_ZONE_CLASSES - 1}, got {zones.min()}..{zones.max()}")
    return np.minimum(zones, 2).astype(np.uint8)


def two_zone_dice(predicted, reference, *, per_zone: bool = True) -> dict[str, float]:
    """Dice of a prediction against a two-zone reference map.

    Parameters
    ----------
    predicted : array_like of int
        A four-zone map (merged with :func:`to_two_zones` before scoring) or, with
        ``per_zone=False``, any mask whose non-zero voxels are the gland.
    reference : array_like of int
        0 background, 1 peripheral zone, 2 transition zone; same shape.
    per_zone : bool, optional
        Also score the two zones.

    Returns
    -------
    dict
        ``"whole gland"`` and, with ``per_zone``, ``"peripheral zone"`` and
        ``"transition zone"`` (see :func:`prostseg.networks.metrics.dice` for empty masks).

    Examples
    --------
    >>> scores = two_zone_dice([[1, 2], [3, 0]], [[1, 2], [2, 2]])
    >>> {name: round(value, 2) for name, value in scores.items()}
    {'whole gland': 0.86, 'peripheral zone': 1.0, 'transition zone': 0.8}
    """
    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction has shape {predicted.shape}, the reference {reference.shape}")
    scores = {"whole gland": dice(predicted > 0, reference > 0)}
    if per_zone:
        merged = to_two_zones(predicted)
        for label, name in enumerate(TWO_ZONE_NAMES[1:], start=1):
            scores[name] = dice(merged == label, reference == label)
    return scores


def reference_agreement(case_dir: str | os.PathLike) -> list[dict[str, object]]:
    """Dice between a case's zone map and each delineation in its ``reference/`` folder.

    When a case has been delineated more than once (by several readers, or by several
    models), their agreement bounds what a model can score against any one of them.

    Parameters
    ----------
    case_dir : str or os.PathLike
        A case folder (:mod:`prostseg.data.dataset`) with a ``zones`` file holding a
        two-zone map (0, 1 PZ, 2 TZ) and a ``reference/`` folder of volumes on the T2W
        grid: gland masks (0/1) or two-zone maps (0, 1, 2).

    Returns
    -------
    list of dict
        One row per reference file: ``"reference"`` (the file name), ``"whole gland"``
        and, for two-zone maps, ``"peripheral zone"`` and ``"transition zone"`` (NaN for
        gland masks).

    Raises
    ------
    InputError
        When the case has no zones file or no reference volume, when a volume is not on
        the T2W grid, or when it holds other labels.
    """
    case = find_case(case_dir, require=("t2w", "zones"))
    zones = load_volume(case.path("zones"), num_classes=len(TWO_ZONE_NAMES))
    folder = case.folder / REFERENCE_FOLDER
    files = sorted(path for path in folder.iterdir() if not path.name.startswith(".")) if folder.is_dir() else []
    if not files:
        raise InputError(folder, "no reference delineations: expected volumes on the T2W grid in this folder")
    rows = []
    for path in files:
        other = load_volume(path, num_classes=len(TWO_ZONE_NAMES))
        check_same_grid(zones, other)
        two_zone = bool(other.data.max() > 1)
        scores = two_zone_dice(other.data, zones.data, per_zone=two_zone) if two_zone else {
            "whole gland": dice(other.data > 0, zones.data > 0)}
        rows.append({"reference": path.name, "whole gland": scores["whole gland"],
                     **{name: scores.get(name, float("nan")) for name in TWO_ZONE_NAMES[1:]}})
    return rows


def gland_agreement(mask, case_dir: str | os.PathLike) -> dict[str, float]:
    """Dice of a whole-gland mask against every gland delineation of a case.

    Parameters
    ----------
    mask : array_like
        A gland mask (non-zero: gland) on the case's T2W grid, e.g. a prediction.
    case_dir : str or os.PathLike
        A case folder (:mod:`prostseg.data.dataset`); its ``gland`` mask, its ``zones`` map
        (gland: every non-zero zone) and the volumes of its ``reference/`` folder
        (gland masks or zone maps) are the delineations, those it has.

    Returns
    -------
    dict
        ``{file name: Dice}``, e.g. ``{"gland.nii.gz": 0.87, "zones.nii.gz": 0.84,
        "reference/gland_a.nii.gz": 0.86}``; empty when the case has no delineation.

    Raises
    ------
    InputError
        When a delineation is not on the grid of the case's T2W volume, or ``mask`` has
        another shape.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib
    >>> case = Path(tempfile.mkdtemp()) / "case"
    >>> (case / "reference").mkdir(parents=True)
    >>> gland = np.zeros((4, 4, 2), np.uint8)
    >>> gland[1:3, 1:3] = 1
    >>> for name, data in (("t2w", gland * 100), ("gland", gland), ("reference/other", np.roll(gland, 1, 0))):
    ...     nib.save(nib.Nifti1Image(data, np.eye(4)), case / f"{name}.nii.gz")
    >>> {name: round(value, 2) for name, value in gland_agreement(gland, case).items()}
    {'gland.nii.gz': 1.0, 'reference/other.nii.gz': 0.5}
    """
    case = find_case(case_dir, require=("t2w",))
    t2w = load_volume(case.path("t2w"))
    mask = np.asarray(mask) > 0
    if mask.shape != t2w.shape:
        raise InputError(case.path("t2w"), f"has shape {t2w.shape}, the mask {mask.shape}")
    folder = case.folder / REFERENCE_FOLDER
    paths = [case.path(name) for name in ("gland", "zones") if case.has(name)]
    paths += sorted(path for path in folder.iterdir() if not path.name.startswith(".")) if folder.is_dir() else []
    scores = {}
    for path in paths:
        other = load_volume(path, label=True)
        check_same_grid(t2w, other)
        scores[path.relative_to(case.folder).as_posix()] = dice(mask, other.data > 0)
    return scores


@dataclass(frozen=True)
class RealCaseResult:
    """What :func:`score_real_case` found on one case.

    Attributes
    ----------
    t2w : Volume
        The case's T2W volume.
    reference : numpy.ndarray or None
        Its two-zone map (0, 1 PZ, 2 TZ) on the T2W grid; None when the case has none.
    predictions : dict
        ``"U-Net"``: the predicted gland mask (0/1); ``"Pix2Pix"``: the predicted
        four-zone map (ids of :data:`prostseg.data.dataset.ZONE_NAMES`); both on the T2W grid.
    scores : list of dict
        One row per model: ``"model"``, ``"whole gland"``, ``"peripheral zone"`` and
        ``"transition zone"`` (NaN where the model does not predict zones); empty when
        the case has no zone map.
    """

    t2w: Volume
    reference: np.ndarray | None
    predictions: dict[str, np.ndarray]
    scores: list[dict[str, object]]


def score_real_case(case_dir: str | os.PathLike, *, unet_model: str | os.PathLike | None = None,
                    pix2pix_model: str | os.PathLike | None = None,
                    largest_component: bool = True) -> RealCaseResult:
    """Segment one real case with a gland U-Net and a zone Pix2Pix, and score both.

    The Pix2Pix input is the case's registered stack: when ``aligned/`` holds none,
    :func:`prostseg.preparation.registration.register_case` registers DWI and ADC onto the T2W
    grid first (and writes ``aligned/`` into the case folder). Each model is applied
    with the ``target_spacing`` and the recipe of its training run
    (:func:`prostseg.use.inference.resolve_model`). When the case holds a two-zone
    map (``zones``: 0, 1 PZ, 2 TZ, as :func:`reference_agreement` reads it), both
    predictions are scored against it with :func:`two_zone_dice`: the U-Net on the
    whole gland, Pix2Pix on the gland and on the two zones (its central zone and AFS
    count as transition zone).

    Parameters
    ----------
    case_dir : str or os.PathLike
        A case folder (:mod:`prostseg.data.dataset`) with ``t2w`` and, for Pix2Pix, ``dwi``
        (or ``hbv``) and ``adc``.
    unet_model, pix2pix_model : str or os.PathLike, optional
        Model files of training runs (``best.keras``, ``generator.keras``); a model
        left out is not applied.
    largest_component : bool, optional
        Keep only the largest connected gland component of each prediction
        (:func:`prostseg.use.postprocessing.largest_gland_component`).

    Returns
    -------
    RealCaseResult

    Raises
    ------
    InputError
        When a model file holds another kind of model, the case lacks a volume a model
        needs, or its zone map holds labels other than 0, 1 and 2.
    """
    models = []
    for path, expected in ((unet_model, "unet"), (pix2pix_model, "pix2pix")):
        if path is not None:
            models.append(resolve_model(path))
            found = models[-1][2]
            if found.kind != expected:
                raise InputError(path, f"holds a {found.title} model, not a {expected} model")
    require = sorted({"t2w", *(name for _, _, found in models for name in found.channels)})
    case = find_case(case_dir, require=require)
    if any(not case.has(model_recipe.input) for _, _, model_recipe in models):
        register_case(case.folder)
        case = find_case(case.folder, require=require)
    t2w = load_volume(case.path("t2w"))
    predictions, zone_classes = {}, {}
    for model, target_spacing, model_recipe in models:
        zone_classes[model_recipe.title] = model.output_shape[-1] > 1
        volume, _ = input_volume(case.folder, model_recipe)
        predictions[model_recipe.title] = predict_volume(
            model, volume, target_spacing=target_spacing, largest_component=largest_component,
            kind=model_recipe.kind)
    reference = None
    if case.has("zones"):
        zones = load_volume(case.path("zones"), num_classes=len(TWO_ZONE_NAMES))
        check_same_grid(t2w, zones)
        reference = zones.data
    scores = []
    for name, predicted in predictions.items() if reference is not None else ():
        values = two_zone_dice(predicted, reference, per_zone=zone_classes[name])
        scores.append({"model": name, **{column: values.get(column, float("nan"))
                                         for column in ("whole gland", *TWO_ZONE_NAMES[1:])}})
    return RealCaseResult(t2w, reference, predictions, scores)
