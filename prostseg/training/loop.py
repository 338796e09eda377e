"""Train the U-Net and Pix2Pix models under ``tf.distribute``, resumably.

Both models train in one custom loop (:func:`train_unet`, :func:`train_pix2pix`): the
model-specific part is a *replica step* (forward pass, losses, gradients, optimiser
updates on one replica's share of the batch), run on every replica by
``strategy.run``; the loop around it is shared: data distribution, progress display,
``history.csv``, TensorBoard scalars, the best model, ``tf.train`` checkpoints and
resuming. The same loop therefore runs on one device, on the GPUs of one machine
(``MirroredStrategy``) and on several machines (``MultiWorkerMirroredStrategy``).
Configurations, the run folder and histories live in :mod:`prostseg.networks.runs` (no
TensorFlow needed to read them); their names are re-exported here.

Distribution
------------
``strategy`` picks a :class:`tf.distribute.Strategy` (:func:`make_strategy`).
``batch_size`` is the batch of *one replica*: every step feeds each replica
``batch_size`` slices, so the global batch is ``batch_size x replicas``
(:attr:`TrainingResult.global_batch_size`), and a recipe written for one device (the
Pix2Pix paper's batch of 1, say) runs unchanged on any number of devices, with the
batch normalisation statistics of every replica taken over the same number of slices.
Losses are averaged over the global batch (``tf.nn.compute_average_loss``) and the
replicas' gradients summed, so a step equals one step on the global batch.

Learning rate: ``learning_rate`` is used as given, whatever the number of replicas;
nothing is scaled behind your back. Adding replicas multiplies the global batch, so an
epoch takes proportionally fewer (larger) steps. The linear scaling rule (Goyal et al.
2017: multiply the learning rate by the number of replicas, with a warm-up) is the
usual starting point; set ``learning_rate`` yourself and check the validation curves.

Multi-worker training (``strategy="multiworker"``) reads the cluster from the
``TF_CONFIG`` environment variable; start the same command on every worker, with the
data and the output folder on a file system they share. The chief writes the run
folder; the other workers keep their own files in ``OUTPUT_DIR/workers/``. Every worker
resumes from the chief's checkpoints, so all of them continue from the same epoch.
Validation runs on every worker on the whole validation set (not distributed).

Data streams
------------
Pix2Pix builds a fresh data stream for every epoch from ``seed + epoch``, so a resumed
run sees exactly the data an uninterrupted run would have seen. The U-Net reads one
repeated stream, ``steps_per_epoch`` batches per epoch; a resumed U-Net run restarts
that stream, so its weights equal those of an uninterrupted run only when the stream
does not depend on the epoch (``shuffle=False``, ``augment=False``, no
``foreground_fraction``); otherwise it is an equally valid run with other random draws.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from prostseg.networks import losses
from prostseg.atomic import atomic_path, remove_leftovers
from prostseg.training.checkpoints import promote_best, restore_checkpoint, save_checkpoint, set_aside_best
from prostseg.training.datacheck import check_training_data
from prostseg.data.dataset import NUM_ZONE_CLASSES, ZONE_NAMES, discover_cases
from prostseg.networks.metrics import per_class_dice
from prostseg.networks.models import build_pix2pix_discriminator
from prostseg.preparation.pipeline import count_slices, pix2pix_epochs, unet_dataset
from prostseg.networks.recipes import PIX2PIX, UNET
from prostseg.preparation.slice_cache import SliceSpec, prepare_cases
from prostseg.use.model_card import write_model_card
from prostseg.networks.runs import (
    CONFIG_FILE,
    HISTORY_FILE,
    SPLIT_FILE,
    STRATEGIES,
    UNET_LOSS_NAMES,
    Pix2PixTrainingConfig,
    TrainingResult,
    UNetTrainingConfig,
    append_row,
    load_config,
    patient_split,
    prepare_run_folder,
    read_history,
    training_result,
    truncate_history,
    write_split,
)

__all__ = [
    "CONFIG_FILE",
    "HISTORY_FILE",
    "SPLIT_FILE",
    "STRATEGIES",
    "TRAINERS",
    "UNET_LOSSES",
    "Pix2PixTrainingConfig",
    "TrainingResult",
    "UNetTrainingConfig",
    "load_config",
    "make_strategy",
    "read_history",
    "train_pix2pix",
    "train_unet",
]

#: U-Net loss functions by configuration name (see :mod:`prostseg.networks.losses`).
UNET_LOSSES = {
    "bce": losses.binary_crossentropy,
    "dice": losses.soft_dice_loss,
    "bce_dice": losses.bce_dice_loss,
}
assert tuple(UNET_LOSSES) == UNET_LOSS_NAMES

# --- strategy --------------------------------------------------------


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the distribution strategy called ``name``.

    Parameters
    ----------
    name : {"auto", "default", "mirrored", "multiworker"}
        ``"default"``: no distribution (one device). ``"mirrored"``: synchronous
        data parallelism over all GPUs of this machine (over its logical CPUs when
        there is no GPU). ``"auto"``: ``"mirrored"`` when there are two or more GPUs,
        ``"default"`` otherwise. ``"multiworker"``: synchronous data parallelism over
        several machines described by the ``TF_CONFIG`` environment variable; create it
        before TensorFlow runs anything else in the process.

    A process gets one instance of each distributed strategy: later calls return it
    again, because the collective operations of two instances would get mixed up.

    Returns
    -------
    tf.distribute.Strategy

    Examples
    --------
    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker" and "TF_CONFIG" not in os.environ:
        raise ValueError("strategy 'multiworker' needs the TF_CONFIG environment variable")
    if name in ("mirrored", "multiworker"):
        return _collective_strategy(name)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


@functools.cache
def _collective_strategy(name: str) -> tf.distribute.Strategy:
    """One instance per process: the collective-op keys of two instances collide."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _worker_name(strategy: tf.distribute.Strategy) -> str | None:
    """None for the chief (or without a cluster), else e.g. ``'worker-1'``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    task_type, task_id = resolver.task_type, resolver.task_id
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )
    return None if is_chief else f"{task_type}-{task_id}"


@contextlib.contextmanager
def _dtype_policy(mixed_precision: bool):
    """Build models under ``mixed_float16`` when asked, restoring the global policy after."""
    if not mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_outputs(model: keras.Model) -> keras.Model:
    """``model`` unchanged under float32; else with its outputs cast to float32."""
    if model.output.dtype == "float32":
        return model
    outputs = keras.layers.Activation("linear", dtype="float32", name="float32_output")(model.output)
    return keras.Model(model.input, outputs, name=model.name)


# --- the loop ---------------------------------------------------------------------


def _start(config, data_require: tuple[str, str], overwrite: bool):
    """Strategy, run folder and split of a run; seeds and determinism set."""
    strategy = make_strategy(config.strategy)  # first: multi-worker set-up precedes other ops
    worker = _worker_name(strategy)
    cases = discover_cases(config.data_dir, require=data_require)
    split = patient_split(config, [case.case_id for case in cases])
    by_id = {case.case_id: case for case in cases}
    train_cases, val_cases = [by_id[i] for i in split.train], [by_id[i] for i in split.val]
    check_training_data(config, train_cases, val_cases, replicas=strategy.num_replicas_in_sync)
    folder = prepare_run_folder(config, worker, overwrite)
    write_split(split, folder)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    return strategy, folder, train_cases, val_cases


def _prepared(config, spec: SliceSpec, cases: list) -> str | None:
    """``config.slice_cache`` with every case of the run prepared there (None without it)."""
    if config.slice_cache is None:
        return None
    prepare_cases([case.folder for case in cases], spec, config.slice_cache, workers=1,
                  progress=config.verbose == 1).raise_if_failed()
    return config.slice_cache


def _write_model_card(config, folder: Path) -> None:
    """``MODEL_CARD.md`` of a finished run (:mod:`prostseg.use.model_card`); the chief's run
    folder only, other workers keep no models."""
    if Path(folder).resolve() == Path(config.output_dir).resolve():
        write_model_card(folder)


def _adam(config, model: keras.Model, **options):
    """Adam for ``model``, loss-scaled under mixed precision, built (call inside the scope)."""
    optimizer = keras.optimizers.Adam(config.learning_rate, **options)
    if config.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)  # under the scope, before the first step
    return optimizer


def _objective(loss, optimizer, mixed_precision: bool):
    """What to differentiate: ``loss``, scaled under mixed precision (call inside the tape)."""
    return optimizer.scale_loss(loss) if mixed_precision else loss


def _apply(tape, objective, model: keras.Model, optimizer) -> None:
    """One optimiser update of ``model`` from ``objective`` (see :func:`_objective`)."""
    gradients = tape.gradient(objective, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))


def _seed_states(*models: keras.Model) -> list:
    """The random-number states of the models' dropout layers (not tracked by tf.train)."""
    return [v for model in models for v in model.non_trainable_variables if "seed_generator" in v.path]


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker gets here (an all-reduce of a constant)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        tf.function(lambda: strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.ones(())), axis=None))()


