"""The gland masks of the shipped real cases, and the TAPS pipeline that made them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from prostseg.networks import metrics
from prostseg.book.data import REAL_DATA_ENV, SAMPLE_DIR, real_data
from prostseg.data.dataset import find_case
from prostseg.data.io import check_same_grid, load_volume
from prostseg.use.postprocessing import component_sizes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_sample_glands  # noqa: E402
import taps_gland  # noqa: E402

CASES = ("ProstateX-0000", "ProstateX-0101", "ProstateX-0152", "ProstateX-0199")


def _shifted_model(path: Path, shift: float) -> Path:
    """An ONNX model whose logits are its input minus ``shift``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = ["batch", 1, 128, 128, 32]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["input", "shift"], ["output"])], "shifted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("shift", TensorProto.FLOAT, [], [shift])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_taps_pipeline_puts_the_logits_back_on_the_source_grid(tmp_path):
    """A bright off-centre blob in an LAS scan comes back where it was, at its size.

    The stand-in network returns the z-scored image minus the midpoint of the blob's and
    the background's z-scores, so its logits change sign on the blob's surface.
    """
    shape, spacing = (200, 170, 24), (0.55, 0.55, 3.0)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), axis=-1)
    blob = (((grid - [70.0, 40.0, 36.0]) / [18.0, 14.0, 24.0]) ** 2).sum(axis=-1) <= 1
    bright, dark = 400.0, 60.0
    image = np.where(blob, bright, dark).astype(np.int16)
    las = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(image[::-1], las), tmp_path / "t2w.nii.gz")  # stored Left-first on disk
    t2w = load_volume(tmp_path / "t2w.nii.gz")
    truth = t2w.data > (bright + dark) / 2
    mean, std = t2w.data.mean(), t2w.data.std()
    midpoint = ((bright - mean) / std + (dark - mean) / std) / 2

    run = taps_gland.onnx_runner(_shifted_model(tmp_path / "shifted.onnx", midpoint), threads=1)
    logits = taps_gland.gland_logits(run, t2w, flips=((), (0,)))
    mask = taps_gland.gland_mask(logits, threshold=0.5, largest_component=True)

    assert logits.shape == t2w.shape
    assert metrics.dice(mask > 0, truth) > 0.9
    assert 0.8 < mask.sum() / truth.sum() < 1.25


def test_sliding_window_covers_a_volume_larger_than_one_window():
    image = np.random.default_rng(0).normal(size=(150, 140, 40)).astype(np.float32)
    out = taps_gland.sliding_window(lambda batch: batch + 1.0, image)
    np.testing.assert_allclose(out, image + 1.0, atol=1e-5)


@pytest.mark.parametrize("case_id", CASES)
def test_every_shipped_case_has_one_plausible_gland_on_its_t2w_grid(case_id):
    case = find_case(SAMPLE_DIR / case_id, require=("t2w", "gland"))
    t2w = load_volume(case.path("t2w"))
    gland = load_volume(case.path("gland"), label=True)
    check_same_grid(t2w, gland)
    assert set(np.unique(gland.data).tolist()) == {0, 1}
    assert len(component_sizes(gland.data)) == 1
    millilitres = gland.data.sum() * np.prod(t2w.spacing) / 1000
    assert 15 < millilitres < 100


def test_the_manifest_records_the_model_that_made_the_masks():
    manifest = json.loads((ROOT / "data_manifests" / "prostatex-sample.json").read_text(encoding="utf-8"))
    (derived,) = manifest["derived"]
    assert derived["role"] == "gland" and derived["cases"] == list(CASES)
    assert derived["model"]["package"] == "lavlab-taps" and derived["model"]["licence"] == "MIT"
    assert len(derived["model"]["sha256"]) == 64
    assert derived["settings"]["threshold"] == make_sample_glands.THRESHOLD


@pytest.mark.real_data
def test_shipped_glands_agree_with_the_independent_masks(real_data_dir, tmp_path, monkeypatch):
    """The labels the book trains on against the CC BY-NC masks of two other models."""
    monkeypatch.setenv(REAL_DATA_ENV, str(real_data_dir))
    folder = real_data(tmp_path)
    for case_id in CASES:
        case = find_case(folder / case_id, require=("t2w", "gland", "zones"))
        gland = load_volume(case.path("gland"), label=True).data > 0
        zones = load_volume(case.path("zones"), label=True)
        check_same_grid(load_volume(case.path("t2w")), zones)
        reference = load_volume(case.folder / "reference" / "gland_guerbet23.nii.gz", label=True).data > 0
        assert metrics.dice(gland, zones.data > 0) > 0.8, case_id
        assert metrics.dice(gland, reference) > 0.8, case_id
