"""Every output is written through ``prostseg.atomic.atomic_path``; write errors name the path.

Two kinds of test:

* a source scan: every call in the package that writes a file (``nib.save``,
  ``savefig``, ``write_text``, ``open(..., "w")``, ``model.save``...) must sit inside a
  ``with atomic_path(...) as tmp`` block and write to ``tmp``, unless it is listed in
  ``NOT_ATOMIC`` with the reason;
* a behaviour check: each kind of output (NIfTI volume, prediction, JSON, CSV, figure,
  transform file, phantom case, import record) is produced through the helper, seen by
  recording the temporary files it flushes.
"""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import prostseg
import prostseg.atomic
from prostseg.atomic import atomic_path
from prostseg.errors import OutputError

PACKAGE = Path(prostseg.__file__).parent

# Method names whose call writes a file.
WRITING_METHODS = {"save", "savefig", "write_text", "write_bytes", "to_filename", "WriteParameterFile",
                   "extractall"}
# shutil functions that write their second argument.
SHUTIL_WRITES = {"copyfile", "copy", "copy2", "copytree", "move"}

# (module, function, method) of writes that are atomic in another way or not ours yet.
NOT_ATOMIC = {
    ("data/manifests.py", "_write_case", "to_filename"): "into a staging folder renamed into place as a whole",
    ("data/manifests.py", "_write_case", "copyfile"): "into a staging folder renamed into place as a whole",
    ("data/manifests.py", "_extract", "extractall"): "into a temporary folder",
    ("book/widgets.py", "_png", "save"): "into an in-memory buffer",
    ("book/data.py", "pix2pix_data", "copytree"): "into a staging folder renamed into place as a whole",
    ("console.py", "_swapped_stream", "open"): "a text stream on a copy of the console's descriptor, no file",
}