class _Summaries:
    """Per-epoch TensorBoard scalars in ``logs/train`` and ``logs/validation``."""

    def __init__(self, log_dir: Path):
        self.writers = None
        if importlib.util.find_spec("tensorboard") is None:
            warnings.warn("TensorBoard is not installed: no logs/ for this run (pip install tensorboard)",
                          stacklevel=4)
            return
        self.writers = {part: tf.summary.create_file_writer(str(log_dir / part)) for part in ("train", "validation")}

    def write(self, row: dict[str, float]) -> None:
        if self.writers is None:
            return
        for name, value in row.items():
            if name in ("epoch", "seconds") or not math.isfinite(value):
                continue
            part, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            with self.writers[part].as_default():
                tf.summary.scalar(tag, value, step=row["epoch"])
        for writer in self.writers.values():
            writer.flush()


def _distributed_step(strategy: tf.distribute.Strategy, replica_step: Callable, jit_compile: bool):
    """One training step as a ``tf.function``: ``replica_step(*batch)`` on every replica,
    its dict of scalars summed over the replicas; compiled with XLA when ``jit_compile``."""

    @tf.function(jit_compile=jit_compile)
    def distributed_step(*batch):
        per_replica = strategy.run(replica_step, args=batch)
        return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for key, value in per_replica.items()}

    return distributed_step


