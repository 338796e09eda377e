"""Data loading: prostseg's streaming loader against the first seed's load-everything approach.

Both read the same case folders (T2W + lesion NIfTI) and produce 384 x 384 slices:

* **baseline (seed)** -- what the original U-Net notebook did: every volume read with
  nibabel ``get_fdata()`` (float64), cut into slices, each slice zero padded / cropped,
  min-max scaled *per slice* (dividing by zero on blank slices), and everything stacked
  into one array in RAM. Implemented below in :func:`baseline_load`; it is not part of
  the package and exists only to be measured against.
* **prostseg streaming** -- :func:`prostseg.preparation.pipeline.unet_dataset` (float32 images,
  per-volume normalisation, cases loaded in parallel and streamed), one pass, batch 8,
  with the default slice shuffle buffer (256 slices) and without shuffling.

Each approach runs in a fresh Python process (both import TensorFlow, as a training
notebook does); its throughput is slices produced per second of wall time and its
memory the child's peak resident set size (``ru_maxrss``, read by the parent with
``os.wait4``), also given above the memory the process held after its imports.
Files are read once before timing, so all approaches read from the page cache.

Run::

    .venv/bin/python benchmarks/data_loading.py [--quick] [--out benchmarks/results]

With ``PROSTSEG_REAL_DATA`` set, the three real ProstateX T2W volumes
(``prostatex-t2w-lesion``) are measured too.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common

NAME = "data_loading"
APPROACHES = ("baseline", "streaming", "streaming_noshuffle")
LABELS = {
    "baseline": "baseline: seed (nibabel float64, per-slice min-max, one big array)",
    "streaming": "prostseg.preparation.pipeline.unet_dataset (shuffle buffer 256)",
    "streaming_noshuffle": "prostseg.preparation.pipeline.unet_dataset (shuffle=False)",
}


# --- the baseline: the first seed's approach, for comparison only ------------------


def _seed_pad_or_crop(slice2d: np.ndarray, size: int) -> np.ndarray:
    """Zero pad to at least ``size``, then centre crop to ``size`` (as the seed did)."""
    pad = [(max(size - n, 0) // 2, max(size - n, 0) - max(size - n, 0) // 2) for n in slice2d.shape]
    padded = np.pad(slice2d, pad)
    starts = [(n - size) // 2 for n in padded.shape]
    return padded[starts[0]:starts[0] + size, starts[1]:starts[1] + size]


def baseline_load(case_dirs: list[Path], size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Load every case the seed's way; return (images, masks, slices that became NaN)."""
    import nibabel as nib

    images, masks = [], []
    for folder in case_dirs:
        volume = nib.load(folder / "t2w.nii.gz").get_fdata()  # float64
        mask = nib.load(folder / "lesion.nii.gz").get_fdata()  # float64
        for k in range(volume.shape[2]):
            images.append(_seed_pad_or_crop(volume[:, :, k], size))
            masks.append(_seed_pad_or_crop(mask[:, :, k], size))
    with np.errstate(invalid="ignore", divide="ignore"):  # the seed divided by zero on blank slices
        images = [(s - s.min()) / (s.max() - s.min()) for s in images]
    x = np.expand_dims(np.array(images), -1)
    y = np.expand_dims(np.array(masks), -1)
    nan_slices = int(np.isnan(x).any(axis=(1, 2, 3)).sum())
    return x, y, nan_slices


# --- child process: one measurement --------------------------------------------------


def child(approach: str, data_dir: Path, size: int) -> None:
    import tensorflow as tf  # noqa: F401  (both approaches pay for it, as in a training notebook)

    from prostseg.data.dataset import discover_cases
    from prostseg.preparation.pipeline import unet_dataset

    cases = discover_cases(data_dir, require=("t2w", "lesion"))
    rss_after_imports = common.current_rss_mib()
    started = time.perf_counter()
    extra = {}
    if approach == "baseline":
        x, y, nan_slices = baseline_load([case.folder for case in cases], size)
        slices, dtype, array_mib = x.shape[0], str(x.dtype), (x.nbytes + y.nbytes) / 2**20
        extra = {"nan_slices": nan_slices, "arrays_mib": array_mib}
    else:
        dataset = unet_dataset(cases, image_size=size, batch_size=8, shuffle=approach == "streaming")
        slices, dtype = 0, None
        for image, _mask in dataset:
            slices += int(image.shape[0])
            dtype = image.dtype.name
    seconds = time.perf_counter() - started
    common.child_answer({"seconds": seconds, "slices": slices, "dtype": dtype,
                         "rss_after_imports_mib": rss_after_imports, **extra})


