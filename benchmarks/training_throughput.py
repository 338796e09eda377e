"""Training throughput of the U-Net and Pix2Pix steps against the machine's convolution peak.

Every configuration runs in a process of its own (so that it can choose TensorFlow's
oneDNN kernels and thread pools, which are fixed when TensorFlow starts) and times the
project's own training step: :func:`prostseg.training.loop._unet_model` /
``_pix2pix_models``, the replica step of :func:`prostseg.training.loop.train_unet` /
``train_pix2pix`` and the ``tf.function`` of the training loop
(``_distributed_step``, XLA when ``jit_compile``), on one random batch held in memory.

**Peak.** The practical limit is TensorFlow's own speed on one large 3x3 convolution
(float32, 2 x 192 x 192 x 128 -> 128 channels) in the same process. The machine is
shared, so the peak is measured before *every* timed step and each step is compared
with the peak measured just before it (the median of those ratios is reported), along
with the 1-minute load average.

**FLOPs** are read off the built model: TensorFlow's graph profiler
(``tf.compat.v1.profiler``, ``float_operation``) counts the forward graph of one image,
and the training step graph (forward, both gradients of every convolution, batch norm,
optimiser). The analytical convolution count (``2 H W k^2 C_in C_out`` per Conv2D,
``2 H_in W_in k^2 C_in C_out`` per Conv2DTranspose, x3 for a training step) is a
cross-check. Fractions of the peak use the analytical training-step count (the work
the peak convolution measures): the profiler counts the step graph before TensorFlow
prunes it, so it includes gradients that are never computed (Pix2Pix: the
discriminator's filter gradients on the generator's tape).

**Profile.** The default U-Net configuration also traces one step with the TensorFlow
profiler (``tf.profiler.experimental``) and sums the time of its ops by kind:
convolution forward, input and filter gradients, batch normalisation (forward and
backward), concatenation, ReLU, pooling, optimiser (Adam updates), other; the input
pipeline (:func:`prostseg.preparation.pipeline.unet_dataset`, augmentation on, two phantom cases)
is timed on its own, per batch, because in training it runs on ``tf.data`` threads
beside the step. Inference (``model(x, training=False)``, a batch of slices) is timed
and compared with the peak the same way.

Configurations: ``oneDNN off`` (``TF_ENABLE_ONEDNN_OPTS=0``: TensorFlow's Eigen kernels,
what TensorFlow uses by default on CPUs without AVX-512 VNNI/BF16 or AMX, such as the
machine of the earlier results), with and without XLA; the defaults (oneDNN on, which
:mod:`prostseg` asks for when it is imported before TensorFlow); XLA; one inter-op
thread; mixed precision (float16). Pix2Pix (256 x 256, batch 1) with the defaults, XLA
and oneDNN off.

Run::

    .venv/bin/python benchmarks/training_throughput.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

import common

NAME = "training_throughput"

#: name -> (model, environment, options); options: jit_compile, mixed_precision, inter_op
#: (threads; 0 is TensorFlow's default), profile (trace a step, time inference and input)
CONFIGURATIONS = {
    "U-Net, oneDNN off": ("unet", {"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "U-Net, oneDNN off, XLA": ("unet", {"TF_ENABLE_ONEDNN_OPTS": "0"}, {"jit_compile": True}),
    "U-Net, defaults": ("unet", {}, {"profile": True}),
    "U-Net, XLA": ("unet", {}, {"jit_compile": True}),
    "U-Net, 1 inter-op thread": ("unet", {}, {"inter_op": 1}),
    "U-Net, mixed precision": ("unet", {}, {"mixed_precision": True}),
    "Pix2Pix, defaults": ("pix2pix", {}, {}),
    "Pix2Pix, XLA": ("pix2pix", {}, {"jit_compile": True}),
    "Pix2Pix, oneDNN off": ("pix2pix", {"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
}
QUICK_CONFIGURATIONS = ("U-Net, defaults", "Pix2Pix, defaults")


# --- FLOPs ----------------------------------------------------------------------------


def conv_forward_flops(model) -> int:
    """Analytical FLOPs of one forward pass (one example) through the model's convolutions."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h_in, w_in, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * h_in * w_in * kh * kw * c_in * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h_out, w_out, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            total += 2 * h_out * w_out * kh * kw * c_in * c_out // layer.groups
    return int(total)