def _method(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _is_write(call: ast.Call) -> bool:
    name = _method(call)
    if name == "open":
        modes = [arg.value for arg in call.args[1:2] if isinstance(arg, ast.Constant)]
        modes += [kw.value.value for kw in call.keywords if kw.arg == "mode" and isinstance(kw.value, ast.Constant)]
        if isinstance(call.func, ast.Attribute):  # path.open("w")
            modes += [arg.value for arg in call.args[:1] if isinstance(arg, ast.Constant)]
        return any(isinstance(mode, str) and set(mode) & set("wax") for mode in modes)
    if name in SHUTIL_WRITES:
        return isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", None) == "shutil"
    return name in WRITING_METHODS


class _Writes(ast.NodeVisitor):
    """Collect writing calls with the atomic temporary names in scope at each."""

    def __init__(self, module: str):
        self.module, self.function, self.scope, self.found = module, "<module>", [], []

    def visit_FunctionDef(self, node):
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_With(self, node):
        added = 0
        for item in node.items:
            self.visit(item.context_expr)
            expr = item.context_expr
            if isinstance(expr, ast.Call) and _method(expr) == "atomic_path" and isinstance(item.optional_vars, ast.Name):
                self.scope.append(item.optional_vars.id)
                added += 1
        for statement in node.body:
            self.visit(statement)
        del self.scope[len(self.scope) - added:]

    def visit_Call(self, node):
        if _is_write(node):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            atomic = bool(names & set(self.scope))
            self.found.append((self.module, self.function, _method(node), node.lineno, atomic))
        self.generic_visit(node)


def _package_writes() -> list[tuple[str, str, str, int, bool]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        visitor = _Writes(path.relative_to(PACKAGE).as_posix())
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found.extend(visitor.found)
    return found


def test_no_output_is_written_in_place():
    writes = _package_writes()
    in_place = [f"{module}:{line} {function}() .{method}(...)" for module, function, method, line, atomic in writes
                if not atomic and (module, function, method) not in NOT_ATOMIC]
    assert not in_place, "write these through prostseg.atomic.atomic_path:\n" + "\n".join(in_place)
    atomic = {(module, method) for module, _, method, _, is_atomic in writes if is_atomic}
    # the scan does see the atomic writes of each kind (a scan that finds nothing proves nothing)
    assert {("data/io.py", "save"), ("figure_png.py", "savefig"), ("use/inference.py", "open"),
            ("preparation/registration.py", "WriteParameterFile"),
            ("preparation/registration.py", "write_text"), ("training/loop.py", "save"),
            ("networks/runs.py", "write_text"), ("networks/runs.py", "open"),
            ("training/checkpoints.py", "write_text"), ("preparation/splits.py", "write_text"),
            ("data/phantom.py", "save")} <= atomic


def test_the_scan_flags_a_write_in_place(tmp_path):
    source = "def f(path, image):\n    nib.save(image, path)\n    with atomic_path(path) as tmp:\n" \
             "        nib.save(image, tmp)\n        open(path, 'w')\n"
    visitor = _Writes("example.py")
    visitor.visit(ast.parse(source))
    assert [(line, atomic) for *_, line, atomic in visitor.found] == [(2, False), (4, True), (5, False)]


# --- behaviour: each kind of output goes through the helper -------------------------


@pytest.fixture()
def flushed(monkeypatch) -> list[Path]:
    """The temporary files atomic_path flushed (just before renaming them into place)."""
    seen = []
    real = prostseg.atomic._fsync

    def record(path):
        seen.append(Path(path))
        real(path)

    monkeypatch.setattr(prostseg.atomic, "_fsync", record)
    return seen


def _went_through_helper(output: Path, flushed: list[Path]) -> bool:
    output = Path(output)
    return output.exists() and any(tmp.parent == output.parent and tmp.name.startswith(f".{output.name}.")
                                   for tmp in flushed)


def test_every_output_kind_uses_the_helper(phantom_dir, tmp_path, flushed):
    import tensorflow as tf
    from matplotlib.figure import Figure

    from prostseg.preparation import registration
    from prostseg.training.checkpoints import save_checkpoint
    from prostseg.figure_png import save_png
    from prostseg.use.inference import evaluate_folder, predict_case
    from prostseg.data.io import load_volume, save_like
    from prostseg.networks.models import build_unet
    from prostseg.data.phantom import write_phantom_dataset
    from prostseg.preparation.splits import split_patients
    from prostseg.networks.runs import UNetTrainingConfig, append_row

    case = phantom_dir / "phantom-000"
    t2w = load_volume(case / "t2w.nii.gz")
    outputs = {
        "NIfTI volume": save_like(t2w.data > 0, t2w, tmp_path / "mask.nii.gz"),
        "prediction": predict_case(build_unet((32, 32, 1), base_filters=2, depth=1), case,
                                   tmp_path / "preds" / "phantom-000.nii.gz"),
        "split JSON": split_patients(["a", "b", "c"], seed=0).to_json(tmp_path / "split.json"),
        "config JSON": UNetTrainingConfig("data", "run").to_json(tmp_path / "config.json"),
        "figure": save_png(Figure(figsize=(1, 1)), tmp_path / "figure.png"),
        "transform": registration.save_transform([registration.translation_map((1.0, 0, 0))],
                                                 tmp_path / "transform.txt")[0],
    }
    result = evaluate_folder(tmp_path / "preds", phantom_dir, out_csv=tmp_path / "scores.csv",
                             out_figure=tmp_path / "overlay.png")
    outputs["CSV"], outputs["evaluation figure"] = result.csv_path, result.figure_path
    append_row(tmp_path / "history.csv", {"epoch": 0, "loss": 0.5})
    outputs["training history"] = tmp_path / "history.csv"
    save_checkpoint(tf.train.Checkpoint(epochs_done=tf.Variable(1)), tmp_path / "checkpoints", 1)
    outputs["checkpoint (a folder)"] = tmp_path / "checkpoints" / "ckpt-1"
    outputs["checkpoint list"] = tmp_path / "checkpoints" / "checkpoint"
    written = write_phantom_dataset(tmp_path / "phantom", n_cases=1, shape=(32, 32, 4), spacing=(4, 4, 5))
    outputs["phantom volume"] = written[0] / "t2w.nii.gz"
    outputs["phantom metadata"] = written[0] / "phantom.json"
    missed = [kind for kind, path in outputs.items() if not _went_through_helper(path, flushed)]
    assert not missed
    assert not list(tmp_path.rglob(".*.tmp*")), "temporary files left behind"


# --- write errors: one line naming the destination ----------------------------------


def test_a_full_disk_names_the_destination_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "scores.csv"
    target.write_text("old\n")

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prostseg.atomic, "_fsync", disk_full)
    with pytest.raises(OutputError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("new\n")
    assert str(info.value) == f"{target}: cannot write: No space left on device"
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_a_read_only_file_is_refused_even_for_root(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("mine\n")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="scores.csv: is read-only"):
        with atomic_path(target) as tmp:
            tmp.write_text("new\n")
    assert target.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_folder_is_named(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=f"{folder / 'out.json'}: cannot write: Permission denied"):
            with atomic_path(folder / "out.json") as tmp:
                tmp.write_text("{}")
    finally:
        folder.chmod(0o755)


def test_a_folder_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="file/out.json: cannot write: Not a directory"):
        with atomic_path(tmp_path / "file" / "out.json") as tmp:
            tmp.write_text("{}")


def test_cli_prints_file_system_errors_as_one_line(tmp_path, capsys, monkeypatch):
    from prostseg.cli import main

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "cases"))

    monkeypatch.setattr("prostseg.data.phantom.write_phantom_dataset", refuse)
    assert main(["phantom", str(tmp_path / "cases"), "--cases", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"prostseg phantom: error: {tmp_path / 'cases'}: Permission denied\n"
