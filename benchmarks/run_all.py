"""Run every benchmark, then write ``summary.md`` from their JSON results.

Run::

    .venv/bin/python benchmarks/run_all.py [--quick] [--out benchmarks/results] [--summary-only]

Each benchmark runs in its own process, one after the other (they would disturb each
other's timings in parallel). ``real_data_report.py`` runs only when
``PROSTSEG_REAL_DATA`` is set. ``--summary-only`` rebuilds ``summary.md`` from the JSON
files already in ``--out``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import common

BENCHMARKS = ("data_loading", "input_pipeline", "slice_cache", "training_throughput", "inference_registration",
              "dataset_registration", "book_execution", "book_models", "phantom_realism",
              "real_data_report")


def _load(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _data_loading(r: dict) -> list[str]:
    rows = []
    for name, entry in r["datasets"].items():
        res = entry["results"]
        for approach in ("streaming", "streaming_noshuffle"):
            rows.append([name, res[approach]["label"], res["baseline"]["slices_per_s"], res[approach]["slices_per_s"],
                         res[approach]["speed_vs_baseline"], res[approach]["baseline_peak_rss_over_this"],
                         res[approach]["baseline_data_memory_over_this"]])
    return [common.table(["data", "streaming", "baseline slices/s", "streaming slices/s", "speed x",
                          "peak RSS: baseline / streaming", "data memory: baseline / streaming"], rows)]


def _input_pipeline(r: dict) -> list[str]:
    return [common.table(["pipeline slices/s (batch 8, augment)", "U-Net train images/s", "headroom",
                          "fit on pipeline / fit on memory (time)"],
                         [[r["pipeline"]["slices_per_s"], r["train_step"]["images_per_s"], r["pipeline_headroom"],
                           r["end_to_end"]["pipeline_over_memory_time"]]]), "", f"Verdict: {r['verdict']}."]


def _slice_cache(r: dict) -> list[str]:
    rows = []
    for n, entry in r["results"].items():
        for approach in ("seed", "stream", "memory_cache", "disk_cache"):
            x = entry[approach]
            rss = round(x["peak_rss_mib"]) if "peak_rss_mib" in x else \
                f"~{x['projected_peak_rss_mib']:,.0f} (projected)"
            rows.append([n, approach.replace("_", " "), x.get("epoch1_slices_per_s", "not run"),
                         x.get("later_slices_per_s", "not run"), rss])
    ratios = ", ".join(f"{n} cases {v['disk_over_stream_later']:.1f}x" for n, v in r["summary"].items())
    gpu = r["gpu_estimate"]
    return [common.table(["cases", "approach", "epoch 1 slices/s", "epochs 2+ slices/s", "peak RSS MiB"], rows), "",
            f"Disk cache / stream from epoch 2: {ratios} (target >= 5x). One A100 trains about "
            f"{gpu['our_slices_per_s_mixed']:.0f} slices/s of the default U-Net (published UNet_Medical figure "
            "scaled by FLOPs; see slice_cache.md)."]


def _training(r: dict) -> list[str]:
    rows = [[x["name"], x["batch_size"], x["images_per_s"], x["step"]["achieved_flop_per_s"] / 1e9,
             x["step"]["peak_flop_per_s"] / 1e9, x["step"]["fraction_of_peak"], x["step"]["fraction_of_peak_cpu"]]
            for x in r["runs"]]
    return [common.table(["configuration", "batch", "images/s", "GFLOP/s", "peak GFLOP/s", "of peak",
                          "of peak (CPU time)"], rows)]


def _inference(r: dict) -> list[str]:
    i = r["inference"]
    rows = [[f"predict_volume {'x'.join(map(str, i['volume_shape']))}", i["first_call_s"], i["warm"]["median_s"]]]
    rows += [[f"register_case {x['case']}", x["first_call_s"], x["warm"]["median_s"]] for x in r["registration"]]
    return [common.table(["operation", "first call s", "warm s"], rows)]


def _dataset_registration(r: dict) -> list[str]:
    runs = [f"{x['workers']} worker(s) x {x['threads']} thread(s) {x['wall_s']:.3g} s" for x in r["runs"]]
    s, p = r["speedup"], r["projection"]
    return [f"{r['settings']['cases']} phantom cases: {'; '.join(runs)}. Speed-up of the parallel workers "
            f"{s['end_to_end_vs_serial']:.2f}x end to end ({s['steady_vs_serial']:.2f}x steady state) over "
            f"1 worker x 1 thread. Projected {p['studies']} studies on {p['cores']} cores: "
            f"{p['wall_s'] / 60:.0f} min."]


def _book(r: dict) -> list[str]:
    return [f"{len(r['notebooks'])} of {len(r['chapters_listed'])} chapter notebooks executed, total "
            f"{r['total_s']:.3g} s; kernel start {r['kernel_start_s']:.3g} s."]


def _book_models(r: dict) -> list[str]:
    s = r["summary"]
    zones = ", ".join(f"{zone} {s[f'pix2pix_{zone}']['mean']:.2f} (min {s[f'pix2pix_{zone}']['min']:.2f})"
                      for zone in ("PZ", "TZ", "CZ", "AFS"))
    return [f"Seeds {r['seeds']}, held-out patients (validation, test, {r['new_patients']} new): chapter 7 U-Net "
            f"gland Dice {s['unet_dice']['mean']:.3f} (min {s['unet_dice']['min']:.3f}) with "
            f"{s['unet_false_islands']['mean']:.2g} false islands per patient; after the largest-component "
            f"clean-up {s['unet_dice_cleaned']['mean']:.3f} (min {s['unet_dice_cleaned']['min']:.3f}) with "
            f"{s['unet_false_islands_cleaned']['mean']:.2g}. Chapter 10 Pix2Pix zone Dice: {zones}. Training "
            f"{s['unet_train_s']['mean']:.3g} s (U-Net) and {s['pix2pix_train_s']['mean']:.3g} s (Pix2Pix)."]


def _phantom(r: dict) -> list[str]:
    s = r["summary"]
    gland = s["gland_ml"]
    lines = [f"{r['n_cases']} phantom patients ({r['generator']}): gland {gland['mean']:.3g} +- {gland['sd']:.3g} ml "
             f"(CV {gland['cv']:.2f}, {gland['min']:.3g}-{gland['max']:.3g} ml), {s['distinct_grids']} distinct T2W "
             f"grids, endorectal coil in {s['coil_fraction']:.0%}; median {r['seconds_per_case']['median_s']:.3g} s "
             "per case."]
    if "distances" in s:
        def recorded(*path: str) -> str:
            """The same measure of the earlier generator versions, newest first."""
            found = []
            for version, reference in reversed(r["references"].items()):
                for key in path:
                    reference = reference.get(key, {})
                if reference:
                    found.append(f"{version} {reference['mean']:.3f}")
            return f" ({', '.join(found)})" if found else ""

        histograms = ", ".join(f"{region} {s['distances'][region]['wasserstein']['mean']:.3f}"
                               f"{recorded(region, 'wasserstein')}" for region in ("slice", "gland", "surroundings"))
        rays = ", ".join(f"{name} {value['mean']:.3f}{recorded('profiles', name)}"
                         for name, value in s["profile_distances"].items())
        lines.append(f"Normalised T2W against ProstateX-0000: histograms' Wasserstein distance (lower is closer) "
                     f"{histograms}; profiles beyond the gland's edge, mean abs. difference {rays}.")
    return [" ".join(lines)]


def _real(r: dict) -> list[str]:
    reg = r["registration"]
    scores = "; ".join(f"{row['model']} {row['whole gland']:.2f}" for row in r["real_case"]["scores"])
    agreement = ", ".join(f"{row['whole gland']:.2f}" for row in r["real_case"]["agreement"])
    return [f"Gland Dice on ProstateX-0000 against an AI model's mask: {scores} (two other AI models: "
            f"{agreement})."
            f" Leave-one-out lesion U-Net on 3 ProstateX patients (short CPU run, not a result): mean Dice "
            f"{r['mean_dice']:.3g}, mean IoU {r['mean_iou']:.3g}. Registration ProstateX-0000: MI ADC "
            f"{reg['adc']['mi_before']} -> {reg['adc']['mi_after']}, DWI {reg['dwi']['mi_before']} -> "
            f"{reg['dwi']['mi_after']}, {reg['seconds_reported']:.3g} s. Details: real_data_report.md."]


SECTIONS = {"data_loading": ("Data loading", _data_loading), "input_pipeline": ("Input pipeline", _input_pipeline),
            "slice_cache": ("Training input at scale (disk cache)", _slice_cache),
            "training_throughput": ("Training throughput", _training),
            "inference_registration": ("Inference and registration", _inference),
            "dataset_registration": ("Dataset registration", _dataset_registration),
            "book_execution": ("Book execution", _book), "book_models": ("Book models", _book_models),
            "phantom_realism": ("Phantom realism", _phantom),
            "real_data_report": ("Real data", _real)}


def write_summary(out: Path) -> Path:
    lines = ["# Benchmark summary", "",
             "Written by `benchmarks/run_all.py` from the JSON files beside it; each section names its "
             "machine and whether it was a `--quick` run (numbers of quick runs mean nothing).", ""]
    for name in BENCHMARKS:
        result = _load(out, name)
        title, render = SECTIONS[name]
        lines.append(f"## {title}")
        lines.append("")
        if result is None:
            lines += ["Not run.", ""]
            continue
        lines.append(common.machine_line(result["machine"]) + (" -- QUICK RUN" if result["quick"] else ""))
        lines.append("")
        lines += render(result)
        lines.append("")
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    arg_parser = common.parser(__doc__.split("\n")[0])
    arg_parser.add_argument("--summary-only", action="store_true", help="only rebuild summary.md")
    args = arg_parser.parse_args(argv)
    failed = []
    if not args.summary_only:
        for name in BENCHMARKS:
            if name == "real_data_report" and common.real_data_dir() is None:
                print(f"skipping {name}: {common.REAL_DATA_ENV} is not set")
                continue
            command = [sys.executable, str(Path(__file__).with_name(f"{name}.py")), "--out", str(args.out)]
            command += ["--quick"] if args.quick else []
            print(f"=== {name}", flush=True)
            if subprocess.run(command, cwd=common.REPO_ROOT).returncode != 0:
                failed.append(name)
    print(f"wrote {write_summary(args.out)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
