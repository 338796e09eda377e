"""Make the real training cases that ship with prostseg: T2W crops and TAPS gland masks.

For each ProstateX case of :data:`CASES` this script

1. reads its axial T2W scan: ProstateX-0000 from ``prostseg/sample_data`` (shipped
   unmodified), the others from ``--source`` (ProstateX NIfTI files, CC BY 3.0);
2. segments the whole gland with TAPS (``lavlab-taps`` on the package index, MIT
   licence; :mod:`taps_gland` runs its ONNX weights with onnxruntime) on the full scan:
   the mean of the logits of the scan and its left-right mirror image, thresholded at
   :data:`THRESHOLD`, the largest connected component kept;
3. for the cases from ``--source``, cuts the scan in-plane to :data:`CROP_VOXELS`
   voxels square around the gland (every slice kept) with nibabel's ``slicer``, which
   keeps the affine exact, so that all real data that ships stays under 8 MB;
4. writes ``CASE/t2w.nii.gz`` (the crop) and ``CASE/gland.nii.gz`` (uint8 0/1 on the
   T2W grid) into ``--out``, every file atomically, and ``SHA256SUMS`` for every
   shipped file;
5. records the model (name, version, licence, wheel and weight SHA-256), the settings
   and the crops under ``derived`` in ``data_manifests/prostatex-sample.json``.

The TAPS wheel (74 MB) is downloaded with pip into a temporary folder unless
``--taps-wheel`` names a copy. With ``PROSTSEG_REAL_DATA`` set, the script also prints
the agreement of every mask with the independent masks of that folder (zone maps and
two other published models' glands, CC BY-NC, never shipped).

Run from the repository root::

    python scripts/make_sample_glands.py --source ../shared/data/prostatex-t2w-lesion [--taps-wheel W] [--overwrite]

The masks are model output, not expert delineations: the book prints how well they
agree with the independent masks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

import taps_gland
from prostseg.networks import metrics
from prostseg.atomic import atomic_path
from prostseg.data.io import Volume, crop_to_grid, load_volume, save_like

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "prostseg" / "sample_data"
MANIFEST = ROOT / "data_manifests" / "prostatex-sample.json"
TAPS_PACKAGE = "lavlab-taps"
TAPS_VERSION = "1.1.2"
TAPS_WEIGHTS = "taps/resources/model_v1.onnx"
#: ProstateX-0000 ships already (unmodified); the others come from ``--source``.
SHIPPED_CASE = "ProstateX-0000"
CASES = (SHIPPED_CASE, "ProstateX-0101", "ProstateX-0152", "ProstateX-0199")
#: Chosen against the independent masks of all four cases (see the manifest's note).
THRESHOLD = 0.4
FLIPS = ((), (0,))
CROP_VOXELS = 224


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def taps_weights(wheel: Path | None, work: Path) -> tuple[Path, str]:
    """The ONNX weights extracted from the TAPS wheel, and the wheel's SHA-256."""
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(work),
                        f"{TAPS_PACKAGE}=={TAPS_VERSION}"], check=True)
        wheel = next(work.glob("lavlab_taps-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(TAPS_WEIGHTS, work)
    return work / TAPS_WEIGHTS, sha256(wheel)


def crop_box(mask_source_order: np.ndarray, size: int) -> tuple[slice, slice]:
    """An in-plane square of ``size`` voxels centred on the mask's bounding box."""
    found = np.argwhere(mask_source_order)
    centre = (found.min(axis=0) + found.max(axis=0)) // 2
    starts = [int(np.clip(c - size // 2, 0, n - size)) for c, n in zip(centre[:2], mask_source_order.shape[:2])]
    return tuple(slice(s, s + size) for s in starts)


def write_case(case_id: str, t2w_path: Path, run, out: Path, overwrite: bool) -> dict:
    """Segment one scan, crop it when it is not the shipped study, write both files."""
    t2w = load_volume(t2w_path)
    mask = taps_gland.gland_mask(taps_gland.gland_logits(run, t2w, flips=FLIPS), threshold=THRESHOLD,
                                 largest_component=True)
    case_dir = out / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    record = {"case": case_id, "source_t2w_sha256": sha256(t2w_path)}
    if case_id != SHIPPED_CASE:
        image = nib.load(t2w_path)
        box = crop_box(t2w.to_source(mask), CROP_VOXELS)
        target = case_dir / "t2w.nii.gz"
        if target.exists() and not overwrite:
            raise SystemExit(f"{target}: exists; pass --overwrite to replace it")
        with atomic_path(target) as tmp:
            nib.save(image.slicer[box[0], box[1], :], tmp)
        record["crop"] = {"source_shape": list(image.shape), "voxels": [[b.start, b.stop] for b in box]}
        cropped = load_volume(target)
        mask = crop_to_grid(Volume(mask, t2w.affine), cropped)
        t2w = cropped
    save_like(mask.astype(np.uint8), t2w, case_dir / "gland.nii.gz", overwrite=overwrite)
    record["gland_ml"] = round(float(mask.sum() * np.prod(t2w.spacing) / 1000), 1)
    return record


def agreement(case_dir: Path, real_data: Path) -> dict[str, float]:
    """Dice of the shipped gland with each independent gland of the real-data folder."""
    gland = load_volume(case_dir / "gland.nii.gz", label=True)
    for dataset in ("prostatex-mpmri-zones", "prostatex-t2w-zones"):
        folder = real_data / dataset / case_dir.name
        if folder.is_dir():
            break
    else:
        return {}
    scores = {}
    for name in ("zones.nii.gz", "reference/gland_guerbet23.nii.gz", "reference/zones_heviai23.nii.gz"):
        reference = load_volume(folder / name, label=True)
        scores[name] = metrics.dice(gland.data > 0, crop_to_grid(reference, gland) > 0)
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="folder of ProstateX case folders holding t2w.nii.gz (the uncropped scans)")
    parser.add_argument("--taps-wheel", type=Path, help=f"a downloaded {TAPS_PACKAGE} {TAPS_VERSION} wheel")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help="where the case folders go")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        weights, wheel_sha = taps_weights(args.taps_wheel, Path(work))
        weights_sha = sha256(weights)
        run = taps_gland.onnx_runner(weights, threads=args.threads)
        records = []
        for case_id in CASES:
            source = SAMPLE_DIR / case_id / "t2w.mha" if case_id == SHIPPED_CASE else args.source / case_id / "t2w.nii.gz"
            records.append(write_case(case_id, source, run, args.out, args.overwrite))
            print(json.dumps(records[-1]), flush=True)
    shipped = sorted(p.relative_to(args.out).as_posix() for p in args.out.glob("*/*") if p.is_file())
    with atomic_path(args.out / "SHA256SUMS") as tmp:
        tmp.write_text("".join(f"{sha256(args.out / name)}  {name}\n" for name in shipped), encoding="utf-8")
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    manifest["derived"] = [{
        "role": "gland",
        "cases": list(CASES),
        "model": {"name": "TAPS", "package": TAPS_PACKAGE, "version": TAPS_VERSION, "licence": "MIT",
                  "url": "https://pypi.org/project/lavlab-taps/", "file": TAPS_WEIGHTS,
                  "sha256": weights_sha, "wheel_sha256": wheel_sha},
        "settings": {"spacing_mm": list(taps_gland.TAPS_SPACING), "window": list(taps_gland.TAPS_WINDOW),
                     "overlap": taps_gland.TAPS_OVERLAP, "logit_sigma": taps_gland.TAPS_LOGIT_SIGMA,
                     "normalisation": "z-score over non-zero voxels", "test_time_flips": [list(f) for f in FLIPS],
                     "threshold": THRESHOLD, "largest_component": True, "crop_voxels": CROP_VOXELS},
        "cases_made": records,
        "note": "Made by scripts/make_sample_glands.py. Model output, not expert delineations.",
    }]
    with atomic_path(MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    real = os.environ.get("PROSTSEG_REAL_DATA")
    if real:
        for case_id in CASES:
            scores = agreement(args.out / case_id, Path(real))
            print(case_id, " ".join(f"{name}: {dice:.3f}" for name, dice in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
