"""Describe built networks: blocks, levels, sizes, receptive fields and a U-Net diagram.

Everything here is read off a built :class:`keras.Model` (its layers, their output
shapes and weights), never typed in by hand, so the numbers and figures of the book
follow the code of :mod:`prostseg.networks.models` when it changes.

* :func:`block_table` -- a short ``model.summary()``: layers grouped into named blocks.
* :func:`unet_levels`, :func:`plot_unet` -- feature map size and channels per level of a
  :func:`~prostseg.networks.models.build_unet` model, and a drawing of them.
* :func:`activation_bytes` -- memory taken by the layer outputs of one example.
* :func:`extrapolate_over_filters` -- the parameter count (or any other size) of a wide
  network computed from narrow copies of it, without building the wide one.
* :func:`chain_receptive_field` -- receptive field and stride of a chain of
  convolutions (the PatchGAN), computed layer by layer.
* :func:`receptive_field_maps`, :func:`receptive_field_widths` -- the same measured:
  which input pixels an output pixel depends on, in a linear copy of the model.

Examples
--------
>>> from prostseg.networks.models import build_pix2pix_discriminator
>>> chain_receptive_field(build_pix2pix_discriminator((64, 64, 3), base_filters=2))
(70, 8)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from prostseg.figure_png import text_size

__all__ = [
    "LAYER_ABBREVIATIONS",
    "Block",
    "UNetLevel",
    "activation_bytes",
    "block_table",
    "chain_receptive_field",
    "extrapolate_over_filters",
    "format_blocks",
    "plot_unet",
    "receptive_field_maps",
    "receptive_field_widths",
    "unet_levels",
]


@dataclass(frozen=True)
class Block:
    """Consecutive layers that share a name prefix (``enc0_conv1``, ``enc0_bn1``: ``enc0``).

    Attributes
    ----------
    name : str
        The shared prefix.
    layer_types : tuple of str
        Class names of the layers, in order.
    output_shape : tuple
        Output shape of the last layer, without the batch axis.
    parameters : int
        Weights of all its layers (trainable or not).
    """

    name: str
    layer_types: tuple[str, ...]
    output_shape: tuple
    parameters: int


def _output_shape(layer) -> tuple:
    """Output shape of ``layer`` without the batch axis."""
    return tuple(layer.output.shape[1:])


def block_table(model: keras.Model) -> list[Block]:
    """Group the layers of ``model`` into blocks by the prefix of their names.

    The prefix is the part of a layer name before the first underscore; the model
    builders of :mod:`prostseg.networks.models` name layers ``<block>_<role>`` (``enc0_conv1``,
    ``down3_lrelu``, ``up2_concat``), so a block is one level of the network. Input
    layers are left out.

    Parameters
    ----------
    model : keras.Model
        A built functional model.

    Returns
    -------
    list of Block
        In layer order. Their ``parameters`` add up to ``model.count_params()``.

    Examples
    --------
    >>> from prostseg.networks.models import build_unet
    >>> blocks = block_table(build_unet((32, 32, 1), base_filters=2, depth=1))
    >>> [(block.name, block.output_shape) for block in blocks]
    [('enc0', (16, 16, 2)), ('bridge', (16, 16, 4)), ('dec0', (32, 32, 2)), ('probabilities', (32, 32, 1))]
    """
    blocks: list[Block] = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        name = layer.name.split("_")[0]
        parameters = int(layer.count_params())
        if blocks and blocks[-1].name == name:
            last = blocks[-1]
            blocks[-1] = Block(
                name, (*last.layer_types, type(layer).__name__), _output_shape(layer),
                last.parameters + parameters,
            )
        else:
            blocks.append(Block(name, (type(layer).__name__,), _output_shape(layer), parameters))
    return blocks


def _compact(names: Sequence[str]) -> str:
    """``a, b, a, b, c`` as ``2 x (a, b), c``: repeated runs of layer types folded."""
    parts, start = [], 0
    while start < len(names):
        for period in range((len(names) - start) // 2, 0, -1):
            unit = list(names[start:start + period])
            repeats = 1
            while list(names[start + repeats * period:start + (repeats + 1) * period]) == unit:
                repeats += 1
            if repeats > 1:
                text = ", ".join(unit)
                parts.append(f"{repeats} x ({text})" if period > 1 else f"{repeats} x {text}")
                start += repeats * period
                break
        else:
            parts.append(names[start])
            start += 1
    return ", ".join(parts)


#: Short names of Keras layer types in :func:`format_blocks` tables.
LAYER_ABBREVIATIONS = {
    "BatchNormalization": "BN",
    "Concatenate": "Concat",
    "Conv2D": "Conv",
    "Conv2DTranspose": "ConvT",
    "MaxPooling2D": "MaxPool",
    "ZeroPadding2D": "ZeroPad",
}


def format_blocks(blocks: Sequence[Block]) -> str:
    """A plain-text table of :func:`block_table` rows with a total line.

    Short enough for a terminal or a notebook cell (the book's networks take at most 75
    characters a line): layer types are abbreviated (:data:`LAYER_ABBREVIATIONS`:
    ``BN`` for ``BatchNormalization``, ``ConvT`` for ``Conv2DTranspose``, ...) and
    listed in order, repeated runs folded (``2 x (Conv, BN, ReLU)``); output shapes are
    written ``HxWxC``.

    Examples
    --------
    >>> conv_block = ("Conv2D", "BatchNormalization", "ReLU") * 2 + ("MaxPooling2D",)
    >>> print(format_blocks([Block("enc0", conv_block, (8, 8, 4), 216)]))
    block  layers                         output  parameters
    enc0   2 x (Conv, BN, ReLU), MaxPool  8x8x4          216
    total                                                216
    """
    rows = [("block", "layers", "output", "parameters")]
    for block in blocks:
        shape = "x".join("?" if n is None else str(n) for n in block.output_shape)
        types = [LAYER_ABBREVIATIONS.get(name, name) for name in block.layer_types]
        rows.append((block.name, _compact(types), shape, f"{block.parameters:,}"))
    rows.append(("total", "", "", f"{sum(block.parameters for block in blocks):,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}"
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class UNetLevel:
    """One resolution level of a U-Net.

    Attributes
    ----------
    level : int
        0 at full resolution; the bridge has ``level == depth``.
    size : tuple of int or None
        Height and width of the feature maps at this level.
    encoder_channels : int
        Channels of the encoder block output (the skip connection); the bridge's
        channels for the bridge.
    decoder_channels : int or None
        Channels of the decoder block output (None for the bridge).
    parameters : int
        Weights of the level's encoder and decoder blocks (pooling, upsampling and
        concatenation included; the bridge's own for the bridge).
    """

    level: int
    size: tuple[int | None, int | None]
    encoder_channels: int
    decoder_channels: int | None
    parameters: int


_UNET_BLOCK = re.compile(r"(enc|dec)(\d+)|bridge")


def unet_levels(model: keras.Model) -> list[UNetLevel]:
    """Feature map size, channels and parameters per level of a U-Net.

    Parameters
    ----------
    model : keras.Model
        A model made by :func:`prostseg.networks.models.build_unet` (layers named ``enc<l>_*``,
        ``bridge_*``, ``dec<l>_*``).

    Returns
    -------
    list of UNetLevel
        Levels ``0 .. depth``; the last one is the bridge.

    Raises
    ------
    ValueError
        If the model has no ``bridge`` layers or its encoder and decoder levels differ.

    Examples
    --------
    >>> from prostseg.networks.models import build_unet
    >>> for level in unet_levels(build_unet((64, 64, 1), base_filters=4, depth=2)):
    ...     print(level.level, level.size, level.encoder_channels, level.decoder_channels)
    0 (64, 64) 4 4
    1 (32, 32) 8 8
    2 (16, 16) 16 None
    """
    encoder: dict[int, keras.Layer] = {}
    decoder: dict[int, keras.Layer] = {}
    parameters: dict[int, int] = {}
    bridge = None
    for layer in model.layers:
        match = _UNET_BLOCK.match(layer.name.split("_")[0])
        if match is None or isinstance(layer, (layers.Dropout, layers.MaxPooling2D)):
            continue
        if match.group(1) is None:
            bridge, level = layer, -1
        else:
            level = int(match.group(2))
            (encoder if match.group(1) == "enc" else decoder)[level] = layer
        parameters[level] = parameters.get(level, 0) + int(layer.count_params())
    if bridge is None or not encoder or sorted(encoder) != sorted(decoder):
        raise ValueError(
            f"model {model.name!r} is not a U-Net made by build_unet: it needs layers named "
            "enc<l>_*, bridge_* and dec<l>_* with the same levels l"
        )
    depth = len(encoder)
    levels = [
        UNetLevel(
            level, tuple(encoder[level].output.shape[1:3]), int(encoder[level].output.shape[-1]),
            int(decoder[level].output.shape[-1]), parameters[level],
        )
        for level in range(depth)
    ]
    levels.append(
        UNetLevel(depth, tuple(bridge.output.shape[1:3]), int(bridge.output.shape[-1]), None, parameters[-1])
    )
    return levels


def activation_bytes(model: keras.Model, *, batch_size: int = 1, bytes_per_value: int = 4) -> int:
    """Memory taken by the outputs of all layers (the input included) for one batch.

    Training keeps these activations for backpropagation, so this is a lower bound of
    the memory a training step needs, on top of the weights and optimiser state.

    Parameters
    ----------
    model : keras.Model
        A built model with fixed spatial input size.
    batch_size : int
        Examples per batch.
    bytes_per_value : int
        4 for float32, 2 for float16/bfloat16 mixed precision.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ValueError
        If an output shape is not fully known (e.g. an input size ``None``).

    Examples
    --------
    >>> inputs = keras.Input((8, 8, 1))
    >>> model = keras.Model(inputs, layers.Conv2D(2, 3, padding="same")(inputs))
    >>> activation_bytes(model)  # (8*8*1 + 8*8*2) float32 values
    768
    """
    values = 0
    for layer in model.layers:
        shape = _output_shape(layer)
        if None in shape:
            raise ValueError(
                f"layer {layer.name!r} of {model.name!r} has output shape {shape}: build the "
                "model with a fixed input size to count its activations"
            )
        values += int(np.prod(shape))
    return values * batch_size * bytes_per_value


def extrapolate_over_filters(
    build: Callable[..., keras.Model],
    base_filters: int,
    *,
    measure: Callable[[keras.Model], int] = lambda model: model.count_params(),
    degree: int = 2,
) -> int:
    """A size of ``build(base_filters=base_filters)`` computed from narrow copies.

    When every layer's filters are a multiple of ``base_filters``, the parameter count
    is a polynomial of degree 2 in ``base_filters`` (a convolution has
    ``k * k * c_in * c_out`` weights) and the activation size one of degree 1. This
    builds the network with ``base_filters = 1 .. degree + 1``, measures each, and
    evaluates the interpolating polynomial at ``base_filters`` (exact rational
    arithmetic), so a network too large to build is measured exactly.

    Parameters
    ----------
    build : callable
        ``build(base_filters=b)`` returns the model (e.g. a ``functools.partial`` of
        :func:`prostseg.networks.models.build_unet`).
    base_filters : int
        The width to extrapolate to.
    measure : callable
        ``measure(model)`` returns an integer; default: ``model.count_params()``.
        Use :func:`activation_bytes` with ``degree=1``.
    degree : int
        Degree of ``measure`` as a polynomial in ``base_filters``.

    Returns
    -------
    int
        Exact when ``measure`` is such a polynomial; nothing checks that it is.

    Examples
    --------
    >>> from functools import partial
    >>> from prostseg.networks.models import build_unet
    >>> build = partial(build_unet, (None, None, 1), depth=2)
    >>> extrapolate_over_filters(build, 8) == build(base_filters=8).count_params()
    True
    """
    if degree < 0 or base_filters < 1:
        raise ValueError(f"need degree >= 0 and base_filters >= 1, got {degree} and {base_filters}")
    points = list(range(1, degree + 2))
    values = []
    for b in points:
        values.append(int(measure(build(base_filters=b))))
        keras.backend.clear_session()
    total = Fraction(0)
    for i, (b_i, value) in enumerate(zip(points, values)):
        weight = Fraction(1)
        for j, b_j in enumerate(points):
            if j != i:
                weight *= Fraction(base_filters - b_j, b_i - b_j)
        total += weight * value
    return int(total)


# --- receptive fields ---------------------------------------------------------------


def chain_receptive_field(model: keras.Model) -> tuple[int, int]:
    """Receptive field and stride of one output pixel of a chain of convolutions.

    Walks the layers from the output back to the input: a layer with kernel (or pool)
    size ``k`` and stride ``s`` turns a field of ``r`` pixels into ``(r - 1) * s + k``
    pixels; the stride multiplies. Padding, normalisation, activations and the
    concatenation of the model inputs do not change the field.

    Parameters
    ----------
    model : keras.Model
        A model whose layers form one chain (e.g. the PatchGAN of
        :func:`prostseg.networks.models.build_pix2pix_discriminator`), square kernels.

    Returns
    -------
    field, stride : int
        The field width in input pixels, and the distance in input pixels between the
        fields of neighbouring output pixels.

    Raises
    ------
    ValueError
        For layers that are not a plain chain (transposed convolutions, dilations,
        a concatenation or addition of inner layers).

    Examples
    --------
    >>> inputs = keras.Input((32, 32, 1))
    >>> x = layers.Conv2D(1, 3, strides=2)(inputs)
    >>> chain_receptive_field(keras.Model(inputs, layers.Conv2D(1, 3)(x)))
    (7, 2)
    """
    inputs = {id(tensor) for tensor in model.inputs}
    field, stride = 1, 1
    for layer in reversed(model.layers):
        if isinstance(layer, layers.InputLayer):
            continue
        config = layer.get_config()
        if isinstance(layer, (layers.Conv2DTranspose, layers.Add, layers.Multiply)) or (
            isinstance(layer, layers.Concatenate) and not all(id(t) in inputs for t in layer.input)
        ) or tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) of {model.name!r} is not part "
                "of a plain chain of convolutions"
            )
        size = config.get("kernel_size", config.get("pool_size"))
        if size is None:
            continue
        step = config["strides"] if config.get("strides") is not None else size
        field = (field - 1) * step[0] + size[0]
        stride *= step[0]
    return field, stride


def _linear_layer(layer):
    """A linear stand-in for ``layer`` (clone function of :func:`keras.models.clone_model`)."""
    if isinstance(layer, (layers.ReLU, layers.LeakyReLU, layers.Activation)):
        return layers.Identity(name=layer.name)
    config = layer.get_config()
    if isinstance(layer, layers.MaxPooling2D):
        return layers.AveragePooling2D(
            config["pool_size"], config["strides"], config["padding"], name=layer.name
        )
    if "activation" in config:
        config["activation"] = "linear"
    return type(layer).from_config(config)


def _linear_copy(model: keras.Model) -> keras.Model:
    """``model`` made linear with positive weights.

    Activations become the identity, max pooling average pooling; every kernel is
    filled with one positive value, biases and offsets are zero, and batch
    normalisation (which runs in inference mode) multiplies by ``1 / sqrt(1 + eps)``.
    Dropout is the identity in inference mode.
    """
    copy = keras.models.clone_model(model, clone_function=_linear_layer)
    for layer in copy.layers:
        for weight in layer.weights:
            shape = tuple(weight.shape)
            role = weight.path.rsplit("/", 1)[-1]
            if role == "kernel":
                value = 1.0 / np.prod(shape[:-1])
            elif role in ("gamma", "moving_variance"):
                value = 1.0
            else:
                value = 0.0
            weight.assign(np.full(shape, value, dtype="float32"))
    return copy


def _input_gradients(model: keras.Model, positions: Sequence[tuple[int, int]]) -> np.ndarray:
    """``(len(positions), H, W)``: summed |d output[position] / d input| of a linear copy."""
    copy = _linear_copy(model)
    inputs = [tf.zeros((len(positions), *tensor.shape[1:])) for tensor in copy.inputs]
    rows, cols = (np.asarray(axis) for axis in zip(*positions))
    selector = np.zeros((len(positions), *copy.output.shape[1:3], 1), dtype="float32")
    selector[np.arange(len(positions)), rows, cols] = 1.0
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = copy(inputs if len(inputs) > 1 else inputs[0])
        target = tf.reduce_sum(outputs * selector)
    gradients = tape.gradient(target, inputs)
    return sum(np.abs(g.numpy()).sum(axis=-1) for g in gradients)


def receptive_field_maps(
    model: keras.Model, positions: Sequence[tuple[int, int]] | None = None
) -> np.ndarray:
    """How much each input pixel contributes to output pixels, in a linear copy.

    The copy has the same layers and connections, with activations replaced by the
    identity, max pooling by average pooling, batch normalisation reduced to a constant
    factor, and every kernel filled with one positive value. It is linear and no two
    paths cancel, so the gradient of an output pixel with respect to the input (its
    impulse response) is non-zero exactly on the pixels that the original network's
    output pixel can see: its receptive field.

    Parameters
    ----------
    model : keras.Model
        A built model with a fixed input size (several inputs of the same size are
        summed, e.g. the PatchGAN's image and label map).
    positions : sequence of (row, col), optional
        Output pixels; default: the centre of the output.

    Returns
    -------
    numpy.ndarray, shape (len(positions), H, W)
        Non-negative weights of the input pixels, each map scaled to a maximum of 1.

    Examples
    --------
    >>> inputs = keras.Input((9, 9, 1))
    >>> model = keras.Model(inputs, layers.Conv2D(1, 3, padding="same", activation="relu")(inputs))
    >>> weights = receptive_field_maps(model)[0]
    >>> np.argwhere(weights > 0).min(axis=0).tolist(), np.argwhere(weights > 0).max(axis=0).tolist()
    ([3, 3], [5, 5])
    """
    if positions is None:
        positions = [tuple(n // 2 for n in model.output.shape[1:3])]
    maps = _input_gradients(model, positions)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def receptive_field_widths(maps: np.ndarray) -> np.ndarray:
    """Width in pixels of the non-zero part of each map of :func:`receptive_field_maps`.

    The larger of the row and the column extent. With stride-2 layers the field
    depends on the output position modulo the total stride, so measure one period of
    positions (e.g. ``(c + i, c + i)`` for ``i < 2**depth``) away from the image
    border, where zero padding clips the field, and take the largest.

    Returns
    -------
    numpy.ndarray of int, shape (len(maps),)

    Examples
    --------
    >>> from prostseg.networks.models import build_unet, unet_receptive_field
    >>> model = build_unet((64, 64, 1), base_filters=1, depth=1)
    >>> widths = receptive_field_widths(receptive_field_maps(model, [(32, 32), (33, 33)]))
    >>> int(widths.max()) == unet_receptive_field(1)
    True
    """
    widths = []
    for weights in np.asarray(maps):
        support = np.argwhere(weights > 0)
        widths.append(int((support.max(axis=0) - support.min(axis=0) + 1).max()))
    return np.array(widths)


# --- drawing ------------------------------------------------------------------------


def plot_unet(model: keras.Model, ax=None):
    """Draw the levels of a U-Net: blocks, poolings, upsamplings and skip connections.

    Each box is a convolution block (two 3x3 convolution, batch normalisation, ReLU
    units), labelled with its feature map size and channels as read from the model by
    :func:`unet_levels`; its width grows with the logarithm of the channels. All text is
    sized by :func:`prostseg.figure_png.text_size`, so it stays readable on the book's page.

    Parameters
    ----------
    model : keras.Model
        A model made by :func:`prostseg.networks.models.build_unet`.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from prostseg.networks.models import build_unet
    >>> figure = plot_unet(build_unet((64, 64, 1), base_filters=4, depth=2))
    >>> len(figure.axes)
    1
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, Rectangle

    levels = unet_levels(model)
    depth = len(levels) - 1
    step, height = 1.8, 0.62  # data units: between levels, and of a box
    x_range = (-1.1, 2 * depth * step + 1.1)
    y_range = (-depth - 0.7, 1.3)
    if ax is None:
        inches = 0.72  # per data unit
        width, tall = (x_range[1] - x_range[0]) * inches, (y_range[1] - y_range[0]) * inches
        figure = plt.figure(figsize=(width, tall + 0.9))  # + title and legend
        ax = figure.add_axes((0.0, 0.55 / (tall + 0.9), 1.0, tall / (tall + 0.9)))
    size = text_size(ax.figure)
    colours = {"conv": "#4c72b0", "pool": "#c44e52", "up": "#55a868", "skip": "0.45", "out": "#8172b2"}
    max_log = np.log2(levels[-1].encoder_channels)

    def box(x, y, channels, text):
        width = 1.25 + 0.45 * np.log2(channels) / max_log
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height,
                               facecolor=colours["conv"], alpha=0.85, edgecolor="black"))
        ax.text(x, y, text, ha="center", va="center", color="white", fontsize=size, fontweight="bold")
        return width

    def arrow(start, end, colour, style="-|>", linestyle="-"):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12,
                                     color=colour, linewidth=1.6, linestyle=linestyle))

    def size_text(size):
        return " x ".join("?" if n is None else str(n) for n in size)

    for level in levels:
        y = -level.level
        label = f"{size_text(level.size)}\n{level.encoder_channels} ch"
        if level.level == depth:
            box(depth * step, y, level.encoder_channels, label)
            ax.text(depth * step, y - height / 2 - 0.05, "bridge", ha="center", va="top", fontsize=size)
            continue
        left, right = level.level * step, (2 * depth - level.level) * step
        left_width = box(left, y, level.encoder_channels, label)
        right_width = box(right, y, level.decoder_channels,
                          f"{size_text(level.size)}\n{level.decoder_channels} ch")
        arrow((left + left_width / 2 + 0.05, y), (right - right_width / 2 - 0.05, y), colours["skip"],
              linestyle="--")
        ax.text((left + right) / 2, y + 0.06, f"concat {level.encoder_channels} ch",
                ha="center", va="bottom", fontsize=size, color=colours["skip"])
        below_left = (level.level + 1) * step
        below_right = (2 * depth - level.level - 1) * step
        arrow((left, y - height / 2), (below_left - 0.15, y - 1 + height / 2), colours["pool"])
        arrow((below_right + 0.15, y - 1 + height / 2), (right, y - height / 2), colours["up"])

    top = levels[0]
    in_channels, out_channels = model.input.shape[-1], model.output.shape[-1]
    ax.text(x_range[0], height / 2 + 0.1, f"input {size_text(top.size)} x {in_channels}",
            ha="left", va="bottom", fontsize=size)
    activation = "sigmoid" if out_channels == 1 else "softmax"
    ax.text(x_range[1], height / 2 + 0.1,
            f"1x1 conv, {activation}\noutput {size_text(top.size)} x {out_channels}",
            ha="right", va="bottom", fontsize=size, color=colours["out"])
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=colours["conv"], alpha=0.85,
                  label="block: 2 x (3x3 conv, BatchNorm, ReLU)"),
        Line2D([], [], color=colours["pool"], marker="v", label="2x2 max pooling"),
        Line2D([], [], color=colours["up"], marker="^", label="2x2 transposed conv, stride 2"),
        Line2D([], [], color=colours["skip"], linestyle="--", label="skip connection"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
              fontsize=size, frameon=False)
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{model.name}: {model.count_params():,} parameters", fontsize=1.2 * size)
    return ax.figure
