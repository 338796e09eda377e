"""Every benchmark script runs in its tiny ``--quick`` mode and writes well-formed results.

The scripts (``benchmarks/*.py``) run in a subprocess, as a user runs them, with
``--out`` in a temporary folder. Only the structure and sanity of the results are
checked (fields present, numbers finite and consistent); never how fast anything was.
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _run(script: str, out: Path, *extra: str, real_data: Path | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PROSTSEG_REAL_DATA"}
    if real_data is not None:
        env["PROSTSEG_REAL_DATA"] = str(real_data)
    process = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


def _results(out: Path, name: str, *, tensorflow: bool = True) -> dict:
    results = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
    assert results["benchmark"] == name and results["quick"] is True
    machine = results["machine"]
    assert machine["cpu_model"] and machine["usable_cores"] >= 1 and machine["ram_gib"] > 0
    if tensorflow:
        assert machine["tensorflow"] and isinstance(machine["gpus"], list)
    assert (out / f"{name}.md").read_text(encoding="utf-8").strip()
    return results


def _numbers(value, where="results"):
    """Every int and float in a JSON document, with its location."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{where}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, value


def _assert_finite(results: dict) -> None:
    bad = [(where, value) for where, value in _numbers(results) if not math.isfinite(value)]
    assert not bad, f"non-finite values: {bad}"


def _positive(*values) -> None:
    for value in values:
        assert isinstance(value, (int, float)) and value > 0, value


@pytest.mark.slow
def test_slice_cache_quick(tmp_path):
    _run("slice_cache.py", tmp_path, "--phantoms", str(tmp_path / "phantoms"))
    results = _results(tmp_path, "slice_cache")
    _assert_finite(results)
    small, large = (str(n) for n in results["settings"]["sizes"])
    for n in (small, large):
        entry = results["results"][n]
        assert set(entry) == {"prepare", "seed", "stream", "memory_cache", "disk_cache"}
        # every approach yields every slice of the cases, every epoch
        slices = {t["slices"] for approach in ("seed", "stream", "memory_cache", "disk_cache")
                  for t in entry[approach]["epochs"]}
        assert len(slices) == 1
        for approach in ("seed", "stream", "memory_cache", "disk_cache"):
            _positive(entry[approach]["epoch1_slices_per_s"], entry[approach]["later_slices_per_s"],
                      entry[approach]["peak_rss_mib"])
    counts = results["results"][large]["prepare"]["counts"]
    assert counts == {"up to date": int(small), "prepared": int(large) - int(small)}
    gpu = results["gpu_estimate"]
    assert gpu["original_unet_forward_flops"] > gpu["our_unet_forward_flops"] > 0
    assert gpu["our_slices_per_s_mixed"] == pytest.approx(gpu["images_per_s_mixed"] * gpu["flop_ratio"])


@pytest.mark.slow
def test_data_loading_quick(tmp_path):
    _run("data_loading.py", tmp_path)
    results = _results(tmp_path, "data_loading")
    _assert_finite(results)
    approaches = results["datasets"]["phantom"]["results"]
    assert set(approaches) == {"baseline", "streaming", "streaming_noshuffle"}
    # the same files give the same number of slices whichever way they are loaded
    assert len({entry["slices"] for entry in approaches.values()}) == 1
    assert approaches["baseline"]["dtype"] == "float64" and approaches["streaming"]["dtype"] == "float32"
    for entry in approaches.values():
        _positive(entry["slices_per_s"], entry["peak_rss_mib"])
    _positive(approaches["streaming"]["speed_vs_baseline"], approaches["streaming"]["baseline_peak_rss_over_this"])


@pytest.mark.slow
def test_input_pipeline_quick(tmp_path):
    _run("input_pipeline.py", tmp_path)
    results = _results(tmp_path, "input_pipeline")
    _assert_finite(results)
    _positive(results["pipeline"]["slices_per_s"], results["train_step"]["images_per_s"],
              results["end_to_end"]["fit_pipeline_images_per_s"], results["end_to_end"]["fit_in_memory_images_per_s"])
    headroom = results["pipeline"]["slices_per_s"] / results["train_step"]["images_per_s"]
    assert results["pipeline_headroom"] == pytest.approx(headroom)
    assert ("NOT" in results["verdict"]) == (headroom > 1)


