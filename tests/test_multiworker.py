"""Multi-worker training: two worker processes on this machine, talking over loopback.

Each worker runs the same training with ``strategy="multiworker"`` and its own
``TF_CONFIG``; the chief (worker 0) writes the run folder, the other worker its own
folder under ``workers/``. Every process is bounded by a timeout and killed at the end.
The U-Net run is killed (SIGKILL), its newest checkpoint damaged, and resumed: every
worker must skip that checkpoint for the one before it, and the history must end with
every epoch exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from test_training import write_identity_stack

from prostseg.networks.runs import read_history

_WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    from prostseg.training.loop import Pix2PixTrainingConfig, train_pix2pix

    data_dir, out = sys.argv[1], sys.argv[2]
    result = train_pix2pix(Pix2PixTrainingConfig(
        data_dir, out, image_size=32, base_filters=4, discriminator_filters=4, batch_size=2, epochs=1,
        val_fraction=0.5, test_fraction=0.0, strategy="multiworker", verbose=0,
    ))
    print("REPLICAS", result.num_replicas, result.output_dir)
    """
)

_TIMEOUT_S = 240


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_workers(script: str, args: list[str]) -> list[subprocess.Popen]:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ))
    return processes


def _finish(processes: list[subprocess.Popen], timeout: float = _TIMEOUT_S) -> list[tuple[str, str]]:
    try:
        return [process.communicate(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.mark.slow
def test_two_workers_train_one_pix2pix(phantom_dir, tmp_path):
    data_dir = tmp_path / "data"
    for case_id in ("phantom-000", "phantom-001"):
        shutil.copytree(phantom_dir / case_id, data_dir / case_id)
        write_identity_stack(data_dir / case_id)
    out = tmp_path / "run"
    processes = _start_workers(_WORKER_SCRIPT, [str(data_dir), str(out)])
    outputs = _finish(processes)

    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "REPLICAS 2" in stdout
    assert (out / "generator.keras").is_file()
    assert len(read_history(out / "history.csv")) == 1
    assert (out / "workers" / "worker-1" / "generator.keras").is_file()
    assert sorted(path.name for path in (out / "workers").iterdir()) == ["worker-1"]


_UNET_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from prostseg.training.loop import UNetTrainingConfig, train_unet

    class KillAfter(keras.callbacks.Callback):  # SIGKILL the chief after a history row
        def on_epoch_end(self, epoch, logs=None):
            if epoch == int(os.environ.get("KILL_AFTER_EPOCH", "-1")):
                os.kill(os.getpid(), signal.SIGKILL)

    data_dir, out = sys.argv[1], sys.argv[2]
    result = train_unet(UNetTrainingConfig(
        data_dir, out, image_size=32, base_filters=4, depth=2, batch_size=2, epochs=4, steps_per_epoch=3,
        label="zones", val_fraction=0.34, test_fraction=0.0, strategy="multiworker",
        verbose=0,
    ), callbacks=[KillAfter()])
    print("REPLICAS", result.num_replicas, result.global_batch_size, result.epochs_completed)
    """
)


@pytest.mark.slow
def test_two_workers_train_a_unet_killed_and_resumed(phantom_dir, tmp_path):
    out = tmp_path / "run"
    # The chief dies after epoch 2 (0-based) and its checkpoint; the other worker waits
    # for it and is killed too.
    os.environ["KILL_AFTER_EPOCH"] = "2"
    try:
        processes = _start_workers(_UNET_SCRIPT, [str(phantom_dir), str(out)])
    finally:
        del os.environ["KILL_AFTER_EPOCH"]
    deadline = time.monotonic() + _TIMEOUT_S
    while processes[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)
    _finish(processes)
    assert processes[0].returncode == -signal.SIGKILL
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [0, 1, 2]
    assert not (out / "model.keras").exists()
    # A damaged newest checkpoint (cut short): both workers resume from ckpt-2.
    newest = out / "checkpoints" / "ckpt-3" / "ckpt.data-00000-of-00001"
    os.truncate(newest, newest.stat().st_size // 2)

    processes = _start_workers(_UNET_SCRIPT, [str(phantom_dir), str(out)])
    outputs = _finish(processes)
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "REPLICAS 2 4 4" in stdout
        assert "ckpt-3/ckpt: damaged checkpoint skipped" in stderr
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [0, 1, 2, 3]
    assert (out / "model.keras").is_file() and (out / "best.keras").is_file()
    assert (out / "workers" / "worker-1" / "model.keras").is_file()
