"""Input pipeline vs training step: is tf.data the bottleneck of U-Net training?

Three measurements on the same phantom cases (320 x 320 x 19 T2W volumes, slices
384 x 384, the U-Net defaults):

1. **pipeline alone** -- :func:`prostseg.preparation.pipeline.unet_dataset` with augmentation,
   shuffling and ``repeat=True``, batch 8, drained as fast as possible: slices/s after
   a warm-up (steady state, cases re-read every epoch as in training).
2. **training step alone** -- the default U-Net (:func:`prostseg.networks.models.build_unet`,
   base 32 filters, depth 4, Adam, binary cross-entropy) on one random batch held in
   memory (``train_on_batch``): images/s after warm-up.
3. **end to end** -- ``model.fit`` for the same number of steps fed by the pipeline and
   fed by an in-memory batch (``Dataset.from_tensors(...).repeat()``), timed from the end
   of the first batch (start-up excluded); their ratio is the cost of the pipeline as
   training sees it (pipeline and model share the CPU cores).

The pipeline is the bottleneck when (1) is below (2), or when (3) shows fit on the
pipeline clearly slower than fit on memory. On a CPU the training step is slow, so the
interesting number for a GPU user is the headroom: how many images/s the pipeline could
feed (1) against what a GPU consumes.

Run::

    .venv/bin/python benchmarks/input_pipeline.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "input_pipeline"


def pipeline_throughput(cases, size: int, batch: int, warmup: int, batches: int, *, cache: bool = False) -> dict:
    """Slices/s after ``warmup`` batches; with ``cache`` the warm-up covers a whole epoch,
    so that the timed batches come from the cached volumes."""
    from prostseg.preparation.pipeline import count_slices, unet_dataset

    if cache:
        warmup += -(-count_slices(cases) // batch)
    dataset = unet_dataset(cases, image_size=size, batch_size=batch, augment=True, shuffle=True, repeat=True,
                           cache=cache)
    iterator = iter(dataset)
    started = time.perf_counter()
    for _ in range(warmup):
        next(iterator)
    warm = time.perf_counter()
    slices = 0
    for _ in range(batches):
        image, _mask = next(iterator)
        slices += int(image.shape[0])
    end = time.perf_counter()
    return {"batch_size": batch, "warmup_batches": warmup, "timed_batches": batches,
            "first_batches_s": warm - started, "slices_per_s": slices / (end - warm),
            "slices_per_s_incl_startup": (slices + warmup * batch) / (end - started)}


def _compiled_unet(size: int, base_filters: int, depth: int):
    import keras

    from prostseg.networks import losses
    from prostseg.networks.models import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet((size, size, 1), base_filters=base_filters, depth=depth)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.binary_crossentropy)
    return model


def _random_batch(batch: int, size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 1), dtype=np.float32)
    masks = (rng.random((batch, size, size, 1)) > 0.95).astype(np.float32)
    return images, masks


def train_step_throughput(model, batch: int, size: int, warmup: int, steps: int) -> dict:
    images, masks = _random_batch(batch, size)
    first = common.repeat_timed(lambda: model.train_on_batch(images, masks), warmup)
    seconds = common.repeat_timed(lambda: model.train_on_batch(images, masks), steps)
    stats = common.summary(seconds)
    return {"batch_size": batch, "warmup_s": first, **stats, "images_per_s": batch / stats["median_s"]}


class _BatchClock:
    """Keras callback recording when each training batch ends."""

    def __init__(self):
        import keras

        clock = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                clock.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = Callback()

    def images_per_s(self, batch: int) -> float:
        """Throughput between the end of the first batch and the end of the last one."""
        return (len(self.ends) - 1) * batch / (self.ends[-1] - self.ends[0])


def fit_end_to_end(model, cases, size: int, batch: int, steps: int) -> dict:
    """fit on the pipeline vs on memory; the first batch (start-up) is not timed."""
    import tensorflow as tf

    from prostseg.preparation.pipeline import unet_dataset

    images, masks = _random_batch(batch, size)
    in_memory = tf.data.Dataset.from_tensors((images, masks)).repeat()
    pipeline = unet_dataset(cases, image_size=size, batch_size=batch, augment=True, shuffle=True, repeat=True)
    rates = {}
    for name, data in (("in_memory", in_memory), ("pipeline", pipeline)):
        clock = _BatchClock()
        model.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
        rates[name] = clock.images_per_s(batch)
    return {"batch_size": batch, "timed_steps": steps,
            "fit_in_memory_images_per_s": rates["in_memory"],
            "fit_pipeline_images_per_s": rates["pipeline"],
            "pipeline_over_memory_time": rates["in_memory"] / rates["pipeline"]}


def main(argv=None) -> int:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    info = common.machine_info()
    if args.quick:
        settings = dict(n_cases=2, shape=(40, 40, 4), size=32, base_filters=4, depth=2,
                        warmup_batches=1, batches=2, train_batch=2, warmup_steps=1, steps=2)
    else:  # the training step of the default U-Net takes ~10 s per image on 2 shared CPU cores
        settings = dict(n_cases=8, shape=(320, 320, 19), size=384, base_filters=32, depth=4,
                        warmup_batches=4, batches=30, train_batch=2, warmup_steps=1, steps=3)
    s = settings
    from prostseg.data.dataset import discover_cases
    from prostseg.data.phantom import write_phantom_dataset

    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "phantom"
        write_phantom_dataset(data_dir, n_cases=s["n_cases"], seed=0, shape=s["shape"], spacing=(0.6, 0.6, 3.0))
        cases = discover_cases(data_dir, require=("t2w", "lesion"))
        pipeline = pipeline_throughput(cases, s["size"], 8, s["warmup_batches"], s["batches"])
        cached = pipeline_throughput(cases, s["size"], 8, s["warmup_batches"], s["batches"], cache=True)
        model = _compiled_unet(s["size"], s["base_filters"], s["depth"])
        train = train_step_throughput(model, s["train_batch"], s["size"], s["warmup_steps"], s["steps"])
        end_to_end = fit_end_to_end(model, cases, s["size"], s["train_batch"], s["steps"])

    headroom = pipeline["slices_per_s"] / train["images_per_s"]
    verdict = ("the pipeline is NOT the bottleneck here: it produces {:.0f}x the slices/s that the "
               "training step consumes".format(headroom) if headroom > 1 else
               "the pipeline IS the bottleneck: it produces fewer slices/s than training consumes")
    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": settings,
               "pipeline": pipeline, "pipeline_cached": cached,
               "cache_speedup": cached["slices_per_s"] / pipeline["slices_per_s"], "train_step": train, "end_to_end": end_to_end,
               "pipeline_headroom": headroom, "verdict": verdict}
    md = [common.heading("Input pipeline vs U-Net training step", info, args.quick),
          f"U-Net {s['size']}x{s['size']}, base {s['base_filters']} filters, depth {s['depth']}; "
          f"{s['n_cases']} phantom cases of {'x'.join(map(str, s['shape']))}.\n",
          common.table(["measurement", "batch", "images (slices)/s"], [
              ["pipeline alone (augment, shuffle, repeat), steady state", 8, pipeline["slices_per_s"]],
              ["pipeline alone incl. start-up", 8, pipeline["slices_per_s_incl_startup"]],
              ["pipeline with cache=True, after the first epoch", 8, cached["slices_per_s"]],
              ["train step alone (random batch in memory), median", train["batch_size"], train["images_per_s"]],
              ["model.fit on in-memory batch", end_to_end["batch_size"], end_to_end["fit_in_memory_images_per_s"]],
              ["model.fit on the pipeline", end_to_end["batch_size"], end_to_end["fit_pipeline_images_per_s"]],
          ]),
          f"\nPipeline headroom (pipeline slices/s / training images/s): {headroom:.3g}. "
          f"fit on pipeline / fit on memory, time: {end_to_end['pipeline_over_memory_time']:.3g}. "
          f"Verdict: {verdict}.\n"]
    common.write_results(args.out, NAME, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