def _train_loop(
    config, strategy: tf.distribute.Strategy, folder: Path, *,
    models: dict[str, keras.Model],
    optimizers: dict[str, keras.optimizers.Optimizer],
    replica_step: Callable,
    epoch_batches: Callable[[int], Iterable],
    epoch_values: Callable[[dict[str, float], int], dict[str, float]],
    validate: Callable[[], dict[str, float]] | None,
    best: tuple[str, bool, keras.Model, str],
    learning_rate_at: Callable[[int], float] | None = None,
    callbacks: Iterable[keras.callbacks.Callback] = (),
    steps_per_epoch: int | None = None,
) -> None:
    """Train ``models`` from their last checkpoint to ``config.epochs``.

    ``replica_step(*batch)`` runs on every replica and returns a dict of scalars whose
    sum over replicas and steps ``epoch_values(sums, steps)`` turns into the epoch's
    training columns; ``validate()`` adds the validation columns. ``best`` is
    ``(column, lower_is_better, model, file name)``: that model is saved whenever the
    column improves; it becomes ``best_file`` once a checkpoint covers its epoch
    (:func:`prostseg.training.checkpoints.promote_best`). Per epoch, in this order (so that a
    kill at any point loses no row and repeats none): history row, then the checkpoint. Every file
    is written atomically; a resumed run starts from the newest intact checkpoint
    (:mod:`prostseg.training.checkpoints`) and drops the history rows after it.
    """
    with strategy.scope():
        epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    checkpoint = tf.train.Checkpoint(
        **models, **{f"{name}_optimizer" if name != "model" else "optimizer": optimizer
                     for name, optimizer in optimizers.items()},
        epochs_done=epochs_done, random_state=_seed_states(*models.values()),
    )
    checkpoints = folder / "checkpoints"
    for leftover in (folder, checkpoints):  # what this process left when it was killed
        remove_leftovers(leftover)
    _barrier(strategy)  # the chief has prepared its folder before anyone reads it
    restore_checkpoint(checkpoint, Path(config.output_dir) / "checkpoints")  # the chief's, for all
    start = int(epochs_done.numpy())
    history_path = folder / HISTORY_FILE
    column, lower, best_model, best_file = best
    promote_best(checkpoints, folder / best_file, start)  # a best the restored epochs hold
    sign = 1 if lower else -1
    best_so_far = min((sign * row[column] for row in truncate_history(history_path, start)
                       if math.isfinite(row.get(column, math.nan))), default=math.inf)
    summaries = _Summaries(folder / "logs")
    primary = next(iter(models.values()))
    primary.stop_training = False
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=primary)

    distributed_step = _distributed_step(strategy, replica_step, config.jit_compile)
    callback_list.on_train_begin()
    for epoch in range(start, config.epochs):
        callback_list.on_epoch_begin(epoch)
        started = time.perf_counter()
        if learning_rate_at is not None:
            for optimizer in optimizers.values():
                optimizer.learning_rate.assign(learning_rate_at(epoch))
        progress = keras.utils.Progbar(steps_per_epoch) if config.verbose == 1 else None
        sums, steps = {}, 0
        for batch in epoch_batches(epoch):
            values = distributed_step(*batch)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            steps += 1
            if progress is not None:
                progress.update(steps, [(key, sums[key] / steps) for key in list(sums)[:1]])
        if steps == 0:
            raise ValueError("the training patients hold fewer slices than one global batch "
                             f"({config.batch_size} x {strategy.num_replicas_in_sync} replicas)")
        row = {"epoch": epoch, **epoch_values(sums, steps)}
        if validate is not None:
            row.update(validate())
        score = sign * row.get(column, math.nan)
        if math.isfinite(score) and score < best_so_far:
            best_so_far = score
            set_aside_best(best_model, checkpoints, epoch)  # best_file once checkpointed
        row["seconds"] = time.perf_counter() - started
        append_row(history_path, row)
        summaries.write(row)
        epochs_done.assign(epoch + 1)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            save_checkpoint(checkpoint, checkpoints, epoch + 1)
            promote_best(checkpoints, folder / best_file, epoch + 1)
        if config.verbose:
            print(f"epoch {epoch + 1}/{config.epochs}: " + ", ".join(
                f"{key} {value:.4f}" for key, value in row.items() if key != "epoch"), flush=True)
        callback_list.on_epoch_end(epoch, row)
        if primary.stop_training:
            break
    callback_list.on_train_end()


