"""The real study that ships with prostseg, and the chapters' folder of real cases."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from prostseg.data.dataset import find_case
from prostseg.errors import InputError
from prostseg.data.io import check_same_grid, load_volume
from prostseg.book.data import REAL_DATA_ENV, REAL_FOLDER, SAMPLE_DIR, describe_source, real_data

SAMPLE_CASE = SAMPLE_DIR / "ProstateX-0000"
#: The brief's limit for real data inside the repository.
MAX_SAMPLE_BYTES = 6 * 1024 * 1024


def _checksums() -> dict[str, str]:
    lines = (SAMPLE_DIR / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def test_shipped_files_are_the_listed_ones_unmodified():
    listed = _checksums()
    present = {path.name for path in SAMPLE_CASE.iterdir()}
    assert present == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((SAMPLE_CASE / name).read_bytes()).hexdigest() == digest, name


def test_sample_stays_within_the_size_limit():
    total = sum(path.stat().st_size for path in SAMPLE_DIR.rglob("*") if path.is_file())
    assert total <= MAX_SAMPLE_BYTES


def test_no_non_commercial_or_unlisted_data_ships():
    shipped = {path.relative_to(SAMPLE_DIR).as_posix() for path in SAMPLE_DIR.rglob("*") if path.is_file()}
    expected = {"README.md", "SHA256SUMS"} | {f"ProstateX-0000/{name}" for name in _checksums()}
    assert shipped == expected
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    for needed in ("CC BY 3.0", "10.7937/K9TCIA.2017.MURS5CL", "picai_prep"):
        assert needed in readme


def test_sample_is_a_case_with_all_three_series_and_a_lesion_on_the_t2w_grid():
    case = find_case(SAMPLE_CASE, require=("t2w", "adc", "dwi", "lesion"))
    t2w = load_volume(case.path("t2w"))
    lesion = load_volume(case.path("lesion"), label=True)
    adc = load_volume(case.path("adc"))
    assert t2w.shape == (384, 384, 19)
    np.testing.assert_allclose(t2w.spacing, (0.5, 0.5, 3.0), atol=1e-6)
    assert adc.shape == (84, 128, 19)
    check_same_grid(t2w, lesion)
    assert set(np.unique(lesion.data).tolist()) == {0, 1}
    assert 100 < int(lesion.data.sum()) < 20_000  # one small lesion


def test_the_wheel_carries_the_sample(tmp_path):
    """Colab users install a wheel: the sample must be inside it, not only in the repo."""
    root = SAMPLE_DIR.parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("prostseg-*.whl")
    shipped = ["README.md", "SHA256SUMS", *(f"ProstateX-0000/{name}" for name in _checksums())]
    assert {f"prostseg/sample_data/{name}" for name in shipped} <= set(zipfile.ZipFile(wheel).namelist())


@pytest.fixture
def no_real_data(monkeypatch):
    monkeypatch.delenv(REAL_DATA_ENV, raising=False)


def test_real_data_copies_the_sample_and_reuses_the_copies(tmp_path, no_real_data):
    folder = real_data(tmp_path)
    assert folder == tmp_path / REAL_FOLDER
    assert sorted(path.name for path in (folder / "ProstateX-0000").iterdir()) == sorted(_checksums())
    stamps = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file() and path.suffix != ".json"}
    assert real_data(tmp_path) == folder
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert describe_source(folder).endswith(": ProstateX-0000 (shipped with prostseg)")


def test_real_data_renews_a_damaged_copy_and_keeps_registration_outputs(tmp_path, no_real_data):
    folder = real_data(tmp_path)
    (folder / "ProstateX-0000" / "t2w.mha").write_bytes(b"truncated")
    (folder / "ProstateX-0000" / "aligned").mkdir()
    (folder / "ProstateX-0000" / "aligned" / "registration.json").write_text("{}")
    real_data(tmp_path)
    digest = hashlib.sha256((folder / "ProstateX-0000" / "t2w.mha").read_bytes()).hexdigest()
    assert digest == _checksums()["t2w.mha"]
    assert (folder / "ProstateX-0000" / "aligned" / "registration.json").read_text(encoding="utf-8") == "{}"


def _extra_folder(tmp_path):
    """A PROSTSEG_REAL_DATA-like folder: one dataset of two cases, one adding to the sample."""
    extra = tmp_path / "extra"
    for case_id in ("ProstateX-0000", "Other-1"):
        (extra / "set" / case_id).mkdir(parents=True)
    shutil.copyfile(SAMPLE_CASE / "t2w.mha", extra / "set" / "ProstateX-0000" / "t2w.mha")
    (extra / "set" / "ProstateX-0000" / "notes.txt").write_text("zones would go here")
    shutil.copyfile(SAMPLE_CASE / "lesion.nii.gz", extra / "set" / "Other-1" / "t2w.nii.gz")
    return extra


def test_real_data_adds_the_cases_of_the_environment_folder_and_drops_them_when_unset(tmp_path, monkeypatch):
    monkeypatch.setenv(REAL_DATA_ENV, str(_extra_folder(tmp_path)))
    folder = real_data(tmp_path / "outputs")
    assert (folder / "ProstateX-0000" / "notes.txt").read_text(encoding="utf-8") == "zones would go here"
    assert (folder / "Other-1" / "t2w.nii.gz").is_file()
    description = describe_source(folder)
    assert "ProstateX-0000 (shipped with prostseg + PROSTSEG_REAL_DATA/set)" in description
    assert "Other-1 (PROSTSEG_REAL_DATA/set)" in description

    monkeypatch.delenv(REAL_DATA_ENV)
    real_data(tmp_path / "outputs")
    assert not (folder / "ProstateX-0000" / "notes.txt").exists()
    assert not (folder / "Other-1").exists()


def test_real_data_never_replaces_a_file_it_did_not_write(tmp_path, monkeypatch):
    extra = _extra_folder(tmp_path)
    monkeypatch.delenv(REAL_DATA_ENV, raising=False)
    folder = real_data(tmp_path / "outputs")
    mine = folder / "ProstateX-0000" / "notes.txt"
    mine.write_text("my own notes")
    monkeypatch.setenv(REAL_DATA_ENV, str(extra))
    with pytest.raises(InputError, match="notes.txt: was not written by"):
        real_data(tmp_path / "outputs")
    assert mine.read_text(encoding="utf-8") == "my own notes"


def test_real_data_refuses_two_different_files_for_one_place(tmp_path, monkeypatch):
    extra = _extra_folder(tmp_path)
    shutil.copyfile(SAMPLE_CASE / "adc.mha", extra / "set" / "ProstateX-0000" / "t2w.mha")
    monkeypatch.setenv(REAL_DATA_ENV, str(extra))
    with pytest.raises(InputError, match="differs from"):
        real_data(tmp_path / "outputs")


@pytest.mark.real_data
def test_real_data_with_the_project_folder_adds_zones_to_the_sample(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(REAL_DATA_ENV, str(real_data_dir))
    folder = real_data(tmp_path)
    case = find_case(folder / "ProstateX-0000", require=("t2w", "adc", "dwi", "lesion", "zones"))
    zones = load_volume(case.path("zones"), label=True)
    check_same_grid(load_volume(case.path("t2w")), zones)
    assert set(np.unique(zones.data).tolist()) == {0, 1, 2}
    index = json.loads((folder / ".sources.json").read_text(encoding="utf-8"))["files"]
    assert index["ProstateX-0000/zones.nii.gz"]["origin"].startswith(REAL_DATA_ENV)
