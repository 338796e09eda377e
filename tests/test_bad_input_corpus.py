"""The bad-input corpus of ``tests/bad_inputs.md``, run through the command line.

Each row of the table names an input that a builder below generates, the command, the
expected exit status and the text the output must hold. Every command runs in its
own process under a time limit: a hang, a traceback, a wrong exit status or a missing
message fails the row. The table and the builders must match one to one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import prostseg

pytestmark = pytest.mark.slow  # one process per row, most start TensorFlow

TABLE = Path(__file__).with_name("bad_inputs.md")
TIME_LIMIT_S = 240
TINY = ("--epochs 1 --steps-per-epoch 1 --batch-size 2 --image-size 32 --base-filters 2 --depth 1 "
        "--verbose 0 --split-file {split}")
TINY_P2P = "--epochs 1 --batch-size 1 --image-size 32 --base-filters 2 --verbose 0 --split-file {split}"
SPLIT = {"seed": 0, "train": ["phantom-000", "phantom-001"], "val": ["phantom-002"], "test": ["phantom-003"]}

# Runs the command line's main() in a fresh interpreter; "enospc" first makes every
# atomic write fail as a full disk would.
RUNNER = """
import errno, sys
import prostseg.atomic
if sys.argv[1] == "enospc":
    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    prostseg.atomic._fsync = disk_full
from prostseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _rows() -> list[dict[str, str]]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("id", "---") and not set(cells[0]) <= {"-"}:
            rows.append(dict(zip(("id", "input", "command", "exit", "expected"), cells)))
    return rows


# --- building the inputs -------------------------------------------------------------


def _edit(path: Path, change, dtype=None) -> None:
    """Rewrite a NIfTI file with ``change(array)``, keeping its affine."""
    image = nib.load(path)
    array = np.asanyarray(image.dataobj).astype(dtype or image.get_data_dtype())
    array = change(array)
    nib.save(nib.Nifti1Image(array, image.affine), path)


