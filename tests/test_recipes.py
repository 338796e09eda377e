"""Model recipes: the kind of a model is recorded, never guessed, and a new kind is one recipe.

The toy recipe below is a 2.5D U-Net: it reads the T2W like the U-Net, but each input
slice carries its two neighbours as channels. Registering it is all it takes for
inference to apply such a model to a volume and to a case folder.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from prostseg.errors import InputError
from prostseg.use.inference import load_model, predict_case, predict_volume, resolve_model
from prostseg.data.io import load_volume
from prostseg.networks.recipes import PIX2PIX, UNET, Recipe, recipe, recipe_for_model, register, unregister
from prostseg.networks.runs import Pix2PixTrainingConfig, UNetTrainingConfig
from prostseg.preparation.slices import prepare_unet_volume, restore_unet_slices

TOY_NAME = "toy_unet_2_5d"


def _with_neighbours(volume, image_size, *, target_spacing=None, spacing=None):
    """U-Net slices with the slice below, itself and the slice above as channels."""
    slices = prepare_unet_volume(volume, image_size, target_spacing=target_spacing, spacing=spacing)
    below = np.concatenate([slices[:1], slices[:-1]])
    above = np.concatenate([slices[1:], slices[-1:]])
    return np.concatenate([below, slices, above], axis=-1)


def _toy_network(size: int, channel: int) -> keras.Model:
    """A '2.5D U-Net' whose foreground probability is input channel ``channel``."""
    inputs = keras.Input((size, size, 3))
    picked = keras.layers.Conv2D(1, 1, use_bias=False, name="pick")(inputs)
    model = keras.Model(inputs, picked, name=TOY_NAME)
    kernel = np.zeros((1, 1, 3, 1), np.float32)
    kernel[0, 0, channel, 0] = 1.0
    model.get_layer("pick").set_weights([kernel])
    return model


@pytest.fixture
def toy_recipe():
    toy = register(dataclasses.replace(
        UNET, kind="unet-2.5d", title="2.5D U-Net", model_name=TOY_NAME, prepare=_with_neighbours,
        build_model=lambda config: _toy_network(config.image_size, 0), config=None,
    ))
    yield toy
    unregister(toy.kind)


def test_a_registered_recipe_runs_through_inference(toy_recipe, phantom_dir, tmp_path):
    assert recipe("unet-2.5d") is toy_recipe
    t2w = load_volume(phantom_dir / "phantom-000" / "t2w.nii.gz")
    prepared = prepare_unet_volume(t2w, 64)[..., 0]
    on_grid = restore_unet_slices(prepared[..., None], t2w.shape)[..., 0] > 0.5
    # The middle channel is the slice itself, channel 0 the slice below it.
    np.testing.assert_array_equal(predict_volume(_toy_network(64, 1), t2w), on_grid)
    below = predict_volume(_toy_network(64, 0), t2w)
    np.testing.assert_array_equal(below[..., 1:], on_grid[..., :-1])
    np.testing.assert_array_equal(below[..., 0], on_grid[..., 0])
    # From a file: the name saved in the .keras file says which recipe to use.
    path = tmp_path / "toy.keras"
    _toy_network(64, 0).save(path)
    out = predict_case(path, phantom_dir / "phantom-000", tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(load_volume(out, label=True).data, below)


def test_the_recipe_builders_name_their_networks_and_the_name_survives_saving(tmp_path):
    configs = ((UNetTrainingConfig("d", "o", image_size=32, base_filters=2, depth=2), UNET),
               (Pix2PixTrainingConfig("d", "o", image_size=32, base_filters=2), PIX2PIX))
    for config, built_in in configs:
        path = tmp_path / f"{built_in.kind}.keras"
        built_in.build_model(config).save(path)
        assert recipe_for_model(load_model(path)) is built_in


def test_a_model_that_records_no_kind_is_refused_in_one_line(tmp_path):
    inputs = keras.Input((32, 32, 1))
    anonymous = keras.Model(inputs, inputs, name="mine")
    with pytest.raises(ValueError, match="'mine' is no prostseg model kind"):
        predict_volume(anonymous, np.zeros((32, 32, 2)))
    assert predict_volume(anonymous, np.ones((32, 32, 2)), kind="unet").shape == (32, 32, 2)
    anonymous.save(tmp_path / "mine.keras")
    with pytest.raises(InputError, match=r"mine\.keras: model 'mine' is no prostseg model kind"):
        resolve_model(tmp_path / "mine.keras")


def test_the_runs_config_names_the_kind_and_must_agree_with_the_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    UNetTrainingConfig("data", run, image_size=32).to_json(run / "config.json")
    inputs = keras.Input((32, 32, 1))
    keras.Model(inputs, inputs, name="renamed").save(run / "best.keras")
    assert resolve_model(run / "best.keras")[2] is UNET  # the run records it
    keras.Model(inputs, inputs, name=PIX2PIX.model_name).save(run / "model.keras")
    with pytest.raises(InputError, match="holds a Pix2Pix model .* records a unet run"):
        resolve_model(run / "model.keras")
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["kind"] == "unet"


def test_a_recipes_dataset_streams_what_its_prepare_functions_make(phantom_dir, tmp_path):
    import shutil

    from prostseg.data.dataset import discover_cases, stack_file
    from prostseg.data.io import save_like

    data_dir = tmp_path / "data"
    for case_id in ("phantom-000", "phantom-001"):
        shutil.copytree(phantom_dir / case_id, data_dir / case_id)
        t2w = load_volume(data_dir / case_id / "t2w.nii.gz")
        stack = np.stack([t2w.data, t2w.data ** 2, -t2w.data], axis=-1).astype(np.float32)
        stack_file(data_dir / case_id).parent.mkdir()
        save_like(stack, t2w, stack_file(data_dir / case_id))
    cases = discover_cases(data_dir)
    for built_in, label in ((UNET, "zones"), (PIX2PIX, "zones")):
        batches = list(built_in.dataset(cases, image_size=32, batch_size=5, label=label))
        images = np.concatenate([np.asarray(image) for image, _ in batches])
        targets = np.concatenate([np.asarray(target) for _, target in batches])
        channels = len(built_in.channels)
        expected_images = np.concatenate([
            built_in.prepare(load_volume(case.path(built_in.input),
                                         channels=channels if channels > 1 else None), 32)
            for case in cases])
        expected_targets = np.concatenate([
            built_in.prepare_target(load_volume(case.path(label), label=True), 32) for case in cases])
        np.testing.assert_allclose(images, expected_images, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(targets, expected_targets)


def test_register_refuses_a_kind_or_network_name_in_use():
    with pytest.raises(ValueError, match="uses that kind or model name already"):
        register(dataclasses.replace(UNET, kind="other"))
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        recipe("nope")
    assert isinstance(UNET, Recipe) and UNET.config is UNetTrainingConfig


def test_preparing_and_drawing_a_slice_does_not_import_tensorflow(phantom_dir):
    script = f"""
import sys
import matplotlib
matplotlib.use("Agg")
from prostseg import viz
from prostseg.preparation import slices
from prostseg.networks import recipes
from prostseg.data.io import load_volume
t2w = load_volume({str(phantom_dir / "phantom-000" / "t2w.nii.gz")!r})
prepared = recipes.UNET.prepare(t2w, 64)
viz.show_slice(prepared[t2w.shape[2] // 2, ..., 0])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))
print(prepared.shape, loaded)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().endswith("[]"), result.stdout
    assert "(64, 64, 1)" in result.stdout or ", 64, 64, 1)" in result.stdout
