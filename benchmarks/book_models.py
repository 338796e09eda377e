"""The book's two models at their chapter defaults: held-out Dice and seconds of training.

For every seed (``--seeds``, default 0 and 1) the script does what chapters 7 and 10
do on the tutorial phantom data (``prostseg.book.data.tutorial_data``, 6 cases,
registered with ``register_case``): split the patients 70/15/15 with the seed, train
chapter 7's gland U-Net and chapter 10's Pix2Pix with the values of the chapters'
parameter cells (:data:`CHAPTER_7`, :data:`CHAPTER_10`; the script reports any value
that differs from the notebook's parameter cell), and scores the models on patients
they never trained on:

* the split's validation and test patients, and
* ``--new-patients`` phantom patients drawn from another seed, as chapter 8 does (an
  external cohort of the same generator).

U-Net (``best.keras``, threshold 0.5): whole-gland Dice, the number of connected
components of the prediction (3D, face connectivity) and *false islands* (components
that do not touch the true gland), as predicted and after
``prostseg.use.postprocessing.largest_gland_component`` (``predict_volume(...,
largest_component=True)``). Pix2Pix (``generator.keras``, the model of the last epoch,
which chapters 10 and 11 use): Dice of each zone (PZ, TZ, CZ, AFS) and of the whole
gland. Training seconds are wall time of ``train_unet`` / ``train_pix2pix`` alone
(chapter 7 calls ``train_unet`` twice to show resuming, which adds a few seconds).

Run::

    .venv/bin/python benchmarks/book_models.py [--seeds 0 1] [--new-patients 4] [--quick] [--out DIR]
"""

from __future__ import annotations

import ast
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import common

NAME = "book_models"

#: The parameter cell of book/07_train-unet.ipynb (the values that decide the model).
CHAPTER_7 = dict(epochs=30, steps_per_epoch=20, batch_size=4, image_size=96, target_spacing=1.0, base_filters=16,
                 depth=3, loss="bce_dice", learning_rate=1e-3, foreground_fraction=None, cache=True)
#: The parameter cell of book/10_train-pix2pix.ipynb (``training_phantoms``: the phantom
#: patients it trains on, :func:`prostseg.book.data.pix2pix_data`; the rest are
#: ``Pix2PixTrainingConfig`` fields).
CHAPTER_10 = dict(training_phantoms=16, epochs=20, image_size=64, target_spacing=1.5, base_filters=16,
                  batch_size=8, learning_rate=2e-3, l1_weight=100.0, crossentropy_weight=10.0, decay_epochs=10,
                  generator_upsampling="transpose", augment=False, shape_augment=True, cache=True)
#: Tiny settings of ``--quick`` (checks that the script works; measures nothing).
QUICK_7 = {**CHAPTER_7, "epochs": 1, "image_size": 32, "base_filters": 4, "target_spacing": 4.0}
QUICK_10 = {**CHAPTER_10, "training_phantoms": 2, "epochs": 2, "image_size": 32, "base_filters": 4,
            "target_spacing": 4.0, "decay_epochs": 1, "batch_size": 2}
#: Phantom grid of ``--quick`` (the tutorial data and the training phantoms).
QUICK_GRID = dict(shape=(48, 48, 8), spacing=(3.0, 3.0, 6.0))
ZONES = ("PZ", "TZ", "CZ", "AFS")


def notebook_parameters(path: Path) -> dict:
    """The literal assignments of a notebook's cell tagged ``parameters``."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    source = next("".join(cell["source"]) for cell in cells if "parameters" in cell["metadata"].get("tags", []))
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def differences(settings: dict, notebook: Path) -> list[str]:
    """``name: script value (notebook value)`` for every setting the notebook's cell differs in."""
    cell = notebook_parameters(notebook)
    return [f"{name}: {value!r} (notebook: {cell.get(name, 'absent')!r})"
            for name, value in settings.items() if cell.get(name, object()) != value]


