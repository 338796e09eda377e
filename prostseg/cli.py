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
import dataclasses
import inspect
import json
import re
import shutil
import sys
import typing
import warnings
from pathlib import Path

from prostseg import console
from prostseg.data import manifests, phantom
from prostseg.data.dataset import (
    ALIGNED_FOLDER, FILE_ALIASES, LESION_VALUES, MASKS, REGISTRATION_FILE, STACK, check_output_outside_inputs,
    volume_file,
)
from prostseg.data.io import load_volume, save_like
from prostseg.errors import (
    COUNT, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, PROBABILITY, InputError, Interval, ProstsegError,
)
from prostseg.networks import runs
from prostseg.networks.recipes import recipe, recipes
from prostseg.preparation import registration
from prostseg.preparation.slice_cache import SliceSpec, prepare_dataset
from prostseg.use.export import export_model, load_exported


def _within(interval: Interval):
    """An argparse type: the number a flag's text stands for, if ``interval`` holds it."""
    def parse(text: str):
        try:
            return interval.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = interval.describe()
    return parse


#: Suffixes of files the commands write, by what they hold.
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _check_suffix(path: Path, suffixes: tuple[str, ...], what: str, flag: str = "--out") -> None:
    """Refuse an output name that does not end in one of ``suffixes``."""
    if not path.name.lower().endswith(suffixes):
        raise ProstsegError(f"{flag} {path}: {what} is written as {' or '.join(suffixes)}; "
                            f"give a name ending in {suffixes[0]}")


def _add_phantom_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic prostate MRI cases (the embedded default dataset)",
        description="Write N synthetic cases (T2W, DWI, ADC, zones, lesion) in the case layout, each "
                    "patient on a grid of its own.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the cases into")
    parser.add_argument("--cases", type=_within(COUNT), default=8, help="number of cases (default 8)")
    parser.add_argument("--seed", type=_within(NON_NEGATIVE_INT), default=0, help="random seed (default 0)")
    parser.add_argument("--contrast", choices=("realistic", "random", "mixed"),
                        help="T2W tissue contrast: realistic (default), random per tissue and scan "
                             "(SynthSeg style), or a coin toss per scan between the two")
    parser.add_argument("--overwrite", action="store_true", help="replace existing cases")
    parser.set_defaults(handler=_run_phantom)


