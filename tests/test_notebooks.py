"""Every chapter runs headless through papermill with its default (smoke) parameters.

This is the path users take on GPU machines (``papermill CHAPTER.ipynb out.ipynb -p
epochs 300 ...``): the parameters cell must be tagged, injected values must take effect,
and no cell may fail. Outputs go to a temporary folder, never into the repository.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _toc_notebooks() -> list[Path]:
    """The chapter notebooks listed in ``_toc.yml``, in book order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
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


# --------------------------------------------------------------------- conventions

CHAPTERS = [path for path in NOTEBOOKS if path.parent.name == "book"]


def _code(notebook) -> list[str]:
    return ["".join(cell.source) for cell in nbformat.read(notebook, as_version=4).cells
            if cell.cell_type == "code"]


def _install_url() -> str:
    """The one install URL of the book: the repository URL of ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return f"git+{config['repository']['url']}"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_installs_prostseg_from_the_repository_of_config(notebook):
    # Colab opens the notebook without _config.yml next to it, so the cell cannot read the
    # setting; this test keeps every copy equal to it (change _config.yml, then the cells).
    first = _code(notebook)[0]
    expected = f'%pip install -q "prostseg @ {_install_url()}"'
    assert expected in first.splitlines()[3], f"{notebook.name}: the install cell must run {expected}"
    assert first.startswith("try:\n    import prostseg\nexcept ImportError:")


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_starts_with_one_book_setup(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    code = [cell for cell in cells if cell.cell_type == "code"]
    index = next(i for i, cell in enumerate(code) if "parameters" in cell.metadata.get("tags", []))
    source = "".join(cell.source for cell in code)
    assert source.count("book.setup(") == 1, f"{notebook.name}: one book.setup call per chapter"
    assert f'book.setup("{notebook.stem}"' in code[index + 1].source, (
        f"{notebook.name}: the cell after the parameters must call book.setup({notebook.stem!r}, ...)")
    assert code[-1].source.startswith("chapter.finish()"), f"{notebook.name}: end with chapter.finish()"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_parameters_follow_the_conventions(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    parameters = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    assert "output_dir = None  # None: ../outputs/" + notebook.stem in parameters
    assert "cleanup = False" in parameters
    source = "\n".join(_code(notebook))
    # seed is training randomness; the book's data never depends on it
    assert "tutorial_data(" not in source and "phantom_data(seed" not in source


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_imports_modules_not_functions(notebook):
    source = "\n".join(_code(notebook))
    source = "\n".join(line.replace("%", "#", 1) if line.lstrip().startswith("%") else line
                       for line in source.splitlines())
    imported = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "prostseg":
            imported.setdefault(node.module, set()).update(alias.name for alias in node.names)
    assert "book" in imported.get("prostseg", ()), f"{notebook.name}: from prostseg import book"
    not_modules = sorted(f"{package}.{name}" for package, names in imported.items() for name in names
                         if not (ROOT / package.replace(".", "/") / f"{name}.py").is_file()
                         and not (ROOT / package.replace(".", "/") / name / "__init__.py").is_file())
    assert not not_modules, f"{notebook.name}: import modules (from prostseg import io), not {not_modules}"
