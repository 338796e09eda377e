"""One recipe per kind of model: what it reads, how its slices are made, how it is built.

Everything that differs between the U-Net and Pix2Pix lives in a :class:`Recipe`:

* ``input`` -- the case file (a role of :mod:`prostseg.data.dataset`) the network reads,
  and ``channels``, the case files its channels come from;
* ``image_size`` -- the default side of the square slices;
* ``prepare``, ``prepare_target`` and ``restore`` -- the NumPy functions that turn a
  volume into input slices, a label map into target slices, and network outputs back
  into a volume on the input's grid: the methods of the model's
  :class:`~prostseg.preparation.slices.Slicing`, which also gives ``input``,
  ``channels`` and ``image_size``;
* ``normalisation`` and ``geometry`` -- the same steps in words, for the preprocessing
  contract of exported models (:mod:`prostseg.use.export`);
* ``build_model`` -- the network of a training configuration, and ``dataset`` -- the
  stream of prepared (input, target) batches of a list of cases;
* ``decode`` -- probabilities to labels;
* ``config`` -- the training configuration class (:mod:`prostseg.networks.runs`), and
  ``model_file`` and ``best_file``, the model files a run folder holds.

Where the kind of a model is recorded
-------------------------------------
A training run writes its kind into its ``config.json`` (``"kind": "unet"``), and the
recipe's ``build_model`` gives the network the recipe's ``model_name``, which Keras saves
inside the ``.keras`` file. :func:`recipe_for_model` reads it from there (an exported
model carries its kind in its contract), and :mod:`prostseg.use.inference` checks it
against the ``config.json`` of the run folder that holds a model file. The kind is
never guessed from the shape of the network.

Adding a kind of model (say a 2.5D U-Net that reads three neighbouring T2W slices) is
writing one :class:`Recipe` and passing it to :func:`register`; inference, export and
evaluation then handle it like the two built in. Training also needs a configuration
class and a training loop (:mod:`prostseg.training.loop`).

Examples
--------
>>> recipe("unet").input, recipe("pix2pix").input, recipe("pix2pix").channels
('t2w', 'stack', ('t2w', 'dwi', 'adc'))
>>> [r.kind for r in recipes()]
['unet', 'pix2pix']
>>> recipe("2.5d")
Traceback (most recent call last):
...
ValueError: unknown model kind '2.5d'; known kinds: unet, pix2pix
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from prostseg.data.dataset import NUM_ZONE_CLASSES
from prostseg.networks.runs import MODEL_FILES, Pix2PixTrainingConfig, UNetTrainingConfig
from prostseg.preparation.slices import CLIP_PERCENTILES, PIX2PIX_SLICING, UNET_SLICING, Slicing

__all__ = ["Recipe", "UNET", "PIX2PIX", "labels_from_probabilities", "recipe", "recipe_for_model",
           "recipes", "register", "unregister", "input_size"]


@dataclass(frozen=True)
class Recipe:
    """Everything prostseg needs to know about one kind of model.

    Attributes
    ----------
    kind : str
        The name recorded in run configurations and exported contracts (``"unet"``).
    title : str
        How messages name the model (``"U-Net"``).
    takes : str
        What the network takes, in words, for error messages.
    input : str
        The case file (a :mod:`prostseg.data.dataset` role) the network reads: ``"t2w"``,
        or ``"stack"`` for the registered stack.
    channels : tuple of str
        The case files the channels of ``input`` come from, in order.
    model_name : str
        The name ``build_model`` gives the network; saved inside ``.keras`` files, it
        tells :func:`recipe_for_model` the kind of a loaded model.
    image_size : int
        Default side of the square slices.
    prepare, prepare_target, restore : callable
        ``prepare(volume, image_size, *, target_spacing, spacing)`` -> ``(Z, H, W, C)``
        input slices; ``prepare_target`` the same for a label map; ``restore(slices,
        shape, *, target_spacing, spacing)`` -> ``(X, Y, Z, C)`` on the volume's grid.
    normalisation : Mapping
        The intensity normalisation of ``prepare``, as the export contract states it.
    geometry : callable
        ``geometry(target_spacing)`` -> how slices reach ``image_size``, in words.
    build_model : callable
        ``build_model(config)`` -> the Keras network of a training configuration
        (TensorFlow is imported only then).
    dataset : callable
        ``dataset(cases, *, image_size, batch_size, target_spacing, label, cache,
        slice_cache)`` ->
        ``tf.data.Dataset`` of the (``prepare``, ``prepare_target``) slices of the
        cases in order, batched, without augmentation: what validation scores.
    decode : callable
        ``decode(probabilities, threshold)`` -> labels ``(...)`` from ``(..., C)``.
    task : callable
        ``task(config)`` -> what a run of this configuration trains, in words.
    config : type or None
        The training configuration class (:mod:`prostseg.networks.runs`); None for a kind that
        prostseg applies but does not train.
    model_file, best_file : str
        The final and the best model file of a training run folder.
    """

    kind: str
    title: str
    takes: str
    input: str
    channels: tuple[str, ...]
    model_name: str
    image_size: int
    prepare: Callable
    prepare_target: Callable
    restore: Callable
    normalisation: Mapping = field(hash=False)
    geometry: Callable[[float | None], str]
    build_model: Callable
    dataset: Callable
    decode: Callable
    task: Callable
    config: type | None = None
    model_file: str = "model.keras"
    best_file: str = "best.keras"

    def __post_init__(self):
        object.__setattr__(self, "normalisation", MappingProxyType(dict(self.normalisation)))


def labels_from_probabilities(probabilities: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Labels of probabilities: one sigmoid channel thresholded, several argmax-ed.

    Parameters
    ----------
    probabilities : numpy.ndarray, shape (..., C)
        One sigmoid channel (``C = 1``) or ``C`` softmax channels.
    threshold : float, optional
        Foreground when the probability is above it (one channel).

    Returns
    -------
    numpy.ndarray of uint8, shape (...)
        0/1 for one channel, class ids (argmax) otherwise.

    Examples
    --------
    >>> labels_from_probabilities(np.array([[0.2], [0.7]])).tolist()
    [0, 1]
    >>> labels_from_probabilities(np.array([[0.2, 0.5, 0.3]])).tolist()
    [1]
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] > threshold).astype(np.uint8)
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def _argmax_labels(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class ids of softmax probabilities (``threshold`` does not apply)."""
    return np.argmax(np.asarray(probabilities), axis=-1).astype(np.uint8)


