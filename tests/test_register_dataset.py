"""Tests of a whole dataset through registration: prostseg.parallel and register_dataset.

The registrations run on copies of the small phantom cases of ``phantom_dir``: a first
``prostseg register-dataset`` run over three good cases and one corrupted case, then
reruns after an interruption, a changed input, a touched file and foreign results.
The Dask test starts a ``LocalCluster`` on 127.0.0.1 and compares its results with
those of a local run, file by file.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from prostseg.preparation import registration
from prostseg.cli import main
from prostseg.errors import ProstsegError
from prostseg.parallel import run_cases
from prostseg.preparation.registration import register_dataset, registration_state

GOOD = ("phantom-000", "phantom-001", "phantom-002")
CORRUPT = "phantom-003"


# ------------------------------------------------------------ the parallel runner


def _length_task(item, threads):
    """A task for run_cases: fails on one name, kills its process on another."""
    if item == "bad":
        raise ValueError("cannot handle\nthis one")
    if item == "crash":
        os._exit(3)  # what a segmentation fault in native code looks like to the pool
    return {"length": len(item), "threads": threads}


def test_run_cases_in_process_reports_a_failure_and_goes_on():
    rows = run_cases(_length_task, {"a": "x", "b": "bad", "c": "yyy"}, workers=1, threads=2,
                     progress=False)
    assert [row["case"] for row in rows] == ["a", "b", "c"]
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert rows[1]["error"] == "ValueError: cannot handle | this one"
    assert (rows[0]["length"], rows[2]["length"], rows[0]["threads"]) == (1, 3, 2)


@pytest.mark.slow
def test_run_cases_in_a_pool_survives_a_crashing_case():
    items = {f"case-{i}": "z" * i for i in range(1, 6)}
    items["case-3"] = "crash"
    rows = run_cases(_length_task, items, workers=2, threads=1, progress=False)
    by_case = {row["case"]: row for row in rows}
    assert by_case["case-3"]["status"] == "failed" and "died" in by_case["case-3"]["error"]
    for name in ("case-1", "case-2", "case-4", "case-5"):
        assert by_case[name]["status"] == "done" and by_case[name]["length"] == int(name[-1])
    assert {row["threads"] for row in rows if row["status"] == "done"} == {1}


def test_run_cases_rejects_zero_workers():
    with pytest.raises(ProstsegError, match="workers must be at least 1"):
        run_cases(_length_task, {"a": "x"}, workers=0, progress=False)


# ------------------------------------------------------------- register-dataset


def _copy_cases(phantom_dir: Path, target: Path, names) -> Path:
    for name in names:
        shutil.copytree(phantom_dir / name, target / name, ignore=shutil.ignore_patterns("aligned"))
    return target


def _summary(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def first_run(phantom_dir, tmp_path_factory):
    """Three good cases and one with a truncated ADC, through the command once."""
    data_dir = _copy_cases(phantom_dir, tmp_path_factory.mktemp("dataset"), (*GOOD, CORRUPT))
    adc = data_dir / CORRUPT / "adc.nii.gz"
    adc.write_bytes(adc.read_bytes()[:400])
    code = main(["register-dataset", str(data_dir), "--workers", "1", "--no-progress"])
    return data_dir, code, _summary(data_dir / "registration_summary.csv")


@pytest.mark.slow
def test_one_corrupted_case_fails_alone_and_the_command_exits_non_zero(first_run):
    data_dir, code, summary = first_run
    assert code == 1
    assert list(summary) == [*GOOD, CORRUPT]
    assert summary[CORRUPT]["status"] == "failed"
    assert "adc.nii.gz" in summary[CORRUPT]["error"] and "\n" not in summary[CORRUPT]["error"]
    assert not (data_dir / CORRUPT / "aligned" / "stack.nii.gz").exists()
    for name in GOOD:
        row = summary[name]
        assert row["status"] == "registered" and row["error"] == ""
        assert float(row["adc_mi_after"]) > float(row["adc_mi_before"])
        assert float(row["seconds"]) > 0
        report = json.loads((data_dir / name / "aligned" / "registration.json").read_text(encoding="utf-8"))
        assert report["status"] == "complete" and float(row["adc_mi_after"]) == report["adc"]["mi_after"]
        assert registration_state(data_dir / name).up_to_date


@pytest.mark.slow
def test_interrupted_and_changed_cases_are_registered_again_and_the_rest_skipped(
        first_run, tmp_path, monkeypatch, capsys):
    source, _, _ = first_run
    data_dir = _copy_cases(source, tmp_path, (*GOOD, CORRUPT))
    for name in (*GOOD, CORRUPT):  # the copies keep the registration results
        if (source / name / "aligned").exists():
            shutil.copytree(source / name / "aligned", data_dir / name / "aligned")
    interrupted, changed, untouched = GOOD

    # A registration killed after its first output file (a real run of register_case).
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(registration, "save_transform", killed)
    with pytest.raises(KeyboardInterrupt):
        registration.register_case(data_dir / interrupted, overwrite=True)
    monkeypatch.undo()
    assert json.loads((data_dir / interrupted / "aligned" / "registration.json").read_text(encoding="utf-8"))[
        "status"] == "incomplete"
    # New ADC values for another case: same file name and size class, other content.
    adc = nib.load(data_dir / changed / "adc.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(adc.dataobj) * 1.01, adc.affine, adc.header),
             data_dir / changed / "adc.nii.gz")
    before = _mtimes(data_dir / untouched / "aligned")

    assert main(["register-dataset", str(data_dir), "--workers", "1", "--no-progress"]) == 1
    summary = _summary(data_dir / "registration_summary.csv")
    assert {name: row["status"] for name, row in summary.items()} == {
        interrupted: "registered", changed: "registered", untouched: "up to date", CORRUPT: "failed"}
    assert "interrupted" in summary[interrupted]["warnings"]
    assert "inputs changed" in summary[changed]["warnings"] and "adc.nii.gz" in summary[changed]["warnings"]
    assert _mtimes(data_dir / untouched / "aligned") == before
    err = capsys.readouterr().err
    assert f"FAILED {CORRUPT}" in err and interrupted not in err


def test_a_touched_but_unchanged_input_keeps_the_case_up_to_date(first_run, tmp_path):
    source, _, _ = first_run
    case = tmp_path / GOOD[0]
    shutil.copytree(source / GOOD[0], case)
    os.utime(case / "t2w.nii.gz", ns=(1, 1))  # another time, same bytes: the checksum decides
    assert registration_state(case).up_to_date
    with gzip.open(case / "t2w.nii.gz", "rb") as handle:
        content = handle.read()
    with gzip.open(case / "t2w.nii.gz", "wb", compresslevel=9) as handle:
        handle.write(content)  # same image, other bytes on disk
    state = registration_state(case)
    assert not state.up_to_date and "t2w.nii.gz" in state.reason and state.replaceable


def test_other_transforms_make_results_out_of_date(first_run):
    source, _, _ = first_run
    state = registration_state(source / GOOD[0], transforms=("rigid", "affine"))
    assert not state.up_to_date and "'affine'" in state.reason


def test_results_not_written_by_prostseg_are_kept(phantom_dir, tmp_path):
    data_dir = _copy_cases(phantom_dir, tmp_path, GOOD[:1])
    stack = data_dir / GOOD[0] / "aligned" / "stack.nii.gz"
    stack.parent.mkdir()
    stack.write_bytes(b"someone else's stack")
    state = registration_state(data_dir / GOOD[0])
    assert not state.replaceable and "not written by prostseg" in state.reason
    result = register_dataset(data_dir, workers=1, progress=False)
    (row,) = result.rows
    assert row["status"] == "failed" and "overwrite" in row["error"]
    assert stack.read_bytes() == b"someone else's stack"
    with pytest.raises(ProstsegError, match=f"1 of 1 cases failed to register:\n  {GOOD[0]}: "):
        result.raise_if_failed()


def test_a_missing_data_folder_is_one_clear_error(tmp_path, capsys):
    assert main(["register-dataset", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "no such data folder" in capsys.readouterr().err


# ------------------------------------------------------------------------- Dask


def _without_seconds(value):
    """A row or report without its timings (``seconds``, ``cpu_seconds``)."""
    if isinstance(value, dict):
        return {key: _without_seconds(item) for key, item in value.items()
                if key not in ("seconds", "cpu_seconds")}
    return value


@pytest.mark.slow
def test_dask_local_cluster_gives_exactly_the_local_results(phantom_dir, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = _copy_cases(phantom_dir, tmp_path / "local", GOOD[:2])
    on_dask = _copy_cases(phantom_dir, tmp_path / "dask", GOOD[:2])
    local_result = register_dataset(local, workers=1, threads=1, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            dask_result = register_dataset(on_dask, client=client, progress=False)
    assert [row["status"] for row in dask_result.rows] == ["registered"] * 2
    assert [_without_seconds(row) for row in dask_result.rows] == [
        _without_seconds(row) for row in local_result.rows]
    for name in GOOD[:2]:
        files = sorted(path.name for path in (local / name / "aligned").iterdir())
        assert files == sorted(path.name for path in (on_dask / name / "aligned").iterdir())
        for file in files:
            mine, theirs = local / name / "aligned" / file, on_dask / name / "aligned" / file
            if file.endswith(".nii.gz"):
                a, b = nib.load(mine), nib.load(theirs)
                assert a.header.binaryblock == b.header.binaryblock
                assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), file
            elif file.endswith(".json"):
                assert _without_seconds(json.loads(mine.read_text(encoding="utf-8"))) == _without_seconds(
                    json.loads(theirs.read_text(encoding="utf-8")))
            else:
                assert mine.read_text(encoding="utf-8") == theirs.read_text(encoding="utf-8"), file
