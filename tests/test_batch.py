"""Batch prediction: inputs, resume after an interruption, probability maps, the
summary, test-time augmentation and the lesion-size clean-up."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib
import numpy as np
import pytest

from prostseg.use.batch import PROBABILITIES_DIR, SUMMARY_FILE, collect_inputs, predict_batch
from prostseg.cli import main
from prostseg.errors import InputError
from prostseg.use.inference import PROBABILITY_STEP, postprocess, predict_probabilities
from prostseg.data.io import load_volume
from prostseg.networks.models import build_unet


@pytest.fixture(scope="module")
def model():
    """A random U-Net: not symmetric under flips or turns, output varies."""
    unet = build_unet((32, 32, 1), base_filters=2, depth=2)
    rng = np.random.default_rng(3)
    unet.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") if "moving_variance" not in w.path
                      else np.ones(w.shape, "float32") for w in unet.weights])
    return unet


class Interrupting:
    """Wraps a model and raises KeyboardInterrupt at its ``stop_at``-th predict call."""

    def __init__(self, model, stop_at: int):
        self.model, self.stop_at, self.calls = model, stop_at, 0
        self.name, self.input_shape, self.output_shape = model.name, model.input_shape, model.output_shape

    def predict(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.model.predict(*args, **kwargs)


def _summary(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_batch_resumes_after_an_interruption_and_matches_an_uninterrupted_run(model, phantom_dir, tmp_path):
    complete = predict_batch(model, [phantom_dir], tmp_path / "complete", probabilities=True, progress=False)
    assert [row["status"] for row in complete.rows] == ["predicted"] * 4

    with pytest.raises(KeyboardInterrupt):
        predict_batch(Interrupting(model, stop_at=3), [phantom_dir], tmp_path / "run", probabilities=True,
                      progress=False)
    written = sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_file())
    assert written == ["phantom-000.nii.gz", "phantom-001.nii.gz"]  # no half file, no summary yet

    counting = Interrupting(model, stop_at=0)
    resumed = predict_batch(counting, [phantom_dir], tmp_path / "run", probabilities=True, progress=False)
    assert [row["status"] for row in resumed.rows] == ["skipped", "skipped", "predicted", "predicted"]
    assert counting.calls == 2  # only the two missing cases were predicted
    for case in ("phantom-000", "phantom-001", "phantom-002", "phantom-003"):
        for name in (f"{case}.nii.gz", f"{PROBABILITIES_DIR}/{case}.nii.gz"):
            np.testing.assert_array_equal(nib.load(tmp_path / "run" / name).get_fdata(),
                                          nib.load(tmp_path / "complete" / name).get_fdata())
    rows = _summary(resumed.summary_path)
    assert [row["case_id"] for row in rows] == ["phantom-000", "phantom-001", "phantom-002", "phantom-003"]
    assert [row["foreground_ml"] for row in rows] == [row["foreground_ml"] for row in _summary(complete.summary_path)]


def test_probability_maps_lie_on_the_source_grid_in_16_bits(model, phantom_dir, tmp_path):
    predict_batch(model, [phantom_dir / "phantom-001"], tmp_path, probabilities=True, progress=False)
    source = nib.load(phantom_dir / "phantom-001" / "t2w.nii.gz")
    written = nib.load(tmp_path / PROBABILITIES_DIR / "phantom-001.nii.gz")
    assert written.get_data_dtype() == np.uint16
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.shape == source.shape + (1,)
    expected = predict_probabilities(model, load_volume(phantom_dir / "phantom-001" / "t2w.nii.gz"))
    stored = load_volume(tmp_path / PROBABILITIES_DIR / "phantom-001.nii.gz").data
    np.testing.assert_allclose(stored, expected[..., 0], atol=PROBABILITY_STEP / 2 + 1e-7)


def test_collect_inputs_reads_lists_data_folders_and_rejects_collisions(phantom_dir, tmp_path):
    listing = tmp_path / "cases.txt"
    listing.write_text(f"# two cases\n{phantom_dir / 'phantom-002'}\n{phantom_dir / 'phantom-000' / 't2w.nii.gz'}\n")
    assert [(case_id, path.name) for case_id, path in collect_inputs([listing])] == \
        [("phantom-002", "phantom-002"), ("t2w", "t2w.nii.gz")]
    assert [case_id for case_id, _ in collect_inputs([phantom_dir])] == [f"phantom-00{i}" for i in range(4)]
    with pytest.raises(InputError, match="also names"):
        collect_inputs([phantom_dir, phantom_dir / "phantom-001"])
    with pytest.raises(InputError, match="no such file or folder"):
        collect_inputs([tmp_path / "missing"])


def test_cli_batch_reports_a_bad_case_and_goes_on(model, phantom_dir, tmp_path, capsys):
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    bad = tmp_path / "inputs" / "broken"
    bad.mkdir(parents=True)
    (bad / "t2w.nii.gz").write_bytes(b"not a volume")
    good = tmp_path / "inputs" / "phantom-000"
    shutil.copytree(phantom_dir / "phantom-000", good)
    code = main(["predict", "--model", str(model_path), "--image", str(tmp_path / "inputs"),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "1 predicted, 0 skipped, 1 failed" in captured.out
    assert "broken" in captured.err and "t2w.nii.gz" in captured.err
    rows = {row["case_id"]: row for row in _summary(tmp_path / "out" / SUMMARY_FILE)}
    assert rows["phantom-000"]["status"] == "predicted" and rows["broken"]["status"] == "failed"
    assert (tmp_path / "out" / "phantom-000.nii.gz").is_file()
    assert main(["predict", "--model", str(model_path), "--image", str(good), str(good),
                 "--out", str(tmp_path / "one.nii.gz")]) == 2  # one file takes one image


def test_test_time_augmentation_makes_predictions_turn_with_the_image(model):
    volume = np.random.default_rng(0).random((32, 32, 3)).astype("float32")
    turned = np.rot90(volume, 1, axes=(0, 1))
    flipped = volume[:, ::-1]
    plain = predict_probabilities(model, volume)
    assert not np.allclose(predict_probabilities(model, turned), np.rot90(plain, 1, axes=(0, 1)), atol=1e-3)
    averaged = predict_probabilities(model, volume, tta=True)
    np.testing.assert_allclose(predict_probabilities(model, turned, tta=True),
                               np.rot90(averaged, 1, axes=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, flipped, tta=True), averaged[:, ::-1], atol=1e-5)
    manual = np.mean([np.rot90(predict_probabilities(model, np.rot90(volume, k, axes=(0, 1))), -k, axes=(0, 1))
                      for k in range(4)] + [np.rot90(predict_probabilities(
                          model, np.rot90(volume, k, axes=(0, 1))[:, ::-1])[:, ::-1], -k, axes=(0, 1))
                          for k in range(4)], axis=0)
    np.testing.assert_allclose(averaged, manual, atol=1e-5)


def test_min_lesion_size_is_a_volume_in_cubic_millimetres():
    labels = np.zeros((10, 10, 4), np.uint8)
    labels[0:2, 0:2, 0] = 1        # 4 voxels
    labels[5:8, 5:8, 1:3] = 1      # 18 voxels
    spacing = (0.5, 0.5, 3.0)      # 0.75 mm³ per voxel: 3 mm³ and 13.5 mm³
    assert postprocess(labels, min_lesion_size=3.0, spacing=spacing).sum() == 22
    kept = postprocess(labels, min_lesion_size=3.1, spacing=spacing)
    assert kept.sum() == 18 and kept[5:8, 5:8, 1:3].all()
    with pytest.raises(ValueError, match="spacing"):
        postprocess(labels, min_lesion_size=1.0)
