"""Training input at scale: the seed's arrays, the stream, the memory cache and the disk cache.

U-Net training input (slices 384 x 384, batch 8, random quarter turns and flips, shuffled)
from 24 and from 240 phantom cases (320 x 320 x 19 T2W volumes, 0.6 mm), four ways:

1. **seed** -- what the first notebooks did: every volume read into one float64 NumPy
   array before training (``data_loading.baseline_load``), batches drawn from it.
2. **stream** -- :func:`prostseg.preparation.pipeline.unet_dataset`: every epoch reads and prepares
   the files again.
3. **memory cache** -- the same with ``cache=True``: prepared volumes kept in memory.
4. **disk cache** -- ``prostseg prepare`` once (timed apart), then ``slice_cache=``:
   prepared float16 slices streamed from TFRecord files with a parallel interleave.

Each approach runs in a fresh process (``common.run_child``) for 3 epochs: slices/s of
epoch 1 and of epochs 2-3, and the process's peak resident memory (``ru_maxrss``).
An approach whose data would not fit in ``--memory-budget-gib`` is not run at 240 cases
(the machine is shared); its memory is then projected from the 24-case run and marked so.
Also: slices/s per core, beside what one GPU consumes, estimated from NVIDIA's published
A100 U-Net training throughput scaled by the FLOPs of the two models.

The phantom cases are generated once (in parallel) into ``--phantoms`` and reused.

Run::

    nice -n 10 .venv/bin/python benchmarks/slice_cache.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "slice_cache"
APPROACHES = ("seed", "stream", "memory_cache", "disk_cache")
LABELS = {"seed": "seed: all slices in one float64 NumPy array", "stream": "stream (reads files every epoch)",
          "memory_cache": "memory cache (cache=True)", "disk_cache": "disk cache (prostseg prepare)"}
#: NVIDIA DeepLearningExamples, TensorFlow2/Segmentation/UNet_Medical/README.md, "Training
#: performance: NVIDIA DGX A100 (8x A100 40GB)", 1 GPU, batch 8 per GPU (June 2020 release):
#: the original U-Net (Ronneberger et al. 2015) on 572 x 572 x 1 inputs.
A100_UNET = {"source": "NVIDIA DeepLearningExamples TensorFlow2/Segmentation/UNet_Medical README, "
                       "training performance, 1x A100 40GB, batch 8",
             "input": 572, "images_per_s_mixed": 118.98, "images_per_s_tf32": 46.26}


# --- phantoms, generated once ----------------------------------------------------------


def _write_part(args) -> None:
    from prostseg.data.phantom import write_phantom_dataset

    folder, n_cases, seed, shape = args
    write_phantom_dataset(folder, n_cases=n_cases, seed=seed, shape=shape, spacing=(0.6, 0.6, 3.0))


def phantoms(root: Path, sizes: tuple[int, ...], shape: tuple[int, int, int]) -> dict[int, Path]:
    """For each n of ``sizes``, a folder of n phantom cases: links into parts written once,
    in parallel (one seed per part), the smaller sets drawing from every part in turn."""
    import multiprocessing

    workers = max(1, min(len(os.sched_getaffinity(0)), 4))
    per_part = -(-max(sizes) // workers)
    key = f"{'x'.join(map(str, shape))}-{per_part}x{workers}"
    parts = [root / f"part-{key}-{seed}" for seed in range(workers)]
    missing = [(part, per_part, seed, shape) for seed, part in enumerate(parts)
               if not (part / "done").exists()]
    if missing:
        with multiprocessing.get_context("spawn").Pool(len(missing)) as pool:
            pool.map(_write_part, missing)
        for part, *_ in missing:
            (part / "done").write_text("")
    cases = [case for part in parts for case in part.iterdir() if case.is_dir()]
    cases.sort(key=lambda c: (int(c.name.split("-")[-1]), c.parent.name))
    folders = {}
    for n in sizes:
        folders[n] = root / f"cases-{key}-{n}"
        if not folders[n].exists():
            tmp = Path(tempfile.mkdtemp(dir=root))
            for case in cases[:n]:
                (tmp / f"{case.parent.name[-1]}-{case.name}").symlink_to(case)
            tmp.rename(folders[n])
    return folders


# --- child process: one approach ----------------------------------------------------------


def _seed_epochs(cases, size: int, batch: int, epochs: int) -> list[dict]:
    """The seed's way: load everything (float64), then batches from the array, augmented."""
    import numpy as np
    import tensorflow as tf

    import data_loading
    from prostseg.preparation.pipeline import augment_pair

    rng = np.random.default_rng(0)
    timings = []
    started = time.perf_counter()
    images, masks, _ = data_loading.baseline_load([case.folder for case in cases], size)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        slices = 0
        for first in range(0, len(order), batch):
            index = np.sort(order[first:first + batch])
            image, mask = augment_pair(tf.constant(images[index], tf.float32),
                                       tf.constant(masks[index], tf.float32),
                                       seed=tf.constant([epoch, first], tf.int64))
            slices += int(image.shape[0])
        now = time.perf_counter()
        timings.append({"slices": slices, "seconds": now - started})
        started = now
    return timings


