"""The bad-input corpus of ``tests/bad_inputs.md``, run through the command line and the API.

Each row of the first table names an input (built below), a ``prostseg`` command, the
expected exit status and the text the output must hold; each row of the second table
a call of the public API and the error it must raise. Commands run in this process,
one after the other (TensorFlow starts once), under a time limit: a hang, a traceback,
a wrong exit status, a missing message, a success where a refusal is due or a change to
any input fails the row. Rows whose input needs more than a generic placeholder have a
builder below, and every builder has its row.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import shutil
import signal
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import prostseg.atomic
from prostseg.cli import main
from prostseg.data.dataset import ALIGNED_FOLDER as ALIGNED
from prostseg.data.io import load_volume, volume_grid

pytestmark = pytest.mark.slow  # some rows train, predict or register

TABLE = Path(__file__).with_name("bad_inputs.md")
TIME_LIMIT_S = 240
TINY = ("--epochs 1 --steps-per-epoch 1 --batch-size 2 --image-size 32 --base-filters 2 --depth 1 "
        "--verbose 0 --split-file {split}")
TINY_P2P = "--epochs 1 --batch-size 1 --image-size 32 --base-filters 2 --verbose 0 --split-file {split}"
SPLIT = {"seed": 0, "train": ["phantom-000", "phantom-001"], "val": ["phantom-002"], "test": ["phantom-003"]}
COMMAND_COLUMNS = ("id", "input", "command", "exit", "expected")
CALL_COLUMNS = ("id", "input", "call", "raises", "expected")


class _Hang(BaseException):
    """Raised by the alarm when a row runs past its time limit (not an Exception: the
    command line must not catch it)."""


def _rows(columns=COMMAND_COLUMNS) -> list[dict[str, str]]:
    """The rows of the table whose header names ``columns``."""
    rows, inside = [], False
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != len(columns):
            inside = False
            continue
        if tuple(cells) == columns:
            inside = True
        elif inside and not set(cells[0]) <= {"-"}:
            rows.append(dict(zip(columns, cells)))
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


def _every_case(data: Path, name: str | None, change, dtype=None) -> None:
    """Edit file ``name`` of every case folder of ``data`` (``None``: every file of ``data``)."""
    for case in sorted(data.iterdir()):
        _edit(case if name is None else case / name, change, dtype)


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
    elif row_id in ("eval-exists", "eval-read-only", "eval-disk-full", "eval-out-txt", "eval-figure-xyz",
                    "eval-out-in-case", "eval-lesion-value-3"):
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
    elif row_id in ("import-shifted", "import-into-source"):
        extra["src"] = _shifted_lesion_source(tmp / "src")
    elif row_id == "phantom-exists":
        pass
    elif row_id in ("eval-lesion-255", "eval-lesion-255-stated"):
        extra["preds"] = _predictions(data, tmp / "preds", "lesion")
        _every_case(extra["preds"], None, _set_where_foreground(255, np.uint8), np.uint8)
        if row_id == "eval-lesion-255-stated":
            _every_case(data, "lesion.nii.gz", _set_where_foreground(255, np.uint8), np.uint8)
    elif row_id in ("train-split-bytes", "split-bytes"):
        extra["file"] = tmp / "split-bytes.json"
        extra["file"].write_bytes(np.random.default_rng(0).bytes(500))
    elif row_id == "predict-list-bytes":
        extra["file"] = tmp / "cases.txt"
        extra["file"].write_bytes(b"\xff\xfe" + np.random.default_rng(0).bytes(500))
    elif row_id in ("import-nan-sform-mask", "import-truncated-t2w"):
        extra["src"] = _zones_source(tmp / "src", broken="gland" if row_id == "import-nan-sform-mask" else "t2w")
    elif row_id == "register-tiny-overlap":
        t2w = nib.load(case / "t2w.nii.gz")
        affine = np.diag([2.0, 2.0, 3.0, 1.0])
        affine[:3, 3] = (t2w.affine @ [*(n / 2 for n in t2w.shape[:3]), 1])[:3]
        extra["file"] = _good_nifti(tmp / "tiny.nii.gz", np.random.default_rng(0).random((4, 4, 3)).astype(np.float32),
                                    affine)
    elif row_id == "manifest-bytes":
        extra["file"] = tmp / "manifest.json"
        extra["file"].write_bytes(np.random.default_rng(0).bytes(500))
    elif row_id == "train-config-bytes":
        extra["file"] = tmp / "config.json"
        extra["file"].write_bytes(np.random.default_rng(0).bytes(500))
    elif row_id in _GENERIC_ROWS:
        pass
    else:
        raise KeyError(f"no builder for row {row_id!r} of {TABLE.name}")
    return {"case": case, **extra}


#: Rows whose inputs are the phantom data, generic placeholders ({vol:NAME}, {model}) or
#: nothing at all (a flag out of range).
_GENERIC_ROWS = {row["id"] for row in _rows() + _rows(CALL_COLUMNS)
                 if not re.search(r"\{(file|preds|src)\}", row.get("command", row.get("call")))}


def _zones_source(root: Path, broken: str) -> Path:
    """One case of Cuocolo's PROSTATEx layout (ProstateX-0001) whose ``broken`` file is
    damaged: the gland mask's sform holds NaN, or the T2W is cut short."""
    from prostseg.data.manifests import load_manifest

    files = load_manifest("prostatex-zones").index["cases"]["ProstateX-0001"]
    rng = np.random.default_rng(0)
    masks = {"t2w": (rng.random((8, 8, 4)) * 500).astype(np.float32)}
    masks["gland"] = np.zeros((8, 8, 4), np.uint8)
    masks["gland"][2:6, 2:6, 1:3] = 1
    for role, names in files.items():
        for name in names:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _good_nifti(path, masks.get(role, masks["gland"]))
    target = root / files[broken][0]
    if broken == "gland":
        _patched_nifti(masks["gland"], srow_x=[np.nan, 0, 0, 0])(target)
    else:
        _truncate(target)
    return root


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


