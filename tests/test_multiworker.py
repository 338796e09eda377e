"""Multi-worker training: two worker processes on this machine, talking over loopback.

Each worker runs the same Pix2Pix training with ``strategy="multiworker"`` and its own
``TF_CONFIG``; the chief (worker 0) writes the run folder, the other worker its own
folder under ``workers/``. Every process is bounded by a timeout and killed at the end.
(The U-Net trains with ``keras.Model.fit``, which Keras 3 cannot run on several workers;
it refuses the strategy, tested below.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import shutil

import pytest
from test_training import write_identity_stack

from prostseg.training import UNetTrainingConfig, read_history, train_unet

_WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    from prostseg.training import Pix2PixTrainingConfig, train_pix2pix

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


@pytest.mark.slow
def test_two_workers_train_one_pix2pix(phantom_dir, tmp_path):
    data_dir = tmp_path / "data"
    for case_id in ("phantom-000", "phantom-001"):
        shutil.copytree(phantom_dir / case_id, data_dir / case_id)
        write_identity_stack(data_dir / case_id)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    out = tmp_path / "run"
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
            processes.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER_SCRIPT, str(data_dir), str(out)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            ))
        outputs = [process.communicate(timeout=_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "REPLICAS 2" in stdout
    assert (out / "generator.keras").is_file()
    assert len(read_history(out / "history.csv")) == 1
    assert (out / "workers" / "worker-1" / "generator.keras").is_file()
    assert sorted(path.name for path in (out / "workers").iterdir()) == ["worker-1"]


def test_unet_refuses_multiworker_with_the_reason(phantom_dir, tmp_path):
    config = UNetTrainingConfig(phantom_dir, tmp_path / "run", strategy="multiworker")
    with pytest.raises(ValueError, match="keras-team/keras#20585"):
        train_unet(config)
    assert not (tmp_path / "run").exists()
