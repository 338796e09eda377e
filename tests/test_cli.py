"""The ``prostseg`` command line: registration commands on a phantom case."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from prostseg.cli import main

pytestmark = pytest.mark.slow  # elastix loads its native modules on first use


@pytest.fixture(scope="module")
def case_dir(phantom_dir, tmp_path_factory):
    """A private copy of one phantom case, so that writing aligned/ touches nothing shared."""
    target = tmp_path_factory.mktemp("cli") / "phantom-000"
    shutil.copytree(phantom_dir / "phantom-000", target, ignore=shutil.ignore_patterns("aligned"))
    return target


def test_register_case_writes_the_stack_and_refuses_to_overwrite(case_dir, capsys):
    assert main(["register-case", str(case_dir)]) == 0
    stack = nib.load(case_dir / "aligned" / "stack.nii.gz")
    t2w = nib.load(case_dir / "t2w.nii.gz")
    assert stack.shape == t2w.shape + (3,)
    np.testing.assert_allclose(stack.affine, t2w.affine)
    assert "mutual information" in capsys.readouterr().out

    assert main(["register-case", str(case_dir)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_register_then_apply_the_transform_to_a_label_map(case_dir, tmp_path, capsys):
    out = tmp_path / "adc_on_t2w.nii.gz"
    args = ["register", "--fixed", str(case_dir / "t2w.nii.gz"), "--moving", str(case_dir / "adc.nii.gz")]
    assert main([*args, "--out", str(out)]) == 0
    transform = tmp_path / "adc_on_t2w_transform.txt"
    assert transform.exists()
    assert nib.load(out).shape == nib.load(case_dir / "t2w.nii.gz").shape

    assert main([*args, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    labels_out = tmp_path / "zones_on_t2w.nii.gz"
    label_args = ["register", "--fixed", str(case_dir / "t2w.nii.gz"), "--moving", str(case_dir / "zones.nii.gz"),
                  "--out", str(labels_out), "--label"]
    assert main(label_args) == 2
    assert "--transform" in capsys.readouterr().err
    assert main([*label_args, "--transform", str(transform)]) == 0
    zones = np.asarray(nib.load(labels_out).dataobj)
    assert zones.dtype.kind == "u" and set(np.unique(zones)) <= set(range(5))
