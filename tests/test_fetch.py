"""``prostseg data fetch`` case by case, against a local mirror of the source's files.

A thread serves, on 127.0.0.1, tiny phantom volumes under the real file paths of
rcuocolo/PROSTATEx_masks (taken from the packaged ``prostatex-zones`` index), counts the
requests per path, and can cut a file's body half-way. Nothing here needs the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from prostseg.cli import main
from prostseg.data.download import LOCK_FILE, NetworkError
from prostseg.data.manifests import fetch, import_local, load_manifest, manifest_dir, verify
from prostseg.errors import DataWarning, InputError

MANIFEST = load_manifest("prostatex-zones")
INDEX = MANIFEST.index["cases"]
SERVED = sorted(INDEX)[:5]  # the mirror holds the first five cases of the index
SHAPE = (8, 7, 3)
AFFINE = np.diag([0.5, 0.5, 3.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def _write_case(root: Path, case_id: str, seed: int, *, pz_value: int = 1, mask_shape=SHAPE) -> None:
    """A phantom case under the index's file names: T2W, PZ and TZ masks, gland mask."""
    rng = np.random.default_rng(seed)
    files = INDEX[case_id]
    _save(root / files["t2w"][0], rng.normal(300, 40, SHAPE).astype(np.int16))
    pz, tz = np.zeros(mask_shape, np.uint8), np.zeros(mask_shape, np.uint8)
    pz[1:3, 2:5, :] = pz_value
    tz[3:6, 2:5, :] = 1
    _save(root / files["zones"][0], pz)
    _save(root / files["zones"][1], tz)
    _save(root / files["gland"][0], ((pz > 0) | (tz > 0)).astype(np.uint8))


