"""Real-data report: the U-Net pipeline end to end on three real ProstateX cases, and registration.

Needs ``PROSTSEG_REAL_DATA`` (the folder described in ``../shared/data/README.md``);
nothing is written there: runs, predictions and registration copies live in a
temporary folder.

1. **Lesion U-Net, leave-one-case-out** on ``prostatex-t2w-lesion`` (3 patients,
   320 x 320 x 19 T2W, one small lesion each): for each patient, a U-Net is trained with
   :func:`prostseg.training.loop.train_unet` on the other two (split from
   :func:`prostseg.preparation.splits.leave_one_out`, written as the run's split file), the held-out
   T2W volume is segmented with :func:`prostseg.use.inference.predict_volume` and scored in
   3D with :func:`prostseg.networks.metrics.iou` / :func:`~prostseg.networks.metrics.dice`. A short CPU
   run (a small U-Net, a few minutes per fold) shows that the pipeline runs on real
   files; it is not a result.
2. **Registration** of ``prostatex-mpmri/ProstateX-0000`` (a copy):
   :func:`prostseg.preparation.registration.register_case`, mutual information with T2W before
   (header-only resampling) and after, for ADC and DWI, and the time taken.
3. **The book's models on ProstateX-0000**: chapter 7's gland U-Net and chapter 10's
   zone Pix2Pix, trained as in the chapters (``book_models.CHAPTER_7`` /
   ``CHAPTER_10``) on the tutorial phantom data, and a gland U-Net trained on phantoms
   with randomised tissue contrast (:data:`PHANTOM_TO_REAL`, three seeds), applied to a copy of
   ``prostatex-mpmri-zones/ProstateX-0000`` with
   :func:`prostseg.use.model_comparison.score_real_case` (registration included) and scored
   against its AI zone masks, beside the agreement of the two other AI models
   (:func:`prostseg.use.model_comparison.reference_agreement`).
4. **Published reference numbers**, each checked against its source (see
   ``REFERENCES``), and the command that reproduces a full-scale run on a GPU.

Writes ``real_data_report.json`` and ``real_data_report.md`` (replaced each run).

Run::

    PROSTSEG_REAL_DATA=/path/to/data .venv/bin/python benchmarks/real_data_report.py [--quick] [--out DIR]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import book_models
import common
import phantom_to_real

NAME = "real_data_report"

#: A gland U-Net trained on phantoms only, for real scans: the best recipe of
#: ``phantom_to_real.py`` (32 phantom patients, about half with random tissue contrast),
#: trained with each of :data:`PHANTOM_TO_REAL_SEEDS` (its score varies between seeds).
PHANTOM_TO_REAL = phantom_to_real.RECIPES["synthetic"]
PHANTOM_TO_REAL_SEEDS = (0, 1, 2)
#: Where the scored case lies below ``$PROSTSEG_REAL_DATA``.
ZONES_CASE = Path("prostatex-mpmri-zones") / "ProstateX-0000"

#: Published numbers, as printed in the sources (verified with the project's search tool).
REFERENCES = [
    {
        "what": "Prostate158 baseline (U-ResNet), zonal segmentation on the Prostate158 test set, "
                "against reader 1",
        "numbers": "Dice central gland (TZ + CZ) 0.877, peripheral zone 0.754, PI-RADS >= 4 lesions 0.453 "
                   "(against reader 2: 0.875 / 0.730 / 0.398). The paper's abstract rounds these to "
                   "0.88 / 0.75 / 0.45.",
        "status": "verified: grand-challenge baseline table, paper abstract, DOI from citations of the paper",
        "source": "L. C. Adams, M. R. Makowski, G. Engel, et al., K. K. Bressem. \"Prostate158 - An "
                  "expert-annotated 3T MRI dataset and algorithm for prostate cancer detection.\" "
                  "Computers in Biology and Medicine 148:105817, 2022. doi:10.1016/j.compbiomed.2022.105817; "
                  "exact figures: https://prostate158.grand-challenge.org (Baseline table)",
        "note": "Our issue's '0.877 / 0.754' are the grand-challenge table's reader-1 values; 'TZ' there is "
                "the central gland (transition + central zone).",
    },
    {
        "what": "Medical Segmentation Decathlon, Task05 Prostate (PZ and TZ, 32 training MRIs)",
        "numbers": "the sources found describe the challenge and nnU-Net's win, but none of the passages "
                   "found shows the prostate PZ/TZ Dice values, so none is printed here.",
        "status": "not verified",
        "source": "M. Antonelli, A. Reinke, S. Bakas, et al. \"The Medical Segmentation Decathlon.\" "
                  "Nature Communications 13:4128, 2022. doi:10.1038/s41467-022-30695-9; F. Isensee, "
                  "P. F. Jaeger, S. A. A. Kohl, J. Petersen, K. H. Maier-Hein. \"nnU-Net: a self-configuring "
                  "method for deep learning-based biomedical image segmentation.\" Nature Methods 18(2):203-211, "
                  "2021. doi:10.1038/s41592-020-01008-z",
        "note": "Look the numbers up in the MSD paper's results figures / nnU-Net's supplementary tables "
                "before quoting them.",
    },
    {
        "what": "PI-CAI (csPCa detection on bpMRI), nnU-Net baseline 'lesion Dice 0.474'",
        "numbers": "PI-CAI evaluates lesion *detection* (precision-recall and FROC of 3D detection maps) "
                   "and patient-level diagnosis (AUROC), not segmentation Dice; no source found reports a "
                   "lesion Dice of 0.474 for its nnU-Net baseline, so the number is not printed as a reference.",
        "status": "not verified",
        "source": "A. Saha, J. S. Bosma, J. J. Twilt, et al., H. Huisman. \"Artificial intelligence and "
                  "radiologists in prostate cancer detection on MRI (PI-CAI): an international, paired, "
                  "non-inferiority, confirmatory study.\" The Lancet Oncology (2024), 879-887. "
                  "doi:10.1016/S1470-2045(24)00220-1; task definition: https://pi-cai.grand-challenge.org/AI/",
        "note": "Do not compare a Dice with PI-CAI's detection metrics.",
    },
]

#: Full-scale reproduction: the GPU command of chapter 7 (book/07_train-unet.ipynb), lesion masks.
FULL_RUN_COMMAND = (
    "papermill --cwd book book/07_train-unet.ipynb runs/unet-prostatex.ipynb "
    "-p data_dir /data/prostatex -p output_dir ../runs/unet-prostatex "
    "-p label lesion -p loss bce_dice -p foreground_fraction 0.5 "
    "-p epochs 300 -p image_size 384 -p base_filters 32 -p depth 4 "
    "-p batch_size 16 -p learning_rate 1e-4 -p mixed_precision True"
)


def lesion_unet_loocv(data_dir: Path, work: Path, settings: dict) -> list[dict]:
    import numpy as np

    from prostseg.data.dataset import discover_cases
    from prostseg.use.inference import load_model, predict_volume
    from prostseg.data.io import load_volume
    from prostseg.networks.metrics import dice, iou, threshold_sweep
    from prostseg.preparation.slices import prepare_unet_volume, restore_unet_slices
    from prostseg.preparation.splits import leave_one_out
    from prostseg.training.loop import UNetTrainingConfig, train_unet

    cases = {case.case_id: case for case in discover_cases(data_dir, require=("t2w", "lesion"))}
    folds = []
    for split in leave_one_out(sorted(cases)):
        (held_out,) = split.test
        fold_dir = work / f"fold-{held_out}"
        split_file = split.to_json(fold_dir / "split.json")
        config = UNetTrainingConfig(
            data_dir=str(data_dir), output_dir=str(fold_dir / "run"), split_file=str(split_file),
            image_size=settings["image_size"], batch_size=settings["batch_size"], epochs=settings["epochs"],
            steps_per_epoch=settings["steps_per_epoch"], base_filters=settings["base_filters"],
            depth=settings["depth"], loss=settings["loss"], foreground_fraction=settings["foreground_fraction"],
            augment=True, learning_rate=settings["learning_rate"], seed=0, verbose=0,
        )
        train_s, result = common.timed(lambda: train_unet(config))
        model = load_model(result.model_path)
        t2w = load_volume(cases[held_out].path("t2w"))
        truth = load_volume(cases[held_out].path("lesion"), label=True).data > 0
        predict_s, labels = common.timed(lambda: predict_volume(model, t2w, threshold=0.5))
        probabilities = restore_unet_slices(
            model.predict(prepare_unet_volume(t2w, settings["image_size"]), verbose=0), t2w.shape)[..., 0]
        thresholds = np.linspace(0.1, 0.9, 9)
        sweep = threshold_sweep(probabilities, truth, thresholds)
        folds.append({
            "held_out": held_out, "train": list(split.train),
            "train_s": train_s, "predict_s": predict_s, "epochs": result.epochs_completed,
            "final_loss": result.last["loss"],
            "lesion_voxels": int(truth.sum()), "predicted_voxels": int(labels.sum()),
            "foreground_fraction_of_volume": float(truth.mean()),
            "iou": iou(labels, truth), "dice": dice(labels, truth),
            "max_probability_in_lesion": float(probabilities[truth].max()),
            "max_probability_outside": float(probabilities[~truth].max()),
            "best_threshold_iou_optimistic": float(np.max(sweep)),
            "best_threshold": float(thresholds[int(np.argmax(sweep))]),
        })
    return folds


def registration_case(source: Path, work: Path) -> dict:
    from prostseg.preparation.registration import register_case

    case_dir = work / source.name
    shutil.copytree(source, case_dir, ignore=shutil.ignore_patterns("aligned"))
    seconds, out_dir = common.timed(lambda: register_case(case_dir))
    report = json.loads((out_dir / "registration.json").read_text(encoding="utf-8"))
    return {"case": source.name, "wall_s_incl_elastix_load": seconds, "seconds_reported": report["seconds"],
            "transforms": report["transforms"], "transform_from": report["transform_from"],
            "adc": {k: report["adc"][k] for k in ("mi_before", "mi_after")},
            "dwi": {k: report["dwi"][k] for k in ("mi_before", "mi_after")},
            "mi_region": report["adc"].get("mi_region")}


def book_models_on_real_case(real: Path, work: Path, quick: bool) -> dict:
    """Train the book's models as in chapters 7 and 10 and score them on ProstateX-0000."""
    from prostseg.data import phantom
    from prostseg.training import loop as training
    from prostseg.use.model_comparison import reference_agreement, score_real_case

    data_dir, _ = book_models.prepare_data(work / "book", quick)
    unet, pix2pix = (book_models.QUICK_7, book_models.QUICK_10) if quick else (
        book_models.CHAPTER_7, book_models.CHAPTER_10)
    trained = book_models.train_book_models(0, data_dir, work / "book", unet, pix2pix, quick)
    transfer = {**PHANTOM_TO_REAL["unet"], **(phantom_to_real.QUICK_UNET if quick else {})}
    transfer_data = work / "phantom-to-real-data"
    grid = phantom_to_real.QUICK_GRID if quick else {}
    phantom.write_phantom_dataset(transfer_data, **{**PHANTOM_TO_REAL["phantom"], **grid})
    seeds = PHANTOM_TO_REAL_SEEDS[:1] if quick else PHANTOM_TO_REAL_SEEDS
    transfer_runs = {}
    for seed in seeds:
        config = training.UNetTrainingConfig(transfer_data, work / f"phantom-to-real-{seed}", label="zones",
                                             seed=seed, verbose=0, **transfer)
        transfer_runs[seed] = common.timed(lambda: training.train_unet(config))

    case_dir = work / "zones-case" / ZONES_CASE.name
    shutil.copytree(real / ZONES_CASE, case_dir, ignore=shutil.ignore_patterns("aligned"))
    seconds, book = common.timed(lambda: score_real_case(case_dir, unet_model=trained["unet_model"],
                                                         pix2pix_model=trained["pix2pix_model"]))
    rows = [{**row, "model": f"{row['model']} (chapter {7 if row['model'] == 'U-Net' else 10})"}
            for row in book.scores]
    predicted = {f"{name} (chapter {7 if name == 'U-Net' else 10})": mask for name, mask in book.predictions.items()}
    for seed, (_, result) in transfer_runs.items():
        scored = score_real_case(case_dir, unet_model=result.output_dir / "best.keras")
        name = f"U-Net, phantoms with random tissue contrast, seed {seed}"
        rows += [{**row, "model": name} for row in scored.scores]
        predicted[name] = scored.predictions["U-Net"]
    voxel_ml = float(np.prod(book.t2w.spacing)) / 1000
    return {"settings": {"chapter_7": unet, "chapter_10": pix2pix, "phantom_to_real": transfer,
                         "phantom_to_real_phantoms": PHANTOM_TO_REAL["phantom"],
                         "phantom_to_real_seeds": list(seeds)},
            "train_s": {"chapter_7": trained["unet_seconds"], "chapter_10": trained["pix2pix_seconds"],
                        "phantom_to_real": [seconds for seconds, _ in transfer_runs.values()]},
            "score_s_incl_registration": seconds,
            "predicted_ml": {name: float(mask.astype(bool).sum() * voxel_ml) for name, mask in predicted.items()},
            "reference_ml": float((book.reference > 0).sum() * voxel_ml),
            "scores": [_scored(row) for row in rows],
            "agreement": [_scored(row) for row in reference_agreement(case_dir)]}


