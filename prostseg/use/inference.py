"""Apply trained models to volumes, write label maps, and score them against the truth.

* :func:`load_model` (from :mod:`prostseg.use.export`) -- read a ``.keras`` model file
  safely (``safe_mode=True``), or an exported model (ONNX file or SavedModel folder).
* :func:`predict_probabilities` -- class probabilities of one volume on its own grid,
  optionally averaged over the 8 flips and rotations of training (test-time
  augmentation).
* :func:`predict_volume` -- label map of one volume, on that volume's own grid.
* :func:`predict_case` -- the same from files, written as NIfTI aligned to the source
  image (same affine, same voxel order), ready to overlay in 3D Slicer or ITK-SNAP.
* :func:`evaluate_folder` -- per-case 3D IoU and Dice of a folder of predictions
  against the masks of a data folder, written to CSV with an overlay figure.

The kind of a model is what its recipe (:mod:`prostseg.networks.recipes`) says: the recipe is
found from the name its builder gives the network, saved in the ``.keras`` file, and
checked against the ``config.json`` of the run folder that holds a model file
(:func:`resolve_model`). The recipe's ``prepare`` makes the network's input slices (a
U-Net's T2W, :func:`prostseg.preparation.slices.prepare_unet_volume`; a Pix2Pix generator's
registered T2W/DWI/ADC stack, :func:`prostseg.preparation.slices.prepare_pix2pix_volume`), and its
``restore`` undoes the geometric preprocessing exactly, so predictions lie voxel for
voxel on the grid of the input volume.

Four options change what is predicted, and all are off unless asked for:

* ``target_spacing`` (mm): the slices are resampled to this pixel size before the
  network sees them, exactly as in training (see :mod:`prostseg.preparation.slices`). A model
  trained with it must be applied with it. :func:`predict_case` reads it from the
  ``config.json`` of the run folder that holds the model file
  (:func:`run_target_spacing`), so keep a model in its run folder or pass the value.
* ``largest_component``: keep only the largest connected component of the predicted
  gland (:mod:`prostseg.use.postprocessing`), which removes false islands.
* ``min_lesion_size`` (mm³): remove predicted components smaller than this
  (:func:`prostseg.use.postprocessing.remove_small_components`), for lesion models whose
  specks of a few voxels are false positives.
* ``tta``: test-time augmentation. Each slice is predicted in the 8 orientations the
  training augmentation draws from (:func:`prostseg.preparation.pipeline.augment_pair`: quarter
  turns and flips), each prediction is turned back, and the 8 are averaged. It costs
  8 forward passes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prostseg.atomic import atomic_path
from prostseg.data.dataset import (
    LESION_VALUES, MASKS, NUM_ZONE_CLASSES, ZONE_NAMES, check_output_outside_inputs, discover_cases,
    find_case, load_mask,
)
from prostseg.errors import NON_NEGATIVE, POSITIVE, PROBABILITY, InputError, path_argument
from prostseg.figure_png import save_png
from prostseg.data.io import SUPPORTED_EXTENSIONS, Volume, check_same_grid, load_volume, save_like
from prostseg.networks.metrics import dice, iou, per_class_dice, per_class_iou
from prostseg.networks.recipes import Recipe, input_size, labels_from_probabilities, recipe_for_model
from prostseg.networks.runs import model_run_config
from prostseg.use.export import load_model
from prostseg.use.postprocessing import largest_gland_component, remove_small_components
from prostseg.viz import overlay

__all__ = [
    "EvaluationResult",
    "evaluate_folder",
    "input_volume",
    "load_model",
    "labels_from_probabilities",
    "postprocess",
    "predict_case",
    "predict_probabilities",
    "predict_volume",
    "resolve_model",
    "run_target_spacing",
    "write_nifti_like",
]


def _predict_slices(model, slices: np.ndarray, batch_size: int) -> np.ndarray:
    """``model.predict`` in full batches: the slices are padded with zeros to a multiple of
    ``batch_size`` (the padding's outputs dropped), so that every volume, whatever its
    slice count, calls the model with one input shape and its graph is traced once."""
    count = len(slices)
    padding = -count % batch_size
    if padding:
        slices = np.concatenate([slices, np.zeros((padding, *slices.shape[1:]), slices.dtype)])
    return np.asarray(model.predict(slices, batch_size=batch_size, verbose=0), dtype=np.float32)[:count]


def _dihedral_predict(model, slices: np.ndarray, batch_size: int) -> np.ndarray:
    """The mean prediction over the 8 flips and quarter turns of square slices, each
    turned back before averaging (test-time augmentation)."""
    total = None
    for turns in range(4):
        for flip in (False, True):
            moved = np.rot90(slices, turns, axes=(1, 2))
            moved = moved[:, :, ::-1] if flip else moved
            out = _predict_slices(model, np.ascontiguousarray(moved), batch_size)
            out = out[:, :, ::-1] if flip else out
            out = np.rot90(out, -turns, axes=(1, 2)).astype(np.float32)
            total = out if total is None else total + out
    return total / 8


def _checked_input(model_recipe: Recipe, volume: Volume | np.ndarray) -> np.ndarray:
    """The array of ``volume``, checked to have the shape the recipe's model takes."""
    data = volume.data if isinstance(volume, Volume) else np.asarray(volume)
    channels = len(model_recipe.channels)
    fits = data.ndim == 3 if channels == 1 else data.ndim == 4 and data.shape[-1] == channels
    if not fits:
        path = volume.path if isinstance(volume, Volume) else None
        raise InputError(path, f"the model is {model_recipe.takes}; got shape {data.shape}")
    return data


def predict_probabilities(model, volume: Volume | np.ndarray, *, image_size: int | None = None,
                          batch_size: int = 4, target_spacing: float | None = None,
                          tta: bool = False, kind: str | None = None) -> np.ndarray:
    """Class probabilities of every voxel of a volume, on its own grid.

    Parameters
    ----------
    model : keras.Model or prostseg.use.export.ExportedModel
        A U-Net (1-channel input; 1 sigmoid output channel, or several softmax ones) or
        a Pix2Pix generator (3-channel input, one softmax channel per zone).
    volume : Volume or numpy.ndarray
        In canonical ``(x, y, z)`` order: a T2W volume ``(X, Y, Z)`` for a U-Net, a
        registered stack ``(X, Y, Z, 3)`` for Pix2Pix.
    image_size : int, optional
        Slice size the model takes; read from the model when it has a fixed size.
    batch_size : int, optional
        Slices per forward pass.
    target_spacing : float, optional
        The ``target_spacing`` (mm) the model was trained with; ``volume`` must then be
        a :class:`~prostseg.data.io.Volume` (its spacing is needed). By default slices keep
        their spacing (U-Net) or are resized whole (Pix2Pix).
    tta : bool, optional
        Average the predictions of the 8 flips and quarter turns of each slice (see
        the module documentation).
    kind : str, optional
        The model's kind (:mod:`prostseg.networks.recipes`), for a network whose name is not
        that of a recipe; by default the model's own record says it.

    Returns
    -------
    numpy.ndarray of float32, shape (X, Y, Z, C)
        ``C`` is the number of output channels of the model. Voxels that the centre
        crop left out of the network's view have probability 0.

    Raises
    ------
    InputError
        When the volume does not have the shape the model takes (naming its file).
    ValueError
        When ``target_spacing`` is given with a plain array (no spacing), or the model
        records no known kind and ``kind`` is not given.

    Examples
    --------
    >>> from prostseg.networks.models import build_unet
    >>> model = build_unet((32, 32, 1), base_filters=2, depth=2)
    >>> probabilities = predict_probabilities(model, np.random.default_rng(0).random((40, 30, 3)))
    >>> probabilities.shape, probabilities.dtype
    ((40, 30, 3, 1), dtype('float32'))
    """
    model_recipe = recipe_for_model(model, kind)
    data = _checked_input(model_recipe, volume)
    size = input_size(model, image_size)
    if target_spacing is not None and not isinstance(volume, Volume):
        raise ValueError("target_spacing needs the volume's spacing: pass a prostseg.data.io.Volume, not an array")
    geometry = dict(target_spacing=target_spacing, spacing=volume.spacing if isinstance(volume, Volume) else None)
    slices = model_recipe.prepare(data, size, **geometry)
    if tta:
        outputs = _dihedral_predict(model, slices, batch_size)
    else:
        outputs = _predict_slices(model, slices, batch_size)
    return model_recipe.restore(outputs, data.shape[:3], **geometry).astype(np.float32, copy=False)


def postprocess(labels: np.ndarray, *, largest_component: bool = False,
                min_lesion_size: float | None = None,
                spacing: tuple[float, float, float] | None = None) -> np.ndarray:
    """Apply the optional clean-ups of predicted labels (module documentation).

    Parameters
    ----------
    labels : numpy.ndarray, shape (X, Y, Z)
        A predicted label map.
    largest_component : bool, optional
        Keep only the largest connected component of the foreground, zone labels kept
        inside it (:func:`prostseg.use.postprocessing.largest_gland_component`).
    min_lesion_size : float, optional
        Remove connected components of the foreground smaller than this many mm³
        (:func:`prostseg.use.postprocessing.remove_small_components`).
    spacing : tuple of float, optional
        Voxel size in mm; needed with ``min_lesion_size``.

    Returns
    -------
    numpy.ndarray, same shape and dtype

    Examples
    --------
    >>> labels = np.zeros((6, 1, 1), np.uint8)
    >>> labels[0:3], labels[5] = 1, 1          # 3 voxels of 2 mm³ and 1 voxel
    >>> postprocess(labels, min_lesion_size=4.0, spacing=(1.0, 1.0, 2.0)).ravel().tolist()
    [1, 1, 1, 0, 0, 0]
    """
    if min_lesion_size is not None:
        if spacing is None:
            raise ValueError("min_lesion_size (mm³) needs the voxel spacing")
        voxels = float(min_lesion_size) / float(np.prod(spacing))
        labels = remove_small_components(labels, int(np.ceil(voxels - 1e-9)))
    return largest_gland_component(labels) if largest_component else labels


def predict_volume(model, volume: Volume | np.ndarray, *, image_size: int | None = None,
                   threshold: float = 0.5, batch_size: int = 4, target_spacing: float | None = None,
                   largest_component: bool = False, min_lesion_size: float | None = None,
                   tta: bool = False, kind: str | None = None) -> np.ndarray:
    """Segment every axial slice of a volume and return the labels on its grid.

    :func:`predict_probabilities`, then the ``decode`` step of the model's recipe
    (:mod:`prostseg.networks.recipes`) and :func:`postprocess`.

    Parameters
    ----------
    model, volume, image_size, batch_size, target_spacing, tta, kind
        See :func:`predict_probabilities`.
    threshold : float, optional
        Foreground when the probability is above it (single-channel outputs).
    largest_component : bool, optional
        Keep only the largest connected component of the predicted foreground (the
        whole gland for zone maps, zone labels kept inside it;
        :func:`prostseg.use.postprocessing.largest_gland_component`, face connectivity in
        3D).
    min_lesion_size : float, optional
        Remove predicted components smaller than this many mm³; ``volume`` must then
        be a :class:`~prostseg.data.io.Volume`.

    Returns
    -------
    numpy.ndarray of uint8, shape (X, Y, Z)
        0/1 for a single-channel U-Net, class ids (argmax) otherwise.

    Raises
    ------
    InputError
        When the volume does not have the shape the model takes (naming its file).
    ValueError
        When ``target_spacing`` or ``min_lesion_size`` is given with a plain array.

    Examples
    --------
    >>> from prostseg.networks.models import build_unet
    >>> model = build_unet((32, 32, 1), base_filters=2, depth=2)
    >>> labels = predict_volume(model, np.random.default_rng(0).random((40, 30, 3)))
    >>> labels.shape, labels.dtype
    ((40, 30, 3), dtype('uint8'))
    """
    check_prediction_options(threshold=threshold, target_spacing=target_spacing, min_lesion_size=min_lesion_size)
    if min_lesion_size is not None and not isinstance(volume, Volume):
        raise ValueError("min_lesion_size (mm³) needs the volume's spacing: pass a prostseg.data.io.Volume")
    probabilities = predict_probabilities(model, volume, image_size=image_size, batch_size=batch_size,
                                          target_spacing=target_spacing, tta=tta, kind=kind)
    spacing = volume.spacing if isinstance(volume, Volume) else None
    return postprocess(recipe_for_model(model, kind).decode(probabilities, threshold),
                       largest_component=largest_component, min_lesion_size=min_lesion_size,
                       spacing=spacing)


def input_volume(image: Path, model_recipe: Recipe) -> tuple[Volume, Volume]:
    """The volume a model reads from a case folder or an image, and the grid of its output.

    In a case folder the input is the recipe's ``input`` file, on the grid of the
    case's T2W, which is the reference; an image file (or DICOM series folder) is both.

    Parameters
    ----------
    image : pathlib.Path
        A case folder, a volume file or a DICOM series folder.
    model_recipe : Recipe
        The model's recipe (:func:`resolve_model`).

    Returns
    -------
    (Volume, Volume)
        The model's input and the reference image the prediction is written like.

    Raises
    ------
    InputError
        When a file is missing or cannot be read as what the model takes.
    """
    channels = len(model_recipe.channels)
    channels = channels if channels > 1 else None
    if image.is_dir():
        case = find_case(image, require=())
        if case.files:  # a case folder; otherwise a DICOM series folder
            t2w = load_volume(case.path("t2w"))
            if model_recipe.input == "t2w":
                return t2w, t2w
            volume = load_volume(case.path(model_recipe.input), channels=channels)
            check_same_grid(t2w, volume)
            return volume, t2w
    try:
        volume = load_volume(image, channels=channels)
    except InputError as err:
        raise InputError(err.path, f"{err.problem} (the model is {model_recipe.takes})") from None
    return volume, volume


def run_target_spacing(model_path: str | os.PathLike) -> float | None:
    """The ``target_spacing`` of the training run a model file belongs to.

    A run folder of :mod:`prostseg.training.loop` holds the model files beside the run's
    ``config.json``; the value recorded there is the one the model must be applied
    with.

    Parameters
    ----------
    model_path : str or os.PathLike
        A model file, e.g. ``runs/unet/best.keras``.

    Returns
    -------
    float or None
        The run's ``target_spacing``; None when it had none, or when no
        ``config.json`` lies beside the model file.

    Raises
    ------
    InputError
        When the ``config.json`` beside the model cannot be read as a run configuration.

    Examples
    --------
    >>> import tempfile
    >>> from prostseg.networks.runs import UNetTrainingConfig
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = UNetTrainingConfig("data", str(run), target_spacing=1.0).to_json(run / "config.json")
    >>> run_target_spacing(run / "best.keras")
    1.0
    >>> run_target_spacing(Path(tempfile.mkdtemp()) / "model.keras") is None
    True
    """
    config = model_run_config(model_path)
    return config.target_spacing if config is not None else None


def resolve_model(model, target_spacing: float | None = None
                  ) -> tuple[object, float | None, Recipe]:
    """A model object, the ``target_spacing`` to apply it with, and its recipe.

    Parameters
    ----------
    model : keras.Model or prostseg.use.export.ExportedModel or str or os.PathLike
        A model, or a file read with :func:`load_model`. A ``.keras`` file inside the
        run folder it was trained in is applied with the run's ``target_spacing``
        (:func:`run_target_spacing`); an exported model with its contract's.
    target_spacing : float, optional
        The model's ``target_spacing`` (mm) when nothing records it. A value that
        contradicts the recorded one is an error.

    Returns
    -------
    (model, target_spacing, recipe)
        ``recipe`` (:mod:`prostseg.networks.recipes`) is the kind the run's ``config.json``
        records, which must agree with what the model records
        (:func:`prostseg.networks.recipes.recipe_for_model`). A ``.keras`` file without a
        ``config.json`` beside it (copied out of its run folder) is known by the name
        its builder gave the network, as every prostseg run saved it.

    Raises
    ------
    InputError
        When the file is not a model, records no prostseg model kind, its kind
        contradicts its run's, or ``target_spacing`` contradicts the recorded value.
    """
    model_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    if model_path is not None:
        model = load_model(model_path)
    config = model_run_config(model_path) if model_path is not None else None
    recorded = getattr(model, "target_spacing", None)  # exported models carry it
    if config is not None and recorded is None:
        recorded = config.target_spacing
    if recorded is not None and target_spacing is not None and recorded != target_spacing:
        raise InputError(model_path, f"was trained with target_spacing {recorded} mm (recorded with the "
                         f"model), not {target_spacing}")
    try:
        model_recipe = recipe_for_model(model)
    except ValueError as err:
        if config is None:
            raise InputError(model_path, str(err)) from None
        model_recipe = recipe_for_model(model, config.KIND)
    if config is not None and config.KIND != model_recipe.kind:
        raise InputError(model_path, f"holds a {model_recipe.title} model ({model.name!r}), but "
                         f"its run's config.json records a {config.KIND} run")
    return model, recorded if recorded is not None else target_spacing, model_recipe


def check_prediction_options(*, threshold: float = 0.5, target_spacing: float | None = None,
                             min_lesion_size: float | None = None) -> None:
    """Raise :class:`InputError` for a threshold outside (0, 1), a spacing that is not a
    finite positive number of mm, or a negative or non-finite ``min_lesion_size``."""
    PROBABILITY.check(threshold, "threshold")
    if target_spacing is not None:
        POSITIVE.check(target_spacing, "target_spacing")
    if min_lesion_size is not None:
        NON_NEGATIVE.check(min_lesion_size, "min_lesion_size")


def _check_nifti_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(path, "file exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(path, "predictions are written as NIfTI; use a name ending in .nii.gz or .nii")


#: Probability maps are stored as uint16 steps of this size (NIfTI has no float16).
PROBABILITY_STEP = 1.0 / 65535


def write_nifti_like(array: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """:func:`prostseg.data.io.save_like`, written atomically (replacing ``path``).

    Labels are stored in the smallest integer type. Floating-point arrays are
    probabilities: NIfTI has no 16-bit float type, so they are stored in 16 bits as
    ``uint16`` steps of :data:`PROBABILITY_STEP` (the ``scl_slope``; every NIfTI
    reader returns the scaled values, within 0.000008 of the probability): half the
    size of float32, and finer than float16 over ``[0, 1]``.

    Examples
    --------
    >>> import tempfile, nibabel as nib
    >>> from prostseg.data.io import Volume
    >>> reference = Volume(np.zeros((2, 1, 1)), np.eye(4))
    >>> path = Path(tempfile.mkdtemp()) / "p.nii.gz"
    >>> _ = write_nifti_like(np.array([0.25, 1.0]).reshape(2, 1, 1), reference, path)
    >>> nib.load(path).get_data_dtype().name, nib.load(path).get_fdata().ravel().round(5).tolist()
    ('uint16', [0.25, 1.0])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    scale = None
    if np.issubdtype(array.dtype, np.floating):
        array = np.round(np.clip(array, 0.0, 1.0) / PROBABILITY_STEP).astype(np.uint16)
        scale = PROBABILITY_STEP
    with atomic_path(path) as tmp:
        save_like(array, reference, tmp, scale=scale)
    return path


def predict_case(model, image: str | os.PathLike, out_path: str | os.PathLike, *,
                 threshold: float = 0.5, target_spacing: float | None = None,
                 largest_component: bool = False, min_lesion_size: float | None = None,
                 tta: bool = False, probabilities_path: str | os.PathLike | None = None,
                 overwrite: bool = False) -> Path:
    """Segment one case and write the label map as NIfTI aligned to the source image.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A model, or a model file (see :func:`resolve_model`): a ``.keras`` file inside
        the run folder it was trained in is applied with the run's ``target_spacing``.
    image : str or os.PathLike
        A case folder (:mod:`prostseg.data.dataset` layout: its ``t2w`` for a U-Net, its
        ``aligned/stack`` for Pix2Pix), or a volume file (or DICOM series folder).
    out_path : str or os.PathLike
        Output ``.nii`` or ``.nii.gz`` file.
    threshold, largest_component, min_lesion_size, tta : optional
        See :func:`predict_volume`.
    target_spacing : float, optional
        The model's ``target_spacing`` (mm), for a model object or a model file kept
        outside its run folder (see :func:`resolve_model`).
    probabilities_path : str or os.PathLike, optional
        Also write the probabilities (:func:`predict_probabilities`, before
        post-processing) here, one channel per output class, in 16 bits
        (:func:`write_nifti_like`).
    overwrite : bool, optional
        Replace existing output files.

    Returns
    -------
    pathlib.Path
        The written label file. Its voxel order, shape and affine are those of the
        source image file (the case's T2W), whatever orientation that file uses.

    Raises
    ------
    InputError
        When an output exists (without ``overwrite``), the model file is not a
        model, ``target_spacing`` contradicts the model's run, or the image cannot be
        read or does not suit the model.
    """
    check_prediction_options(threshold=threshold, target_spacing=target_spacing, min_lesion_size=min_lesion_size)
    outputs = [Path(out_path)] + ([Path(probabilities_path)] if probabilities_path is not None else [])
    for path in outputs:
        check_output_outside_inputs(path, [image, model if isinstance(model, (str, os.PathLike)) else None])
        _check_nifti_target(path, overwrite)
    model, target_spacing, model_recipe = resolve_model(model, target_spacing)
    volume, reference = input_volume(Path(image), model_recipe)
    probabilities = predict_probabilities(model, volume, target_spacing=target_spacing, tta=tta,
                                          kind=model_recipe.kind)
    labels = postprocess(model_recipe.decode(probabilities, threshold),
                         largest_component=largest_component, min_lesion_size=min_lesion_size,
                         spacing=volume.spacing)
    if probabilities_path is not None:
        write_nifti_like(probabilities, reference, probabilities_path)
    return write_nifti_like(labels, reference, out_path)


# --- evaluation ---------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """Scores written by :func:`evaluate_folder`.

    Attributes
    ----------
    rows : list of dict
        One dict per case (``case_id`` and the score columns), sorted by case id.
    mean : dict
        The mean of each score over the cases (NaN ignored).
    csv_path : pathlib.Path
    figure_path : pathlib.Path or None
    """

    rows: list[dict]
    mean: dict
    csv_path: Path
    figure_path: Path | None


def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    """``{case_id: file}`` of the volume files directly in ``pred_dir``."""
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "no such prediction folder")
    files: dict[str, Path] = {}
    for entry in sorted(pred_dir.iterdir()):
        ending = next((ext for ext in SUPPORTED_EXTENSIONS if entry.name.lower().endswith(ext)), None)
        if ending is None or not entry.is_file() or entry.name.startswith("."):
            continue
        case_id = entry.name[: -len(ending)]
        if case_id in files:
            raise InputError(pred_dir, f"two prediction files for case {case_id}: {files[case_id].name}, {entry.name}")
        files[case_id] = entry
    if not files:
        raise InputError(pred_dir, "holds no prediction files (expected CASE_ID.nii.gz for each case)")
    return files


def _scores(pred: np.ndarray, truth: np.ndarray, per_zone: bool) -> dict[str, float]:
    if not per_zone:
        return {"iou": iou(pred > 0, truth > 0), "dice": dice(pred > 0, truth > 0),
                "truth_voxels": int(np.count_nonzero(truth)), "pred_voxels": int(np.count_nonzero(pred))}
    zone_ious = per_class_iou(pred, truth, NUM_ZONE_CLASSES)[1:]
    zone_dices = per_class_dice(pred, truth, NUM_ZONE_CLASSES)[1:]
    row = {"iou": _nanmean(zone_ious), "dice": _nanmean(zone_dices)}
    for name, zone_iou, zone_dice in zip(ZONE_NAMES[1:], zone_ious, zone_dices):
        slug = name.replace(" ", "_")
        row[f"iou_{slug}"], row[f"dice_{slug}"] = float(zone_iou), float(zone_dice)
    return row


def _truth_and_prediction(case, pred_path: Path, label: str, lesion_value: int) -> tuple[Volume, Volume]:
    """The truth mask and the prediction, each holding the values its kind allows, as in
    training (:func:`prostseg.data.dataset.load_mask`): zone maps 0..4, gland masks 0 and
    1, lesion masks 0 and ``lesion_value``."""
    return (load_mask(case.path(label), label, lesion_value=lesion_value),
            load_mask(pred_path, label, lesion_value=lesion_value))


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else float("nan")


def evaluate_folder(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, *,
                    out_csv: str | os.PathLike, label: str = "lesion", per_zone: bool = False,
                    out_figure: str | os.PathLike | None = None, lesion_value: int = 1,
                    overwrite: bool = False) -> EvaluationResult:
    """Score a folder of predicted label maps against the masks of a data folder.

    Scores are computed on whole 3D volumes with :mod:`prostseg.networks.metrics` (an empty
    prediction of an empty mask scores 1).

    Parameters
    ----------
    pred_dir : str or os.PathLike
        Holds one file per case, named ``CASE_ID.nii.gz`` (any extension of
        :data:`prostseg.data.io.SUPPORTED_EXTENSIONS`), e.g. written by :func:`predict_case`.
    truth_dir : str or os.PathLike
        A data folder in the :mod:`prostseg.data.dataset` layout holding every predicted case.
    out_csv : str or os.PathLike
        CSV to write: one row per case, then a row ``mean``.
    label : {"lesion", "zones", "gland"}, optional
        The truth mask of each case.
    per_zone : bool, optional
        ``False``: compare foreground (non-zero) against foreground, e.g. lesions, or
        the whole gland when ``label="zones"``. ``True`` (needs ``label="zones"``):
        IoU and Dice of each zone (``iou_<zone>``, ``dice_<zone>``); ``iou`` and
        ``dice`` are then their means over the zones present.
    out_figure : str or os.PathLike, optional
        PNG (or any Matplotlib format) showing the best and the worst case by Dice:
        the T2W slice with the most true foreground, truth and prediction outlined.
    lesion_value : {1, 255}, optional
        The value of lesion voxels in the lesion masks and predictions, as in training;
        a mask holding any other non-zero value is refused.
    overwrite : bool, optional
        Replace existing output files.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError
        When an output exists (without ``overwrite``), a predicted case has no truth
        or lies on another grid, or a folder holds no cases.
    """
    if label not in MASKS:
        raise ValueError(f"label must be one of {MASKS}, got {label!r}")
    if per_zone and label != "zones":
        raise ValueError("per_zone=True compares zone labels: use label='zones'")
    pred_dir, truth_dir = path_argument(pred_dir, "pred_dir"), path_argument(truth_dir, "truth_dir")
    out_csv = path_argument(out_csv, "out_csv")
    if lesion_value not in LESION_VALUES:
        raise InputError(None, f"lesion_value must be one of {LESION_VALUES}, got {lesion_value!r}")
    outputs = [Path(out_csv)] + ([Path(out_figure)] if out_figure is not None else [])
    for path in outputs:
        check_output_outside_inputs(path, [pred_dir, truth_dir])
        if path.exists() and not overwrite:
            raise InputError(path, "file exists; pass overwrite=True (CLI: --overwrite) to replace it")
    predictions = _prediction_files(Path(pred_dir))
    cases = {case.case_id: case for case in discover_cases(truth_dir, require=("t2w",), check_grids=False)}
    missing = sorted(case_id for case_id in predictions if not (case_id in cases and cases[case_id].has(label)))
    if missing:
        raise InputError(truth_dir, f"no {label} mask for predicted case(s) {', '.join(missing)}")

    rows = []
    for case_id, pred_path in predictions.items():
        truth, pred = _truth_and_prediction(cases[case_id], pred_path, label, lesion_value)
        check_same_grid(truth, pred)
        rows.append({"case_id": case_id, **_scores(pred.data, truth.data, per_zone)})
    columns = list(rows[0])
    mean = {key: _nanmean([row[key] for row in rows]) for key in columns[1:]}
    out_csv = Path(out_csv)
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow({"case_id": "mean", **mean})

    figure_path = None
    if out_figure is not None:
        figure_path = _best_worst_figure(rows, predictions, cases, label, per_zone, Path(out_figure),
                                         lesion_value)
    return EvaluationResult(rows, mean, out_csv, figure_path)


def _best_worst_figure(rows, predictions, cases, label: str, per_zone: bool, path: Path,
                       lesion_value: int) -> Path:
    """Save an overlay of the best and the worst case by Dice (foreground outlines
    unless ``per_zone``, as the scores were computed)."""
    from matplotlib.figure import Figure

    ranked = sorted(rows, key=lambda row: (np.nan_to_num(row["dice"], nan=-1.0), row["case_id"]))
    shown = [("best", ranked[-1]), ("worst", ranked[0])] if len(ranked) > 1 else [("only", ranked[0])]
    figure = Figure(figsize=(5 * len(shown), 5))
    axes = figure.subplots(1, len(shown), squeeze=False)
    for ax, (title, row) in zip(axes[0], shown):
        case = cases[row["case_id"]]
        image = load_volume(case.path("t2w"))
        truth, pred = (volume.data for volume in
                       _truth_and_prediction(case, predictions[row["case_id"]], label, lesion_value))
        if not per_zone:
            truth, pred = truth > 0, pred > 0
        areas = np.count_nonzero(truth, axis=(0, 1)) if truth.any() else np.count_nonzero(pred, axis=(0, 1))
        k = int(np.argmax(areas)) if areas.any() else image.shape[2] // 2
        overlay(image.data[:, :, k], truth[:, :, k], pred[:, :, k], ax=ax,
                title=f"{title}: {row['case_id']} slice {k}, Dice {row['dice']:.3f}")
    return save_png(figure, path, dpi=100, overwrite=True)  # evaluate_folder checked overwrite