class _Mirror:
    """A local HTTP server over ``root``; ``requests`` lists the paths asked for."""

    def __init__(self, root: Path):
        self.root, self.requests, self.cut = root, [], set()
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                mirror.requests.append(name)
                if name in mirror.cut:  # announce the whole file, send half, hang up
                    body = (mirror.root / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    for seed, case_id in enumerate(SERVED):
        _write_case(root, case_id, seed)
    served = _Mirror(root)
    yield served
    served.close()


def _fetch_cli(mirror, tmp_path, *extra):
    return main(["data", "fetch", "prostatex-zones", str(tmp_path / "data"), "--mirror", mirror.url,
                 "--cache", str(tmp_path / "cache"), *extra])


def _files_of(case_ids):
    return sorted(name for case_id in case_ids for files in INDEX[case_id].values() for name in files)


def test_the_packaged_index_picks_a_fixed_subset_with_every_role():
    assert SERVED[:3] == ["ProstateX-0001", "ProstateX-0002", "ProstateX-0003"]
    for files in INDEX.values():
        assert set(files) == {"t2w", "zones", "gland"}
        assert files["t2w"][0].startswith(("Files/prostate/Images/", "Files/lesions/Images/T2/"))


def test_subset_fetch_writes_cases_a_lock_file_and_a_progress_bar(mirror, tmp_path, capsys):
    assert _fetch_cli(mirror, tmp_path, "--cases", "3", "--workers", "3") == 0
    captured = capsys.readouterr()
    assert "3 case(s) written" in captured.out
    assert "prostatex-zones" in captured.err and "12/12" in captured.err  # the tqdm bar
    data = tmp_path / "data"
    cases = sorted(p.name for p in data.iterdir() if p.is_dir())
    assert cases == SERVED[:3]
    for seed, case_id in enumerate(cases):
        files = sorted(p.name for p in (data / case_id).iterdir())
        assert files == ["gland.nii.gz", "t2w.nii.gz", "zones.nii.gz"]
        zones = np.asanyarray(nib.load(data / case_id / "zones.nii.gz").dataobj)
        pz = np.asanyarray(nib.load(mirror.root / INDEX[case_id]["zones"][0]).dataobj)
        tz = np.asanyarray(nib.load(mirror.root / INDEX[case_id]["zones"][1]).dataobj)
        np.testing.assert_array_equal(zones, pz + 2 * tz)
        gland = np.asanyarray(nib.load(data / case_id / "gland.nii.gz").dataobj)
        assert set(np.unique(gland)) == {0, 1}
    assert sorted(mirror.requests) == _files_of(SERVED[:3])
    lock = json.loads((data / LOCK_FILE).read_text())
    assert sorted(lock["files"]) == _files_of(SERVED[:3])
    for name, entry in lock["files"].items():
        body = (mirror.root / name).read_bytes()
        assert entry == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    # nothing written outside the destination and the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "mirror"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


def test_a_rerun_downloads_nothing_and_a_larger_subset_only_the_new_cases(mirror, tmp_path, capsys):
    assert _fetch_cli(mirror, tmp_path, "--cases", "3") == 0
    mirror.requests.clear()
    assert _fetch_cli(mirror, tmp_path, "--cases", "3") == 0
    assert mirror.requests == []
    assert "0 case(s) written" in capsys.readouterr().out
    assert _fetch_cli(mirror, tmp_path, "--case-ids", *SERVED[2:4]) == 0
    assert sorted(mirror.requests) == _files_of([SERVED[3]])


def test_a_fetch_cut_off_resumes_without_fetching_again_what_is_complete(mirror, tmp_path):
    cut = INDEX[SERVED[1]]["zones"][0]
    mirror.cut.add(cut)
    with pytest.raises(NetworkError) as info:
        fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=3, mirror=mirror.url,
              retries=2, backoff=0, progress=False)
    message = str(info.value)
    assert message.startswith(mirror.url + cut + ": cannot download: connection closed after")
    assert "(3 tries)" in message and "\n" not in message
    assert mirror.requests.count(cut) == 3
    assert not (tmp_path / "cache" / cut).exists()  # no half file
    locked = set(json.loads((tmp_path / "data" / LOCK_FILE).read_text())["files"])
    assert locked and cut not in locked

    mirror.cut.clear()
    mirror.requests.clear()
    written = fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=3,
                    mirror=mirror.url, progress=False)
    assert [case.name for case in written] == SERVED[:3]
    assert cut in mirror.requests
    assert not locked & set(mirror.requests)


def test_a_missing_file_names_its_url_and_the_other_cases_are_written(mirror, tmp_path, capsys):
    missing = INDEX[SERVED[1]]["gland"][0]
    (mirror.root / missing).unlink()
    assert _fetch_cli(mirror, tmp_path, "--cases", "3") == 2
    err = capsys.readouterr().err
    assert f"case {SERVED[1]} refused: {mirror.url}{missing}: cannot download: HTTP 404" in err
    assert "prostseg data: error: " in err and "1 of 3 case(s) refused, 2 written" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir()) == [SERVED[0], SERVED[2]]


def test_a_file_that_changed_since_the_lock_file_is_refused_and_not_kept(mirror, tmp_path):
    fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=3, mirror=mirror.url,
          progress=False)
    changed = INDEX[SERVED[1]]["zones"][1]
    tz = np.zeros(SHAPE, np.uint8)
    tz[4:7, 1:3, :] = 1
    _save(mirror.root / changed, tz)  # the mirror now serves other bytes
    (tmp_path / "cache" / changed).unlink()
    for case_id in SERVED[:3]:
        for path in (tmp_path / "data" / case_id).iterdir():
            path.unlink()
        (tmp_path / "data" / case_id).rmdir()
    with pytest.warns(DataWarning, match=f"{mirror.url}{changed}: sha256 mismatch"):
        with pytest.raises(InputError, match="1 of 3 case"):
            fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=3,
                  mirror=mirror.url, progress=False)
    assert not (tmp_path / "cache" / changed).exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir()) == [SERVED[0], SERVED[2]]