def islands(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(connected components of the prediction, components that do not touch the truth)."""
    from scipy import ndimage

    labels, count = ndimage.label(predicted > 0, structure=ndimage.generate_binary_structure(3, 1))
    touching = np.unique(labels[(truth > 0) & (labels > 0)])
    return count, count - len(touching)


def prepare_data(folder: Path, quick: bool) -> tuple[Path, float]:
    """(the tutorial data, registered; seconds the registration took)."""
    from prostseg.data import dataset, phantom
    from prostseg.book.data import tutorial_data
    from prostseg.preparation.registration import register_case

    if quick:
        data_dir = folder / "phantom-data"
        phantom.write_phantom_dataset(data_dir, n_cases=6, seed=0, **QUICK_GRID)
    else:
        data_dir = tutorial_data(root=folder)
    seconds = 0.0
    for case in dataset.discover_cases(data_dir, require=("t2w", "dwi", "adc")):
        seconds += common.timed(lambda: register_case(case.folder))[0]
    return data_dir, seconds


def new_patients(folder: Path, count: int, quick: bool) -> list:
    """``count`` phantom patients of another seed (1000, as chapter 8), registered."""
    from prostseg.data import dataset, phantom
    from prostseg.preparation.registration import register_case

    if count == 0:
        return []
    grid = QUICK_GRID if quick else {}
    phantom.write_phantom_dataset(folder / "new-patients", n_cases=count, seed=1000, **grid)
    cases = dataset.discover_cases(folder / "new-patients")
    for case in cases:
        register_case(case.folder)
    return dataset.discover_cases(folder / "new-patients", require=("t2w", "zones", "stack"))


def train_book_models(seed: int, data_dir: Path, work: Path, unet: dict, pix2pix: dict, quick: bool = False) -> dict:
    """Split the patients with ``seed`` and train both models with the given settings.

    Pix2Pix trains as chapter 10 does: on ``pix2pix["training_phantoms"]`` other phantom
    patients (:func:`prostseg.book.data.pix2pix_data`, in ``work``; on :data:`QUICK_GRID`
    with ``quick``), validated and tested on the split's patients, or, with 0, on the
    split's training patients. Returns the split, both configurations and results, and
    the seconds of each training (used by ``real_data_report.py`` as well).
    """
    from prostseg.data import dataset
    from prostseg.preparation import splits
    from prostseg.training import loop as training
    from prostseg.book.data import pix2pix_data

    cases = {case.case_id: case for case in dataset.discover_cases(data_dir, require=("t2w", "zones", "stack"))}
    split = splits.split_patients(list(cases), val_fraction=0.15, test_fraction=0.15, seed=seed)
    split_file = split.to_json(work / f"split-{seed}.json", overwrite=True)
    unet_config = training.UNetTrainingConfig(
        data_dir, work / f"unet-{seed}", split_file=split_file, seed=seed, label="zones", verbose=0, **unet)
    unet_seconds, unet_result = common.timed(lambda: training.train_unet(unet_config))
    pix2pix = dict(pix2pix)
    phantoms = pix2pix.pop("training_phantoms")
    pix2pix_dir, pix2pix_split_file = data_dir, split_file
    if phantoms:
        pix2pix_dir, pix2pix_split = pix2pix_data(data_dir, split, root=work / f"phantoms-{seed}", cases=phantoms,
                                                  **(QUICK_GRID if quick else {}))
        pix2pix_split_file = pix2pix_split.to_json(work / f"pix2pix-split-{seed}.json", overwrite=True)
    pix2pix_config = training.Pix2PixTrainingConfig(
        pix2pix_dir, work / f"pix2pix-{seed}", split_file=pix2pix_split_file, seed=seed,
        discriminator_filters=pix2pix["base_filters"], verbose=0, **pix2pix)
    pix2pix_seconds, pix2pix_result = common.timed(lambda: training.train_pix2pix(pix2pix_config))
    return {"cases": cases, "split": split, "unet_config": unet_config, "unet_result": unet_result,
            "unet_seconds": unet_seconds, "unet_model": unet_result.output_dir / "best.keras",
            "pix2pix_config": pix2pix_config, "pix2pix_result": pix2pix_result,
            "pix2pix_seconds": pix2pix_seconds, "pix2pix_model": pix2pix_result.model_path}


def run_seed(seed: int, data_dir: Path, extra_cases: list, work: Path, unet: dict, pix2pix: dict,
             quick: bool) -> dict:
    from prostseg.data import dataset, io
    from prostseg.networks import metrics
    from prostseg.use import inference

    trained = train_book_models(seed, data_dir, work, unet, pix2pix, quick)
    cases, split = trained["cases"], trained["split"]
    unet_config, pix2pix_config = trained["unet_config"], trained["pix2pix_config"]
    unet_result, pix2pix_result = trained["unet_result"], trained["pix2pix_result"]
    unet_seconds, pix2pix_seconds = trained["unet_seconds"], trained["pix2pix_seconds"]
    held_out = [("val", cases[i]) for i in split.val] + [("test", cases[i]) for i in split.test]
    held_out += [("new", case) for case in extra_cases]

    gland_model = inference.load_model(trained["unet_model"])
    generator = inference.load_model(pix2pix_result.model_path)
    rows = []
    for part, case in held_out:
        truth = io.load_volume(case.path("zones"), label=True).data
        t2w = io.load_volume(case.path("t2w"))
        row = {"seed": seed, "part": part, "case": case.case_id}
        for cleaned in (False, True):
            mask = inference.predict_volume(gland_model, t2w, target_spacing=unet_config.target_spacing,
                                            largest_component=cleaned)
            suffix = "_cleaned" if cleaned else ""
            components, false_islands = islands(mask, truth)
            row.update({f"unet_dice{suffix}": metrics.dice(mask > 0, truth > 0),
                        f"unet_components{suffix}": components, f"unet_false_islands{suffix}": false_islands})
        zones = inference.predict_volume(generator, io.load_volume(case.path("stack"), channels=3),
                                         target_spacing=pix2pix_config.target_spacing)
        scores = metrics.per_class_dice(zones, truth, dataset.NUM_ZONE_CLASSES)[1:]
        row.update({f"pix2pix_{zone}": float(score) for zone, score in zip(ZONES, scores)})
        row["pix2pix_gland"] = metrics.dice(zones > 0, truth > 0)
        rows.append(row)
    return {"seed": seed, "split": {"train": split.train, "val": split.val, "test": split.test},
            "unet_train_s": unet_seconds, "pix2pix_train_s": pix2pix_seconds,
            "unet_epochs": unet_result.epochs_completed, "pix2pix_epochs": pix2pix_result.epochs_completed,
            "rows": rows}


def summarise(runs: list[dict]) -> dict:
    """Mean and minimum of every score over all held-out patients and seeds."""
    rows = [row for run in runs for row in run["rows"]]
    keys = [key for key in rows[0] if key.startswith(("unet_", "pix2pix_"))]
    summary = {}
    for key in keys:
        values = np.array([row[key] for row in rows], dtype=float)
        values = values[np.isfinite(values)]
        summary[key] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
    for model in ("unet", "pix2pix"):
        seconds = [run[f"{model}_train_s"] for run in runs]
        summary[f"{model}_train_s"] = {"mean": float(np.mean(seconds)), "min": float(np.min(seconds)),
                                       "max": float(np.max(seconds))}
    return summary


def markdown(results: dict, info: dict, quick: bool) -> str:
    summary, runs = results["summary"], results["runs"]
    lines = [common.heading("Book models: chapter 7 U-Net and chapter 10 Pix2Pix at their defaults", info, quick),
             f"Seeds {results['seeds']}; held-out patients per seed: the split's validation and test patients "
             f"and {results['new_patients']} new phantom patients (seed 1000). Registration of the tutorial data: "
             f"{results['registration_s']:.3g} s (not counted below).", ""]
    for chapter in ("chapter_7", "chapter_10"):
        differ = results["notebook_differences"][chapter]
        lines.append(f"{chapter.replace('_', ' ').capitalize()} settings: `{json.dumps(results['settings'][chapter])}`"
                     + (f"; differs from the notebook in {'; '.join(differ)}" if differ else
                        " (as in the notebook's parameter cell)") + ".")
    lines += ["", "Per held-out patient:", ""]
    header = ["seed", "part", "case", "U-Net Dice", "components", "false islands", "Dice cleaned",
              "islands cleaned", *(f"Pix2Pix {zone}" for zone in ZONES), "Pix2Pix gland"]
    table = [[row["seed"], row["part"], row["case"], row["unet_dice"], row["unet_components"],
              row["unet_false_islands"], row["unet_dice_cleaned"], row["unet_false_islands_cleaned"],
              *(row[f"pix2pix_{zone}"] for zone in ZONES), row["pix2pix_gland"]]
             for run in runs for row in run["rows"]]
    lines += [common.table(header, table), "", "Over all held-out patients and seeds (mean / min):", ""]
    keys = ["unet_dice", "unet_dice_cleaned", "unet_false_islands", "unet_false_islands_cleaned",
            *(f"pix2pix_{zone}" for zone in ZONES), "pix2pix_gland", "unet_train_s", "pix2pix_train_s"]
    lines += [common.table(["score", "mean", "min", "max"],
                           [[key, summary[key]["mean"], summary[key]["min"], summary[key]["max"]] for key in keys])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of split, weights and data")
    parser.add_argument("--new-patients", type=int, default=4,
                        help="new phantom patients scored besides the split (default 4; 0: none)")
    args = parser.parse_args(argv)
    info = common.machine_info(with_tensorflow=True)
    unet, pix2pix = (QUICK_7, QUICK_10) if args.quick else (CHAPTER_7, CHAPTER_10)
    seeds = args.seeds[:1] if args.quick else args.seeds
    book = common.REPO_ROOT / "book"
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data_dir, registration_s = prepare_data(work, args.quick)
        extra = new_patients(work, min(args.new_patients, 1) if args.quick else args.new_patients, args.quick)
        runs = []
        for seed in seeds:
            print(f"seed {seed}: training both models", flush=True)
            runs.append(run_seed(seed, data_dir, extra, work / f"seed-{seed}", unet, pix2pix, args.quick))
    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "seeds": seeds,
               "new_patients": len(extra), "registration_s": registration_s,
               "settings": {"chapter_7": unet, "chapter_10": pix2pix},
               "notebook_differences": {"chapter_7": differences(CHAPTER_7, book / "07_train-unet.ipynb"),
                                        "chapter_10": differences(CHAPTER_10, book / "10_train-pix2pix.ipynb")},
               "runs": runs, "summary": summarise(runs)}
    common.write_results(args.out, NAME, results, markdown(results, info, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