def _scored(row: dict) -> dict:
    """The row without the zones its delineation does not have (NaN)."""
    return {key: value for key, value in row.items() if not (isinstance(value, float) and value != value)}


def real_case_section(real_case: dict) -> list[str]:
    settings, seconds = real_case["settings"], real_case["train_s"]
    zone_columns = ("whole gland", "peripheral zone", "transition zone")
    rows = [[row["model"], *(row.get(c, "-") for c in zone_columns)] for row in real_case["scores"]]
    rows += [[f"{row['reference']} (another AI model)", *(row.get(c, "-") for c in zone_columns)]
             for row in real_case["agreement"]]
    rows += [["Prostate158 baseline U-ResNet vs reader 1 (19 other patients, expert masks)", "-",
              "0.754", "0.877 (central gland)"]]
    volumes = ", ".join(f"{name} {ml:.0f} ml" for name, ml in real_case["predicted_ml"].items())
    return [
        "## 3. The book's models on ProstateX-0000",
        "",
        "Chapter 7's gland U-Net and chapter 10's zone Pix2Pix, trained exactly as in the chapters on the "
        "tutorial phantom data (6 phantom patients, split 4/1/1 with seed 0; "
        f"{seconds['chapter_7']:.0f} s and {seconds['chapter_10']:.0f} s of training), and a gland U-Net "
        f"trained on phantoms only, as `phantom_to_real.py`'s best recipe does: "
        f"{settings['phantom_to_real_phantoms']['n_cases']} phantom patients, about half of them with a random "
        "T2W level per tissue (`contrast=\"mixed\"`), chapter 7's network for "
        f"{settings['phantom_to_real']['epochs']} epochs of {settings['phantom_to_real']['steps_per_epoch']} "
        f"batches, once per training seed ({', '.join(f'{s:.0f}' for s in seconds['phantom_to_real'])} s), "
        "applied to a copy of `prostatex-mpmri-zones/ProstateX-0000` with `score_real_case` (ADC and DWI "
        f"registered onto T2W first; {real_case['score_s_incl_registration']:.0f} s with the registration). "
        "Scored with `two_zone_dice` against the case's zone masks, which a published AI model made (not "
        "radiologists); the Pix2Pix central zone and AFS count as transition zone. The rows below the models "
        "are the ceiling: how well two other published AI models agree with the same masks.",
        "",
        common.table(["delineation", "gland Dice", "PZ Dice", "TZ Dice"], rows),
        "",
        f"Gland volumes: reference {real_case['reference_ml']:.0f} ml; predicted: {volumes}.",
        "",
    ]


