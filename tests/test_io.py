"""Tests of prostseg.data.io: formats, orientation, save_like, validation and real data."""

from __future__ import annotations

import dataclasses
import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prostseg.errors import InputError
from prostseg.data.io import (
    SUPPORTED_EXTENSIONS,
    Volume,
    check_same_grid,
    itk_to_volume,
    load_volume,
    save_like,
    volume_grid,
    volume_to_itk,
)

itk = pytest.importorskip("itk")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPACING = np.array([0.7, 0.8, 2.5])


def rotation(degrees: float) -> np.ndarray:
    """Rotation about the first world axis: an oblique acquisition."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def ras_affine(axis_codes: str, spacing=SPACING, origin=(12.0, -30.0, 45.0), degrees: float = 0.0):
    """Voxel-to-RAS affine whose voxel axes point along ``axis_codes`` (e.g. "LAS")."""
    world = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, code in enumerate(axis_codes):
        world_axis, sign = world[code]
        affine[world_axis, voxel_axis] = sign * spacing[voxel_axis]
    affine[:3, :3] = rotation(degrees) @ affine[:3, :3]
    affine[:3, 3] = origin
    return affine


def sample_array(shape=(5, 6, 7), dtype=np.int16) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


def itk_image(array_xyz: np.ndarray, affine: np.ndarray):
    """ITK image of an (x, y, z) array whose RAS geometry is ``affine``."""
    image = itk.image_from_array(np.ascontiguousarray(array_xyz.T))
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection(itk.matrix_from_array(lps[:3, :3] / spacing))
    return image


def nibabel_canonical(array: np.ndarray, affine: np.ndarray):
    """The reference: nibabel's closest-canonical data and affine."""
    canonical = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asanyarray(canonical.dataobj), canonical.affine


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def write_dicom_series(folder: Path, array_xyz: np.ndarray, affine: np.ndarray) -> None:
    """Write one DICOM file per axial slice, named in reverse slice order."""
    folder.mkdir()
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    n_slices = array_xyz.shape[2]
    for k in range(n_slices):
        image = itk.image_from_array(np.ascontiguousarray(array_xyz[:, :, k].T))
        image.SetSpacing(spacing[:2].tolist())
        tags = image.GetMetaDataDictionary()
        position = lps[:3, 3] + lps[:3, 2] * k
        tags["0020|0032"] = "\\".join(f"{v:.6f}" for v in position)
        tags["0020|0037"] = "\\".join(f"{v:.6f}" for v in np.r_[direction[:, 0], direction[:, 1]])
        tags["0018|0050"] = f"{spacing[2]:.6f}"
        tags["0020|0013"] = str(k + 1)
        tags["0020|000d"] = "1.2.826.0.1.3680043.2.1125.1.1"
        tags["0020|000e"] = "1.2.826.0.1.3680043.2.1125.1.2"
        tags["0008|0060"] = "MR"
        image_io = itk.GDCMImageIO.New()
        image_io.KeepOriginalUIDOn()
        itk.imwrite(image, str(folder / f"slice{n_slices - k:02d}.dcm"), imageio=image_io)


def raises_for(path: Path, problem: str):
    """pytest.raises for an InputError naming ``path`` and matching ``problem``."""
    return pytest.raises(InputError, match=f"{re.escape(path.name)}.*{problem}")


# --- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("axis_codes", ["LAS", "LPS", "RAS", "PLI"])
@pytest.mark.parametrize("extension", [".nii", ".nii.gz"])
def test_nifti_matches_nibabel_canonical(tmp_path, axis_codes, extension):
    array, affine = sample_array(), ras_affine(axis_codes)
    path = write_nifti(tmp_path / f"t2w{extension}", array, affine)
    volume = load_volume(path)
    expected_data, expected_affine = nibabel_canonical(array, affine)
    assert volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.data, expected_data)
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-5)
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert volume.path == path


