"""Training throughput of the U-Net and Pix2Pix steps, and how close it is to the machine's limit.

Measures, after warm-up steps:

* the default U-Net (:func:`prostseg.models.build_unet`: 384 x 384, base 32 filters,
  depth 4; Adam, binary cross-entropy; ``train_on_batch`` on a random batch held in
  memory), without and with XLA (``jit_compile=True``);
* the Pix2Pix step (256 x 256, batch 1; generator and PatchGAN discriminator of
  :mod:`prostseg.models`, the losses of :mod:`prostseg.losses`, two gradient tapes and
  two Adam optimisers, as in :func:`prostseg.training.train_pix2pix`), without and with
  XLA.

FLOPs per step are derived **analytically** from the convolution layers' shapes
(``2 * H_out * W_out * k * k * C_in * C_out`` per Conv2D forward,
``2 * H_in * W_in * k * k * C_in * C_out`` per Conv2DTranspose; batch norm,
activations, pooling and the optimiser update are ignored) times 3 for forward +
backward. For Pix2Pix a step is taken as ``3 F_gen + 7 F_disc`` (two discriminator
passes trained by the discriminator tape, plus the generator tape's backward pass
through the fake pair). The forward count is cross-checked with TensorFlow's graph
profiler (``tf.compat.v1.profiler``, ``float_operation``) when it works.

The practical limit is TensorFlow's own speed on one large convolution (batch 8,
256 x 256 x 128 -> 128 channels, 3 x 3, float32), timed the same way; achieved FLOP/s
are reported as a fraction of it. Mixed precision (float16) is tried on that
convolution first; the model steps are measured in float16 only where float16 is
faster than float32 (on a CPU without float16 units it is not).

Run::

    .venv/bin/python benchmarks/training_throughput.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import sys

import common

NAME = "training_throughput"


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


def profiler_forward_flops(model) -> int | None:
    """FLOPs of one forward pass counted by TensorFlow's graph profiler, or None."""
    import tensorflow as tf

    try:
        specs = [tf.TensorSpec([1, *tensor.shape[1:]], tf.float32) for tensor in model.inputs]
        function = tf.function(lambda *inputs: model(list(inputs) if len(inputs) > 1 else inputs[0],
                                                     training=False))
        graph = function.get_concrete_function(*specs).graph
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
    except Exception as err:  # the v1 profiler is best effort: report, do not fail
        print(f"tf.compat.v1.profiler could not count FLOPs: {err!r}")
        return None


# --- the practical limit --------------------------------------------------------------


def peak_conv(batch: int, size: int, channels: int, dtype: str, repeats: int) -> dict:
    import tensorflow as tf

    x = tf.random.normal([batch, size, size, channels], dtype=dtype)
    kernel = tf.random.normal([3, 3, channels, channels], dtype=dtype)
    conv = tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "SAME"))
    conv().numpy()  # warm-up
    seconds = common.repeat_timed(lambda: conv().numpy(), repeats)
    flops = 2 * batch * size * size * 9 * channels * channels
    stats = common.summary(seconds)
    return {"shape": [batch, size, size, channels], "dtype": dtype, "flops": flops, **stats,
            "flop_per_s": flops / stats["median_s"]}


# --- steps ----------------------------------------------------------------------------


def unet_step(size: int, batch: int, jit: bool, warmup: int, steps: int, base_filters: int, depth: int) -> dict:
    import keras
    import numpy as np

    from prostseg import losses
    from prostseg.models import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet((size, size, 1), base_filters=base_filters, depth=depth)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.binary_crossentropy, jit_compile=jit)
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 1), dtype=np.float32)
    masks = (rng.random((batch, size, size, 1)) > 0.95).astype(np.float32)
    first = common.repeat_timed(lambda: model.train_on_batch(images, masks), warmup)
    seconds = common.repeat_timed(lambda: model.train_on_batch(images, masks), steps)
    forward = conv_forward_flops(model)
    return {"model": "unet", "image_size": size, "batch_size": batch, "jit_compile": jit,
            "params": model.count_params(), "warmup_s": first, **common.summary(seconds),
            "forward_flops_per_image": forward, "step_flops": 3 * forward * batch,
            "profiler_forward_flops_per_image": profiler_forward_flops(model)}


