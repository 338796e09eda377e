"""Training checkpoints that survive a crash at any instant: published whole, checked on resume.

A run keeps its ``tf.train`` checkpoints (models, optimisers, epoch counter) in
``OUTPUT_DIR/checkpoints``, one folder each, named by the epochs done::

    checkpoints/
      checkpoint     TensorFlow's list of them (tf.train.latest_checkpoint reads it)
      ckpt-4/        ckpt.index, ckpt.data-00000-of-00001
      ckpt-5/        the newest two are kept

:func:`save_checkpoint` writes a checkpoint into a temporary folder, flushes it to disk
and renames the folder into place (:func:`prostseg.atomic.atomic_path`); only then does
it remove the older checkpoints and rewrite the list. A process killed at any instant
therefore leaves every published checkpoint whole.

:func:`restore_checkpoint` takes the newest checkpoint that reads back intact: every
tensor is read and its checksum compared before anything is restored. A checkpoint
damaged after it was published (a file missing, truncated or overwritten: a full disk,
a copy cut short, a failing drive) is skipped, with one line on standard error naming it
and the reason, and the one before it is used.

The best model of a run follows the same rule: :func:`set_aside_best` keeps the model of
a new best epoch in the checkpoint folder, and :func:`promote_best` moves it into place
(``best.keras``) only once a checkpoint covers that epoch. A resumed run, which repeats
the epochs after its checkpoint and drops their history rows, therefore never keeps a
best model of an epoch that is no longer in the history.

Examples
--------
>>> import tempfile
>>> import tensorflow as tf
>>> folder = tempfile.mkdtemp()
>>> counter = tf.Variable(0)
>>> checkpoint = tf.train.Checkpoint(counter=counter)
>>> for epoch in (1, 2, 3):
...     _ = counter.assign(epoch)
...     _ = save_checkpoint(checkpoint, folder, epoch)
>>> [number for number, _ in published_checkpoints(folder)]
[3, 2]
>>> _ = counter.assign(0)
>>> restore_checkpoint(checkpoint, folder), int(counter.numpy())
(3, 3)
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import tensorflow as tf

from prostseg.atomic import atomic_path
from prostseg.errors import OutputError

__all__ = [
    "KEEP",
    "promote_best",
    "published_checkpoints",
    "restore_checkpoint",
    "save_checkpoint",
    "set_aside_best",
]

#: Checkpoints kept: the newest and the one before, to fall back on.
KEEP = 2
_PREFIX = "ckpt"  # file prefix inside each checkpoint folder
_STATE_FILE = "checkpoint"
# ckpt-N/ folders; ckpt-N.index files were written by tf.train.CheckpointManager
# (prostseg before checkpoints were published whole) and are still read.
_NAME = re.compile(r"ckpt-(\d+)(\.index)?")
# A best model set aside until a checkpoint covers its epoch (0-based).
_BEST = re.compile(r"best-epoch-(\d+)\.keras")


def published_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """The checkpoints in ``directory``, newest first, as ``(epochs done, prefix)``.

    The prefix is what :func:`tf.train.load_checkpoint` and
    :meth:`tf.train.Checkpoint.restore` take.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and (path.is_dir() if match[2] is None else path.is_file()):
            prefix = path / _PREFIX if match[2] is None else path.with_suffix("")
            found.append((int(match[1]), str(prefix)))
    return sorted(found, reverse=True)


