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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``prostseg`` command."""
    parser = argparse.ArgumentParser(
        prog="prostseg", description="Prostate MRI segmentation: data, training, evaluation."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_phantom_command(subparsers)
    _add_data_commands(subparsers)
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