def _pipeline_epochs(cases, size: int, batch: int, epochs: int, approach: str, cache_dir) -> list[dict]:
    from prostseg.preparation.pipeline import unet_dataset

    options = {"cache": True} if approach == "memory_cache" else \
        {"slice_cache": cache_dir} if approach == "disk_cache" else {}
    dataset = unet_dataset(cases, image_size=size, batch_size=batch, augment=True, shuffle=True, seed=0,
                           **options)
    timings = []
    for _ in range(epochs):
        started, slices = time.perf_counter(), 0
        for image, _mask in dataset:
            slices += int(image.shape[0])
        timings.append({"slices": slices, "seconds": time.perf_counter() - started})
    return timings


def child(approach: str, data_dir: Path, cache_dir: Path, size: int, epochs: int) -> None:
    import tensorflow as tf  # noqa: F401  (every approach pays for it, as in training)

    from prostseg.data.dataset import discover_cases

    cases = discover_cases(data_dir, require=("t2w", "lesion"), check_grids=False)
    if approach == "seed":
        timings = _seed_epochs(cases, size, 8, epochs)
    else:
        timings = _pipeline_epochs(cases, size, 8, epochs, approach, cache_dir)
    common.child_answer({"epochs": timings, "rss_end_mib": common.current_rss_mib()})


# --- parent ---------------------------------------------------------------------------------


def _rates(timings: list[dict]) -> dict:
    later = timings[1:]
    return {"epoch1_slices_per_s": timings[0]["slices"] / timings[0]["seconds"],
            "later_slices_per_s": sum(t["slices"] for t in later) / sum(t["seconds"] for t in later),
            "slices_per_epoch": timings[0]["slices"]}


def _data_bytes(approach: str, slices: int, size: int) -> int:
    """Bytes the approach holds for the whole data set (images and masks)."""
    per_slice = {"seed": 2 * 8, "memory_cache": 2 * 4}.get(approach, 0) * size * size
    return slices * per_slice


def original_unet(size: int = 572):
    """The original U-Net (Ronneberger et al. 2015): valid 3x3 convolutions, 64 filters
    doubling over 4 poolings, 2x2 up-convolutions, cropped skips; 2 output classes."""
    import keras

    inputs = keras.Input((size, size, 1))
    x, skips, filters = inputs, [], 64
    for _ in range(4):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
        filters *= 2
    for _ in range(2):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
    for skip in reversed(skips):
        filters //= 2
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2)(x)
        crop = (skip.shape[1] - x.shape[1]) // 2
        x = keras.layers.Concatenate()([keras.layers.Cropping2D(crop)(skip), x])
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def gpu_estimate(size: int) -> dict:
    """Slices/s one A100 trains of our default U-Net, scaled from the published figure by FLOPs."""
    import training_throughput
    from prostseg.networks.models import build_unet

    theirs = training_throughput.conv_forward_flops(original_unet(A100_UNET["input"]))
    ours = training_throughput.conv_forward_flops(build_unet((size, size, 1), base_filters=32, depth=4))
    scale = theirs / ours
    return {**A100_UNET, "original_unet_forward_flops": theirs, "our_unet_forward_flops": ours,
            "flop_ratio": scale, "our_slices_per_s_mixed": A100_UNET["images_per_s_mixed"] * scale,
            "our_slices_per_s_tf32": A100_UNET["images_per_s_tf32"] * scale}


