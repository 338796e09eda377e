"""Tests of prostseg.preparation.pipeline: volume preparation, streaming datasets, augmentation."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from prostseg.data.dataset import NUM_ZONE_CLASSES, Case, discover_cases  # noqa: E402
from prostseg.errors import InputError  # noqa: E402
from prostseg.data.io import Volume, load_volume, save_like  # noqa: E402
from prostseg.preparation.pipeline import (  # noqa: E402
    augment_intensity,
    augment_stack_intensity,
    augment_pair,
    augment_shape,
    count_slices,
    pix2pix_dataset,
    unet_dataset,
)
from prostseg.preparation.slices import (  # noqa: E402
    prepare_pix2pix_volume,
    prepare_unet_mask,
    prepare_unet_volume,
    prepare_zone_labels,
    restore_pix2pix_slices,
    restore_unet_slices,
)
from prostseg.networks.metrics import dice  # noqa: E402
from prostseg.preparation.preprocessing import center_pad_crop, resize_image, zscore_normalize  # noqa: E402

REAL_LESION_CASES = ("ProstateX-0101", "ProstateX-0152", "ProstateX-0199")


# --- helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases(phantom_dir):
    return discover_cases(phantom_dir, require=("t2w", "lesion", "zones"))


def collect(dataset):
    """Concatenate all batches of a dataset of pairs into two numpy arrays."""
    images, labels = zip(*((image.numpy(), label.numpy()) for image, label in dataset))
    return np.concatenate(images), np.concatenate(labels)


def prepared_cases(cases, image_size, label="lesion"):
    """Slices of each case prepared directly from the loaded volumes, in case order."""
    images = [prepare_unet_volume(load_volume(case.path("t2w")), image_size) for case in cases]
    masks = [prepare_unet_mask(load_volume(case.path(label), label=True), image_size) for case in cases]
    return np.concatenate(images), np.concatenate(masks)


def dihedral_variants(array):
    """The 8 rotations/reflections of the first two axes of ``array``."""
    rotations = [np.rot90(array, k, axes=(0, 1)) for k in range(4)]
    return rotations + [np.flip(rotated, axis=1) for rotated in rotations]


def matching_variant(augmented, original):
    """Index of the dihedral variant of ``original`` equal to ``augmented`` (exactly one)."""
    matches = [i for i, variant in enumerate(dihedral_variants(original)) if np.array_equal(variant, augmented)]
    assert len(matches) == 1, f"{len(matches)} variants match"
    return matches[0]


def slice_keys(images, masks):
    """Sorted byte strings of (image, mask) slice pairs: a multiset of slices."""
    return sorted(image.tobytes() + mask.tobytes() for image, mask in zip(images, masks))


def copy_case(case, destination, names=("t2w", "lesion", "zones")):
    destination.mkdir(parents=True)
    for name in names:
        shutil.copy(case.path(name), destination / case.path(name).name)
    return destination


# --- volume preparation -------------------------------------------------------------


@pytest.mark.parametrize("image_size", [64, 128])
def test_prepare_unet_volume_scales_to_unit_range_and_pads_or_crops(cases, image_size):
    raw = load_volume(cases[0].path("t2w")).data  # (96, 96, 12)
    slices = prepare_unet_volume(raw, image_size)
    assert slices.shape == (raw.shape[2], image_size, image_size, 1)
    assert slices.dtype == np.float32
    assert slices.min() == 0.0 and slices.max() <= 1.0
    # the kept region: a monotone (non-decreasing) function of the raw intensities
    if image_size > raw.shape[0]:
        start = (image_size - raw.shape[0]) // 2
        kept = slices[:, start : start + raw.shape[0], start : start + raw.shape[1], 0]
        raw_kept = np.moveaxis(raw, 2, 0)
        outside = np.ones(slices.shape[:3], bool)
        outside[:, start : start + raw.shape[0], start : start + raw.shape[1]] = False
        assert (slices[..., 0][outside] == 0).all() and slices.max() == 1.0
    else:
        start = (raw.shape[0] - image_size) // 2
        kept = slices[..., 0]
        raw_kept = np.moveaxis(raw[start : start + image_size, start : start + image_size], 2, 0)
    order = np.argsort(raw_kept, axis=None, kind="stable")
    assert (np.diff(kept.ravel()[order]) >= 0).all()
    assert np.corrcoef(kept.ravel(), raw_kept.ravel())[0, 1] > 0.9


def test_constant_volumes_give_zeros():
    for value in (0.0, 42.0):
        slices = prepare_unet_volume(np.full((10, 8, 3), value, np.float32), 16)
        assert np.isfinite(slices).all() and not slices.any()
    stack = np.random.default_rng(0).normal(size=(10, 8, 3, 3))
    stack[..., 1] = 7.0
    prepared = prepare_pix2pix_volume(stack, 16)
    assert np.isfinite(prepared).all() and not prepared[..., 1].any() and prepared[..., 0].any()
    assert not prepare_unet_mask(np.zeros((10, 8, 3), np.uint8), 16).any()


@pytest.mark.parametrize("image_size", [64, 128])
def test_prepare_unet_mask_keeps_foreground_pixels(cases, image_size):
    raw = load_volume(cases[0].path("zones"), label=True).data  # large foreground: the gland
    mask = prepare_unet_mask(raw, image_size)
    assert mask.shape == (raw.shape[2], image_size, image_size, 1) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    foreground = np.moveaxis(raw != 0, 2, 0)
    if image_size > raw.shape[0]:
        start = (image_size - raw.shape[0]) // 2
        kept = mask[:, start : start + raw.shape[0], start : start + raw.shape[1], 0]
        assert mask.sum() == kept.sum()
    else:
        start = (raw.shape[0] - image_size) // 2
        kept = mask[..., 0]
        foreground = foreground[:, start : start + image_size, start : start + image_size]
    np.testing.assert_array_equal(kept, foreground)


def test_prepare_pix2pix_volume_zscores_each_channel(cases):
    t2w = load_volume(cases[0].path("t2w")).data
    stack = np.stack([t2w, 1000 + 0.01 * t2w**1.5, -t2w], axis=-1)
    slices = prepare_pix2pix_volume(stack, 128)
    assert slices.shape == (t2w.shape[2], 128, 128, 3) and slices.dtype == np.float32
    # a bilinear upsampling keeps the statistics approximately
    np.testing.assert_allclose(slices.mean(axis=(0, 1, 2)), 0, atol=0.05)
    np.testing.assert_allclose(slices.std(axis=(0, 1, 2)), 1, atol=0.05)
    np.testing.assert_allclose(slices[..., 2], -slices[..., 0], atol=1e-5)


def test_prepare_zone_labels_one_hot_without_new_labels(cases):
    zones = load_volume(cases[0].path("zones"), label=True).data
    targets = prepare_zone_labels(zones, 128)
    assert targets.shape == (zones.shape[2], 128, 128, NUM_ZONE_CLASSES) and targets.dtype == np.float32
    assert set(np.unique(targets)) == {0.0, 1.0}
    assert (targets.sum(axis=-1) == 1).all()
    present = set(np.unique(zones))
    assert set(np.flatnonzero(targets.any(axis=(0, 1, 2)))) == present and len(present) > 2
    with pytest.raises(InputError, match="0..4"):
        prepare_zone_labels(np.full((4, 4, 2), 5), 8)


def test_restore_slices_undo_the_geometry(cases):
    t2w = load_volume(cases[0].path("t2w")).data  # (96, 96, 12)
    padded = restore_unet_slices(prepare_unet_volume(t2w, 128), t2w.shape)
    cropped = restore_unet_slices(prepare_unet_volume(t2w, 64), t2w.shape)
    assert padded.shape == cropped.shape == (*t2w.shape, 1)
    np.testing.assert_array_equal(cropped[16:80, 16:80], padded[16:80, 16:80])
    assert not cropped[:16].any() and not cropped[80:].any()
    # labels: nearest-neighbour doubling, then bilinear halving of the one-hot maps
    zones = load_volume(cases[0].path("zones"), label=True).data[16:80, 16:80]
    restored = restore_pix2pix_slices(prepare_zone_labels(zones, 128), zones.shape)
    np.testing.assert_array_equal(restored.argmax(axis=-1), zones)
    with pytest.raises(ValueError, match="slices"):
        restore_unet_slices(np.zeros((3, 8, 8, 1)), (8, 8, 4))


# --- a common physical scale (target_spacing) ---------------------------------------


def same_anatomy_at(spacing: float, field_of_view: float = 128.0, slices: int = 6):
    """(T2W, zones) Volumes of phantom seed 5 sampled at ``spacing`` mm over one field of view."""
    from prostseg.data.phantom import make_phantom_case

    n = round(field_of_view / spacing)
    case = make_phantom_case(5, shape=(n, n, slices), spacing=(spacing, spacing, 8.0), n_lesions=0)
    (t2w, affine), (zones, _) = case.volumes()["t2w"], case.volumes()["zones"]
    return Volume(t2w.astype(np.float32), affine), Volume(zones, affine)


def test_target_spacing_shows_scans_of_any_spacing_at_one_scale():
    (fine_t2w, fine), (coarse_t2w, coarse) = same_anatomy_at(0.5), same_anatomy_at(1.0)
    assert fine.shape[:2] == (256, 256) and coarse.shape[:2] == (128, 128)
    # At the native spacing, 96 pixels hold different parts of the body...
    native = [prepare_unet_mask(zones, 96)[..., 0] for zones in (fine, coarse)]
    assert (native[0] != native[1]).mean() > 0.05
    # ...resampled to 1 mm they show the same gland in the same pixels.
    same = [prepare_unet_mask(zones, 96, target_spacing=1.0)[..., 0] for zones in (fine, coarse)]
    assert same[0].sum() > 1000 and (same[0] != same[1]).mean() < 0.01
    images = [prepare_unet_volume(t2w, 96, target_spacing=1.0)[..., 0] for t2w in (fine_t2w, coarse_t2w)]
    assert np.corrcoef(images[0].ravel(), images[1].ravel())[0, 1] > 0.9
    # Pix2Pix: resized whole, the gland's size in pixels follows the field of view;
    # resampled and cropped, 64 pixels of 2 mm cover 128 mm whatever the scan.
    wide_t2w, wide = same_anatomy_at(1.0, field_of_view=200.0)
    resized = [prepare_zone_labels(zones, 64).argmax(-1) > 0 for zones in (coarse, wide)]
    assert resized[0].sum() > 1.5 * resized[1].sum()
    scaled = [prepare_zone_labels(zones, 64, target_spacing=2.0).argmax(-1) for zones in (coarse, wide)]
    assert (scaled[0] != scaled[1]).mean() < 0.01


def test_target_spacing_resamples_labels_without_new_values():
    zones = np.random.default_rng(0).integers(0, 5, size=(50, 40, 3)).astype(np.uint8)
    zones[..., 2] = 3
    mask = prepare_unet_mask(zones, 48, target_spacing=0.7, spacing=(0.5, 0.5))
    assert set(np.unique(mask)) == {0.0, 1.0}
    targets = prepare_zone_labels(zones, 32, target_spacing=0.7, spacing=(0.5, 0.5))
    assert set(np.unique(targets)) == {0.0, 1.0} and (targets.sum(axis=-1) == 1).all()
    # 50 x 40 pixels of 0.5 mm become 36 x 29 pixels of 0.7 mm, cropped/padded to 32:
    # a slice of one label keeps that label, plus background in the padding only.
    assert (targets[2, :, 1:30].argmax(-1) == 3).all() and (targets[2, :, [0, 30, 31]].argmax(-1) == 0).all()


def test_pix2pix_target_spacing_resamples_then_crops_instead_of_resizing():
    stack = np.random.default_rng(1).normal(size=(120, 100, 2, 3)).astype(np.float32)
    prepared = prepare_pix2pix_volume(stack, 32, target_spacing=2.0, spacing=(1.0, 1.0))
    expected = center_pad_crop(resize_image(zscore_normalize(stack, channel_axis=-1), (60, 50)), 32)
    np.testing.assert_allclose(prepared, np.moveaxis(expected, 2, 0), rtol=1e-6)


@pytest.mark.parametrize("spacing", [(0.45, 0.45), (0.9, 0.6)])
def test_restore_with_target_spacing_comes_back_on_the_original_grid(spacing):
    t2w, zones = same_anatomy_at(spacing[0], field_of_view=100.0)
    t2w = Volume(t2w.data, np.diag([*spacing, 8.0, 1.0]))  # anisotropic pixels as well
    geometry = dict(target_spacing=0.8, spacing=t2w.spacing)
    # A prediction equal to the prepared mask comes back as the mask itself,
    # up to a pixel along the gland's edge (nearest in, bilinear out).
    slices = prepare_unet_mask(zones.data, 96, **geometry)
    restored = restore_unet_slices(slices, zones.shape, **geometry)
    assert restored.shape == (*zones.shape, 1) and restored.dtype == np.float32
    gland = zones.data > 0
    assert dice(restored[..., 0] > 0.5, gland) > 0.97
    one_hot = prepare_zone_labels(zones.data, 128, **geometry)
    labels = restore_pix2pix_slices(one_hot, zones.shape, **geometry).argmax(-1)
    assert labels.shape == zones.shape and (labels == zones.data).mean() > 0.99
    # 96 pixels of 0.8 mm cover 76.8 mm: a prediction of "everything" comes back as
    # a centred box of 76.8 mm, or the whole axis where the scan is narrower.
    everything = restore_unet_slices(np.ones((zones.shape[2], 96, 96, 1), np.float32), zones.shape, **geometry)
    covered = everything[..., 0, 0] > 0.5
    for axis in (0, 1):
        kept = np.flatnonzero(covered.any(axis=1 - axis))
        size = zones.shape[axis]
        assert abs(len(kept) * spacing[axis] - min(76.8, size * spacing[axis])) <= 2 * spacing[axis]
        assert abs((kept[0] + kept[-1] + 1) / 2 - size / 2) <= 1
    assert covered.sum() == len(np.flatnonzero(covered.any(axis=1))) * len(np.flatnonzero(covered.any(axis=0)))


def test_target_spacing_needs_the_spacing_of_an_array():
    with pytest.raises(ValueError, match="spacing"):
        prepare_unet_volume(np.zeros((10, 10, 2)), 8, target_spacing=1.0)
    with pytest.raises(ValueError, match="spacing"):
        restore_pix2pix_slices(np.zeros((2, 8, 8, 5)), (10, 10, 2), target_spacing=1.0)
    with pytest.raises(ValueError, match="target_spacing must be a positive"):
        prepare_unet_mask(np.zeros((10, 10, 2)), 8, target_spacing=0.0, spacing=(1.0, 1.0))


# --- streaming ----------------------------------------------------------------------


def test_count_slices(cases):
    masks = [load_volume(case.path("lesion"), label=True).data for case in cases]
    assert count_slices(cases) == sum(mask.shape[2] for mask in masks)
    with_lesion = sum(int(mask.any(axis=(0, 1)).sum()) for mask in masks)
    assert 0 < count_slices(cases, drop_empty=True, image_size=128) == with_lesion < count_slices(cases)


def test_unet_dataset_streams_every_slice_once_in_order(cases):
    dataset = unet_dataset(cases, image_size=64, batch_size=5, shuffle=False)
    assert dataset.element_spec[0].shape.as_list() == [None, 64, 64, 1]
    images, masks = collect(dataset)
    expected_images, expected_masks = prepared_cases(cases, 64)
    assert images.dtype == masks.dtype == np.float32
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(masks, expected_masks)
    assert masks.any()


def test_unet_dataset_shuffled_is_a_permutation(cases):
    images, masks = collect(unet_dataset(cases, image_size=64, batch_size=7, shuffle=True, seed=3))
    expected_images, expected_masks = prepared_cases(cases, 64)
    assert len(images) == count_slices(cases)
    assert not np.array_equal(images, expected_images)
    assert slice_keys(images, masks) == slice_keys(expected_images, expected_masks)


def test_cached_stream_reads_the_files_once_and_reshuffles(cases, tmp_path):
    copies = [copy_case(case, tmp_path / case.case_id) for case in cases]
    own_cases = discover_cases(tmp_path, require=("t2w", "lesion"))
    dataset = unet_dataset(own_cases, image_size=64, batch_size=7, shuffle=True, seed=3, cache=True)
    first = collect(dataset)
    for folder in copies:  # a second epoch must come from memory
        shutil.rmtree(folder)
    second = collect(dataset)
    expected = prepared_cases(cases, 64)
    assert slice_keys(*first) == slice_keys(*second) == slice_keys(*expected)
    assert not np.array_equal(first[0], second[0])


def test_drop_empty_yields_exactly_the_foreground_slices(cases):
    images, masks = collect(unet_dataset(cases, image_size=64, batch_size=4, drop_empty=True, seed=1))
    expected_images, expected_masks = prepared_cases(cases, 64)
    keep = expected_masks.any(axis=(1, 2, 3))
    assert masks.reshape(len(masks), -1).any(axis=1).all()
    assert len(images) == count_slices(cases, drop_empty=True, image_size=64)
    assert slice_keys(images, masks) == slice_keys(expected_images[keep], expected_masks[keep])


def test_foreground_fraction_oversamples_foreground(cases):
    natural = count_slices(cases, drop_empty=True, image_size=64) / count_slices(cases)
    fraction = 0.7
    assert abs(natural - fraction) > 0.3  # otherwise the test could not tell
    dataset = unet_dataset(cases, image_size=64, batch_size=25, foreground_fraction=fraction, seed=5)
    drawn = np.concatenate([mask.numpy().reshape(25, -1).any(axis=1) for _, mask in dataset.take(16)])
    assert len(drawn) == 400
    assert abs(drawn.mean() - fraction) < 0.1  # binomial sd 0.023


@pytest.mark.parametrize(
    "kwargs", [dict(foreground_fraction=1.0), dict(foreground_fraction=0.5, drop_empty=True), dict(label="t2w")]
)
def test_unet_dataset_rejects_bad_arguments(cases, kwargs):
    with pytest.raises(ValueError):
        unet_dataset(cases, **kwargs)


def test_unet_dataset_is_deterministic_given_seed(cases):
    def batches(seed):
        dataset = unet_dataset(
            cases, image_size=64, batch_size=6, augment=True, foreground_fraction=0.5, seed=seed
        )
        return [array.numpy() for pair in dataset.take(3) for array in pair]

    first, again, other = batches(11), batches(11), batches(12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_unet_dataset_augments_image_and_mask_alike(cases):
    # zone masks: large, asymmetric foreground that pins down the transform
    plain = collect(unet_dataset(cases[:1], image_size=64, batch_size=4, label="zones", shuffle=False))
    augmented = collect(
        unet_dataset(cases[:1], image_size=64, batch_size=4, label="zones", shuffle=False, augment=True)
    )
    variants = set()
    for image, mask, plain_image, plain_mask in zip(*augmented, *plain):
        assert set(np.unique(mask)) <= {0.0, 1.0}
        variant = matching_variant(image, plain_image)
        np.testing.assert_array_equal(mask, dihedral_variants(plain_mask)[variant])
        variants.add(variant)
    assert len(variants) > 1


def test_augment_pair_covers_all_symmetries_and_keeps_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_ZONE_CLASSES, size=(6, 6))
    one_hot_labels = np.eye(NUM_ZONE_CLASSES, dtype=np.float32)[labels]
    image = (3.0 * labels + 1.0).astype(np.float32)[..., None]  # derived from the labels
    variants = []
    for seed in range(64):
        out_image, out_labels = (x.numpy() for x in augment_pair(image, one_hot_labels, tf.constant([seed, 7])))
        assert out_image.shape == image.shape and out_labels.shape == one_hot_labels.shape
        np.testing.assert_array_equal(out_image[..., 0], 3.0 * out_labels.argmax(axis=-1) + 1.0)
        assert set(np.unique(out_labels)) == {0.0, 1.0} and (out_labels.sum(axis=-1) == 1).all()
        variants.append(matching_variant(out_labels, one_hot_labels))
        again = augment_pair(image, one_hot_labels, tf.constant([seed, 7]))[1].numpy()
        np.testing.assert_array_equal(again, out_labels)
    assert sorted(set(variants)) == list(range(8))


def test_augment_intensity_is_seeded_bounded_and_keeps_the_order_of_grey_values():
    ramp = tf.reshape(tf.linspace(0.0, 1.0, 32 * 32), (32, 32, 1))
    outputs = [augment_intensity(ramp, tf.constant([seed, 5])).numpy() for seed in range(8)]
    for seed, out in enumerate(outputs):
        assert out.shape == (32, 32, 1) and out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(out, augment_intensity(ramp, tf.constant([seed, 5])).numpy())
        # the ramp rises along each row: gamma, field and contrast keep it rising on average
        assert np.corrcoef(out.ravel(), ramp.numpy().ravel())[0, 1] > 0.8
    assert len({out.tobytes() for out in outputs}) == len(outputs)
    spread = np.std([out.mean() for out in outputs])
    assert spread > 0.02  # the draws change the slice noticeably, not by rounding


def test_unet_dataset_randomises_intensities_of_images_only(cases):
    options = dict(image_size=64, batch_size=4, label="zones", shuffle=False)
    plain_images, plain_masks = collect(unet_dataset(cases[:1], **options))
    images, masks = collect(unet_dataset(cases[:1], intensity_augment=True, **options))
    again, _ = collect(unet_dataset(cases[:1], intensity_augment=True, **options))
    np.testing.assert_array_equal(masks, plain_masks)
    np.testing.assert_array_equal(images, again)
    assert images.min() >= 0.0 and images.max() <= 1.0
    changed = [not np.allclose(image, plain) for image, plain in zip(images, plain_images)]
    assert all(changed)


def test_blank_case_streams_zeros(cases, tmp_path):
    folder = copy_case(cases[0], tmp_path / "blank")
    t2w = load_volume(cases[0].path("t2w"))
    save_like(np.zeros(t2w.shape, np.float32), t2w, folder / "t2w.nii.gz", overwrite=True)
    images, masks = collect(unet_dataset(discover_cases(tmp_path), image_size=64, shuffle=False))
    assert len(images) == t2w.shape[2]
    assert np.isfinite(images).all() and not images.any()


def test_foreground_fraction_needs_foreground(cases, tmp_path):
    folder = copy_case(cases[0], tmp_path / "no-lesion-voxels")
    t2w = load_volume(cases[0].path("t2w"))
    save_like(np.zeros(t2w.shape, np.uint8), t2w, folder / "lesion.nii.gz", overwrite=True)
    with pytest.raises(ValueError, match="no slice with lesion foreground"):
        unet_dataset(discover_cases(tmp_path), foreground_fraction=0.5)


def test_missing_mask_names_the_case(cases, tmp_path):
    copy_case(cases[0], tmp_path / "no-lesion", names=("t2w",))
    bare = discover_cases(tmp_path)
    with pytest.raises(InputError, match="no-lesion.*no lesion file"):
        unet_dataset(bare)
    with pytest.raises(InputError, match="no-lesion"):
        count_slices(bare)


def test_mask_off_the_image_grid_is_reported(cases, tmp_path):
    folder = copy_case(cases[0], tmp_path / "shifted")
    lesion_path = folder / cases[0].path("lesion").name
    image = nib.load(lesion_path)
    affine = image.affine.copy()
    affine[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine), lesion_path)
    case = Case("shifted", folder, {"t2w": folder / "t2w.nii.gz", "lesion": lesion_path})
    with pytest.raises(tf.errors.OpError, match="lesion.nii.gz: not on the grid"):
        collect(unet_dataset([case], image_size=64))


# --- Pix2Pix ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered_cases(cases, tmp_path_factory):
    """Two phantom cases with a synthetic aligned/stack.nii.gz on the T2W grid."""
    out_dir = tmp_path_factory.mktemp("registered")
    for case in cases[:2]:
        folder = copy_case(case, out_dir / case.case_id)
        t2w = load_volume(case.path("t2w"))
        stack = np.stack([t2w.data, np.sqrt(t2w.data), np.full(t2w.shape, 3.0, np.float32)], axis=-1)
        save_like(stack.astype(np.float32), t2w, folder / "aligned" / "stack.nii.gz")
    return discover_cases(out_dir, require=("t2w", "zones", "stack"))


def test_pix2pix_dataset_streams_stack_and_one_hot_zones(registered_cases):
    stacks, zones = collect(
        pix2pix_dataset(registered_cases, image_size=64, batch_size=4, augment=False, shuffle=False)
    )
    expected_stacks = np.concatenate(
        [prepare_pix2pix_volume(load_volume(case.path("stack"), channels=3), 64) for case in registered_cases]
    )
    expected_zones = np.concatenate(
        [prepare_zone_labels(load_volume(case.path("zones"), label=True), 64) for case in registered_cases]
    )
    assert stacks.shape == (len(expected_stacks), 64, 64, 3) and zones.shape[-1] == NUM_ZONE_CLASSES
    np.testing.assert_array_equal(stacks, expected_stacks)
    np.testing.assert_array_equal(zones, expected_zones)
    assert not stacks[..., 2].any()  # the constant channel


def test_pix2pix_dataset_augmented_zones_stay_one_hot(registered_cases):
    stacks, zones = collect(pix2pix_dataset(registered_cases, image_size=64, batch_size=3, seed=2))
    assert stacks.dtype == zones.dtype == np.float32 and np.isfinite(stacks).all()
    assert set(np.unique(zones)) == {0.0, 1.0}
    assert (zones.sum(axis=-1) == 1).all()


def test_pix2pix_dataset_randomises_each_channel_of_the_stacks_only(registered_cases):
    options = dict(image_size=64, batch_size=4, augment=False, shuffle=False)
    plain, plain_zones = collect(pix2pix_dataset(registered_cases, **options))
    stacks, zones = collect(pix2pix_dataset(registered_cases, intensity_augment=True, **options))
    again, _ = collect(pix2pix_dataset(registered_cases, intensity_augment=True, **options))
    np.testing.assert_array_equal(zones, plain_zones)
    np.testing.assert_array_equal(stacks, again)
    assert np.isfinite(stacks).all()
    shown = [i for i, stack in enumerate(plain) if np.ptp(stack[..., 0]) > 0]
    assert shown
    for i in shown:
        for channel in (0, 1):  # T2W and its square root: randomised, each slice keeps its mean and spread
            before, after = plain[i][..., channel], stacks[i][..., channel]
            assert not np.allclose(after, before)
            assert after.mean() == pytest.approx(before.mean(), abs=1e-4)
            assert after.std() == pytest.approx(before.std(), rel=1e-3)
    np.testing.assert_array_equal(stacks[..., 2], plain[..., 2])  # a constant channel stays constant
    # Each channel gets draws of its own: three copies of one slice come out different.
    copies = tf.repeat(tf.constant(plain[shown[0]][..., :1]), 3, axis=-1)
    out = augment_stack_intensity(copies, tf.constant([1, 2])).numpy()
    assert not np.allclose(out[..., 0], out[..., 1]) and not np.allclose(out[..., 1], out[..., 2])


def test_pix2pix_dataset_warps_stacks_and_zones_together(registered_cases):
    options = dict(image_size=64, batch_size=4, augment=False, shuffle=False)
    plain, plain_zones = collect(pix2pix_dataset(registered_cases, **options))
    stacks, zones = collect(pix2pix_dataset(registered_cases, shape_augment=True, **options))
    assert set(np.unique(zones)) == {0.0, 1.0} and (zones.sum(axis=-1) == 1).all()  # still one-hot
    warped = [i for i in range(len(plain)) if plain_zones[i][..., 1:].any()]
    assert warped and all(not np.array_equal(zones[i], plain_zones[i]) for i in warped)
    for i in warped:  # the zones follow the warped T2W: gland pixels stay where the T2W shows the gland
        gland = zones[i][..., 1:].sum(axis=-1) > 0
        expected = plain[i][..., 0][plain_zones[i][..., 1:].sum(axis=-1) > 0].mean()
        assert abs(stacks[i][..., 0][gland].mean() - expected) < 0.5 * plain[i][..., 0].std()


def test_pix2pix_dataset_without_stack_says_register_first(cases):
    with pytest.raises(InputError, match=f"{cases[0].case_id}.*register-case"):
        pix2pix_dataset(cases)


# --- real data ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_lesion_cases(real_data_dir):
    cases = discover_cases(real_data_dir / "prostatex-t2w-lesion", require=("t2w", "lesion"))
    assert tuple(case.case_id for case in cases) == REAL_LESION_CASES
    return cases


@pytest.mark.real_data
def test_real_lesions_land_on_the_same_voxels(real_lesion_cases):
    for case in real_lesion_cases:
        t2w = load_volume(case.path("t2w"))
        lesion = load_volume(case.path("lesion"), label=True)
        image = prepare_unet_volume(t2w)
        mask = prepare_unet_mask(lesion)
        assert image.shape == mask.shape == (t2w.shape[2], 384, 384, 1)
        np.testing.assert_array_equal(mask[..., 0], np.moveaxis(center_pad_crop(lesion.data, 384), 2, 0))
        assert (mask.sum(axis=(1, 2, 3)) == np.count_nonzero(lesion.data, axis=(0, 1))).all()
        assert 416 <= mask.sum() <= 6437
        # intensities under the lesion: a non-decreasing function of the raw ones
        raw_values = np.moveaxis(center_pad_crop(t2w.data, 384), 2, 0)[mask[..., 0] > 0]
        prepared_values = image[..., 0][mask[..., 0] > 0]
        order = np.argsort(raw_values, kind="stable")
        assert (np.diff(prepared_values[order]) >= 0).all()
        assert prepared_values.max() > prepared_values.min()


@pytest.mark.real_data
def test_real_unet_dataset_yields_every_slice(real_lesion_cases):
    images, masks = collect(unet_dataset(real_lesion_cases, batch_size=8, seed=0))
    assert images.shape == (3 * 19, 384, 384, 1)
    assert 0 <= images.min() and images.max() <= 1
    assert masks.sum() == sum(
        np.count_nonzero(load_volume(case.path("lesion"), label=True).data) for case in real_lesion_cases
    )


def test_augment_shape_is_seeded_keeps_the_mask_binary_and_on_the_image():
    disc = np.zeros((48, 48, 1), np.float32)
    rows, cols = np.ogrid[:48, :48]
    disc[(rows - 24) ** 2 + (cols - 22) ** 2 < 12**2] = 1.0
    image = disc * 0.8 + 0.1  # a bright disc on a dim background; its mask is the disc
    areas, centres = [], []
    for seed in range(8):
        warped, mask = (t.numpy() for t in augment_shape(image, disc, tf.constant([seed, 3])))
        again = augment_shape(image, disc, tf.constant([seed, 3]))
        np.testing.assert_array_equal(warped, again[0].numpy())
        np.testing.assert_array_equal(mask, again[1].numpy())
        assert warped.shape == mask.shape == (48, 48, 1)
        assert set(np.unique(mask).tolist()) == {0.0, 1.0}
        assert 0.1 - 1e-6 <= warped.min() and warped.max() <= 0.9 + 1e-6  # interpolated, never extrapolated
        # the mask follows the image: the warped disc is where the warped mask is
        assert dice(warped > 0.5, mask > 0) > 0.95
        areas.append(mask.sum())
        centres.append(tuple(np.argwhere(mask[..., 0]).mean(axis=0).round(1)))
    assert not np.allclose(augment_shape(image, disc, tf.constant([0, 3]))[1].numpy(), disc)
    assert np.ptp(areas) / disc.sum() > 0.2  # scales vary
    assert max(areas) / disc.sum() < 2.0 and min(areas) / disc.sum() > 0.5  # within the drawn bounds
    assert len(set(centres)) == len(centres)  # and positions


def test_unet_dataset_warps_images_and_masks_together(cases):
    options = dict(image_size=64, batch_size=4, label="zones", shuffle=False)
    plain_images, plain_masks = collect(unet_dataset(cases[:1], **options))
    images, masks = collect(unet_dataset(cases[:1], shape_augment=True, **options))
    again_images, again_masks = collect(unet_dataset(cases[:1], shape_augment=True, **options))
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(masks, again_masks)
    assert set(np.unique(masks).tolist()) == {0.0, 1.0}
    moved = [not np.array_equal(mask, plain) for mask, plain in zip(masks, plain_masks) if plain.any()]
    assert moved and all(moved)
    assert not np.allclose(images, plain_images)
