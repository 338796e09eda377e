"""Segmentation networks: a 2D U-Net and the two halves of Pix2Pix.

Every model is a functional :class:`keras.Model` made of built-in Keras layers only, so
it saves to and loads from the ``.keras`` format with
``keras.models.load_model(path, safe_mode=True)`` and no ``custom_objects``.

* :func:`build_unet` -- binary (lesion, gland) or multi-class segmentation of T2W slices.
* :func:`unet_receptive_field` -- how many input pixels one U-Net output pixel sees.
* :func:`build_pix2pix_generator` -- U-Net-shaped generator mapping a (T2W, DWI, ADC)
  stack to per-pixel zone probabilities.
* :func:`build_pix2pix_discriminator` -- PatchGAN judging (image, label map) pairs.

Examples
--------
>>> model = build_unet((64, 64, 1), base_filters=4, depth=3)
>>> model.output_shape
(None, 64, 64, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from prostseg.networks.runs import PIX2PIX_UPSAMPLING

__all__ = [
    "PIX2PIX_UPSAMPLING",
    "build_pix2pix_discriminator",
    "build_pix2pix_generator",
    "build_unet",
    "unet_receptive_field",
]

# Pix2Pix paper (Isola et al. 2017), section 6.1.1: weights from N(0, 0.02), leaky slope 0.2.
_PIX2PIX_INIT_STDDEV = 0.02
_LEAKY_SLOPE = 0.2
#: Momentum of every batch-normalisation moving average. Prediction uses these averages;
#: Keras' 0.99 needs thousands of steps to catch up with the training statistics, so a
#: short run scores well in training and poorly in prediction. 0.9 catches up within
#: tens of steps and makes no difference in long runs.
BN_MOMENTUM = 0.9


def _check_spatial(input_shape: Sequence[int | None], factor: int, what: str) -> None:
    """Raise ValueError unless every known spatial size is divisible by ``factor``."""
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {tuple(input_shape)}"
        )
    exponent = factor.bit_length() - 1
    for size in input_shape[:2]:
        if size is not None and (size < factor or size % factor):
            raise ValueError(
                f"input size {size} is not divisible by 2**{exponent} = {factor} "
                f"({what}); pad or crop the slices, or change the depth"
            )


def _conv_block(x, filters: int, name: str, bn_momentum: float):
    """Two (3x3 convolution, batch normalisation, ReLU) units."""
    for unit in (1, 2):
        # No bias: the following BatchNormalization's offset (beta) plays that role.
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=f"{name}_conv{unit}"
        )(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{unit}")(x)
        x = layers.ReLU(name=f"{name}_relu{unit}")(x)
    return x


def build_unet(
    input_shape: Sequence[int | None] = (384, 384, 1),
    *,
    num_classes: int = 1,
    base_filters: int = 32,
    depth: int = 4,
    dropout: float = 0.0,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "unet",
) -> keras.Model:
    """Build a 2D U-Net (Ronneberger et al. 2015) with batch normalisation.

    Encoder level ``l`` (``l = 0 .. depth-1``) is a convolution block with
    ``base_filters * 2**l`` filters -- two (3x3 ``'same'`` convolution, batch
    normalisation, ReLU) units -- followed by 2x2 max pooling. The bridge is a block with
    ``base_filters * 2**depth`` filters. Each decoder level upsamples with a 2x2, stride 2
    transposed convolution, concatenates the encoder output of the same level (skip
    connection) and applies a block. A 1x1 convolution gives the output.

    Parameters
    ----------
    input_shape : sequence of int or None
        ``(height, width, channels)``. Height and width must be divisible by
        ``2**depth``; ``None`` leaves a size open (any divisible size at call time).
    num_classes : int
        1: one sigmoid channel (binary mask probability). k > 1: k softmax channels
        (class probabilities, one-hot targets).
    base_filters : int
        Filters of the first level; doubled at each level down.
    depth : int
        Number of poolings (the bridge works at ``1 / 2**depth`` of the input size).
    dropout : float
        Dropout rate applied after each pooling and after the bridge (0 disables it).
    bn_momentum : float
        Momentum of the batch-normalisation moving averages (see :data:`BN_MOMENTUM`).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Maps ``(batch, H, W, channels)`` float images to ``(batch, H, W, num_classes)``
        probabilities.

    Raises
    ------
    ValueError
        If a spatial size is not divisible by ``2**depth`` or an argument is out of range.

    Notes
    -----
    Why the defaults (32 base filters, depth 4, i.e. 32-64-128-256 filters and a
    512-filter bridge) rather than a wide network of 90 filters doubling to 2880 over 5
    levels:

    * Parameters: about 7.8 million (the wide one: several hundred million), since the
      count grows with the square of the filters. The wide network cannot fit a batch of
      384x384 slices on a common GPU and vastly over-parametrises a data set of tens of
      patients.
    * Memory: the layer outputs of one 384x384 slice take about 0.5 GB in float32
      (what training keeps for backpropagation), so a batch of 8 to 16 fits a 16 GB GPU.
    * Receptive field: ``unet_receptive_field(4)`` = 204 pixels, about 100 mm at the
      usual 0.5 mm in-plane spacing: every output pixel sees the whole gland (40-50 mm)
      and its surroundings. One level less (100 pixels) would not; one level more
      (412 pixels) exceeds the 384-pixel slice and only adds parameters.
    * ``base_filters=16`` quarters the parameters and compute (about 1.9 million) and is
      a sensible choice for CPU-only experiments.

    Examples
    --------
    >>> model = build_unet((64, 64, 1), base_filters=4, depth=3)
    >>> model.output_shape
    (None, 64, 64, 1)
    >>> build_unet((100, 100, 1), depth=4)
    Traceback (most recent call last):
    ...
    ValueError: input size 100 is not divisible by 2**4 = 16 (U-Net depth 4); pad or crop the slices, or change the depth
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if base_filters < 1:
        raise ValueError(f"base_filters must be at least 1, got {base_filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 < bn_momentum < 1.0:
        raise ValueError(f"bn_momentum must be in (0, 1), got {bn_momentum}")
    _check_spatial(input_shape, 2**depth, f"U-Net depth {depth}")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, f"enc{level}", bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"enc{level}_dropout")(x)
    x = _conv_block(x, base_filters * 2**depth, "bridge", bn_momentum)
    if dropout:
        x = layers.Dropout(dropout, name="bridge_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters, f"dec{level}", bn_momentum)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    outputs = layers.Conv2D(num_classes, 1, activation=activation, name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def unet_receptive_field(depth: int) -> int:
    """Receptive field, in input pixels along one axis, of a :func:`build_unet` output.

    Computed exactly by following, layer by layer from the output back to the input,
    the interval of positions that one output pixel depends on: a 3x3 convolution widens
    it by one pixel each side, 2x2 max pooling maps level position ``i`` to
    ``2i, 2i + 1`` one level up, and the 2x2 stride-2 transposed convolution maps
    position ``q`` to ``q // 2`` one level down. Every path (skip connections and the
    bridge) is followed and the union taken. Because of the stride-2 layers the width
    depends on the output pixel's position modulo ``2**depth``; the largest is returned.
    Zero padding at the image border is ignored (the field is clipped there).

    Parameters
    ----------
    depth : int
        U-Net depth (number of poolings).

    Returns
    -------
    int
        The receptive field width in pixels.

    Examples
    --------
    >>> unet_receptive_field(1)
    18
    >>> unet_receptive_field(4)
    204
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")

    def encoder_input(level: int, low: int, high: int) -> tuple[int, int]:
        # Input interval of the encoder block output [low, high] at ``level``.
        low, high = low - 2, high + 2  # two 3x3 convolutions
        while level > 0:
            level -= 1
            low, high = 2 * low, 2 * high + 1  # max pooling from ``level``
            low, high = low - 2, high + 2  # that level's two convolutions
        return low, high

    def decoder_input(level: int, low: int, high: int) -> tuple[int, int]:
        # Input interval of the decoder block output (bridge output if level == depth).
        low, high = low - 2, high + 2  # two 3x3 convolutions
        if level == depth:  # bridge: its input is the last pooling's output
            return encoder_input(depth - 1, 2 * low, 2 * high + 1)
        skip_low, skip_high = encoder_input(level, low, high)
        deep_low, deep_high = decoder_input(level + 1, low // 2, high // 2)
        return min(skip_low, deep_low), max(skip_high, deep_high)

    widths = []
    for position in range(2**depth):
        low, high = decoder_input(0, position, position)
        widths.append(high - low + 1)
    return max(widths)


def _pix2pix_down(x, filters: int, *, batchnorm: bool, name: str):
    """Conv2D 4x4 stride 2 (no bias), optional batch normalisation, LeakyReLU(0.2)."""
    init = keras.initializers.RandomNormal(0.0, _PIX2PIX_INIT_STDDEV)
    x = layers.Conv2D(
        filters, 4, strides=2, padding="same", kernel_initializer=init,
        use_bias=False, name=f"{name}_conv",
    )(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.LeakyReLU(_LEAKY_SLOPE, name=f"{name}_lrelu")(x)



def _upsample(x, filters: int, *, upsampling: str, name: str, **conv_options):
    """Double the size of ``x``: a 4x4 stride-2 transposed convolution (layer ``name``),
    or a nearest neighbour resize followed by a 3x3 convolution (layer ``name``)."""
    init = keras.initializers.RandomNormal(0.0, _PIX2PIX_INIT_STDDEV)
    if upsampling == "transpose":
        return layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same", kernel_initializer=init, name=name, **conv_options
        )(x)
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)
    return layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, name=name, **conv_options)(x)


def _pix2pix_up(x, filters: int, *, dropout: bool, upsampling: str, name: str):
    """Upsampling (no bias), batch normalisation, dropout 0.5, ReLU."""
    x = _upsample(x, filters, upsampling=upsampling, name=f"{name}_convt" if upsampling == "transpose"
                  else f"{name}_conv", use_bias=False)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if dropout:
        x = layers.Dropout(0.5, name=f"{name}_dropout")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _halvings(input_shape: Sequence[int]) -> int:
    """How many stride-2 steps bring the smaller side of ``input_shape`` down to 1."""
    size = min(input_shape[:2])
    if size < 2 or size & (size - 1):
        raise ValueError(
            f"cannot derive the number of levels from input size {size}: give levels= "
            "explicitly or use a power-of-two size"
        )
    return size.bit_length() - 1


def build_pix2pix_generator(
    input_shape: Sequence[int] = (256, 256, 3),
    *,
    num_classes: int = 5,
    base_filters: int = 64,
    levels: int | None = None,
    max_filters_factor: int = 8,
    upsampling: str = "transpose",
    name: str = "pix2pix_generator",
) -> keras.Model:
    """Build the Pix2Pix U-Net generator (Isola et al. 2017; TensorFlow tutorial layout).

    Down level ``i`` is a 4x4 stride-2 convolution with
    ``base_filters * min(2**i, max_filters_factor)`` filters, batch normalisation and
    LeakyReLU(0.2). Up levels mirror it with 4x4 stride-2 transposed convolutions, batch
    normalisation, ReLU and dropout 0.5 on the first three (the innermost); each up
    level's output is concatenated with the down output of the same size. A final
    transposed convolution produces ``num_classes`` channels at the input size.

    Parameters
    ----------
    input_shape : sequence of int
        ``(height, width, channels)``, e.g. 256x256 T2W/DWI/ADC stacks.
    num_classes : int
        Output channels: the classes of the one-hot label map (5 zones by default).
    base_filters : int
        Filters of the first down level (64 in the paper).
    levels : int or None
        Number of down levels. ``None``: as many as bring the smaller side down to 1
        pixel (8 for 256), which needs a power-of-two size. Height and width must be
        divisible by ``2**levels``.
    max_filters_factor : int
        Filter growth stops at ``base_filters * max_filters_factor`` (512 in the paper).
    upsampling : {"transpose", "resize"}
        How the up levels (and the output layer) double the size: ``"transpose"``, the
        paper's 4x4 stride-2 transposed convolution, or ``"resize"``, a nearest
        neighbour resize followed by a 3x3 convolution (see the notes).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Maps ``(batch, H, W, channels)`` to ``(batch, H, W, num_classes)`` class
        probabilities (softmax over the last axis).

    Notes
    -----
    Softmax instead of the tutorial's ``tanh``: the tutorial generates photographs scaled
    to [-1, 1], whereas here the target is a one-hot zone map, so the generator outputs
    class probabilities. The L1 term of the generator loss is then meaningful: for a
    pixel of class ``c`` with probabilities ``p``, ``sum_k |p_k - y_k| = 2 (1 - p_c)``,
    i.e. it pushes up the probability of the true class; ``argmax`` gives the labels.

    Batch normalisation is left out of the first down level (as in the paper) and also of
    the innermost one, as in the authors' PyTorch implementation: at the usual batch size
    of 1 the innermost map is 1x1, and normalising a single value with its own batch
    statistics returns zeros, which would cut the bottleneck.

    A stride-2 transposed convolution computes neighbouring output pixels from
    different subsets of its kernel weights; until training has made those subsets
    agree, the output carries a pattern with a period of 2 pixels, a *checkerboard*
    (Odena et al. 2016, "Deconvolution and checkerboard artifacts"). ``"resize"``
    computes every output pixel with the same weights from a resized input, so it
    cannot produce that pattern; it is a deviation from the paper's architecture,
    with the same number of up levels and filters (fewer weights: 3x3 instead of 4x4
    kernels).

    Examples
    --------
    >>> generator = build_pix2pix_generator((32, 32, 3), base_filters=4)
    >>> generator.output_shape
    (None, 32, 32, 5)
    >>> build_pix2pix_generator((32, 32, 3), base_filters=4, upsampling="resize").output_shape
    (None, 32, 32, 5)
    """
    if upsampling not in PIX2PIX_UPSAMPLING:
        raise ValueError(f"upsampling must be one of {PIX2PIX_UPSAMPLING}, got {upsampling!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (softmax), got {num_classes}")
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {tuple(input_shape)}"
        )
    if levels is None:
        levels = _halvings(input_shape)
    if levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    _check_spatial(input_shape, 2**levels, f"Pix2Pix generator with {levels} levels")

    down_filters = [base_filters * min(2**i, max_filters_factor) for i in range(levels)]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for i, filters in enumerate(down_filters):
        batchnorm = 0 < i < levels - 1
        x = _pix2pix_down(x, filters, batchnorm=batchnorm, name=f"down{i}")
        skips.append(x)
    for j, i in enumerate(reversed(range(levels - 1))):
        x = _pix2pix_up(x, down_filters[i], dropout=j < 3, upsampling=upsampling, name=f"up{i}")
        x = layers.Concatenate(name=f"up{i}_concat")([x, skips[i]])
    outputs = _upsample(x, num_classes, upsampling=upsampling, name="probabilities", activation="softmax")
    return keras.Model(inputs, outputs, name=name)


def build_pix2pix_discriminator(
    input_shape: Sequence[int] = (256, 256, 3),
    *,
    num_classes: int = 5,
    base_filters: int = 64,
    downsamples: int = 3,
    name: str = "pix2pix_discriminator",
) -> keras.Model:
    """Build the Pix2Pix PatchGAN discriminator (70x70 patches for the defaults).

    The image and a label map (real one-hot or generated probabilities) are concatenated
    along channels, then: ``downsamples`` Pix2Pix down levels (4x4 stride 2, batch
    normalisation except on the first, LeakyReLU(0.2)) with ``base_filters * 2**i``
    filters; zero padding by 1; a 4x4 stride-1 convolution with twice the last filters,
    batch normalisation, LeakyReLU; zero padding by 1; a 4x4 stride-1 convolution to one
    channel. Each output value is a real-vs-fake logit for one patch of the input.

    Parameters
    ----------
    input_shape : sequence of int
        ``(height, width, channels)`` of the image input.
    num_classes : int
        Channels of the label-map input.
    base_filters : int
        Filters of the first down level.
    downsamples : int
        Number of stride-2 levels (3 in the paper). Height and width must be divisible
        by ``2**downsamples`` and give at least 3 pixels after them.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Takes ``[image, label_map]`` and returns ``(batch, H / 2**downsamples - 2,
        W / 2**downsamples - 2, 1)`` logits (no sigmoid: the losses work from logits).
        A 256x256 input gives 30x30 logits.

    Examples
    --------
    >>> discriminator = build_pix2pix_discriminator((32, 32, 3), base_filters=4)
    >>> discriminator.output_shape
    (None, 2, 2, 1)
    """
    if downsamples < 1:
        raise ValueError(f"downsamples must be at least 1, got {downsamples}")
    factor = 2**downsamples
    _check_spatial(input_shape, factor, f"PatchGAN with {downsamples} downsamples")
    if min(input_shape[:2]) // factor < 3:
        raise ValueError(
            f"input size {min(input_shape[:2])} is too small for {downsamples} "
            f"downsamples: need at least {3 * factor} pixels"
        )
    init = keras.initializers.RandomNormal(0.0, _PIX2PIX_INIT_STDDEV)
    image = keras.Input(shape=tuple(input_shape), name="image")
    label_map = keras.Input(shape=(*input_shape[:2], num_classes), name="label_map")
    x = layers.Concatenate(name="pair")([image, label_map])
    for i in range(downsamples):
        x = _pix2pix_down(x, base_filters * 2**i, batchnorm=i > 0, name=f"down{i}")
    x = layers.ZeroPadding2D(name="pad0")(x)
    x = layers.Conv2D(
        base_filters * 2**downsamples, 4, kernel_initializer=init, use_bias=False,
        name="patch_conv",
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="patch_bn")(x)
    x = layers.LeakyReLU(_LEAKY_SLOPE, name="patch_lrelu")(x)
    x = layers.ZeroPadding2D(name="pad1")(x)
    logits = layers.Conv2D(1, 4, kernel_initializer=init, name="logits")(x)
    return keras.Model([image, label_map], logits, name=name)
