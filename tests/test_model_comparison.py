"""Finding reusable training runs (prostseg.book.runs), and scoring gland and zones
(prostseg.use.model_comparison)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nibabel as nib

from prostseg.book.runs import finished_run
from prostseg.errors import InputError
from prostseg.use.model_comparison import (
    gland_and_zone_dice,
    reference_agreement,
    score_real_case,
    to_two_zones,
    two_zone_dice,
)
from prostseg.preparation.splits import PatientSplit
from prostseg.training.loop import Pix2PixTrainingConfig, UNetTrainingConfig

SPLIT = PatientSplit(train=["p1", "p2"], val=["p3"], test=["p4"], seed=0)


def _fake_run(run_dir, config, split=SPLIT, epochs_done=None, model="model.keras"):
    """A run folder as train_unet/train_pix2pix leave it, without training anything."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config.to_json(run_dir / "config.json")
    split.to_json(run_dir / "split.json")
    epochs_done = config.epochs if epochs_done is None else epochs_done
    rows = "".join(f"{epoch},0.5\n" for epoch in range(epochs_done))
    (run_dir / "history.csv").write_text("epoch,loss\n" + rows)
    (run_dir / model).write_bytes(b"")
    return run_dir


@pytest.fixture
def unet_run(tmp_path):
    config = UNetTrainingConfig(str(tmp_path / "data"), str(tmp_path / "run"), epochs=3, label="zones")
    return _fake_run(tmp_path / "run", config)


def test_finished_run_is_found_when_everything_matches(unet_run, tmp_path):
    run = finished_run(unet_run, SPLIT, kind="unet", data_dir=tmp_path / "data", label="zones")
    assert run is not None
    assert run.model_path == unet_run / "model.keras"
    assert run.config.epochs == 3


def test_other_split_data_settings_or_kind_are_not_reused(unet_run, tmp_path):
    other_split = PatientSplit(train=["p1", "p3"], val=["p2"], test=["p4"], seed=0)
    assert finished_run(unet_run, other_split, kind="unet") is None
    assert finished_run(unet_run, SPLIT, kind="unet", data_dir=tmp_path / "elsewhere") is None
    assert finished_run(unet_run, SPLIT, kind="unet", label="lesion") is None
    assert finished_run(unet_run, SPLIT, kind="pix2pix") is None


def test_interrupted_run_or_missing_model_is_not_reused(tmp_path):
    config = Pix2PixTrainingConfig(str(tmp_path / "data"), str(tmp_path / "a"), epochs=4)
    interrupted = _fake_run(tmp_path / "a", config, epochs_done=2, model="generator.keras")
    assert finished_run(interrupted, SPLIT, kind="pix2pix") is None
    complete = _fake_run(tmp_path / "b", config, model="generator.keras")
    assert finished_run(complete, SPLIT, kind="pix2pix") is not None
    (complete / "generator.keras").unlink()
    assert finished_run(complete, SPLIT, kind="pix2pix") is None


def test_missing_folder_is_no_run(tmp_path):
    assert finished_run(tmp_path / "nothing", SPLIT, kind="pix2pix") is None