def test_a_published_checksum_wins_over_the_lock_file(mirror, tmp_path):
    raw = json.loads((manifest_dir() / "prostatex-zones.json").read_text(encoding="utf-8"))
    wrong = INDEX[SERVED[0]]["t2w"][0]
    raw["index"]["checksums"] = {wrong: {"size": 1, "sha256": "0" * 64}}
    path = tmp_path / "manifests" / "prostatex-zones.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    with pytest.warns(DataWarning, match=f"{wrong}: sha256 mismatch"):
        with pytest.raises(InputError, match="1 of 2 case"):
            fetch(path, tmp_path / "data", cache_dir=tmp_path / "cache", cases=2, mirror=mirror.url,
                  progress=False)
    assert not (tmp_path / "cache" / wrong).exists()
    lock = json.loads((tmp_path / "data" / LOCK_FILE).read_text())["files"]
    assert wrong not in lock and len(lock) == 7
    assert (tmp_path / "data" / SERVED[1]).is_dir() and not (tmp_path / "data" / SERVED[0]).exists()


def test_masks_on_another_grid_refuse_that_case_only(tmp_path):
    root = tmp_path / "mirror"
    for seed, case_id in enumerate(SERVED[:3]):
        _write_case(root, case_id, seed, mask_shape=(8, 7, 2) if seed == 1 else SHAPE)
    served = _Mirror(root)
    try:
        with pytest.warns(DataWarning, match=f"case {SERVED[1]} refused: .*not on the grid"):
            with pytest.raises(InputError, match="1 of 3 case"):
                fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=3,
                      mirror=served.url, progress=False)
    finally:
        served.close()
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir()) == [SERVED[0], SERVED[2]]


def test_a_stray_value_in_a_zone_mask_is_reported_and_binarised(tmp_path):
    root = tmp_path / "mirror"
    _write_case(root, SERVED[0], 0, pz_value=255)
    served = _Mirror(root)
    try:
        with pytest.warns(DataWarning, match=r"_pz.nii.gz: binary mask holds the value\(s\) \[255\]"):
            (case,) = fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=1,
                            mirror=served.url, progress=False)
    finally:
        served.close()
    assert set(np.unique(np.asanyarray(nib.load(case / "zones.nii.gz").dataobj))) == {0, 1, 2}


def test_three_digit_case_numbers_are_padded_with_a_warning(tmp_path):
    prostate = tmp_path / "src" / "Files" / "prostate"
    _save(prostate / "Images" / "ProstateX-0007_t2_tse_tra_4.nii.gz", np.ones(SHAPE, np.int16))
    pz = np.zeros(SHAPE, np.uint8)
    pz[0] = 1
    _save(prostate / "mask_pz" / "ProstateX-007_pz.nii.gz", pz)
    _save(prostate / "mask_tz" / "ProstateX-0007_tz.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.warns(DataWarning, match="ProstateX-007_pz.nii.gz: case number 007 .* ProstateX-0007"):
        (case,) = import_local("prostatex-zones", tmp_path / "src", tmp_path / "out")
    assert case.name == "ProstateX-0007"
    np.testing.assert_array_equal(np.asanyarray(nib.load(case / "zones.nii.gz").dataobj), pz)


def test_an_unreachable_server_is_one_line_naming_the_url(tmp_path):
    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}/"
    closed.server_close()  # nothing listens on that port any more
    with pytest.raises(NetworkError, match=r"^http://127\.0\.0\.1:\d+/Files/.*: cannot download: "
                                           r"connection refused \(2 tries\)$"):
        fetch(MANIFEST, tmp_path / "data", cache_dir=tmp_path / "cache", cases=1, mirror=url,
              retries=1, backoff=0, progress=False)
    assert not any(p.is_dir() for p in (tmp_path / "data").iterdir())


