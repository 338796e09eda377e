"""Export a trained model for serving: a TensorFlow SavedModel and an ONNX model.

A network alone is not enough to use a model: it must be fed slices prepared exactly
as in training. Every exported file therefore carries its *preprocessing contract*
(:func:`preprocessing_contract`), a JSON document that says what the network takes and
gives:

* ``model_kind`` -- the model's recipe (:mod:`prostseg.networks.recipes`): ``"unet"`` (T2W,
  1 channel) or ``"pix2pix"`` (T2W/DWI/ADC stack);
* ``input_size`` and ``channels`` (channel order), in NHWC layout: one axial slice per
  batch item, height along ``x`` (towards the patient's Right) and width along ``y``
  (Anterior) of the RAS+ canonical volume (:mod:`prostseg.data.io`);
* ``normalisation`` -- per-volume percentile clip and min-max scaling (U-Net), or a
  per-volume, per-channel z-score (Pix2Pix), as the recipe's ``prepare`` does;
* ``geometry`` and ``target_spacing_mm`` -- how slices reach ``input_size``;
* ``output`` -- activation, class names and the threshold of a sigmoid output.

Where it lives:

* SavedModel (``saved_model/``): a signature ``contract`` that takes nothing and
  returns the JSON string, beside ``serving_default`` (input ``image``, output
  ``probabilities``). TensorFlow Serving serves it as it is.
* ONNX (``model.onnx``, written with ``tf2onnx``): the metadata property
  ``prostseg_contract`` (input ``image``, output ``probabilities``).

:func:`load_exported` reads either back as an :class:`ExportedModel` that
:func:`prostseg.use.inference.predict_volume` accepts like a Keras model, so an exported
file is applied with the very preprocessing it was trained with. :func:`load_model`
reads any model file: a ``.keras`` file, or an exported one.

``tf2onnx`` and ``onnxruntime`` are optional: ``pip install "prostseg[deploy]"``.

Examples
--------
>>> from prostseg.networks.models import build_unet
>>> contract = preprocessing_contract(build_unet((32, 32, 1), base_filters=2, depth=2))
>>> contract["model_kind"], contract["input_size"], contract["channels"]
('unet', 32, ['t2w'])
>>> contract["normalisation"]["method"]
'percentile_clip_minmax'
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prostseg import __version__
from prostseg.atomic import atomic_path
from prostseg.data.dataset import ZONE_NAMES, check_output_outside_inputs
from prostseg.errors import POSITIVE, InputError
from prostseg.networks.recipes import input_size, recipe_for_model
from prostseg.networks.runs import model_run_config

__all__ = [
    "CONTRACT_KEY",
    "ONNX_FILE",
    "SAVED_MODEL_DIR",
    "ExportedModel",
    "export_model",
    "load_exported",
    "load_model",
    "preprocessing_contract",
]

#: Name of the SavedModel signature and of the ONNX metadata property holding the contract.
CONTRACT_KEY = "prostseg_contract"
#: Folder and file names :func:`export_model` writes into its output folder.
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
_CONTRACT_SIGNATURE = "contract"
_INPUT_NAME = "image"
_OUTPUT_NAME = "probabilities"
_ONNX_OPSET = 17
_CONTRACT_VERSION = 1


def _fixed_size(model) -> int:
    try:
        return input_size(model)
    except ValueError as err:
        raise ValueError(f"{err}: export needs a model built for one fixed slice size") from None


def preprocessing_contract(model, *, target_spacing: float | None = None,
                           label: str | None = None, kind: str | None = None) -> dict:
    """What a model takes and gives, as a JSON-ready dict (see the module documentation).

    Parameters
    ----------
    model : keras.Model
        A network built by a recipe of :mod:`prostseg.networks.recipes` for a fixed square
        slice size.
    target_spacing : float, optional
        The ``target_spacing`` (mm) the model was trained with (None: native spacing).
    label : str, optional
        What a single-channel U-Net segments (``"lesion"``, or ``"zones"`` for the
        whole gland), as in its training configuration.
    kind : str, optional
        The model's kind, when the model does not record it
        (:func:`prostseg.networks.recipes.recipe_for_model`).

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        When the model is not a prostseg model kind or takes slices of open size.
    """
    model_recipe = recipe_for_model(model, kind)
    size = _fixed_size(model)
    classes = int(model.output_shape[-1])
    if classes == 1:
        names = ["gland" if label in ("zones", "gland") else (label or "foreground")]
        output = {"activation": "sigmoid", "classes": names, "threshold": 0.5}
    else:
        names = (list(ZONE_NAMES) if classes == len(ZONE_NAMES)
                 else [f"class {i}" for i in range(classes)])
        output = {"activation": "softmax", "classes": names}
    return {
        "contract_version": _CONTRACT_VERSION,
        "model_kind": model_recipe.kind,
        "input_name": _INPUT_NAME,
        "output_name": _OUTPUT_NAME,
        "input_size": size,
        "channels": list(model_recipe.channels),
        "layout": "NHWC: one axial slice per item; height along x (patient Right), "
                  "width along y (Anterior) of the RAS+ canonical volume",
        "normalisation": dict(model_recipe.normalisation),
        "target_spacing_mm": target_spacing,
        "geometry": model_recipe.geometry(target_spacing),
        "output": output,
        "prostseg_version": __version__,
    }


def _fresh(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(path, "exists; pass overwrite=True (CLI: --overwrite) to replace it")


def _write_saved_model(model, contract: dict, path: Path) -> None:
    import keras
    import tensorflow as tf

    size, channels = contract["input_size"], len(contract["channels"])
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda image: {_OUTPUT_NAME: model(image, training=False)},
        input_signature=[tf.TensorSpec((None, size, size, channels), tf.float32, name=_INPUT_NAME)],
    )
    text = json.dumps(contract, sort_keys=True)
    archive.add_endpoint(_CONTRACT_SIGNATURE,
                         tf.function(lambda: {CONTRACT_KEY: tf.constant(text)}, input_signature=[]))
    logger, level = tf.get_logger(), tf.get_logger().level
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        logger.setLevel("ERROR")  # no "Assets written to" line for a temporary folder
        try:
            archive.write_out(str(staged), verbose=False)
        finally:
            logger.setLevel(level)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staged, path)


def _write_onnx(model, contract: dict, path: Path) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx

    size, channels = contract["input_size"], len(contract["channels"])
    spec = (tf.TensorSpec((None, size, size, channels), tf.float32, name=_INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=_ONNX_OPSET)
    if [output.name for output in proto.graph.output] != [_OUTPUT_NAME]:
        raise ValueError(f"the ONNX graph's outputs are {[o.name for o in proto.graph.output]}, "
                         f"expected [{_OUTPUT_NAME!r}] (the prostseg output layer)")
    onnx.helper.set_model_props(proto, {CONTRACT_KEY: json.dumps(contract, sort_keys=True)})
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)


def export_model(model, out_dir: str | os.PathLike, *, formats=("savedmodel", "onnx"),
                 target_spacing: float | None = None, label: str | None = None,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write a model as a SavedModel and/or ONNX, each carrying its contract.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A model, or a ``.keras`` file; a file inside its run folder takes
        ``target_spacing`` and ``label`` from the run's ``config.json``.
    out_dir : str or os.PathLike
        Folder to write ``saved_model/`` and ``model.onnx`` into (created).
    formats : sequence of {"savedmodel", "onnx"}, optional
    target_spacing, label : optional
        See :func:`preprocessing_contract`; for a model object, or to state them for
        a file kept outside its run folder (a value contradicting the run is an error).
    overwrite : bool, optional
        Replace existing exports.

    Returns
    -------
    dict
        ``{"savedmodel": path, "onnx": path}`` for the formats written.

    Raises
    ------
    InputError
        When an output exists (without ``overwrite``), the model file cannot be read,
        or a stated setting contradicts the model's run.
    """
    unknown = sorted(set(formats) - {"savedmodel", "onnx"})
    if unknown or not formats:
        raise ValueError(f"formats must be some of ('savedmodel', 'onnx'), got {tuple(formats)}")
    model_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    if target_spacing is not None:
        POSITIVE.check(target_spacing, "target_spacing")
    check_output_outside_inputs(out_dir, [model_path])
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(out_dir, "exists and is not a folder; exports are written into a folder")
    kind = None
    if model_path is not None:
        config = model_run_config(model_path)
        recorded_spacing, recorded_label, kind = (
            (config.target_spacing, getattr(config, "label", None), config.KIND) if config is not None
            else (None, None, None))
        for name, stated, recorded in (("target_spacing", target_spacing, recorded_spacing),
                                       ("label", label, recorded_label)):
            if stated is not None and recorded is not None and stated != recorded:
                raise InputError(model_path, f"was trained with {name} {recorded!r} (its run's "
                                 f"config.json), not {stated!r}")
        target_spacing = recorded_spacing if recorded_spacing is not None else target_spacing
        label = recorded_label if recorded_label is not None else label
        model = load_model(model_path)
    try:
        contract = preprocessing_contract(model, target_spacing=target_spacing, label=label,
                                          kind=kind)
    except ValueError as err:
        raise InputError(model_path, str(err)) from None
    out_dir = Path(out_dir)
    targets = {"savedmodel": out_dir / SAVED_MODEL_DIR, "onnx": out_dir / ONNX_FILE}
    targets = {fmt: targets[fmt] for fmt in ("savedmodel", "onnx") if fmt in formats}
    for path in targets.values():
        _fresh(path, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {"savedmodel": _write_saved_model, "onnx": _write_onnx}
    for fmt, path in targets.items():
        writers[fmt](model, contract, path)
    return targets


@dataclass
class ExportedModel:
    """An exported model read back, usable where prostseg takes a Keras model.

    It has what :func:`prostseg.use.inference.predict_volume` uses of a model:
    :attr:`name`, :attr:`input_shape`, :attr:`output_shape` and :meth:`predict`.

    Attributes
    ----------
    path : pathlib.Path
        The SavedModel folder or ``.onnx`` file.
    contract : dict
        Its preprocessing contract (:func:`preprocessing_contract`).
    """

    path: Path
    contract: dict
    _run: object

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def input_shape(self) -> tuple:
        size = self.contract["input_size"]
        return (None, size, size, len(self.contract["channels"]))

    @property
    def output_shape(self) -> tuple:
        return self.input_shape[:3] + (len(self.contract["output"]["classes"]),)

    @property
    def target_spacing(self) -> float | None:
        """The ``target_spacing`` (mm) the model must be applied with."""
        return self.contract["target_spacing_mm"]

    def predict(self, slices, batch_size: int = 4, verbose: int = 0) -> np.ndarray:
        """Probabilities of a stack of prepared slices ``(N, H, W, C)``, in batches."""
        slices = np.asarray(slices, dtype=np.float32)
        outputs = [self._run(slices[start:start + batch_size])
                   for start in range(0, len(slices), max(1, int(batch_size)))]
        if not outputs:
            return np.zeros((0,) + self.output_shape[1:], np.float32)
        return np.concatenate(outputs)


def _load_onnx(path: Path) -> ExportedModel:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise InputError(path, f"not an ONNX model: {err}") from None
    props = session.get_modelmeta().custom_metadata_map
    if CONTRACT_KEY not in props:
        raise InputError(path, f"ONNX model without a {CONTRACT_KEY!r} metadata property "
                         "(not written by prostseg export)")
    input_name = session.get_inputs()[0].name
    return ExportedModel(path, json.loads(props[CONTRACT_KEY]),
                         lambda batch: session.run([_OUTPUT_NAME], {input_name: batch})[0])


def _load_saved_model(path: Path) -> ExportedModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(path, f"not a SavedModel: {err}") from None
    if _CONTRACT_SIGNATURE not in loaded.signatures:
        raise InputError(path, f"SavedModel without a {_CONTRACT_SIGNATURE!r} signature "
                         "(not written by prostseg export)")
    contract = json.loads(loaded.signatures[_CONTRACT_SIGNATURE]()[CONTRACT_KEY].numpy().decode())
    serve = loaded.signatures["serving_default"]
    return ExportedModel(path, contract,
                         lambda batch: serve(**{_INPUT_NAME: tf.constant(batch)})[_OUTPUT_NAME].numpy())


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Read a model written by :func:`export_model`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.onnx`` file (run with ``onnxruntime`` on the CPU) or a SavedModel folder.

    Returns
    -------
    ExportedModel

    Raises
    ------
    InputError
        When the path is neither, or carries no prostseg contract.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return _load_onnx(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_saved_model(path)
    raise InputError(path, "not an exported model: expected a .onnx file or a SavedModel folder "
                     "(holding saved_model.pb)")


def load_model(path: str | os.PathLike):
    """Load a model saved by :mod:`prostseg.training.loop` (or any ``.keras`` file).

    The file is read with ``safe_mode=True`` (no arbitrary code from the file runs)
    and without its training configuration (``compile=False``). A ``.onnx`` file or a
    SavedModel folder written by :func:`export_model` is read with
    :func:`load_exported` instead.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` file, or an exported ``.onnx`` file or SavedModel folder.

    Returns
    -------
    keras.Model or ExportedModel

    Raises
    ------
    InputError
        ``"<path>: no such file"`` when it is missing, and
        ``"<path>: corrupt or not a Keras model (...)"`` when it cannot be read as one
        (Keras itself says "File not found" for any file that is not a zip archive).
    """
    import keras  # TensorFlow only when a .keras file is read

    path = Path(path)
    if path.suffix.lower() == ".onnx" or path.is_dir():
        return load_exported(path)
    if not path.is_file():
        problem = "is a folder, not a .keras model file" if path.exists() else "no such model file"
        raise InputError(path, problem)
    if not zipfile.is_zipfile(path):
        raise InputError(path, "corrupt or not a Keras model (a .keras file is a zip archive; "
                         "this is not)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except (ValueError, OSError, TypeError, KeyError, AttributeError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split())[:200]
        raise InputError(path, f"corrupt or not a Keras model ({type(err).__name__}: {reason})") \
            from None
