"""Checkpoints are published whole and a damaged one is skipped for the one before it."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import prostseg.atomic
from prostseg.atomic import remove_leftovers
from prostseg.training.checkpoints import (
    promote_best,
    published_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    set_aside_best,
)
from prostseg.errors import OutputError


@pytest.fixture()
def state():
    """A checkpoint of a counter and a vector that says which epoch saved it."""
    counter, weights = tf.Variable(0), tf.Variable(np.zeros(5000, np.float32))
    return counter, weights, tf.train.Checkpoint(counter=counter, weights=weights)


def _save_epochs(state, folder: Path, epochs) -> None:
    counter, weights, checkpoint = state
    for epoch in epochs:
        counter.assign(epoch)
        weights.assign(np.full(5000, epoch, np.float32))
        save_checkpoint(checkpoint, folder, epoch)


def _damage(prefix: str, how: str) -> None:
    data = Path(prefix + ".data-00000-of-00001")
    if how == "truncated":
        os.truncate(data, data.stat().st_size // 2)
    elif how == "no data":
        data.unlink()
    elif how == "no index":
        Path(prefix + ".index").unlink()
    elif how == "corrupt index":
        Path(prefix + ".index").write_bytes(b"\0" * 64)
    else:  # flipped bytes
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 0xFF
        data.write_bytes(bytes(content))


def test_the_newest_two_are_kept_and_listed_for_tensorflow(state, tmp_path):
    _save_epochs(state, tmp_path, [1, 2, 3])
    assert [number for number, _ in published_checkpoints(tmp_path)] == [3, 2]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "ckpt-2", "ckpt-3"]
    assert tf.train.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-3" / "ckpt")
    assert tf.train.get_checkpoint_state(tmp_path).all_model_checkpoint_paths == [
        str(tmp_path / "ckpt-2" / "ckpt"), str(tmp_path / "ckpt-3" / "ckpt")]


@pytest.mark.parametrize("how", ["truncated", "no data", "no index", "corrupt index", "flipped bytes"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(state, tmp_path, capsys, how):
    counter, weights, checkpoint = state
    _save_epochs(state, tmp_path, [1, 2])
    _damage(str(tmp_path / "ckpt-2" / "ckpt"), how)
    counter.assign(99)
    assert restore_checkpoint(checkpoint, tmp_path) == 1
    assert int(counter.numpy()) == 1 and np.all(weights.numpy() == 1)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"{tmp_path / 'ckpt-2' / 'ckpt'}: damaged checkpoint skipped (")
    # the next save of epoch 2 replaces the damaged one
    _save_epochs(state, tmp_path, [2])
    assert restore_checkpoint(checkpoint, tmp_path) == 2 and not capsys.readouterr().err


def test_without_an_intact_checkpoint_nothing_is_restored(state, tmp_path, capsys):
    counter, weights, checkpoint = state
    assert restore_checkpoint(checkpoint, tmp_path / "none") is None
    _save_epochs(state, tmp_path, [1, 2])
    for number in (1, 2):
        _damage(str(tmp_path / f"ckpt-{number}" / "ckpt"), "truncated")
    counter.assign(7)
    assert restore_checkpoint(checkpoint, tmp_path) is None
    assert int(counter.numpy()) == 7
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{tmp_path}: no intact checkpoint left; training starts again from epoch 1")


def test_a_kill_during_a_write_leaves_the_published_checkpoints_whole(state, tmp_path, monkeypatch):
    counter, weights, checkpoint = state
    _save_epochs(state, tmp_path, [1, 2])

    def killed(path):  # the process dies after writing half of the new checkpoint
        data = next(Path(path).glob("*.data-*"))
        os.truncate(data, data.stat().st_size // 2)
        raise SystemExit("killed")

    monkeypatch.setattr(prostseg.atomic, "_fsync", killed)
    with pytest.raises(SystemExit):
        _save_epochs(state, tmp_path, [3])
    monkeypatch.undo()
    assert [number for number, _ in published_checkpoints(tmp_path)] == [2, 1]
    assert restore_checkpoint(checkpoint, tmp_path) == 2


def test_leftovers_of_a_killed_write_are_removed(tmp_path):
    staging = tmp_path / ".ckpt-3.ab12cd_3.tmp"
    staging.mkdir()
    (staging / "ckpt.index").write_bytes(b"half")
    (tmp_path / ".history.csv.zz9_ab01.tmp.csv").write_text("half")
    (tmp_path / "ckpt-2").mkdir()
    (tmp_path / ".hidden").write_text("not ours")
    removed = remove_leftovers(tmp_path)
    assert sorted(path.name for path in removed) == [".ckpt-3.ab12cd_3.tmp", ".history.csv.zz9_ab01.tmp.csv"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".hidden", "ckpt-2"]


def test_checkpoints_of_the_older_layout_are_read(state, tmp_path):
    counter, weights, checkpoint = state
    counter.assign(4)
    manager = tf.train.CheckpointManager(checkpoint, tmp_path, max_to_keep=2)
    manager.save(checkpoint_number=4)
    counter.assign(0)
    assert published_checkpoints(tmp_path) == [(4, str(tmp_path / "ckpt-4"))]
    assert restore_checkpoint(checkpoint, tmp_path) == 4 and int(counter.numpy()) == 4
    _save_epochs(state, tmp_path, [5, 6])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "ckpt-5", "ckpt-6"]


def test_a_full_disk_during_a_checkpoint_write_is_one_line_naming_the_checkpoint(tmp_path,
                                                                                 monkeypatch):
    checkpoint = tf.train.Checkpoint(counter=tf.Variable(1))

    def full_disk(prefix):
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}: No space left on device")

    monkeypatch.setattr(checkpoint, "write", full_disk)
    with pytest.raises(OutputError, match=r"ckpt-1: cannot write the checkpoint: .*No space left"):
        save_checkpoint(checkpoint, tmp_path, 1)
    assert published_checkpoints(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # no half-written folder left


def test_a_best_model_is_kept_aside_until_a_checkpoint_covers_its_epoch(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    set_aside_best(model, tmp_path, 3)
    set_aside_best(model, tmp_path, 5)  # a better one replaces it
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best-epoch-5.keras"]
    best = tmp_path / "best.keras"
    assert promote_best(tmp_path, best, epochs_done=5) is None  # resumed before epoch 5 ended
    assert not best.exists() and list(tmp_path.iterdir()) == []
    set_aside_best(model, tmp_path, 6)
    assert promote_best(tmp_path, best, epochs_done=7) == best
    assert keras.models.load_model(best).count_params() == 3
