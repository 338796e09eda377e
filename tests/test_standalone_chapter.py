"""A chapter runs on its own, as on Colab or a JupyterHub: a wheel, no repository around it.

The test builds a wheel of the package, installs it (not editable) into a fresh virtual
environment, copies one chapter notebook into an empty folder and runs it there with
papermill. Nothing of the checkout is importable: ``PYTHONPATH`` is cleared and the
folder has no ``../prostseg``; so the chapter finds its data and writes its outputs
only through what the installed package knows (``outputs/`` next to the notebook).

The new environment reaches the heavy dependencies (TensorFlow, Jupyter, ...) of the
environment running the tests through a ``.pth`` file instead of installing them again,
which keeps the test to about a minute and needs no network beyond what building the
wheel needs (pip fetches setuptools for the isolated build).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: A light chapter: no TensorFlow, real data that ships with the wheel, phantoms it writes.
CHAPTER = ROOT / "book" / "02_mri-data.ipynb"
#: What pyproject.toml builds the wheel from.
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "prostseg", "data_manifests")


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_a_chapter_runs_from_an_installed_wheel_in_an_empty_folder(tmp_path):
    pytest.importorskip("papermill")
    # a copy of what the package is built from: setuptools writes build/ and *.egg-info
    # into the source folder, and would pack stale files of an old build/ again
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in PACKAGE_SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": ignore} if (ROOT / name).is_dir() else {}))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source)])
    (wheel,) = wheels.glob("prostseg-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # the dependencies of this environment, not its prostseg (editable installs are .pth
    # files of their own, which a path listed in a .pth file does not run)
    parent = [path for path in {sysconfig.get_path("purelib"), *site.getsitepackages()} if Path(path).is_dir()]
    (purelib / "parent-environment.pth").write_text("\n".join(parent) + "\n")
    # --target: straight into the new environment (the prostseg of this environment, which
    # the .pth makes visible, is neither counted as installed nor touched)
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(purelib), str(wheel)])

    work = tmp_path / "colab"  # an empty folder with the notebook alone
    work.mkdir()
    shutil.copy(CHAPTER, work / CHAPTER.name)
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PROSTSEG_REAL_DATA", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    found = _run([str(python), "-c", "import prostseg; print(prostseg.__file__)"], cwd=work, env=env).stdout
    assert Path(found.strip()).is_relative_to(purelib), f"prostseg imported from {found}, not from the wheel"

    _run([str(python), "-m", "papermill", CHAPTER.name, "executed.ipynb", "--kernel", "python3",
          "--no-progress-bar", "--cwd", "."], cwd=work, env=env)

    executed = nbformat.read(work / "executed.ipynb", as_version=4)
    errors = [out for cell in executed.cells if cell.cell_type == "code"
              for out in cell.outputs if out.get("output_type") == "error"]
    assert not errors
    outputs = work / "outputs"
    assert (outputs / CHAPTER.stem / "montage.png").is_file()  # its figures, next to it
    assert (outputs / "real-data" / "ProstateX-0000").is_dir()  # the study in the wheel
    assert (outputs / "phantom-data" / "phantom-000" / "phantom.json").is_file()
    assert not (tmp_path / "outputs").exists()  # nothing above the notebook's folder