@pytest.mark.parametrize("extension", [".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("axis_codes, degrees", [("LPS", 0.0), ("LAS", 0.0), ("RPI", 20.0)])
def test_itk_formats_match_nibabel_canonical(tmp_path, extension, axis_codes, degrees):
    array, affine = sample_array(dtype=np.float32), ras_affine(axis_codes, degrees=degrees)
    path = tmp_path / f"image{extension}"
    itk.imwrite(itk_image(array, affine), str(path))
    volume = load_volume(path)
    expected_data, expected_affine = nibabel_canonical(array, affine)
    np.testing.assert_array_equal(volume.data, expected_data)
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-6)
    np.testing.assert_allclose(volume.spacing, SPACING[np.argsort(np.argmax(np.abs(affine[:3, :3]), axis=0))])


@pytest.mark.parametrize("axis_codes, degrees", [("LAS", 0.0), ("PRS", 0.0), ("LAS", 15.0)])
def test_itk_conversion_agrees_with_nibabel_on_the_same_nifti(tmp_path, axis_codes, degrees):
    affine = ras_affine(axis_codes, degrees=degrees)
    image = nib.Nifti1Image(sample_array(dtype=np.float32), affine)
    image.set_qform(affine, code="scanner")
    path = tmp_path / "t2w.nii.gz"
    nib.save(image, path)
    through_itk = itk_to_volume(itk.imread(str(path)), path)
    through_nibabel = load_volume(path)
    np.testing.assert_array_equal(through_itk.data, through_nibabel.data)
    np.testing.assert_allclose(through_itk.affine, through_nibabel.affine, atol=1e-4)


def test_dicom_series_is_sorted_by_position(tmp_path):
    array, affine = sample_array((6, 5, 4)), ras_affine("PRI")
    folder = tmp_path / "t2w"
    write_dicom_series(folder, array, affine)
    volume = load_volume(folder)
    expected_data, expected_affine = nibabel_canonical(array, affine)
    np.testing.assert_array_equal(volume.data, expected_data)
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-4)
    shape, grid_affine = volume_grid(folder)
    assert shape == volume.shape
    np.testing.assert_allclose(grid_affine, volume.affine)


@pytest.mark.parametrize("name", ["t2w.nii.gz", "t2w.nii", "t2w.mha", "t2w.nrrd"])
def test_volume_grid_matches_load_volume(tmp_path, name):
    array, affine = sample_array(dtype=np.float32), ras_affine("LPS", degrees=10.0)
    path = tmp_path / name
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        write_nifti(path, array, affine)
    else:
        itk.imwrite(itk_image(array, affine), str(path))
    shape, grid_affine = volume_grid(path)
    volume = load_volume(path)
    assert shape == volume.shape
    np.testing.assert_allclose(grid_affine, volume.affine, atol=1e-9)


# --- save_like and orientation round trips -----------------------------------------------


@pytest.mark.parametrize("axis_codes", ["LAS", "ASR", "RAS"])
def test_save_like_reproduces_nifti_source_exactly(tmp_path, axis_codes):
    array, affine = sample_array(), ras_affine(axis_codes, degrees=5.0)
    source = write_nifti(tmp_path / "t2w.nii.gz", array, affine)
    volume = load_volume(source)
    out = save_like(volume.data, volume, tmp_path / "out" / "copy.nii.gz")
    written, original = nib.load(out), nib.load(source)
    assert written.shape == original.shape
    np.testing.assert_array_equal(written.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), array)
    assert written.get_data_dtype() == np.float32


def test_save_like_writes_itk_source_in_its_voxel_order(tmp_path):
    array, affine = sample_array(dtype=np.float32), ras_affine("LPS", degrees=12.0)
    source = tmp_path / "t2w.mha"
    itk.imwrite(itk_image(array, affine), str(source))
    volume = load_volume(source)
    written = nib.load(save_like(volume.data > 100, volume, tmp_path / "mask.nii.gz"))
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), array > 100)
    assert written.get_data_dtype() == np.uint8


@pytest.mark.parametrize(
    "values, dtype",
    [(np.array([0, 1]), np.uint8), (np.array([True, False]), np.uint8), (np.array([0, 300]), np.uint16),
     (np.array([-1, 2]), np.int16), (np.array([0.5, 2.0]), np.float32)],
)
def test_save_like_storage_types(tmp_path, values, dtype):
    reference = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array((2, 1, 1)), ras_affine("LAS")))
    out = save_like(values.reshape(2, 1, 1), reference, tmp_path / "out.nii.gz")
    assert nib.load(out).get_data_dtype() == dtype


