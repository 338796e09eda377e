"""The data check before training: every file read, every problem listed, nothing written."""

from __future__ import annotations

import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from prostseg.cli import _pipeline_error
from prostseg.training.datacheck import check_case_files, check_training_data
from prostseg.data.dataset import discover_cases, load_mask
from prostseg.errors import DataWarning, InputError
from prostseg.training.loop import Pix2PixTrainingConfig, UNetTrainingConfig, train_unet


@pytest.fixture()
def data(phantom_dir, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(phantom_dir, target, ignore=shutil.ignore_patterns("aligned"))
    return target


def _rewrite(path, change, dtype):
    image = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asanyarray(image.dataobj).astype(dtype)), image.affine), path)


def _cases(data, *names):
    return discover_cases(data, require=names)


def test_every_problem_of_the_folder_is_listed_in_one_error(data):
    cases = _cases(data, "t2w", "lesion")  # headers fine at discovery; voxels broken after
    _rewrite(data / "phantom-000" / "t2w.nii.gz", lambda a: np.where(a == a.max(), np.nan, a), np.float32)
    _rewrite(data / "phantom-002" / "lesion.nii.gz", lambda a: a - 1, np.int16)
    (data / "phantom-003" / "lesion.nii.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(InputError) as info:
        check_case_files(cases, ("t2w", "lesion"), root=data)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{data}: 3 of 8 files cannot be used (nothing was written; fix them and rerun):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "phantom-000/t2w.nii.gz", "phantom-002/lesion.nii.gz", "phantom-003/lesion.nii.gz"]
    assert "NaN or infinite" in lines[1] and "negative values (-1)" in lines[2] and "cannot read" in lines[3]


def test_lesion_masks_hold_0_and_1_or_a_stated_255(data):
    path = data / "phantom-000" / "lesion.nii.gz"
    _rewrite(path, lambda a: (a > 0).astype(np.uint8) * 255, np.uint8)
    with pytest.raises(InputError, match="holds 255; .* say so with lesion_value=255"):
        load_mask(path, "lesion")
    assert set(np.unique(load_mask(path, "lesion", lesion_value=255).data)) <= {0, 255}
    _rewrite(path, lambda a: a // 255 * 2, np.uint8)
    with pytest.raises(InputError, match=r"lesion mask holds 2; expected 0 \(background\) and 1"):
        load_mask(path, "lesion")


def test_zone_maps_hold_0_to_4(data):
    path = data / "phantom-001" / "zones.nii.gz"
    _rewrite(path, lambda a: np.where(a == 4, 7, a), np.uint8)
    with pytest.raises(InputError, match=r"label values 7 outside 0..4"):
        load_mask(path, "zones")


def test_a_bad_mask_stops_training_before_anything_is_written(data, tmp_path):
    _rewrite(data / "phantom-001" / "lesion.nii.gz", lambda a: a * 0.5, np.float32)
    out = tmp_path / "run"
    config = UNetTrainingConfig(data, out, image_size=32, depth=1, base_filters=2, epochs=1, verbose=0,
                                split_file=None, val_fraction=0.25, test_fraction=0.0)
    with pytest.raises(InputError, match="phantom-001/lesion.nii.gz: label map holds non-integer values"):
        train_unet(config)
    assert not out.exists()


def _unet(data, **options):
    return UNetTrainingConfig(data, "unused", **{"image_size": 32, "depth": 1, "verbose": 0, **options})


def test_empty_masks_warn_and_drop_empty_refuses(data):
    for case in data.iterdir():
        _rewrite(case / "lesion.nii.gz", np.zeros_like, np.uint8)
    cases = _cases(data, "t2w", "lesion")
    with pytest.warns(DataWarning, match="all 3 training lesion masks are empty"):
        check_training_data(_unet(data), cases[:3], cases[3:])
    for options in ({"drop_empty": True}, {"foreground_fraction": 0.5}):
        with pytest.raises(InputError, match="leaves nothing to train on.*0 steps per epoch"):
            check_training_data(_unet(data, **options), cases[:3])


def test_masks_with_foreground_neither_warn_nor_refuse(data):
    cases = _cases(data, "t2w", "lesion")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_training_data(_unet(data, drop_empty=True, image_size=96), cases, ())
    assert report.files == 8 and sum(report.foreground.values()) > 0


def test_pix2pix_refuses_fewer_slices_than_a_batch(data):
    for case in data.iterdir():
        t2w = nib.load(case / "t2w.nii.gz")
        stack = np.repeat(np.asanyarray(t2w.dataobj)[..., None], 3, axis=-1).astype(np.float32)
        (case / "aligned").mkdir()
        nib.save(nib.Nifti1Image(stack, t2w.affine), case / "aligned" / "stack.nii.gz")
    cases = _cases(data, "zones", "stack")
    config = Pix2PixTrainingConfig(data, "unused", batch_size=13, verbose=0)
    with pytest.raises(InputError, match=r"hold 12 slices, fewer than one global batch \(batch_size=13 x 1 "):
        check_training_data(config, cases[:1])
    with pytest.raises(InputError, match=r"hold 12 slices, .*batch_size=7 x 2 replicas\): 0 steps"):
        check_training_data(Pix2PixTrainingConfig(data, "unused", batch_size=7, verbose=0), cases[:1], replicas=2)


def test_an_error_raised_inside_tf_data_is_unwrapped_to_its_first_line(tmp_path):
    bad = tmp_path / "lesion.nii.gz"

    def load(_):
        raise InputError(bad, "label map holds negative values (-1)")

    dataset = tf.data.Dataset.range(1).map(lambda i: tf.numpy_function(load, [i], tf.float32))
    with pytest.raises(tf.errors.OpError) as info:
        next(iter(dataset))
    assert len(str(info.value).splitlines()) > 3
    assert str(_pipeline_error(info.value)) == f"{bad}: label map holds negative values (-1)"
    assert _pipeline_error(ValueError("not from TensorFlow")) is None
