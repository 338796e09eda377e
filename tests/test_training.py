"""Training: learning on phantoms, resuming, run-folder safety, two-replica runs, CLI.

Models are tiny (a few thousand weights, 32-64 pixel slices) so that everything runs on
two shared CPU cores. Multi-device runs happen in a subprocess, because logical CPU
devices must be configured before TensorFlow initialises.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from prostseg.cli import main
from prostseg.errors import InputError
from prostseg.use.inference import load_model, predict_volume, run_target_spacing
from prostseg.data.io import load_volume, save_like
from prostseg.preparation.slices import prepare_unet_mask
from prostseg.networks.metrics import iou
from prostseg.preparation.splits import PatientSplit
from prostseg.training.loop import (
    Pix2PixTrainingConfig,
    UNetTrainingConfig,
    load_config,
    read_history,
    train_pix2pix,
    train_unet,
)

TINY_UNET = dict(image_size=64, base_filters=4, depth=2, batch_size=4, verbose=0)
TINY_PIX2PIX = dict(image_size=32, base_filters=4, discriminator_filters=4, verbose=0)


def write_identity_stack(case_dir: Path) -> None:
    """Write aligned/stack.nii.gz from the case's own T2W, DWI and ADC, without registration.

    DWI and ADC are sampled at the T2W voxel centres (nearest neighbour, scanner
    coordinates as stored): a quick stand-in for the elastix-registered stack.
    """
    t2w = load_volume(case_dir / "t2w.nii.gz")
    voxels = np.indices(t2w.shape).reshape(3, -1)
    world = t2w.affine @ np.vstack([voxels, np.ones(voxels.shape[1])])
    channels = [t2w.data]
    for name in ("dwi", "adc"):
        volume = load_volume(case_dir / f"{name}.nii.gz")
        source = (np.linalg.inv(volume.affine) @ world)[:3]
        channels.append(ndimage.map_coordinates(volume.data, source, order=0, mode="nearest").reshape(t2w.shape))
    save_like(np.stack(channels, axis=-1).astype(np.float32), t2w, case_dir / "aligned" / "stack.nii.gz")


@pytest.fixture(scope="module")
def split_file(phantom_dir, tmp_path_factory) -> Path:
    """Two training patients, one validation patient, one test patient."""
    ids = sorted(path.name for path in phantom_dir.iterdir() if path.is_dir())
    split = PatientSplit(train=ids[:2], val=ids[2:3], test=ids[3:], seed=None)
    return split.to_json(tmp_path_factory.mktemp("split") / "split.json")


@pytest.fixture(scope="module")
def stack_dir(phantom_dir, tmp_path_factory) -> Path:
    """Three phantom cases with an identity 'registered' stack each."""
    data_dir = tmp_path_factory.mktemp("stacks")
    for case_dir in sorted(phantom_dir.iterdir())[:3]:
        shutil.copytree(case_dir, data_dir / case_dir.name)
        write_identity_stack(data_dir / case_dir.name)
    return data_dir


def model_weights(path: Path) -> list[np.ndarray]:
    return [np.asarray(weight) for weight in load_model(path).get_weights()]


# --- configuration ------------------------------------------------------------------


def test_config_round_trips_through_json(tmp_path):
    config = UNetTrainingConfig("data", "runs/a", epochs=3, loss="bce_dice", label="zones", target_spacing=1)
    assert config.target_spacing == 1.0 and isinstance(config.target_spacing, float)
    assert load_config(config.to_json(tmp_path / "config.json")) == config
    pix2pix = Pix2PixTrainingConfig("data", "runs/b", checkpoint_every=5, target_spacing=1.5,
                                    crossentropy_weight=10.0, generator_upsampling="resize", decay_epochs=4)
    assert load_config(pix2pix.to_json(tmp_path / "p.json")) == pix2pix


def test_defaults_keep_the_seed_recipe():
    unet, pix2pix = UNetTrainingConfig("d", "o"), Pix2PixTrainingConfig("d", "o")
    assert unet.target_spacing is None and pix2pix.target_spacing is None
    assert (pix2pix.l1_weight, pix2pix.crossentropy_weight, pix2pix.generator_upsampling, pix2pix.decay_epochs) == (
        100.0, 0.0, "transpose", 0)
    assert (pix2pix.epochs, pix2pix.batch_size, pix2pix.learning_rate, pix2pix.beta_1) == (300, 1, 2e-4, 0.5)
    assert [pix2pix.learning_rate_at(epoch) for epoch in (0, 99)] == [2e-4, 2e-4]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not a JSON configuration"),
        ('{"kind": "gan", "data_dir": "d", "output_dir": "o"}', '"kind" one of'),
        ('{"kind": "unet", "data_dir": "d", "output_dir": "o", "lr": 1}', r"unknown configuration keys \['lr'\]"),
        ('{"kind": "unet", "data_dir": "d", "output_dir": "o", "loss": "mse"}', "loss must be one of"),
        ('{"kind": "unet", "data_dir": "d", "output_dir": "o", "image_size": 100}', "does not fit a U-Net"),
        ('{"kind": "unet", "data_dir": "d", "output_dir": "o", "target_spacing": 0}', "target_spacing=0 is out of range"),
        ('{"kind": "pix2pix", "data_dir": "d", "output_dir": "o", "target_spacing": "1"}', "target_spacing='1' is out of range"),
        ('{"kind": "pix2pix", "data_dir": "d", "output_dir": "o", "crossentropy_weight": -1}', "crossentropy_weight"),
        ('{"kind": "pix2pix", "data_dir": "d", "output_dir": "o", "generator_upsampling": "bilinear"}',
         "generator_upsampling must be one of"),
        ('{"kind": "pix2pix", "data_dir": "d", "output_dir": "o", "decay_epochs": -2}', "decay_epochs"),
    ],
)
def test_bad_config_file_names_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as caught:
        load_config(path)
    assert caught.value.path == str(path)


# --- learning -----------------------------------------------------------------------


@pytest.mark.slow
def test_unet_learns_the_gland_and_finds_it_in_held_out_patients(phantom_dir, split_file, tmp_path):
    config = UNetTrainingConfig(
        phantom_dir, tmp_path / "run", split_file=split_file, label="zones", loss="bce_dice",
        epochs=4, steps_per_epoch=30, learning_rate=3e-3, **TINY_UNET,
    )
    result = train_unet(config)

    history = read_history(result.history_path)
    assert [row["epoch"] for row in history] == list(range(4))
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    split = json.loads(split_file.read_text(encoding="utf-8"))
    # Training IoU (pooled over the last epoch's batches) against the best constant
    # prediction, all ones, on the same training slices.
    masks = [
        prepare_unet_mask(load_volume(phantom_dir / case_id / "zones.nii.gz", label=True), 64)
        for case_id in split["train"]
    ]
    all_ones = iou(np.ones_like(np.concatenate(masks)), np.concatenate(masks))
    assert history[-1]["iou"] > 0.5
    assert history[-1]["iou"] > all_ones + 0.3
    # What it learnt carries over to patients it never saw (validation and test), and
    # prediction runs batch normalisation on its moving averages, not on batch
    # statistics: after a short run they must have caught up with training.
    model = load_model(result.model_path)
    held_out = [*split["val"], *split["test"]]
    assert held_out and not set(held_out) & set(split["train"])
    truths = [load_volume(phantom_dir / case_id / "zones.nii.gz", label=True).data > 0
              for case_id in held_out]
    predicted_iou = np.mean([
        iou(predict_volume(model, load_volume(phantom_dir / case_id / "t2w.nii.gz")), truth)
        for case_id, truth in zip(held_out, truths)
    ])
    all_ones_held_out = np.mean([iou(np.ones_like(truth), truth) for truth in truths])
    assert predicted_iou > 0.5
    assert predicted_iou > all_ones_held_out + 0.3
    assert (tmp_path / "run" / "best.keras").is_file()
    assert json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8")) == split
    # every finished run describes itself: data, split and held-out scores
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "best.keras" in card and all(case_id in card for case_id in split["train"])


def test_unet_trains_without_validation_patients(phantom_dir, tmp_path):
    # Leave-one-out splits have no validation part: Keras logs NA for val_* columns.
    ids = sorted(path.name for path in phantom_dir.iterdir() if path.is_dir())
    split_file = PatientSplit(train=ids[:-1], val=(), test=ids[-1:], seed=None).to_json(tmp_path / "split.json")
    config = UNetTrainingConfig(phantom_dir, tmp_path / "run", split_file=split_file, label="zones",
                                epochs=1, steps_per_epoch=2, **TINY_UNET)
    result = train_unet(config)
    history = read_history(result.history_path)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    validation = [value for key, value in history[0].items() if key.startswith("val_")]
    assert validation and np.isnan(validation).all()
    assert result.model_path.is_file()


@pytest.mark.slow
def test_pix2pix_generator_l1_falls_and_is_validated_on_held_out_patients(stack_dir, tmp_path):
    config = Pix2PixTrainingConfig(
        stack_dir, tmp_path / "run", val_fraction=0.34, test_fraction=0.0, epochs=3, batch_size=2,
        learning_rate=1e-3, **TINY_PIX2PIX,
    )
    result = train_pix2pix(config)

    history = read_history(result.history_path)
    assert len(history) == 3
    assert history[-1]["gen_l1"] < history[0]["gen_l1"]
    assert all(np.isfinite(row["disc"]) and 0 <= row["val_dice_mean"] <= 1 for row in history)
    split = json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))
    assert len(split["val"]) == 1 and not set(split["val"]) & set(split["train"])
    assert load_model(result.model_path).output_shape == (None, 32, 32, 5)
    assert (tmp_path / "run" / "discriminator.keras").is_file()
    best_epoch = max(history, key=lambda row: row["val_dice_mean"])
    assert result.best["val_dice_mean"] == best_epoch["val_dice_mean"]
    assert load_model(tmp_path / "run" / "best_generator.keras").output_shape == (None, 32, 32, 5)
    assert "best_generator.keras" in (tmp_path / "run" / "MODEL_CARD.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_pix2pix_options_cross_entropy_resize_upsampling_decay_and_target_spacing(stack_dir, tmp_path):
    config = Pix2PixTrainingConfig(
        stack_dir, tmp_path / "run", val_fraction=0.34, test_fraction=0.0, epochs=3, batch_size=2,
        learning_rate=1e-3, crossentropy_weight=5.0, generator_upsampling="resize", decay_epochs=2,
        target_spacing=3.0, **TINY_PIX2PIX,
    )
    result = train_pix2pix(config)
    history = read_history(result.history_path)
    # The cross-entropy term is logged and part of the generator's total (epoch means are linear).
    for row in history:
        assert row["gen_ce"] > 0
        assert row["gen_total"] == pytest.approx(row["gen_gan"] + 100.0 * row["gen_l1"] + 5.0 * row["gen_ce"],
                                                 rel=1e-4)
    assert history[-1]["gen_ce"] < history[0]["gen_ce"]
    # Both optimisers ran the last epoch at the decayed rate: 1e-3 * (1 - 2 / 3).
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
    rates = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if "learning_rate" in name]
    assert len(rates) == 2 and rates == pytest.approx([1e-3 / 3] * 2)
    generator = load_model(result.model_path)
    kinds = {type(layer).__name__ for layer in generator.layers}
    assert "UpSampling2D" in kinds and "Conv2DTranspose" not in kinds
    assert load_config(tmp_path / "run" / "config.json").target_spacing == 3.0


@pytest.mark.slow
def test_unet_with_target_spacing_records_it_for_inference(phantom_dir, split_file, tmp_path):
    config = UNetTrainingConfig(phantom_dir, tmp_path / "run", split_file=split_file, label="zones", epochs=1,
                                steps_per_epoch=3, drop_empty=True, target_spacing=2.0, **TINY_UNET)
    result = train_unet(config)
    assert np.isfinite(result.last["val_loss"])
    assert run_target_spacing(result.model_path) == 2.0


# --- resuming -----------------------------------------------------------------------


class _Interrupt(keras.callbacks.Callback):
    """Stops training like a killed process: after the backup of the first epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_unet_run_resumes_to_the_uninterrupted_weights(phantom_dir, split_file, tmp_path):
    # One pass per epoch over unshuffled, unaugmented slices: the stream does not depend on
    # the epoch, so resuming must reproduce the uninterrupted run exactly.
    settings = dict(split_file=split_file, epochs=2, shuffle=False, **{**TINY_UNET, "image_size": 32})
    straight = train_unet(UNetTrainingConfig(phantom_dir, tmp_path / "straight", **settings))

    config = UNetTrainingConfig(phantom_dir, tmp_path / "resumed", **settings)
    with pytest.raises(KeyboardInterrupt):
        train_unet(config, callbacks=[_Interrupt()])
    assert [row["epoch"] for row in read_history(tmp_path / "resumed" / "history.csv")] == [0]
    resumed = train_unet(config)

    assert [row["epoch"] for row in read_history(resumed.history_path)] == [0, 1]
    for expected, actual in zip(model_weights(straight.model_path), model_weights(resumed.model_path)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    rows = zip(read_history(straight.history_path), read_history(resumed.history_path))
    for expected, actual in rows:
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-5)

    # The same settings once more: nothing left to train, nothing changes.
    again = train_unet(config)
    assert again.epochs_completed == 2
    for expected, actual in zip(model_weights(resumed.model_path), model_weights(again.model_path)):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.slow
