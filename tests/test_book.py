"""Tests of prostseg.book.setup: one data folder, one output naming, one seed, one clean-up."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from prostseg import book
from prostseg.book import data
from prostseg.errors import InputError


@pytest.fixture(scope="module")
def shared_phantoms(tmp_path_factory):
    """A book checkout's outputs/ with the phantom dataset in it (written once)."""
    root = tmp_path_factory.mktemp("checkout")
    data.tutorial_data(cases=data.PHANTOM_CASES, root=root / "outputs")
    return root


@pytest.fixture
def checkout(shared_phantoms, tmp_path, monkeypatch):
    """A private copy of a checkout, with book/ as the current folder."""
    root = tmp_path / "checkout"
    shutil.copytree(shared_phantoms, root)
    (root / "_toc.yml").write_text("root: book/intro\n")
    (root / "prostseg").mkdir()
    (root / "prostseg" / "__init__.py").write_text("")
    (root / "book").mkdir()
    monkeypatch.chdir(root / "book")
    return root


def checksums(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_chapter_seed_never_rewrites_the_shared_phantom_data(checkout):
    phantoms = checkout / "outputs" / data.PHANTOM_FOLDER
    before = checksums(phantoms)
    mtimes = {path: path.stat().st_mtime_ns for path in phantoms.rglob("*")}
    chapter = book.setup("10_train-pix2pix", seed=1)
    assert chapter.data_dir == Path("../outputs") / data.PHANTOM_FOLDER
    assert chapter.seed == 1
    assert checksums(phantoms) == before
    assert {path: path.stat().st_mtime_ns for path in phantoms.rglob("*")} == mtimes


def test_the_seed_seeds_the_random_generators(tmp_path):
    book.setup("x", output_dir=tmp_path, data="none", seed=3)
    first = np.random.random()
    book.setup("x", output_dir=tmp_path, data="none", seed=3)
    assert np.random.random() == first


def test_outputs_go_to_the_checkouts_outputs_folder_by_notebook_stem(checkout, capsys):
    chapter = book.setup("07_train-unet", data="none")
    assert chapter.output_dir == Path("../outputs/07_train-unet")
    assert (checkout / "outputs" / "07_train-unet").is_dir()
    assert chapter.output_of("10_train-pix2pix") == Path("../outputs/10_train-pix2pix")
    assert capsys.readouterr().out == ""  # no data, nothing to describe


def test_outside_a_checkout_outputs_go_next_to_the_notebook(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    chapter = book.setup("06_unet", data="none")
    assert chapter.output_dir == Path("outputs/06_unet")
    assert (tmp_path / "notebooks" / "outputs" / "06_unet").is_dir()
    assert not (tmp_path / "outputs").exists()


def test_the_readers_data_is_checked_and_used_as_it_is(checkout, tmp_path, capsys):
    own = checkout / "outputs" / data.PHANTOM_FOLDER
    chapter = book.setup("05_datasets", data_dir=own, output_dir=tmp_path / "out")
    assert chapter.data_dir == own
    assert "Synthetic phantom data" in capsys.readouterr().out
    with pytest.raises(InputError):
        book.setup("05_datasets", data_dir=tmp_path / "missing", output_dir=tmp_path / "out")


def test_finish_deletes_only_what_the_chapter_named(tmp_path):
    chapter = book.setup("x", output_dir=tmp_path / "out", data="none", cleanup=True)
    (tmp_path / "out" / "mine.txt").write_text("the reader's")
    figure = chapter.output("figure.png")
    figure.write_text("a figure")
    run = chapter.output("run")
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "events").write_text("")
    chapter.output("run/config.json")  # inside a folder deleted first
    sibling = chapter.track(tmp_path / "out-demo")
    sibling.mkdir()
    chapter.output("never-written.json")
    chapter.finish()
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(tmp_path / "out") == ["mine.txt"]


def test_finish_without_cleanup_keeps_everything(tmp_path):
    chapter = book.setup("x", output_dir=tmp_path / "out", data="none")
    chapter.output("figure.png").write_text("a figure")
    chapter.finish()
    assert (tmp_path / "out" / "figure.png").is_file()


@pytest.mark.parametrize("arguments", [{"data": "zones"}, {"seed": -1}])
def test_bad_arguments_are_refused(tmp_path, arguments):
    with pytest.raises(ValueError):
        book.setup("x", output_dir=tmp_path, **{"data": "none", **arguments})