def _run_phantom(args) -> int:
    options = {} if args.contrast is None else {"contrast": args.contrast}
    cases = phantom.write_phantom_dataset(
        args.out_dir, n_cases=args.cases, seed=args.seed, overwrite=args.overwrite, **options
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
    _data_action(actions, "show", "print a dataset's manifest", _run_data_show,
                 name_help="manifest name (see 'prostseg data list') or JSON path")
    fetch = _data_action(actions, "fetch", "download (needs network) and import a dataset", _run_data_fetch)
    fetch.add_argument("dest", type=Path, help="folder to write the cases into")
    fetch.add_argument("--cache", type=Path, help="folder for the downloaded archives or files")
    fetch.add_argument("--overwrite", action="store_true", help="replace existing cases")
    which = fetch.add_mutually_exclusive_group()
    which.add_argument("--cases", type=_within(COUNT), metavar="N",
                       help="only the first N cases of the manifest's index, in sorted order")
    which.add_argument("--case-ids", nargs="+", metavar="ID", help="only these cases")
    fetch.add_argument("--workers", type=_within(COUNT), default=1, metavar="K",
                       help="files downloaded at the same time (default 1)")
    fetch.add_argument("--mirror", metavar="BASE_URL",
                       help="download from this copy of the source (same file paths below it)")
    imp = _data_action(actions, "import", "import a dataset you already have (offline)", _run_data_import)
    imp.add_argument("source", type=Path, help="folder with the archives or their contents")
    imp.add_argument("dest", type=Path, help="folder to write the cases into")
    imp.add_argument("--overwrite", action="store_true", help="replace existing cases")
    verify = _data_action(actions, "verify", "re-check archives and imported cases", _run_data_verify)
    verify.add_argument("dest", type=Path, help="folder the cases were imported into")
    verify.add_argument("--cache", type=Path, help="folder holding the downloaded archives")


def _data_action(actions, action: str, help_text: str, handler, *,
                 name_help: str = "manifest name or JSON path") -> argparse.ArgumentParser:
    """The parser of ``prostseg data ACTION NAME ...``: a dataset manifest named first."""
    parser = actions.add_parser(action, help=help_text)
    parser.add_argument("name", help=name_help)
    parser.set_defaults(handler=handler)
    return parser


def _run_data_list(args) -> int:
    # as wide as the terminal, like argparse's help ($COLUMNS, else the terminal, else 80)
    print(manifests.describe_list(manifests.list_manifests(), width=shutil.get_terminal_size().columns))
    return 0


def _run_data_show(args) -> int:
    print(manifests.describe(manifests.load_manifest(args.name)))
    return 0


def _run_data_fetch(args) -> int:
    return _written(manifests.fetch(args.name, args.dest, overwrite=args.overwrite, cache_dir=args.cache,
                                    cases=args.cases, case_ids=args.case_ids, workers=args.workers,
                                    mirror=args.mirror), args.dest)


def _run_data_import(args) -> int:
    check_output_outside_inputs(args.dest, [args.source], flag="DEST")
    return _written(manifests.import_local(args.name, args.source, args.dest, overwrite=args.overwrite),
                    args.dest)


def _written(cases, dest: Path) -> int:
    held = sum(1 for entry in dest.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    print(f"{len(cases)} case(s) written to {dest}, which holds {held} case(s) in all")
    return 0


def _run_data_verify(args) -> int:
    report = manifests.verify(args.name, args.dest, cache_dir=args.cache)
    for line in report.checked:
        print(line)
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _add_transforms_flag(parser) -> None:
    parser.add_argument(
        "--transforms", nargs="+", choices=("rigid", "affine", "bspline"), default=None,
        help="transforms to estimate, in order (default: rigid)",
    )


def _add_where_flags(parser) -> None:
    """Where the cases of a data folder run: --workers here, or --scheduler on Dask."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_within(COUNT), help="cases at a time on this machine "
                       "(default: its cores; 1: one after the other in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster of this scheduler (e.g. tcp://node1:8786)")


def _print_case_counts(result) -> None:
    """The count of each status of a run over cases, and each failed case on stderr."""
    print(", ".join(f"{count} {status}" for status, count in result.counts().items()))
    for row in result.failed:
        print(f"FAILED {row['case']}: {row['error']}", file=sys.stderr)


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
    _add_transforms_flag(parser)
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
        description=f"Write CASE/{ALIGNED_FOLDER}/: dwi, adc, transforms, {REGISTRATION_FILE} and "
        f"{volume_file(STACK)} (T2W, DWI, ADC on the T2W grid), the input of the Pix2Pix pipeline.",
    )
    case_parser.add_argument("case_dir", type=Path,
                             help=f"case folder (t2w, dwi or {', '.join(FILE_ALIASES)}, adc)")
    case_parser.add_argument("--overwrite", action="store_true",
                             help=f"replace CASE/{ALIGNED_FOLDER}")
    case_parser.set_defaults(handler=_run_register_case)

    dataset_parser = subparsers.add_parser(
        "register-dataset",
        help="register every case of a data folder that lacks up-to-date results, in parallel",
        description=f"Run register-case on every case of DATA_DIR whose {ALIGNED_FOLDER}/ folder "
        "is missing or out of date (inputs or parameters changed, run interrupted), several at a "
        "time, here or on a Dask cluster. Writes a summary CSV; exits 1 if any case failed.",
    )
    dataset_parser.add_argument("data_dir", type=Path, help="folder of case folders")
    _add_where_flags(dataset_parser)
    dataset_parser.add_argument("--threads", type=_within(COUNT), help="elastix/ITK threads per case "
                                "(default: cores / workers; 1 on Dask)")
    _add_transforms_flag(dataset_parser)
    dataset_parser.add_argument("--summary", type=Path,
                                help="summary CSV (default: DATA_DIR/registration_summary.csv)")
    dataset_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    dataset_parser.add_argument("--overwrite", action="store_true",
                                help="register every case again, replacing its "
                                f"{ALIGNED_FOLDER}/ results")
    dataset_parser.set_defaults(handler=_run_register_dataset)


def _run_register(args) -> int:
    _check_suffix(args.out, _NIFTI_SUFFIXES, "the aligned volume")
    transform_path = args.out.with_name(args.out.name.split(".")[0] + "_transform.txt")
    for path in (args.out, transform_path):
        check_output_outside_inputs(path, [args.fixed, args.moving, args.transform], flag="--out")
    fixed = load_volume(args.fixed)
    if args.label:
        if args.transform is None:
            raise InputError(args.moving, "--label needs --transform (a file written by prostseg register)")
        aligned = registration.resample_to(args.moving, fixed, args.transform, label=True)
        print(save_like(aligned.data, fixed, args.out, overwrite=args.overwrite))
        return 0
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
    out_dir = registration.register_case(args.case_dir, overwrite=args.overwrite)
    print(out_dir)
    report = json.loads((out_dir / REGISTRATION_FILE).read_text(encoding="utf-8"))
    for modality in ("dwi", "adc"):
        print(f"{modality}: {_mutual_information_change(report[modality])}")
    print(f"{report['seconds']:.1f} s")
    return 0


def _run_register_dataset(args) -> int:
    _check_summary_and_cache(args)
    summary = args.summary or args.data_dir / "registration_summary.csv"
    result = registration.register_dataset(
        args.data_dir, workers=args.workers, client=args.scheduler, threads=args.threads,
        transforms=tuple(args.transforms or registration.DEFAULT_TRANSFORMS),
        overwrite=args.overwrite, summary_csv=summary, progress=not args.no_progress,
    )
    _print_case_counts(result)
    print(f"summary: {summary}")
    return 1 if result.failed else 0


def _add_prepare_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="write every case's prepared training slices once, for fast training (disk cache)",
        description="Prepare the training slices of every case of DATA_DIR whose cache entry is "
        "missing or out of date (inputs or settings changed), several at a time, here or on a Dask "
        "cluster, into CACHE_DIR/SPEC/CASE.tfrecord; train with --slice-cache CACHE_DIR and the "
        "same settings. Writes a summary CSV; exits 1 if any case failed.",
    )
    parser.add_argument("data_dir", type=Path, help="folder of case folders")
    parser.add_argument("--model", choices=("unet", "pix2pix"), required=True,
                        help="the model: U-Net (T2W + mask) or Pix2Pix (registered stack + zones)")
    parser.add_argument("--image-size", type=_within(COUNT),
                        help="side of the square slices (default 384 U-Net, 256 Pix2Pix)")
    parser.add_argument("--target-spacing", type=_within(POSITIVE), metavar="MM",
                        help="resample slices to this in-plane spacing (mm), as in training")
    parser.add_argument("--label", choices=MASKS, default="lesion",
                        help="U-Net mask: lesion, the whole gland as non-zero zones, or a gland mask")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: DATA_DIR/.prepared)")
    _add_where_flags(parser)
    parser.add_argument("--summary", type=Path,
                        help="summary CSV (default: CACHE_DIR/SPEC/summary.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="prepare every case again")
    parser.set_defaults(handler=_run_prepare)


def _check_summary_and_cache(args) -> None:
    """The summary CSV and a cache folder lie outside the case folders they are made from."""
    if args.summary is not None:
        _check_suffix(args.summary, (".csv",), "the summary", "--summary")
        check_output_outside_inputs(args.summary, [args.data_dir], flag="--summary")
    if getattr(args, "cache_dir", None) is not None:
        check_output_outside_inputs(args.cache_dir, [args.data_dir], flag="--cache-dir")


def _run_prepare(args) -> int:
    _check_summary_and_cache(args)
    try:
        spec = SliceSpec(args.model, args.image_size, args.target_spacing, args.label)
    except ValueError as err:
        raise ProstsegError(f"invalid settings: {err}") from None
    result = prepare_dataset(args.data_dir, spec, cache_dir=args.cache_dir,
                             workers=args.workers, client=args.scheduler, overwrite=args.overwrite,
                             summary_csv=args.summary, progress=not args.no_progress)
    _print_case_counts(result)
    print(f"slices: {result.folder}")
    print(f"summary: {result.summary_csv}")
    return 1 if result.failed else 0


def _mutual_information_change(quality: dict) -> str:
    return f"mutual information {quality['mi_before']:.3f} -> {quality['mi_after']:.3f}"


#: Training flags named otherwise than their configuration field.
_TRAIN_FLAGS = {"output_dir": "out"}


def _field_docs(config_class) -> dict[str, str]:
    """The first sentence of each field's entry in the configuration's docstrings.

    The model's own class comes first; the U-Net configuration documents the fields both
    models share.
    """
    docs = {}
    for cls in (runs.UNetTrainingConfig, config_class):
        section = re.search(r"^Parameters\n-+\n(.*?)(?=^\w+\n-+\n|\Z)",
                            inspect.cleandoc(cls.__doc__), re.S | re.M).group(1)
        for entry in re.finditer(r"^(\S[^\n]*?) : [^\n]*\n((?:[ \t]+\S[^\n]*\n?)*)", section, re.M):
            text = re.sub(r":\w+:`~?([^`]+)`", r"\1", " ".join(entry.group(2).split()))
            text = re.sub(r"(?<![a-z.]\.[a-z])(?<!e\.g)(?<!i\.e)\. .*", ".", text)
            if text.startswith("As for"):  # the U-Net's entry says it
                continue
            text = re.sub(r"\*(\w[^*]*)\*", r"\1", text.replace("``", "")).replace("%", "%%")
            for name in entry.group(1).split(", "):
                docs[name] = text
    return docs


def _add_config_flags(parser, config_class) -> None:
    """One flag per field of ``config_class``, typed, with its choices and documentation."""
    docs = _field_docs(config_class)
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        flag = "--" + _TRAIN_FLAGS.get(field.name, field.name).replace("_", "-")
        kind = next(t for t in typing.get_args(hints[field.name]) or (hints[field.name],)
                    if t is not type(None))
        options = {"dest": field.name, "help": docs[field.name]}
        if kind is bool:
            options.update(action=argparse.BooleanOptionalAction, default=None)
        elif field.name in runs.FIELD_RANGES:
            options.update(type=_within(runs.FIELD_RANGES[field.name]))
        else:
            options.update(type=kind, choices=runs.FIELD_CHOICES.get(field.name))
        parser.add_argument(flag, **options)


def _add_train_commands(subparsers) -> None:
    """``prostseg train unet|pix2pix``: options override a --config file's settings.

    One subcommand per model kind that has a configuration class
    (:mod:`prostseg.networks.recipes`); its options are the fields of that class, documented there.
    """
    train = subparsers.add_parser(
        "train",
        help="train a U-Net or Pix2Pix model (resumable; see prostseg.training.loop)",
        description="Train a model into an output folder; rerun the same command to resume.",
    )
    models = train.add_subparsers(dest="model", required=True)
    for trained in (known for known in recipes() if known.config is not None):
        help_text = f"train {trained.takes}"
        parser = models.add_parser(trained.kind, help=help_text, description=help_text)
        parser.add_argument("--config", type=Path, help="JSON configuration (e.g. a run's config.json)")
        _add_config_flags(parser, trained.config)
        parser.add_argument("--overwrite", action="store_true",
                            help="replace another run (or other files) in --out")
        parser.set_defaults(handler=_run_train)


def _training_config(args):
    """The configuration of a ``prostseg train`` command: its --config file, then its flags."""
    config_class = recipe(args.model).config
    settings = {}
    if args.config is not None:
        base = runs.load_config(args.config)
        if not isinstance(base, config_class):
            raise InputError(args.config, f"is a {base.KIND} configuration, not {args.model}")
        settings = base.to_dict()
    for field in dataclasses.fields(config_class):
        if getattr(args, field.name) is not None:
            settings[field.name] = getattr(args, field.name)
    if settings.get("split_file") is not None:
        given = [flag for flag in ("val_fraction", "test_fraction") if getattr(args, flag) is not None]
        if given:
            raise ProstsegError(f"--{given[0].replace('_', '-')} has no effect with a split file "
                                "(--split-file), which fixes the patients of each part; give one of the two")
    for key in ("data_dir", "output_dir"):
        if key not in settings:
            raise ProstsegError(f"--{_TRAIN_FLAGS.get(key, key).replace('_', '-')} is required "
                                "(or a --config file that gives it)")
    try:
        return config_class.from_dict(settings)
    except ValueError as err:
        raise ProstsegError(f"invalid training settings: {err}") from None


def _run_train(args) -> int:
    from prostseg.training import loop as training  # TensorFlow only when training

    config = _training_config(args)
    result = training.TRAINERS[args.model](config, overwrite=args.overwrite)
    print(f"model: {result.model_path}")
    print(f"history: {result.history_path} ({result.epochs_completed} epochs)")
    print("best epoch: " + ", ".join(f"{key} {value:.4g}" for key, value in result.best.items()))
    return 0


def _add_predict_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment cases or volumes with a trained or exported model",
        description="Write predicted label maps as NIfTI aligned to the source images: one file "
                    "(--out FILE.nii.gz, one --image), or a folder of CASE_ID.nii.gz with a summary.csv "
                    "(--out FOLDER); a rerun skips the cases already predicted.",
    )
    parser.add_argument("--model", type=Path, required=True,
                        help=".keras model file, or an exported model.onnx / saved_model folder")
    parser.add_argument("--image", type=Path, required=True, nargs="+",
                        help="case folders, volume files (T2W for a U-Net, registered stack for Pix2Pix), "
                             "DICOM series folders, data folders of them, or .txt lists of them")
    parser.add_argument("--out", type=Path, required=True, help="output .nii.gz file, or output folder")
    parser.add_argument("--threshold", type=_within(PROBABILITY), default=0.5,
                        help="U-Net probability threshold, in (0, 1) (default 0.5)")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest connected component of the predicted gland (removes islands)")
    parser.add_argument("--min-lesion-size", type=_within(NON_NEGATIVE), default=None, metavar="MM3",
                        help="remove predicted components smaller than this volume (mm³)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average over the 8 flips and quarter turns")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write OUT/probabilities/CASE_ID.nii.gz (16-bit; folder output only)")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="also write OUT/CASE_ID.seg.dcm, a DICOM Segmentation, for DICOM series inputs")
    parser.add_argument("--target-spacing", type=_within(POSITIVE), default=None, metavar="MM",
                        help="in-plane spacing the model was trained at; read from the run's config.json "
                             "when the model file lies in its run folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(handler=_run_predict)


def _run_predict(args) -> int:
    from prostseg.use.batch import predict_batch  # TensorFlow only when predicting
    from prostseg.use.inference import predict_case

    options = dict(threshold=args.threshold, target_spacing=args.target_spacing,
                   largest_component=args.largest_component, min_lesion_size=args.min_lesion_size,
                   tta=args.tta, overwrite=args.overwrite)
    if args.out.suffix and not args.out.is_dir() and not args.out.name.lower().endswith(_NIFTI_SUFFIXES):
        raise ProstsegError(f"--out {args.out}: predict writes a NIfTI file (.nii.gz) for one image, "
                            "or a folder (a name without an extension) for several")
    if args.out.name.lower().endswith(_NIFTI_SUFFIXES):
        if len(args.image) != 1 or args.probabilities or args.dicom_seg:
            raise ProstsegError("--out FILE.nii.gz takes one --image and writes labels only; "
                                "give an output folder for several images, --probabilities or --dicom-seg")
        print(predict_case(args.model, args.image[0], args.out, **options))
        return 0
    result = predict_batch(args.model, args.image, args.out, probabilities=args.probabilities,
                           dicom_seg=args.dicom_seg, progress=not args.no_progress, **options)
    counts = {status: sum(row["status"] == status for row in result.rows)
              for status in ("predicted", "skipped", "failed")}
    print(", ".join(f"{count} {status}" for status, count in counts.items()))
    for row in result.rows:
        if row["status"] == "failed":
            print(f"failed: {row['error']}", file=sys.stderr)
    print(result.summary_path)
    return 1 if result.failed else 0


def _add_export_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained model as a SavedModel and an ONNX model for serving",
        description="Write OUT/saved_model/ and OUT/model.onnx, each carrying the model's "
                    "preprocessing contract (input size, channels, normalisation, spacing).",
    )
    parser.add_argument("--model", type=Path, required=True, help=".keras model file (best in its run folder)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the exports into")
    parser.add_argument("--format", dest="formats", action="append", choices=("savedmodel", "onnx"),
                        help="format to write (repeat for both; default both)")
    parser.add_argument("--target-spacing", type=_within(POSITIVE), default=None, metavar="MM",
                        help="in-plane spacing the model was trained at, when no run config.json records it")
    parser.add_argument("--label", choices=MASKS, default=None,
                        help="what a one-channel U-Net segments, when no run config.json records it")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exports")
    parser.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    if args.out.suffix and not args.out.is_dir():
        raise ProstsegError(f"--out {args.out}: export writes a folder (saved_model/ and model.onnx); "
                            "give a name without an extension")
    paths = export_model(args.model, args.out, formats=tuple(args.formats or ("savedmodel", "onnx")),
                         target_spacing=args.target_spacing, label=args.label, overwrite=args.overwrite)
    for path in paths.values():
        print(path)
    print(json.dumps(load_exported(next(iter(paths.values()))).contract, indent=2))
    return 0


def _add_evaluate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a folder of predictions against the masks of a data folder",
        description="Per-case 3D IoU and Dice (and their mean) written to CSV.",
    )
    parser.add_argument("--pred-dir", type=Path, required=True, help="folder of CASE_ID.nii.gz predictions")
    parser.add_argument("--truth-dir", type=Path, required=True, help="data folder with the true masks")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--label", choices=MASKS, default="lesion", help="truth mask (default lesion)")
    parser.add_argument("--per-zone", action="store_true", help="score each zone (needs --label zones)")
    parser.add_argument("--figure", type=Path, help="PNG file for a best/worst case overlay")
    parser.add_argument("--lesion-value", type=int, choices=LESION_VALUES, default=1,
                        help="value of lesion voxels in the lesion masks and predictions (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from prostseg.use.inference import evaluate_folder  # TensorFlow only when evaluating

    if args.per_zone and args.label != "zones":
        raise ProstsegError("--per-zone needs --label zones")
    _check_suffix(args.out, (".csv",), "the score table")
    if args.figure is not None:
        _check_suffix(args.figure, (".png",), "the figure", "--figure")
    result = evaluate_folder(args.pred_dir, args.truth_dir, out_csv=args.out, label=args.label,
                             per_zone=args.per_zone, out_figure=args.figure, lesion_value=args.lesion_value,
                             overwrite=args.overwrite)
    print(f"{len(result.rows)} case(s): mean IoU {result.mean['iou']:.4f}, mean Dice {result.mean['dice']:.4f}")
    print(result.csv_path)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``prostseg COMMAND: error: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``prostseg`` command."""
    parser = _Parser(
        prog="prostseg", description="Prostate MRI segmentation: data, training, evaluation."
    )
    parser.add_argument("--verbose", action="store_true", dest="show_native_output",
                        help="show what TensorFlow, CUDA, ITK and elastix print (hidden by default)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_phantom_command(subparsers)
    _add_data_commands(subparsers)
    _add_register_commands(subparsers)
    _add_prepare_command(subparsers)
    _add_train_commands(subparsers)
    _add_predict_command(subparsers)
    _add_export_command(subparsers)
    _add_evaluate_command(subparsers)
    return parser


def _option_names(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{keyword: action}`` of every ``--option`` of ``parser`` and its subcommands."""
    names = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                names.update(_option_names(subparser))
        elif action.option_strings and action.option_strings[0].startswith("--"):
            names.setdefault(action.dest, action)
    return names


def command_line_wording(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with Python keywords of options (``overwrite=True``) as their flags.

    The package's messages name keyword arguments; on the command line the user
    needs the flag that sets them.

    Examples
    --------
    >>> parser = build_parser()
    >>> command_line_wording("out.csv: file exists; pass overwrite=True to replace it", parser)
    'out.csv: file exists; pass --overwrite to replace it'
    >>> command_line_wording("say so with lesion_value=255", parser)
    'say so with --lesion-value 255'
    """
    options = _option_names(parser)

    def flag(match: re.Match) -> str:
        action = options.get(match[1])
        if action is None:
            return match[0]
        option = action.option_strings[0]
        if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
            return option if match[2] == "True" else f"--no-{option[2:]}"
        return f"{option} {match[2]}"

    message = re.sub(r"\s*\(CLI: [^)]*\)", "", message)
    return re.sub(r"\b([a-z][a-z0-9_]*)=(True|False|-?[\w.]+)", flag, message)


def _pipeline_error(err: Exception) -> ProstsegError | None:
    """The prostseg error that TensorFlow wrapped, when ``err`` is such a wrapper.

    A file that fails inside ``tf.data`` (read by ``tf.numpy_function``) reaches
    ``Model.fit`` as a long ``InvalidArgumentError``; the first line of the original
    message is all the user needs.
    """
    if not type(err).__module__.startswith(("tensorflow", "keras")):
        return None
    match = re.search(r"prostseg\.errors\.\w+: (.+)", str(err))
    if match:
        return ProstsegError(match[1].strip())
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    return ProstsegError(f"TensorFlow stopped: {first}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"prostseg: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Run the ``prostseg`` command; return its exit status.

    Errors prostseg raises on purpose, file-system errors and errors TensorFlow
    raised about a file are printed as one line, ``prostseg COMMAND: error: ...``,
    with exit status 2; warnings as ``prostseg: warning: ...``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    console.show_native_output(args.show_native_output)
    with warnings.catch_warnings(), console.native_output_captured():
        warnings.showwarning = _show_warning
        try:
            return args.handler(args)
        except ProstsegError as err:
            error = err
        except OSError as err:  # a file the command reads or writes: name it, no traceback
            if err.filename is None:
                raise
            error = InputError(err.filename, err.strerror or str(err))
        except Exception as err:
            error = _pipeline_error(err)
            if error is None:
                raise
    message = command_line_wording(str(error), parser)
    print(f"prostseg {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
