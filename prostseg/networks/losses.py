"""Training losses for the U-Net and Pix2Pix.

Every function returns **one loss value per example**: a tensor of shape ``(batch,)``
(or three of them for :func:`generator_loss`). That one contract serves both ways of
training:

* ``model.compile(loss=bce_dice_loss)``: Keras averages the per-example values over the
  batch (and takes care of replicas under a ``tf.distribute`` strategy). The losses are
  registered as Keras serializables (package ``"prostseg"``), so a compiled model saved
  to ``.keras`` loads back with ``safe_mode=True`` and no ``custom_objects``.
* Custom training loops (Pix2Pix): under a distribution strategy each replica sees
  ``global_batch / replicas`` examples, and the gradients of the replicas are summed.
  The per-replica loss must therefore be the sum of its per-example losses divided by
  the **global** batch size, which is what ``tf.nn.compute_average_loss`` does::

      per_example = bce_dice_loss(labels, model(images, training=True))
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)

  A plain ``mean`` of the per-example losses on each replica would scale the gradients
  by the number of replicas. Without a strategy ``global_batch_size`` is the batch size.

Inputs are channels-last tensors ``(batch, ..., channels)``; probabilities for
``y_pred``, 0/1 (one-hot for several classes) for ``y_true``.

Examples
--------
>>> import numpy as np
>>> y_true = np.ones((2, 4, 4, 1), "float32")
>>> y_pred = np.full((2, 4, 4, 1), 0.5, "float32")
>>> [round(float(v), 4) for v in binary_crossentropy(y_true, y_pred)]
[0.6931, 0.6931]
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "bce_dice_loss",
    "binary_crossentropy",
    "categorical_crossentropy",
    "discriminator_loss",
    "generator_loss",
    "soft_dice_loss",
]


def _per_example_mean(values):
    """Mean over every axis but the first (batch) one."""
    axes = tuple(range(1, len(values.shape)))
    return ops.mean(values, axis=axes) if axes else values


@keras.saving.register_keras_serializable(package="prostseg")
def binary_crossentropy(y_true, y_pred):
    """Mean binary cross-entropy of each example.

    Parameters
    ----------
    y_true : tensor
        0/1 targets, shape ``(batch, ..., channels)``.
    y_pred : tensor
        Probabilities of the same shape (clipped to ``[1e-7, 1 - 1e-7]`` by Keras).

    Returns
    -------
    tensor
        Shape ``(batch,)``: ``-mean(y log p + (1 - y) log(1 - p))`` over each example.
    """
    return _per_example_mean(keras.losses.binary_crossentropy(y_true, y_pred))


@keras.saving.register_keras_serializable(package="prostseg")
def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """One minus the soft Dice coefficient of each example.

    For each example and channel ``c``, ``dice_c = (2 sum(y p) + smooth) /
    (sum(y) + sum(p) + smooth)`` with sums over the spatial axes; the loss is
    ``1 - mean_c dice_c``. ``smooth`` keeps the ratio defined when a mask is empty:
    an empty target predicted as (nearly) empty costs (nearly) 0, matching the
    "both empty scores 1" convention of :mod:`prostseg.networks.metrics`.

    Parameters
    ----------
    y_true : tensor
        0/1 (one-hot) targets, shape ``(batch, ..., channels)`` with at least one
        spatial axis.
    y_pred : tensor
        Probabilities of the same shape.
    smooth : float
        Added to numerator and denominator (in pixels).

    Returns
    -------
    tensor
        Shape ``(batch,)``, values in ``[0, 1]``.
    """
    if len(y_pred.shape) < 3:
        raise ValueError(
            f"soft_dice_loss expects (batch, ..., channels) tensors, got shape {y_pred.shape}"
        )
    y_true = ops.cast(y_true, y_pred.dtype)
    spatial_axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=spatial_axes)
    total = ops.sum(y_true, axis=spatial_axes) + ops.sum(y_pred, axis=spatial_axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


@keras.saving.register_keras_serializable(package="prostseg")
def bce_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """Binary cross-entropy plus soft Dice loss of each example.

    Cross-entropy gives well-behaved per-pixel gradients; the Dice term counters the
    imbalance of small lesions against a large background.

    Returns
    -------
    tensor
        Shape ``(batch,)``: ``binary_crossentropy + soft_dice_loss``.
    """
    return binary_crossentropy(y_true, y_pred) + soft_dice_loss(y_true, y_pred, smooth)


@keras.saving.register_keras_serializable(package="prostseg")
def categorical_crossentropy(y_true, y_pred):
    """Mean categorical cross-entropy of each example (multi-class label maps).

    Parameters
    ----------
    y_true : tensor
        One-hot targets, shape ``(batch, ..., classes)``.
    y_pred : tensor
        Class probabilities of the same shape (softmax outputs; clipped to
        ``[1e-7, 1 - 1e-7]`` by Keras).

    Returns
    -------
    tensor
        Shape ``(batch,)``: ``-mean(sum_k y_k log p_k)`` over the pixels of each
        example, i.e. the mean of ``-log p`` of the true class.

    Notes
    -----
    Compared with the L1 term of :func:`generator_loss` on the same probabilities
    (``2 (1 - p_c) / classes`` per pixel), the gradient with respect to the logits
    does not vanish where the true class ``c`` has a probability near 0: it is
    ``p - y`` for cross-entropy, and ``2 p_c (p - y) / classes`` for L1, which
    fades with ``p_c``. A generator that paints a whole zone with a wrong class
    (``p_c`` near 0 there) therefore still learns from those pixels with
    cross-entropy, and hardly at all with L1.

    Examples
    --------
    >>> import numpy as np
    >>> y_true = np.eye(3, dtype="float32")[[[0, 1]]]  # (1, 2, 3): classes 0 and 1
    >>> y_pred = np.array([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]], "float32")
    >>> [round(float(v), 4) for v in categorical_crossentropy(y_true, y_pred)]  # ln 2
    [0.6931]
    """
    return _per_example_mean(keras.losses.categorical_crossentropy(ops.cast(y_true, y_pred.dtype), y_pred))


def _sigmoid_cross_entropy(target: float, logits):
    """Per-example mean sigmoid cross-entropy of ``logits`` against a constant target."""
    labels = ops.full_like(logits, target)
    return _per_example_mean(
        keras.losses.binary_crossentropy(labels, logits, from_logits=True)
    )


def generator_loss(disc_fake_logits, generated, target, l1_weight: float = 100.0):
    """Pix2Pix generator loss of each example (Isola et al. 2017, eq. 4).

    Parameters
    ----------
    disc_fake_logits : tensor
        Discriminator logits for (image, generated) pairs, ``(batch, h, w, 1)``.
    generated : tensor
        Generator output (class probabilities), ``(batch, H, W, classes)``.
    target : tensor
        One-hot label map of the same shape.
    l1_weight : float
        Weight of the L1 term (lambda = 100 in the paper).

    Returns
    -------
    total, gan, l1 : tensor
        Each of shape ``(batch,)``. ``gan``: sigmoid cross-entropy of the fake logits
        against "real" (ones), i.e. how well the generator fools the discriminator.
        ``l1``: mean absolute difference between ``target`` and ``generated``.
        ``total = gan + l1_weight * l1``.
    """
    gan = _sigmoid_cross_entropy(1.0, disc_fake_logits)
    l1 = _per_example_mean(ops.abs(ops.cast(target, generated.dtype) - generated))
    return gan + l1_weight * l1, gan, l1


def discriminator_loss(disc_real_logits, disc_fake_logits):
    """Pix2Pix discriminator loss of each example.

    Parameters
    ----------
    disc_real_logits : tensor
        Logits for (image, true label map) pairs, ``(batch, h, w, 1)``.
    disc_fake_logits : tensor
        Logits for (image, generated label map) pairs, same shape.

    Returns
    -------
    tensor
        Shape ``(batch,)``: sigmoid cross-entropy of the real logits against ones plus
        that of the fake logits against zeros (each a mean over the patch map).
    """
    return _sigmoid_cross_entropy(1.0, disc_real_logits) + _sigmoid_cross_entropy(
        0.0, disc_fake_logits
    )
