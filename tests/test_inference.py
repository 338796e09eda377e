"""Inference and evaluation: geometry of predictions, written files, scores, bad input.

Geometry tests use models whose output is known without training (an identity
"network"), so that a misplaced pad/crop or a flipped axis shows up exactly.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from prostseg.cli import main
from prostseg.errors import InputError
from prostseg.use.inference import evaluate_folder, load_model, predict_case, predict_volume, run_target_spacing
from prostseg.data.io import Volume, load_volume, save_like
from prostseg.networks.metrics import dice, iou, per_class_dice
from prostseg.networks.models import build_pix2pix_generator, build_unet
from prostseg.use.postprocessing import component_sizes, largest_gland_component
from prostseg.networks.recipes import PIX2PIX, UNET
from prostseg.training.loop import UNetTrainingConfig
from prostseg.viz import to_display


def identity_model(size: int) -> keras.Model:
    """A 'U-Net' whose foreground probability is its input (named as the U-Net recipe's
    networks are, which is how prostseg knows its kind)."""
    inputs = keras.Input((size, size, 1))
    return keras.Model(inputs, keras.layers.Activation("linear")(inputs), name=UNET.model_name)


def channel_zone_model(size: int) -> keras.Model:
    """A 'Pix2Pix generator' whose zone scores are fixed sums of its input channels:
    background 0, zone 1 the first channel, zone 2 the second, zones 3 and 4 -10."""
    inputs = keras.Input((size, size, 3))
    scores = keras.layers.Conv2D(5, 1, name="scores")(inputs)
    model = keras.Model(inputs, keras.layers.Softmax()(scores), name=PIX2PIX.model_name)
    kernel = np.zeros((1, 1, 3, 5), np.float32)
    kernel[0, 0, 0, 1] = kernel[0, 0, 1, 2] = 1.0
    model.get_layer("scores").set_weights([kernel, np.array([0, 0, 0, -10, -10], np.float32)])
    return model


@pytest.fixture(scope="module")
def unet_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "unet.keras"
    build_unet((32, 32, 1), base_filters=2, depth=2).save(path)
    return path


@pytest.mark.parametrize(
    ("shape", "region"),
    [((40, 27, 3), np.s_[15:25, 5:20, 1]), ((70, 90, 2), np.s_[15:30, 40:55, 1])],
    ids=["padded", "cropped"],
)
def test_predict_volume_puts_labels_back_on_the_volume_grid(shape, region):
    mask = np.zeros(shape, bool)
    mask[region] = True  # off-centre and asymmetric: a flip or shift would move it
    labels = predict_volume(identity_model(32), mask.astype(np.float32) * 100.0, threshold=0.5)
    assert labels.shape == shape and labels.dtype == np.uint8
    expected = mask.copy()
    for axis, size in enumerate(shape[:2]):  # only the central 32 pixels survive a crop
        if size > 32:
            keep = np.zeros(size, bool)
            keep[(size - 32) // 2 : (size - 32) // 2 + 32] = True
            expected &= np.expand_dims(keep, [a for a in range(3) if a != axis])
    np.testing.assert_array_equal(labels, expected)


def test_predict_volume_of_a_pix2pix_generator_gives_the_zone_of_the_highest_probability():
    zones = np.zeros((32, 32, 3), np.uint8)
    zones[4:14, 6:20] = 1  # bright in the first channel
    zones[18:28, 10:30, 1:] = 2  # bright in the second channel
    stack = np.stack([zones == 1, zones == 2, np.zeros_like(zones)], axis=-1).astype(np.float32) * 100
    labels = predict_volume(channel_zone_model(32), stack, threshold=0.99)  # no threshold for zones
    assert labels.shape == zones.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, zones)


def test_predict_volume_with_target_spacing_sees_more_of_a_finer_scan():
    # 80 x 80 pixels of 0.5 mm (40 mm) holding a box of 30 mm; a 32-pixel model.
    mask = np.zeros((80, 80, 2), bool)
    mask[10:70, 20:70, :] = True  # edges on even pixels: resampling to 1 mm keeps them exactly
    volume = Volume(mask.astype(np.float32) * 100.0, np.diag([0.5, 0.5, 3.0, 1.0]))
    native = predict_volume(identity_model(32), volume)  # the central 32 pixels: 16 mm
    resampled = predict_volume(identity_model(32), volume, target_spacing=1.0)  # 32 pixels of 1 mm
    central = np.zeros_like(mask)
    central[24:56, 24:56] = True
    np.testing.assert_array_equal(native, mask & central)
    assert resampled.shape == mask.shape and resampled.dtype == np.uint8
    central[:] = False
    central[8:72, 8:72] = True
    np.testing.assert_array_equal(resampled, mask & central)
    with pytest.raises(ValueError, match="Volume"):
        predict_volume(identity_model(32), volume.data, target_spacing=1.0)


def test_largest_component_removes_false_islands_of_masks_and_zone_maps():
    mask = np.zeros((40, 40, 4), bool)
    mask[10:25, 12:30, 1:4] = True  # the gland
    mask[33:36, 2:5, 0] = True  # an island
    mask[2, 38, 3] = True  # another one
    volume = mask.astype(np.float32) * 100.0
    np.testing.assert_array_equal(predict_volume(identity_model(32), volume), np.pad(
        mask[4:36, 4:36], ((4, 4), (4, 4), (0, 0))))  # the crop to 32 cuts the corner island only
    cleaned = predict_volume(identity_model(32), volume, largest_component=True)
    expected = np.zeros_like(mask)
    expected[10:25, 12:30, 1:4] = True
    np.testing.assert_array_equal(cleaned, expected)
    generator = build_pix2pix_generator((32, 32, 3), base_filters=2)
    stack = np.random.default_rng(0).random((20, 44, 3, 3))
    zones = predict_volume(generator, stack)
    np.testing.assert_array_equal(predict_volume(generator, stack, largest_component=True),
                                  largest_gland_component(zones))


def test_wrong_channels_name_the_file_and_the_expected_input(tmp_path):
    stack = Volume(np.zeros((32, 32, 2, 3), np.float32), np.eye(4), tmp_path / "stack.nii.gz")
    with pytest.raises(InputError, match="a U-Net taking a single-channel") as caught:
        predict_volume(identity_model(32), stack)
    assert caught.value.path == str(tmp_path / "stack.nii.gz")
    with pytest.raises(InputError, match=r"registered \(X, Y, Z, 3\)"):
        predict_volume(build_pix2pix_generator((32, 32, 3), base_filters=2), np.zeros((32, 32, 2)))


def test_predict_case_writes_labels_aligned_to_the_las_source(phantom_dir, unet_path, tmp_path):
    source = phantom_dir / "phantom-000" / "t2w.nii.gz"
    assert nib.aff2axcodes(nib.load(source).affine)[0] == "L"  # stored Right-to-Left
    out = predict_case(unet_path, phantom_dir / "phantom-000", tmp_path / "pred.nii.gz")
    written, original = nib.load(out), nib.load(source)
    np.testing.assert_array_equal(written.affine, original.affine)
    assert written.shape == original.shape
    assert written.get_data_dtype() == np.uint8
    # The same labels as predict_volume on the canonical volume, stored in file order.
    expected = predict_volume(load_model(unet_path), load_volume(source))
    np.testing.assert_array_equal(load_volume(out, label=True).data, expected)


def test_predict_case_applies_the_target_spacing_of_the_models_run(phantom_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    UNetTrainingConfig(phantom_dir, run, image_size=32, target_spacing=2.0).to_json(run / "config.json")
    identity_model(32).save(run / "best.keras")
    assert run_target_spacing(run / "best.keras") == 2.0
    case = phantom_dir / "phantom-000"
    t2w = load_volume(case / "t2w.nii.gz")  # 96 x 96 pixels of 1.4 mm
    out = predict_case(run / "best.keras", case, tmp_path / "pred.nii.gz")
    written = load_volume(out, label=True).data
    np.testing.assert_array_equal(written, predict_volume(identity_model(32), t2w, target_spacing=2.0))
    assert not np.array_equal(written, predict_volume(identity_model(32), t2w))  # it made a difference
    # The same value given explicitly is accepted; a contradicting one is refused.
    predict_case(run / "best.keras", case, tmp_path / "again.nii.gz", target_spacing=2.0)
    with pytest.raises(InputError, match="trained with target_spacing 2.0"):
        predict_case(run / "best.keras", case, tmp_path / "other.nii.gz", target_spacing=1.0)
    # A model object, or a model without its run, takes the value as an argument.
    loose = predict_case(identity_model(32), case, tmp_path / "loose.nii.gz", target_spacing=2.0)
    np.testing.assert_array_equal(load_volume(loose, label=True).data, written)
    # The command line reads the run's value and cleans up islands when asked.
    cleaned = tmp_path / "cleaned.nii.gz"
    args = ["predict", "--model", str(run / "best.keras"), "--image", str(case), "--out", str(cleaned)]
    assert main([*args, "--largest-component"]) == 0
    expected = predict_volume(identity_model(32), t2w, target_spacing=2.0, largest_component=True)
    np.testing.assert_array_equal(load_volume(cleaned, label=True).data, expected)
    assert len(component_sizes(written)) > 1 and len(component_sizes(expected)) == 1
    assert main([*args, "--overwrite", "--target-spacing", "1.5"]) == 2
    assert "trained with target_spacing 2.0" in capsys.readouterr().err


def test_cli_predict_refuses_to_overwrite(phantom_dir, unet_path, tmp_path, capsys):
    out = tmp_path / "pred.nii.gz"
    args = ["predict", "--model", str(unet_path), "--image", str(phantom_dir / "phantom-001" / "t2w.nii.gz"),
            "--out", str(out)]
    assert main(args) == 0
    before = out.read_bytes()
    assert main(args) == 2
    assert f"{out}: file exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_cli_predict_rejects_a_file_that_is_not_a_model(phantom_dir, tmp_path, capsys):
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    args = ["predict", "--model", str(fake), "--image", str(phantom_dir / "phantom-000"),
            "--out", str(tmp_path / "pred.nii.gz")]
    assert main(args) == 2
    assert f"{fake}: corrupt or not a Keras model" in capsys.readouterr().err
    assert not (tmp_path / "pred.nii.gz").exists()


def test_cli_predict_rejects_a_volume_the_model_cannot_take(phantom_dir, tmp_path, capsys):
    generator = tmp_path / "generator.keras"
    build_pix2pix_generator((32, 32, 3), base_filters=2).save(generator)
    t2w = phantom_dir / "phantom-000" / "t2w.nii.gz"
    assert main(["predict", "--model", str(generator), "--image", str(t2w), "--out", str(tmp_path / "p.nii.gz")]) == 2
    assert "Pix2Pix generator taking a registered" in capsys.readouterr().err


# --- evaluation ---------------------------------------------------------------------


def _write_predictions(phantom_dir: Path, pred_dir: Path, name: str, change) -> dict[str, np.ndarray]:
    """Write changed copies of the truth as predictions; return them (canonical order)."""
    predictions = {}
    for index, case_id in enumerate(["phantom-000", "phantom-001"]):
        truth = load_volume(phantom_dir / case_id / f"{name}.nii.gz", label=True)
        predictions[case_id] = change(truth.data, index)
        save_like(predictions[case_id], truth, pred_dir / f"{case_id}.nii.gz")
    return predictions


def test_evaluate_folder_scores_equal_independent_metrics(phantom_dir, tmp_path):
    def shifted(mask, index):
        return np.roll(mask, 2 + 3 * index, axis=0)

    predictions = _write_predictions(phantom_dir, tmp_path / "pred", "lesion", shifted)
    result = evaluate_folder(tmp_path / "pred", phantom_dir, out_csv=tmp_path / "scores.csv",
                             out_figure=tmp_path / "cases.png")
    with open(tmp_path / "scores.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["case_id"] for row in rows] == ["phantom-000", "phantom-001", "mean"]
    expected_iou, expected_dice = [], []
    for row in rows[:2]:
        truth = load_volume(phantom_dir / row["case_id"] / "lesion.nii.gz", label=True).data > 0
        expected_iou.append(iou(predictions[row["case_id"]] > 0, truth))
        expected_dice.append(dice(predictions[row["case_id"]] > 0, truth))
        assert float(row["iou"]) == pytest.approx(expected_iou[-1], abs=1e-12)
        assert float(row["dice"]) == pytest.approx(expected_dice[-1], abs=1e-12)
    assert float(rows[2]["iou"]) == pytest.approx(np.mean(expected_iou), abs=1e-12)
    assert float(rows[2]["dice"]) == pytest.approx(np.mean(expected_dice), abs=1e-12)
    assert 0 < min(expected_dice) < 1  # the shift really changed something
    assert result.mean["dice"] == pytest.approx(np.mean(expected_dice))
    assert (tmp_path / "cases.png").stat().st_size > 0


def test_evaluate_folder_per_zone(phantom_dir, tmp_path):
    def merge_central_zone(zones, index):
        return np.where(zones == 3, 2, zones).astype(np.uint8)  # CZ predicted as TZ

    predictions = _write_predictions(phantom_dir, tmp_path / "pred", "zones", merge_central_zone)
    result = evaluate_folder(tmp_path / "pred", phantom_dir, out_csv=tmp_path / "zones.csv",
                             label="zones", per_zone=True)
    for row in result.rows:
        truth = load_volume(phantom_dir / row["case_id"] / "zones.nii.gz", label=True).data
        expected = per_class_dice(predictions[row["case_id"]], truth, 5)
        assert row["dice_peripheral_zone"] == pytest.approx(expected[1])
        assert row["dice_transition_zone"] == pytest.approx(expected[2])
        assert row["dice_peripheral_zone"] == 1.0
        assert row["dice_central_zone"] == pytest.approx(expected[3]) and expected[3] < 1


def test_cli_evaluate_refuses_to_overwrite_and_missing_truth(phantom_dir, tmp_path, capsys):
    _write_predictions(phantom_dir, tmp_path / "pred", "lesion", lambda mask, index: mask)
    out = tmp_path / "scores.csv"
    args = ["evaluate", "--pred-dir", str(tmp_path / "pred"), "--truth-dir", str(phantom_dir), "--out", str(out)]
    assert main(args) == 0
    assert "mean IoU 1.0000" in capsys.readouterr().out
    assert main(args) == 2
    assert f"{out}: file exists" in capsys.readouterr().err
    shutil.copy(tmp_path / "pred" / "phantom-000.nii.gz", tmp_path / "pred" / "unknown-case.nii.gz")
    assert main([*args, "--overwrite"]) == 2
    assert "no lesion mask for predicted case(s) unknown-case" in capsys.readouterr().err


def test_figures_show_anterior_up_and_patient_right_on_the_left():
    axial = np.zeros((4, 3))
    axial[3, 2] = 1.0  # the most right (x) and most anterior (y) voxel
    display = to_display(axial)
    assert display.shape == (3, 4)
    assert display[0, 0] == 1.0


# --- real data ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_data
def test_real_prostatex_train_predict_evaluate_round_trip(real_data_dir, tmp_path):
    from prostseg.training.loop import UNetTrainingConfig, train_unet

    data_dir = real_data_dir / "prostatex-t2w-lesion"
    config = UNetTrainingConfig(data_dir, tmp_path / "run", image_size=384, base_filters=4, depth=3,
                                batch_size=2, epochs=1, steps_per_epoch=3, verbose=0)
    result = train_unet(config)
    assert np.isfinite(result.last["loss"])
    split = json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(p.name for p in data_dir.iterdir())

    model = load_model(result.model_path)
    for case_dir in sorted(data_dir.iterdir()):
        out = predict_case(model, case_dir, tmp_path / "pred" / f"{case_dir.name}.nii.gz")
        np.testing.assert_array_equal(nib.load(out).affine, nib.load(case_dir / "t2w.nii.gz").affine)
    scores = evaluate_folder(tmp_path / "pred", data_dir, out_csv=tmp_path / "scores.csv")
    assert len(scores.rows) == 3
    from prostseg.data.dataset import find_case

    for row in scores.rows:  # each score is that of the written prediction and the case's mask
        pred = load_volume(tmp_path / "pred" / f"{row['case_id']}.nii.gz", label=True).data > 0
        truth = load_volume(find_case(data_dir / row["case_id"]).path("lesion"), label=True).data > 0
        assert row["dice"] == pytest.approx(dice(pred, truth))
        assert row["iou"] == pytest.approx(iou(pred, truth))
    assert scores.mean["dice"] == pytest.approx(np.mean([row["dice"] for row in scores.rows]))


def test_volumes_of_any_slice_count_reuse_one_traced_graph(tmp_path):
    """Full batches only: TensorFlow warns about retracing (on the book's pages too) when a
    model sees many input shapes, e.g. a different last batch for every volume."""
    import io as text_io
    import logging

    import tensorflow as tf

    from prostseg.use.inference import load_model
    from prostseg.networks.models import build_unet

    messages = text_io.StringIO()
    handler = logging.StreamHandler(messages)
    tf.get_logger().addHandler(handler)
    try:
        build_unet((32, 32, 1), base_filters=2, depth=2).save(tmp_path / "m.keras")
        rng = np.random.default_rng(0)
        for slices in range(3, 12):
            model = load_model(tmp_path / "m.keras")
            for extra in (0, 1):
                labels = predict_volume(model, rng.random((40, 30, slices + extra)))
                assert labels.shape == (40, 30, slices + extra)
    finally:
        tf.get_logger().removeHandler(handler)
    assert "retracing" not in messages.getvalue()
