"""Tests of the on-disk prepared-slice cache: ``prostseg prepare`` and ``slice_cache=``.

The cases are copies of the small phantom cases of ``phantom_dir`` (Pix2Pix: with a
'registered' stack made from the case's own volumes, no elastix). The cached stream is
compared slice by slice with the uncached stream of the same cases: images equal the
uncached images rounded to float16, labels are equal exactly.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from prostseg.cli import main
from prostseg.data.dataset import discover_cases
from prostseg.errors import InputError
from prostseg.data.io import load_volume, save_like
from prostseg.preparation.pipeline import count_slices, pix2pix_epochs, unet_dataset
from prostseg.networks.runs import Pix2PixTrainingConfig, UNetTrainingConfig, read_history
from prostseg.preparation.slice_cache import SliceSpec, cache_state, default_cache_dir, prepare_dataset

SIZE = 64


def _copy(phantom_dir: Path, target: Path, *, stacks: bool = False) -> Path:
    for case_dir in sorted(phantom_dir.iterdir()):
        shutil.copytree(case_dir, target / case_dir.name, ignore=shutil.ignore_patterns("aligned"))
        if stacks:  # a stand-in for the registered stack: three channels on the T2W grid
            t2w = load_volume(target / case_dir.name / "t2w.nii.gz")
            stack = np.stack([t2w.data, 2 * t2w.data + 1, np.sqrt(t2w.data)], axis=-1)
            save_like(stack.astype(np.float32), t2w, target / case_dir.name / "aligned" / "stack.nii.gz")
    return target


def _summary(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(i.numpy(), m.numpy()) for i, m in dataset])
    return np.concatenate(images), np.concatenate(labels)


def _rounded(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def unet_data(phantom_dir, tmp_path_factory) -> Path:
    """Phantom copies with their U-Net slices prepared by the command."""
    data_dir = _copy(phantom_dir, tmp_path_factory.mktemp("unet"))
    code = main(["prepare", str(data_dir), "--model", "unet", "--image-size", str(SIZE),
                 "--workers", "1", "--no-progress"])
    assert code == 0
    return data_dir


def test_cached_unet_stream_equals_the_uncached_stream(unet_data):
    cache = default_cache_dir(unet_data)
    summary = _summary(cache / f"unet-lesion-{SIZE}-native" / "summary.csv")
    assert {row["status"] for row in summary.values()} == {"prepared"}
    cases = discover_cases(unet_data, require=("t2w", "lesion"))
    assert sum(int(row["slices"]) for row in summary.values()) == count_slices(cases)
    common = dict(image_size=SIZE, batch_size=5, augment=True, shape_augment=True, seed=4)

    # In order (no shuffle) and with the same per-slice augmentation: slice for slice.
    images, masks = _arrays(unet_dataset(cases, shuffle=False, **common))
    cached_images, cached_masks = _arrays(unet_dataset(cases, shuffle=False, slice_cache=cache, **common))
    plain_images, _ = _arrays(unet_dataset(cases, shuffle=False, image_size=SIZE, batch_size=5))
    assert masks.any() and set(np.unique(cached_masks)) == {0.0, 1.0}
    np.testing.assert_array_equal(cached_masks, masks)
    assert not np.array_equal(cached_images, _rounded(plain_images))  # the augmentation did act
    np.testing.assert_allclose(cached_images, images, atol=2e-3)  # warped float16 inputs

    # Without augmentation, exactly the float16-rounded slices; shuffled: the same slices.
    images, masks = _arrays(unet_dataset(cases, shuffle=False, image_size=SIZE, batch_size=5))
    cached_images, cached_masks = _arrays(unet_dataset(cases, shuffle=False, image_size=SIZE, batch_size=5,
                                                       slice_cache=cache))
    np.testing.assert_array_equal(cached_images, _rounded(images))
    np.testing.assert_array_equal(cached_masks, masks)
    shuffled_images, shuffled_masks = _arrays(unet_dataset(cases, shuffle=True, image_size=SIZE, batch_size=5,
                                                           slice_cache=cache, seed=1))
    assert not np.array_equal(shuffled_images, cached_images)

    def key(images, masks):
        return sorted(image.tobytes() + mask.tobytes() for image, mask in zip(images, masks))

    assert key(shuffled_images, shuffled_masks) == key(cached_images, cached_masks)
    assert count_slices(cases, drop_empty=True, image_size=SIZE, slice_cache=cache) == \
        count_slices(cases, drop_empty=True, image_size=SIZE)


def test_cached_pix2pix_stream_equals_the_uncached_stream(phantom_dir, tmp_path):
    data_dir = _copy(phantom_dir, tmp_path / "data", stacks=True)
    result = prepare_dataset(data_dir, SliceSpec("pix2pix", SIZE), cache_dir=tmp_path / "cache", workers=1,
                             progress=False)
    assert result.counts() == {"prepared": 4} and result.folder == tmp_path / "cache" / f"pix2pix-{SIZE}-native"
    cases = discover_cases(data_dir, require=("zones",))
    options = dict(image_size=SIZE, batch_size=3, shuffle=False, first_epoch=2)
    stacks, zones = _arrays(next(pix2pix_epochs(cases, **options)))
    cached_stacks, cached_zones = _arrays(next(pix2pix_epochs(cases, slice_cache=tmp_path / "cache", **options)))
    np.testing.assert_array_equal(cached_zones, zones)  # one-hot, exact
    assert (cached_zones.sum(axis=-1) == 1).all() and len(np.unique(zones.argmax(-1))) == 5
    np.testing.assert_array_equal(cached_stacks, _rounded(stacks))


def test_a_changed_input_or_recipe_is_prepared_again_and_never_read_stale(unet_data, tmp_path):
    data_dir = Path(shutil.copytree(unet_data, tmp_path / "data"))
    cache = default_cache_dir(data_dir)
    spec = SliceSpec("unet", SIZE)
    cases = discover_cases(data_dir, require=("t2w", "lesion"))
    assert all(cache_state(case, spec, cache).up_to_date for case in cases)

    lesion = load_volume(data_dir / "phantom-001" / "lesion.nii.gz")
    save_like(np.zeros_like(lesion.data), lesion, data_dir / "phantom-001" / "lesion.nii.gz", overwrite=True)
    description = cache / spec.name / "phantom-002.json"
    changed = json.loads(description.read_text(encoding="utf-8"))
    changed["parameters"]["normalisation"] = "an older recipe"
    description.write_text(json.dumps(changed))

    assert "inputs changed" in cache_state(cases[1], spec, cache).reason
    with pytest.raises(InputError, match="phantom-001.*no up-to-date prepared slices.*prostseg prepare"):
        unet_dataset(cases, image_size=SIZE, slice_cache=cache)
    result = prepare_dataset(data_dir, spec, workers=1, progress=False)
    by_case = {row["case"]: row for row in result.rows}
    assert [by_case[name]["status"] for name in sorted(by_case)] == ["up to date", "prepared", "prepared",
                                                                      "up to date"]
    assert "replaced: inputs changed" in by_case["phantom-001"]["warnings"]
    assert "other parameters" in by_case["phantom-002"]["warnings"]
    assert by_case["phantom-001"]["foreground_slices"] == 0
    _, masks = _arrays(unet_dataset(cases[1:2], image_size=SIZE, shuffle=False, slice_cache=cache))
    assert not masks.any()  # the new, empty lesion mask


def test_a_corrupted_case_fails_alone_and_a_rerun_skips_the_done_cases(phantom_dir, tmp_path, capsys):
    data_dir = _copy(phantom_dir, tmp_path / "data")
    t2w = data_dir / "phantom-002" / "t2w.nii.gz"
    t2w.write_bytes(t2w.read_bytes()[:300])
    args = ["prepare", str(data_dir), "--model", "unet", "--image-size", str(SIZE), "--workers", "1",
            "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 1
    folder = tmp_path / "cache" / f"unet-lesion-{SIZE}-native"
    summary = _summary(folder / "summary.csv")
    assert [summary[name]["status"] for name in sorted(summary)] == ["prepared", "prepared", "failed",
                                                                      "prepared"]
    assert "t2w.nii.gz" in summary["phantom-002"]["error"] and "\n" not in summary["phantom-002"]["error"]
    assert "FAILED phantom-002" in capsys.readouterr().err
    assert not (folder / "phantom-002.json").exists()

    written = {path.name: path.stat().st_mtime_ns for path in folder.glob("*.tfrecord")}
    (folder / "phantom-003.json").unlink()  # as if killed before this case was finished
    shutil.copy(phantom_dir / "phantom-002" / "t2w.nii.gz", t2w)  # repaired
    assert main(args) == 0
    summary = _summary(folder / "summary.csv")
    assert [summary[name]["status"] for name in sorted(summary)] == ["up to date", "up to date", "prepared",
                                                                      "prepared"]
    for name in ("phantom-000.tfrecord", "phantom-001.tfrecord"):
        assert (folder / name).stat().st_mtime_ns == written[name]


def test_memory_and_disk_cache_together_are_refused(unet_data, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        UNetTrainingConfig(unet_data, tmp_path / "run", cache=True, slice_cache=str(tmp_path))
    cases = discover_cases(unet_data)
    with pytest.raises(ValueError, match="not both"):
        unet_dataset(cases, cache=True, slice_cache=tmp_path)


@pytest.mark.slow
def test_both_models_train_an_epoch_from_the_disk_cache(phantom_dir, tmp_path, capsys):
    from prostseg.training.loop import train_pix2pix

    data_dir = _copy(phantom_dir, tmp_path / "data", stacks=True)
    cache = tmp_path / "cache"
    # The U-Net through the command line: training prepares the cases it needs.
    code = main(["train", "unet", "--data-dir", str(data_dir), "--out", str(tmp_path / "unet"), "--epochs", "1",
                 "--image-size", str(SIZE), "--base-filters", "4", "--depth", "2", "--batch-size", "4",
                 "--label", "zones", "--slice-cache", str(cache), "--verbose", "0"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "unet" / "config.json").read_text(encoding="utf-8"))["slice_cache"] == str(cache)
    row = read_history(tmp_path / "unet" / "history.csv")[0]
    assert np.isfinite(row["loss"]) and 0 <= row["val_dice"] <= 1
    assert len(list((cache / f"unet-zones-{SIZE}-native").glob("*.tfrecord"))) == 3  # train + val

    prepare_dataset(data_dir, SliceSpec("pix2pix", 32), cache_dir=cache, workers=1, progress=False)
    config = Pix2PixTrainingConfig(data_dir, tmp_path / "pix2pix", epochs=1, image_size=32, base_filters=4,
                                   discriminator_filters=4, batch_size=2, verbose=0, slice_cache=str(cache))
    row = read_history(train_pix2pix(config).history_path)[0]
    assert np.isfinite(row["gen_l1"]) and 0 <= row["val_dice_mean"] <= 1


@pytest.mark.slow
def test_prepare_on_a_dask_local_cluster_writes_the_local_bytes(unet_data, tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = SliceSpec("unet", SIZE)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            result = prepare_dataset(unet_data, spec, cache_dir=tmp_path / "cache", client=client,
                                     progress=False)
    assert result.counts() == {"prepared": 4}
    local = prepare_dataset(unet_data, spec, cache_dir=tmp_path / "local", workers=1,
                            progress=False).folder
    assert len(list(local.glob("phantom-*.tfrecord"))) == 4
    for path in sorted(local.glob("phantom-*")):
        theirs = result.folder / path.name
        if path.suffix == ".tfrecord":
            assert theirs.read_bytes() == path.read_bytes(), path.name
        else:
            assert json.loads(theirs.read_text(encoding="utf-8")) == json.loads(path.read_text(encoding="utf-8")), path.name
