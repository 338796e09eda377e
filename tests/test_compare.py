"""Tests of prostseg.book.checks: tables, registration against a known transform, augmentation
coverage and stream statistics."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from prostseg.book.checks import (
    augmentation_variants,
    compare_with_truth,
    grid_summary,
    label_agreement,
    measure_stream,
    rigid_parameters,
    world_coordinates,
)
from prostseg.book.tables import markdown_table
from prostseg.data.io import Volume
from prostseg.data.phantom import RigidTransform
from prostseg.preparation.registration import translation_map


# --------------------------------------------------------------------- tables


def test_markdown_table_formats_rows_and_mappings():
    text = markdown_table([{"a": 1.23456, "b": (2, 3)}, {"a": "x|y", "b": ["p", "q"]}])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | 2 x 3 |", "| x\\|y | p q |"]
    assert markdown_table({"k": -0.0}, headers=("name", "v")).splitlines()[-1] == "| k | 0 |"
    with pytest.raises(ValueError, match="no rows"):
        markdown_table([])


def test_grid_summary_reads_headers_and_volumes_alike(tmp_path):
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])  # stored with i towards Left
    affine[:3, 3] = (50.0, -40.0, 10.0)
    path = tmp_path / "adc.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 20, 5), np.float32), affine), path)
    from_file, = grid_summary({"ADC": path})
    assert from_file["shape"] == (10, 20, 5)
    assert from_file["voxel size (mm)"] == (2.0, 2.0, 3.0)
    assert from_file["field of view (mm)"] == (20.0, 40.0, 15.0)
    # centre voxel (4.5, 9.5, 2) of the stored grid
    np.testing.assert_allclose(from_file["centre (RAS mm)"], [50 - 9.0, -40 + 19.0, 10 + 6.0])
    volume = Volume(np.zeros((10, 20, 5), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    assert grid_summary({"v": volume})[0]["field of view (mm)"] == (20.0, 40.0, 15.0)


# ------------------------------------------------------- registration truth


@pytest.mark.parametrize("seed", range(5))
def test_rigid_parameters_recover_a_phantom_transform(seed):
    rng = np.random.default_rng(seed)
    truth = RigidTransform(tuple(rng.uniform(-5, 5, 3)), tuple(rng.uniform(-10, 10, 3)), tuple(rng.uniform(-50, 50, 3)))
    shift, angles = rigid_parameters(truth.matrix, truth.centre_mm)
    np.testing.assert_allclose(shift, truth.translation_mm, atol=1e-9)
    np.testing.assert_allclose(angles, truth.rotation_deg, atol=1e-9)
    # About another centre the same transform has another shift: R c' + t0 - c'.
    other = np.zeros(3)
    shift_other, _ = rigid_parameters(truth.matrix, other)
    np.testing.assert_allclose(shift_other, truth.matrix[:3, 3], atol=1e-9)


@pytest.fixture(scope="module")
def fixed() -> Volume:
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-30.0, -50.0, -20.0)
    return Volume(np.zeros((40, 40, 12), np.float32), affine)


@pytest.mark.slow  # loads elastix (about 10-20 s the first time in a process)
def test_compare_with_truth_measures_a_known_translation(fixed):
    shift_ras = np.array([2.0, -1.0, 1.5])
    transform = [translation_map(shift_ras * [-1, -1, 1])]  # elastix works in LPS
    truth = np.eye(4)
    truth[:3, 3] = shift_ras
    mask = np.zeros(fixed.shape, bool)
    mask[10:30, 10:30, 3:9] = True
    exact = compare_with_truth(transform, truth, fixed, mask=mask)
    assert exact.error_after_mm == pytest.approx(0.0, abs=1e-3)
    assert exact.error_before_mm == pytest.approx(np.linalg.norm(shift_ras), abs=1e-6)
    np.testing.assert_allclose(exact.recovered, truth, atol=1e-3)
    rows = {row["parameter"]: row for row in exact.rows()}
    assert rows["shift R (mm)"]["recovered"] == pytest.approx(2.0, abs=0.01)
    # The opposite shift is wrong by twice the shift everywhere.
    wrong = truth.copy()
    wrong[:3, 3] = -shift_ras
    assert compare_with_truth(transform, wrong, fixed, mask=mask).max_error_after_mm == pytest.approx(
        2 * np.linalg.norm(shift_ras), abs=1e-3)


def test_compare_with_truth_rejects_bad_masks_and_matrices(fixed):
    transform = [translation_map([0.0, 0.0, 0.0])]
    with pytest.raises(ValueError, match="mask has shape"):
        compare_with_truth(transform, np.eye(4), fixed, mask=np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="empty"):
        compare_with_truth(transform, np.eye(4), fixed, mask=np.zeros(fixed.shape, bool))
    with pytest.raises(ValueError, match="4x4"):
        compare_with_truth(transform, np.eye(3), fixed)


def test_world_coordinates_follow_the_affine(fixed):
    world = world_coordinates(fixed)
    assert world.shape == fixed.shape + (3,)
    np.testing.assert_allclose(world[3, 5, 7], fixed.affine[:3, :3] @ [3, 5, 7] + fixed.affine[:3, 3])


def test_label_agreement_gives_dice_per_class_and_for_the_whole_gland():
    reference = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    moved = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    rows = label_agreement(reference, {"moved": moved, "same": reference}, ["bg", "one", "two"])
    assert [row["class"] for row in rows] == ["one", "two", "whole gland"]
    assert rows[0]["moved"] == pytest.approx(2 * 2 / (3 + 3))  # class 1: {1,2,3} vs {2,3,4}
    assert rows[1]["moved"] == pytest.approx(2 * 1 / (2 + 2))  # class 2: {4,5} vs {5,6}
    assert rows[2]["moved"] == pytest.approx(2 * 4 / (5 + 5))  # foreground: {1..5} vs {2..6}
    assert all(row["same"] == 1.0 for row in rows)
    with pytest.raises(ValueError, match="shape"):
        label_agreement(reference, {"short": moved[:4]}, ["bg", "one", "two"])


# -------------------------------------------------------------- augmentation


def _dihedral(array: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square applied to a 2D array, computed with numpy."""
    turns = [np.rot90(array, k) for k in range(4)]
    return turns + [np.fliplr(turn) for turn in turns]