# --- volumes with one thing wrong, written on demand by {vol:NAME} ------------------


def _good_nifti(path: Path, array=None, affine=None) -> Path:
    array = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32) if array is None else array
    nib.save(nib.Nifti1Image(array, np.diag([0.5, 0.5, 3.0, 1.0]) if affine is None else affine), path)
    return path


def _patched_nifti(array=None, **fields):
    """A NIfTI whose stored header fields are replaced as written (no fixes); compressed
    when the name ends in ``.gz``."""
    def write(path: Path) -> None:
        plain = path.with_name("plain-" + path.name.removesuffix(".gz"))
        _good_nifti(plain, array)
        content = plain.read_bytes()
        plain.unlink()
        header = nib.Nifti1Header(content[:348], check=False)
        for name, value in fields.items():
            header[name] = value
        content = header.binaryblock + content[348:]
        path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return write


def _cut(fraction=None, keep=None, base=None):
    """The first bytes of a good volume (``base``: one of ``_VOLUMES``, by default a NIfTI)."""
    def write(path: Path) -> None:
        full = path.with_name("full" + "".join(path.suffixes))
        _VOLUMES[base](full) if base else _good_nifti(full)
        content = full.read_bytes()
        path.write_bytes(content[: keep if keep is not None else int(len(content) * fraction)])
        full.unlink()
    return write


def _itk_file(array, *, vector=False):
    def write(path: Path) -> None:
        import itk

        itk.imwrite(itk.image_from_array(np.ascontiguousarray(array), is_vector=vector), str(path))
    return write


def _edited_text(base: str, old: bytes, new: bytes):
    def write(path: Path) -> None:
        source = path.with_name("base-" + base)
        _VOLUMES[base](source)
        content = source.read_bytes()
        assert old in content, (base, old)
        path.write_bytes(content.replace(old, new, 1))
        source.unlink()
    return write


def _array_nifti(array, affine=None):
    return lambda path: _good_nifti(path, array, affine)


