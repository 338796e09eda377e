"""Tests of prostseg.preparation.registration.

elastix is slow to start (about 10 s per process), so the registrations run once per
module: one phantom case (whose true misalignment is known) and, when real data is
available, ProstateX-0000. Everything else reuses their results.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from prostseg.errors import InputError
from prostseg.data.io import Volume, itk_to_volume, load_volume
from prostseg.data.phantom import make_phantom_case
from prostseg.preparation.registration import (
    central_region,
    default_parameter_maps,
    load_transform,
    mutual_information,
    register,
    register_case,
    resample_to,
    save_transform,
)

REAL_CASE = Path("prostatex-mpmri") / "ProstateX-0000"
MODALITIES = ("dwi", "adc")

# SWIG-wrapped itk modules warn about their own types on import.
def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def world_coordinates(volume: Volume) -> np.ndarray:
    """RAS position (mm) of every voxel centre, shape ``volume.shape + (3,)``."""
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in volume.shape), indexing="ij"), -1)
    return index @ volume.affine[:3, :3].T + volume.affine[:3, 3]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def phantom_case_dir(phantom_dir) -> Path:
    """The case of the shared phantom set whose DWI/ADC are shifted most.

    The accuracy test needs a misalignment well above its one-voxel tolerance; the
    random misalignment of a case can be smaller than that.
    """
    def shift(case_dir: Path) -> float:
        metadata = json.loads((case_dir / "phantom.json").read_text(encoding="utf-8"))
        return float(np.linalg.norm(metadata["misalignment"]["translation_mm"]))

    return max(sorted(phantom_dir.iterdir()), key=shift)


@pytest.fixture(scope="module")
def phantom_truth(phantom_case_dir):
    """The PhantomCase behind the files: true misalignment and DWI-grid zones."""
    metadata = json.loads((phantom_case_dir / "phantom.json").read_text(encoding="utf-8"))
    return make_phantom_case(metadata["case_seed"], **metadata["case_kwargs"])


@pytest.fixture(scope="module")
def phantom_aligned(phantom_case_dir, tmp_path_factory) -> Path:
    """register_case on the phantom (the one phantom registration of this module)."""
    return register_case(phantom_case_dir, out_dir=tmp_path_factory.mktemp("phantom") / "aligned")


@pytest.fixture(scope="module")
def phantom_t2w(phantom_case_dir) -> Volume:
    return load_volume(phantom_case_dir / "t2w.nii.gz")


@pytest.fixture(scope="module")
def phantom_transform(phantom_aligned):
    return load_transform(phantom_aligned / "adc_transform.txt")


@pytest.fixture(scope="module")
def real_aligned(real_data_dir, tmp_path_factory) -> Path:
    """register_case on ProstateX-0000, written outside the read-only data folder."""
    return register_case(real_data_dir / REAL_CASE, out_dir=tmp_path_factory.mktemp("real") / "aligned")


# ------------------------------------------------------- conversions and maps


def test_default_maps_smooth_slices_less_than_in_plane():
    maps = default_parameter_maps(("rigid", "affine", "bspline"), fixed_spacing=(0.5, 0.5, 3.0),
                                  moving_spacing=(2.0, 2.0, 3.0))
    assert [m["Transform"][0] for m in maps] == ["EulerTransform", "AffineTransform", "BSplineTransform"]
    for m in maps:
        assert m["Metric"] == ["AdvancedMattesMutualInformation"]
        assert m["ImageSampler"] == ["RandomCoordinate"]
        levels = int(m["NumberOfResolutions"][0])
        for key, spacing in (("FixedImagePyramidSchedule", 0.5), ("MovingImagePyramidSchedule", 2.0)):
            factors = np.array(m[key], dtype=int).reshape(levels, 3)
            # Every level smooths x, y and z to about the same physical scale ...
            np.testing.assert_allclose(factors[:, 0] * spacing, factors[0, 0] * spacing / 2 ** np.arange(levels))
            assert (factors[:, 2] <= factors[:, 0]).all()  # ... so the 3 mm axis less.
            assert (np.diff(factors, axis=0) <= 0).all()  # coarse to fine
    with pytest.raises(ValueError, match="transforms"):
        default_parameter_maps(("demons",))


def test_mutual_information_is_high_for_related_and_zero_for_unrelated_images():
    rng = np.random.default_rng(1)
    a = rng.random((20, 20, 5))
    assert mutual_information(a, np.exp(-3 * a)) > mutual_information(a, a + rng.random(a.shape))
    assert mutual_information(a, rng.random(a.shape), bins=8) < 0.05
    assert mutual_information(a, np.zeros_like(a)) == pytest.approx(0.0, abs=1e-12)
    mask = np.zeros(a.shape, bool)
    mask[:10] = True
    b = a.copy()
    b[10:] = rng.random(b[10:].shape)  # unrelated outside the mask only
    assert mutual_information(a, b, mask) == pytest.approx(mutual_information(a[:10], a[:10]))


def test_header_only_resampling_of_labels_keeps_values_and_dtype(phantom_truth, phantom_t2w):
    dwi_zones = Volume(phantom_truth.dwi_zones, phantom_truth.dwi_affine)
    resampled = resample_to(dwi_zones, phantom_t2w, label=True)
    assert resampled.data.dtype == np.uint8
    assert resampled.shape == phantom_t2w.shape
    assert set(np.unique(resampled.data)) <= set(np.unique(phantom_truth.dwi_zones))


# ----------------------------------------------------------------- phantom


def test_recovered_transform_matches_the_phantom_misalignment(phantom_truth, phantom_t2w, phantom_transform):
    """Mean displacement error over the gland below one T2W voxel (1.4 mm here)."""
    dwi_grid = Volume(np.zeros(phantom_truth.dwi.shape, np.float32), phantom_truth.dwi_affine)
    moving_world = world_coordinates(dwi_grid)
    # Linear interpolation of a coordinate is exact, so resampling the moving grid's
    # world coordinates gives, at each T2W voxel q, the point T(q) the transform maps it to.
    mapped = np.stack(
        [resample_to(replace(dwi_grid, data=moving_world[..., axis].astype(np.float32)), phantom_t2w,
                     phantom_transform).data for axis in range(3)], axis=-1)
    gland = phantom_truth.zones > 0
    q = world_coordinates(phantom_t2w)[gland]
    truth = phantom_truth.misalignment.apply(q)
    error_after = np.linalg.norm(mapped[gland] - truth, axis=-1).mean()
    error_before = np.linalg.norm(q - truth, axis=-1).mean()
    voxel = min(phantom_t2w.spacing[:2])
    assert error_before > voxel  # the phantom is misaligned by more than the tolerance
    assert error_after < voxel


def test_registration_improves_zone_overlap(phantom_truth, phantom_t2w, phantom_transform):
    dwi_zones = Volume(phantom_truth.dwi_zones, phantom_truth.dwi_affine)
    before = resample_to(dwi_zones, phantom_t2w, label=True).data
    after = resample_to(dwi_zones, phantom_t2w, phantom_transform, label=True).data
    assert after.dtype == np.uint8 and set(np.unique(after)) <= set(np.unique(phantom_truth.dwi_zones))
    truth = phantom_truth.zones
    assert dice(after > 0, truth > 0) > dice(before > 0, truth > 0)
    zones = [z for z in np.unique(truth) if z > 0]
    mean_after = np.mean([dice(after == z, truth == z) for z in zones])
    mean_before = np.mean([dice(before == z, truth == z) for z in zones])
    assert mean_after > mean_before


@pytest.mark.parametrize("modality", MODALITIES)
def test_mutual_information_rises_after_registration(modality, phantom_case_dir, phantom_aligned, phantom_t2w):
    header_only = resample_to(phantom_case_dir / f"{modality}.nii.gz", phantom_t2w)
    aligned = load_volume(phantom_aligned / f"{modality}.nii.gz")
    region = central_region(phantom_t2w.shape)
    before = mutual_information(phantom_t2w.data, header_only.data, region)
    after = mutual_information(phantom_t2w.data, aligned.data, region)
    assert after > before
    reported = json.loads((phantom_aligned / "registration.json").read_text(encoding="utf-8"))[modality]
    assert reported["mi_after"] > reported["mi_before"]


def test_saved_transform_reproduces_the_aligned_image(phantom_case_dir, phantom_aligned, phantom_t2w,
                                                      phantom_transform, tmp_path):
    assert [m["Transform"][0] for m in phantom_transform] == ["EulerTransform"]
    written = load_volume(phantom_aligned / "adc.nii.gz")  # resampled with the in-memory transform
    again = resample_to(phantom_case_dir / "adc.nii.gz", phantom_t2w, phantom_aligned / "adc_transform.txt")
    np.testing.assert_allclose(again.data, written.data, rtol=1e-6, atol=1e-3)
    twice = phantom_transform * 2  # a chain of two maps: one file each, linked by name
    paths = save_transform(twice, tmp_path / "copy" / "t.txt")
    assert [p.name for p in paths] == ["t.0.txt", "t.txt"]
    assert load_transform(paths[-1]) == twice
    with pytest.raises(InputError, match="overwrite"):
        save_transform(twice, tmp_path / "copy" / "t.txt")


def test_register_case_writes_the_layout(phantom_case_dir, phantom_aligned, phantom_t2w):
    names = {p.name for p in phantom_aligned.iterdir()}
    assert {"stack.nii.gz", "dwi.nii.gz", "adc.nii.gz", "dwi_transform.txt", "adc_transform.txt",
            "registration.json"} <= names
    stack_file = nib.load(phantom_aligned / "stack.nii.gz")
    source = nib.load(phantom_case_dir / "t2w.nii.gz")
    assert stack_file.shape == source.shape + (3,)
    assert stack_file.get_data_dtype() == np.float32
    np.testing.assert_allclose(stack_file.affine, source.affine, atol=1e-5)
    stack = load_volume(phantom_aligned / "stack.nii.gz", channels=3)
    np.testing.assert_allclose(stack.data[..., 0], phantom_t2w.data)
    np.testing.assert_allclose(stack.data[..., 2], load_volume(phantom_aligned / "adc.nii.gz").data)
    report = json.loads((phantom_aligned / "registration.json").read_text(encoding="utf-8"))
    assert report["case"] == phantom_case_dir.name and report["seconds"] > 0


def test_register_case_refuses_to_overwrite(phantom_case_dir, phantom_aligned):
    before = (phantom_aligned / "registration.json").read_text(encoding="utf-8")
    with pytest.raises(InputError, match="overwrite=True"):
        register_case(phantom_case_dir, out_dir=phantom_aligned)
    assert (phantom_aligned / "registration.json").read_text(encoding="utf-8") == before


# --------------------------------------------------------------- bad input


def test_missing_modality_names_the_case_and_file(phantom_case_dir, tmp_path):
    case = tmp_path / "case-1"
    case.mkdir()
    for name in ("t2w", "dwi"):
        shutil.copy(phantom_case_dir / f"{name}.nii.gz", case)
    with pytest.raises(InputError, match="adc") as caught:
        register_case(case)
    assert caught.value.path == str(case)
    assert not (case / "aligned").exists()


def test_2d_input_is_rejected(phantom_t2w):
    single_slice = Volume(phantom_t2w.data[:, :, :1], phantom_t2w.affine, Path("slice.nii.gz"))
    with pytest.raises(InputError, match="3D") as caught:
        register(phantom_t2w, single_slice)
    assert caught.value.path == "slice.nii.gz"


def test_disjoint_fields_of_view_are_rejected_before_elastix(phantom_case_dir, phantom_t2w):
    adc = load_volume(phantom_case_dir / "adc.nii.gz")
    far = adc.affine.copy()
    far[0, 3] += 1000.0  # 1 m to the right
    moved = Volume(adc.data, far, Path("far_adc.nii.gz"))
    with pytest.raises(InputError, match="overlap") as caught:
        register(phantom_t2w, moved)
    assert caught.value.path == "far_adc.nii.gz" and str(phantom_t2w.path) in str(caught.value)


@pytest.mark.slow
def test_elastix_sampling_failure_becomes_input_error(phantom_case_dir, phantom_t2w):
    """A slight overlap passes the bounding-box check but leaves elastix too few samples."""
    adc = load_volume(phantom_case_dir / "adc.nii.gz")
    shifted = adc.affine.copy()
    extent = np.ptp(world_coordinates(phantom_t2w)[..., 0]) + phantom_t2w.spacing[0]
    shifted[0, 3] += 0.85 * extent
    with pytest.raises(InputError, match="overlap"):
        register(phantom_t2w, Volume(adc.data, shifted, Path("shifted_adc.nii.gz")), transforms=("rigid",))


# -------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.slow
def test_real_case_is_resampled_onto_the_t2w_grid(real_data_dir, real_aligned):
    t2w = load_volume(real_data_dir / REAL_CASE / "t2w.mha")
    for modality in MODALITIES:
        aligned = load_volume(real_aligned / f"{modality}.nii.gz")
        assert aligned.shape == t2w.shape
        np.testing.assert_allclose(aligned.affine, t2w.affine, atol=1e-4)
        assert aligned.data.max() > 0
    stack = load_volume(real_aligned / "stack.nii.gz", channels=3)
    assert stack.data.shape == t2w.shape + (3,)
    np.testing.assert_allclose(stack.affine, t2w.affine, atol=1e-4)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("modality, source", [("adc", "adc.mha"), ("dwi", "hbv.mha")])
def test_real_registration_does_not_degrade_mutual_information(modality, source, real_data_dir, real_aligned):
    t2w = load_volume(real_data_dir / REAL_CASE / "t2w.mha")
    header_only = resample_to(real_data_dir / REAL_CASE / source, t2w)
    aligned = load_volume(real_aligned / f"{modality}.nii.gz")
    region = central_region(t2w.shape) & (header_only.data > 0) & (aligned.data > 0)
    before = mutual_information(t2w.data, header_only.data, region)
    after = mutual_information(t2w.data, aligned.data, region)
    assert after >= before - 0.01


def test_an_elastix_failure_is_told_in_one_line():
    from prostseg.preparation.registration import _elastix_reason

    dump = ("File: /work/ITK/itkRecursiveSeparableImageFilter.hxx\nLine: 223\n"
            "Description: ITK ERROR: RecursiveGaussianImageFilter(0x5): The number of pixels along "
            "direction 2 is less than 4.\n\nError occurred during actual registration.")
    assert _elastix_reason([dump]) == ("RecursiveGaussianImageFilter(0x5): The number of pixels along "
                                       "direction 2 is less than 4.")
    assert _elastix_reason(["Some failure\nFile: x.cxx", "last words"]) == "last words"
