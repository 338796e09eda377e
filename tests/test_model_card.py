"""Model card: the facts of the run, per-patient scores and their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from prostseg.errors import InputError
from prostseg.use.inference import load_model, predict_volume
from prostseg.data.io import load_volume
from prostseg.networks.metrics import dice
from prostseg.use.model_card import MODEL_CARD_FILE, bootstrap_ci, evaluate_patients, write_model_card
from prostseg.networks.models import build_unet
from prostseg.preparation.splits import PatientSplit
from prostseg.training.loop import UNetTrainingConfig


@pytest.fixture
def run_dir(phantom_dir, tmp_path):
    """A run folder as prostseg.training.loop leaves it: config, split, history, model."""
    run = tmp_path / "run"
    run.mkdir()
    UNetTrainingConfig(str(phantom_dir), str(run), label="zones", image_size=32, base_filters=2,
                       depth=2).to_json(run / "config.json")
    PatientSplit(train=["phantom-000", "phantom-001"], val=["phantom-002", "phantom-003"], test=(),
                 seed=None).to_json(run / "split.json")
    (run / "history.csv").write_text("epoch,loss,val_loss,seconds\n0,0.9,0.8,2.5\n1,0.7,0.6,2.0\n")
    unet = build_unet((32, 32, 1), base_filters=2, depth=2)
    rng = np.random.default_rng(0)
    unet.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") if "moving_variance" not in w.path
                      else np.ones(w.shape, "float32") for w in unet.weights])
    unet.save(run / "best.keras")
    return run


def test_card_records_data_split_configuration_and_scores(run_dir, phantom_dir):
    card = write_model_card(run_dir)
    assert card == run_dir / MODEL_CARD_FILE
    text = card.read_text(encoding="utf-8")
    assert "- train (2 patients): phantom-000, phantom-001" in text
    assert "- val (2 patients): phantom-002, phantom-003" in text
    assert "- test (0 patients): none" in text
    assert "synthetic phantoms" in text and "Trained on synthetic phantoms only" in text
    assert "No test patients" in text and "training time: 4 s" in text and "epochs: 2" in text
    assert "| label | zones |" in text and "tensorflow" in text and "CPU cores" in text
    assert "whole-gland segmentation" in text
    # the validation Dice of phantom-002, computed here independently, is in the table
    model_scores = evaluate_patients(run_dir / "best.keras", phantom_dir, ["phantom-002"], label="zones")
    pred = predict_volume(load_model(run_dir / "best.keras"), load_volume(phantom_dir / "phantom-002" / "t2w.nii.gz"))
    truth = load_volume(phantom_dir / "phantom-002" / "zones.nii.gz", label=True).data > 0
    assert model_scores["phantom-002"]["dice"] == pytest.approx(dice(pred > 0, truth))
    assert f"| phantom-002 | {dice(pred > 0, truth):.3f} |" in text


def test_card_needs_a_run_folder(tmp_path):
    with pytest.raises(InputError, match="not a training run folder"):
        write_model_card(tmp_path)


def test_bootstrap_interval_holds_the_mean_narrows_with_patients_and_is_reproducible():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.8, 0.1, 8), rng.normal(0.8, 0.1, 200)
    mean, low, high = bootstrap_ci(few)
    assert low < mean < high and mean == pytest.approx(few.mean())
    _, low_many, high_many = bootstrap_ci(many)
    assert high_many - low_many < high - low
    assert bootstrap_ci(few) == bootstrap_ci(few)
    # about 1.96 standard errors each side for a mean of normal scores
    assert (high_many - low_many) / 2 == pytest.approx(1.96 * many.std(ddof=1) / np.sqrt(200), rel=0.15)
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    assert np.isnan(bootstrap_ci([np.nan])[0])
