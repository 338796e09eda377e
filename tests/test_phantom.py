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

from prostseg.data.dataset import NUM_ZONE_CLASSES, ZONE_NAMES
from prostseg.errors import InputError
from prostseg.data.io import load_volume
from prostseg.data.phantom import (
    MAX_ROTATION_DEG,
    MAX_SHIFT_MM,
    TISSUE_NAMES,
    RigidTransform,
    make_phantom_case,
    write_phantom_dataset,
)

SMALL = PHANTOM_CASE_KWARGS
PZ, TZ, CZ, AFS = (ZONE_NAMES.index(name) for name in (
    "peripheral zone", "transition zone", "central zone", "anterior fibromuscular stroma"))
TISSUE = {name: index for index, name in enumerate(TISSUE_NAMES)}
LAYOUT_FILES = ("t2w", "adc", "dwi", "lesion", "zones", "gland")
ALIGNED = RigidTransform((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def cases():
    """Eight small cases with different seeds."""
    return [make_phantom_case(seed, **SMALL) for seed in range(8)]


@pytest.fixture(scope="module")
def drawn():
    """Four cases on the grids the generator draws itself."""
    return [make_phantom_case(seed) for seed in range(4)]


def world(affine, indices):
    """World coordinates of voxel indices ``(N, 3)``."""
    return indices @ affine[:3, :3].T + affine[:3, 3]


def voxel_of(affine, points):
    """Nearest voxel indices of world points ``(N, 3)``."""
    return np.rint((points - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(int)


def centroid(affine, mask):
    return world(affine, np.argwhere(mask).astype(float)).mean(axis=0)


def gland_ml(case):
    return float((case.zones > 0).sum() * np.prod(nib.affines.voxel_sizes(case.t2w_affine)) / 1000.0)


def test_same_seed_gives_identical_case():
    first, second = make_phantom_case(5, **SMALL), make_phantom_case(5, **SMALL)
    for name in ("t2w", "adc", "dwi", "zones", "lesion", "dwi_zones", "t2w_affine", "dwi_affine", "tissues"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    assert first.misalignment == second.misalignment
    assert first.endorectal_coil == second.endorectal_coil


def test_same_seed_is_the_same_patient_on_any_grid():
    fine, coarse = make_phantom_case(5, **SMALL), make_phantom_case(5, shape=(48, 48, 8), spacing=(3.0, 3.0, 6.0))
    assert coarse.misalignment == fine.misalignment
    assert (coarse.lesion_count, coarse.endorectal_coil) == (fine.lesion_count, fine.endorectal_coil)
    # The anatomy keeps its real size: the gland has the same volume and place.
    assert gland_ml(coarse) == pytest.approx(gland_ml(fine), rel=0.15)
    np.testing.assert_allclose(centroid(coarse.t2w_affine, coarse.zones > 0), centroid(fine.t2w_affine, fine.zones > 0),
                               atol=2.0)


def test_different_seeds_give_different_cases(cases):
    assert not np.array_equal(cases[0].t2w, cases[1].t2w)
    assert not np.array_equal(cases[0].zones, cases[1].zones)
    assert cases[0].misalignment != cases[1].misalignment


def test_the_callers_grid_is_kept(cases):
    for case in cases:
        assert case.t2w.shape == case.zones.shape == case.lesion.shape == case.tissues.shape == SMALL["shape"]
        assert case.adc.shape == case.dwi.shape == case.dwi_zones.shape
        assert case.adc.shape[2] == case.t2w.shape[2]
        assert (case.t2w.dtype, case.adc.dtype, case.dwi.dtype) == (np.int16, np.float32, np.float32)
        assert case.zones.dtype == case.lesion.dtype == case.tissues.dtype == np.uint8
        t2w_spacing = nib.affines.voxel_sizes(case.t2w_affine)
        dwi_spacing = nib.affines.voxel_sizes(case.dwi_affine)
        np.testing.assert_allclose(t2w_spacing, SMALL["spacing"])
        assert (dwi_spacing[:2] > t2w_spacing[:2]).all()
        assert dwi_spacing[2] == pytest.approx(t2w_spacing[2])
        # The diffusion field of view is its own: 0.8-1.15 times the T2W one.
        ratio = np.asarray(case.dwi.shape[:2]) * dwi_spacing[:2] / (np.asarray(case.t2w.shape[:2]) * t2w_spacing[:2])
        assert ((ratio > 0.78) & (ratio < 1.2)).all(), ratio


def test_drawn_grids_vary_like_public_scans(drawn):
    grids = set()
    for case in drawn:
        spacing = nib.affines.voxel_sizes(case.t2w_affine)
        shape = np.asarray(case.t2w.shape)
        assert spacing[0] == pytest.approx(spacing[1]) and 0.4 <= spacing[0] <= 1.0
        assert max(shape[:2]) <= 320 and 140 <= shape[0] * spacing[0] <= 220
        assert 3.0 <= spacing[2] <= 4.0 and 16 <= shape[2] <= 26
        dwi_spacing = nib.affines.voxel_sizes(case.dwi_affine)
        assert 1.6 <= dwi_spacing[0] <= 2.5 and case.dwi.shape[2] == shape[2]
        # The slices cover the whole gland, apex to base.
        gland_slices = np.flatnonzero((case.zones > 0).any(axis=(0, 1)))
        assert 0 < gland_slices[0] and gland_slices[-1] < shape[2] - 1
        grids.add((tuple(shape), round(float(spacing[0]), 3)))
    assert len(grids) == len(drawn)


def test_gland_volumes_spread_like_patients():
    volumes = np.array([gland_ml(make_phantom_case(seed, shape=(64, 64, 12), spacing=(2.0, 2.0, 4.0)))
                        for seed in range(16)])
    assert ((volumes > 15) & (volumes < 100)).all(), volumes
    assert volumes.min() < 32 and volumes.max() > 55, volumes
    assert volumes.std() / volumes.mean() > 0.2


def test_every_zone_is_present_and_large_enough_to_learn(cases):
    for case in cases:
        counts = np.bincount(case.zones.ravel(), minlength=NUM_ZONE_CLASSES)
        assert len(counts) == NUM_ZONE_CLASSES
        gland = counts[1:].sum()
        voxel_ml = np.prod(SMALL["spacing"]) / 1000.0
        for zone in (PZ, TZ, CZ, AFS):
            assert counts[zone] >= 0.05 * gland and counts[zone] * voxel_ml >= 1.0, (case.seed, counts)
        assert counts[PZ] + counts[TZ] > 0.6 * gland  # the two zones every reader draws dominate
        assert np.array_equal(np.unique(case.dwi_zones), np.arange(NUM_ZONE_CLASSES))


def offsets_from_gland(case, *names):
    """World offsets (mm, RAS) from the gland centre of the voxels of some tissues."""
    mask = np.isin(case.tissues, [TISSUE[name] for name in names])
    return world(case.t2w_affine, np.argwhere(mask).astype(float)) - centroid(case.t2w_affine, case.zones > 0)


def test_anatomy_lies_where_it_belongs(drawn):
    for case in drawn:
        half_gland = 0.5 * np.ptp(world(case.t2w_affine, np.argwhere(case.zones > 0).astype(float))[:, 2])
        urine = offsets_from_gland(case, "urine")
        assert len(urine) and np.median(urine[:, 2]) > half_gland and abs(np.median(urine[:, 0])) < 15
        vesicles = offsets_from_gland(case, "vesicle")
        assert np.median(vesicles[:, 2]) > 0 and np.median(vesicles[:, 1]) < 0  # above and behind
        assert (vesicles[:, 0] > 5).any() and (vesicles[:, 0] < -5).any()  # one on each side
        rectum = offsets_from_gland(case, "rectal wall")
        assert np.median(rectum[:, 1]) < -15 and abs(np.median(rectum[:, 0])) < 15  # behind, midline
        # Femoral heads on both sides, where the field of view reaches them.
        heads = offsets_from_gland(case, "marrow")
        corners = world(case.t2w_affine, np.array([[0.0, 0, 0], np.subtract(case.t2w.shape, 1)]))
        reach = corners[:, 0] - centroid(case.t2w_affine, case.zones > 0)[0]
        for side, edge in ((-1, reach.min()), (1, reach.max())):
            assert (side * heads[:, 0] > 55).any() or abs(edge) < 75, (case.seed, side, edge)
        assert (np.abs(heads[:, 0]) > 55).any()
        pubis = offsets_from_gland(case, "pelvic marrow")
        assert ((pubis[:, 1] > 20) & (np.abs(pubis[:, 0]) < 25)).any()  # symphysis in front
        muscle = offsets_from_gland(case, "muscle")
        level = np.abs(muscle[:, 2]) < half_gland
        for side in (-1, 1):  # obturator internus on each pelvic side wall
            assert ((side * muscle[:, 0] > 35) & (side * muscle[:, 0] < 80) & (np.abs(muscle[:, 1]) < 20) & level).any()
        # The levator ani passes behind the rectum, in the midline.
        behind_rectum = np.median(rectum[:, 1]) - 10
        assert ((muscle[:, 1] < behind_rectum) & (np.abs(muscle[:, 0]) < 15) & level).any()
        for name in ("fat", "vessel", "vein", "capsule", "cortex", "faeces"):
            assert (case.tissues == TISSUE[name]).any(), (case.seed, name)
        assert (case.tissues == TISSUE["balloon"]).any() == case.endorectal_coil


def largest_gland_section(case):
    """Index of the slice with the largest gland section, and that section (2-D mask)."""
    k = int(np.argmax((case.zones > 0).sum(axis=(0, 1))))
    return k, case.zones[:, :, k] > 0


def tissue_runs(case, side):
    """Tissues met going outwards from the gland's edge, to the right (side 1) or left
    (side -1), along the row through the centre of its largest section: ``[(name, mm)]``.

    Small vessels count as the fat they run in.
    """
    spacing = nib.affines.voxel_sizes(case.t2w_affine)
    k, section = largest_gland_section(case)
    j = int(round(np.argwhere(section)[:, 1].mean()))
    columns = np.flatnonzero(section[:, j])
    i = columns.max() if side > 0 else columns.min()
    runs = []
    while 0 <= (i := i + side) < section.shape[0]:
        name = TISSUE_NAMES[case.tissues[i, j, k]]
        name = "fat" if name in ("vessel", "vein") else name
        if runs and runs[-1][0] == name:
            runs[-1][1] += spacing[0]
        else:
            runs.append([name, spacing[0]])
    return [(name, mm) for name, mm in runs if name != "capsule"]


def test_levator_and_obturator_line_the_side_walls(drawn):
    # Going outwards from the side of the gland: a thin levator ani close to it, the
    # ischioanal fat, then the thick obturator internus, on both sides.
    for case in drawn:
        for side in (-1, 1):
            runs = tissue_runs(case, side)
            names = [name for name, _ in runs]
            levator = names.index("muscle")
            assert sum(mm for _, mm in runs[:levator]) < 10, (case.seed, side, runs[:4])
            assert runs[levator][1] <= 10, (case.seed, side, runs[:4])
            fossa, obturator = runs[levator + 1], runs[levator + 2]
            assert fossa[0] == "fat" and obturator[0] == "muscle" and obturator[1] >= 6, (case.seed, side, runs[:4])


def test_levator_sling_is_open_in_front(drawn):
    for case in drawn:
        spacing = nib.affines.voxel_sizes(case.t2w_affine)
        k, section = largest_gland_section(case)
        i, j = np.argwhere(section).T
        middle = np.abs(i - i.mean()) * spacing[0] < 10
        front = j[middle].max()
        # No muscle in the midline in front of the gland: the sling, beside the gland on
        # both sides (test above) and behind the rectum, opens towards the pubis.
        box = case.tissues[int(i.mean() - 10 / spacing[0]):int(i.mean() + 10 / spacing[0]) + 1,
                           front + 1:front + 1 + int(20 / spacing[1]), k]
        assert not (box == TISSUE["muscle"]).any(), case.seed


def test_bones_are_bright_fatty_marrow_in_dark_cortex(cases):
    for case in cases:
        median = {name: float(np.median(case.t2w[case.tissues == TISSUE[name]]))
                  for name in ("marrow", "pelvic marrow", "cortex", "muscle", "fat")}
        assert median["marrow"] > 0.65 * median["fat"] and median["marrow"] > 3 * median["muscle"], median
        assert median["pelvic marrow"] > 2 * median["muscle"] > median["cortex"], median


def test_rectum_is_a_few_centimetres_across_and_mostly_faeces(drawn):
    for case in drawn:
        assert not case.endorectal_coil
        spacing = nib.affines.voxel_sizes(case.t2w_affine)
        k, _ = largest_gland_section(case)
        wall = np.argwhere(case.tissues[:, :, k] == TISSUE["rectal wall"])
        assert 22 <= (np.ptp(wall[:, 0]) + 1) * spacing[0] <= 42, case.seed
        content = offsets_from_gland(case, "faeces", "air")
        behind = ((np.abs(content[:, 0]) < 25) & (content[:, 1] < -5) & (content[:, 1] > -60)
                  & (np.abs(content[:, 2]) < 15))
        names = case.tissues[np.isin(case.tissues, [TISSUE["faeces"], TISSUE["air"]])][behind]
        assert (names == TISSUE["air"]).sum() < 0.35 * (names == TISSUE["faeces"]).sum(), case.seed
        assert (case.tissues == TISSUE["mucosa"]).any()


def test_endorectal_coil_signal_falls_with_distance():
    for seed in range(3):
        with_coil = make_phantom_case(seed, endorectal_coil=True, **SMALL)
        without = make_phantom_case(seed, endorectal_coil=False, **SMALL)
        assert with_coil.endorectal_coil and not without.endorectal_coil
        assert not (without.tissues == TISSUE["balloon"]).any()
        # The same patient imaged twice: compare each voxel that shows the same tissue.
        distance = ndimage.distance_transform_edt(with_coil.tissues != TISSUE["balloon"], sampling=SMALL["spacing"])
        same = (with_coil.tissues == without.tissues) & (without.t2w > 0) & (with_coil.tissues != TISSUE["air"])
        gain = with_coil.t2w / np.maximum(without.t2w, 1)
        bands = [np.median(gain[same & (distance > lo) & (distance <= hi)])
                 for lo, hi in ((0, 10), (10, 25), (25, 50), (50, np.inf))]
        assert all(near > far for near, far in zip(bands, bands[1:])), (seed, bands)
        assert bands[0] > 1.4 * bands[-1], (seed, bands)


def tissue_values(case, volume, name):
    """Values of a diffusion volume at the T2W voxels of a tissue, away from its edges.

    Only for cases drawn with ``misalignment=ALIGNED``, whose headers are true.
    """
    mask = case.tissues == TISSUE[name]
    core = ndimage.binary_erosion(mask, np.ones((5, 5, 1)))
    mask = core if core.sum() >= 10 else mask
    index = voxel_of(case.dwi_affine, world(case.t2w_affine, np.argwhere(mask).astype(float)))
    inside = ((index >= 0) & (index < volume.shape)).all(axis=1)
    return volume[tuple(index[inside].T)]


def test_adc_and_dwi_behave_per_tissue():
    for seed in range(3):
        case = make_phantom_case(seed, misalignment=ALIGNED, n_lesions=1, **SMALL)
        adc = {name: float(np.median(tissue_values(case, case.adc, name)))
               for name in ("urine", "pz", "tz", "lesion", "fat")}
        dwi = {name: float(np.median(tissue_values(case, case.dwi, name))) for name in ("urine", "pz", "lesion", "fat")}
        assert adc["urine"] > 2300 and 1400 < adc["pz"] < 2000 and 1000 < adc["tz"] < 1500, adc
        assert adc["urine"] > adc["pz"] > adc["tz"] > adc["lesion"] and adc["lesion"] < 1100, adc
        assert adc["fat"] < 400, adc  # fat is suppressed: little signal, a low, noisy fit
        # High b: free water has lost its signal, lesions keep theirs, fat has none.
        assert dwi["lesion"] > 1.5 * dwi["pz"] and dwi["urine"] < dwi["pz"] and dwi["fat"] < 0.5 * dwi["pz"], dwi
        assert np.isfinite(case.adc).all() and np.isfinite(case.dwi).all()
        assert case.adc.min() >= 0 and case.adc.max() <= 3500 and case.dwi.min() >= 0
        assert (case.adc[np.isin(case.dwi_zones, [0])] == 0).any()  # masked where there is no signal


def test_t2w_contrast_between_zones_and_tissues(cases):
    for case in cases:
        assert case.t2w.min() >= 0
        median = {name: float(np.median(case.t2w[case.tissues == TISSUE[name]]))
                  for name in ("pz", "tz", "cz", "afs", "fat", "muscle", "urine")}
        assert median["pz"] > 1.3 * median["tz"] and median["tz"] > median["afs"], median
        assert median["cz"] < median["pz"] and median["afs"] < 0.5 * median["pz"], median
        assert median["fat"] > median["pz"] and median["urine"] > median["pz"] > median["muscle"], median
        # ADC and DWI show the zones of dwi_zones: the PZ diffuses more freely than the TZ.
        assert case.adc[case.dwi_zones == PZ].mean() > case.adc[case.dwi_zones == TZ].mean()


def test_scanner_scale_and_contrast_vary(cases):
    fat = [float(np.median(case.t2w[case.tissues == TISSUE["fat"]])) for case in cases]
    assert max(fat) > 2 * min(fat)  # scanner units differ
    pz_over_tz = [np.median(case.t2w[case.zones == PZ]) / np.median(case.t2w[case.zones == TZ]) for case in cases]
    assert np.ptp(pz_over_tz) > 0.2  # and so does the contrast


def test_random_contrast_changes_only_the_t2w_grey_values(cases):
    """The SynthSeg-style option redraws the T2W level of each tissue and nothing else."""
    gland_over_fat, gland_over_muscle = [], []
    for seed, realistic in enumerate(cases[:4]):
        shuffled = make_phantom_case(seed, contrast="random", **SMALL)
        for name in ("zones", "lesion", "tissues", "dwi", "adc", "dwi_zones", "t2w_affine", "dwi_affine"):
            np.testing.assert_array_equal(getattr(shuffled, name), getattr(realistic, name), err_msg=name)
        assert shuffled.misalignment == realistic.misalignment and shuffled.lesion_count == realistic.lesion_count
        assert shuffled.t2w.dtype == np.int16 and not np.array_equal(shuffled.t2w, realistic.t2w)
        median = {name: float(np.median(shuffled.t2w[shuffled.tissues == TISSUE[name]]))
                  for name in ("fat", "muscle", "tz")}
        gland_over_fat.append(median["tz"] / median["fat"])
        gland_over_muscle.append(median["tz"] / median["muscle"])
        air = shuffled.tissues == TISSUE["air"]
        if air.any():  # air stays black: only noise there (the scanner scale is the same)
            assert np.median(shuffled.t2w[air]) < 0.1 * np.median(realistic.t2w[realistic.tissues == TISSUE["fat"]])
    # Realistic scans always show the TZ darker than fat and brighter than muscle; random
    # ones put it anywhere.
    assert max(gland_over_fat) > 1 or max(gland_over_muscle) / min(gland_over_muscle) > 3
    assert min(gland_over_muscle) < 1 or max(gland_over_fat) / min(gland_over_fat) > 3
    assert np.ptp(np.log(gland_over_fat)) > 1.0


def test_mixed_contrast_gives_both_kinds_of_scan(cases):
    kinds = []
    for seed, realistic in enumerate(cases):
        mixed = make_phantom_case(seed, contrast="mixed", **SMALL)
        np.testing.assert_array_equal(mixed.tissues, realistic.tissues)
        if np.array_equal(mixed.t2w, realistic.t2w):
            kinds.append("realistic")
        else:  # then it is one of the random scans of that seed's patient
            kinds.append("random")
            assert mixed.t2w.dtype == np.int16 and np.array_equal(mixed.adc, realistic.adc)
    assert set(kinds) == {"realistic", "random"}, kinds


def test_random_contrast_of_all_channels(cases):
    """random_channels: ADC and DWI get random tissue levels too, each channel its own."""
    pz_over_tz = {"adc": [], "dwi": []}
    for seed, realistic in enumerate(cases):
        shuffled = make_phantom_case(seed, contrast="random", random_channels=("t2w", "adc", "dwi"), **SMALL)
        t2w_only = make_phantom_case(seed, contrast="random", **SMALL)
        for name in ("zones", "tissues", "dwi_zones", "dwi_affine"):
            np.testing.assert_array_equal(getattr(shuffled, name), getattr(realistic, name), err_msg=name)
        np.testing.assert_array_equal(shuffled.t2w, t2w_only.t2w)  # the T2W draw comes first, as before
        assert shuffled.adc.dtype == shuffled.dwi.dtype == np.float32
        assert shuffled.adc.min() >= 0 and shuffled.dwi.min() >= 0
        for channel in ("adc", "dwi"):
            values = getattr(shuffled, channel)
            assert not np.array_equal(values, getattr(realistic, channel)), channel
            pz_over_tz[channel].append(np.median(values[shuffled.dwi_zones == PZ])
                                       / np.median(values[shuffled.dwi_zones == TZ]))
    # Realistic scans always show the PZ above the TZ on ADC and below it on high-b DWI;
    # random scans put either zone above the other.
    assert min(pz_over_tz["adc"]) < 1 < max(pz_over_tz["adc"]), pz_over_tz
    assert min(pz_over_tz["dwi"]) < 1 < max(pz_over_tz["dwi"]), pz_over_tz
    # ADC alone: the DWI changes with it (the high-b signal falls with the ADC), T2W does not.
    adc_only = make_phantom_case(0, contrast="random", random_channels=("adc",), **SMALL)
    np.testing.assert_array_equal(adc_only.t2w, cases[0].t2w)
    assert not np.array_equal(adc_only.dwi, cases[0].dwi)
    with pytest.raises(ValueError, match="random_channels"):
        make_phantom_case(0, contrast="random", random_channels=("t1w",), **SMALL)


def test_aligned_stack_shows_the_t2w_anatomy():
    """The stack of a perfect registration: DWI zones land on the T2W zones."""
    case = make_phantom_case(2, **SMALL)
    stack = case.aligned_stack()
    assert stack.shape == (*case.t2w.shape, 3) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[..., 0], case.t2w)
    # Resample the DWI zone map the same way: it must overlay the T2W zone map far
    # better than a header-only resampling, which leaves the misalignment in.
    true = nib.affines.apply_affine(np.linalg.inv(case.dwi_true_affine) @ case.t2w_affine,
                                    np.argwhere(case.zones >= 0)).T
    nominal = nib.affines.apply_affine(np.linalg.inv(case.dwi_affine) @ case.t2w_affine,
                                       np.argwhere(case.zones >= 0)).T
    gland = case.zones.ravel() > 0

    def overlap(coordinates):
        sampled = ndimage.map_coordinates(case.dwi_zones, coordinates, order=0).ravel() > 0
        return 2 * (sampled & gland).sum() / (sampled.sum() + gland.sum())

    assert overlap(true) > 0.9 and overlap(true) > overlap(nominal)
    # ADC inside the gland: the stack's ADC channel shows the gland's diffusion there.
    assert stack[..., 2][case.zones > 0].mean() > 0.7 * case.adc[case.dwi_zones > 0].mean()


def test_dataset_with_aligned_stacks(tmp_path):
    from prostseg.data.dataset import discover_cases
    from prostseg.preparation.registration import registration_state

    folders = write_phantom_dataset(tmp_path, n_cases=2, seed=3, aligned_stack=True, **SMALL)
    for index, folder in enumerate(folders):
        case = make_phantom_case(json.loads((folder / "phantom.json").read_text(encoding="utf-8"))["case_seed"],
                                 **SMALL)
        stack = load_volume(folder / "aligned" / "stack.nii.gz", channels=3)
        np.testing.assert_allclose(stack.data, case.aligned_stack())
        np.testing.assert_allclose(stack.affine, load_volume(folder / "t2w.nii.gz").affine)
        # Registration keeps a stack it did not make, unless told to overwrite.
        assert not registration_state(folder).replaceable
    assert [case.case_id for case in discover_cases(tmp_path, require=("zones", "stack"))] == \
        [folder.name for folder in folders]


def test_lesions_lie_inside_the_gland_and_are_counted(cases):
    for case in cases:
        assert set(np.unique(case.lesion).tolist()) <= {0, 1}
        assert (case.zones[case.lesion > 0] > 0).all()
        assert bool(case.lesion.any()) == (case.lesion_count > 0)
    assert make_phantom_case(0, n_lesions=0, **SMALL).lesion.sum() == 0
    two = make_phantom_case(0, n_lesions=2, **SMALL)
    assert two.lesion_count == 2 and two.lesion.any()


def test_lesions_are_dark_on_t2w_and_adc_and_bright_on_dwi():
    for seed in range(4):  # without an endorectal coil, whose sensitivity would brighten the lesion's back
        case = make_phantom_case(seed, n_lesions=1, endorectal_coil=False, **SMALL)
        lesion = case.lesion > 0
        core = ndimage.binary_erosion(lesion)
        core = core if core.sum() >= 5 else lesion
        zone = np.bincount(case.zones[lesion]).argmax()
        ring = ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesion) & (case.zones == zone)
        assert case.t2w[core].mean() < 0.85 * case.t2w[ring].mean(), seed
        # Find the lesion in the diffusion volumes through the stored misalignment.
        def dwi_values(volume, mask):
            points = case.misalignment.apply(world(case.t2w_affine, np.argwhere(mask)))
            index = voxel_of(case.dwi_affine, points)
            inside = ((index >= 0) & (index < volume.shape)).all(axis=1)
            return volume[tuple(index[inside].T)]

        # Relative contrast: a lesion of the transition zone stands out less than one of the
        # peripheral zone, whose ADC is higher.
        assert np.median(dwi_values(case.adc, core)) < 0.85 * np.median(dwi_values(case.adc, ring)), seed
        assert np.median(dwi_values(case.dwi, core)) > 1.5 * np.median(dwi_values(case.dwi, ring)), seed


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
    with pytest.raises(ValueError, match="shape and spacing"):
        make_phantom_case(0, spacing=(1.0, 0.0, 3.0))
    with pytest.raises(ValueError, match="n_lesions"):
        make_phantom_case(0, n_lesions=-1, **SMALL)
    with pytest.raises(ValueError, match="contrast must be one of"):
        make_phantom_case(0, contrast="synthseg", **SMALL)


def test_written_dataset_matches_the_cases(phantom_dir):
    case_dirs = sorted(path for path in phantom_dir.iterdir())
    assert [path.name for path in case_dirs] == [f"phantom-{i:03d}" for i in range(4)]
    seeds = set()
    for case_dir in case_dirs:
        names = sorted(path.name for path in case_dir.iterdir())
        assert names == sorted([f"{name}.nii.gz" for name in LAYOUT_FILES] + ["phantom.json"])
        metadata = json.loads((case_dir / "phantom.json").read_text(encoding="utf-8"))
        seeds.add(metadata["case_seed"])
        case = make_phantom_case(metadata["case_seed"], **SMALL)
        assert metadata["dataset_seed"] == 0
        assert metadata["case_kwargs"] == {key: list(value) for key, value in SMALL.items()}
        assert metadata["lesion_count"] == case.lesion_count
        assert metadata["endorectal_coil"] == case.endorectal_coil
        np.testing.assert_allclose(metadata["misalignment"]["matrix"], case.misalignment.matrix, atol=1e-8)
        assert metadata["misalignment"]["translation_mm"] == list(case.misalignment.translation_mm)
        stored = {
            "t2w": np.int16, "adc": np.float32, "dwi": np.float32, "lesion": np.uint8, "zones": np.uint8,
            "gland": np.uint8,
        }
        for name, (array, affine) in case.volumes().items():
            image = nib.load(case_dir / f"{name}.nii.gz")
            assert image.get_data_dtype() == stored[name], name
            assert nib.aff2axcodes(image.affine) == ("L", "A", "S"), name
            volume = load_volume(case_dir / f"{name}.nii.gz", label=name in ("lesion", "zones", "gland"))
            np.testing.assert_array_equal(volume.data, array, err_msg=name)
            np.testing.assert_allclose(volume.affine, affine, atol=1e-4, err_msg=name)
        gland = load_volume(case_dir / "gland.nii.gz", label=True).data
        np.testing.assert_array_equal(gland, case.zones > 0)
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
    assert json.loads((first / "phantom.json").read_text(encoding="utf-8"))["dataset_seed"] == 3
    assert not np.array_equal(load_volume(first / "t2w.nii.gz").data, load_volume(phantom_dir / "phantom-000" / "t2w.nii.gz").data)
    assert (first / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_overwrite_never_touches_folders_it_did_not_write(tmp_path):
    foreign = tmp_path / "phantom-000"
    foreign.mkdir()
    (foreign / "t2w.nii.gz").write_bytes(b"a real scan")
    with pytest.raises(InputError, match="not written by prostseg.data.phantom") as info:
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
    assert json.loads((out_dir / "phantom-001" / "phantom.json").read_text(encoding="utf-8"))["dataset_seed"] == 1
    # Without a grid, every patient gets one of their own.
    first, second = (load_volume(out_dir / name / "t2w.nii.gz") for name in ("phantom-000", "phantom-001"))
    for volume in (first, second):
        assert 140 <= volume.shape[0] * volume.spacing[0] <= 220 and max(volume.shape) <= 320
    assert first.shape != second.shape or not np.allclose(first.spacing, second.spacing)
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 2
    assert "phantom-000" in again.stderr and "--overwrite" in again.stderr
    shuffled_dir = tmp_path / "random"
    command = [sys.executable, "-m", "prostseg", "phantom", str(shuffled_dir), "--cases", "1", "--seed", "1",
               "--contrast", "random"]
    assert subprocess.run(command, capture_output=True, text=True, check=False).returncode == 0
    metadata = json.loads((shuffled_dir / "phantom-000" / "phantom.json").read_text(encoding="utf-8"))
    assert metadata["case_kwargs"] == {"contrast": "random"}
    shuffled = load_volume(shuffled_dir / "phantom-000" / "t2w.nii.gz")
    assert shuffled.shape == first.shape and not np.array_equal(shuffled.data, first.data)