def test_bad_arguments_and_damaged_runs_raise(unet_run):
    with pytest.raises(ValueError, match="kind"):
        finished_run(unet_run, SPLIT, kind="gan")
    with pytest.raises(ValueError, match="no field"):
        finished_run(unet_run, SPLIT, kind="unet", colour="red")
    (unet_run / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json"):
        finished_run(unet_run, SPLIT, kind="unet")


def test_gland_and_zone_dice_counts_voxels():
    zones = np.array([[0, 1, 1, 2], [2, 3, 4, 0]])
    predicted = np.array([[0, 1, 2, 2], [2, 0, 4, 4]])
    scores = gland_and_zone_dice(predicted, zones)
    # gland: truth 6 voxels, prediction 6, overlap 5
    assert scores["whole gland"] == pytest.approx(2 * 5 / 12)
    assert scores["peripheral zone"] == pytest.approx(2 * 1 / 3)
    assert scores["transition zone"] == pytest.approx(2 * 2 / 5)
    assert scores["central zone"] == 0.0
    assert scores["anterior fibromuscular stroma"] == pytest.approx(2 * 1 / 3)


def test_binary_prediction_scores_the_gland_only():
    zones = np.array([[0, 1], [2, 0]])
    assert gland_and_zone_dice(np.array([[0, 1], [1, 1]]), zones, per_zone=False) == {
        "whole gland": pytest.approx(0.8)
    }


def test_absent_zone_is_nan_and_shapes_must_match():
    scores = gland_and_zone_dice(np.array([[1, 0]]), np.array([[1, 0]]))
    assert math.isnan(scores["central zone"])
    with pytest.raises(ValueError, match="shape"):
        gland_and_zone_dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_to_two_zones_merges_cz_and_afs_into_the_transition_zone():
    zones = np.array([[0, 1, 2], [3, 4, 1]])
    assert to_two_zones(zones).tolist() == [[0, 1, 2], [2, 2, 1]]
    with pytest.raises(ValueError, match="0..4"):
        to_two_zones([0, 7])


def test_two_zone_dice_scores_merged_zones_and_the_gland():
    reference = np.array([0, 1, 1, 2, 2, 2, 0, 0])
    predicted = np.array([0, 1, 3, 2, 4, 0, 2, 0])  # CZ and AFS count as TZ
    scores = two_zone_dice(predicted, reference)
    assert math.isclose(scores["whole gland"], 2 * 4 / (5 + 5))
    assert math.isclose(scores["peripheral zone"], 2 * 1 / (1 + 2))
    assert math.isclose(scores["transition zone"], 2 * 2 / (4 + 3))
    assert set(two_zone_dice(predicted > 0, reference, per_zone=False)) == {"whole gland"}
    with pytest.raises(ValueError, match="shape"):
        two_zone_dice(predicted[:3], reference)


def _save(array, path):
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.diag([0.5, 0.5, 3.0, 1.0])), path)


def test_reference_agreement_scores_every_reference_file(tmp_path):
    case = tmp_path / "case"
    (case / "reference").mkdir(parents=True)
    zones = np.zeros((8, 8, 2), np.uint8)
    zones[2:6, 2:4] = 1
    zones[2:6, 4:6] = 2
    _save(np.ones((8, 8, 2)), case / "t2w.nii.gz")
    _save(zones, case / "zones.nii.gz")
    shifted = np.roll(zones, 1, axis=0)
    _save(shifted, case / "reference" / "other_zones.nii.gz")
    _save(zones > 0, case / "reference" / "gland.nii.gz")
    rows = {row["reference"]: row for row in reference_agreement(case)}
    assert rows["gland.nii.gz"]["whole gland"] == 1.0
    assert math.isnan(rows["gland.nii.gz"]["peripheral zone"])
    assert math.isclose(rows["other_zones.nii.gz"]["peripheral zone"], 2 * 6 / 16)
    assert math.isclose(rows["other_zones.nii.gz"]["whole gland"], 2 * 12 / 32)