def test_save_like_channels_round_trip(tmp_path):
    reference = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array(), ras_affine("LPS")))
    stack = np.random.default_rng(0).random(reference.shape + (3,), dtype=np.float32)
    out = save_like(stack, reference, tmp_path / "stack.nii.gz")
    assert nib.load(out).shape == nib.load(tmp_path / "t2w.nii.gz").shape + (3,)
    np.testing.assert_array_equal(load_volume(out, channels=3).data, stack)


def test_save_like_refuses_to_overwrite(tmp_path):
    reference = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array(), ras_affine("LAS")))
    out = tmp_path / "prediction.nii.gz"
    save_like(np.zeros(reference.shape, np.uint8), reference, out)
    with raises_for(out, "exists.*overwrite=True"):
        save_like(np.ones(reference.shape, np.uint8), reference, out)
    save_like(np.ones(reference.shape, np.uint8), reference, out, overwrite=True)
    assert np.asanyarray(nib.load(out).dataobj).min() == 1


def test_save_like_writes_only_nifti(tmp_path):
    reference = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array(), ras_affine("LAS")))
    with raises_for(tmp_path / "prediction.mha", r"\.nii\.gz"):
        save_like(reference.data, reference, tmp_path / "prediction.mha")


def test_save_like_rejects_wrong_shape(tmp_path):
    reference = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array(), ras_affine("LAS")))
    with pytest.raises(ValueError, match="shape"):
        save_like(np.zeros((5, 6, 8)), reference, tmp_path / "out.nii.gz")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    permutation=st.permutations([0, 1, 2]),
    flips=st.lists(st.booleans(), min_size=3, max_size=3),
    spacing=st.lists(st.floats(0.3, 4.0), min_size=3, max_size=3),
    degrees=st.floats(-30.0, 30.0),
)
def test_orientation_round_trip(tmp_path, permutation, flips, spacing, degrees):
    codes = "".join(("LPI" if flip else "RAS")[axis] for axis, flip in zip(permutation, flips))
    affine = ras_affine(codes, spacing=np.array(spacing), degrees=degrees)
    array = sample_array((2, 3, 4))
    source = write_nifti(tmp_path / "image.nii", array, affine)
    volume = load_volume(source)
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    # Every canonical voxel holds the value of the source voxel at the same place in space.
    canonical_index = np.indices(volume.shape).reshape(3, -1)
    world = volume.affine[:3, :3] @ canonical_index + volume.affine[:3, 3:]
    source_index = np.linalg.solve(nib.load(source).affine[:3, :3], world - nib.load(source).affine[:3, 3:])
    source_index = np.rint(source_index).astype(int)
    np.testing.assert_array_equal(volume.data.reshape(-1), array[tuple(source_index)])
    out = save_like(volume.data, volume, tmp_path / "back.nii", overwrite=True)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), array)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(source).affine)


def test_volume_rejects_non_canonical_affine():
    with pytest.raises(ValueError, match="LAS"):
        Volume(np.zeros((2, 2, 2)), ras_affine("LAS"))


def test_replace_keeps_source_and_checks_shape(tmp_path):
    volume = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array(), ras_affine("PLS")))
    mask = dataclasses.replace(volume, data=volume.data > 50)
    np.testing.assert_array_equal(mask.to_source(mask.data), sample_array() > 50)
    with pytest.raises(ValueError, match="shape"):
        dataclasses.replace(volume, data=np.zeros((2, 2, 2)))


# --- grids ---------------------------------------------------------------------------------


def test_check_same_grid_accepts_same_grid_in_other_voxel_order(tmp_path):
    array, affine = sample_array(), ras_affine("LAS")
    image = load_volume(write_nifti(tmp_path / "t2w.nii.gz", array, affine))
    canonical_array, canonical_affine = nibabel_canonical(array, affine)
    mask = load_volume(write_nifti(tmp_path / "mask.nii.gz", (canonical_array > 9).astype(np.uint8),
                                   canonical_affine), label=True)
    check_same_grid(image, mask)
    rounded = affine.copy()
    rounded[:3, :3] = rotation(1e-4) @ affine[:3, :3]  # float32-header-sized disagreement
    check_same_grid(image, load_volume(write_nifti(tmp_path / "rounded.nii.gz", array, rounded)))


