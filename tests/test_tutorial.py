"""Tests of the chapters' data helpers."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from prostseg.errors import InputError
from prostseg.book.data import PHANTOM_FOLDER, REAL_DATA_ENV, describe_source, real_data_dir, tutorial_data


@pytest.fixture(scope="module")
def pristine_root(tmp_path_factory):
    """A root holding a two-case phantom dataset of seed 0, written once per module."""
    root = tmp_path_factory.mktemp("tutorial")
    tutorial_data(cases=2, root=root)
    return root


@pytest.fixture
def root(pristine_root, tmp_path):
    """A private copy of ``pristine_root`` that a test may change."""
    shutil.copytree(pristine_root, tmp_path / "outputs")
    return tmp_path / "outputs"


def stamps(folder):
    """Modification times of the files below ``folder``, by relative path."""
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def case_ids(data_dir):
    return sorted(path.name for path in data_dir.iterdir() if path.is_dir())


def test_writes_the_phantom_dataset_on_first_use(pristine_root):
    data_dir = pristine_root / PHANTOM_FOLDER
    assert case_ids(data_dir) == ["phantom-000", "phantom-001"]
    for case_dir in data_dir.iterdir():
        assert {path.name for path in case_dir.iterdir()} == {
            "t2w.nii.gz", "adc.nii.gz", "dwi.nii.gz", "lesion.nii.gz", "zones.nii.gz", "gland.nii.gz", "phantom.json"
        }
    assert not [path for path in data_dir.iterdir() if path.name.startswith(".")]  # staging removed


def test_reuses_a_complete_dataset_without_writing(root):
    data_dir = root / PHANTOM_FOLDER
    (data_dir / "phantom-000" / "aligned").mkdir()
    (data_dir / "phantom-000" / "aligned" / "registration.json").write_text("{}")
    (data_dir / "splits.json").write_text("{}")
    before = stamps(data_dir)
    assert tutorial_data(cases=2, root=root) == data_dir
    assert stamps(data_dir) == before


def test_writes_missing_cases_and_keeps_the_others(root):
    data_dir = root / PHANTOM_FOLDER
    (data_dir / "phantom-001" / "lesion.nii.gz").unlink()  # an interrupted run
    kept = stamps(data_dir / "phantom-000")
    tutorial_data(cases=3, root=root)
    assert case_ids(data_dir) == ["phantom-000", "phantom-001", "phantom-002"]
    assert (data_dir / "phantom-001" / "lesion.nii.gz").is_file()
    assert stamps(data_dir / "phantom-000") == kept


def test_regenerated_cases_equal_fresh_ones(root, tmp_path):
    data_dir = root / PHANTOM_FOLDER
    shutil.rmtree(data_dir / "phantom-001")
    tutorial_data(cases=2, root=root)
    fresh = tutorial_data(cases=2, root=tmp_path / "fresh")
    for name in ("t2w", "zones"):
        again = nib.load(data_dir / "phantom-001" / f"{name}.nii.gz")
        first = nib.load(fresh / "phantom-001" / f"{name}.nii.gz")
        np.testing.assert_array_equal(again.get_fdata(), first.get_fdata())


def test_replaces_cases_of_another_seed_and_drops_surplus_cases(root):
    data_dir = root / PHANTOM_FOLDER
    (data_dir / "phantom-000" / "aligned").mkdir()  # stale registration of the old case
    tutorial_data(cases=1, seed=5, root=root)
    assert case_ids(data_dir) == ["phantom-000"]
    metadata = json.loads((data_dir / "phantom-000" / "phantom.json").read_text(encoding="utf-8"))
    assert (metadata["dataset_seed"], metadata["case_index"]) == (5, 0)
    assert not (data_dir / "phantom-000" / "aligned").exists()


def test_replaces_cases_of_another_generator_version(root):
    metadata_file = root / PHANTOM_FOLDER / "phantom-001" / "phantom.json"
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    metadata_file.write_text(json.dumps({**metadata, "generator_version": "0"}))
    tutorial_data(cases=2, root=root)
    assert json.loads(metadata_file.read_text(encoding="utf-8")) == metadata


def test_never_deletes_files_it_did_not_write(root):
    data_dir = root / PHANTOM_FOLDER
    (data_dir / "phantom-001" / "lesion.nii.gz").unlink()
    (data_dir / "phantom-001" / "my_notes.txt").write_text("mine")
    before = stamps(data_dir)
    with pytest.raises(InputError, match=r"phantom-001: .*my_notes\.txt"):
        tutorial_data(cases=2, root=root)
    assert stamps(data_dir) == before


def test_refuses_a_foreign_case_folder(root):
    (root / PHANTOM_FOLDER / "patient-7").mkdir()
    with pytest.raises(InputError, match="patient-7: is not a phantom case folder"):
        tutorial_data(cases=2, root=root)


def test_refuses_a_file_in_place_of_the_folder(tmp_path):
    (tmp_path / PHANTOM_FOLDER).write_text("not a folder")
    with pytest.raises(InputError, match="exists and is not a folder"):
        tutorial_data(cases=1, root=tmp_path)


@pytest.mark.parametrize("arguments", [{"cases": 0}, {"seed": -1}])
def test_rejects_bad_arguments(tmp_path, arguments):
    with pytest.raises(ValueError):
        tutorial_data(root=tmp_path, **arguments)
    assert not (tmp_path / PHANTOM_FOLDER).exists()


def test_returns_a_given_data_folder_after_checking_it(pristine_root, tmp_path):
    data_dir = pristine_root / PHANTOM_FOLDER
    before = stamps(data_dir)
    assert tutorial_data(data_dir, root=tmp_path) == data_dir
    assert stamps(data_dir) == before
    assert not (tmp_path / PHANTOM_FOLDER).exists()
    with pytest.raises(InputError, match="no case folders"):
        tutorial_data(tmp_path)


def test_real_data_dir_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(REAL_DATA_ENV, raising=False)
    assert real_data_dir() is None
    monkeypatch.setenv(REAL_DATA_ENV, "  ")
    assert real_data_dir() is None
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path))
    assert real_data_dir() == tmp_path
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputError, match=f"missing: {REAL_DATA_ENV} is set"):
        real_data_dir()


def write_real_case(folder):
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)), folder / "t2w.nii.gz")
    return folder


def test_describe_source_tells_phantom_from_real_data(root):
    data_dir = root / PHANTOM_FOLDER
    assert describe_source(data_dir).startswith("Synthetic phantom data: 2 cases made by prostseg.data.phantom (seed 0,")
    assert describe_source(data_dir / "phantom-001").startswith("Synthetic phantom data: case phantom-001 ")
    real_case = write_real_case(root / "real" / "patient-1")
    assert describe_source(real_case).startswith("Real data: case patient-1 in ")
    assert describe_source(real_case.parent).startswith("Real data: 1 case in ")
    shutil.copytree(data_dir / "phantom-000", real_case.parent / "phantom-000")
    assert describe_source(real_case.parent).startswith("Mixed data: 1 real case and 1 synthetic phantom case")
    with pytest.raises(InputError, match="no such data folder"):
        describe_source(root / "missing")


@pytest.mark.real_data
def test_describe_source_on_the_real_data(real_data_dir):
    lesion_data = real_data_dir / "prostatex-t2w-lesion"
    assert describe_source(lesion_data) == f"Real data: 3 cases in {lesion_data} (not generated by prostseg.data.phantom)"
    assert tutorial_data(lesion_data) == lesion_data


SMALL_GRID = dict(shape=(48, 48, 12), spacing=(2.5, 2.5, 4.0))


@pytest.fixture
def registered_book(tmp_path):
    """Three small phantom cases of seed 0 with aligned stacks, and a split of them."""
    from prostseg.data.phantom import write_phantom_dataset
    from prostseg.preparation.splits import PatientSplit

    write_phantom_dataset(tmp_path / "book", n_cases=3, aligned_stack=True, **SMALL_GRID)
    return tmp_path / "book", PatientSplit(train=["phantom-000"], val=["phantom-001"], test=["phantom-002"], seed=0)


def test_pix2pix_data_trains_on_other_phantoms_and_holds_the_book_patients_out(registered_book, tmp_path):
    from prostseg.book.data import pix2pix_data
    from prostseg.data.dataset import discover_cases

    book_dir, split = registered_book
    folder, training = pix2pix_data(book_dir, split, root=tmp_path, cases=3, **SMALL_GRID)
    assert training.train == ("training-000", "training-001", "training-002")
    assert (training.val, training.test) == (("book-phantom-001",), ("book-phantom-002",))
    cases = {case.case_id: case for case in discover_cases(folder, require=("zones", "stack"))}
    assert sorted(cases) == sorted(training.train + training.val + training.test)
    for name, case_id in (("book-phantom-001", "phantom-001"), ("book-phantom-002", "phantom-002")):
        assert (folder / name / "t2w.nii.gz").read_bytes() == (book_dir / case_id / "t2w.nii.gz").read_bytes()
    # The training phantoms are other patients than the book's (another seed) ...
    seeds = {json.loads((folder / case_id / "phantom.json").read_text(encoding="utf-8"))["case_seed"]
             for case_id in training.train}
    book_seeds = {json.loads((book_dir / case_id / "phantom.json").read_text(encoding="utf-8"))["case_seed"]
                  for case_id in ("phantom-000", "phantom-001", "phantom-002")}
    assert not seeds & book_seeds
    # ... drawn with the settings asked for.
    metadata = json.loads((folder / "training-000" / "phantom.json").read_text(encoding="utf-8"))
    assert metadata["case_kwargs"] == {key: list(value) for key, value in SMALL_GRID.items()}
    folder, _ = pix2pix_data(book_dir, split, root=tmp_path, cases=1, contrast="mixed",
                             random_channels=("t2w", "adc", "dwi"), **SMALL_GRID)
    metadata = json.loads((folder / "training-000" / "phantom.json").read_text(encoding="utf-8"))
    assert metadata["case_kwargs"]["contrast"] == "mixed"
    assert metadata["case_kwargs"]["random_channels"] == ["t2w", "adc", "dwi"]
    assert not (folder / "training-001").exists()  # rewritten for the new settings


def test_pix2pix_data_is_reused_and_rewritten_when_the_recipe_changes(registered_book, tmp_path):
    from prostseg.book.data import pix2pix_data

    book_dir, split = registered_book
    folder, _ = pix2pix_data(book_dir, split, root=tmp_path / "new" / "root", cases=2, **SMALL_GRID)
    assert folder == tmp_path / "new" / "root" / "pix2pix-data"  # the root is made when missing
    before = stamps(folder)
    assert pix2pix_data(book_dir, split, root=tmp_path / "new" / "root", cases=2, **SMALL_GRID)[0] == folder
    assert stamps(folder) == before
    _, training = pix2pix_data(book_dir, split, root=tmp_path / "new" / "root", cases=3, **SMALL_GRID)
    assert len(training.train) == 3 and (folder / "training-002").is_dir()
    with pytest.raises(ValueError, match="book's own patients"):
        pix2pix_data(book_dir, split, root=tmp_path, seed=0, **SMALL_GRID)


def test_pix2pix_data_refuses_unregistered_cases_and_foreign_folders(registered_book, tmp_path):
    from prostseg.book.data import PIX2PIX_FOLDER, pix2pix_data

    book_dir, split = registered_book
    shutil.rmtree(book_dir / "phantom-002" / "aligned")
    with pytest.raises(InputError, match="phantom-002"):
        pix2pix_data(book_dir, split, root=tmp_path, cases=2, **SMALL_GRID)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / PIX2PIX_FOLDER).mkdir()
    with pytest.raises(InputError, match="not write it"):
        pix2pix_data(book_dir, type(split)(train=split.train, val=split.val, test=[], seed=0),
                     root=tmp_path / "other", cases=2, **SMALL_GRID)