# --- parent -----------------------------------------------------------------------


def _read_all(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.read_bytes()


def measure(data_dir: Path, size: int, repeats: int) -> dict:
    _read_all(data_dir)
    results = {}
    for approach in APPROACHES:
        runs = [common.run_child([__file__, "--child", approach, str(data_dir), str(size)])
                for _ in range(repeats)]
        best = min(runs, key=lambda run: run["seconds"])
        peak = max(run["peak_rss_mib"] for run in runs)
        baseline_rss = min(run["rss_after_imports_mib"] for run in runs)
        results[approach] = {
            **best,
            "label": LABELS[approach],
            "repeats": repeats,
            "seconds_all": [run["seconds"] for run in runs],
            "slices_per_s": best["slices"] / best["seconds"],
            "peak_rss_mib": peak,
            "peak_above_imports_mib": peak - baseline_rss,
        }
    base = results["baseline"]
    for approach in APPROACHES[1:]:
        r = results[approach]
        r["speed_vs_baseline"] = common.ratio(r["slices_per_s"], base["slices_per_s"])
        r["baseline_peak_rss_over_this"] = common.ratio(base["peak_rss_mib"], r["peak_rss_mib"])
        r["baseline_data_memory_over_this"] = common.ratio(base["peak_above_imports_mib"],
                                                           r["peak_above_imports_mib"])
    return results


def main(argv=None) -> int:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    info = common.machine_info()
    if args.quick:
        n_cases, shape, size, repeats = 2, (40, 40, 4), 48, 1
    else:
        n_cases, shape, size, repeats = 16, (320, 320, 19), 384, 2
    datasets = {}
    with tempfile.TemporaryDirectory() as folder:
        from prostseg.data.phantom import write_phantom_dataset

        phantom_dir = Path(folder) / "phantom"
        write_phantom_dataset(phantom_dir, n_cases=n_cases, seed=0, shape=shape, spacing=(0.6, 0.6, 3.0))
        datasets["phantom"] = {"cases": n_cases, "shape": list(shape), "image_size": size,
                               "results": measure(phantom_dir, size, repeats)}
    real = common.real_data_dir()
    if real is not None:
        real_dir = real / "prostatex-t2w-lesion"
        n_real = len([p for p in real_dir.iterdir() if p.is_dir()])
        datasets["prostatex_t2w"] = {"cases": n_real, "shape": [320, 320, 19], "image_size": size,
                                     "results": measure(real_dir, size, repeats)}

    md = [common.heading("Data loading: streaming pipeline vs the seed's load-everything baseline",
                         info, args.quick)]
    for name, entry in datasets.items():
        md.append(f"**{name}**: {entry['cases']} cases of {'x'.join(map(str, entry['shape']))} voxels, "
                  f"slices {entry['image_size']}x{entry['image_size']}, best of {repeats} run(s), "
                  "each in its own process.\n")
        rows = []
        for approach in APPROACHES:
            r = entry["results"][approach]
            rows.append([r["label"], r["dtype"], r["slices"], r["slices_per_s"], r["peak_rss_mib"],
                         r["peak_above_imports_mib"], r.get("speed_vs_baseline", 1.0),
                         r.get("baseline_data_memory_over_this", 1.0)])
        md.append(common.table(
            ["approach", "dtype", "slices", "slices/s", "peak RSS MiB", "peak above imports MiB",
             "speed vs baseline", "baseline data memory / this"], rows))
        nan = entry["results"]["baseline"]["nan_slices"]
        md.append(f"\nBaseline slices that became NaN (per-slice min-max of a blank slice): {nan}.\n")
    common.write_results(args.out, NAME, {"benchmark": NAME, "quick": args.quick, "machine": info,
                                          "datasets": datasets}, "\n".join(md))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main())