@pytest.mark.parametrize(
    "shape, shift_mm", [((5, 6, 8), 0.0), ((5, 6, 7), 0.2)],
)
def test_check_same_grid_names_the_mask(tmp_path, shape, shift_mm):
    image = load_volume(write_nifti(tmp_path / "t2w.nii.gz", sample_array(), ras_affine("LAS")))
    affine = ras_affine("LAS")
    affine[1, 3] += shift_mm
    mask_path = write_nifti(tmp_path / "lesion.nii.gz", np.zeros(shape, np.uint8), affine)
    mask = load_volume(mask_path, label=True)
    with raises_for(mask_path, re.escape(f"shape {mask.shape} vs {image.shape}")):
        check_same_grid(image, mask)


# --- bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with raises_for(tmp_path / "absent.nii.gz", "no such file"):
        load_volume(tmp_path / "absent.nii.gz")


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "t2w.png"
    path.write_bytes(b"png")
    with raises_for(path, "unsupported file type.*" + ".*".join(re.escape(e) for e in SUPPORTED_EXTENSIONS)):
        load_volume(path)


def test_truncated_nifti(tmp_path):
    source = write_nifti(tmp_path / "full.nii.gz", sample_array((20, 20, 20)), ras_affine("LAS"))
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with raises_for(path, "cannot read"):
        load_volume(path)


def test_truncated_uncompressed_nifti(tmp_path):
    source = write_nifti(tmp_path / "full.nii", sample_array((20, 20, 20)), ras_affine("LAS"))
    path = tmp_path / "truncated.nii"
    path.write_bytes(source.read_bytes()[:1000])
    with raises_for(path, "cannot read"):
        load_volume(path)


