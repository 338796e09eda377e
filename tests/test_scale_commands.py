"""Chapter 12's full-size training commands run as printed, on a fresh checkout.

The ``papermill`` commands that chapter 12 prints for the full-size U-Net (chapter 7)
and Pix2Pix (chapter 10) are taken from the notebook itself
(:data:`test_printed_commands.PAPERMILL`) and run from the root of a copy of the
repository's files (what a fresh clone holds: no ``outputs/``, nothing generated), with
the package imported from that copy. Only sizes and paths are overridden: one epoch,
64-pixel slices, 4 base filters, a prepared phantom dataset for ``data_dir``, a
temporary ``output_dir``, no resume demo in chapter 7; the kernel gets two logical CPU devices (an IPython start-up
file) and ``strategy mirrored`` trains on both, as ``auto`` does on a two-GPU machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_printed_commands import PAPERMILL, ROOT, papermill_arguments

from prostseg.preparation.registration import register_dataset
from prostseg.networks.runs import read_history

FULL_SIZE = {Path(papermill_arguments(c.words)[0][0]).stem: c for c in PAPERMILL
             if c.source.startswith("book/12_scale.ipynb") and c.complete
             and papermill_arguments(c.words)[1].get("epochs") == "300"}
SMALL = {"epochs": "1", "image_size": "64", "base_filters": "4", "strategy": "mirrored"}
TWO_CPUS = textwrap.dedent(
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """
)


def _fresh_checkout(target: Path) -> Path:
    """Copy the files a clone of the repository has (tracked, or new and not ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _overridden(words: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """The command with the values of its ``-p NAME VALUE`` replaced, missing ones added."""
    words, seen = list(words), set()
    for index, word in enumerate(words[:-2]):
        if word == "-p" and words[index + 1] in values:
            seen.add(words[index + 1])
            words[index + 2] = values[words[index + 1]]
    for name in values.keys() - seen:
        words += ["-p", name, values[name]]
    return words


def test_chapter_12_prints_both_full_size_commands():
    assert set(FULL_SIZE) == {"07_train-unet", "10_train-pix2pix"}
    for command in FULL_SIZE.values():
        parameters = papermill_arguments(command.words)[1]
        assert SMALL.keys() - {"strategy"} <= parameters.keys(), command  # overrides, not additions


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the repository's files")
def test_full_size_commands_run_with_small_overrides_on_a_fresh_checkout(phantom_dir, tmp_path):
    pytest.importorskip("papermill")
    checkout = _fresh_checkout(tmp_path / "clone")
    assert not (checkout / "outputs").exists()
    registered = tmp_path / "registered"
    for case in sorted(phantom_dir.iterdir())[:3]:
        shutil.copytree(case, registered / case.name)
    register_dataset(registered, progress=False).raise_if_failed()
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-two-cpus.py").write_text(TWO_CPUS)
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONPATH": str(checkout),
           "TF_CPP_MIN_LOG_LEVEL": "2"}

    # chapter 7's resume demo is a run of its own, not part of the printed command's run
    for chapter, data_dir, model, extra in (("07_train-unet", phantom_dir, "model.keras", {"interrupt_after": "0"}),
                                            ("10_train-pix2pix", registered, "run/generator.keras", {})):
        out = tmp_path / "runs" / chapter
        values = {**SMALL, **extra, "data_dir": str(data_dir), "output_dir": str(out)}
        words = _overridden(FULL_SIZE[chapter].words, values)
        completed = subprocess.run([sys.executable, "-m", *words, "--kernel", "python3", "--no-progress-bar"],
                                   cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, f"{' '.join(words)}\n{completed.stderr[-4000:]}"
        executed = checkout / papermill_arguments(words)[0][1]
        text = "".join("".join(output.get("text", "")) for cell in json.loads(executed.read_text(encoding="utf-8"))["cells"]
                       if cell["cell_type"] == "code" for output in cell.get("outputs", []))
        assert "on 2 replica(s)" in text, chapter
        assert (out / model).is_file()
        history = out / model.replace(Path(model).name, "history.csv")
        assert [row["epoch"] for row in read_history(history)] == [0]
