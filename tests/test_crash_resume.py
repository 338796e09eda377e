"""A training run killed at any instant resumes with nothing lost, for both models.

``prostseg train`` runs in a subprocess that is SIGKILLed at random instants (drawn
from a seeded generator) and, through a small wrapper around the command line, made to
die in the middle of writing a checkpoint. The wrapper replaces
:func:`prostseg.atomic._fsync`, which runs after an output is written and before it is
renamed into place: it cuts the half-written temporary output short and kills the
process (``FAULT=<output>:<n>`` picks the output, so any output can be tried). Between
runs the test also damages the newest published checkpoint the way a full disk or a
failing drive would (truncated data, missing index, flipped bytes). After every rerun the
history holds each epoch at most once, the rows of checkpointed epochs are never
changed, and the final run ends with epochs 1..N exactly once and loadable models.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_training import write_identity_stack

from prostseg.training.checkpoints import published_checkpoints
from prostseg.use.inference import load_model
from prostseg.networks.runs import Pix2PixTrainingConfig, read_history
from prostseg.preparation.splits import PatientSplit

EPOCHS = 8
_TIMEOUT_S = 240

# `python -c _RUNNER train ...`: the command line, dying while writing FAULT=<output name>:<n>
# (the n-th time this process writes that output: "history.csv:2", "ckpt-3:1", ...).
_RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import prostseg.atomic

    if os.environ.get("FAULT"):
        name, count = os.environ["FAULT"].rsplit(":", 1)
        real, writes = prostseg.atomic._fsync, []

        def dying_fsync(path):
            path = Path(path)
            if path.name.startswith(f".{name}."):
                writes.append(path)
                if len(writes) == int(count):
                    files = sorted(path.rglob("*")) if path.is_dir() else [path]
                    victim = max((p for p in files if p.is_file()), key=lambda p: p.stat().st_size)
                    os.truncate(victim, victim.stat().st_size // 2)  # killed half-way through
                    os.kill(os.getpid(), signal.SIGKILL)
            real(path)

        prostseg.atomic._fsync = dying_fsync

    from prostseg.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _damage(prefix: str, how: str) -> None:
    """Damage a published checkpoint as a full disk, a cut copy or a bad drive would."""
    data = Path(prefix + ".data-00000-of-00001")
    if how == "truncate":
        os.truncate(data, data.stat().st_size // 3)
    elif how == "no index":
        Path(prefix + ".index").unlink()
    else:  # flipped bytes in the middle of the tensors
        content = bytearray(data.read_bytes())
        middle = len(content) // 2
        content[middle:middle + 16] = bytes(255 - b for b in content[middle:middle + 16])
        data.write_bytes(bytes(content))


class _Run:
    """One training command, started again and again on the same output folder."""

    def __init__(self, args: list[str], out: Path, log_dir: Path):
        self.args, self.out, self.log_dir, self.starts = args, out, log_dir, 0
        self.history = out / "history.csv"

    def start(self, fault: str | None = None) -> subprocess.Popen:
        self.starts += 1
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FAULT": fault or ""}
        self.stdout = self.log_dir / f"stdout-{self.starts}.txt"
        self.stderr = self.log_dir / f"stderr-{self.starts}.txt"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            return subprocess.Popen([sys.executable, "-c", _RUNNER, *self.args], stdout=out, stderr=err,
                                    env=env)

    def wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    def epochs_printed(self) -> int:
        return sum(line.startswith("epoch ") for line in self.stdout.read_text(encoding="utf-8").splitlines())

    def _wait_for_epochs(self, process: subprocess.Popen, count: int) -> float:
        deadline = time.monotonic() + _TIMEOUT_S
        while process.poll() is None and self.epochs_printed() < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return time.monotonic()

    def kill_at_random(self, rng: np.random.Generator) -> bool:
        """Start, time the second epoch, SIGKILL at a random instant of the next few (at
        most those left); True when the kill landed while the run was still going."""
        process = self.start()
        first = self._wait_for_epochs(process, 1)
        epoch = self._wait_for_epochs(process, 2) - first
        left = EPOCHS - len(self.epochs())
        time.sleep(rng.uniform(0.0, epoch * min(3, max(left, 0.5))))
        landed = process.poll() is None
        process.send_signal(signal.SIGKILL)
        self.wait(process)
        return landed

    def epochs(self) -> list[int]:
        return [row["epoch"] for row in read_history(self.history)] if self.history.exists() else []


def _intact_checkpoint_epochs(out: Path, damaged: set[str]) -> int:
    """Epochs done of the checkpoint a rerun must resume from (0 when none)."""
    return next((number for number, prefix in published_checkpoints(out / "checkpoints")
                 if prefix not in damaged), 0)


def _crash_and_resume(run: _Run, rng: np.random.Generator, model_files: tuple[str, str]) -> None:
    kept_rows: dict[int, dict] = {}  # rows of checkpointed epochs: no rerun may change them
    damaged: set[str] = set()

    def check_history():
        epochs = run.epochs()
        assert epochs == list(range(len(epochs))), f"history after start {run.starts}: {epochs}"
        rows = {row["epoch"]: row for row in read_history(run.history)} if epochs else {}
        for epoch, row in kept_rows.items():
            assert epoch in rows and rows[epoch] == pytest.approx(row, nan_ok=True), f"lost epoch {epoch}"
        done = _intact_checkpoint_epochs(run.out, damaged)
        kept_rows.update({epoch: row for epoch, row in rows.items() if epoch < done})

    def damage_newest(how: str) -> str:
        number, prefix = published_checkpoints(run.out / "checkpoints")[0]
        _damage(prefix, how)
        damaged.add(prefix)
        done = _intact_checkpoint_epochs(run.out, damaged)  # the epochs after it are trained again
        for epoch in [epoch for epoch in kept_rows if epoch >= done]:
            del kept_rows[epoch]
        return f"ckpt-{number}"

    def rerun(fault: str, skipped: str):
        code = run.wait(run.start(fault=fault))
        assert code == (-signal.SIGKILL if fault else 0), run.stderr.read_text(encoding="utf-8")[-3000:]
        assert f"{skipped}/ckpt: damaged checkpoint skipped" in run.stderr.read_text(encoding="utf-8")
        check_history()

    kills = run.kill_at_random(rng)
    check_history()
    # a damaged newest checkpoint; death half-way through writing one of the next two
    skipped = damage_newest(rng.choice(["truncate", "no index", "flipped bytes"]))
    resumed = _intact_checkpoint_epochs(run.out, damaged)
    rerun(f"ckpt-{min(resumed + rng.integers(1, 3), EPOCHS)}:1", skipped=skipped)
    kills += run.kill_at_random(rng)
    check_history()
    rerun("", skipped=damage_newest("truncate"))
    assert kills == 2, "the random kills missed the training"

    assert run.epochs() == list(range(EPOCHS))
    for name in model_files:
        assert load_model(run.out / name).count_params() > 0
    assert not list(run.out.rglob(".*.tmp*")), "temporary outputs left behind"
    assert [number for number, _ in published_checkpoints(run.out / "checkpoints")] == [EPOCHS, EPOCHS - 1]


@pytest.mark.slow
def test_unet_survives_kills_at_random_instants(phantom_dir, tmp_path):
    ids = sorted(path.name for path in phantom_dir.iterdir() if path.is_dir())
    split = PatientSplit(train=ids[:2], val=ids[2:3], test=ids[3:], seed=None).to_json(tmp_path / "split.json")
    out = tmp_path / "run"
    args = ["train", "unet", "--data-dir", str(phantom_dir), "--out", str(out), "--split-file", str(split),
            "--epochs", str(EPOCHS), "--image-size", "32", "--base-filters", "4", "--depth", "2",
            "--batch-size", "4", "--steps-per-epoch", "3", "--label", "zones", "--verbose", "2"]
    run = _Run(args, out, tmp_path)
    _crash_and_resume(run, np.random.default_rng(11), ("model.keras", "best.keras"))


@pytest.mark.slow
def test_pix2pix_survives_kills_at_random_instants(phantom_dir, tmp_path):
    data_dir = tmp_path / "data"
    ids = sorted(path.name for path in phantom_dir.iterdir() if path.is_dir())[:3]
    for case_id in ids:
        shutil.copytree(phantom_dir / case_id, data_dir / case_id)
        write_identity_stack(data_dir / case_id)
    split = PatientSplit(train=ids[:2], val=ids[2:], test=(), seed=None).to_json(tmp_path / "split.json")
    out = tmp_path / "run"
    config = Pix2PixTrainingConfig(data_dir, out, split_file=split, epochs=EPOCHS, image_size=32, base_filters=4,
                                   discriminator_filters=4, batch_size=2, cache=True, verbose=2)
    run = _Run(["train", "pix2pix", "--config", str(config.to_json(tmp_path / "config.json"))], out, tmp_path)
    _crash_and_resume(run, np.random.default_rng(12), ("generator.keras", "best_generator.keras"))
