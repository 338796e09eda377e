"""Whole-volume inference time and elastix registration time per case.

* **Inference** -- :func:`prostseg.use.inference.predict_volume` with the default U-Net
  (384 x 384, base 32 filters, depth 4; random weights, which cost the same as trained
  ones) on a 384 x 384 x 19 volume: the first call in the process (builds the predict
  function) and warm calls.
* **Registration** -- :func:`prostseg.preparation.registration.register_case` (rigid + affine
  mutual-information registration of ADC onto T2W, DWI resampled with the same
  transform, stack written) on a *copy* of a phantom case and, with
  ``PROSTSEG_REAL_DATA`` set, on a copy of ``prostatex-mpmri/ProstateX-0000`` in a
  temporary folder (the data folder is never written). Each case runs in a fresh
  process: the first call includes loading ITK/elastix; warm calls repeat it with
  ``overwrite=True``. ``import_s`` is the time to import :mod:`prostseg.preparation.registration`.

Run::

    .venv/bin/python benchmarks/inference_registration.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "inference_registration"


def inference(size: int, depth_z: int, base_filters: int, depth: int, warm_repeats: int) -> dict:
    import keras
    import numpy as np

    from prostseg.use.inference import predict_volume
    from prostseg.networks.models import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet((size, size, 1), base_filters=base_filters, depth=depth)
    volume = np.random.default_rng(0).random((size, size, depth_z), dtype=np.float32)
    first, labels = common.timed(lambda: predict_volume(model, volume))
    warm = common.repeat_timed(lambda: predict_volume(model, volume), warm_repeats)
    stats = common.summary(warm)
    return {"volume_shape": [size, size, depth_z], "base_filters": base_filters, "depth": depth,
            "output_dtype": str(labels.dtype), "first_call_s": first, "warm": stats,
            "slices_per_s_warm": depth_z / stats["median_s"]}


def registration_child(case_dir: Path, warm_repeats: int) -> None:
    started = time.perf_counter()
    from prostseg.preparation.registration import register_case

    import_s = time.perf_counter() - started
    out_dir = case_dir / "aligned"
    first, _ = common.timed(lambda: register_case(case_dir, out_dir=out_dir))
    report = json.loads((out_dir / "registration.json").read_text(encoding="utf-8"))
    warm = common.repeat_timed(lambda: register_case(case_dir, out_dir=out_dir, overwrite=True), warm_repeats)
    common.child_answer({"import_s": import_s, "first_call_s": first, "warm": common.summary(warm),
                         "registration_json": report})


def registration(source: Path, label: str, warm_repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        case_dir = Path(folder) / source.name
        shutil.copytree(source, case_dir, ignore=shutil.ignore_patterns("aligned"))
        answer = common.run_child([__file__, "--child", str(case_dir), str(warm_repeats)])
    report = answer.pop("registration_json")
    return {"case": label, **answer,
            "mi": {modality: {k: report[modality][k] for k in ("mi_before", "mi_after")}
                   for modality in ("adc", "dwi")}}


def main(argv=None) -> int:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    info = common.machine_info()
    if args.quick:
        s = dict(size=32, slices=3, base_filters=4, depth=2, infer_repeats=1, phantom_shape=(48, 48, 8),
                 phantom_spacing=(2.0, 2.0, 4.0), reg_repeats=1)
    else:
        s = dict(size=384, slices=19, base_filters=32, depth=4, infer_repeats=2, phantom_shape=(384, 384, 19),
                 phantom_spacing=(0.5, 0.5, 3.0), reg_repeats=2)
    infer = inference(s["size"], s["slices"], s["base_filters"], s["depth"], s["infer_repeats"])

    from prostseg.data.phantom import write_phantom_dataset

    registrations = []
    with tempfile.TemporaryDirectory() as folder:
        (case,) = write_phantom_dataset(Path(folder), n_cases=1, seed=0, shape=s["phantom_shape"],
                                        spacing=s["phantom_spacing"])
        label = f"phantom {'x'.join(map(str, s['phantom_shape']))}"
        registrations.append(registration(case, label, s["reg_repeats"]))
    real = common.real_data_dir()
    if real is not None:
        registrations.append(registration(real / "prostatex-mpmri" / "ProstateX-0000",
                                          "ProstateX-0000 (copy)", s["reg_repeats"]))

    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": s,
               "inference": infer, "registration": registrations}
    md = [common.heading("Inference and registration", info, args.quick),
          common.table(["inference (predict_volume)", "first call s", "warm s (median)", "slices/s warm"],
                       [[f"U-Net base {s['base_filters']} depth {s['depth']}, volume "
                         f"{'x'.join(map(str, infer['volume_shape']))}", infer["first_call_s"],
                         infer["warm"]["median_s"], infer["slices_per_s_warm"]]]),
          "",
          common.table(["registration (register_case)", "import s", "first call s (fresh process)",
                        "warm s (median)", "MI ADC before -> after", "MI DWI before -> after"],
                       [[r["case"], r["import_s"], r["first_call_s"], r["warm"]["median_s"],
                         f"{r['mi']['adc']['mi_before']} -> {r['mi']['adc']['mi_after']}",
                         f"{r['mi']['dwi']['mi_before']} -> {r['mi']['dwi']['mi_after']}"]
                        for r in registrations]),
          ""]
    common.write_results(args.out, NAME, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        registration_child(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
