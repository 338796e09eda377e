"""The real studies that ship with prostseg, and the chapters' folder of real cases."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest

from prostseg.data.dataset import find_case
from prostseg.errors import InputError
from prostseg.data.io import check_same_grid, load_volume
from prostseg.book.data import REAL_DATA_ENV, REAL_FOLDER, SAMPLE_DIR, describe_source, real_data

SAMPLE_CASE = SAMPLE_DIR / "ProstateX-0000"
#: The brief's limit for real data inside the repository.
MAX_SAMPLE_BYTES = 8_000_000
SHIPPED_CASES = ("ProstateX-0000", "ProstateX-0101", "ProstateX-0152", "ProstateX-0199")
#: SHA-256 of ProstateX-0000's files as published with picai_prep: they ship unmodified.
ORIGINAL_0000 = {
    "t2w.mha": "3e91e02b23be3ae4304a95635ba37154f1f4bba8aa2ea3935d4fe4224398549a",
    "adc.mha": "5847d5d6f880c7702378d1e98d9538ee6b4e76778742d9d687df2e557c1b77e9",
    "hbv.mha": "6e5fee01223feb8bb41e916921538e96a1ba305ee64531dedca25ee8b152093d",
    "lesion.nii.gz": "7000ea720823595eac90a068841e75e2aa58d647380eca2350e190f2bf743c33",
}


def _checksums() -> dict[str, str]:
    """``{path relative to SAMPLE_DIR: sha256}`` from ``SHA256SUMS``."""
    lines = (SAMPLE_DIR / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def _case_files(case_id: str) -> list[str]:
    return sorted(name.split("/", 1)[1] for name in _checksums() if name.startswith(f"{case_id}/"))


def test_shipped_files_are_the_listed_ones_unmodified():
    listed = _checksums()
    present = {path.relative_to(SAMPLE_DIR).as_posix() for path in SAMPLE_DIR.glob("*/*")}
    assert present == set(listed)
    assert {name.split("/")[0] for name in listed} == set(SHIPPED_CASES)
    for name, digest in listed.items():
        assert hashlib.sha256((SAMPLE_DIR / name).read_bytes()).hexdigest() == digest, name
    for name, digest in ORIGINAL_0000.items():
        assert listed[f"ProstateX-0000/{name}"] == digest, name


def test_sample_stays_within_the_size_limit():
    total = sum(path.stat().st_size for path in SAMPLE_DIR.rglob("*") if path.is_file())
    assert total <= MAX_SAMPLE_BYTES


def test_no_non_commercial_or_unlisted_data_ships():
    shipped = {path.relative_to(SAMPLE_DIR).as_posix() for path in SAMPLE_DIR.rglob("*") if path.is_file()}
    expected = {"README.md", "SHA256SUMS"} | set(_checksums())
    assert shipped == expected
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    for needed in ("CC BY 3.0", "10.7937/K9TCIA.2017.MURS5CL", "picai_prep", "TAPS", "MIT", "lavlab-taps"):
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
    shipped = ["README.md", "SHA256SUMS", *_checksums()]
    assert {f"prostseg/sample_data/{name}" for name in shipped} <= set(zipfile.ZipFile(wheel).namelist())


@pytest.fixture
def no_real_data(monkeypatch):
    monkeypatch.delenv(REAL_DATA_ENV, raising=False)


def test_real_data_copies_the_sample_and_reuses_the_copies(tmp_path, no_real_data):
    folder = real_data(tmp_path)
    assert folder == tmp_path / REAL_FOLDER
    for case_id in SHIPPED_CASES:
        assert sorted(path.name for path in (folder / case_id).iterdir()) == _case_files(case_id)
    stamps = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file() and path.suffix != ".json"}
    assert real_data(tmp_path) == folder
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert describe_source(folder).endswith(f": {', '.join(SHIPPED_CASES)} (shipped with prostseg)")


def test_real_data_renews_a_damaged_copy_and_keeps_registration_outputs(tmp_path, no_real_data):
    folder = real_data(tmp_path)
    (folder / "ProstateX-0000" / "t2w.mha").write_bytes(b"truncated")
    (folder / "ProstateX-0000" / "aligned").mkdir()
    (folder / "ProstateX-0000" / "aligned" / "registration.json").write_text("{}")
    real_data(tmp_path)
    digest = hashlib.sha256((folder / "ProstateX-0000" / "t2w.mha").read_bytes()).hexdigest()
    assert digest == _checksums()["ProstateX-0000/t2w.mha"]
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


def _uncropped(case_id: str, folder) -> tuple:
    """A scan of which the shipped T2W of ``case_id`` is a crop (the shipped voxels with a
    margin of zeros), and a zone map on that larger grid, in a folder like the project's
    real data."""
    shipped = nib.load(SAMPLE_DIR / case_id / "t2w.nii.gz")
    margin = np.array([5, 7, 0])
    data = np.pad(np.asarray(shipped.dataobj), [(m, m) for m in margin])
    affine = shipped.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ margin
    zones = np.zeros(data.shape, np.uint8)
    zones[40:60, 30:50, 5:9] = 1
    zones[:3] = 2  # outside the shipped crop: dropped when cut to its grid
    case_dir = folder / "set" / case_id
    case_dir.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, affine), case_dir / "t2w.nii.gz")
    nib.save(nib.Nifti1Image(zones, affine), case_dir / "zones.nii.gz")
    return case_dir, margin, zones


def test_real_data_cuts_masks_of_a_full_scan_to_the_shipped_crop(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    _, margin, zones = _uncropped("ProstateX-0152", extra)
    monkeypatch.setenv(REAL_DATA_ENV, str(extra))
    folder = real_data(tmp_path / "outputs")
    case = find_case(folder / "ProstateX-0152", require=("t2w", "gland", "zones"))
    t2w = load_volume(case.path("t2w"))
    cut = load_volume(case.path("zones"), label=True)
    check_same_grid(t2w, cut)
    on_disk = np.asarray(nib.load(case.path("zones")).dataobj)
    expected = zones[margin[0]:margin[0] + on_disk.shape[0], margin[1]:margin[1] + on_disk.shape[1]]
    np.testing.assert_array_equal(on_disk, expected)
    assert hashlib.sha256(case.path("t2w").read_bytes()).hexdigest() == _checksums()["ProstateX-0152/t2w.nii.gz"]
    stamp = case.path("zones").stat().st_mtime_ns
    real_data(tmp_path / "outputs")  # up to date: not written again
    assert case.path("zones").stat().st_mtime_ns == stamp
    case.path("zones").write_bytes(b"damaged")
    real_data(tmp_path / "outputs")  # a damaged cut copy is made again
    np.testing.assert_array_equal(np.asarray(nib.load(case.path("zones")).dataobj), expected)


def test_real_data_refuses_another_scan_under_a_shipped_id(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    case_dir, _, _ = _uncropped("ProstateX-0199", extra)
    image = nib.load(case_dir / "t2w.nii.gz")
    other = np.asarray(image.dataobj) + 1  # not the same voxels
    nib.save(nib.Nifti1Image(other, image.affine), case_dir / "t2w.nii.gz")
    monkeypatch.setenv(REAL_DATA_ENV, str(extra))
    with pytest.raises(InputError, match="t2w.nii.gz: differs from"):
        real_data(tmp_path / "outputs")


@pytest.mark.real_data
def test_real_data_with_the_project_folder_adds_zones_to_the_cropped_cases(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(REAL_DATA_ENV, str(real_data_dir))
    folder = real_data(tmp_path)
    for case_id in SHIPPED_CASES[1:]:
        case = find_case(folder / case_id, require=("t2w", "gland", "zones", "lesion"))
        t2w = load_volume(case.path("t2w"))
        assert t2w.shape == (224, 224, 19)
        for name in ("zones", "lesion"):
            check_same_grid(t2w, load_volume(case.path(name), label=True))
        zones = load_volume(case.path("zones"), label=True).data > 0
        full = load_volume(real_data_dir / "prostatex-t2w-zones" / case_id / "zones.nii.gz", label=True).data > 0
        assert zones.sum() == full.sum()  # the crop keeps the whole gland