def graph_flops(function, *args) -> int | None:
    """FLOPs of ``function``'s graph for ``args`` counted by TensorFlow's graph profiler."""
    import tensorflow as tf

    try:
        graph = function.get_concrete_function(*args).graph
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
    except Exception as err:  # the v1 profiler is best effort: report, do not fail
        print(f"tf.compat.v1.profiler could not count FLOPs: {err!r}")
        return None


# --- peak and timing ------------------------------------------------------------------


def timed_cpu(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_conv(shape, dtype: str = "float32"):
    """A function that times one large 3x3 convolution (best of two) and returns its
    FLOP per wall second and per CPU second."""
    import tensorflow as tf

    batch, size, _, channels = shape
    x = tf.random.normal(shape, dtype=dtype)
    kernel = tf.random.normal([3, 3, channels, channels], dtype=dtype)
    conv = tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "SAME"))
    conv().numpy()  # warm-up
    flops = 2 * batch * size * size * 9 * channels * channels

    def measure() -> tuple[float, float]:
        wall, cpu = min(timed_cpu(lambda: conv().numpy()) for _ in range(2))
        return flops / wall, flops / cpu

    return measure


def interleaved(run_once, flops: int, peak, repeats: int) -> dict:
    """Time ``run_once`` ``repeats`` times, each between two peak measurements.

    The fraction of peak compares the FLOP/s of the call with the mean of the peaks just
    before and after it: per wall second, and per CPU second of this process (less
    sensitive to other jobs taking the cores, since it counts only the time granted).
    """
    rows = []
    after = peak()
    for _ in range(repeats):
        before = after
        wall, cpu = timed_cpu(run_once)
        after = peak()
        peak_wall, peak_cpu = ((b + a) / 2 for b, a in zip(before, after))
        rows.append({"seconds": wall, "cpu_seconds": cpu, "peak_flop_per_s": peak_wall,
                     "peak_flop_per_cpu_s": peak_cpu, "fraction_of_peak": flops / wall / peak_wall,
                     "fraction_of_peak_cpu": flops / cpu / peak_cpu, "load_1min": os.getloadavg()[0]})
    median = statistics.median
    seconds = median(r["seconds"] for r in rows)
    return {"repeats": rows, "median_s": seconds, "achieved_flop_per_s": flops / seconds,
            **{key: median(r[key] for r in rows) for key in
               ("peak_flop_per_s", "fraction_of_peak", "fraction_of_peak_cpu", "load_1min")}}


# --- the profile ----------------------------------------------------------------------

OP_KINDS = ("convolution forward", "convolution input gradient", "convolution filter gradient",
            "batch norm", "concat", "relu", "max pool", "optimiser", "other")


def op_kind(name: str, op_type: str) -> str:
    """The kind of one traced op, from its graph name and type."""
    low = name.lower()
    gradient = low.startswith("gradient_tape")
    if "Conv2DBackpropFilter" in op_type:
        return "convolution filter gradient"
    if "Conv2D" in op_type:  # Conv2D, Conv2DBackpropInput (transpose conv forward), their oneDNN kernels
        return "convolution input gradient" if gradient else "convolution forward"
    if re.search(r"_bn\d", low):
        return "batch norm"
    for kind, key in (("concat", "concat"), ("relu", "relu"), ("max pool", "pool")):
        if key in low:
            return kind
    if "adam" in low or op_type in ("AssignVariableOp", "AssignSubVariableOp", "AssignAddVariableOp",
                                    "ReadVariableOp", "ResourceApplyAdam"):
        return "optimiser"
    return "other"