def _set_where_foreground(value, dtype):
    def change(array):
        array = array.copy()
        array[array > 0] = value
        if not (array == value).any():  # a case without a lesion: mark one voxel
            array[tuple(n // 2 for n in array.shape)] = value
        return array
    return change


def _empty(array):
    return np.zeros_like(array)


def _every_case(data: Path, name: str, change, dtype=None) -> None:
    for case in sorted(data.iterdir()):
        _edit(case / name, change, dtype)


def _stacks(data: Path) -> None:
    """aligned/stack.nii.gz (T2W in all three channels) for every case."""
    for case in sorted(data.iterdir()):
        t2w = nib.load(case / "t2w.nii.gz")
        stack = np.repeat(np.asanyarray(t2w.dataobj).astype(np.float32)[..., None], 3, axis=-1)
        (case / "aligned").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(stack, t2w.affine), case / "aligned" / "stack.nii.gz")


def _predictions(data: Path, folder: Path, name: str) -> Path:
    folder.mkdir()
    for case in sorted(data.iterdir()):
        shutil.copyfile(case / f"{name}.nii.gz", folder / f"{case.name}.nii.gz")
    return folder


def _truncate(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def _nan_voxels(count):
    def change(array):
        array = array.astype(np.float32)
        array.flat[:count] = np.nan
        return array
    return change


def _build(row_id: str, data: Path, tmp: Path) -> dict[str, str]:
    """Generate the input of a row; return the placeholders it adds."""
    case = data / "phantom-000"
    extra = {}
    if row_id == "lesion-half":
        _edit(data / "phantom-001" / "lesion.nii.gz", _set_where_foreground(0.5, np.float32), np.float32)
    elif row_id == "lesion-negative":
        _edit(data / "phantom-000" / "lesion.nii.gz", _set_where_foreground(-1, np.int16), np.int16)
    elif row_id in ("lesion-255", "lesion-255-stated"):
        _every_case(data, "lesion.nii.gz", _set_where_foreground(255, np.uint8), np.uint8)
    elif row_id == "zone-7-train":
        _edit(data / "phantom-002" / "zones.nii.gz", _set_where_foreground(7, np.uint8))
    elif row_id == "t2w-nan":
        _edit(data / "phantom-000" / "t2w.nii.gz", _nan_voxels(10), np.float32)
    elif row_id == "t2w-inf":
        _edit(data / "phantom-002" / "t2w.nii.gz", lambda a: np.where(a == a.max(), np.inf, a), np.float32)
    elif row_id == "many-problems":
        _edit(data / "phantom-000" / "t2w.nii.gz", _nan_voxels(3), np.float32)
        _edit(data / "phantom-001" / "lesion.nii.gz", _set_where_foreground(0.5, np.float32), np.float32)
        _truncate(data / "phantom-002" / "lesion.nii.gz")
    elif row_id == "t2w-truncated":
        _truncate(data / "phantom-001" / "t2w.nii.gz")
    elif row_id in ("drop-empty-nothing", "oversample-nothing", "all-masks-empty"):
        _every_case(data, "lesion.nii.gz", _empty)
    elif row_id == "stack-nan":
        _stacks(data)
        _edit(data / "phantom-001" / "aligned" / "stack.nii.gz", _nan_voxels(5), np.float32)
    elif row_id == "zone-7-pix2pix":
        _stacks(data)
        _edit(data / "phantom-000" / "zones.nii.gz", _set_where_foreground(7, np.uint8))
    elif row_id == "pix2pix-batch":
        _stacks(data)
    elif row_id == "out-not-a-folder":
        extra["file"] = tmp / "a-file"
        extra["file"].write_text("not a folder")
    elif row_id == "eval-pred-zone-7":
        preds = _predictions(data, tmp / "preds", "zones")
        _edit(preds / "phantom-000.nii.gz", _set_where_foreground(7, np.uint8))
        extra["preds"] = preds
    elif row_id == "eval-truth-zone-7":
        _edit(data / "phantom-001" / "zones.nii.gz", _set_where_foreground(7, np.uint8))
        extra["preds"] = _predictions(data, tmp / "preds", "zones")
    elif row_id in ("eval-exists", "eval-read-only", "eval-disk-full"):
        extra["preds"] = _predictions(data, tmp / "preds", "lesion")
        extra["file"] = tmp / "scores.csv"
        extra["file"].write_text("made by the user\n")
        if row_id == "eval-read-only":
            extra["file"].chmod(0o444)
    elif row_id == "phantom-disk-full":
        pass
    elif row_id == "register-zero":
        extra["file"] = tmp / "zero.nii.gz"
        shutil.copyfile(case / "adc.nii.gz", extra["file"])
        _edit(extra["file"], _empty)
    elif row_id == "register-case-zero-adc":
        shutil.rmtree(case / "aligned", ignore_errors=True)
        _edit(case / "adc.nii.gz", _empty)
    elif row_id == "register-no-gain":
        shutil.rmtree(case / "aligned", ignore_errors=True)
        shutil.copyfile(case / "t2w.nii.gz", case / "adc.nii.gz")
    elif row_id == "keras-garbage":
        extra["model"] = tmp / "model.keras"
        extra["model"].write_bytes(np.random.default_rng(0).bytes(2000))
    elif row_id == "keras-empty":
        extra["model"] = tmp / "model.keras"
        extra["model"].write_bytes(b"")
    elif row_id == "keras-unknown-kind":
        import keras

        extra["model"] = tmp / "model.keras"
        image = keras.Input((32, 32, 1))
        keras.Model(image, keras.layers.Activation("sigmoid")(image), name="mine").save(extra["model"])
    elif row_id == "import-shifted":
        extra["src"] = _shifted_lesion_source(tmp / "src")
    elif row_id == "phantom-exists":
        pass
    else:
        raise KeyError(f"no builder for row {row_id!r} of {TABLE.name}")
    return {"case": case, **extra}


def _shifted_lesion_source(root: Path) -> Path:
    """A ProstateX-lesions-like folder whose mask has the T2W's shape but lies 50 mm away."""
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    shifted = affine.copy()
    shifted[0, 3] += 50.0
    t2w = root / "Files" / "lesions" / "Images" / "T2" / "ProstateX-0002_t2_tse_tra_4.nii.gz"
    mask = root / "Files" / "lesions" / "Masks" / "T2" / "ProstateX-0002-Finding1-t2_tse_tra_ROI.nii.gz"
    for path, array, matrix in ((t2w, np.ones((16, 16, 4), np.int16), affine),
                                (mask, np.ones((16, 16, 4), np.uint8), shifted)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, matrix), path)
    return root


# --- checking what was written ------------------------------------------------------


def _check_outcome(row_id: str, places: dict[str, Path]) -> None:
    """What a successful row must have produced (no silent wrong results)."""
    out = places["out"]
    if row_id in ("lesion-255-stated", "all-masks-empty"):
        assert (out / "model.keras").is_file() and (out / "history.csv").is_file()
        assert json.loads((out / "config.json").read_text(encoding="utf-8"))["lesion_value"] == (
            255 if row_id == "lesion-255-stated" else 1)
    elif row_id == "register-no-gain":
        report = json.loads((places["case"] / "aligned" / "registration.json").read_text(encoding="utf-8"))
        assert report["adc"]["mi_improved"] is False
        assert "did not raise the mutual information" in report["adc"]["warning"]
    else:
        raise KeyError(f"no outcome check for row {row_id!r}")


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row["id"])
def test_bad_input_row(row, phantom_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data, ignore=shutil.ignore_patterns("aligned"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT))
    places = {"data": data, "out": tmp_path / "out", "split": split, **_build(row["id"], data, tmp_path)}
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}

    def fill(text: str) -> str:
        text = text.replace("{tiny}", TINY).replace("{tiny_p2p}", TINY_P2P)
        return re.sub(r"\{(\w+)\}", lambda m: str(places[m[1]]), text)

    command = fill(row["command"].strip("`")).split()
    inject = "enospc" if "ENOSPC" in row["input"] else "none"
    env = {**os.environ, "PYTHONPATH": str(Path(prostseg.__file__).parents[1]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run([sys.executable, "-c", RUNNER, inject, *command], capture_output=True,
                              text=True, timeout=TIME_LIMIT_S, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: `prostseg {' '.join(command)}` ran past {TIME_LIMIT_S} s")

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == int(row["exit"]), done.stderr
    expected = fill(row["expected"].strip("`"))
    output = done.stderr + done.stdout
    assert expected in output, f"expected {expected!r} in:\n{output}"
    if done.returncode == 0:
        _check_outcome(row["id"], places)
    else:
        written = [path for path in places["out"].rglob("*") if path.is_file()] if places["out"].exists() else []
        assert not written, f"a failed command wrote {written}"
        changed = [path for path, mtime in before.items() if path.exists() and path.stat().st_mtime_ns != mtime]
        assert not changed, f"a failed command changed {changed}"
        errors = [line for line in done.stderr.splitlines() if line.startswith("prostseg ") and "error:" in line]
        assert len(errors) == 1, done.stderr


def test_the_table_covers_every_category():
    rows = _rows()
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) >= 25
    assert {row["exit"] for row in rows} == {"0", "2"}
    commands = {row["command"].strip("`").split()[0] for row in rows}
    assert commands >= {"train", "evaluate", "register", "register-case", "predict", "data", "phantom"}
