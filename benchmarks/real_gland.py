"""Gland U-Net on real MRI: which training data, scored on real patients it never saw.

For each recipe (``--recipes``; see :data:`RECIPES`) and each held-out patient
(``--folds``, default all four shipped ProstateX studies: leave one patient out), the
script trains chapter 7's U-Net (:data:`book_models.CHAPTER_7` with the recipe's
settings) on the data folder of :func:`prostseg.book.data.gland_training_data` (the
other real patients with their shipped TAPS gland masks, and mixed-contrast phantoms),
with that patient as the split's test patient and, as in chapter 7, the last two
phantoms as validation patients (``best.keras`` is chosen on them; none for the recipe
without phantoms), then segments the held-out patient with
the largest-component clean-up and scores it:

* against its shipped TAPS mask (always), and
* with ``PROSTSEG_REAL_DATA``, against the three independent masks of the same scan
  (the zone map and the glands of two other published models, CC BY-NC, never shipped;
  cut to the shipped grid by :func:`prostseg.book.data.real_data`), with their mean,
  beside the TAPS mask's own agreement with them.

Training seconds are the wall time of ``train_unet`` alone; the machine's cores may be
shared, so compare them within one run.

Run::

    PROSTSEG_REAL_DATA=/path/to/data .venv/bin/python benchmarks/real_gland.py \\
        [--recipes mixed phantoms] [--folds ProstateX-0000] [--seeds 0] [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import common
from book_models import CHAPTER_7

NAME = "real_gland"
INDEPENDENT = ("zones.nii.gz", "reference/gland_guerbet23.nii.gz", "reference/zones_heviai23.nii.gz")
#: Recipes: which training cases (real patients besides the held-out one, phantoms)
#: and the U-Net settings (``UNetTrainingConfig`` keywords besides data, split, label).
RECIPES = {
    # Chapter 7 as the book runs it: the other real patients and 32 mixed-contrast phantoms.
    "mixed": {"real": True, "phantoms": 32, "unet": {**CHAPTER_7}},
    # The same network on the phantoms alone: what the book did before it had real labels.
    "phantoms": {"real": False, "phantoms": 32, "unet": {**CHAPTER_7}},
    # The real patients alone.
    "real": {"real": True, "phantoms": 0, "unet": {**CHAPTER_7}},
}
QUICK_UNET = {"epochs": 1, "steps_per_epoch": 2, "image_size": 32, "base_filters": 4, "target_spacing": 4.0}


def dice_scores(predicted: np.ndarray, case_dir: Path) -> dict:
    """Dice against the shipped mask ("TAPS") and each independent mask, and their mean."""
    from prostseg.use.model_comparison import gland_agreement

    scores = gland_agreement(predicted, case_dir)
    independent = [scores[name] for name in INDEPENDENT if name in scores]
    return {"TAPS": scores["gland.nii.gz"], **{name: scores[name] for name in INDEPENDENT if name in scores},
            "independent mean": float(np.mean(independent)) if independent else float("nan")}


def run_fold(recipe: dict, held_out: str, seed: int, data_dir: Path, real_dir: Path, work: Path,
             quick: bool) -> dict:
    from prostseg.data import dataset, io
    from prostseg.training import loop as training
    from prostseg.use import inference
    from prostseg.book.data import gland_training_split

    split = gland_training_split(data_dir, test=(held_out,), real=recipe["real"], phantoms=recipe["phantoms"])
    train = split.train
    split_file = split.to_json(work / f"split-{held_out}-{seed}.json")
    unet = {**recipe["unet"], **(QUICK_UNET if quick else {})}
    config = training.UNetTrainingConfig(data_dir, work / f"run-{held_out}-{seed}", split_file=split_file,
                                         label="gland", seed=seed, verbose=0, **unet)
    seconds, result = common.timed(lambda: training.train_unet(config))
    model = inference.load_model(result.output_dir / "best.keras")
    case = dataset.find_case(real_dir / held_out)
    predicted = inference.predict_volume(model, io.load_volume(case.path("t2w")),
                                         target_spacing=config.target_spacing, largest_component=True) > 0
    return {"held_out": held_out, "seed": seed, "train_s": seconds, "train_cases": len(train),
            "dice": dice_scores(predicted, case.folder),
            "taps_agreement": dice_scores(io.load_volume(case.path("gland"), label=True).data > 0, case.folder)}


def markdown(results: dict, info: dict, quick: bool) -> str:
    lines = [common.heading("Gland U-Net on real MRI: held-out real patients", info, quick),
             "Dice of the held-out patient's prediction (largest component) against its shipped TAPS mask "
             "and against the mean of its three independent masks (zone map, two other published models), "
             "beside the TAPS mask's own agreement with those three. One patient held out per fold.", ""]
    rows = [[run["recipe"], run["held_out"], run["seed"], run["train_cases"], run["dice"]["TAPS"],
             run["dice"]["independent mean"], run["taps_agreement"]["independent mean"], run["train_s"]]
            for run in results["runs"]]
    lines += [common.table(["recipe", "held out", "seed", "training cases", "Dice vs TAPS",
                            "Dice vs independent (mean)", "TAPS vs independent", "train s"], rows), ""]
    for name in dict.fromkeys(run["recipe"] for run in results["runs"]):
        scores = [run["dice"]["independent mean"] for run in results["runs"] if run["recipe"] == name]
        lines.append(f"- `{name}`: mean Dice against the independent masks {np.nanmean(scores):.3f} "
                     f"over {len(scores)} fold(s); settings `{RECIPES[name]}`")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["mixed"])
    parser.add_argument("--folds", nargs="+", default=None, help="held-out patients (default: every real case)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args(argv)
    from prostseg.book.data import gland_training_data, real_data

    info = common.machine_info()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        phantoms = 2 if args.quick else max(recipe["phantoms"] for recipe in RECIPES.values())
        data_dir = gland_training_data(phantoms=phantoms, root=work)
        real_dir = real_data(work)
        folds = args.folds or sorted(path.name for path in data_dir.iterdir()
                                     if path.is_dir() and not path.name.startswith("phantom-"))
        for name in args.recipes:
            recipe = {**RECIPES[name], "phantoms": min(RECIPES[name]["phantoms"], phantoms)}
            for held_out in folds:
                for seed in args.seeds:
                    print(f"recipe {name}, held out {held_out}, seed {seed}", flush=True)
                    runs.append({"recipe": name, **run_fold(recipe, held_out, seed, data_dir, real_dir,
                                                            work / name, args.quick)})
    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "runs": runs}
    common.write_results(args.out, NAME, results, markdown(results, info, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