def markdown(results: dict) -> str:
    info, s = results["machine"], results["settings"]
    folds, reg = results["folds"], results["registration"]
    lines = [
        f"# Real-data report{' (--quick: tiny settings, not a result)' if results['quick'] else ''}",
        "",
        common.machine_line(info),
        f"Data: `$PROSTSEG_REAL_DATA/prostatex-t2w-lesion` (3 ProstateX patients) and "
        f"`prostatex-mpmri/ProstateX-0000` (registered on a temporary copy). Total run time "
        f"{results['total_s'] / 60:.1f} min (wall time; the machine's cores may be shared with other jobs, "
        f"so training times vary with its load).",
        "",
        "## 1. Lesion U-Net, leave one patient out",
        "",
        f"Per fold: train on 2 patients (38 slices), test on the third. U-Net {s['image_size']}x{s['image_size']}, "
        f"base {s['base_filters']} filters, depth {s['depth']} (the default, 32 filters, costs "
        f"{(32 / s['base_filters']) ** 2:.0f}x the compute), "
        f"{s['epochs']} epochs x {s['steps_per_epoch']} steps x batch {s['batch_size']} "
        f"(= {s['epochs'] * s['steps_per_epoch'] * s['batch_size']} slices seen), loss {s['loss']}, "
        f"foreground oversampling {s['foreground_fraction']}, flips/rotations, Adam {s['learning_rate']}, "
        f"CPU only.",
        "",
        common.table(
            ["held-out patient", "lesion voxels", "predicted voxels", "IoU (3D)", "Dice (3D)",
             "max p in lesion", "max p outside", "oracle-threshold IoU", "train s"],
            [[f["held_out"], f["lesion_voxels"], f["predicted_voxels"], f["iou"], f["dice"],
              f["max_probability_in_lesion"], f["max_probability_outside"], f["best_threshold_iou_optimistic"],
              f["train_s"]] for f in folds]),
        "",
        f"Mean Dice {results['mean_dice']:.3g}, mean IoU {results['mean_iou']:.3g} over {len(folds)} patients.",
        "",
        "**What this means.** Nothing about accuracy. Each lesion is 0.02-0.3 % of its volume "
        "(416-6437 of ~1.9 million voxels), so a network that predicts 'no lesion' everywhere is "
        "already >99.7 % accurate per voxel and scores Dice 0 here; binary cross-entropy rewards exactly "
        "that. The oversampling of lesion slices and the Dice term counter it, but two training patients "
        "are two examples of what a lesion looks like, and a few CPU-minutes of a small network is far "
        "from convergence. Dice near 0 is the expected outcome; a non-zero Dice from 3 patients would "
        "not be evidence either (one patient more or less changes the mean completely). The "
        "'oracle-threshold IoU' picks the threshold on the test patient itself and is optimistic by "
        "construction. What the run does show: the real NIfTI files (LAS orientation, int16, 0.5-0.6 mm) "
        "go through loading, patient-level splitting, training, inference and 3D scoring on their own "
        "grid without errors. For a real result train the full model on hundreds of patients on a GPU "
        "(section 4).",
        "",
        "## 2. Registration of ProstateX-0000 (ADC and DWI onto T2W)",
        "",
        common.table(["modality", "MI before (header only)", "MI after", "change"],
                     [[m.upper(), reg[m]["mi_before"], reg[m]["mi_after"],
                       f"{(reg[m]['mi_after'] - reg[m]['mi_before']) / reg[m]['mi_before']:+.1%}"]
                      for m in ("adc", "dwi")]),
        "",
        f"Transforms {', '.join(reg['transforms'])}, estimated on {reg['transform_from']} and applied to "
        f"both. Time: {reg['seconds_reported']:.3g} s reported by register_case, "
        f"{reg['wall_s_incl_elastix_load']:.3g} s wall time including the first elastix load. "
        f"MI region: {reg['mi_region']}.",
        "",
        *real_case_section(results["real_case"]),
        "## 4. Published reference numbers",
        "",
    ]
    for ref in results["references"]:
        lines += [f"- **{ref['what']}** ({ref['status']}): {ref['numbers']} Source: {ref['source']}. "
                  f"{ref['note']}"]
    lines += [
        "",
        "## 5. Reproducing a full-scale result (GPU, full dataset)",
        "",
        "With the data imported into the case layout (`prostseg` manifests, or your own folder) and a GPU:",
        "",
        f"```bash\n{FULL_RUN_COMMAND}\n```",
        "",
        "(`/data/prostatex`: ProstateX T2W volumes and lesion masks imported into the case layout. "
        "`strategy` stays `auto`, which uses every GPU of the machine with `batch_size` as the global "
        "batch; `mixed_precision True` needs GPUs with tensor cores -- on a CPU it halves the speed, see "
        "training_throughput.md. Chapter 7's parameters cell lists every parameter.)",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    arg_parser = common.parser(__doc__.split("\n")[0])
    arg_parser.add_argument("--render-only", action="store_true",
                            help="rewrite the .md from the existing .json (with the current reference list)")
    args = arg_parser.parse_args(argv)
    if args.render_only:
        results = json.loads((args.out / f"{NAME}.json").read_text(encoding="utf-8"))
        results["references"] = REFERENCES
        (args.out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / f"{NAME}.md").write_text(markdown(results))
        return 0
    real = common.real_data_dir()
    if real is None:
        print(f"set {common.REAL_DATA_ENV} to the real-data folder", file=sys.stderr)
        return 2
    info = common.machine_info()
    if args.quick:
        settings = dict(image_size=64, base_filters=2, depth=2, batch_size=2, epochs=1, steps_per_epoch=1,
                        loss="bce_dice", foreground_fraction=None, learning_rate=1e-3)
    else:
        settings = dict(image_size=384, base_filters=8, depth=4, batch_size=4, epochs=10, steps_per_epoch=12,
                        loss="bce_dice", foreground_fraction=0.5, learning_rate=1e-3)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        folds = lesion_unet_loocv(real / "prostatex-t2w-lesion", work, settings)
        registration = registration_case(real / "prostatex-mpmri" / "ProstateX-0000", work)
        real_case = book_models_on_real_case(real, work, args.quick)
    total = time.perf_counter() - started
    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "settings": settings, "folds": folds,
               "mean_dice": sum(f["dice"] for f in folds) / len(folds),
               "mean_iou": sum(f["iou"] for f in folds) / len(folds),
               "registration": registration, "real_case": real_case, "references": REFERENCES,
               "full_run_command": FULL_RUN_COMMAND, "total_s": total}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{NAME}.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.out / NAME}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