@pytest.mark.parametrize("name", ["garbage.nii.gz", "garbage.nii", "garbage.mha", "garbage.nrrd"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    with raises_for(path, "cannot read"):
        load_volume(path)


def test_gzip_of_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    with raises_for(path, "cannot read"):
        load_volume(path)


def test_truncated_nrrd(tmp_path):
    source = tmp_path / "full.nrrd"
    itk.imwrite(itk_image(sample_array((20, 20, 20), np.float32), ras_affine("LPS")), str(source))
    path = tmp_path / "truncated.nrrd"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with raises_for(path, "cannot read"):
        load_volume(path)


def test_2d_file(tmp_path):
    path = write_nifti(tmp_path / "slice.nii.gz", np.zeros((4, 5), np.float32), np.eye(4))
    with raises_for(path, r"expected a 3D volume, got shape \(4, 5\)"):
        load_volume(path)


def test_4d_file_needs_channels(tmp_path):
    path = write_nifti(tmp_path / "stack.nii.gz", np.zeros((4, 5, 6, 3), np.float32), ras_affine("LAS"))
    with raises_for(path, "expected a 3D volume.*channels=k"):
        load_volume(path)
    assert load_volume(path, channels=3).data.shape == (4, 5, 6, 3)
    with raises_for(path, r"expected a 2-channel volume"):
        load_volume(path, channels=2)


def test_trailing_singleton_axis_is_dropped(tmp_path):
    array = sample_array((4, 5, 6, 1))
    path = write_nifti(tmp_path / "t2w.nii.gz", array, ras_affine("RAS"))
    np.testing.assert_array_equal(load_volume(path).data, array[..., 0])


def test_itk_vector_image_reads_as_channels(tmp_path):
    array = np.random.default_rng(2).random((6, 5, 4, 3)).astype(np.float32)  # z, y, x, channel
    path = tmp_path / "stack.mha"
    itk.imwrite(itk.image_from_array(array, is_vector=True), str(path))
    volume = load_volume(path, channels=3)
    expected_data, _ = nibabel_canonical(array.transpose(2, 1, 0, 3), LPS_TO_RAS)  # unit LPS grid
    np.testing.assert_array_equal(volume.data, expected_data)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image(tmp_path, bad):
    array = sample_array(dtype=np.float32)
    array[1, 2, 3] = bad
    path = write_nifti(tmp_path / "adc.nii.gz", array, ras_affine("LAS"))
    with raises_for(path, "1 NaN or infinite"):
        load_volume(path)


def test_fractional_labels(tmp_path):
    path = write_nifti(tmp_path / "lesion.nii.gz", np.full((3, 3, 3), 0.5, np.float32), np.eye(4))
    with raises_for(path, "non-integer values.*0.5"):
        load_volume(path, label=True)


def test_negative_labels(tmp_path):
    path = write_nifti(tmp_path / "lesion.nii.gz", np.full((3, 3, 3), -2, np.int16), np.eye(4))
    with raises_for(path, "negative values.*-2"):
        load_volume(path, label=True)


def test_labels_outside_classes_are_named(tmp_path):
    array = np.zeros((3, 3, 3), np.uint8)
    array[0, 0, :] = [1, 5, 7]
    path = write_nifti(tmp_path / "zones.nii.gz", array, np.eye(4))
    with raises_for(path, r"label values 5, 7 outside 0\.\.4"):
        load_volume(path, num_classes=5)


def test_label_dtypes(tmp_path):
    float_mask = write_nifti(tmp_path / "a.nii.gz", np.eye(3, dtype=np.float32)[None], np.eye(4))
    assert load_volume(float_mask, label=True).data.dtype == np.uint8
    big_labels = write_nifti(tmp_path / "b.nii.gz", np.full((2, 2, 2), 300, np.int32), np.eye(4))
    big = load_volume(big_labels, label=True)
    assert big.data.dtype == np.uint16 and big.data.max() == 300


def test_constant_volumes_are_accepted(tmp_path):
    path = write_nifti(tmp_path / "blank.nii.gz", np.zeros((3, 3, 3), np.uint8), np.eye(4))
    assert load_volume(path, label=True).data.max() == 0
    assert load_volume(path).data.max() == 0


def test_dicom_folder_problems(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_for(empty, "no DICOM series"):
        load_volume(empty)
    both = tmp_path / "both"
    write_dicom_series(both, sample_array((4, 4, 2)), ras_affine("LPS"))
    write_dicom_series(tmp_path / "other", sample_array((4, 4, 2)), ras_affine("LPS"))
    for file in (tmp_path / "other").iterdir():
        tags = itk.imread(str(file))
        tags.GetMetaDataDictionary()["0020|000e"] = "1.2.826.0.1.3680043.2.1125.1.3"
        image_io = itk.GDCMImageIO.New()
        image_io.KeepOriginalUIDOn()
        itk.imwrite(tags, str(both / f"other_{file.name}"), imageio=image_io)
    with raises_for(both, "2 DICOM series"):
        load_volume(both)


# --- real data -----------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_prostatex_t2w_and_lesion(real_data_dir):
    case = real_data_dir / "prostatex-t2w-lesion" / "ProstateX-0101"
    t2w = load_volume(case / "t2w.nii.gz")
    lesion = load_volume(case / "lesion.nii.gz", num_classes=2)
    check_same_grid(t2w, lesion)
    assert t2w.shape == (320, 320, 19)
    assert lesion.data.dtype == np.uint8
    assert set(np.unique(lesion.data)) == {0, 1}
    assert lesion.data.sum() == np.asanyarray(nib.load(case / "lesion.nii.gz").dataobj).sum()
    np.testing.assert_allclose(t2w.spacing, (0.6, 0.6, 3.0), atol=1e-3)


@pytest.mark.real_data
def test_real_mpmri_grids(real_data_dir):
    case = real_data_dir / "prostatex-mpmri" / "ProstateX-0000"
    t2w = load_volume(case / "t2w.mha")
    lesion = load_volume(case / "lesion.nii.gz", num_classes=2)
    check_same_grid(t2w, lesion)
    assert t2w.shape == (384, 384, 19)
    np.testing.assert_allclose(t2w.spacing, (0.5, 0.5, 3.0), atol=1e-3)
    for name in ("adc", "hbv"):
        volume = load_volume(case / f"{name}.mha")
        assert volume.shape == (84, 128, 19)
        np.testing.assert_allclose(volume.spacing, (2.0, 2.0, 3.0), atol=1e-3)
        with raises_for(case / f"{name}.mha", "not on the grid"):
            check_same_grid(t2w, volume)
        shape, affine = volume_grid(case / f"{name}.mha")
        assert shape == volume.shape
        np.testing.assert_allclose(affine, volume.affine)


def nrrd_ras_affine(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and voxel-to-RAS affine parsed from an LPS NRRD header's text."""
    header = {}
    with open(path, "rb") as file:
        for raw in file:
            line = raw.decode("ascii").strip()
            if not line:
                break
            if ": " in line and not line.startswith("#"):
                key, value = line.split(": ", 1)
                header[key] = value
    assert header["space"] == "left-posterior-superior"
    groups = re.findall(r"\(([^)]*)\)", header["space directions"])
    vectors = [[float(v) for v in group.split(",")] for group in groups]
    lps = np.eye(4)
    lps[:3, :3] = np.array(vectors).T
    lps[:3, 3] = [float(v) for v in re.findall(r"\(([^)]*)\)", header["space origin"])[0].split(",")]
    return tuple(int(n) for n in header["sizes"].split()), LPS_TO_RAS @ lps


@pytest.mark.real_data
def test_real_oblique_zone_labels(real_data_dir, tmp_path):
    path = real_data_dir / "zonal-labels" / "a2amir-104" / "Segmentation.nrrd"
    zones = load_volume(path, num_classes=5)
    assert zones.data.dtype == np.uint8
    assert set(np.unique(zones.data)) <= {0, 1, 2, 3, 4} and len(np.unique(zones.data)) > 2
    shape, expected_affine = nrrd_ras_affine(path)
    _, expected_canonical = nibabel_canonical(np.zeros(shape, np.uint8), expected_affine)
    np.testing.assert_allclose(zones.affine, expected_canonical, atol=1e-6)
    assert abs(zones.affine[2, 1]) > 0.1  # oblique: not reduced to a permutation
    written = nib.load(save_like(zones.data, zones, tmp_path / "zones.nii.gz"))
    assert written.shape == shape
    np.testing.assert_allclose(written.affine, expected_affine, atol=1e-4)


@pytest.mark.real_data
def test_real_dicom_series(real_data_dir):
    folder = real_data_dir / "zonal-labels" / "i2cvb-5slices" / "t2w"
    volume = load_volume(folder)
    assert sorted(volume.shape) == [5, 360, 448]
    assert volume.shape[2] == 5
    np.testing.assert_allclose(volume.spacing, (0.676, 0.676, 1.25), atol=1e-3)
    # Each file's slice sits where its own ImagePositionPatient says.
    for file in sorted(folder.glob("*.dcm")):
        image = itk.imread(str(file))
        corner = LPS_TO_RAS[:3, :3] @ np.asarray(image.GetOrigin(), dtype=float)[:3]
        index = np.linalg.solve(volume.affine[:3, :3], corner - volume.affine[:3, 3])
        k = int(np.rint(index[2]))
        assert abs(index[2] - k) < 1e-3
        assert volume.data[:, :, k].sum() == pytest.approx(itk.array_view_from_image(image).sum())


@pytest.mark.real_data
def test_real_dicom_mask_values(real_data_dir):
    folder = real_data_dir / "zonal-labels" / "i2cvb-5slices" / "gt_folders" / "prostate"
    mask = load_volume(folder, label=True)
    assert set(np.unique(mask.data)) == {0, 255}
    with raises_for(folder, "label values 255 outside 0..1"):
        load_volume(folder, num_classes=2)


def test_volume_to_itk_keeps_oblique_geometry_exactly():
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.948, -0.318], [0.0, 0.318, 0.948]])
    rotation[:, 1:] /= np.linalg.norm(rotation[:, 1:], axis=0)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.6, 3.0])
    affine[:3, 3] = [57.7, 82.4, -27.1]
    data = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    image = volume_to_itk(Volume(data, affine))
    assert tuple(image.GetLargestPossibleRegion().GetSize()) == (5, 4, 3)
    back = itk_to_volume(image)
    np.testing.assert_allclose(back.affine, affine, atol=1e-9)
    np.testing.assert_array_equal(back.data, data)