def pix2pix_step(size: int, jit: bool, warmup: int, steps: int, base_filters: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from prostseg import losses
    from prostseg.models import build_pix2pix_discriminator, build_pix2pix_generator

    keras.utils.set_random_seed(0)
    shape = (size, size, 3)
    generator = build_pix2pix_generator(shape, num_classes=5, base_filters=base_filters)
    discriminator = build_pix2pix_discriminator(shape, num_classes=5, base_filters=base_filters)
    gen_opt, disc_opt = (keras.optimizers.Adam(2e-4, beta_1=0.5) for _ in range(2))
    gen_opt.build(generator.trainable_variables)
    disc_opt.build(discriminator.trainable_variables)

    @tf.function(jit_compile=jit)
    def step(images, targets):  # the step of prostseg.training.train_pix2pix, batch 1, no strategy
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated = generator(images, training=True)
            real = discriminator([images, targets], training=True)
            fake = discriminator([images, generated], training=True)
            gen_total, _, _ = losses.generator_loss(fake, generated, targets, 100.0)
            disc = losses.discriminator_loss(real, fake)
            gen_loss, disc_loss = tf.reduce_mean(gen_total), tf.reduce_mean(disc)
        gen_opt.apply_gradients(zip(gen_tape.gradient(gen_loss, generator.trainable_variables),
                                    generator.trainable_variables))
        disc_opt.apply_gradients(zip(disc_tape.gradient(disc_loss, discriminator.trainable_variables),
                                     discriminator.trainable_variables))
        return gen_loss

    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(1, *shape)).astype(np.float32))
    targets = tf.one_hot(rng.integers(0, 5, size=(1, size, size)), 5, dtype=tf.float32)
    first = common.repeat_timed(lambda: step(images, targets).numpy(), warmup)
    seconds = common.repeat_timed(lambda: step(images, targets).numpy(), steps)
    gen_flops, disc_flops = conv_forward_flops(generator), conv_forward_flops(discriminator)
    return {"model": "pix2pix", "image_size": size, "batch_size": 1, "jit_compile": jit,
            "params": generator.count_params() + discriminator.count_params(), "warmup_s": first,
            **common.summary(seconds), "generator_forward_flops": gen_flops,
            "discriminator_forward_flops": disc_flops, "step_flops": 3 * gen_flops + 7 * disc_flops,
            "profiler_forward_flops_per_image": profiler_forward_flops(generator)}


def mixed_precision_note(runs: list[dict], peak: dict, peak16: dict, float16_speed: str) -> str:
    """One sentence on mixed precision, from the float16 U-Net step when it was measured."""
    mixed = next((run for run in runs if run["mixed_precision"]), None)
    if mixed is None:
        return (f"mixed precision skipped: this machine {float16_speed}, against "
                f"{peak['flop_per_s'] / 1e9:.3g} GFLOP/s in float32 (no float16 arithmetic units on this CPU; "
                "mixed precision pays off on GPUs with tensor cores)")
    (reference,) = [run for run in runs if run["model"] == "unet" and not run["jit_compile"]
                    and not run["mixed_precision"]]
    speed = mixed["images_per_s"] / reference["images_per_s"]
    verdict = "faster" if speed > 1 else "slower: not worth it on this machine"
    return (f"mixed precision (mixed_float16) U-Net step measured, because float16 convolution alone ran at "
            f"{peak16['flop_per_s'] / 1e9:.3g} against {peak['flop_per_s'] / 1e9:.3g} GFLOP/s in float32: "
            f"{mixed['images_per_s']:.3g} against {reference['images_per_s']:.3g} images/s in float32, "
            f"{speed:.2g}x, {verdict}")


