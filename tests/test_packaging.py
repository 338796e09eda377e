"""Packaging: dependencies, extras, the conda environment and the package's import graph."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split_requirement(text: str) -> tuple[str, str]:
    """Return (normalised name, version specifier) of a requirement string."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", text)
    assert match, f"cannot parse requirement {text!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return dict(_split_requirement(item) for item in project["dependencies"])


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            if entry == "pip" or entry.startswith(("-e", "python=")):
                continue  # the interpreter, the installer and the package itself
            name, spec = _split_requirement(entry)
            found[name] = spec
    return found


def test_environment_yml_lists_the_package_dependencies():
    assert _conda_requirements() == _pyproject_requirements()


def test_split_requirement_normalises_names():
    assert _split_requirement("itk_elastix>=0.20") == ("itk-elastix", ">=0.20")
    assert _split_requirement("Jupyter.Book >=1.0,<2") == ("jupyter-book", ">=1.0,<2")


# --------------------------------------------------------------------- extras


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]


def test_the_core_install_pulls_no_book_tools():
    core = _pyproject_requirements()
    assert not {"jupyter-book", "papermill", "sphinx"} & set(core), "book tools belong to the book extra"
    book = dict(_split_requirement(item) for item in _extras()["book"])
    assert {"jupyter-book", "papermill"} <= set(book)


def test_environment_yml_installs_extras_that_exist():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    (editable,) = [entry for entry in pip if entry.startswith("-e")]
    match = re.fullmatch(r"-e \.\[([a-z,]+)\]", editable)
    assert match, f"cannot parse {editable!r}"
    assert set(match.group(1).split(",")) <= set(_extras())
    assert "book" in match.group(1).split(","), "chapter 12 imports papermill"


# --------------------------------------------------------------------- imports

PACKAGE = ROOT / "prostseg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(tree: ast.AST, lazy: bool):
    """Every node of ``tree``; without ``lazy``, none inside a function."""
    for node in ast.iter_child_nodes(tree):
        if lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
            yield from _nodes(node, lazy)


def _imports(path: Path, lazy: bool = True) -> set[str]:
    """The prostseg modules a module imports (with ``lazy``, those inside functions too)."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), lazy):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            # `from package import module` imports the module; `from module import name`
            # the module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES} - {_module_name(path)}


MODULES = {_module_name(path) for path in PACKAGE.rglob("*.py")}


def _graph(lazy: bool = True) -> dict[str, set[str]]:
    return {_module_name(path): _imports(path, lazy) for path in sorted(PACKAGE.rglob("*.py"))}


def test_core_modules_import_nothing_from_the_book():
    graph = _graph()
    upward = sorted(f"{module} imports {target}" for module, targets in graph.items()
                    if not module.startswith("prostseg.book") for target in targets
                    if target.startswith("prostseg.book"))
    assert not upward, "the core must not depend on prostseg.book:\n" + "\n".join(upward)


def test_module_level_imports_have_no_cycles():
    # Imports inside functions may point back up (inference <-> export load each other's
    # models on demand); the modules themselves form a hierarchy.
    graph = {module: {t for t in targets if t != "prostseg"} for module, targets in _graph(lazy=False).items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target] if target in path else [module, target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_import_scan_sees_imports():
    graph = _graph()
    assert "prostseg.book.data" in graph["prostseg.book.chapter"]
    assert "prostseg.data.io" in graph["prostseg.book.checks"]
    assert "prostseg.use.export" in graph["prostseg.use.inference"]  # a lazy import
    assert "prostseg.use.export" not in _graph(lazy=False)["prostseg.use.inference"]