def test_extended_pix2pix_run_matches_a_straight_run(stack_dir, tmp_path):
    settings = dict(val_fraction=0.34, test_fraction=0.0, batch_size=1, **TINY_PIX2PIX)
    straight = train_pix2pix(Pix2PixTrainingConfig(stack_dir, tmp_path / "straight", epochs=2, **settings))
    train_pix2pix(Pix2PixTrainingConfig(stack_dir, tmp_path / "resumed", epochs=1, **settings))
    resumed = train_pix2pix(Pix2PixTrainingConfig(stack_dir, tmp_path / "resumed", epochs=2, **settings))

    assert [row["epoch"] for row in read_history(resumed.history_path)] == [0, 1]
    for expected, actual in zip(model_weights(straight.model_path), model_weights(resumed.model_path)):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
    assert read_history(resumed.history_path)[1]["gen_l1"] == pytest.approx(
        read_history(straight.history_path)[1]["gen_l1"], rel=1e-4
    )


# --- the run folder -----------------------------------------------------------------


def test_folder_with_other_files_is_refused(phantom_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(InputError, match="not empty and holds no training run"):
        train_unet(UNetTrainingConfig(phantom_dir, out, **TINY_UNET))
    assert (out / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_other_run_is_refused_without_overwrite_and_replaced_with_it(phantom_dir, split_file, tmp_path, capsys):
    settings = dict(split_file=split_file, epochs=1, steps_per_epoch=1, **TINY_UNET)
    out = tmp_path / "run"
    train_unet(UNetTrainingConfig(phantom_dir, out, **settings))
    other = UNetTrainingConfig(phantom_dir, out, **{**settings, "loss": "dice"})
    with pytest.raises(InputError, match="differs in loss"):
        train_unet(other)
    assert load_config(out / "config.json").loss == "bce"

    args = ["train", "unet", "--data-dir", str(phantom_dir), "--out", str(out), "--loss", "dice"]
    assert main(args) == 2
    assert "differs in" in capsys.readouterr().err

    result = train_unet(other, overwrite=True)
    assert load_config(out / "config.json").loss == "dice"
    assert result.epochs_completed == 1


@pytest.mark.slow
def test_cli_trains_from_a_config_file_with_overrides(phantom_dir, split_file, tmp_path, capsys):
    config = UNetTrainingConfig(phantom_dir, tmp_path / "ignored", split_file=split_file, steps_per_epoch=1,
                                **TINY_UNET)
    config_path = config.to_json(tmp_path / "config.json")
    out = tmp_path / "run"
    assert main(["train", "unet", "--config", str(config_path), "--out", str(out), "--epochs", "1"]) == 0
    assert "model:" in capsys.readouterr().out
    written = load_config(out / "config.json")
    assert (written.epochs, written.output_dir, written.base_filters) == (1, str(out), 4)
    assert (out / "model.keras").is_file()


# --- two replicas -------------------------------------------------------------------

_TWO_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from prostseg.training.loop import Pix2PixTrainingConfig, UNetTrainingConfig, train_pix2pix, train_unet

    data_dir, out = sys.argv[1], sys.argv[2]
    common = dict(val_fraction=0.34, test_fraction=0.0, epochs=1, strategy="mirrored", verbose=0)
    # Chapter 7's and chapter 10's default model settings (one epoch); Pix2Pix at the
    # paper's batch of 1 per replica.
    unet = train_unet(UNetTrainingConfig(data_dir, out + "/unet", image_size=96, base_filters=8, depth=3,
                                         batch_size=4, label="zones", loss="bce_dice", **common))
    pix2pix = train_pix2pix(Pix2PixTrainingConfig(data_dir, out + "/pix2pix", image_size=64, base_filters=16,
                                                  discriminator_filters=16, batch_size=1,
                                                  learning_rate=2e-3, augment=False, **common))
    print("RESULT " + json.dumps({name: [r.num_replicas, r.global_batch_size, r.last]
                                  for name, r in (("unet", unet), ("pix2pix", pix2pix))}))
    """
)


@pytest.mark.slow
def test_both_models_train_on_two_mirrored_replicas_with_per_replica_batches(stack_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICA_SCRIPT, str(stack_dir), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    for name, loss, global_batch in (("unet", "val_loss", 8), ("pix2pix", "gen_l1", 2)):
        replicas, batch, last = result[name]
        assert (replicas, batch) == (2, global_batch)
        assert np.isfinite(last[loss])
    assert (tmp_path / "unet" / "model.keras").is_file()
    assert (tmp_path / "pix2pix" / "generator.keras").is_file()


# --- mixed precision and XLA ----------------------------------------------------------


@pytest.mark.slow
def test_mixed_precision_and_xla_runs_train_both_models(phantom_dir, stack_dir, tmp_path):
    unet = train_unet(UNetTrainingConfig(
        phantom_dir, tmp_path / "unet", label="zones", epochs=1, steps_per_epoch=2,
        mixed_precision=True, jit_compile=True, **TINY_UNET,
    ))
    pix2pix = train_pix2pix(Pix2PixTrainingConfig(
        stack_dir, tmp_path / "pix2pix", val_fraction=0.34, test_fraction=0.0, epochs=1,
        mixed_precision=True, jit_compile=True, **TINY_PIX2PIX,
    ))
    assert np.isfinite(unet.last["loss"]) and np.isfinite(pix2pix.last["gen_total"])
    # Weights stay float32 and the saved models give float32 probabilities.
    for result in (unet, pix2pix):
        model = load_model(result.model_path)
        assert all(weight.dtype == "float32" for weight in model.weights)
        assert model.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # the run restored it


# --- determinism and the TensorFlow-free run folder ------------------------------------


def _same_weights(first: Path, second: Path) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(model_weights(first), model_weights(second)))


@pytest.mark.slow
def test_deterministic_runs_give_identical_weights(phantom_dir, split_file, stack_dir, tmp_path):
    # Everything random is drawn: initial weights, augmentation, data order and, in
    # Pix2Pix, dropout. A third run with another seed must differ, or the comparison
    # could not fail. (On CPU TensorFlow's kernels are deterministic even without the
    # option; the op determinism it switches on matters on GPUs.)
    unet = dict(split_file=split_file, label="zones", epochs=2, steps_per_epoch=3, augment=True,
                deterministic=True, **TINY_UNET)
    ids = sorted(path.name for path in stack_dir.iterdir())
    pix2pix_split = PatientSplit(train=ids[:2], val=ids[2:], test=(), seed=None).to_json(tmp_path / "split.json")
    pix2pix = dict(split_file=pix2pix_split, epochs=1, batch_size=2, augment=True, deterministic=True,
                   **TINY_PIX2PIX)
    for train, make_config, data_dir, settings in ((train_unet, UNetTrainingConfig, phantom_dir, unet),
                                                   (train_pix2pix, Pix2PixTrainingConfig, stack_dir, pix2pix)):
        first, second, other_seed = (
            train(make_config(data_dir, tmp_path / f"{make_config.KIND}-{name}", **settings, seed=seed))
            for name, seed in (("first", 0), ("second", 0), ("other", 1))
        )
        assert _same_weights(first.model_path, second.model_path), make_config.KIND
        assert not _same_weights(first.model_path, other_seed.model_path), make_config.KIND
    assert load_config(tmp_path / "unet-first" / "config.json").deterministic is True


def test_reading_runs_does_not_start_tensorflow():
    code = ("import sys, prostseg.networks.runs; "
            "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"
