"""Dataset manifests: validation, offline import, checksums, fetch without network, CLI."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from prostseg.cli import main
from prostseg.errors import InputError
from prostseg.data.manifests import (
    fetch,
    import_local,
    list_manifests,
    load_manifest,
    manifest_dir,
    verify,
)

MANIFEST_FILES = sorted(manifest_dir().glob("*.json"))
SHAPE = (6, 5, 4)
AFFINE = np.diag([0.5, 0.5, 3.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def _write_msd_like(root: Path, cases: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a tiny MSD Task05-like folder; return each case's (4D image, label)."""
    rng = np.random.default_rng(0)
    written = {}
    for case, seed in cases.items():
        image = rng.normal(100 + seed, 10, SHAPE + (2,)).astype(np.float32)
        label = rng.integers(0, 3, SHAPE).astype(np.uint8)
        _save(root / "Task05_Prostate" / "imagesTr" / f"prostate_{case}.nii.gz", image)
        _save(root / "Task05_Prostate" / "labelsTr" / f"prostate_{case}.nii.gz", label)
        written[case] = (image, label)
    # a test image without label and a macOS resource fork must both be ignored
    _save(root / "Task05_Prostate" / "imagesTs" / "prostate_99.nii.gz", image)
    (root / "Task05_Prostate" / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"junk")
    return written


def _manifest_copy(tmp_path: Path, name: str, **changes) -> Path:
    """Write a modified copy of a packaged manifest and return its path."""
    raw = json.loads((manifest_dir() / f"{name}.json").read_text(encoding="utf-8"))
    raw.update(changes)
    path = tmp_path / "manifests" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(raw))
    return path


def _with_hash(tmp_path: Path, archive: Path, sha256: str) -> Path:
    raw = json.loads((manifest_dir() / "msd-prostate.json").read_text(encoding="utf-8"))
    raw["files"][0].update(sha256=sha256, md5=None, url="https://example.invalid/" + archive.name)
    return _manifest_copy(tmp_path, "msd-prostate", files=raw["files"])


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as bundle:
        bundle.add(folder / "Task05_Prostate", arcname="Task05_Prostate")
    return archive


# --- the packaged manifests ----------------------------------------------------------


def test_packaged_manifests_exist():
    assert {m.name for m in list_manifests()} >= {
        "msd-prostate", "prostatex-lesions", "prostatex-zones", "prostate158", "picai"
    }


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.stem)
def test_manifest_validates_and_documents_its_source(path):
    manifest = load_manifest(path)
    raw = manifest.raw
    assert raw["homepage"].startswith(("http://", "https://"))
    assert all(item["name"] and item["source"] for item in raw["licence"])
    assert all(item["text"] for item in raw["citation"])
    assert "t2w" in raw["layout"]["files"]


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.stem)
def test_manifest_hashes_are_well_formed_and_sourced(path):
    for entry in load_manifest(path).files:
        if entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        if entry.md5 is not None:
            assert re.fullmatch(r"[0-9a-f]{32}", entry.md5)
        if entry.sha256 or entry.md5:
            assert entry.checksum_source, f"{entry.filename}: a checksum needs its source"


def test_load_manifest_rejects_schema_violation_naming_the_file(tmp_path):
    path = _manifest_copy(tmp_path, "msd-prostate")
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["files"][0]["sha256"] = "abc123"  # not 64 hex digits
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=re.escape(str(path))) as info:
        load_manifest(path)
    assert "sha256" in info.value.problem


