"""Export: the SavedModel and the ONNX model compute what the Keras model computes, and
carry the preprocessing contract the model was trained with."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from prostseg.cli import main  # noqa: E402
from prostseg.errors import InputError  # noqa: E402
from prostseg.use.export import ONNX_FILE, SAVED_MODEL_DIR, export_model, load_exported  # noqa: E402
from prostseg.use.inference import load_model, predict_probabilities, predict_volume  # noqa: E402
from prostseg.data.io import load_volume  # noqa: E402
from prostseg.networks.models import build_pix2pix_generator, build_unet  # noqa: E402
from prostseg.training.loop import UNetTrainingConfig  # noqa: E402

#: Largest difference of probabilities allowed between Keras, SavedModel and ONNX
#: Runtime (all float32 on the CPU; they differ by the order of summation only).
PARITY_ATOL = 1e-4


def _randomised(model, seed: int):
    """The model with random weights, batch-norm statistics included, so that the
    inference-mode batch norm of each export is exercised."""
    rng = np.random.default_rng(seed)
    weights = []
    for weight in model.weights:
        value = rng.normal(0.0, 0.3, weight.shape)
        if "moving_variance" in weight.path:
            value = rng.uniform(0.5, 2.0, weight.shape)
        weights.append(value.astype("float32"))
    model.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    """A U-Net saved in a run folder whose config.json records target_spacing 2 mm."""
    run = tmp_path_factory.mktemp("run")
    _randomised(build_unet((32, 32, 1), base_filters=4, depth=2), seed=1).save(run / "model.keras")
    UNetTrainingConfig("data", str(run), target_spacing=2.0, label="zones").to_json(run / "config.json")
    return run


@pytest.fixture(scope="module")
def unet_exports(unet_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, export_model(unet_run / "model.keras", out)


def test_exports_carry_the_contract_of_the_run(unet_exports):
    out, paths = unet_exports
    assert paths == {"savedmodel": out / SAVED_MODEL_DIR, "onnx": out / ONNX_FILE}
    for path in paths.values():
        contract = load_exported(path).contract
        assert contract["model_kind"] == "unet" and contract["input_size"] == 32
        assert contract["channels"] == ["t2w"]
        assert contract["target_spacing_mm"] == 2.0  # from the run's config.json
        assert contract["output"] == {"activation": "sigmoid", "classes": ["gland"], "threshold": 0.5}
        assert contract["normalisation"]["percentiles"] == [0.5, 99.5]


def test_unet_probabilities_agree_across_keras_savedmodel_and_onnx(unet_run, unet_exports, phantom_dir):
    _, paths = unet_exports
    volume = load_volume(phantom_dir / "phantom-000" / "t2w.nii.gz")
    keras_model = load_model(unet_run / "model.keras")
    reference = predict_probabilities(keras_model, volume, target_spacing=2.0)
    assert 0.05 < reference.std()  # a model whose output varies: the comparison means something
    for path in paths.values():
        exported = load_model(path)  # load_model reads exports too
        assert exported.target_spacing == 2.0
        probabilities = predict_probabilities(exported, volume, target_spacing=exported.target_spacing)
        np.testing.assert_allclose(probabilities, reference, atol=PARITY_ATOL, rtol=0)


def test_pix2pix_generator_agrees_across_formats(tmp_path):
    generator = _randomised(build_pix2pix_generator((32, 32, 3), base_filters=4), seed=2)
    paths = export_model(generator, tmp_path)
    stack = np.random.default_rng(0).normal(size=(20, 24, 3, 3)).astype("float32")
    reference = predict_probabilities(generator, stack)
    top_two = np.sort(reference, axis=-1)[..., -2:]
    decided = top_two[..., 1] - top_two[..., 0] > 2 * PARITY_ATOL  # labels cannot flip there
    for path in paths.values():
        exported = load_exported(path)
        assert exported.contract["output"]["activation"] == "softmax"
        assert exported.contract["channels"] == ["t2w", "dwi", "adc"]
        np.testing.assert_allclose(predict_probabilities(exported, stack), reference, atol=PARITY_ATOL, rtol=0)
        np.testing.assert_array_equal(predict_volume(exported, stack)[decided], reference.argmax(-1)[decided])


def test_export_refuses_to_overwrite_and_contradicting_settings(unet_run, unet_exports):
    out, _ = unet_exports
    with pytest.raises(InputError, match="exists"):
        export_model(unet_run / "model.keras", out, formats=("onnx",))
    with pytest.raises(InputError, match="target_spacing 2.0"):
        export_model(unet_run / "model.keras", out / "other", target_spacing=1.0)


def test_load_exported_rejects_what_prostseg_did_not_export(tmp_path):
    with pytest.raises(InputError, match="not an exported model"):
        load_exported(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="not an ONNX model"):
        load_exported(bad)


def test_cli_export_writes_both_formats(unet_run, tmp_path, capsys):
    assert main(["export", "--model", str(unet_run / "model.keras"), "--out", str(tmp_path / "e"),
                 "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "e" / ONNX_FILE) in printed
    assert json.loads(printed[printed.index("{"):])["model_kind"] == "unet"
    assert not (tmp_path / "e" / SAVED_MODEL_DIR).exists()
    assert main(["export", "--model", str(unet_run / "model.keras"), "--out", str(tmp_path / "e"),
                 "--format", "onnx"]) == 2
    assert "exists" in capsys.readouterr().err