@pytest.mark.slow
def test_training_throughput_quick(tmp_path):
    _run("training_throughput.py", tmp_path)
    results = _results(tmp_path, "training_throughput")
    _assert_finite(results)
    assert {run["model"] for run in results["runs"]} == {"unet", "pix2pix"}
    for run in results["runs"]:
        step = run["step"]
        _positive(run["images_per_s"], run["step_flops"], step["achieved_flop_per_s"], step["peak_flop_per_s"],
                  step["fraction_of_peak_cpu"])
        assert step["achieved_flop_per_s"] == pytest.approx(run["step_flops"] / step["median_s"])
        profiled = run["profiler_forward_flops_per_image"]
        if profiled is not None:  # the analytical conv count and TensorFlow's own count agree
            assert run["analytical_forward_flops_per_image"] == pytest.approx(profiled, rel=0.25)
    (unet,) = [run for run in results["runs"] if run.get("profile")]
    assert set(unet["profile"]["op_ms"]) >= {"convolution forward", "convolution filter gradient", "batch norm"}
    assert unet["profile"]["op_ms"]["convolution filter gradient"] > 0  # the trace holds the step's ops
    _positive(unet["inference"]["fraction_of_peak"], unet["input_pipeline_s_per_batch"])


@pytest.mark.slow
def test_inference_registration_quick(tmp_path):
    _run("inference_registration.py", tmp_path)
    results = _results(tmp_path, "inference_registration")
    _assert_finite(results)
    inference = results["inference"]
    _positive(inference["first_call_s"], inference["warm"]["median_s"])
    assert inference["output_dtype"] == "uint8"
    (phantom,) = results["registration"]  # no real data without PROSTSEG_REAL_DATA
    _positive(phantom["first_call_s"], phantom["warm"]["median_s"])
    for modality in ("adc", "dwi"):
        assert set(phantom["mi"][modality]) == {"mi_before", "mi_after"}


@pytest.mark.slow
def test_dataset_registration_quick(tmp_path):
    _run("dataset_registration.py", tmp_path)
    results = _results(tmp_path, "dataset_registration", tensorflow=False)
    _assert_finite(results)
    runs = results["runs"]
    assert [(run["workers"], run["threads"]) for run in runs] == [tuple(c) for c in results["settings"]["configurations"]]
    assert runs[0]["workers"] == 1 and runs[-1]["workers"] >= 2
    for run in runs:
        assert len(run["case_seconds"]) == results["settings"]["cases"]
        _positive(run["wall_s"], run["median_case_s"], run["median_case_cpu_s"], run["steady_cases_per_s"])
        assert run["steady_cases_per_s"] == pytest.approx(run["workers"] / run["median_case_s"])
    speedup, projection = results["speedup"], results["projection"]
    assert speedup["end_to_end_vs_serial"] == pytest.approx(runs[0]["wall_s"] / runs[-1]["wall_s"])
    assert projection["rounds"] == math.ceil(1500 / 32)
    assert projection["wall_s"] == pytest.approx(projection["startup_s"] + projection["rounds"] * projection["case_s"])


@pytest.mark.slow
def test_book_execution_quick_lists_the_chapters(tmp_path):
    _run("book_execution.py", tmp_path)
    results = _results(tmp_path, "book_execution")
    _assert_finite(results)
    _positive(results["kernel_start_s"])
    assert results["notebooks"] == [] and results["total_s"] == 0  # --quick executes no chapter
    for notebook in results["chapters_listed"]:
        assert (ROOT / notebook).is_file() and notebook.endswith(".ipynb")


@pytest.mark.slow
@pytest.mark.parametrize("with_real_data", [False, pytest.param(True, marks=pytest.mark.real_data)])
def test_phantom_realism_quick(with_real_data, request, tmp_path):
    real = request.getfixturevalue("real_data_dir") if with_real_data else None
    _run("phantom_realism.py", tmp_path, real_data=real)
    results = _results(tmp_path, "phantom_realism", tensorflow=False)
    _assert_finite(results)
    cases, summary = results["cases"], results["summary"]
    assert len(cases) == results["n_cases"] == 3
    for case in cases:
        zones = sum(case[f"{zone}_ml"] for zone in ("pz", "tz", "cz", "afs"))
        assert case["gland_ml"] == pytest.approx(zones) and case["gland_ml"] > 10
        assert case["fov_mm"] == pytest.approx(case["shape"][0] * case["spacing_mm"])
    gland = [case["gland_ml"] for case in cases]
    assert summary["gland_ml"]["mean"] == pytest.approx(sum(gland) / 3)
    assert summary["gland_ml"]["min"] == min(gland) and summary["gland_ml"]["max"] == max(gland)
    assert 0 <= summary["coil_fraction"] <= 1
    _positive(results["seconds_per_case"]["median_s"])
    assert (tmp_path / "phantom_realism.png").stat().st_size > 0
    assert ("distances" in summary) == with_real_data
    assert set(results["references"]) == {"v1", "v2"}
    if with_real_data:
        for region in ("slice", "gland", "surroundings"):
            for case in cases:
                assert 0 < case["distances"][region]["wasserstein"] < 1
                assert 0 < case["distances"][region]["intersection"] <= 1
        for case in cases:
            assert set(case["profile_distances"]) == {"lateral", "posterior"}
            assert all(0 < distance < 1 for distance in case["profile_distances"].values())