def test_load_manifest_rejects_bad_json_and_unknown_names(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_manifest(broken)
    with pytest.raises(InputError, match="no manifest named 'no-such-dataset'"):
        load_manifest("no-such-dataset")


# --- offline import ------------------------------------------------------------------


def test_import_local_converts_msd_layout(tmp_path):
    written = _write_msd_like(tmp_path / "src", {"00": 0, "02": 2})
    cases = import_local("msd-prostate", tmp_path / "src", tmp_path / "out")

    assert [c.name for c in cases] == ["msd_prostate_00", "msd_prostate_02"]
    for case_dir, (image, label) in zip(cases, written.values()):
        assert sorted(p.name for p in case_dir.iterdir()) == [
            "adc.nii.gz", "t2w.nii.gz", "zones.nii.gz"
        ]
        t2w = nib.load(case_dir / "t2w.nii.gz")
        np.testing.assert_allclose(t2w.get_fdata(), image[..., 0])
        np.testing.assert_allclose(nib.load(case_dir / "adc.nii.gz").get_fdata(), image[..., 1])
        np.testing.assert_allclose(t2w.affine, AFFINE)
        zones = nib.load(case_dir / "zones.nii.gz")
        assert zones.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asanyarray(zones.dataobj), label)
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.is_dir() and p.name.startswith(".")]
    assert leftovers == []


def test_imported_cases_are_discoverable(tmp_path):
    from prostseg.data.dataset import discover_cases

    _write_msd_like(tmp_path / "src", {"00": 0, "01": 1})
    import_local("msd-prostate", tmp_path / "src", tmp_path / "out")
    found = discover_cases(tmp_path / "out", require=("t2w", "adc", "zones"))
    assert [case.case_id for case in found] == ["msd_prostate_00", "msd_prostate_01"]
    assert found[0].path("zones") == tmp_path / "out" / "msd_prostate_00" / "zones.nii.gz"


def test_import_records_patient_ids_from_the_layout_pattern(tmp_path):
    from prostseg.preparation.splits import read_patient_ids

    _write_msd_like(tmp_path / "src", {"00": 0, "01": 1, "12": 2})
    layout = json.loads((manifest_dir() / "msd-prostate.json").read_text(encoding="utf-8"))["layout"]
    path = _manifest_copy(tmp_path, "msd-prostate", layout={**layout, "patient_id": r"^msd_prostate_(\d)"})
    cases = import_local(path, tmp_path / "src", tmp_path / "out")
    ids = [case.name for case in cases]
    assert read_patient_ids(tmp_path / "out", ids) == {
        "msd_prostate_00": "0", "msd_prostate_01": "0", "msd_prostate_12": "1"}
    assert load_manifest("picai").layout["patient_id"] == "^([^_]+)_"


def test_import_local_remaps_labels_and_merges_masks(tmp_path):
    """Prostate158-style swapped zone ids and PROSTATEx-style per-zone binary masks."""
    anatomy = np.zeros(SHAPE, np.uint8)
    anatomy[1:3] = 1  # central gland in Prostate158
    anatomy[3:5] = 2  # peripheral zone in Prostate158
    case = tmp_path / "p158" / "prostate158_train" / "train" / "020"
    _save(case / "t2.nii.gz", np.ones(SHAPE, np.float32))
    _save(case / "t2_anatomy_reader1.nii.gz", anatomy)
    (out,) = import_local("prostate158", tmp_path / "p158", tmp_path / "out")
    zones = np.asanyarray(nib.load(out / "zones.nii.gz").dataobj)
    np.testing.assert_array_equal(zones[1:3], 2)  # transition zone id
    np.testing.assert_array_equal(zones[3:5], 1)  # peripheral zone id
    assert not (out / "lesion.nii.gz").exists()  # no tumour mask: not labelled

    prostate = tmp_path / "px" / "PROSTATEx_masks-master" / "Files" / "prostate"
    pz = np.zeros(SHAPE, np.uint8)
    pz[0] = 1
    tz = np.zeros(SHAPE, np.uint8)
    tz[2] = 1
    _save(prostate / "Images" / "ProstateX-0007_t2_tse_tra_4.nii.gz", np.ones(SHAPE, np.int16))
    _save(prostate / "mask_pz" / "ProstateX-0007_pz.nii.gz", pz)
    _save(prostate / "mask_tz" / "ProstateX-0007_tz.nii.gz", tz)
    (out,) = import_local("prostatex-zones", tmp_path / "px", tmp_path / "out")
    assert out.name == "ProstateX-0007"
    np.testing.assert_array_equal(np.asanyarray(nib.load(out / "zones.nii.gz").dataobj), pz + 2 * tz)