def profile_step(step, args) -> dict:
    """Milliseconds of the ops of one traced call of ``step(*args)``, by :func:`op_kind`."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        wall = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), step(*args))
        wall = time.perf_counter() - wall
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(folder, "plugins", "profile", "*", "*.xplane.pb"))
        space = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            space.ParseFromString(file.read())
    kinds = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor threads that run the ops
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                if ":" not in label or "::" in label:  # an op is "name:type"
                    continue
                name, op_type = label.rsplit(":", 1)
                kinds[op_kind(name, op_type)] += event.duration_ps / 1e9
    return {"traced_step_s": wall, "op_ms": {kind: kinds.get(kind, 0.0) for kind in OP_KINDS}}


def input_pipeline_seconds_per_batch(size: int, batch: int, batches: int) -> float:
    """Seconds per batch of :func:`prostseg.preparation.pipeline.unet_dataset` (augmentation on) on
    two phantom cases: ``batches`` drained as fast as possible after one warm-up batch."""
    from prostseg.data.dataset import discover_cases
    from prostseg.data.phantom import write_phantom_dataset
    from prostseg.preparation.pipeline import unet_dataset

    with tempfile.TemporaryDirectory() as folder:
        write_phantom_dataset(folder, n_cases=2, seed=0, shape=(size, size, 8), spacing=(0.6, 0.6, 3.0))
        data = unet_dataset(discover_cases(folder), image_size=size, batch_size=batch, augment=True,
                            shuffle=True, repeat=True)
        batches_iter = iter(data)
        next(batches_iter)
        seconds, _ = common.timed(lambda: [next(batches_iter) for _ in range(batches)])
    return seconds / batches  # drained as fast as possible: the prefetch buffer empties


# --- one configuration, in a child process --------------------------------------------


def child(spec: dict) -> dict:
    import prostseg  # noqa: F401  (first: it asks for oneDNN before TensorFlow starts)
    import numpy as np
    import tensorflow as tf

    if spec["inter_op"]:
        tf.config.threading.set_inter_op_parallelism_threads(spec["inter_op"])
    import keras
    from tensorflow.python.util import _pywrap_util_port

    from prostseg.training import loop as training
    from prostseg.networks.runs import Pix2PixTrainingConfig, UNetTrainingConfig

    keras.utils.set_random_seed(0)
    s = spec["settings"]
    strategy = tf.distribute.get_strategy()
    peak = peak_conv(s["conv"])
    rng = np.random.default_rng(0)
    if spec["model"] == "unet":
        config = UNetTrainingConfig("-", "-", image_size=s["unet_size"], batch_size=s["unet_batch"],
                                    base_filters=s["unet_base"], depth=s["unet_depth"],
                                    jit_compile=spec["jit_compile"], mixed_precision=spec["mixed_precision"])
        model, optimizer = training._unet_model(config, strategy)
        replica_step = training._unet_replica_step(config, model, optimizer, config.batch_size)
        shape = (config.batch_size, config.image_size, config.image_size, 1)
        batch = (tf.constant(rng.random(shape, dtype=np.float32)),
                 tf.constant((rng.random(shape) > 0.95).astype(np.float32)))
        models = [model]
    else:
        config = Pix2PixTrainingConfig("-", "-", image_size=s["p2p_size"], base_filters=s["p2p_base"],
                                       jit_compile=spec["jit_compile"], mixed_precision=spec["mixed_precision"])
        generator, discriminator, *optimizers = training._pix2pix_models(config, strategy)
        replica_step = training._pix2pix_replica_step(config, generator, discriminator, *optimizers,
                                                      config.batch_size)
        shape = (config.batch_size, config.image_size, config.image_size, 3)
        targets = tf.one_hot(rng.integers(0, 5, size=shape[:3]), 5, dtype=tf.float32)
        batch = (tf.constant(rng.normal(size=shape).astype(np.float32)), targets)
        models = [generator, discriminator]
        model = generator
    step = training._distributed_step(strategy, replica_step, config.jit_compile)
    one_image = [tf.TensorSpec([1, *t.shape[1:]], tf.float32) for t in model.inputs]
    forward = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    result = {"onednn": bool(_pywrap_util_port.IsMklEnabled()),
              "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
              "batch_size": config.batch_size, "image_size": config.image_size,
              "params": sum(m.count_params() for m in models),
              "profiler_forward_flops_per_image": graph_flops(forward, *one_image),
              "analytical_forward_flops_per_image": conv_forward_flops(model)}
    if spec["model"] == "unet":
        result["analytical_step_flops"] = 3 * result["analytical_forward_flops_per_image"] * config.batch_size
    else:  # two discriminator passes trained by its tape, plus the generator tape through the fake pair
        result["analytical_step_flops"] = (3 * result["analytical_forward_flops_per_image"]
                                           + 7 * conv_forward_flops(discriminator))
    result["profiler_step_flops"] = graph_flops(tf.function(lambda *b: replica_step(*b)),
                                                *[tf.TensorSpec(t.shape, t.dtype) for t in batch])
    step_flops = result["step_flops"] = result["analytical_step_flops"]
    run_step = lambda: tf.nest.map_structure(lambda t: t.numpy(), step(*batch))  # noqa: E731
    result["first_step_s"] = common.timed(run_step)[0]
    run_step()
    result["step"] = interleaved(run_step, step_flops, peak, s["repeats"])
    result["images_per_s"] = config.batch_size / result["step"]["median_s"]
    if spec["profile"]:
        result["profile"] = profile_step(step, batch)
        result["input_pipeline_s_per_batch"] = input_pipeline_seconds_per_batch(
            config.image_size, config.batch_size, s["pipeline_batches"])
        images = tf.constant(rng.random((s["inference_batch"], *shape[1:]), dtype=np.float32))
        predict = tf.function(lambda x: model(x, training=False))
        predict(images).numpy()
        flops = result["profiler_forward_flops_per_image"] or result["analytical_forward_flops_per_image"]
        result["inference"] = {"batch_size": s["inference_batch"],
                               **interleaved(lambda: predict(images).numpy(), flops * s["inference_batch"],
                                             peak, s["repeats"])}
    return result


@contextlib.contextmanager
def environment(values: dict):
    """``os.environ`` with ``values`` set, for the children started inside."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- the report -----------------------------------------------------------------------