# --- U-Net --------------------------------------------------------------------------

_OVERLAP = ("intersection", "predicted", "true")


def _overlap_counts(masks, probabilities) -> dict[str, tf.Tensor]:
    """Pixel counts for IoU and Dice at threshold 0.5 (as :class:`ThresholdedIoU`)."""
    predicted = tf.cast(probabilities > 0.5, tf.float32)
    true = tf.cast(tf.not_equal(tf.reshape(masks, tf.shape(probabilities)), 0), tf.float32)
    return {"intersection": tf.reduce_sum(predicted * true), "predicted": tf.reduce_sum(predicted),
            "true": tf.reduce_sum(true)}


def _overlap_scores(sums: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Pooled IoU and Dice from summed counts; 1.0 when prediction and truth are empty."""
    intersection, predicted, true = (sums[key] for key in _OVERLAP)
    union = predicted + true - intersection
    return {f"{prefix}iou": intersection / union if union > 0 else 1.0,
            f"{prefix}dice": 2 * intersection / (predicted + true) if predicted + true > 0 else 1.0}


def _unet_model(config: UNetTrainingConfig, strategy: tf.distribute.Strategy):
    """The U-Net of ``config`` and its built Adam optimiser, in the strategy's scope."""
    with _dtype_policy(config.mixed_precision), strategy.scope():
        model = _float32_outputs(UNET.build_model(config))
        optimizer = _adam(config, model)
    return model, optimizer


def _unet_replica_step(config: UNetTrainingConfig, model: keras.Model, optimizer, global_batch: int):
    """The U-Net's replica step: forward, loss, one Adam update, overlap counts."""
    loss_function = UNET_LOSSES[config.loss]

    def replica_step(images, masks):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            loss = tf.nn.compute_average_loss(loss_function(masks, probabilities), global_batch_size=global_batch)
            objective = _objective(loss, optimizer, config.mixed_precision)
        _apply(tape, objective, model, optimizer)
        return {"loss": loss, **_overlap_counts(masks, probabilities)}

    return replica_step


def train_unet(
    config: UNetTrainingConfig,
    *,
    overwrite: bool = False,
    callbacks: Iterable[keras.callbacks.Callback] = (),
) -> TrainingResult:
    """Train a U-Net as ``config`` says, on any :func:`make_strategy` strategy.

    Patients are split as configured (``split.json``); training slices stream from
    :func:`prostseg.preparation.pipeline.unet_dataset` (repeated, ``steps_per_epoch`` global
    batches per epoch), validation slices from the validation patients. The model and
    its Adam optimiser are built inside the strategy's scope. ``history.csv`` holds
    per epoch ``loss``, ``iou`` and ``dice`` (pooled over the epoch's training
    batches, threshold 0.5; :mod:`prostseg.networks.metrics`), ``val_loss``, ``val_iou`` and
    ``val_dice`` on the validation patients (NaN without them), and ``seconds``.
    ``best.keras`` is the model of the lowest ``val_loss`` (``loss`` without
    validation patients), ``model.keras`` the final model; checkpoints go to
    ``checkpoints/`` and TensorBoard scalars to ``logs/``. A finished run also gets its
    ``MODEL_CARD.md`` (:func:`prostseg.use.model_card.write_model_card`).

    Parameters
    ----------
    config : UNetTrainingConfig
        The run.
    overwrite : bool, optional
        Replace another run (or other files) in ``config.output_dir``.
    callbacks : iterable of keras.callbacks.Callback, optional
        Called at the start and end of every epoch (``logs`` is the history row);
        setting ``self.model.stop_training = True`` ends the run after that epoch.

    Returns
    -------
    TrainingResult

    Raises
    ------
    InputError
        When ``output_dir`` holds something else (see :mod:`prostseg.networks.runs`), or the
        data folder or split file cannot be used.
    """
    strategy, folder, train_cases, val_cases = _start(config, (UNET.input, config.label), overwrite)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    spec = SliceSpec("unet", config.image_size, config.target_spacing, config.label)
    options = dict(image_size=config.image_size, label=config.label,
                   target_spacing=config.target_spacing,
                   slice_cache=_prepared(config, spec, train_cases + val_cases))
    steps = config.steps_per_epoch or max(
        1, count_slices(train_cases, drop_empty=config.drop_empty, **options) // global_batch
    )
    train_data = unet_dataset(
        train_cases, batch_size=global_batch, shuffle=config.shuffle, augment=config.augment,
        drop_empty=config.drop_empty, foreground_fraction=config.foreground_fraction,
        seed=config.seed, repeat=True, cache=config.cache, intensity_augment=config.intensity_augment,
        shape_augment=config.shape_augment, **options,
    )
    val_data = UNET.dataset(val_cases, batch_size=global_batch, **options) if val_cases else None

    model, optimizer = _unet_model(config, strategy)
    loss_function = UNET_LOSSES[config.loss]
    replica_step = _unet_replica_step(config, model, optimizer, global_batch)

    @tf.function
    def validation_batch(images, masks):
        probabilities = model(images, training=False)
        return {"loss": tf.reduce_sum(loss_function(masks, probabilities)),
                "slices": tf.cast(tf.shape(images)[0], tf.float32), **_overlap_counts(masks, probabilities)}

    def validate() -> dict[str, float]:
        if val_data is None:
            return {"val_loss": math.nan, "val_iou": math.nan, "val_dice": math.nan}
        sums = {}
        for images, masks in val_data:
            for key, value in validation_batch(images, masks).items():
                sums[key] = sums.get(key, 0.0) + float(value)
        return {"val_loss": sums["loss"] / sums["slices"], **_overlap_scores(sums, "val_")}

    batches = iter(strategy.experimental_distribute_dataset(train_data))
    monitor = "val_loss" if val_cases else "loss"
    _train_loop(
        config, strategy, folder, models={"model": model}, optimizers={"model": optimizer},
        replica_step=replica_step, epoch_batches=lambda epoch: itertools.islice(batches, steps),
        epoch_values=lambda sums, n: {"loss": sums["loss"] / n, **_overlap_scores(sums)},
        validate=validate, best=(monitor, True, model, UNET.best_file), callbacks=callbacks,
        steps_per_epoch=steps,
    )
    model_path = folder / UNET.model_file
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    _write_model_card(config, folder)
    return training_result(folder, model_path, monitor, True, strategy.num_replicas_in_sync, global_batch)


# --- Pix2Pix ------------------------------------------------------------------------

_ZONE_COLUMNS = tuple(f"val_dice_{name.replace(' ', '_')}" for name in ZONE_NAMES)
_LOSS_COLUMNS = ("gen_total", "gen_gan", "gen_l1", "disc")
_CROSSENTROPY_COLUMN = "gen_ce"


def _zone_dice(predict_labels, dataset: tf.data.Dataset) -> dict[str, float]:
    """Per-class Dice of ``predict_labels(images)`` (argmax zone ids), pooled over
    ``dataset``'s pixels."""
    predicted, true = [], []
    for images, targets in dataset:
        predicted.append(predict_labels(images).numpy().astype(np.uint8))
        true.append(np.argmax(targets.numpy(), axis=-1).astype(np.uint8))
    scores = per_class_dice(np.concatenate(predicted), np.concatenate(true), NUM_ZONE_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all zones absent: NaN is the answer
        mean = float(np.nanmean(scores[1:]))
    return {**dict(zip(_ZONE_COLUMNS, scores.tolist())), "val_dice_mean": mean}


def _pix2pix_models(config: Pix2PixTrainingConfig, strategy: tf.distribute.Strategy):
    """(generator, discriminator, their built Adam optimisers) of ``config``, in the scope."""
    shape = (config.image_size, config.image_size, 3)
    with _dtype_policy(config.mixed_precision), strategy.scope():
        generator = _float32_outputs(PIX2PIX.build_model(config))
        discriminator = _float32_outputs(build_pix2pix_discriminator(
            shape, num_classes=NUM_ZONE_CLASSES, base_filters=config.discriminator_filters,
            downsamples=config.discriminator_downsamples,
        ))
        generator_optimizer = _adam(config, generator, beta_1=config.beta_1)
        discriminator_optimizer = _adam(config, discriminator, beta_1=config.beta_1)
    return generator, discriminator, generator_optimizer, discriminator_optimizer


def _pix2pix_loss_columns(config: Pix2PixTrainingConfig) -> tuple[str, ...]:
    return _LOSS_COLUMNS + ((_CROSSENTROPY_COLUMN,) if config.crossentropy_weight else ())


def _pix2pix_replica_step(config: Pix2PixTrainingConfig, generator, discriminator, generator_optimizer,
                          discriminator_optimizer, global_batch: int):
    """The Pix2Pix replica step: both losses, one Adam update of each model."""
    loss_columns = _pix2pix_loss_columns(config)

    def replica_step(images, targets):
        with tf.GradientTape() as generator_tape, tf.GradientTape() as discriminator_tape:
            generated = generator(images, training=True)
            real_logits = discriminator([images, targets], training=True)
            fake_logits = discriminator([images, generated], training=True)
            total, gan, l1 = losses.generator_loss(fake_logits, generated, targets, config.l1_weight)
            disc = losses.discriminator_loss(real_logits, fake_logits)
            per_example = [total, gan, l1, disc]  # the order of loss_columns
            if config.crossentropy_weight:
                crossentropy = losses.categorical_crossentropy(targets, generated)
                per_example[0] = total + config.crossentropy_weight * crossentropy
                per_example.append(crossentropy)
            averaged = [tf.nn.compute_average_loss(v, global_batch_size=global_batch) for v in per_example]
            generator_objective = _objective(averaged[0], generator_optimizer, config.mixed_precision)
            discriminator_objective = _objective(averaged[3], discriminator_optimizer, config.mixed_precision)
        _apply(generator_tape, generator_objective, generator, generator_optimizer)
        _apply(discriminator_tape, discriminator_objective, discriminator, discriminator_optimizer)
        return dict(zip(loss_columns, averaged))

    return replica_step


def train_pix2pix(
    config: Pix2PixTrainingConfig,
    *,
    overwrite: bool = False,
    callbacks: Iterable[keras.callbacks.Callback] = (),
) -> TrainingResult:
    """Train Pix2Pix (generator and PatchGAN discriminator), on any strategy.

    Each step, on every replica, the generator maps a stack slice to zone
    probabilities; the discriminator scores (stack, true zones) and (stack, generated
    zones) pairs. Generator loss: GAN cross-entropy plus ``l1_weight`` times L1 (plus
    ``crossentropy_weight`` times the categorical cross-entropy, when set);
    discriminator loss: real plus fake cross-entropy (:mod:`prostseg.networks.losses`);
    per-example losses are averaged over the global batch. Both models have their own
    Adam optimiser. After each epoch the generator is evaluated on the *validation*
    patients (per-class Dice of the argmax labels, pooled over all their slices at
    ``image_size``); the training patients are never used for that.

    ``history.csv`` holds per epoch the mean ``gen_total``, ``gen_gan``, ``gen_l1``
    and ``disc`` losses (and ``gen_ce``, the cross-entropy term, when
    ``crossentropy_weight`` is set), ``val_dice_<zone>`` for every zone of
    :data:`prostseg.data.dataset.ZONE_NAMES` and ``val_dice_mean`` (over the four zones,
    ignoring zones absent from the validation data), and ``seconds``. Checkpoints
    (models, optimisers, epoch counter, dropout random state) go to ``checkpoints/``
    every ``checkpoint_every`` epochs; the final models to ``generator.keras`` and
    ``discriminator.keras``, and the generator of the epoch with the highest
    ``val_dice_mean`` to ``best_generator.keras``; a finished run also gets its
    ``MODEL_CARD.md`` (:func:`prostseg.use.model_card.write_model_card`).

    Parameters
    ----------
    config : Pix2PixTrainingConfig
        The run. Cases need ``zones`` and a registered ``aligned/stack``.
    overwrite : bool, optional
        Replace another run (or other files) in ``config.output_dir``.
    callbacks : iterable of keras.callbacks.Callback, optional
        As for :func:`train_unet` (their ``model`` is the generator).

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        When the training patients hold fewer slices than one global batch.
    InputError
        As for :func:`train_unet`.
    """
    strategy, folder, train_cases, val_cases = _start(config, ("zones", PIX2PIX.input), overwrite)
    replicas = strategy.num_replicas_in_sync
    slice_cache = _prepared(config, SliceSpec("pix2pix", config.image_size, config.target_spacing),
                            train_cases + val_cases)
    global_batch = config.batch_size * replicas

    generator, discriminator, generator_optimizer, discriminator_optimizer = _pix2pix_models(config, strategy)
    loss_columns = _pix2pix_loss_columns(config)
    replica_step = _pix2pix_replica_step(
        config, generator, discriminator, generator_optimizer, discriminator_optimizer, global_batch
    )
    val_data = (
        PIX2PIX.dataset(val_cases, image_size=config.image_size, batch_size=8,
                        target_spacing=config.target_spacing, cache=config.cache,
                        slice_cache=slice_cache)
        if val_cases else None
    )
    predict_labels = tf.function(lambda images: tf.argmax(generator(images, training=False), axis=-1))
    epochs_data = None

    def epoch_batches(epoch: int):
        # A fresh stream per epoch, seeded by the epoch: a resumed run sees the same data.
        nonlocal epochs_data
        if epochs_data is None:
            epochs_data = pix2pix_epochs(
                train_cases, first_epoch=epoch, image_size=config.image_size, batch_size=global_batch,
                augment=config.augment, shuffle=config.shuffle, seed=config.seed,
                target_spacing=config.target_spacing, cache=config.cache, slice_cache=slice_cache,
                intensity_augment=config.intensity_augment, shape_augment=config.shape_augment,
            )
        data = next(epochs_data).rebatch(global_batch, drop_remainder=True)
        return strategy.experimental_distribute_dataset(data)

    _train_loop(
        config, strategy, folder,
        models={"generator": generator, "discriminator": discriminator},
        optimizers={"generator": generator_optimizer, "discriminator": discriminator_optimizer},
        replica_step=replica_step, epoch_batches=epoch_batches,
        epoch_values=lambda sums, n: {key: sums[key] / n for key in loss_columns},
        validate=(lambda: _zone_dice(predict_labels, val_data)) if val_data is not None else None,
        best=("val_dice_mean", False, generator, PIX2PIX.best_file),
        learning_rate_at=config.learning_rate_at, callbacks=callbacks,
    )
    model_path = folder / PIX2PIX.model_file
    for model, path in ((generator, model_path), (discriminator, folder / "discriminator.keras")):
        with atomic_path(path) as tmp:
            model.save(tmp)
    _write_model_card(config, folder)
    key, lower = ("val_dice_mean", False) if val_cases else ("gen_l1", True)
    return training_result(folder, model_path, key, lower, replicas, global_batch)


#: The training function of each model kind that prostseg trains (:mod:`prostseg.networks.recipes`).
TRAINERS = {UNET.kind: train_unet, PIX2PIX.kind: train_pix2pix}