def test_import_local_unions_lesion_findings(tmp_path):
    root = tmp_path / "src" / "Files" / "lesions"
    finding1 = np.zeros(SHAPE, np.uint8)
    finding1[1, 1, 1] = 1
    finding2 = np.zeros(SHAPE, np.uint8)
    finding2[4, 3, 2] = 255
    _save(root / "Images" / "T2" / "ProstateX-0001_t2_tse_tra_10.nii.gz", np.ones(SHAPE, np.int16))
    _save(root / "Masks" / "T2" / "ProstateX-0001-Finding1-t2_tse_tra_ROI.nii.gz", finding1)
    _save(root / "Masks" / "T2" / "ProstateX-0001-Finding2-t2_tse_tra_ROI.nii.gz", finding2)
    (out,) = import_local("prostatex-lesions", tmp_path / "src", tmp_path / "out")
    lesion = np.asanyarray(nib.load(out / "lesion.nii.gz").dataobj)
    assert set(np.unique(lesion)) == {0, 1}
    assert lesion.sum() == 2
    # the T2W image needed no conversion and is copied byte for byte
    source_t2w = root / "Images" / "T2" / "ProstateX-0001_t2_tse_tra_10.nii.gz"
    assert (out / "t2w.nii.gz").read_bytes() == source_t2w.read_bytes()


def test_import_local_rejects_mask_on_another_grid(tmp_path):
    root = tmp_path / "src" / "Files" / "lesions"
    _save(root / "Images" / "T2" / "ProstateX-0002_t2_tse_tra_4.nii.gz", np.ones(SHAPE, np.int16))
    bad = root / "Masks" / "T2" / "ProstateX-0002-Finding1-t2_tse_tra_ROI.nii.gz"
    _save(bad, np.ones((3, 3, 3), np.uint8))
    with pytest.raises(InputError, match=re.escape(str(bad))):
        import_local("prostatex-lesions", tmp_path / "src", tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())  # nothing half written


def test_import_local_rejects_unmapped_label_values(tmp_path):
    _write_msd_like(tmp_path / "src", {"00": 0})
    label_path = tmp_path / "src" / "Task05_Prostate" / "labelsTr" / "prostate_00.nii.gz"
    _save(label_path, np.full(SHAPE, 7, np.uint8))
    with pytest.raises(InputError, match=r"label values \[7\]"):
        import_local("msd-prostate", tmp_path / "src", tmp_path / "out")


def test_import_local_refuses_to_overwrite(tmp_path):
    _write_msd_like(tmp_path / "src", {"00": 0})
    (case,) = import_local("msd-prostate", tmp_path / "src", tmp_path / "out")
    (case / "t2w.nii.gz").write_bytes(b"user edits")
    with pytest.raises(InputError, match="overwrite=True"):
        import_local("msd-prostate", tmp_path / "src", tmp_path / "out")
    assert (case / "t2w.nii.gz").read_bytes() == b"user edits"

    import_local("msd-prostate", tmp_path / "src", tmp_path / "out", overwrite=True)
    assert nib.load(case / "t2w.nii.gz").shape == SHAPE


def test_import_local_checks_archive_checksum(tmp_path):
    _write_msd_like(tmp_path / "tree", {"00": 0})
    archives = tmp_path / "archives"
    archives.mkdir()
    archive = _tar(tmp_path / "tree", archives / "Task05_Prostate.tar")
    good = _with_hash(tmp_path, archive, hashlib.sha256(archive.read_bytes()).hexdigest())
    (case,) = import_local(good, archives, tmp_path / "out")
    assert (case / "zones.nii.gz").is_file()

    wrong = _with_hash(tmp_path, archive, "0" * 64)
    with pytest.raises(InputError, match="sha256 mismatch") as info:
        import_local(wrong, archives, tmp_path / "other")
    assert info.value.path == str(archive)