def test_verify_checks_downloads_against_the_lock_file(mirror, tmp_path, capsys):
    assert _fetch_cli(mirror, tmp_path, "--cases", "2") == 0
    args = ["data", "verify", "prostatex-zones", str(tmp_path / "data"), "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    assert f"matches {LOCK_FILE}" in capsys.readouterr().out
    damaged = tmp_path / "cache" / INDEX[SERVED[0]]["t2w"][0]
    damaged.write_bytes(b"damaged")
    assert main(args) == 1
    assert f"{damaged}: differs from {LOCK_FILE}" in capsys.readouterr().out
    assert not damaged.exists()


def test_options_an_archive_source_cannot_honour_are_refused(tmp_path, capsys):
    assert main(["data", "fetch", "msd-prostate", str(tmp_path / "d"), "--cases", "3"]) == 2
    assert "whole archives only" in capsys.readouterr().err
    assert main(["data", "fetch", "prostatex-zones", str(tmp_path / "d"), "--case-ids", "ProstateX-9999"]) == 2
    assert "no case ProstateX-9999" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser
        main(["data", "fetch", "prostatex-zones", str(tmp_path / "d"), "--workers", "0"])
    assert exit_info.value.code == 2
    assert "argument --workers: must be a whole number >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_the_fetch_chapter_12_prints_runs_against_a_mirror(tmp_path, capsys):
    from test_printed_commands import PROSTSEG

    (printed,) = [c for c in PROSTSEG if c.complete and c.source.startswith("book/12_scale.ipynb")
                  and c.words[1:4] == ("data", "fetch", "prostatex-zones") and "--workers" not in c.words]
    words = list(printed.words[1:])
    chosen = sorted(INDEX)[: int(words[words.index("--cases") + 1])]
    for seed, case_id in enumerate(chosen):
        _write_case(tmp_path / "mirror", case_id, seed)
    served = _Mirror(tmp_path / "mirror")
    words[3] = str(tmp_path / "data")  # the destination, relative to the repository in the book
    try:
        assert main([*words, "--mirror", served.url, "--cache", str(tmp_path / "cache")]) == 0
    finally:
        served.close()
    assert f"{len(chosen)} case(s) written" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir()) == chosen


def test_a_file_stored_under_a_three_digit_name_is_fetched_from_there_with_a_warning(mirror, tmp_path, capsys):
    listed = INDEX[SERVED[2]]["zones"][1]  # mask_tz/ProstateX-000N_tz.nii.gz
    served = listed.replace("ProstateX-0", "ProstateX-", 1)
    (mirror.root / listed).rename(mirror.root / served)
    assert _fetch_cli(mirror, tmp_path, "--cases", "3") == 0
    err = capsys.readouterr().err
    assert f"prostseg: warning: {mirror.url}{served}: {listed} is served under this irregular name" in err
    assert served in mirror.requests and listed in mirror.requests
    zones = nib.load(tmp_path / "data" / SERVED[2] / "zones.nii.gz").get_fdata()
    assert set(np.unique(zones)) == {0, 1, 2}
    assert listed in json.loads((tmp_path / "data" / LOCK_FILE).read_text(encoding="utf-8"))["files"]
    mirror.requests.clear()
    assert _fetch_cli(mirror, tmp_path, "--cases", "3") == 0  # the rerun asks for nothing
    assert mirror.requests == []


def test_every_indexed_case_names_its_series_and_the_three_masks():
    assert len(INDEX) == 169
    for case_id, files in INDEX.items():
        assert files["t2w"][0].rsplit("/", 1)[1].startswith(f"{case_id}_t2_tse_tra_")
        assert files["zones"] == [f"Files/prostate/mask_pz/{case_id}_pz.nii.gz",
                                  f"Files/prostate/mask_tz/{case_id}_tz.nii.gz"]
        assert files["gland"] == [f"Files/prostate/mask_prostate/{case_id}.nii.gz"]