def _nan_image(path: Path) -> None:
    array = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    array[2, 2, 2] = np.nan
    _good_nifti(path, array)


def _rgb(path: Path) -> None:
    array = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def _missing_data_file(path: Path) -> None:
    _VOLUMES["ok.mha"](path.with_suffix(".mha"))
    header = path.with_suffix(".mha").read_bytes().split(b"ElementDataFile")[0]
    path.with_suffix(".mha").unlink()
    path.write_bytes(header + b"ElementDataFile = missing.raw\n")


_FLOAT = np.random.default_rng(1).random((4, 8, 8)).astype(np.float32)  # ITK order (z, y, x)
_VOLUMES = {
    # NIfTI headers that lie or cannot place the voxels in space
    "huge.nii": _patched_nifti(dim=[3, 3000, 3000, 3000, 1, 1, 1, 1]),
    "huge-4d.nii": _patched_nifti(dim=[4, 1000, 1000, 100, 100, 1, 1, 1]),
    "long-axis.nii": _patched_nifti(dim=[3, 32000, 8, 4, 1, 1, 1, 1]),
    "zero-axis.nii": _patched_nifti(dim=[3, 8, 0, 4, 1, 1, 1, 1]),
    "nan-sform.nii": _patched_nifti(srow_x=[np.nan, 0, 0, 0]),
    "inf-sform.nii": _patched_nifti(srow_y=[0, np.inf, 0, 0]),
    "nan-offset.nii": _patched_nifti(srow_z=[0, 0, 3, np.nan]),
    "zero-pixdim.nii": _patched_nifti(sform_code=0, qform_code=0, pixdim=[1, 0.5, 0.5, 0, 1, 1, 1, 1]),
    "nan-pixdim.nii": _patched_nifti(sform_code=0, qform_code=1, pixdim=[1, np.nan, 0.5, 3, 1, 1, 1, 1]),
    "negative-pixdim.nii": _patched_nifti(sform_code=0, qform_code=0, pixdim=[1, 0.5, -0.5, 3, 1, 1, 1, 1]),
    "nan-qform.nii": _patched_nifti(sform_code=0, qform_code=1, quatern_b=np.nan),
    "zero-spacing.nii": _patched_nifti(srow_z=[0, 0, 0, 0]),
    "zero-affine.nii": _patched_nifti(srow_x=[0, 0, 0, 0], srow_y=[0, 0, 0, 0], srow_z=[0, 0, 0, 0]),
    "rank2-affine.nii": _patched_nifti(srow_x=[1, 1, 0, 0], srow_y=[1, 1, 0, 0], srow_z=[0, 0, 3, 0]),
    "cifti.nii": _patched_nifti(intent_code=3006),
    "unknown-datatype.nii": _patched_nifti(datatype=1234),
    "no-magic.nii": _patched_nifti(magic=b"abc"),
    "seven-dims.nii": _patched_nifti(dim=[9, 8, 8, 4, 1, 1, 1, 1]),
    # NIfTI voxels prostseg cannot take as an image
    "complex.nii.gz": _array_nifti(np.zeros((8, 8, 4), np.complex64)),
    "rgb.nii": _rgb,
    "2d.nii.gz": _array_nifti(np.zeros((8, 8), np.float32)),
    "4d.nii.gz": _array_nifti(np.zeros((8, 8, 4, 3), np.float32)),
    "nan-voxels.nii.gz": _nan_image,
    # broken files
    "random.nii.gz": lambda path: path.write_bytes(np.random.default_rng(0).bytes(3000)),
    "random.nii": lambda path: path.write_bytes(np.random.default_rng(0).bytes(3000)),
    "empty.nii.gz": lambda path: path.write_bytes(b""),
    "tiny-file.nii": lambda path: path.write_bytes(b"\x5c\x01\x00\x00" + b"\x00" * 100),
    "truncated.nii.gz": _cut(0.5),
    "truncated.nii": _cut(keep=1000),
    "text.nrrd": lambda path: path.write_text("not an image\n"),
    "random.mha": lambda path: path.write_bytes(np.random.default_rng(0).bytes(3000)),
    # NRRD and MetaImage
    "ok.mha": _itk_file(_FLOAT),
    "ok.nrrd": _itk_file((_FLOAT * 1000).astype(np.int16)),
    "vector.mha": _itk_file(np.zeros((4, 8, 8, 3), np.float32), vector=True),
    "two-channel.nrrd": _itk_file(np.zeros((4, 8, 8, 2), np.float32), vector=True),
    "unknown-type.mha": _edited_text("ok.mha", b"MET_FLOAT", b"MET_OTHER"),
    "truncated.mha": _cut(keep=400, base="ok.mha"),
    "huge.mha": _edited_text("ok.mha", b"DimSize = 8 8 4", b"DimSize = 3000 3000 3000"),
    "zero-spacing.mha": _edited_text("ok.mha", b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 1 0"),
    "nan-spacing.mha": _edited_text("ok.mha", b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 nan 1"),
    "nan-spacing.nrrd": _edited_text("ok.nrrd", b"space directions: (1,0,0) (0,1,0) (0,0,1)",
                                     b"space directions: (nan,0,0) (0,nan,0) (0,0,nan)"),
    "inf-origin.nrrd": _edited_text("ok.nrrd", b"space origin: (0,0,0)", b"space origin: (0,inf,0)"),
    "singular.mha": _edited_text("ok.mha", b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                 b"TransformMatrix = 1 0 0 1 0 0 0 0 1"),
    "missing-data.mhd": _missing_data_file,
    # volumes that must be read
    "las.nii.gz": _array_nifti(np.random.default_rng(2).random((8, 8, 4)).astype(np.float32),
                               np.diag([-0.5, 0.5, 3.0, 1.0])),
    "int8.nii.gz": _array_nifti((np.random.default_rng(3).random((8, 8, 4)) * 100).astype(np.int8)),
    "uint16.nii": _array_nifti((np.random.default_rng(4).random((8, 8, 4)) * 4000).astype(np.uint16)),
    "singleton-4d.nii.gz": _array_nifti(np.random.default_rng(5).random((8, 8, 4, 1)).astype(np.float32)),
}


def _volume(tmp: Path, name: str) -> Path:
    folder = tmp / "volumes"
    folder.mkdir(exist_ok=True)
    path = folder / name
    if not path.exists():
        _VOLUMES[name](path)
    return path


# --- running a row ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, phantom_dir) -> Path:
    """A tiny U-Net (32 x 32 slices) in its run folder, trained once for the module."""
    run = tmp_path_factory.mktemp("model") / "run"
    split = run.parent / "split.json"
    split.write_text(json.dumps(SPLIT))
    assert main(["train", "unet", "--data-dir", str(phantom_dir), "--out", str(run),
                 *TINY.replace("{split}", str(split)).split()]) == 0
    return run / "model.keras"


def _run(argv: list[str], inject: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: exit status, stdout, stderr; a traceback or a hang fails."""
    out, err = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise _Hang

    def disk_full(path):
        raise OSError(28, "No space left on device")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(TIME_LIMIT_S)
    fsync = prostseg.atomic._fsync
    if inject == "enospc":
        prostseg.atomic._fsync = disk_full
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:  # the parser refused an argument
                code = exit_.code
    except _Hang:
        pytest.fail(f"hang: `prostseg {' '.join(argv)}` ran past {TIME_LIMIT_S} s")
    except Exception:
        pytest.fail(f"traceback from `prostseg {' '.join(argv)}`:\n{traceback.format_exc()}\n{err.getvalue()}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        prostseg.atomic._fsync = fsync
    return code, out.getvalue(), err.getvalue()


def _snapshot(root: Path, skip: Path) -> dict[Path, tuple[int, int]]:
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")
            if path.is_file() and not path.is_relative_to(skip)}


def _places(row_id: str, phantom_dir: Path, tmp_path: Path, model: Path | None) -> dict[str, Path]:
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data, ignore=shutil.ignore_patterns("aligned"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps(SPLIT))
    return {"data": data, "out": tmp_path / "out", "split": split, "tmp": tmp_path,
            **({"model": model} if model is not None else {}), **_build(row_id, data, tmp_path)}


def _filler(places: dict[str, Path], tmp_path: Path, quote: bool = False):
    def fill(text: str) -> str:
        text = text.replace("{tiny}", TINY).replace("{tiny_p2p}", TINY_P2P)
        text = re.sub(r"\{vol:([\w.-]+)\}", lambda m: _quoted(_volume(tmp_path, m[1]), quote), text)
        return re.sub(r"\{(\w+)\}", lambda m: _quoted(places[m[1]], quote), text)
    return fill


def _quoted(path, quote: bool) -> str:
    return repr(str(path)) if quote else str(path)


def _check_outcome(row: dict[str, str], places: dict[str, Path], fill) -> None:
    """What a successful row must have produced (no silent wrong results)."""
    row_id, out = row["id"], places["out"]
    if row_id in ("lesion-255-stated", "all-masks-empty"):
        assert (out / "model.keras").is_file() and (out / "history.csv").is_file()
        assert json.loads((out / "config.json").read_text(encoding="utf-8"))["lesion_value"] == (
            255 if row_id == "lesion-255-stated" else 1)
    elif row_id == "register-no-gain":
        report = json.loads((places["case"] / "aligned" / "registration.json").read_text(encoding="utf-8"))
        assert report["adc"]["mi_improved"] is False
        assert "did not raise the mutual information" in report["adc"]["warning"]
    elif row_id == "eval-lesion-255-stated":
        rows = (out / "scores.csv").read_text(encoding="utf-8").splitlines()
        assert len(rows) == 6 and all(line.split(",")[2] == "1.0" for line in rows[1:]), rows
    elif row["command"].startswith("`predict "):
        command = row["command"].strip("`")
        prediction = Path(fill(re.search(r"--out (\S+)", command)[1]))
        source = Path(fill(re.search(r"--image (\S+)", command)[1]))
        labels = load_volume(prediction, label=True)
        shape, affine = volume_grid(source)  # the source's grid, in canonical order
        assert labels.shape == shape and np.allclose(labels.affine, affine, atol=1e-4)
        assert set(np.unique(labels.data)) <= {0, 1}
    else:
        raise KeyError(f"no outcome check for row {row_id!r}")


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row["id"])
def test_bad_input_row(row, phantom_dir, tmp_path, monkeypatch, request):
    model = request.getfixturevalue("trained_model") if "{model}" in row["command"] and \
        row["id"] not in ("keras-garbage", "keras-empty", "keras-unknown-kind") else None
    places = _places(row["id"], phantom_dir, tmp_path, model)
    fill = _filler(places, tmp_path)
    command = fill(row["command"].strip("`")).split()
    monkeypatch.chdir(tmp_path)
    inputs = [tmp_path] + ([model.parent] if model is not None else [])
    before = [_snapshot(root, places["out"]) for root in inputs]

    code, stdout, stderr = _run(command, "enospc" if "ENOSPC" in row["input"] else "none")

    assert "Traceback" not in stderr, stderr
    assert code == int(row["exit"]), f"exit {code}, expected {row['exit']}:\n{stderr}"
    expected = fill(row["expected"].strip("`"))
    assert expected in stderr + stdout, f"expected {expected!r} in:\n{stderr + stdout}"
    changed = [path for snapshot in before for path, stamp in snapshot.items() if ALIGNED not in path.parts
               and (not path.exists() or (path.stat().st_size, path.stat().st_mtime_ns) != stamp)]
    assert not changed, f"the command changed or removed its inputs: {changed}"
    if code == 0:
        _check_outcome(row, places, fill)
    else:
        written = [path for path in places["out"].rglob("*") if path.is_file()] if places["out"].exists() else []
        assert not written, f"a failed command wrote {written}"
        errors = [line for line in stderr.splitlines() if line.startswith("prostseg ") and "error:" in line]
        assert len(errors) == 1, stderr
        others = [line for line in stderr.splitlines() if line.strip() and not line.startswith("prostseg")
                  and not line.startswith("  ")  # a data check lists each bad file indented
                  and not re.search(r"\d+%\|", line)]  # a progress bar
        assert not others, f"lines besides the error:\n{stderr}"


@pytest.mark.parametrize("row", _rows(CALL_COLUMNS), ids=lambda row: row["id"])
def test_bad_api_call(row, phantom_dir, tmp_path):
    import prostseg.data.dataset
    import prostseg.data.io
    import prostseg.data.manifests
    import prostseg.data.phantom
    import prostseg.networks.runs
    import prostseg.preparation.preprocessing
    import prostseg.preparation.slice_cache
    import prostseg.preparation.splits
    import prostseg.use.batch
    import prostseg.use.inference
    from prostseg.errors import InputError

    places = _places(row["id"], phantom_dir, tmp_path, None)
    call = _filler(places, tmp_path, quote=True)(row["call"].strip("`"))
    namespace = {"np": np, "Path": Path, "io": prostseg.data.io, "phantom": prostseg.data.phantom,
                 "dataset": prostseg.data.dataset, "manifests": prostseg.data.manifests,
                 "runs": prostseg.networks.runs, "preprocessing": prostseg.preparation.preprocessing,
                 "slice_cache": prostseg.preparation.slice_cache, "splits": prostseg.preparation.splits,
                 "batch": prostseg.use.batch, "inference": prostseg.use.inference}
    before = _snapshot(tmp_path, places["out"])
    with pytest.raises(InputError) as caught:
        eval(call, namespace)  # noqa: S307 -- the table's own calls
    assert row["raises"] == "InputError"
    assert _filler(places, tmp_path)(row["expected"].strip("`")) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert _snapshot(tmp_path, places["out"]) == before


def test_the_table_covers_every_category():
    rows, calls = _rows(), _rows(CALL_COLUMNS)
    ids = [row["id"] for row in rows + calls]
    assert len(ids) == len(set(ids)) >= 150
    assert {row["exit"] for row in rows} == {"0", "2"}
    commands = {row["command"].strip("`").split()[0] for row in rows}
    assert commands >= {"train", "evaluate", "register", "register-case", "predict", "data", "phantom",
                        "prepare", "register-dataset", "export"}
    used = {match for row in rows + calls for match in re.findall(r"\{vol:([\w.-]+)\}",
                                                                 row.get("command", row.get("call", "")))}
    assert used == set(_VOLUMES), f"volumes without a row: {set(_VOLUMES) - used}; unknown: {used - set(_VOLUMES)}"


def test_every_builder_has_its_row():
    source = Path(__file__).read_text(encoding="utf-8")
    built = set(re.findall(r'row_id == "([\w-]+)"', source)) | {
        name for group in re.findall(r"row_id in \(([^)]*)\)", source) for name in re.findall(r'"([\w-]+)"', group)}
    assert built <= {row["id"] for row in _rows() + _rows(CALL_COLUMNS)}


def test_start_up_is_quiet_unless_verbose(trained_model, phantom_dir, tmp_path):
    """No TensorFlow, absl or CUDA start-up lines reach the console of a command (they
    are written below Python, so only a separate process shows them)."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "prostseg", "predict", "--model", str(trained_model),
               "--image", str(phantom_dir / "phantom-003"), "--out"]
    done = subprocess.run([*command, str(tmp_path / "p.nii.gz")], capture_output=True, text=True,
                          env=env, timeout=TIME_LIMIT_S)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    refused = subprocess.run([*command, str(tmp_path / "p.png")], capture_output=True, text=True,
                             env=env, timeout=TIME_LIMIT_S)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    shown = subprocess.run([command[0], "-m", "prostseg", "--verbose", *command[3:], str(tmp_path / "q.nii.gz")],
                           capture_output=True, text=True, env=env, timeout=TIME_LIMIT_S)
    assert shown.returncode == 0 and shown.stderr.strip(), "--verbose should let TensorFlow's lines through"