def main(argv=None) -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--phantoms", type=Path, default=Path(tempfile.gettempdir()) / "prostseg-bench-phantoms",
                        help="folder of the generated phantom cases, reused between runs")
    parser.add_argument("--memory-budget-gib", type=float, default=3.0,
                        help="skip an approach whose data would need more than this (shared machine)")
    parser.add_argument("--child", nargs=5, metavar=("APPROACH", "DATA", "CACHE", "SIZE", "EPOCHS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the newest section of the .md from the .json (no measurement)")
    args = parser.parse_args(argv)
    if args.render_only:
        render_only(args.out)
        return 0
    if args.child:
        approach, data_dir, cache_dir, size, epochs = args.child
        child(approach, Path(data_dir), Path(cache_dir), int(size), int(epochs))
        return 0

    info = common.machine_info()
    if args.quick:
        s = dict(sizes=(4, 8), shape=(40, 40, 4), size=32, epochs=(3, 2))
    else:  # fewer epochs for the large set: an uncached epoch of 240 cases takes minutes here
        s = dict(sizes=(24, 240), shape=(320, 320, 19), size=384, epochs=(3, 2))
    from prostseg.preparation.slice_cache import SliceSpec, prepare_dataset

    args.phantoms.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    folders = phantoms(args.phantoms, s["sizes"], s["shape"])
    phantom_s = time.perf_counter() - started
    cache_dir = args.phantoms / f"prepared-{'x'.join(map(str, s['shape']))}"
    results, loads = {}, []
    for (n, data_dir), epochs in zip(folders.items(), s["epochs"]):
        wall, prepared = common.timed(lambda: prepare_dataset(
            data_dir, SliceSpec("unet", s["size"]), cache_dir=cache_dir, progress=False,
            workers=1 if args.quick else None))
        prepared.raise_if_failed()
        entry = {"prepare": {"counts": prepared.counts(), "wall_s": wall,
                             "case_seconds": sum(r["seconds"] for r in prepared.rows if r["status"] == "prepared"),
                             "cache_mib": sum(p.stat().st_size for p in prepared.folder.glob("*.tfrecord")) / 2**20}}
        slices = sum(int(r["slices"]) for r in prepared.rows)
        for approach in APPROACHES:
            loads.append(os.getloadavg()[0])
            need = _data_bytes(approach, slices, s["size"]) / 2**30
            if need > args.memory_budget_gib:
                entry[approach] = {"skipped": f"needs {need:.1f} GiB of arrays (> {args.memory_budget_gib} GiB "
                                              "budget on this shared machine)", "data_gib": need}
                continue
            answer = common.run_child([__file__, "--child", approach, str(data_dir), str(cache_dir),
                                       str(s["size"]), str(epochs)])
            entry[approach] = {**_rates(answer["epochs"]), "peak_rss_mib": answer["peak_rss_mib"],
                               "epochs": answer["epochs"], "data_gib": need}
            print(n, approach, {k: v for k, v in entry[approach].items() if k != "epochs"}, flush=True)
        results[n] = entry
    small, large = s["sizes"]
    for approach in APPROACHES:  # project the memory of a skipped run from the small one
        if "skipped" in results[large][approach]:
            base = results[small][approach]
            results[large][approach]["projected_peak_rss_mib"] = base["peak_rss_mib"] + \
                (results[large][approach]["data_gib"] - base["data_gib"]) * 1024
    gpu = gpu_estimate(s["size"])
    summary = {n: {"disk_over_stream_later": results[n]["disk_cache"]["later_slices_per_s"]
                   / results[n]["stream"]["later_slices_per_s"]} for n in s["sizes"]}
    rss_flat = {a: results[large][a]["peak_rss_mib"] / results[small][a]["peak_rss_mib"]
                for a in ("stream", "disk_cache")}
    out = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": s, "results": results,
           "gpu_estimate": gpu, "summary": summary, "rss_ratio_large_over_small": rss_flat,
           "phantom_generation_s": phantom_s, "load_average_during": [min(loads), max(loads)]}
    common.write_results(args.out, NAME, out, markdown(out))
    return 0


def render_only(out_dir: Path) -> None:
    """Rewrite the newest section of ``slice_cache.md`` from ``slice_cache.json``."""
    results = json.loads((out_dir / f"{NAME}.json").read_text(encoding="utf-8"))
    path = out_dir / f"{NAME}.md"
    text = path.read_text(encoding="utf-8")
    earlier = text[:text.rfind("\n## ") + 1]  # "" when the newest section is the only one
    path.write_text(earlier + markdown(results).rstrip() + "\n\n")
    print(path.read_text(encoding="utf-8"))