def _threshold_or_argmax(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return labels_from_probabilities(probabilities, threshold=threshold)


def _slicing_fields(slicing: Slicing) -> dict:
    """The fields of a recipe that the model's slicing gives: its input and slices."""
    return dict(input=slicing.input, channels=slicing.channels, image_size=slicing.image_size,
                prepare=slicing.prepare, prepare_target=slicing.prepare_target, restore=slicing.restore)


# --- U-Net ---------------------------------------------------------------------------


def _build_unet(config):
    from prostseg.networks.models import build_unet  # Keras/TensorFlow only when called

    return build_unet((config.image_size, config.image_size, 1), base_filters=config.base_filters,
                      depth=config.depth, name=UNET.model_name)


def _unet_stream(cases, *, image_size, batch_size, target_spacing=None, label="lesion",
                 cache=False, slice_cache=None):
    from prostseg.preparation.pipeline import unet_dataset  # Keras/TensorFlow only when called

    return unet_dataset(cases, image_size=image_size, batch_size=batch_size, label=label,
                        target_spacing=target_spacing, shuffle=False, cache=cache,
                        slice_cache=slice_cache)


def _unet_geometry(target_spacing: float | None) -> str:
    steps = "centre pad or crop each slice to input_size (zero padding)"
    return steps if target_spacing is None else \
        f"resample each slice bilinearly to {target_spacing} mm pixels, then {steps}"


#: The U-Net on T2W slices (lesion or whole-gland masks).
UNET = Recipe(
    kind="unet",
    title="U-Net",
    takes="a U-Net taking a single-channel (X, Y, Z) volume such as a T2W image",
    model_name="unet",
    **_slicing_fields(UNET_SLICING),
    normalisation={"method": "percentile_clip_minmax", "scope": "volume",
                   "percentiles": list(CLIP_PERCENTILES), "range": [0.0, 1.0]},
    geometry=_unet_geometry,
    build_model=_build_unet,
    dataset=_unet_stream,
    decode=_threshold_or_argmax,
    task=lambda config: {"lesion": "lesion segmentation (U-Net on T2W)",
                         "zones": "whole-gland segmentation (U-Net on T2W)",
                         "gland": "whole-gland segmentation (U-Net on T2W)"}[config.label],
    config=UNetTrainingConfig,
    model_file=MODEL_FILES["unet"],
)


# --- Pix2Pix -------------------------------------------------------------------------


def _build_pix2pix(config):
    from prostseg.networks.models import build_pix2pix_generator  # Keras/TensorFlow only when called

    return build_pix2pix_generator(
        (config.image_size, config.image_size, len(PIX2PIX.channels)), num_classes=NUM_ZONE_CLASSES,
        base_filters=config.base_filters, levels=config.generator_levels,
        upsampling=config.generator_upsampling, name=PIX2PIX.model_name,
    )


def _pix2pix_stream(cases, *, image_size, batch_size, target_spacing=None, label="zones",
                    cache=False, slice_cache=None):
    from prostseg.preparation.pipeline import pix2pix_dataset  # Keras/TensorFlow only when called

    if label != "zones":
        raise ValueError(f"Pix2Pix predicts zones, not {label!r}")
    return pix2pix_dataset(cases, image_size=image_size, batch_size=batch_size, augment=False,
                           shuffle=False, target_spacing=target_spacing, cache=cache,
                           slice_cache=slice_cache)


def _pix2pix_geometry(target_spacing: float | None) -> str:
    if target_spacing is None:
        return "resize each slice bilinearly to input_size"
    return (f"resample each slice bilinearly to {target_spacing} mm pixels, then centre pad or "
            "crop each resampled slice to input_size")


#: The Pix2Pix generator on registered T2W/DWI/ADC stacks (zone maps).
PIX2PIX = Recipe(
    kind="pix2pix",
    title="Pix2Pix",
    takes="a Pix2Pix generator taking a registered (X, Y, Z, 3) T2W/DWI/ADC stack",
    model_name="pix2pix_generator",
    **_slicing_fields(PIX2PIX_SLICING),
    normalisation={"method": "zscore", "scope": "volume, per channel"},
    geometry=_pix2pix_geometry,
    build_model=_build_pix2pix,
    dataset=_pix2pix_stream,
    decode=_argmax_labels,
    task=lambda config: "zone segmentation (Pix2Pix on T2W/DWI/ADC)",
    config=Pix2PixTrainingConfig,
    model_file=MODEL_FILES["pix2pix"],
    best_file="best_generator.keras",
)


def input_size(model, image_size: int | None = None) -> int:
    """The side of the square slices a model takes: its own, or ``image_size`` when it
    takes any size; ValueError when the two disagree or the slices are not square."""
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        if image_size is None:
            raise ValueError(f"model {model.name!r} accepts any slice size; give image_size")
        return image_size
    if height != width:
        raise ValueError(f"model {model.name!r} takes {height}x{width} slices; "
                         "expected square slices")
    if image_size is not None and image_size != height:
        raise ValueError(f"model {model.name!r} takes {height}x{width} slices, "
                         f"not image_size={image_size}")
    return height


# --- the registry --------------------------------------------------------------------

_RECIPES: dict[str, Recipe] = {UNET.kind: UNET, PIX2PIX.kind: PIX2PIX}


def register(new: Recipe) -> Recipe:
    """Make a recipe known to prostseg (its ``kind`` and ``model_name`` must be new).

    Returns
    -------
    Recipe
        ``new``, so that a module can write ``MY_MODEL = register(Recipe(...))``.
    """
    taken = [r.kind for r in _RECIPES.values()
             if r.kind == new.kind or r.model_name == new.model_name]
    if taken:
        raise ValueError(f"a recipe for {taken[0]!r} uses that kind or model name already")
    _RECIPES[new.kind] = new
    return new


def unregister(kind: str) -> None:
    """Forget a recipe added with :func:`register` (the built-in ones stay)."""
    if kind in (UNET.kind, PIX2PIX.kind):
        raise ValueError(f"{kind!r} is built in")
    _RECIPES.pop(kind, None)


def recipes() -> list[Recipe]:
    """The known recipes, built-in ones first."""
    return list(_RECIPES.values())


def recipe(kind: str) -> Recipe:
    """The recipe of a kind (``"unet"``, ``"pix2pix"`` or a registered one)."""
    if kind not in _RECIPES:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(_RECIPES)}")
    return _RECIPES[kind]


