"""Phantom realism: how much the generated patients vary, and how their T2W compares with real MRI.

Measurements of :mod:`prostseg.data.phantom` at its drawn defaults
(``make_phantom_case(seed)`` for seeds ``0 .. n-1``):

* **Variation across patients** -- gland and zone volumes (ml, from the zone map and
  the T2W voxel size): mean, standard deviation, coefficient of variation, range; the
  drawn field of view, in-plane spacing, slice count and thickness, diffusion spacing,
  and the fraction of cases with an endorectal coil; the generation time per case.
* **Intensity histograms against a real T2W** (with ``PROSTSEG_REAL_DATA``):
  ProstateX-0000 (``prostatex-mpmri``) and its gland from ``prostatex-mpmri-zones``
  (zones > 0, PI-CAI model labels). Every volume is normalised the same way (clipped to
  its 1st-99th percentile, then min-max scaled to [0, 1]); histograms are taken over
  the slices that cross the gland ("slice") and over the gland itself ("gland"). Two
  distances per case and region: the Wasserstein-1 (earth mover's) distance between
  the two intensity distributions, in units of the normalised range (0 = identical,
  lower is closer), and the histogram intersection over 64 bins (1 = identical, higher
  is closer).
* **Anatomical context against the same real T2W**: what lies round the gland. The
  histogram distances above for the "surroundings" (voxels outside the gland within
  30 mm of it, in-plane, on the slices through it); and two intensity profiles: the
  mean normalised intensity 0-40 mm beyond the gland's edge, along rays from the centre
  of its section going right and left ("lateral": periprostatic fat, levator ani,
  ischioanal fat, obturator internus) and backwards ("posterior": rectum and the fat
  behind it), over the slices whose gland section is at least a third of the largest.
  The profile distance is the mean absolute difference from the real profile, in units
  of the normalised range (lower is closer).

Everything is reported as mean and SD over the cases, for this generator and, for
reference, for earlier generator versions, whose numbers were measured once with this
same script (``--generator`` pointing at a copy of the older module, 50 cases) and are
recorded in :data:`REFERENCES`: version 1 (the ellipse phantom of prostseg before issue
9) and version 2 (the first patient-like phantom, whose anatomy still read as a cartoon).

**Figure** ``phantom_realism.png``: the real mid-gland slice beside phantom slices of
several patients (one with an endorectal coil when the set has one); the normalised
intensity histograms of all of them (slices through the gland, gland, surroundings) and
their lateral and posterior profiles.

Run::

    .venv/bin/python benchmarks/phantom_realism.py [--quick] [--cases 50] [--out benchmarks/results]
    .venv/bin/python benchmarks/phantom_realism.py --generator /tmp/phantom_v1.py --no-figure

``--generator FILE`` measures another version of ``prostseg/data/phantom.py`` (for example
``git show <commit>:prostseg/data/phantom.py > /tmp/phantom_v1.py``) instead of the installed one.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import common

NAME = "phantom_realism"
REAL_CASE = ("prostatex-mpmri/ProstateX-0000/t2w.mha", "prostatex-mpmri-zones/ProstateX-0000/zones.nii.gz")
HISTOGRAM_BINS = 64
PERCENTILES = (1.0, 99.0)
ZONE_KEYS = ("pz", "tz", "cz", "afs")
REGIONS = ("slice", "gland", "surroundings")
SURROUNDINGS_MM = 30.0
PROFILE_MM = 40
#: Directions (x, y) in RAS of the profile rays, each spread over a few angles.
PROFILE_DIRECTIONS = {"lateral": ((1.0, 0.0), (-1.0, 0.0)), "posterior": ((0.0, -1.0),)}
RAY_SPREAD_DEG = (-10.0, 0.0, 10.0)

#: Distances of earlier generator versions, measured with this script: ``--generator``
#: on a copy of that module, 50 cases, ProstateX-0000 as the real case. Version 1 is
#: prostseg commit d582c27 (160x160x16 at 0.8x0.8x3 mm, ellipses), whose slice and gland
#: numbers were recorded first and its context numbers (surroundings, profiles) later,
#: with the same module; version 2 is prostseg commit e012cb8 (grids drawn per patient).
REFERENCES = {
    "v1": {
        "measured": "2026-12-01, prostseg d582c27 (generator version 1), 50 cases",
        "slice": {"wasserstein": {"mean": 0.1394, "sd": 0.0423}, "intersection": {"mean": 0.5625, "sd": 0.0430}},
        "gland": {"wasserstein": {"mean": 0.1044, "sd": 0.0493}, "intersection": {"mean": 0.6389, "sd": 0.0325}},
        "surroundings": {"wasserstein": {"mean": 0.1506, "sd": 0.0548},
                         "intersection": {"mean": 0.5470, "sd": 0.0367}},
        "profiles": {"lateral": {"mean": 0.1943, "sd": 0.0412}, "posterior": {"mean": 0.1628, "sd": 0.0499}},
        "gland_ml": {"mean": 27.65, "sd": 4.15, "cv": 0.150, "min": 19.62, "max": 36.04},
    },
    "v2": {
        "measured": "2026-12-01, prostseg e012cb8 (generator version 2), 50 cases",
        "slice": {"wasserstein": {"mean": 0.1085, "sd": 0.0436}, "intersection": {"mean": 0.7316, "sd": 0.0560}},
        "gland": {"wasserstein": {"mean": 0.0636, "sd": 0.0318}, "intersection": {"mean": 0.7632, "sd": 0.0569}},
        "surroundings": {"wasserstein": {"mean": 0.1565, "sd": 0.0504},
                         "intersection": {"mean": 0.6523, "sd": 0.0506}},
        "profiles": {"lateral": {"mean": 0.2385, "sd": 0.0378}, "posterior": {"mean": 0.1673, "sd": 0.0395}},
        "gland_ml": {"mean": 43.16, "sd": 15.49, "cv": 0.359, "min": 17.92, "max": 95.16},
    },
}


def load_generator(path: Path | None):
    """The phantom module to measure: ``prostseg.data.phantom``, or the module in ``path``."""
    if path is None:
        from prostseg.data import phantom

        return phantom
    spec = importlib.util.spec_from_file_location("phantom_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def normalised(volume: np.ndarray) -> np.ndarray:
    """Clip to the 1st-99th percentile, then scale to [0, 1] (the same for every volume)."""
    from prostseg.preparation.preprocessing import clip_percentiles, minmax_normalize

    return minmax_normalize(clip_percentiles(volume, *PERCENTILES))


def surroundings(gland: np.ndarray, spacing) -> np.ndarray:
    """Voxels outside the gland within SURROUNDINGS_MM of it (in-plane), on the slices through it."""
    near = np.zeros_like(gland)
    for k in np.flatnonzero(gland.any(axis=(0, 1))):
        distance = ndimage.distance_transform_edt(~gland[:, :, k], sampling=spacing[:2])
        near[:, :, k] = (distance > 0) & (distance <= SURROUNDINGS_MM)
    return near


def regions(image: np.ndarray, gland: np.ndarray, spacing) -> dict[str, np.ndarray]:
    """Normalised intensities of the slices crossing the gland, of the gland, and round it."""
    slices = np.flatnonzero(gland.any(axis=(0, 1)))
    return {"slice": image[:, :, slices].ravel(), "gland": image[gland],
            "surroundings": image[surroundings(gland, spacing)]}


def profiles(image: np.ndarray, gland: np.ndarray, spacing) -> dict[str, np.ndarray]:
    """Mean normalised intensity 0..PROFILE_MM mm (1 mm steps) beyond the gland's edge.

    Rays leave the centre of the gland's section in each of PROFILE_DIRECTIONS (spread
    by RAY_SPREAD_DEG) on every slice whose section is at least a third of the largest;
    each is sampled (bilinear) from the first point outside the gland. Points outside
    the field of view do not count.
    """
    area = gland.sum(axis=(0, 1))
    steps = np.arange(PROFILE_MM + 1, dtype=float)
    along = np.arange(0.0, 150.0, 0.5)
    result = {}
    for name, directions in PROFILE_DIRECTIONS.items():
        rays = []
        for k in np.flatnonzero(area >= area.max() / 3):
            section = gland[:, :, k]
            centre = np.argwhere(section).mean(axis=0)
            for (dx, dy), spread in ((d, s) for d in directions for s in RAY_SPREAD_DEG):
                angle = math.atan2(dy, dx) + math.radians(spread)
                unit = np.array([math.cos(angle), math.sin(angle)]) / np.asarray(spacing[:2])  # voxels per mm
                index = np.rint(centre[:, None] + unit[:, None] * along).astype(int)
                on_grid = ((index >= 0) & (index < np.array(section.shape)[:, None])).all(axis=0)
                in_gland = np.zeros(along.shape, dtype=bool)
                in_gland[on_grid] = section[index[0, on_grid], index[1, on_grid]]
                leaving = np.flatnonzero(~in_gland)
                if leaving.size:
                    points = centre[:, None] + unit[:, None] * (along[leaving[0]] + steps)
                    rays.append(ndimage.map_coordinates(image[:, :, k].astype(float), points, order=1,
                                                        mode="constant", cval=np.nan))
        with np.errstate(all="ignore"):
            result[name] = np.nanmean(rays, axis=0) if rays else np.full(steps.shape, np.nan)
    return result


def profile_distance(values: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of two profiles where both are defined."""
    both = np.isfinite(values) & np.isfinite(reference)
    return float(np.abs(values[both] - reference[both]).mean()) if both.any() else float("nan")