@pytest.mark.slow
def test_book_models_quick(tmp_path):
    _run("book_models.py", tmp_path)
    results = _results(tmp_path, "book_models")
    (run,) = results["runs"]  # --quick: one seed
    split = run["split"]
    assert not (set(split["val"]) | set(split["test"])) & set(split["train"])
    assert [row["part"] for row in run["rows"]] == ["val"] * len(split["val"]) + ["test"] * len(split["test"]) + [
        "new"] * results["new_patients"]
    for row in run["rows"]:
        assert row["case"] not in split["train"] or row["part"] == "new"  # new patients are other patients
        assert 0 <= row["unet_false_islands"] <= row["unet_components"]
        assert row["unet_components_cleaned"] <= 1 and row["unet_false_islands_cleaned"] <= 1
        assert 0 <= row["unet_dice"] <= 1 and 0 <= row["unet_dice_cleaned"] <= 1
        for zone in ("PZ", "TZ", "CZ", "AFS", "gland"):
            assert math.isnan(row[f"pix2pix_{zone}"]) or 0 <= row[f"pix2pix_{zone}"] <= 1
    _positive(run["unet_train_s"], run["pix2pix_train_s"])
    assert run["unet_epochs"] == results["settings"]["chapter_7"]["epochs"]
    assert run["pix2pix_epochs"] == results["settings"]["chapter_10"]["epochs"]
    summary = results["summary"]
    islands = [row["unet_false_islands"] for row in run["rows"]]
    assert summary["unet_false_islands"]["mean"] == pytest.approx(sum(islands) / len(islands))
    # every difference from a notebook's parameter cell names the setting and both values
    for chapter in ("chapter_7", "chapter_10"):
        assert all("(notebook: " in line for line in results["notebook_differences"][chapter])


