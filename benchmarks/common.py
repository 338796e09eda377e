"""Helpers shared by the benchmark scripts: machine description, timing, results files.

Every benchmark writes ``<out>/<name>.json`` (machine, settings, measurements) and
appends a Markdown section to ``<out>/<name>.md``. Nothing here is part of the
``prostseg`` package; the scripts run from the repository root as
``.venv/bin/python benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

# The real-data folder comes from the same variable as everywhere in prostseg.
from prostseg.book.data import REAL_DATA_ENV, real_data_dir  # noqa: E402,F401


def parser(description: str) -> argparse.ArgumentParser:
    """Command-line parser with the options every benchmark takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that the script works (seconds), measures nothing useful")
    result.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder of the results files (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def machine_info(*, with_tensorflow: bool = True) -> dict:
    """What the numbers were measured on: CPU, cores, RAM, load, library versions, GPU."""
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _ram_gib(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    if with_tensorflow:
        import keras
        import numpy as np
        import tensorflow as tf

        info.update(
            tensorflow=tf.__version__,
            keras=keras.__version__,
            numpy=np.__version__,
            gpus=[device.name for device in tf.config.list_physical_devices("GPU")],
        )
    return info


def machine_line(info: dict) -> str:
    """One Markdown line describing the machine."""
    gpus = info.get("gpus")
    gpu = ", ".join(gpus) if gpus else "none"
    return (f"Machine: {info['cpu_model']}, {info['usable_cores']} usable cores, {info['ram_gib']} GiB RAM, "
            f"load {info['load_average_1min_at_start']} at start; TensorFlow {info.get('tensorflow', '-')}, "
            f"GPU: {gpu}; {info['date']}")


def timed(function: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def repeat_timed(function: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls."""
    return [timed(function)[0] for _ in range(repeats)]


def summary(seconds: Sequence[float]) -> dict:
    """Median, min and max of a list of timings."""
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "n": len(seconds)}


def current_rss_mib() -> float:
    """Resident memory of this process now."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="utf-8").split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def run_child(args: Sequence[str], *, timeout: float | None = None) -> dict:
    """Run ``python <args>`` in a fresh process; return its JSON answer and peak RSS.

    The child writes one JSON object to the file named by the environment variable
    ``BENCHMARK_RESULT``. Its peak resident memory is read by the parent from the
    child's own ``rusage`` (``os.wait4``), so each measurement has a process, and a
    memory peak, of its own.
    """
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        env = {**os.environ, "BENCHMARK_RESULT": str(result_file), "TF_CPP_MIN_LOG_LEVEL": "2"}
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"child {args} ran longer than {timeout} s")
            time.sleep(0.05)
        output = process.stdout.read().decode(errors="replace")
        process.stdout.close()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"child {args} failed (exit {process.returncode}):\n{output[-4000:]}")
        answer = json.loads(result_file.read_text(encoding="utf-8"))
    answer["peak_rss_mib"] = usage.ru_maxrss / 1024
    return answer


def child_answer(values: dict) -> None:
    """Called in a child started by :func:`run_child`: hand ``values`` to the parent."""
    Path(os.environ["BENCHMARK_RESULT"]).write_text(json.dumps(values))


def write_results(out_dir: Path, name: str, results: dict, markdown: str) -> Path:
    """Write ``<name>.json`` (replacing it) and append ``markdown`` to ``<name>.md``.

    Results files are benchmark outputs of these scripts, not user files: the JSON is
    replaced by each run, the Markdown keeps a history of runs (newest last).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    with open(out_dir / f"{name}.md", "a", encoding="utf-8") as file:
        file.write(markdown.rstrip() + "\n\n")
    print(markdown)
    print(f"wrote {json_path} and {out_dir / f'{name}.md'}")
    return json_path


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats get 3 significant digits."""

    def cell(value) -> str:
        if isinstance(value, float):
            if not math.isfinite(value):
                return "n/a"
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def heading(title: str, info: dict, quick: bool) -> str:
    mode = " (--quick: tiny sizes, numbers not meaningful)" if quick else ""
    return f"## {title}{mode}\n\n{machine_line(info)}\n"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")