def histogram(values: np.ndarray, bins: int) -> np.ndarray:
    counts, _ = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return counts / max(counts.sum(), 1)


def distances(values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Wasserstein-1 distance (from 1024-bin CDFs on [0, 1]) and 64-bin histogram intersection."""
    fine = 1024
    cdf_gap = np.cumsum(histogram(values, fine)) - np.cumsum(histogram(reference, fine))
    return {"wasserstein": float(np.abs(cdf_gap).sum() / fine),
            "intersection": float(np.minimum(histogram(values, HISTOGRAM_BINS),
                                             histogram(reference, HISTOGRAM_BINS)).sum())}


def mean_sd(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def case_spacing(case) -> np.ndarray:
    """T2W voxel size (mm) of a phantom case."""
    import nibabel as nib

    return nib.affines.voxel_sizes(case.t2w_affine)


def case_measures(case) -> dict:
    """Grid, coil and volumes (ml) of one phantom case."""
    import nibabel as nib

    spacing = case_spacing(case)
    dwi_spacing = nib.affines.voxel_sizes(case.dwi_affine)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(case.zones.ravel(), minlength=5)
    return {
        "seed": case.seed,
        "shape": list(case.t2w.shape),
        "fov_mm": float(case.t2w.shape[0] * spacing[0]),
        "spacing_mm": float(spacing[0]),
        "slices": int(case.t2w.shape[2]),
        "thickness_mm": float(spacing[2]),
        "dwi_spacing_mm": float(dwi_spacing[0]),
        "dwi_fov_mm": [float(n * s) for n, s in zip(case.dwi.shape[:2], dwi_spacing[:2])],
        "endorectal_coil": bool(getattr(case, "endorectal_coil", False)),
        "lesions": int(case.lesion_count),
        "gland_ml": float(counts[1:].sum() * voxel_ml),
        **{f"{key}_ml": float(counts[index] * voxel_ml) for index, key in enumerate(ZONE_KEYS, start=1)},
    }


def load_real(real: Path) -> dict:
    from prostseg.data.io import load_volume

    t2w = load_volume(real / REAL_CASE[0])
    zones = load_volume(real / REAL_CASE[1], label=True)
    gland = zones.data > 0
    image = normalised(t2w.data)
    return {"image": image, "gland": gland, "spacing": t2w.spacing, "regions": regions(image, gland, t2w.spacing),
            "profiles": profiles(image, gland, t2w.spacing)}


def measure(generator, n_cases: int, real: dict | None) -> tuple[dict, list]:
    """Per-case measures and histogram distances; also the cases kept for the figure."""
    rows, kept, seconds = [], [], []
    for seed in range(n_cases):
        started = time.perf_counter()
        case = generator.make_phantom_case(seed)
        seconds.append(time.perf_counter() - started)
        row = case_measures(case)
        if real is not None:
            image, spacing = normalised(case.t2w), case_spacing(case)
            values = regions(image, case.zones > 0, spacing)
            row["distances"] = {name: distances(values[name], real["regions"][name]) for name in values}
            rays = profiles(image, case.zones > 0, spacing)
            row["profile_distances"] = {name: profile_distance(rays[name], real["profiles"][name]) for name in rays}
        rows.append(row)
        coil_shown = any(getattr(shown, "endorectal_coil", False) for shown in kept)
        if len(kept) < 3 or (len(kept) == 3 and row["endorectal_coil"] and not coil_shown):
            kept.append(case)
    return {"cases": rows, "seconds_per_case": common.summary(seconds)}, kept


def summarise(rows: list[dict]) -> dict:
    result = {f"{key}": mean_sd(row[key] for row in rows)
              for key in ("gland_ml", *(f"{z}_ml" for z in ZONE_KEYS), "fov_mm", "spacing_mm", "slices",
                          "thickness_mm", "dwi_spacing_mm")}
    for key in ("gland_ml", *(f"{z}_ml" for z in ZONE_KEYS)):
        result[key]["cv"] = result[key]["sd"] / result[key]["mean"] if result[key]["mean"] else float("nan")
    gland = np.array([row["gland_ml"] for row in rows])
    for zone in ZONE_KEYS:
        fraction = np.array([row[f"{zone}_ml"] for row in rows]) / gland
        result[f"{zone}_fraction"] = mean_sd(fraction)
    result["coil_fraction"] = float(np.mean([row["endorectal_coil"] for row in rows]))
    result["distinct_grids"] = len({(tuple(row["shape"]), round(row["spacing_mm"], 4)) for row in rows})
    if "distances" in rows[0]:
        result["distances"] = {
            region: {metric: mean_sd(row["distances"][region][metric] for row in rows)
                     for metric in ("wasserstein", "intersection")}
            for region in REGIONS}
        result["profile_distances"] = {name: mean_sd(row["profile_distances"][name] for row in rows)
                                       for name in PROFILE_DIRECTIONS}
    return result


def figure(kept: list, real: dict | None, path: Path) -> None:
    """Real mid-gland slice beside phantom slices; their normalised histograms and profiles."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from prostseg.viz import show_slice

    panels = ([("real: ProstateX-0000", real["image"], real["gland"], real["spacing"])] if real else [])
    for case in kept:
        coil = ", endorectal coil" if getattr(case, "endorectal_coil", False) else ""
        spacing = case_spacing(case)
        title = (f"phantom seed {case.seed}: {case.t2w.shape[0]}x{case.t2w.shape[1]}x{case.t2w.shape[2]}, "
                 f"{spacing[0]:.2f} mm{coil}")
        panels.append((title, normalised(case.t2w), case.zones > 0, spacing))
    columns = len(panels)
    fig = Figure(figsize=(4.2 * max(columns, 5), 8.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    colours = ["black", "tab:blue", "tab:orange", "tab:green", "tab:red"]
    plot_axes = bottom.subplots(1, 5)
    centres = (np.arange(HISTOGRAM_BINS) + 0.5) / HISTOGRAM_BINS
    for index, (title, image, gland, spacing) in enumerate(panels):
        k = int(np.argmax(gland.sum(axis=(0, 1))))
        ax = top.add_subplot(1, columns, index + 1)
        show_slice(image[:, :, k], ax=ax, spacing=spacing[:2])
        ax.contour(np.flip(gland[:, :, k], (0, 1)).T, levels=[0.5], colors=colours[index], linewidths=0.8)
        ax.set_title(title, fontsize=9)
        style = {"color": colours[index], "lw": 2.2 if index == 0 and real else 1.2, "label": title.split(":")[0]}
        values = regions(image, gland, spacing)
        for ax_plot, region in zip(plot_axes, REGIONS):
            ax_plot.plot(centres, histogram(values[region], HISTOGRAM_BINS), **style)
        for ax_plot, (name, profile) in zip(plot_axes[3:], profiles(image, gland, spacing).items()):
            ax_plot.plot(np.arange(PROFILE_MM + 1), profile, **style)
    titles = ("slices through the gland", "gland", f"within {SURROUNDINGS_MM:.0f} mm of it")
    for ax_plot, title in zip(plot_axes, titles):
        ax_plot.set_title(f"normalised T2W, {title}", fontsize=10)
        ax_plot.set_xlabel("intensity (1st-99th percentile -> [0, 1])")
    plot_axes[0].set_ylabel("fraction of voxels")
    for ax_plot, name in zip(plot_axes[3:], PROFILE_DIRECTIONS):
        ax_plot.set_title(f"{name} profile from the gland's edge", fontsize=10)
        ax_plot.set_xlabel("mm beyond the gland")
        ax_plot.set_ylim(0, 1)
    plot_axes[3].set_ylabel("mean normalised T2W")
    plot_axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=64)


def markdown(info: dict, quick: bool, summary: dict, seconds: dict, n_cases: int, generator_name: str) -> str:
    md = [common.heading(f"Phantom realism: {n_cases} patients of {generator_name} against ProstateX-0000",
                         info, quick)]
    rows = []
    for key, label in (("gland_ml", "gland"), ("pz_ml", "PZ"), ("tz_ml", "TZ"), ("cz_ml", "CZ"),
                       ("afs_ml", "AFS")):
        s = summary[key]
        rows.append([label, s["mean"], s["sd"], s["cv"], f"{s['min']:.3g}-{s['max']:.3g}"])
    md.append("Volumes (ml) across the generated set:\n")
    md.append(common.table(["structure", "mean ml", "SD ml", "CV", "min-max ml"], rows))
    fractions = ", ".join(f"{z.upper()} {summary[f'{z}_fraction']['mean']:.2f}" for z in ZONE_KEYS)
    md.append(f"\nMean zone fractions of the gland: {fractions}.\n")
    rows = [[label, summary[key]["mean"], f"{summary[key]['min']:.3g}-{summary[key]['max']:.3g}"]
            for key, label in (("fov_mm", "T2W field of view (mm)"), ("spacing_mm", "T2W in-plane spacing (mm)"),
                               ("slices", "slices"), ("thickness_mm", "slice thickness (mm)"),
                               ("dwi_spacing_mm", "DWI/ADC in-plane spacing (mm)"))]
    md.append(common.table(["drawn per patient", "mean", "range"], rows))
    md.append(f"\n{summary['distinct_grids']} distinct T2W grids in {n_cases} cases; endorectal coil in "
              f"{summary['coil_fraction']:.0%} of the cases. Generation: median {seconds['median_s']:.3g} s per "
              f"case (min {seconds['min_s']:.3g}, max {seconds['max_s']:.3g}).\n")
    if "distances" in summary:
        def cell(measured: dict | None) -> str:
            return f"{measured['mean']:.3f} +- {measured['sd']:.3f}" if measured else "-"

        rows = []
        for region in REGIONS:
            for metric, better in (("wasserstein", "lower"), ("intersection", "higher")):
                recorded = [reference.get(region, {}).get(metric) for reference in REFERENCES.values()]
                rows.append([region, f"{metric} ({better} is closer)", cell(summary["distances"][region][metric]),
                             *map(cell, recorded)])
        for name in PROFILE_DIRECTIONS:
            recorded = [reference.get("profiles", {}).get(name) for reference in REFERENCES.values()]
            rows.append([f"{name} profile", "mean abs. difference (lower is closer)",
                         cell(summary["profile_distances"][name]), *map(cell, recorded)])
        md.append("Normalised T2W against ProstateX-0000 (mean +- SD over the cases): intensity histograms of "
                  f"the slices through the gland, of the gland and of its surroundings (within {SURROUNDINGS_MM:.0f} "
                  f"mm), and intensity profiles 0-{PROFILE_MM} mm beyond the gland's edge:\n")
        md.append(common.table(["region", "distance", f"{generator_name}",
                                *(f"generator {version} (recorded)" for version in REFERENCES)], rows))
        md.append("\n" + "\n".join(f"{version} reference: {reference['measured']}."
                                     for version, reference in REFERENCES.items()))
    else:
        md.append(f"Histogram comparison skipped: {common.REAL_DATA_ENV} is not set.")
    return "\n".join(md)


def main(argv=None) -> int:
    arg_parser = common.parser(__doc__.split("\n")[0])
    arg_parser.add_argument("--cases", type=int, default=50, help="number of generated patients (default 50)")
    arg_parser.add_argument("--generator", type=Path, default=None,
                            help="measure this copy of prostseg/data/phantom.py instead of the installed module")
    arg_parser.add_argument("--no-figure", action="store_true", help="do not write phantom_realism.png")
    args = arg_parser.parse_args(argv)
    n_cases = 3 if args.quick else args.cases
    generator = load_generator(args.generator)
    generator_name = f"generator v{generator.GENERATOR_VERSION}"
    info = common.machine_info(with_tensorflow=False)
    real_dir = common.real_data_dir()
    real = load_real(real_dir) if real_dir is not None else None
    measured, kept = measure(generator, n_cases, real)
    summary = summarise(measured["cases"])
    if not args.no_figure:
        figure(kept, real, args.out / f"{NAME}.png")
    results = {"benchmark": NAME, "quick": args.quick, "machine": info, "generator": generator_name,
               "generator_file": str(args.generator) if args.generator else "prostseg.data.phantom",
               "n_cases": n_cases, "real_case": REAL_CASE[0] if real else None, "summary": summary,
               "seconds_per_case": measured["seconds_per_case"], "references": REFERENCES,
               "cases": measured["cases"]}
    common.write_results(args.out, NAME, results,
                         markdown(info, args.quick, summary, measured["seconds_per_case"], n_cases, generator_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