def profile_table(run: dict) -> str:
    op_ms = run["profile"]["op_ms"]
    total = sum(op_ms.values())
    input_ms = run["input_pipeline_s_per_batch"] * 1e3
    rows = [[kind, round(op_ms[kind]), op_ms[kind] / total] for kind in OP_KINDS]
    rows.append(["input pipeline (own threads, timed alone)", round(input_ms), input_ms / total])
    return common.table(["op kind", "ms in one step", "share of op time"], rows)


def main(argv=None) -> int:
    arg_parser = common.parser(__doc__.split("\n")[0])
    arg_parser.add_argument("--unet-batch", type=int, default=2, help="U-Net batch size (default 2)")
    arg_parser.add_argument("--child", help=argparse.SUPPRESS)  # a configuration, as JSON
    args = arg_parser.parse_args(argv)
    if args.child:
        common.child_answer(child(json.loads(args.child)))
        return 0
    info = common.machine_info()
    if args.quick:
        s = dict(unet_size=32, unet_base=4, unet_depth=2, unet_batch=2, p2p_size=32, p2p_base=4,
                 conv=(1, 32, 32, 16), repeats=1, inference_batch=2, pipeline_batches=1)
        names = QUICK_CONFIGURATIONS
    else:
        s = dict(unet_size=384, unet_base=32, unet_depth=4, unet_batch=args.unet_batch, p2p_size=256,
                 p2p_base=64, conv=(2, 192, 192, 128), repeats=3, inference_batch=4, pipeline_batches=30)
        names = tuple(CONFIGURATIONS)
    runs = []
    for name in names:
        model, env, options = CONFIGURATIONS[name]
        spec = {"model": model, "jit_compile": False, "mixed_precision": False, "inter_op": 0, "profile": False,
                **options, "settings": s}
        print(f"measuring {name} (load {os.getloadavg()[0]:.2f})", flush=True)
        with environment(env):
            answer = common.run_child([__file__, "--child", json.dumps(spec)], timeout=3600)
        runs.append({"name": name, "environment": env, **spec, **answer})

    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": s, "runs": runs,
               "flops_method": "tf.compat.v1.profiler float_operation on the forward graph of one image and "
                               "on the replica step graph; analytical conv count as cross-check"}
    rows = [[r["name"], "on" if r["onednn"] else "off", "on" if r["jit_compile"] else "off",
             "float16" if r["mixed_precision"] else "float32", r["inter_op_threads"] or "default", r["batch_size"], r["images_per_s"], r["step_flops"] / 1e9,
             r["step"]["achieved_flop_per_s"] / 1e9, r["step"]["peak_flop_per_s"] / 1e9,
             r["step"]["fraction_of_peak"], r["step"]["fraction_of_peak_cpu"], r["step"]["load_1min"]] for r in runs]
    default = next(r for r in runs if r["name"] == "U-Net, defaults")
    u = default
    flops_line = (f"U-Net {u['image_size']}x{u['image_size']} forward, one image: "
                  f"**{(u['profiler_forward_flops_per_image'] or float('nan')) / 1e9:.1f} GFLOP** counted by "
                  f"tf.compat.v1.profiler on the built model ({u['analytical_forward_flops_per_image'] / 1e9:.1f} "
                  f"analytical, convolutions only); training step of batch {u['batch_size']}: "
                  f"{u['analytical_step_flops'] / 1e9:.0f} GFLOP analytical (3 x forward convolutions; "
                  f"{(u['profiler_step_flops'] or float('nan')) / 1e9:.0f} counted by the profiler on the "
                  "unpruned replica step graph). GFLOP/step below: analytical.")
    inference = u["inference"]
    md = [common.heading("Training throughput", info, args.quick),
          f"Peak: one {'x'.join(map(str, s['conv']))} -> {s['conv'][3]} 3x3 Conv2D, float32, measured before "
          "and after every timed step in the same process (the machine is shared); fraction = step FLOPs / "
          "step time / the mean of those two peaks, median of the repeats; the CPU-time fraction does the "
          "same per CPU second of the process (all its threads), which counts only the time the shared "
          "cores gave it. Each row is a process of its own.\n",
          flops_line + "\n",
          common.table(["configuration", "oneDNN", "XLA", "dtype", "inter-op threads", "batch", "images/s",
                        "GFLOP/step", "achieved GFLOP/s", "peak GFLOP/s", "fraction of peak",
                        "fraction of peak (CPU time)", "load (1 min)"], rows),
          f"\nInference (defaults, batch {inference['batch_size']}, training=False): "
          f"{inference['achieved_flop_per_s'] / 1e9:.3g} GFLOP/s, **{inference['fraction_of_peak']:.0%} of "
          f"peak** ({inference['peak_flop_per_s'] / 1e9:.3g} GFLOP/s; {inference['fraction_of_peak_cpu']:.0%} "
          f"per CPU second), load {inference['load_1min']:.1f}.\n",
          f"Where one training step of the defaults goes (TensorFlow profiler, one traced step of "
          f"{u['profile']['traced_step_s']:.2f} s; op times on the executor threads, which overlap when "
          f"two ops run at once):\n",
          profile_table(u)]
    common.write_results(args.out, NAME, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