def test_verify_reports_changed_and_missing_files(tmp_path):
    _write_msd_like(tmp_path / "src", {"00": 0, "01": 1})
    first, second = import_local("msd-prostate", tmp_path / "src", tmp_path / "out")
    report = verify("msd-prostate", tmp_path / "out", cache_dir=tmp_path / "cache")
    assert report.ok, report.problems

    (first / "zones.nii.gz").write_bytes(b"tampered")
    shutil.rmtree(second)
    report = verify("msd-prostate", tmp_path / "out", cache_dir=tmp_path / "cache")
    assert len(report.problems) == 2
    assert any(str(first / "zones.nii.gz") in p and "sha256" in p for p in report.problems)
    assert any(str(second) in p and "missing" in p for p in report.problems)


# --- fetch without network -----------------------------------------------------------


def _copying_downloader(source: Path, calls: list):
    def download(url, output_file, pooch):
        calls.append(url)
        shutil.copyfile(source, output_file)

    return download


def test_fetch_with_injected_downloader_verifies_hash(tmp_path):
    _write_msd_like(tmp_path / "tree", {"00": 0})
    archive = _tar(tmp_path / "tree", tmp_path / "served.tar")
    manifest = _with_hash(tmp_path, archive, hashlib.sha256(archive.read_bytes()).hexdigest())
    calls = []
    cases = fetch(
        manifest,
        tmp_path / "out",
        cache_dir=tmp_path / "cache",
        downloader=_copying_downloader(archive, calls),
    )
    assert [c.name for c in cases] == ["msd_prostate_00"]
    assert calls == ["https://example.invalid/served.tar"]
    assert verify(manifest, tmp_path / "out", cache_dir=tmp_path / "cache").ok


def test_fetch_rejects_download_with_wrong_hash(tmp_path):
    _write_msd_like(tmp_path / "tree", {"00": 0})
    archive = _tar(tmp_path / "tree", tmp_path / "served.tar")
    manifest = _with_hash(tmp_path, archive, "f" * 64)
    with pytest.raises(InputError, match="Task05_Prostate.tar"):
        fetch(
            manifest,
            tmp_path / "out",
            cache_dir=tmp_path / "cache",
            downloader=_copying_downloader(archive, []),
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- command line --------------------------------------------------------------------


@pytest.mark.parametrize("columns", [60, 75, 120])
def test_cli_data_list_fits_the_terminal(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= columns
    entries = {}  # name -> its lines joined; continuation lines are indented
    for line in lines:
        if not line.startswith(" "):
            name = line.split()[0]
        entries[name] = f"{entries.get(name, '')} {line.strip()}"
    manifests = list_manifests()
    assert list(entries) == [manifest.name for manifest in manifests]
    for manifest in manifests:
        assert " ".join(manifest.title.split()) in entries[manifest.name]
        assert f"licence: {'; '.join(manifest.licence_names)}" in entries[manifest.name]


def test_cli_data_show_and_unknown_name(capsys):
    assert main(["data", "show", "msd-prostate"]) == 0
    out = capsys.readouterr().out
    assert "10.1038/s41467-022-30695-9" in out
    assert "Task05_Prostate.tar" in out

    assert main(["data", "show", "no-such-dataset"]) == 2
    assert "no manifest named" in capsys.readouterr().err


def test_cli_data_import_and_verify(tmp_path, capsys):
    _write_msd_like(tmp_path / "src", {"00": 0})
    out_dir = tmp_path / "out"
    assert main(["data", "import", "msd-prostate", str(tmp_path / "src"), str(out_dir)]) == 0
    assert "1 case(s)" in capsys.readouterr().out
    assert main(["data", "import", "msd-prostate", str(tmp_path / "src"), str(out_dir)]) == 2
    assert "overwrite" in capsys.readouterr().err
    args = ["data", "verify", "msd-prostate", str(out_dir), "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    (out_dir / "msd_prostate_00" / "adc.nii.gz").unlink()
    assert main(args) == 1
    assert "PROBLEM" in capsys.readouterr().out
