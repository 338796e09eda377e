"""Tests of the case layout and its discovery."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from prostseg.data.dataset import MASKS, MODALITIES, Case, discover_cases, find_case
from prostseg.errors import InputError

SHAPE = (8, 6, 4)
LAS = np.array([[-0.5, 0, 0, 20.0], [0, 0.5, 0, -30.0], [0, 0, 3.0, -60.0], [0, 0, 0, 1]])


def write(path, shape=SHAPE, affine=LAS, dtype=np.int16):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype), affine), path)
    return path


def test_discovers_the_phantom_dataset(phantom_dir):
    cases = discover_cases(phantom_dir, require=(*MODALITIES, *MASKS))
    assert [case.case_id for case in cases] == [f"phantom-{i:03d}" for i in range(4)]
    for case in cases:
        assert case.folder == phantom_dir / case.case_id
        assert dict(case.files) == {name: case.folder / f"{name}.nii.gz" for name in (*MODALITIES, *MASKS)}
        assert not case.has("stack")


def test_cases_are_sorted_and_hidden_or_unknown_entries_ignored(tmp_path):
    for case_id in ("p2", "p10", "p1"):
        write(tmp_path / case_id / "t2w.nii.gz")
    (tmp_path / "p1" / "notes.txt").write_text("ignored")
    (tmp_path / "p1" / "t2w_old.nii.gz").write_text("not a layout name")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "splits.json").write_text("{}")
    write(tmp_path / "p1" / ".t2w.nii.gz")  # hidden: not a second T2W file
    cases = discover_cases(tmp_path)
    assert [case.case_id for case in cases] == ["p1", "p10", "p2"]
    assert dict(cases[0].files) == {"t2w": tmp_path / "p1" / "t2w.nii.gz"}


def test_aliases_upper_case_names_other_extensions_and_stack(tmp_path):
    folder = tmp_path / "p1"
    write(folder / "T2W.nii")
    write(folder / "hbv.nii.gz", shape=(4, 3, 4), affine=np.diag([2.0, 2.0, 3.0, 1.0]))
    write(folder / "ADC.nii.gz", shape=(4, 3, 4), affine=np.diag([2.0, 2.0, 3.0, 1.0]))
    write(folder / "aligned" / "stack.nii.gz", shape=(*SHAPE, 3), dtype=np.float32)
    write(folder / "aligned" / "dwi.nii.gz")  # other outputs of registration are not case files
    case = find_case(folder)
    assert dict(case.files) == {
        "t2w": folder / "T2W.nii",
        "dwi": folder / "hbv.nii.gz",
        "adc": folder / "ADC.nii.gz",
        "stack": folder / "aligned" / "stack.nii.gz",
    }


def test_mask_in_another_voxel_order_on_the_same_grid_is_accepted(tmp_path):
    folder = tmp_path / "p1"
    write(folder / "t2w.nii.gz")
    ras = LAS.copy()
    ras[0, 0], ras[0, 3] = 0.5, LAS[0, 3] - 0.5 * (SHAPE[0] - 1)  # same voxel centres, i towards Right
    write(folder / "lesion.nii.gz", affine=ras, dtype=np.uint8)
    assert find_case(folder).has("lesion")


def test_every_problem_is_reported_at_once(tmp_path):
    write(tmp_path / "ok" / "t2w.nii.gz")
    write(tmp_path / "no-t2w" / "lesion.nii.gz")
    write(tmp_path / "two-t2w" / "t2w.nii.gz")
    write(tmp_path / "two-t2w" / "t2w.nii")
    write(tmp_path / "two-dwi" / "t2w.nii.gz")
    write(tmp_path / "two-dwi" / "dwi.nii.gz")
    write(tmp_path / "two-dwi" / "hbv.nii.gz")
    write(tmp_path / "bad-shape" / "t2w.nii.gz")
    write(tmp_path / "bad-shape" / "lesion.nii.gz", shape=(8, 6, 5))
    shifted = LAS.copy()
    shifted[1, 3] += 2.0
    write(tmp_path / "bad-affine" / "t2w.nii.gz")
    write(tmp_path / "bad-affine" / "zones.nii.gz", affine=shifted)
    write(tmp_path / "bad-stack" / "t2w.nii.gz")
    write(tmp_path / "bad-stack" / "aligned" / "stack.nii.gz", shape=(8, 6, 3, 3))
    with pytest.raises(InputError) as info:
        discover_cases(tmp_path)
    err = info.value
    assert err.path == str(tmp_path)
    assert err.problem.startswith("6 of 7 cases have problems")
    lines = {line.split(":")[0].strip(): line for line in err.problem.splitlines()[1:]}
    assert set(lines) == {"no-t2w", "two-t2w", "two-dwi", "bad-shape", "bad-affine", "bad-stack"}
    assert "missing t2w" in lines["no-t2w"] and "lesion.nii.gz" in lines["no-t2w"]
    assert "t2w.nii" in lines["two-t2w"] and "t2w.nii.gz" in lines["two-t2w"]
    assert "dwi.nii.gz" in lines["two-dwi"] and "hbv.nii.gz" in lines["two-dwi"]
    assert "lesion.nii.gz" in lines["bad-shape"] and "(8, 6, 5)" in lines["bad-shape"]
    assert "zones.nii.gz" in lines["bad-affine"] and "not on the grid" in lines["bad-affine"]
    assert "stack.nii.gz" in lines["bad-stack"]


def test_check_grids_false_skips_the_header_checks(tmp_path):
    write(tmp_path / "p1" / "t2w.nii.gz")
    write(tmp_path / "p1" / "lesion.nii.gz", shape=(8, 6, 5))
    assert discover_cases(tmp_path, check_grids=False)[0].has("lesion")


def test_required_files(tmp_path):
    write(tmp_path / "p1" / "t2w.nii.gz")
    with pytest.raises(InputError, match="p1: missing lesion"):
        discover_cases(tmp_path, require=("t2w", "lesion"))
    with pytest.raises(ValueError, match="unknown file names"):
        discover_cases(tmp_path, require=("t2",))
    assert discover_cases(tmp_path, require="t2w")[0].case_id == "p1"


def test_unreadable_header_is_reported_with_its_file(tmp_path):
    write(tmp_path / "p1" / "t2w.nii.gz")
    (tmp_path / "p1" / "zones.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match=r"p1: zones\.nii\.gz: "):
        discover_cases(tmp_path)


def test_empty_or_missing_data_dir(tmp_path):
    (tmp_path / "loose.nii.gz").write_text("")
    with pytest.raises(InputError, match="no case folders") as info:
        discover_cases(tmp_path)
    assert info.value.path == str(tmp_path)
    with pytest.raises(InputError, match="no such data folder"):
        discover_cases(tmp_path / "missing")
    with pytest.raises(InputError, match="no such case folder"):
        find_case(tmp_path / "missing")


def test_find_case_reports_its_folder(tmp_path):
    write(tmp_path / "p1" / "t2w.nii.gz")
    write(tmp_path / "p1" / "t2w.nii")
    with pytest.raises(InputError, match="2 files for t2w") as info:
        find_case(tmp_path / "p1")
    assert info.value.path == str(tmp_path / "p1")


def test_case_is_read_only_and_reports_missing_files(tmp_path):
    case = Case("p1", tmp_path, {"t2w": tmp_path / "t2w.nii.gz"})
    with pytest.raises(TypeError):
        case.files["lesion"] = tmp_path / "lesion.nii.gz"
    assert case.path("t2w") == tmp_path / "t2w.nii.gz"
    with pytest.raises(InputError, match="case p1 has no zones file"):
        case.path("zones")
    assert case == Case("p1", tmp_path, {"t2w": str(tmp_path / "t2w.nii.gz")})
    assert case in {case}  # hashable (by id and folder)


@pytest.mark.real_data
def test_real_t2w_lesion_cases(real_data_dir):
    cases = discover_cases(real_data_dir / "prostatex-t2w-lesion", require=("t2w", "lesion"))
    assert [case.case_id for case in cases] == ["ProstateX-0101", "ProstateX-0152", "ProstateX-0199"]
    assert all(sorted(case.files) == ["lesion", "t2w"] for case in cases)


@pytest.mark.real_data
def test_real_multiparametric_case_on_different_grids(real_data_dir):
    data_dir = real_data_dir / "prostatex-mpmri"
    (case,) = discover_cases(data_dir, require=("t2w", "adc", "dwi", "lesion"))
    folder = data_dir / "ProstateX-0000"
    assert case.case_id == "ProstateX-0000"
    assert dict(case.files) == {
        "t2w": folder / "t2w.mha",
        "adc": folder / "adc.mha",
        "dwi": folder / "hbv.mha",
        "lesion": folder / "lesion.nii.gz",
    }


def _layout_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of the string constants of ``source`` that spell a case layout name;
    docstrings (documentation, which may describe the layout) are left out."""
    import ast
    import re

    from prostseg.data.dataset import ALIGNED_FOLDER, CASE_ROLES, PHANTOM_FILE, REGISTRATION_FILE, STACK

    files = "|".join(re.escape(name) for name in (*CASE_ROLES, STACK))
    pattern = re.compile(
        rf"^{ALIGNED_FOLDER}$|(?<![\w.]){ALIGNED_FOLDER}/|(?<![\w.])({files})\.nii"
        rf"|{re.escape(REGISTRATION_FILE)}|{re.escape(PHANTOM_FILE)}"
    )
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and pattern.search(node.value)]


def test_the_layout_names_are_spelt_in_prostseg_dataset_only():
    from pathlib import Path

    import prostseg

    package = Path(prostseg.__file__).parent
    found = {
        f"{path.relative_to(package)}:{line}": text
        for path in sorted(package.rglob("*.py")) if path.name != "dataset.py"
        for line, text in _layout_literals(path.read_text(encoding="utf-8"))
    }
    assert found == {}, "ask prostseg.data.dataset for these names instead"
    # The scan finds what it looks for, and leaves docstrings and plain English alone.
    source = ('"""Writes aligned/stack.nii.gz."""\nA = "aligned"\nB = f"{x}/registration.json"\n'
              'C = "t2w.nii.gz"\nD = "images aligned to the T2W"\nE = "phantom.json"\n')
    assert sorted(line for line, _ in _layout_literals(source)) == [2, 3, 4, 6]
    assert _layout_literals("X = 'case/aligned/dwi_transform.txt'")