@pytest.mark.slow
def _benchmark_names() -> tuple[str, ...]:
    """``BENCHMARKS`` of run_all.py, read from its source without running it."""
    for node in ast.parse((BENCHMARKS / "run_all.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "BENCHMARKS":
            return ast.literal_eval(node.value)
    raise AssertionError("run_all.py defines no BENCHMARKS")


def test_run_all_summary_marks_missing_and_quick_results(tmp_path):
    _run("book_execution.py", tmp_path)
    subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--summary-only", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    book = summary.split("## Book execution")[1].split("## ")[0]
    assert "QUICK RUN" in book and "kernel start" in book
    sections = summary.split("\n## ")[1:]
    not_run = [section.split("\n")[0] for section in sections if "Not run." in section]
    assert len(sections) == len(_benchmark_names())  # one section per benchmark
    assert "Book execution" not in not_run and len(not_run) == len(sections) - 1


@pytest.mark.slow
@pytest.mark.real_data
def test_real_data_report_quick(real_data_dir, tmp_path):
    _run("real_data_report.py", tmp_path, real_data=real_data_dir)
    results = _results(tmp_path, "real_data_report")
    _assert_finite(results)
    assert sorted(fold["held_out"] for fold in results["folds"]) == [
        "ProstateX-0101", "ProstateX-0152", "ProstateX-0199"]
    for fold in results["folds"]:
        assert fold["held_out"] not in fold["train"] and len(fold["train"]) == 2
        assert 0 <= fold["dice"] <= 1 and 0 <= fold["iou"] <= fold["dice"]
        assert fold["lesion_voxels"] > 0
    registration = results["registration"]
    for modality in ("adc", "dwi"):
        _positive(registration[modality]["mi_before"], registration[modality]["mi_after"])
    real_case = results["real_case"]
    models = {row["model"] for row in real_case["scores"]}
    assert models == {"U-Net (chapter 7)", "Pix2Pix (chapter 10)",
                      "U-Net, phantoms with random tissue contrast, seed 0"}
    for row in real_case["scores"]:
        assert 0 <= row["whole gland"] <= 1
    agreement = {row["reference"]: row for row in real_case["agreement"]}
    assert round(agreement["gland_guerbet23.nii.gz"]["whole gland"], 2) == 0.94
    report = (tmp_path / "real_data_report.md").read_text(encoding="utf-8")
    assert "## 3. The book's models on ProstateX-0000" in report and "another AI model" in report
    assert "not verified" in report and "book/07_train-unet.ipynb" in report and "-p image_size 384" in report
    # the data folder is read only
    assert not list(real_data_dir.rglob("aligned"))


@pytest.mark.slow
@pytest.mark.real_data
def test_zones_to_real_quick(real_data_dir, tmp_path):
    _run("zones_to_real.py", tmp_path, "--variants", "chapter10", "mixed3_shape", real_data=real_data_dir)
    results = _results(tmp_path, "zones_to_real")
    _assert_finite(results)
    assert [run["variant"] for run in results["runs"]] == ["chapter10", "mixed3_shape"]
    chapter10, mixed = results["runs"]
    assert chapter10["phantoms"] is None and chapter10["training_patients"] == 4
    assert mixed["phantoms"]["random_channels"] == ["t2w", "adc", "dwi"] and mixed["pix2pix"]["shape_augment"]
    assert mixed["training_patients"] == 2  # --quick: two phantom patients
    for run in results["runs"]:
        assert set(run["real"]) == {"gland", "PZ", "TZ"} and all(0 <= v <= 1 for v in run["real"].values())
        assert run["real_reference_voxels"] > 0
        assert [row["part"] for row in run["phantom_rows"]] == ["val", "test", "new"]
        _positive(run["train_s"])
    assert "ProstateX-0000" in (tmp_path / "zones_to_real.md").read_text(encoding="utf-8")
    assert not list(real_data_dir.rglob("aligned"))  # the data folder is read only


@pytest.mark.slow
@pytest.mark.real_data
def test_phantom_to_real_quick(real_data_dir, tmp_path):
    _run("phantom_to_real.py", tmp_path, "--recipes", "synthetic", "chapter7", real_data=real_data_dir)
    results = _results(tmp_path, "phantom_to_real")
    _assert_finite(results)
    assert [run["recipe"] for run in results["runs"]] == ["synthetic", "chapter7"]
    for run in results["runs"]:
        assert 0 <= run["real_dice"] <= 1 and run["real_reference_voxels"] > 0
        assert len(run["new_phantom_dice"]) == results["new_patients"] == 1
        assert all(0 <= dice <= 1 for dice in run["new_phantom_dice"])
        _positive(run["train_s"])
    assert results["runs"][0]["phantom"]["contrast"] == "mixed"
    assert "contrast" not in results["runs"][1]["phantom"]
    assert "ProstateX-0000" in (tmp_path / "phantom_to_real.md").read_text(encoding="utf-8")
    assert not list(real_data_dir.rglob("aligned"))  # the data folder is read only


@pytest.mark.slow
@pytest.mark.real_data
def test_real_gland_quick(real_data_dir, tmp_path):
    _run("real_gland.py", tmp_path, "--recipes", "mixed", "phantoms", "--folds", "ProstateX-0152",
         real_data=real_data_dir)
    results = _results(tmp_path, "real_gland")
    assert [(run["recipe"], run["held_out"]) for run in results["runs"]] == [
        ("mixed", "ProstateX-0152"), ("phantoms", "ProstateX-0152")]
    mixed, phantoms = results["runs"]
    assert mixed["train_cases"] == phantoms["train_cases"] + 3  # the three other real patients
    for run in results["runs"]:
        assert 0 <= run["dice"]["TAPS"] <= 1 and 0 <= run["dice"]["independent mean"] <= 1
        assert set(run["dice"]) == {"TAPS", "zones.nii.gz", "reference/gland_guerbet23.nii.gz",
                                    "reference/zones_heviai23.nii.gz", "independent mean"}
        assert run["taps_agreement"]["independent mean"] > 0.8  # the shipped labels' own quality
        _positive(run["train_s"])
    assert not list(real_data_dir.rglob("aligned"))
