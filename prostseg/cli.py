"""The ``prostseg`` command line.

Each subcommand parses its arguments here and calls the module that does the work;
modules are imported only when their command runs, so ``prostseg --help`` stays fast
and does not start TensorFlow.

Examples
--------
Write four phantom cases, then list the public dataset manifests::

    prostseg phantom data/phantom --cases 4 --seed 0
    prostseg data list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prostseg.errors import ProstsegError


def _add_phantom_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic prostate MRI cases (the embedded default dataset)",
        description="Write N synthetic cases (T2W, DWI, ADC, zones, lesion) in the case layout.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the cases into")
    parser.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing cases")
    parser.set_defaults(handler=_run_phantom)


def _run_phantom(args) -> int:
    from prostseg.phantom import write_phantom_dataset

    cases = write_phantom_dataset(
        args.out_dir, n_cases=args.cases, seed=args.seed, overwrite=args.overwrite
    )
    for case_dir in cases:
        print(case_dir)
    return 0


def _add_data_commands(subparsers) -> None:
    """``prostseg data ...``: list, fetch, import and verify public datasets."""
    data = subparsers.add_parser(
        "data",
        help="public prostate MRI datasets: list, show, fetch, import, verify",
        description="Work with the dataset manifests in data_manifests/.",
    )
    actions = data.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list the known datasets").set_defaults(
        handler=_run_data_list
    )
    show = actions.add_parser("show", help="print a dataset's manifest")
    show.add_argument("name", help="manifest name (see 'prostseg data list') or JSON path")
    show.set_defaults(handler=_run_data_show)
    fetch = actions.add_parser("fetch", help="download (needs network) and import a dataset")
    fetch.add_argument("name", help="manifest name or JSON path")
    fetch.add_argument("dest", type=Path, help="folder to write the cases into")
    fetch.add_argument("--cache", type=Path, help="folder for the downloaded archives")
    fetch.add_argument("--overwrite", action="store_true", help="replace existing cases")
    fetch.set_defaults(handler=_run_data_fetch)
    imp = actions.add_parser("import", help="import a dataset you already have (offline)")
    imp.add_argument("name", help="manifest name or JSON path")
    imp.add_argument("source", type=Path, help="folder with the archives or their contents")
    imp.add_argument("dest", type=Path, help="folder to write the cases into")
    imp.add_argument("--overwrite", action="store_true", help="replace existing cases")
    imp.set_defaults(handler=_run_data_import)
    verify = actions.add_parser("verify", help="re-check archives and imported cases")
    verify.add_argument("name", help="manifest name or JSON path")
    verify.add_argument("dest", type=Path, help="folder the cases were imported into")
    verify.add_argument("--cache", type=Path, help="folder holding the downloaded archives")
    verify.set_defaults(handler=_run_data_verify)


def _run_data_list(args) -> int:
    from prostseg.manifests import list_manifests

    for manifest in list_manifests():
        print(f"{manifest.name:<20} {manifest.title}  [{'; '.join(manifest.licence_names)}]")
    return 0


def _run_data_show(args) -> int:
    from prostseg.manifests import describe, load_manifest

    print(describe(load_manifest(args.name)))
    return 0


def _run_data_fetch(args) -> int:
    from prostseg.manifests import fetch

    cases = fetch(args.name, args.dest, overwrite=args.overwrite, cache_dir=args.cache)
    print(f"{len(cases)} case(s) written to {args.dest}")
    return 0


def _run_data_import(args) -> int:
    from prostseg.manifests import import_local

    cases = import_local(args.name, args.source, args.dest, overwrite=args.overwrite)
    print(f"{len(cases)} case(s) written to {args.dest}")
    return 0


def _run_data_verify(args) -> int:
    from prostseg.manifests import verify

    report = verify(args.name, args.dest, cache_dir=args.cache)
    for line in report.checked:
        print(line)
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _add_register_commands(subparsers) -> None:
    """``prostseg register`` (one volume) and ``prostseg register-case`` (a case folder)."""
    parser = subparsers.add_parser(
        "register",
        help="align a moving volume (ADC, DWI) onto a fixed T2W grid with elastix",
        description="Register MOVING onto FIXED (mutual information) and write it on the "
        "fixed grid; with --label, apply a saved transform to a label map instead.",
    )
    parser.add_argument("--fixed", type=Path, required=True, help="fixed volume (T2W)")
    parser.add_argument("--moving", type=Path, required=True, help="moving volume or label map")
    parser.add_argument("--out", type=Path, required=True, help="output NIfTI on the fixed grid")
    parser.add_argument(
        "--transforms", nargs="+", choices=("rigid", "affine", "bspline"), default=None,
        help="transforms to estimate, in order (default: rigid)",
    )
    parser.add_argument(
        "--label", action="store_true",
        help="MOVING is a label map: resample it (nearest neighbour) with --transform",
    )
    parser.add_argument("--transform", type=Path, help="saved transform file (with --label)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(handler=_run_register)

    case_parser = subparsers.add_parser(
        "register-case",
        help="align a case's DWI and ADC onto its T2W and write the 3-channel stack",
        description="Write CASE/aligned/: dwi, adc, transforms, registration.json and "
        "stack.nii.gz (T2W, DWI, ADC on the T2W grid), the input of the Pix2Pix pipeline.",
    )
    case_parser.add_argument("case_dir", type=Path, help="case folder (t2w, dwi or hbv, adc)")
    case_parser.add_argument("--overwrite", action="store_true", help="replace CASE/aligned")
    case_parser.set_defaults(handler=_run_register_case)


def _run_register(args) -> int:
    from prostseg.errors import InputError
    from prostseg.io import load_volume, save_like
    from prostseg import registration

    fixed = load_volume(args.fixed)
    if args.label:
        if args.transform is None:
            raise InputError(args.moving, "--label needs --transform (a file written by prostseg register)")
        aligned = registration.resample_to(args.moving, fixed, args.transform, label=True)
        print(save_like(aligned.data, fixed, args.out, overwrite=args.overwrite))
        return 0
    transform_path = args.out.with_name(args.out.name.split(".")[0] + "_transform.txt")
    for path in (args.out, transform_path):
        if path.exists() and not args.overwrite:
            raise InputError(path, "already exists; pass --overwrite to replace it")
    transforms = tuple(args.transforms) if args.transforms else registration.DEFAULT_TRANSFORMS
    result = registration.register(fixed, args.moving, transforms=transforms)
    print(save_like(result.aligned.data, fixed, args.out, overwrite=args.overwrite))
    for path in registration.save_transform(result, transform_path, overwrite=args.overwrite):
        print(path)
    print(f"{_mutual_information_change(result.quality)} ({result.quality['seconds']:.1f} s)")
    return 0


def _run_register_case(args) -> int:
    import json

    from prostseg.registration import register_case

    out_dir = register_case(args.case_dir, overwrite=args.overwrite)
    print(out_dir)
    report = json.loads((out_dir / "registration.json").read_text())
    for modality in ("dwi", "adc"):
        print(f"{modality}: {_mutual_information_change(report[modality])}")
    print(f"{report['seconds']:.1f} s")
    return 0


def _mutual_information_change(quality: dict) -> str:
    return f"mutual information {quality['mi_before']:.3f} -> {quality['mi_after']:.3f}"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``prostseg`` command."""
    parser = argparse.ArgumentParser(
        prog="prostseg", description="Prostate MRI segmentation: data, training, evaluation."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_phantom_command(subparsers)
    _add_data_commands(subparsers)
    _add_register_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``prostseg`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ProstsegError as err:
        print(f"prostseg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