def recipe_for_model(model, kind: str | None = None) -> Recipe:
    """The recipe of a model, from what the model records (see the module documentation).

    Parameters
    ----------
    model : keras.Model or prostseg.use.export.ExportedModel
        A network built by a recipe's ``build_model`` (its ``name`` is the recipe's
        ``model_name``, also after saving and loading), or an exported model (its
        contract names the kind).
    kind : str, optional
        The kind, for a network built some other way; it must agree with what an
        exported model records.

    Returns
    -------
    Recipe

    Raises
    ------
    ValueError
        When the model records no known kind.

    Examples
    --------
    >>> from prostseg.networks.models import build_unet
    >>> recipe_for_model(build_unet((32, 32, 1), base_filters=2, depth=2)).kind
    'unet'
    >>> recipe_for_model(build_unet((32, 32, 1), base_filters=2, depth=2, name="mine"))
    Traceback (most recent call last):
    ...
    ValueError: model 'mine' is no prostseg model kind: its name is none of unet, ...
    """
    contract = getattr(model, "contract", None)
    if isinstance(contract, Mapping) and "model_kind" in contract:
        if kind is not None and kind != contract["model_kind"]:
            raise ValueError(f"the model is a {contract['model_kind']} model, not {kind}")
        return recipe(contract["model_kind"])
    if kind is not None:
        return recipe(kind)
    by_name = {r.model_name: r for r in _RECIPES.values()}
    name = getattr(model, "name", None)
    if name not in by_name:
        raise ValueError(
            f"model {name!r} is no prostseg model kind: its name is none of {', '.join(by_name)} "
            "(the names prostseg.networks.recipes builders give); pass kind=... to say what it is"
        )
    return by_name[name]