def markdown(r: dict) -> str:
    s, info, gpu = r["settings"], r["machine"], r["gpu_estimate"]
    cores = info["usable_cores"]
    rows = []
    for n, entry in r["results"].items():
        for approach in APPROACHES:
            x = entry[approach]
            if "skipped" in x:
                rows.append([n, LABELS[approach], "not run", "not run", "not run",
                             f"~{x['projected_peak_rss_mib']:,.0f} (projected: {x['skipped']})"])
            else:
                rows.append([n, LABELS[approach], x["epoch1_slices_per_s"], x["later_slices_per_s"],
                             x["later_slices_per_s"] / cores, round(x["peak_rss_mib"])])
    prep = [f"{n} cases: {e['prepare']['counts']}, {e['prepare']['wall_s']:.0f} s wall "
            f"({e['prepare']['case_seconds']:.0f} s of case work), "
            f"{e['prepare']['cache_mib']:,.0f} MiB on disk" for n, e in r["results"].items()]
    small, large = s["sizes"]
    ratios = "; ".join(f"{n} cases {v['disk_over_stream_later']:.1f}x" for n, v in r["summary"].items())
    flat = "; ".join(f"{a} {v:.2f}x" for a, v in r["rss_ratio_large_over_small"].items())
    best = max(e["disk_cache"]["later_slices_per_s"] for e in r["results"].values())
    record_kib = s["size"] ** 2 * (2 + 1) / 1024  # float16 image + uint8 mask
    buffer_kib = s["size"] ** 2 * (4 + 4) / 1024  # float32 image + float32 mask
    lines = [
        common.heading("Training input at scale: seed arrays, stream, memory cache, disk cache", info, r["quick"]),
        f"U-Net input {s['size']}x{s['size']}, batch 8, augment (quarter turns, flips), shuffled; phantom "
        f"T2W volumes {'x'.join(map(str, s['shape']))}; each approach in a "
        f"fresh process ({' and '.join(f'{e} epochs for {n} cases' for n, e in zip(s['sizes'], s['epochs']))}). Load average (1 min) before the runs: {r['load_average_during'][0]:.1f} to "
        f"{r['load_average_during'][1]:.1f} on {cores} cores (the machine is shared: other jobs ran "
        "alongside, so absolute rates are low and noisy; the ratios are what to read).\n",
        common.table(["cases", "approach", "epoch 1 slices/s", "epochs 2+ slices/s", "epochs 2+ slices/s per core",
                      "peak RSS MiB"], rows),
        "",
        "`prostseg prepare` (once, before the disk-cache runs): " + "; ".join(prep) + ".",
        "",
        f"**Disk cache / stream, epochs 2+:** {ratios} (target >= 5x). "
        f"**Peak RSS {large} / {small} cases:** {flat} (target: flat, 1.0x).",
        "",
        f"**What one GPU consumes.** {gpu['source']}: {gpu['images_per_s_mixed']} images/s in mixed "
        f"precision ({gpu['images_per_s_tf32']} in TF32) for the original U-Net on {gpu['input']}x{gpu['input']} "
        f"inputs, {gpu['original_unet_forward_flops'] / 1e9:.1f} GFLOP per forward pass (counted from the "
        f"built model's convolutions, `training_throughput.conv_forward_flops`). Our default U-Net "
        f"({s['size']}x{s['size']}, 32 filters, depth 4) needs {gpu['our_unet_forward_flops'] / 1e9:.1f} GFLOP, "
        f"so one A100 would train about {gpu['images_per_s_mixed']} x {gpu['original_unet_forward_flops'] / 1e9:.1f}"
        f" / {gpu['our_unet_forward_flops'] / 1e9:.1f} = **{gpu['our_slices_per_s_mixed']:.0f} slices/s** "
        f"(TF32: {gpu['our_slices_per_s_tf32']:.0f}), assuming throughput scales with FLOPs. "
        f"At the disk cache's best {best:.0f} slices/s here ({best / cores:.0f} per core), feeding one A100 "
        f"takes about {gpu['our_slices_per_s_mixed'] / (best / cores):.0f} cores of this machine's kind.",
        "",
        f"Notes. The disk cache's files had just been written, so they were read from the operating "
        f"system's page cache; from a disk, {best:.0f} slices/s of {record_kib:.0f} KiB each need "
        f"{best * record_kib / 1024:.0f} MiB/s (a local SSD gives that; a network file system may not). The "
        f"peak RSS of the stream and the disk cache holds TensorFlow itself and the 256-slice shuffle buffer "
        f"(256 x {buffer_kib:.0f} KiB = {256 * buffer_kib / 1024:.0f} MiB at {s['size']}x{s['size']}); it does "
        "not grow with the cases. The seed's arrays and the memory cache grow with every case. Rates are single "
        "runs on a shared machine: differences under about 30 % between runs mean nothing.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
