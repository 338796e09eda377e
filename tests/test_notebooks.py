"""Every chapter runs headless through papermill with its default (smoke) parameters.

This is the path users take on GPU machines (``papermill CHAPTER.ipynb out.ipynb -p
epochs 300 ...``): the parameters cell must be tagged, injected values must take effect,
and no cell may fail. Outputs go to a temporary folder, never into the repository.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _toc_notebooks() -> list[Path]:
    """The chapter notebooks listed in ``_toc.yml``, in book order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    stack = list(toc.get("chapters", [])) + [
        chapter for part in toc.get("parts", []) for chapter in part.get("chapters", [])
    ]
    while stack:
        entry = stack.pop(0)
        files.append(entry["file"])
        stack[:0] = entry.get("sections", [])
    return [ROOT / f"{name}.ipynb" for name in files if (ROOT / f"{name}.ipynb").exists()]


NOTEBOOKS = _toc_notebooks()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    dirty = [i for i, c in enumerate(cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{notebook.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_has_a_parameters_cell(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name}: expected one cell tagged 'parameters'"
    assert "output_dir" in tagged[0].source


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_headless_with_papermill(notebook, tmp_path):
    papermill = pytest.importorskip("papermill")
    output_dir = tmp_path / "outputs"
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / notebook.name),
        parameters={"output_dir": str(output_dir)},
        cwd=str(notebook.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    executed = nbformat.read(tmp_path / notebook.name, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(output_dir) in injected[0].source
    errors = [
        out for c in executed.cells if c.cell_type == "code"
        for out in c.outputs if out.get("output_type") == "error"
    ]
    assert not errors
