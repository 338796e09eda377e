"""Packaging: dependencies, extras and the conda environment (the import graph: test_import_graph.py)."""

from __future__ import annotations

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