def test_reference_agreement_needs_references_on_the_grid_with_two_zone_labels(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    _save(np.ones((8, 8, 2)), case / "t2w.nii.gz")
    _save(np.zeros((8, 8, 2)), case / "zones.nii.gz")
    with pytest.raises(InputError, match="no reference delineations"):
        reference_agreement(case)
    (case / "reference").mkdir()
    _save(np.full((8, 8, 2), 3), case / "reference" / "four_zones.nii.gz")
    with pytest.raises(InputError, match="four_zones.nii.gz"):
        reference_agreement(case)


@pytest.mark.real_data
def test_reference_agreement_on_prostatex_0000_matches_the_published_figures(real_data_dir):
    """The data README: the two models agree at gland 0.94, PZ 0.88, TZ 0.85."""
    rows = {row["reference"]: row for row in reference_agreement(real_data_dir / "prostatex-mpmri-zones" / "ProstateX-0000")}
    assert round(rows["gland_guerbet23.nii.gz"]["whole gland"], 2) == 0.94
    assert round(rows["zones_heviai23.nii.gz"]["peripheral zone"], 2) == 0.88
    assert round(rows["zones_heviai23.nii.gz"]["transition zone"], 2) == 0.85


def test_score_real_case_registers_predicts_and_scores_against_two_zones(phantom_dir, tmp_path):
    import shutil

    from prostseg.data.io import load_volume, save_like
    from prostseg.networks.metrics import dice
    from prostseg.networks.models import build_pix2pix_generator, build_unet

    case = tmp_path / "phantom-000"
    shutil.copytree(phantom_dir / "phantom-000", case)
    shutil.rmtree(case / "aligned", ignore_errors=True)
    zones = load_volume(case / "zones.nii.gz", label=True)
    save_like(to_two_zones(zones.data), zones, case / "zones.nii.gz", overwrite=True)
    build_unet((32, 32, 1), base_filters=2, depth=2).save(tmp_path / "unet.keras")
    build_pix2pix_generator((32, 32, 3), base_filters=2).save(tmp_path / "generator.keras")

    result = score_real_case(case, unet_model=tmp_path / "unet.keras",
                             pix2pix_model=tmp_path / "generator.keras")

    assert (case / "aligned" / "stack.nii.gz").is_file()
    reference = to_two_zones(zones.data)
    np.testing.assert_array_equal(result.reference, reference)
    gland, zone_map = result.predictions["U-Net"], result.predictions["Pix2Pix"]
    assert gland.shape == zone_map.shape == zones.shape
    # Each model saw its own input, and its prediction was cleaned to the largest component.
    from prostseg.use.inference import load_model, predict_volume

    for predicted, model_file, source in ((gland, "unet.keras", "t2w.nii.gz"),
                                          (zone_map, "generator.keras", "aligned/stack.nii.gz")):
        volume = load_volume(case / source, channels=3 if "stack" in source else None)
        np.testing.assert_array_equal(predicted, predict_volume(
            load_model(tmp_path / model_file), volume, largest_component=True))
    rows = {row["model"]: row for row in result.scores}
    assert math.isclose(rows["U-Net"]["whole gland"], dice(gland > 0, reference > 0))
    assert math.isnan(rows["U-Net"]["peripheral zone"])
    merged = to_two_zones(zone_map)
    assert math.isclose(rows["Pix2Pix"]["peripheral zone"], dice(merged == 1, reference == 1))
    assert math.isclose(rows["Pix2Pix"]["transition zone"], dice(merged == 2, reference == 2))


def test_score_real_case_without_zones_predicts_and_needs_the_inputs(phantom_dir, tmp_path):
    import shutil

    from prostseg.networks.models import build_pix2pix_generator, build_unet

    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(phantom_dir / "phantom-001" / "t2w.nii.gz", case / "t2w.nii.gz")
    build_unet((32, 32, 1), base_filters=2, depth=2).save(tmp_path / "unet.keras")
    result = score_real_case(case, unet_model=tmp_path / "unet.keras")
    assert result.reference is None and result.scores == []
    assert result.predictions["U-Net"].shape == result.t2w.shape
    with pytest.raises(InputError, match="unet.keras: holds a U-Net model, not a pix2pix model"):
        score_real_case(case, pix2pix_model=tmp_path / "unet.keras")
    build_pix2pix_generator((32, 32, 3), base_filters=2).save(tmp_path / "generator.keras")
    with pytest.raises(InputError, match="missing dwi"):
        score_real_case(case, pix2pix_model=tmp_path / "generator.keras")