def save_checkpoint(checkpoint: tf.train.Checkpoint, directory: str | os.PathLike, number: int,
                    keep: int = KEEP) -> str:
    """Publish ``checkpoint`` as ``directory/ckpt-<number>`` and keep the newest ``keep``.

    A checkpoint of the same number already there is one :func:`restore_checkpoint`
    skipped as damaged: it is replaced.

    Returns
    -------
    str
        The prefix of the new checkpoint.
    """
    directory = Path(directory)
    _delete(directory, number)
    checkpoint.save_counter.assign(number)  # saved too, as tf.train.CheckpointManager does
    try:
        with atomic_path(directory / f"ckpt-{number}") as tmp:
            checkpoint.write(str(tmp / _PREFIX))
    except tf.errors.OpError as err:  # a full disk, say: TensorFlow's error, one line
        lines = err.message.strip().splitlines()
        raise OutputError(directory / f"ckpt-{number}",
                          f"cannot write the checkpoint: {lines[0] if lines else err}") from None
    kept = published_checkpoints(directory)
    for old, _ in kept[keep:]:
        _delete(directory, old)
    prefixes = [os.path.relpath(prefix, directory) for _, prefix in reversed(kept[:keep])]
    state = [f'model_checkpoint_path: "{prefixes[-1]}"']
    state += [f'all_model_checkpoint_paths: "{prefix}"' for prefix in prefixes]
    with atomic_path(directory / _STATE_FILE) as tmp:
        tmp.write_text("\n".join(state) + "\n", encoding="utf-8")
    return str(directory / f"ckpt-{number}" / _PREFIX)


def set_aside_best(model, directory: str | os.PathLike, epoch: int) -> Path:
    """Save ``model``, the best so far after 0-based ``epoch``, until a checkpoint covers it.

    Any model set aside for an earlier epoch is dropped: this one is better.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"best-epoch-{epoch}.keras"
    with atomic_path(path) as tmp:
        model.save(tmp)
    for older in _set_aside(directory):
        if older != path:
            older.unlink()
    return path


def promote_best(directory: str | os.PathLike, best_path: str | os.PathLike,
                 epochs_done: int) -> Path | None:
    """Move the model set aside for an epoch before ``epochs_done`` to ``best_path``.

    Models set aside for later epochs (not covered by the checkpoint a run resumed
    from) are removed.

    Returns
    -------
    pathlib.Path or None
        ``best_path`` when a model was moved there.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for epoch in (2, 4):
    ...     _ = (folder / f"best-epoch-{epoch}.keras").write_text(f"epoch {epoch}")
    >>> promote_best(folder, folder / "best.keras", epochs_done=4).read_text(encoding="utf-8")
    'epoch 2'
    >>> sorted(path.name for path in folder.iterdir())
    ['best.keras']
    """
    promoted = None
    for path in _set_aside(Path(directory)):
        if int(_BEST.fullmatch(path.name)[1]) < epochs_done:
            os.replace(path, best_path)
            promoted = Path(best_path)
        else:
            path.unlink()
    return promoted


def _set_aside(directory: Path) -> list[Path]:
    """The best models set aside in ``directory``, oldest epoch first."""
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if _BEST.fullmatch(path.name)]
    return sorted(found, key=lambda path: int(_BEST.fullmatch(path.name)[1]))


def restore_checkpoint(checkpoint: tf.train.Checkpoint, directory: str | os.PathLike) -> int | None:
    """Restore the newest intact checkpoint of ``directory`` into ``checkpoint``.

    Damaged checkpoints are skipped, each with one line on standard error.

    Returns
    -------
    int or None
        The number (epochs done) of the restored checkpoint; None when there is none
        (nothing is restored then).
    """
    found = published_checkpoints(directory)
    for number, prefix in found:
        problem = _problem(prefix)
        if problem is None:
            checkpoint.restore(prefix).assert_existing_objects_matched()
            return number
        print(f"{prefix}: damaged checkpoint skipped ({problem}); trying the one before",
              file=sys.stderr, flush=True)
    if found:
        print(f"{directory}: no intact checkpoint left; training starts again from epoch 1",
              file=sys.stderr, flush=True)
    return None


def _problem(prefix: str) -> str | None:
    """None when every tensor of the checkpoint reads back with its checksum, else why not."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # noqa: BLE001 - any failure to read makes the checkpoint unusable
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0] if lines else 'unreadable'}"
    return None


def _delete(directory: Path, number: int) -> None:
    """Remove checkpoint ``number`` (a folder, or the files of the older layout)."""
    folder = directory / f"ckpt-{number}"
    if folder.is_dir():
        shutil.rmtree(folder)
    for path in directory.glob(f"ckpt-{number}.*"):
        path.unlink()