def test_augmentation_variants_are_the_eight_symmetries():
    image = np.arange(25.0).reshape(5, 5)  # no symmetry of its own
    label = (image % 7 == 0).astype(np.uint8)
    images, labels, counts = augmentation_variants(image, label, draws=80, seed=3)
    assert images.shape == (8, 5, 5) and labels.shape == (8, 5, 5) and labels.dtype == label.dtype
    assert counts.sum() == 80 and (np.diff(counts) <= 0).all()
    assert {variant.tobytes() for variant in images} == {candidate.tobytes() for candidate in _dihedral(image)}
    np.testing.assert_array_equal(labels, (images % 7 == 0).astype(np.uint8))  # labels moved with images
    np.testing.assert_array_equal(augmentation_variants(image, label, draws=80, seed=3)[0], images)  # seeded


def test_augmentation_variants_of_a_symmetric_image_collapse():
    image = np.ones((4, 4))
    _, _, counts = augmentation_variants(image, image, draws=10)
    assert counts.tolist() == [10]
    with pytest.raises(ValueError, match="square"):
        augmentation_variants(np.ones((4, 5)), np.ones((4, 5)))


# ------------------------------------------------------------------ streaming


def test_measure_stream_counts_slices_and_foreground():
    masks = np.zeros((3, 4, 4, 1))
    masks[1, 2, 2] = 1
    batches = [(np.zeros_like(masks), masks), (np.zeros_like(masks), np.ones_like(masks))]
    stats = measure_stream(batches, batches=5)
    assert (stats.batches, stats.slices, stats.foreground_slices) == (2, 6, 4)
    assert stats.foreground_fraction == pytest.approx(4 / 6)
    assert stats.slices_per_second > 0
    assert measure_stream(batches, batches=1).slices == 3


def test_measure_stream_ignores_the_background_channel_of_one_hot_labels():
    one_hot = np.zeros((2, 4, 4, 3))
    one_hot[..., 0] = 1  # all background ...
    one_hot[1, 0, 0] = [0, 0, 1]  # ... except one voxel of class 2 in the second slice
    stats = measure_stream([(np.zeros((2, 4, 4, 1)), one_hot)], batches=1, one_hot=True)
    assert stats.foreground_slices == 1
    with pytest.raises(ValueError, match="batches"):
        measure_stream([], batches=0)
