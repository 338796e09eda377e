"""Registration of a whole dataset: speed-up of parallel workers, projection to 1,500 studies.

:func:`prostseg.preparation.registration.register_dataset` registers 8 phantom cases of ProstateX
size (T2W 384 x 384 x 19 at 0.5 x 0.5 x 3 mm) three ways, each in a fresh process on a
fresh copy of the cases, so that each pays the loading of ITK/elastix once per worker as
a real run does:

* 1 worker, 1 thread: strictly one case after the other (the serial baseline);
* 1 worker, elastix/ITK threads = all usable cores (``--workers 1``);
* N workers (the usable cores), 1 thread each (the default of ``register-dataset``).

It prints the wall time of each and the speed-up of the N workers over both 1-worker
runs, end to end (start-up included) and in the steady state (median seconds per case,
which leaves out each worker's first case, the one that loads elastix), with the
median CPU seconds per case beside it (more work per case means the cores hinder each
other; fewer wall seconds than CPU seconds means threads helped). From the
steady-state seconds per case with every core busy and the start-up time it projects
the wall time of 1,500 studies on a 32-core machine (32 workers of 1 thread).

Run::

    .venv/bin/python benchmarks/dataset_registration.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "dataset_registration"
PROJECTED_STUDIES, PROJECTED_CORES = 1500, 32


def child(data_dir: Path, workers: int, threads: int) -> None:
    from prostseg.preparation.registration import register_dataset

    wall, result = common.timed(lambda: register_dataset(data_dir, workers=workers, threads=threads,
                                                         progress=False))
    common.child_answer({"wall_s": wall, "rows": result.rows})


def run(source: Path, workers: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        shutil.copytree(source, data_dir, ignore=shutil.ignore_patterns("aligned"))
        load_before = os.getloadavg()[0]
        answer = common.run_child([__file__, "--child", str(data_dir), str(workers), str(threads)])
        load_after = os.getloadavg()[0]
    seconds = [row["seconds"] for row in answer["rows"]]
    failed = [f"{row['case']}: {row['error']}" for row in answer["rows"] if row["status"] != "registered"]
    if failed:
        raise RuntimeError("cases not registered: " + "; ".join(failed))
    cpu = [row["cpu_seconds"] for row in answer["rows"]]
    first_cases = sorted(seconds, reverse=True)[:workers]  # each worker's first case loads elastix
    median = statistics.median(seconds)
    return {"workers": workers, "threads": threads, "wall_s": answer["wall_s"],
            "load_before": load_before, "load_after": load_after,
            "case_seconds": seconds, "median_case_s": median, "case_cpu_seconds": cpu,
            "median_case_cpu_s": statistics.median(cpu),
            "startup_cpu_s": statistics.median(sorted(cpu, reverse=True)[:workers]) - statistics.median(cpu),
            "cores_obtained": sum(cpu) / answer["wall_s"],
            "startup_s": statistics.median(first_cases) - median,
            "steady_cases_per_s": workers / median, "peak_rss_mib": answer["peak_rss_mib"]}


def main(argv=None) -> int:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    info = common.machine_info(with_tensorflow=False)
    cores = info["usable_cores"]
    if args.quick:
        s = dict(cases=2, shape=(48, 48, 8), spacing=(2.0, 2.0, 4.0))
    else:
        s = dict(cases=8, shape=(384, 384, 19), spacing=(0.5, 0.5, 3.0))
    parallel = max(2, cores)
    s["configurations"] = [(1, 1), (1, cores), (parallel, 1)]

    from prostseg.data.phantom import write_phantom_dataset

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_phantom_dataset(Path(folder), n_cases=s["cases"], seed=0, shape=s["shape"],
                              spacing=s["spacing"])
        s["phantom_write_s"] = time.perf_counter() - started
        runs = [run(Path(folder), workers, threads) for workers, threads in s["configurations"]]

    serial, threaded, pool = runs
    speedup = {
        "end_to_end_vs_serial": common.ratio(serial["wall_s"], pool["wall_s"]),
        "end_to_end_vs_one_worker_all_threads": common.ratio(threaded["wall_s"], pool["wall_s"]),
        "steady_vs_serial": common.ratio(pool["steady_cases_per_s"], serial["steady_cases_per_s"]),
        "steady_vs_one_worker_all_threads": common.ratio(pool["steady_cases_per_s"],
                                                         threaded["steady_cases_per_s"]),
        # not a wall-time measurement: what the CPU seconds per case imply for idle cores
        "idle_estimate_vs_serial": common.ratio(pool["workers"] * serial["median_case_cpu_s"],
                                                pool["median_case_cpu_s"]),
    }
    rounds = math.ceil(PROJECTED_STUDIES / PROJECTED_CORES)
    projection = {"studies": PROJECTED_STUDIES, "cores": PROJECTED_CORES, "rounds": rounds,
                  "case_s": pool["median_case_s"], "startup_s": pool["startup_s"],
                  "wall_s": pool["startup_s"] + rounds * pool["median_case_s"],
                  "serial_wall_s": PROJECTED_STUDIES * serial["median_case_s"],
                  "idle_case_cpu_s": pool["median_case_cpu_s"],
                  "idle_wall_s": pool["startup_cpu_s"] + rounds * pool["median_case_cpu_s"]}

    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": s, "runs": runs,
               "speedup": speedup, "projection": projection}
    shape = "x".join(map(str, s["shape"]))
    rows = [[f"{r['workers']} worker(s) x {r['threads']} thread(s)", r["wall_s"], r["median_case_s"],
             r["median_case_cpu_s"], r["startup_s"], r["steady_cases_per_s"] * 60, r["cores_obtained"],
             f"{r['load_before']:.1f} -> {r['load_after']:.1f}"] for r in runs]
    md = [common.heading("Dataset registration", info, args.quick),
          f"{s['cases']} phantom cases, T2W {shape}, rigid registration (register_dataset), each "
          "configuration in a fresh process on a fresh copy.",
          "",
          common.table(["configuration", "wall s", "median s per case", "median CPU s per case",
                        "start-up s (elastix loading)", "steady cases/min", "cores obtained",
                        "load average before -> after"], rows),
          "",
          f"Speed-up of {pool['workers']} workers x 1 thread: end to end "
          f"**{speedup['end_to_end_vs_serial']:.2f}x** over 1 worker x 1 thread and "
          f"{speedup['end_to_end_vs_one_worker_all_threads']:.2f}x over 1 worker x {cores} threads; "
          f"steady state {speedup['steady_vs_serial']:.2f}x and "
          f"{speedup['steady_vs_one_worker_all_threads']:.2f}x. "
          f"\"Cores obtained\" (CPU seconds of the cases / wall seconds) shows how much of the "
          f"machine the run got: a speed-up over {pool['workers']} workers needs about "
          f"{pool['workers']} cores obtained. From the CPU seconds per case, on otherwise idle cores "
          f"the steady speed-up would be about {speedup['idle_estimate_vs_serial']:.2f}x (an estimate, "
          "not a measurement).",
          "",
          f"Projection: {PROJECTED_STUDIES} studies on {PROJECTED_CORES} cores (32 workers x 1 thread) "
          f"= start-up {projection['startup_s']:.0f} s + {rounds} rounds x {projection['case_s']:.1f} s "
          f"per case = **{projection['wall_s'] / 60:.0f} min** (one after the other on one core: "
          f"{projection['serial_wall_s'] / 3600:.1f} h). Assumes each of the 32 cores registers as fast "
          "as one of these cores with all of them busy, and enough memory for 32 workers "
          f"(peak {serial['peak_rss_mib']:.0f} MiB for one in-process run here). On idle cores, "
          f"with the CPU seconds per case ({projection['idle_case_cpu_s']:.1f} s) as wall time and "
          f"{pool['startup_cpu_s']:.0f} CPU s of elastix loading: about {projection['idle_wall_s'] / 60:.0f} min.",
          ""]
    common.write_results(args.out, NAME, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main())