def main(argv=None) -> int:
    arg_parser = common.parser(__doc__.split("\n")[0])
    arg_parser.add_argument("--unet-batch", type=int, default=None,
                            help="U-Net batch size (default 2 on CPU to keep the run short, 8 with a GPU)")
    args = arg_parser.parse_args(argv)
    info = common.machine_info()
    gpu = bool(info["gpus"])
    if args.quick:
        s = dict(unet_size=32, unet_base=4, unet_depth=2, unet_batch=2, p2p_size=32, p2p_base=4,
                 warmup=1, steps=2, conv=(1, 32, 16), conv_repeats=2, jit=(False,))
    else:
        s = dict(unet_size=384, unet_base=32, unet_depth=4, unet_batch=8 if gpu else 2, p2p_size=256,
                 p2p_base=64, warmup=1, steps=3 if gpu else 2, conv=(8, 256, 128), conv_repeats=3,
                 jit=(False, True))
    if args.unet_batch:
        s["unet_batch"] = args.unet_batch

    peak = peak_conv(*s["conv"], "float32", s["conv_repeats"])
    try:
        peak16 = peak_conv(*s["conv"], "float16", s["conv_repeats"])
    except Exception as err:  # no float16 convolution kernel on this device
        peak16 = {"error": repr(err), "flop_per_s": None}
    mixed_faster = peak16["flop_per_s"] is not None and peak16["flop_per_s"] > peak["flop_per_s"]
    float16_speed = ("has no float16 convolution" if peak16["flop_per_s"] is None else
                     f"runs float16 convolution at {peak16['flop_per_s'] / 1e9:.3g} GFLOP/s")

    runs = []
    for jit in s["jit"]:  # XLA compilation takes a minute on a CPU: not in --quick
        runs.append(unet_step(s["unet_size"], s["unet_batch"], jit, s["warmup"], s["steps"], s["unet_base"],
                              s["unet_depth"]))
        runs.append(pix2pix_step(s["p2p_size"], jit, s["warmup"], s["steps"], s["p2p_base"]))
    if mixed_faster:
        import keras

        keras.config.set_dtype_policy("mixed_float16")
        try:
            mixed = unet_step(s["unet_size"], s["unet_batch"], False, s["warmup"], s["steps"], s["unet_base"],
                              s["unet_depth"])
            mixed["mixed_precision"] = True
            runs.append(mixed)
        finally:
            keras.config.set_dtype_policy("float32")
    for run in runs:
        run.setdefault("mixed_precision", False)
        run["images_per_s"] = run["batch_size"] / run["median_s"]
        run["achieved_flop_per_s"] = run["step_flops"] / run["median_s"]
        run["fraction_of_conv_peak"] = run["achieved_flop_per_s"] / peak["flop_per_s"]

    mixed_note = mixed_precision_note(runs, peak, peak16, float16_speed)
    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": s,
               "flops_method": "analytical from Conv2D/Conv2DTranspose shapes, x3 for forward+backward; "
                               "tf.compat.v1.profiler forward count as cross-check",
               "conv_peak_float32": peak, "conv_peak_float16": peak16, "mixed_precision_note": mixed_note,
               "runs": runs}
    rows = [[r["model"], r["image_size"], r["batch_size"], "on" if r["jit_compile"] else "off",
             "float16" if r["mixed_precision"] else "float32", r["images_per_s"],
             r["step_flops"] / 1e9, r["achieved_flop_per_s"] / 1e9, r["fraction_of_conv_peak"],
             (r.get("profiler_forward_flops_per_image") or float("nan")) / 1e9] for r in runs]
    md = [common.heading("Training throughput", info, args.quick),
          f"Practical limit: one {'x'.join(map(str, s['conv']))} -> {s['conv'][2]} 3x3 Conv2D, float32: "
          f"**{peak['flop_per_s'] / 1e9:.3g} GFLOP/s** (median of {s['conv_repeats']}).\n",
          common.table(["model", "size", "batch", "XLA", "dtype", "images/s", "GFLOP/step (analytical)",
                        "achieved GFLOP/s", "fraction of conv peak", "profiler fwd GFLOP/image"], rows),
          f"\n{mixed_note}.\n",
          "GFLOP/step: analytical conv FLOPs x3 (U-Net: per batch; Pix2Pix: 3 F_gen + 7 F_disc). "
          "Profiler column: forward FLOPs of one image counted by tf.compat.v1.profiler (U-Net; "
          "Pix2Pix generator only), a cross-check of the analytical forward count.\n"]
    common.write_results(args.out, NAME, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
