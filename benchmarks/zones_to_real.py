"""Zones to real: chapter 10's Pix2Pix trained on phantoms, scored on a real mpMRI scan.

Needs ``PROSTSEG_REAL_DATA`` (the folder described in ``../shared/data/README.md``).
The held-out patients are those of chapter 10: the book's tutorial phantoms
(``prostseg.book.data.tutorial_data``, registered with ``register_case``), split with
the seed as chapter 10 splits them, plus ``--new-patients`` realistic phantom patients
of another seed (1000, as ``book_models.py``). For each variant (``--variants``, see
:data:`VARIANTS`) and each seed (``--seeds``) the script

1. takes the variant's training patients: the split's training patients (``book``, what
   chapter 10 does), or phantom patients written by
   :func:`prostseg.data.phantom.write_phantom_dataset` with the variant's settings (e.g.
   ``contrast="mixed"`` with ``random_channels``: in about half of the scans a random
   level per tissue in T2W, ADC and DWI) and ``aligned_stack=True`` (the stack of a
   perfect registration);
2. trains chapter 10's Pix2Pix (:data:`FOUR_PATIENTS`, its settings before this
   comparison, with the variant's changes, e.g. fewer epochs over more patients for about
   as many steps), validated on the split's validation patient as in chapter 10;
3. scores the last generator (``generator.keras``, what chapters 10 and 11 use) on the
   real ``prostatex-mpmri-zones/ProstateX-0000`` (a temporary copy, ADC and DWI
   registered onto T2W) with :func:`prostseg.use.model_comparison.score_real_case`
   (largest-component clean-up; gland = zones > 0, PZ, TZ with CZ and AFS counted as TZ),
   and on the held-out phantom patients (Dice of each zone and of the gland, no clean-up,
   as chapter 10 scores them).

One real case is the only real check, and its zone masks were made by an AI model (see
the data README), so the real Dice is one number per run, not an accuracy estimate.
Training seconds are the wall time of ``train_pix2pix`` alone.

Run::

    PROSTSEG_REAL_DATA=/path/to/data .venv/bin/python benchmarks/zones_to_real.py \\
        [--variants chapter10 realistic16_shape] [--seeds 0 1] [--new-patients 4] [--quick] [--out DIR]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import common
from book_models import QUICK_10, ZONES

NAME = "zones_to_real"
REAL_CASE = Path("prostatex-mpmri-zones") / "ProstateX-0000"
ALL_CHANNELS = ("t2w", "adc", "dwi")

#: Chapter 10's Pix2Pix settings before this comparison: 80 epochs over the split's four
#: training patients (``Pix2PixTrainingConfig`` fields).
FOUR_PATIENTS = dict(epochs=80, image_size=64, target_spacing=1.5, base_filters=16, batch_size=8,
                     learning_rate=2e-3, l1_weight=100.0, crossentropy_weight=10.0, decay_epochs=40,
                     generator_upsampling="transpose", augment=False, cache=True)
#: Variants: ``phantoms`` (``write_phantom_dataset`` keywords; None: the split's training
#: patients, as chapter 10 did) and ``pix2pix`` (changes to :data:`FOUR_PATIENTS`).
#: ``realistic16_shape`` is what chapter 10 does now (:data:`book_models.CHAPTER_10`): as good as
#: ``realistic32_shape`` on the real case and the phantoms, with half the phantoms to write.
#: The phantoms are drawn with seed 1: other patients than the book's (seed 0) and the
#: new patients (seed 1000) that score the models.
#: Chapter 10 trains 80 epochs on 4 patients (about 10 batches of 8 slices each); 32
#: phantom patients give about 8 times as many batches per epoch, so 10 epochs keep
#: about as many steps.
VARIANTS = {
    "chapter10": {"phantoms": None, "pix2pix": {}},
    "realistic32": {"phantoms": {"n_cases": 32, "seed": 1},
                    "pix2pix": {"epochs": 10, "decay_epochs": 5}},
    "realistic64": {"phantoms": {"n_cases": 64, "seed": 1},
                    "pix2pix": {"epochs": 5, "decay_epochs": 3}},
    "mixed_t2w": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "mixed"},
                  "pix2pix": {"epochs": 10, "decay_epochs": 5}},
    "mixed3": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "mixed", "random_channels": ALL_CHANNELS},
               "pix2pix": {"epochs": 10, "decay_epochs": 5}},
    "mixed_t2w_intensity": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "mixed"},
                            "pix2pix": {"epochs": 10, "decay_epochs": 5, "intensity_augment": True}},
    "mixed3_intensity": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "mixed", "random_channels": ALL_CHANNELS},
                         "pix2pix": {"epochs": 10, "decay_epochs": 5, "intensity_augment": True}},
    "realistic32_intensity": {"phantoms": {"n_cases": 32, "seed": 1},
                              "pix2pix": {"epochs": 10, "decay_epochs": 5, "intensity_augment": True}},
    "realistic32_shape": {"phantoms": {"n_cases": 32, "seed": 1},
                          "pix2pix": {"epochs": 10, "decay_epochs": 5, "shape_augment": True}},
    "realistic16_shape": {"phantoms": {"n_cases": 16, "seed": 1},
                          "pix2pix": {"epochs": 20, "decay_epochs": 10, "shape_augment": True}},
    "mixed_t2w_shape": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "mixed"},
                        "pix2pix": {"epochs": 10, "decay_epochs": 5, "shape_augment": True}},
    "mixed3_shape": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "mixed", "random_channels": ALL_CHANNELS},
                     "pix2pix": {"epochs": 10, "decay_epochs": 5, "shape_augment": True}},
    "random3": {"phantoms": {"n_cases": 32, "seed": 1, "contrast": "random", "random_channels": ALL_CHANNELS},
                "pix2pix": {"epochs": 10, "decay_epochs": 5}},
}
#: Tiny phantom grid of ``--quick`` (checks that the script works; measures nothing).
QUICK_GRID = {"shape": (48, 48, 8), "spacing": (3.0, 3.0, 6.0)}


def held_out_data(work: Path, new_count: int, quick: bool) -> tuple[Path, list]:
    """(the book's phantom folder, registered; new realistic phantom patients, registered).

    Registration results that are up to date (``--work`` of an earlier run) are kept.
    """
    from prostseg.data import dataset, phantom
    from prostseg.preparation import registration
    from prostseg.book.data import tutorial_data

    grid = QUICK_GRID if quick else {}
    if quick:
        book_dir = work / "phantom-data"
        if not book_dir.is_dir():
            phantom.write_phantom_dataset(book_dir, n_cases=6, seed=0, **grid)
    else:
        book_dir = tutorial_data(root=work)
    folders = [book_dir]
    new_dir = work / "new-patients"
    if new_count:
        if not new_dir.is_dir():
            phantom.write_phantom_dataset(new_dir, n_cases=new_count, seed=1000, **grid)
        folders.append(new_dir)
    for folder in folders:
        registration.register_dataset(folder, progress=False).raise_if_failed()
    new_cases = dataset.discover_cases(new_dir, require=("t2w", "zones", "stack"))[:new_count] if new_count else []
    return book_dir, new_cases


def training_data(name: str, book_dir: Path, split, work: Path, quick: bool) -> tuple[Path, list[str]]:
    """(data folder, training case ids) of a variant; the validation patients are linked in."""
    from prostseg.data import dataset, phantom

    variant = VARIANTS[name]
    if variant["phantoms"] is None:
        return book_dir, list(split.train)
    settings = dict(variant["phantoms"])
    if quick:
        settings.update(QUICK_GRID, n_cases=2)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    folder = work / f"phantoms-{key}"  # written once, shared by the seeds and the variants with these phantoms
    if not folder.is_dir():
        phantom.write_phantom_dataset(folder, aligned_stack=True, **settings)
    for case_id in split.val:  # chapter 10's validation patient, under a name of its own
        link = folder / f"book-{case_id}"
        if not link.exists():
            link.symlink_to(book_dir / case_id, target_is_directory=True)
    train = [case.case_id for case in dataset.discover_cases(folder) if not case.case_id.startswith("book-")]
    return folder, train


def phantom_scores(model_path: Path, target_spacing: float, parts: list) -> list[dict]:
    """Dice of each zone and of the gland for each ``(part, case)`` of ``parts``."""
    from prostseg.data import dataset, io
    from prostseg.networks import metrics
    from prostseg.use import inference

    generator = inference.load_model(model_path)
    rows = []
    for part, case in parts:
        truth = io.load_volume(case.path("zones"), label=True).data
        zones = inference.predict_volume(generator, io.load_volume(case.path("stack"), channels=3),
                                         target_spacing=target_spacing)
        scores = metrics.per_class_dice(zones, truth, dataset.NUM_ZONE_CLASSES)[1:]
        rows.append({"part": part, "case": case.case_id, **dict(zip(ZONES, map(float, scores))),
                     "gland": metrics.dice(zones > 0, truth > 0)})
    return rows


def run_variant(name: str, seed: int, book_dir: Path, real_case: Path, new_cases: list, work: Path,
                quick: bool, rescore: bool = False) -> dict:
    """Train one variant with one seed and score it on the real case and the held-out phantoms.

    With ``rescore``, the finished run of an earlier invocation in ``work`` is scored
    again instead (its training seconds as recorded then or, for runs that recorded
    none, the sum of the epochs' seconds in its history).
    """
    from prostseg.data import dataset
    from prostseg.preparation import splits
    from prostseg.use import model_comparison
    from prostseg.training import loop as training

    variant = VARIANTS[name]
    cases = [case.case_id for case in dataset.discover_cases(book_dir, require=("t2w", "zones", "stack"))]
    split = splits.split_patients(cases, val_fraction=0.15, test_fraction=0.15, seed=seed)
    data_dir, train = training_data(name, book_dir, split, work, quick)
    val = list(split.val) if data_dir == book_dir else [f"book-{case_id}" for case_id in split.val]
    run_split = splits.PatientSplit(train=train, val=val, test=[], seed=seed)
    split_file = run_split.to_json(work / f"split-{name}-{seed}.json", overwrite=True)
    settings = {**FOUR_PATIENTS, **variant["pix2pix"]}
    if quick:
        settings.update({key: value for key, value in QUICK_10.items() if key in FOUR_PATIENTS}, epochs=2)
    run_dir, seconds_file = work / f"run-{name}-{seed}", work / f"seconds-{name}-{seed}.txt"
    config = training.Pix2PixTrainingConfig(
        data_dir, run_dir, split_file=split_file, seed=seed,
        discriminator_filters=settings["base_filters"], verbose=0, **settings)
    if rescore:
        if training.load_config(run_dir / training.CONFIG_FILE) != config:
            raise SystemExit(f"{run_dir} holds another configuration than variant {name}, seed {seed}")
        model_path = run_dir / "generator.keras"
        history = training.read_history(run_dir / training.HISTORY_FILE)
        epochs = len(history)
        seconds = float(seconds_file.read_text(encoding="utf-8")) if seconds_file.is_file() else \
            sum(row["seconds"] for row in history)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        seconds, result = common.timed(lambda: training.train_pix2pix(config))
        seconds_file.write_text(f"{seconds}\n", encoding="utf-8")
        model_path, epochs = result.model_path, result.epochs_completed
    real = model_comparison.score_real_case(real_case, pix2pix_model=model_path)
    real_scores = real.scores[0]
    book_cases = {case.case_id: case for case in dataset.discover_cases(book_dir, require=("zones", "stack"))}
    parts = [("val", book_cases[c]) for c in split.val] + [("test", book_cases[c]) for c in split.test] + \
        [("new", case) for case in new_cases]
    rows = phantom_scores(model_path, config.target_spacing, parts)
    phantom_mean = {key: float(np.nanmean([row[key] for row in rows])) for key in (*ZONES, "gland")}
    return {"variant": name, "seed": seed, "phantoms": variant["phantoms"], "pix2pix": settings,
            "train_s": seconds, "train_s_recorded": not rescore or seconds_file.is_file(), "epochs": epochs,
            "training_patients": len(train),
            "real": {"gland": float(real_scores["whole gland"]), "PZ": float(real_scores["peripheral zone"]),
                     "TZ": float(real_scores["transition zone"])},
            "real_predicted_voxels": int((real.predictions["Pix2Pix"] > 0).sum()),
            "real_reference_voxels": int((real.reference > 0).sum()),
            "phantom_rows": rows, "phantom_mean": phantom_mean}


def markdown(results: dict, info: dict, quick: bool) -> str:
    lines = [common.heading("Zones to real: chapter 10's Pix2Pix trained on phantoms, scored on ProstateX-0000",
                            info, quick),
             "Real: Dice on ProstateX-0000 against its AI-made two-zone map (gland = zones > 0; Pix2Pix CZ and "
             "AFS count as TZ), largest-component clean-up; one real case is the only real check. Phantom: mean "
             "Dice over chapter 10's validation and test patients and "
             f"{results['new_patients']} new realistic phantom patients (seed 1000), never trained on.", ""]
    if results["rescore"]:
        lines += ["Runs trained by earlier invocations (`--work`), scored again here (`--rescore`).", ""]
    rows = [[run["variant"], run["seed"], run["training_patients"], run["epochs"], run["real"]["gland"],
             run["real"]["PZ"], run["real"]["TZ"], *(run["phantom_mean"][key] for key in ("gland", *ZONES)),
             run["train_s"] if run["train_s_recorded"] else f"{run['train_s']:.3g}*"] for run in results["runs"]]
    lines += [common.table(["variant", "seed", "training patients", "epochs", "real gland", "real PZ", "real TZ",
                            "phantom gland", *(f"phantom {zone}" for zone in ZONES), "train s"], rows), ""]
    if not all(run["train_s_recorded"] for run in results["runs"]):
        lines += ["*: rescored run that recorded no wall time: the sum of its epochs' seconds (history.csv).", ""]
    for name in dict.fromkeys(run["variant"] for run in results["runs"]):
        variant = VARIANTS[name]
        lines.append(f"- `{name}`: phantoms `{variant['phantoms'] or 'the split training patients (chapter 10)'}`, "
                     f"Pix2Pix changes `{variant['pix2pix'] or 'none'}`")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["chapter10", "realistic16_shape"],
                        help="variants to train and score (default: chapter10 realistic16_shape)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of split, weights and data stream")
    parser.add_argument("--new-patients", type=int, default=4,
                        help="realistic phantom patients (seed 1000) scored besides the split's (0: none)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep phantoms, registrations and runs in this folder, and reuse the phantoms and "
                             "registrations found there (default: a temporary folder); runs are retrained "
                             "unless --rescore")
    parser.add_argument("--rescore", action="store_true",
                        help="score the finished runs of earlier invocations in --work again, without training "
                             "(variants and seeds without a run there are skipped)")
    args = parser.parse_args(argv)
    real = common.real_data_dir()
    if real is None or not (real / REAL_CASE).is_dir():
        print(f"set {common.REAL_DATA_ENV} to the real-data folder (it must hold {REAL_CASE})", file=sys.stderr)
        return 2
    if args.rescore and args.work is None:
        parser.error("--rescore needs --work, the folder of the runs to score")
    info = common.machine_info()
    seeds = args.seeds[:1] if args.quick else args.seeds
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder) if args.work is None else args.work
        work.mkdir(parents=True, exist_ok=True)
        real_case = work / REAL_CASE.name
        if not real_case.is_dir():
            shutil.copytree(real / REAL_CASE, real_case)
        book_dir, extra = held_out_data(work, min(args.new_patients, 1) if args.quick else args.new_patients,
                                        args.quick)
        runs = []
        for name in args.variants:
            for seed in seeds:
                if args.rescore and not (work / f"run-{name}-{seed}").is_dir():
                    print(f"variant {name}, seed {seed}: no run in {work}, skipped", flush=True)
                    continue
                print(f"variant {name}, seed {seed}: {'scoring' if args.rescore else 'training and scoring'}",
                      flush=True)
                runs.append(run_variant(name, seed, book_dir, real_case, extra, work, args.quick, args.rescore))
                print(runs[-1]["real"], runs[-1]["phantom_mean"], f"{runs[-1]['train_s']:.0f} s", flush=True)
    results = {"benchmark": NAME, "quick": args.quick, "rescore": args.rescore, "machine": info,
               "new_patients": len(extra),
               "real_case": str(REAL_CASE), "runs": runs}
    common.write_results(args.out, NAME, results, markdown(results, info, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
