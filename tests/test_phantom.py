"""Tests of the synthetic phantom cases and their on-disk dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import PHANTOM_CASE_KWARGS
from scipy import ndimage

from prostseg.dataset import NUM_ZONE_CLASSES, ZONE_NAMES
from prostseg.errors import InputError
from prostseg.io import load_volume
from prostseg.phantom import (
    MAX_ROTATION_DEG,
    MAX_SHIFT_MM,
    RigidTransform,
    make_phantom_case,
    write_phantom_dataset,
)

SMALL = PHANTOM_CASE_KWARGS
PZ, TZ = ZONE_NAMES.index("peripheral zone"), ZONE_NAMES.index("transition zone")
LAYOUT_FILES = ("t2w", "adc", "dwi", "lesion", "zones")


@pytest.fixture(scope="module")
def cases():
    """Eight small cases with different seeds."""
    return [make_phantom_case(seed, **SMALL) for seed in range(8)]


def world(affine, indices):
    """World coordinates of voxel indices ``(N, 3)``."""
    return indices @ affine[:3, :3].T + affine[:3, 3]


def voxel_of(affine, points):
    """Nearest voxel indices of world points ``(N, 3)``."""
    return np.rint((points - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(int)


def test_same_seed_gives_identical_case():
    first, second = make_phantom_case(5, **SMALL), make_phantom_case(5, **SMALL)
    for name in ("t2w", "adc", "dwi", "zones", "lesion", "dwi_zones", "t2w_affine", "dwi_affine"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    assert first.misalignment == second.misalignment


def test_different_seeds_give_different_cases(cases):
    assert not np.array_equal(cases[0].t2w, cases[1].t2w)
    assert not np.array_equal(cases[0].zones, cases[1].zones)
    assert cases[0].misalignment != cases[1].misalignment


def test_grids_and_dtypes(cases):
    for case in cases:
        assert case.t2w.shape == case.zones.shape == case.lesion.shape == SMALL["shape"]
        assert case.adc.shape == case.dwi.shape == case.dwi_zones.shape
        assert case.adc.shape[2] == case.t2w.shape[2]
        assert (case.t2w.dtype, case.adc.dtype, case.dwi.dtype) == (np.int16, np.float32, np.float32)
        assert case.zones.dtype == case.lesion.dtype == np.uint8
        t2w_spacing = nib.affines.voxel_sizes(case.t2w_affine)
        dwi_spacing = nib.affines.voxel_sizes(case.dwi_affine)
        np.testing.assert_allclose(t2w_spacing, SMALL["spacing"])
        assert (dwi_spacing[:2] > t2w_spacing[:2]).all()
        assert dwi_spacing[2] == pytest.approx(t2w_spacing[2])
        # The diffusion grid covers the T2W field of view.
        t2w_fov = np.asarray(case.t2w.shape) * t2w_spacing
        assert (np.asarray(case.dwi.shape) * dwi_spacing >= t2w_fov - 1e-6).all()


def test_every_case_has_all_zone_classes(cases):
    for case in cases:
        counts = np.bincount(case.zones.ravel(), minlength=NUM_ZONE_CLASSES)
        assert len(counts) == NUM_ZONE_CLASSES
        assert (counts[1:] >= 20).all(), (case.seed, counts)
        assert np.array_equal(np.unique(case.dwi_zones), np.arange(NUM_ZONE_CLASSES))


def test_lesions_lie_inside_the_gland_and_are_counted(cases):
    for case in cases:
        assert set(np.unique(case.lesion).tolist()) <= {0, 1}
        assert (case.zones[case.lesion > 0] > 0).all()
        assert bool(case.lesion.any()) == (case.lesion_count > 0)
    assert make_phantom_case(0, n_lesions=0, **SMALL).lesion.sum() == 0
    two = make_phantom_case(0, n_lesions=2, **SMALL)
    assert two.lesion_count == 2 and two.lesion.any()


def test_intensities_are_finite_and_plausible(cases):
    for case in cases:
        gland = case.zones > 0
        assert case.t2w.min() >= 0 and case.t2w.max() < 4000
        assert 150 < np.median(case.t2w[gland]) < 800
        assert np.isfinite(case.adc).all() and np.isfinite(case.dwi).all()
        assert case.adc.min() >= 0 and case.adc.max() <= 3500
        assert 1200 < np.median(case.adc[case.dwi_zones == PZ]) < 2300
        assert case.dwi.min() >= 0 and case.dwi.max() < 500
        # ADC and DWI show the zones of dwi_zones: the PZ diffuses more freely than the TZ.
        assert case.adc[case.dwi_zones == PZ].mean() > case.adc[case.dwi_zones == TZ].mean()
        # T2W: the PZ is brighter than the TZ.
        assert case.t2w[case.zones == PZ].mean() > case.t2w[case.zones == TZ].mean()


def test_lesions_are_dark_on_t2w_and_adc_and_bright_on_dwi():
    for seed in range(4):
        case = make_phantom_case(seed, n_lesions=1, **SMALL)
        lesion = case.lesion > 0
        core = ndimage.binary_erosion(lesion)
        core = core if core.sum() >= 5 else lesion
        zone = np.bincount(case.zones[lesion]).argmax()
        ring = ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesion) & (case.zones == zone)
        assert case.t2w[core].mean() < case.t2w[ring].mean() - 50, seed
        # Find the lesion in the diffusion volumes through the stored misalignment.
        def dwi_values(volume, mask):
            points = case.misalignment.apply(world(case.t2w_affine, np.argwhere(mask)))
            index = voxel_of(case.dwi_affine, points)
            inside = ((index >= 0) & (index < volume.shape)).all(axis=1)
            return volume[tuple(index[inside].T)]

        assert dwi_values(case.adc, core).mean() < dwi_values(case.adc, ring).mean() - 300, seed
        assert dwi_values(case.dwi, core).mean() > 1.5 * dwi_values(case.dwi, ring).mean(), seed


def centroid(affine, mask):
    return world(affine, np.argwhere(mask).astype(float)).mean(axis=0)


def test_stored_misalignment_moves_the_anatomy_in_the_dwi_header_frame():
    centre = (0.0, -20.0, -60.0)
    transform = RigidTransform((4.0, -3.0, 3.0), (0.0, 0.0, 3.0), centre)
    case = make_phantom_case(2, misalignment=transform, **SMALL)
    t2w_gland = centroid(case.t2w_affine, case.zones > 0)
    dwi_gland = centroid(case.dwi_affine, case.dwi_zones > 0)
    dwi_voxel = nib.affines.voxel_sizes(case.dwi_affine).max()
    assert np.linalg.norm(dwi_gland - transform.apply(t2w_gland)) < 0.5 * dwi_voxel
    # A header-only alignment (or a transform of the wrong direction) misses by far more.
    assert np.linalg.norm(dwi_gland - t2w_gland) > 4.0
    assert np.linalg.norm(dwi_gland - transform.inverse_apply(t2w_gland)) > 8.0
    # dwi_true_affine places what each diffusion voxel shows at its T2W world position.
    np.testing.assert_allclose(centroid(case.dwi_true_affine, case.dwi_zones > 0), t2w_gland, atol=0.5 * dwi_voxel)


def test_zero_misalignment_keeps_the_gland_in_place():
    zero = RigidTransform((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    case = make_phantom_case(4, misalignment=zero, **SMALL)
    dwi_voxel = nib.affines.voxel_sizes(case.dwi_affine).max()
    distance = centroid(case.dwi_affine, case.dwi_zones > 0) - centroid(case.t2w_affine, case.zones > 0)
    assert np.linalg.norm(distance) < 0.5 * dwi_voxel


def test_random_misalignment_stays_within_its_bounds(cases):
    for case in cases:
        assert (np.abs(case.misalignment.translation_mm) <= MAX_SHIFT_MM).all()
        assert (np.abs(case.misalignment.rotation_deg) <= MAX_ROTATION_DEG).all()
    assert any(np.linalg.norm(case.misalignment.translation_mm) > 1.0 for case in cases)


@pytest.mark.parametrize(
    ("rotation", "point", "expected"),
    [
        ((0, 0, 90), (1, 0, 0), (0, 1, 0)),  # about S: Right turns to Anterior
        ((90, 0, 0), (0, 1, 0), (0, 0, 1)),  # about R: Anterior turns to Superior
        ((0, 90, 0), (0, 0, 1), (1, 0, 0)),  # about A: Superior turns to Right
    ],
)
def test_rigid_transform_rotates_right_handed_about_its_centre(rotation, point, expected):
    centre = np.array([10.0, -5.0, 2.0])
    transform = RigidTransform((1.0, 2.0, 3.0), rotation, tuple(centre))
    moved = transform.apply(centre + point)
    np.testing.assert_allclose(moved, centre + expected + (1.0, 2.0, 3.0), atol=1e-12)
    np.testing.assert_allclose(transform.inverse_apply(moved), centre + point, atol=1e-12)
    np.testing.assert_allclose(transform.matrix @ [*(centre + point), 1.0], [*moved, 1.0], atol=1e-12)


def test_rigid_transform_round_trips_and_is_rigid():
    transform = RigidTransform((1.5, -2.0, 0.7), (1.0, -0.5, 2.0), (3.0, 4.0, 5.0))
    points = np.random.default_rng(0).uniform(-50, 50, size=(20, 3))
    np.testing.assert_allclose(transform.inverse_apply(transform.apply(points)), points, atol=1e-9)
    rotation = transform.matrix[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="shape and spacing"):
        make_phantom_case(0, shape=(64, 64), spacing=(1.0, 1.0, 3.0))
    with pytest.raises(ValueError, match="n_lesions"):
        make_phantom_case(0, n_lesions=-1, **SMALL)


def test_written_dataset_matches_the_cases(phantom_dir):
    case_dirs = sorted(path for path in phantom_dir.iterdir())
    assert [path.name for path in case_dirs] == [f"phantom-{i:03d}" for i in range(4)]
    seeds = set()
    for case_dir in case_dirs:
        names = sorted(path.name for path in case_dir.iterdir())
        assert names == sorted([f"{name}.nii.gz" for name in LAYOUT_FILES] + ["phantom.json"])
        metadata = json.loads((case_dir / "phantom.json").read_text())
        seeds.add(metadata["case_seed"])
        case = make_phantom_case(metadata["case_seed"], **SMALL)
        assert metadata["dataset_seed"] == 0
        assert metadata["case_kwargs"] == {key: list(value) for key, value in SMALL.items()}
        assert metadata["lesion_count"] == case.lesion_count
        np.testing.assert_allclose(metadata["misalignment"]["matrix"], case.misalignment.matrix, atol=1e-8)
        assert metadata["misalignment"]["translation_mm"] == list(case.misalignment.translation_mm)
        stored = {
            "t2w": np.int16, "adc": np.float32, "dwi": np.float32, "lesion": np.uint8, "zones": np.uint8,
        }
        for name, (array, affine) in case.volumes().items():
            image = nib.load(case_dir / f"{name}.nii.gz")
            assert image.get_data_dtype() == stored[name], name
            assert nib.aff2axcodes(image.affine) == ("L", "A", "S"), name
            volume = load_volume(case_dir / f"{name}.nii.gz", label=name in ("lesion", "zones"))
            np.testing.assert_array_equal(volume.data, array, err_msg=name)
            np.testing.assert_allclose(volume.affine, affine, atol=1e-4, err_msg=name)
    assert len(seeds) == 4


def test_write_refuses_existing_cases_unless_overwrite(tmp_path, phantom_dir):
    first = write_phantom_dataset(tmp_path, n_cases=1, seed=0, **SMALL)[0]
    # The first case of a dataset does not depend on how many cases it has.
    assert (first / "t2w.nii.gz").read_bytes() != b""
    np.testing.assert_array_equal(
        load_volume(first / "t2w.nii.gz").data, load_volume(phantom_dir / "phantom-000" / "t2w.nii.gz").data
    )
    before = (first / "t2w.nii.gz").read_bytes()
    with pytest.raises(InputError, match="overwrite=True") as info:
        write_phantom_dataset(tmp_path, n_cases=2, seed=3, **SMALL)
    assert info.value.path == str(first)
    assert not (tmp_path / "phantom-001").exists()
    assert (first / "t2w.nii.gz").read_bytes() == before

    (first / "notes.txt").write_text("mine")
    written = write_phantom_dataset(tmp_path, n_cases=2, seed=3, overwrite=True, **SMALL)
    assert [path.name for path in written] == ["phantom-000", "phantom-001"]
    assert json.loads((first / "phantom.json").read_text())["dataset_seed"] == 3
    assert not np.array_equal(load_volume(first / "t2w.nii.gz").data, load_volume(phantom_dir / "phantom-000" / "t2w.nii.gz").data)
    assert (first / "notes.txt").read_text() == "mine"


def test_overwrite_never_touches_folders_it_did_not_write(tmp_path):
    foreign = tmp_path / "phantom-000"
    foreign.mkdir()
    (foreign / "t2w.nii.gz").write_bytes(b"a real scan")
    with pytest.raises(InputError, match="not written by prostseg.phantom") as info:
        write_phantom_dataset(tmp_path, n_cases=1, overwrite=True, **SMALL)
    assert info.value.path == str(foreign)
    assert (foreign / "t2w.nii.gz").read_bytes() == b"a real scan"


def test_write_into_a_file_is_an_input_error(tmp_path):
    target = tmp_path / "data"
    target.write_text("")
    with pytest.raises(InputError, match="not a folder"):
        write_phantom_dataset(target, n_cases=1, **SMALL)


@pytest.mark.slow
def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    out_dir = tmp_path / "phantom"
    command = [sys.executable, "-m", "prostseg", "phantom", str(out_dir), "--cases", "2", "--seed", "1"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out_dir / "phantom-000"), str(out_dir / "phantom-001")]
    assert json.loads((out_dir / "phantom-001" / "phantom.json").read_text())["dataset_seed"] == 1
    assert load_volume(out_dir / "phantom-000" / "t2w.nii.gz").shape == (160, 160, 16)
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 2
    assert "phantom-000" in again.stderr and "--overwrite" in again.stderr
