"""Predict many cases at once: resumable, with a progress bar and a summary CSV.

:func:`predict_batch` applies one model to a list of inputs (:func:`collect_inputs`:
case folders, volume files, DICOM series folders, data folders holding any of those,
or text files listing them) and writes, for each case ``CASE_ID``, into ``out_dir``:

* ``CASE_ID.nii.gz`` -- the label map, in the geometry of the case's source image
  (the layout :func:`prostseg.use.inference.evaluate_folder` scores);
* ``probabilities/CASE_ID.nii.gz`` -- optionally, the probabilities, one channel per
  output class, in 16 bits (:func:`prostseg.use.inference.write_nifti_like`);
* ``CASE_ID.seg.dcm`` -- optionally, for DICOM input, a DICOM Segmentation that
  references the source instances (:mod:`prostseg.use.dicom_seg`);
* ``summary.csv`` -- one row per case: status, seconds, predicted volume, files.

Every file is written atomically, so a file that exists is complete. A case whose
outputs all exist is skipped (``status`` ``skipped``): after an interruption, the same
command resumes where it stopped. ``overwrite=True`` predicts every case again. A case
that cannot be read is reported in the summary (``status`` ``failed`` and the reason)
and the others go on.

Examples
--------
>>> from tempfile import mkdtemp
>>> from prostseg.data.phantom import write_phantom_dataset
>>> from prostseg.networks.models import build_unet
>>> data = Path(mkdtemp())
>>> _ = write_phantom_dataset(data, n_cases=2, seed=0, shape=(40, 40, 4))
>>> model = build_unet((32, 32, 1), base_filters=2, depth=2)
>>> out = Path(mkdtemp())
>>> result = predict_batch(model, [data], out, progress=False)
>>> [(row["case_id"], row["status"]) for row in result.rows]
[('phantom-000', 'predicted'), ('phantom-001', 'predicted')]
>>> rerun = predict_batch(model, [data], out, progress=False)
>>> [row["status"] for row in rerun.rows]
['skipped', 'skipped']
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prostseg.atomic import atomic_path
from prostseg.data.dataset import check_output_outside_inputs, find_case
from prostseg.errors import InputError, path_argument
from prostseg.data.io import SUPPORTED_EXTENSIONS, load_volume
from prostseg.networks.runs import model_run_config
from prostseg.use.dicom_seg import SEGMENT_CODES, write_dicom_seg
from prostseg.use.export import preprocessing_contract
from prostseg.use.inference import (
    check_prediction_options,
    input_volume,
    postprocess,
    predict_probabilities,
    resolve_model,
    write_nifti_like,
)

__all__ = ["BatchResult", "SUMMARY_FILE", "PROBABILITIES_DIR", "collect_inputs", "predict_batch"]

SUMMARY_FILE = "summary.csv"
PROBABILITIES_DIR = "probabilities"
DICOM_SEG_SUFFIX = ".seg.dcm"
_LIST_SUFFIXES = (".txt", ".lst")
_COLUMNS = ("case_id", "input", "status", "seconds", "foreground_ml", "labels", "probabilities",
            "dicom_seg", "error")


def _volume_ending(name: str) -> str | None:
    return next((ext for ext in SUPPORTED_EXTENSIONS if name.lower().endswith(ext)), None)


def _expand(path: Path, from_list: Path | None) -> list[tuple[str, Path]]:
    """(case id, input) pairs of one path given by the user (see collect_inputs)."""
    where = from_list or path
    if path.is_file():
        if path.suffix.lower() in _LIST_SUFFIXES and from_list is None:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise InputError(path, "not a text list of paths (not UTF-8 text)") from None
            entries = [line.strip() for line in lines
                       if line.strip() and not line.lstrip().startswith("#")]
            return [pair for entry in entries for pair in _expand(path.parent / entry, path)]
        ending = _volume_ending(path.name)
        if ending is None:
            raise InputError(where, f"{path.name}: not a volume file ({', '.join(SUPPORTED_EXTENSIONS)}), "
                             f"a DICOM series folder, a case folder or a list ({', '.join(_LIST_SUFFIXES)})")
        return [(path.name[: -len(ending)], path)]
    if not path.is_dir():
        raise InputError(where, f"{path}: no such file or folder")
    folders = [entry for entry in sorted(path.iterdir())
               if entry.is_dir() and not entry.name.startswith(".")]
    if find_case(path, require=(), check_grids=False).files or not folders:
        return [(path.name, path)]  # a case folder, or a DICOM series folder (files only)
    return [(entry.name, entry) for entry in folders]  # a data folder


def collect_inputs(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """The cases to predict, as ``(case_id, input)`` pairs in the order given.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        Each one is a case folder (:mod:`prostseg.data.dataset` layout), a volume file, a
        DICOM series folder (a folder of files only), a data folder (any other folder
        with sub-folders: each sub-folder is a case folder or DICOM series folder) or
        a text file (``.txt``, ``.lst``) listing such paths, one a line, relative to
        the list's folder (``#`` starts a comment line).
        The case id is the folder's name, or the file's name without its ending.

    Returns
    -------
    list of (str, pathlib.Path)

    Raises
    ------
    InputError
        For a path that does not exist or is none of these, for no cases at all, and
        for two inputs with the same case id (their outputs would collide).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("a.nii.gz", "b.mha"):
    ...     (folder / name).touch()
    >>> _ = (folder / "cases.txt").write_text("a.nii.gz\\n# skipped\\nb.mha\\n")
    >>> [case_id for case_id, _ in collect_inputs([folder / "cases.txt"])]
    ['a', 'b']
    """
    pairs = [pair for path in paths for pair in _expand(path_argument(path, "inputs"), None)]
    if not pairs:
        raise InputError(None, "no cases to predict: give case folders, volume files, DICOM series "
                         "folders, data folders or lists of them")
    seen: dict[str, Path] = {}
    for case_id, path in pairs:
        if case_id in seen:
            raise InputError(path, f"case id {case_id!r} also names {seen[case_id]}; their outputs "
                             "would collide (rename one)")
        seen[case_id] = path
    return pairs


@dataclass(frozen=True)
class BatchResult:
    """What :func:`predict_batch` did.

    Attributes
    ----------
    rows : list of dict
        One per case, in input order, with the columns of the summary CSV.
    summary_path : pathlib.Path
        The summary CSV.
    """

    rows: list
    summary_path: Path

    @property
    def failed(self) -> list[str]:
        """Case ids that could not be predicted."""
        return [row["case_id"] for row in self.rows if row["status"] == "failed"]


def _outputs(out_dir: Path, case_id: str, probabilities: bool, dicom_seg: bool) -> dict[str, Path]:
    outputs = {"labels": out_dir / f"{case_id}.nii.gz"}
    if probabilities:
        outputs["probabilities"] = out_dir / PROBABILITIES_DIR / f"{case_id}.nii.gz"
    if dicom_seg:
        outputs["dicom_seg"] = out_dir / f"{case_id}{DICOM_SEG_SUFFIX}"
    return outputs


def _foreground_ml(labels: np.ndarray, spacing) -> float:
    return round(float(np.count_nonzero(labels)) * float(np.prod(spacing)) / 1000.0, 4)


def _predict_one(model, source: Path, outputs: dict[str, Path], options: dict, overwrite: bool) -> float:
    """Predict one case, write the outputs that are missing (all with ``overwrite``);
    return the predicted foreground volume in ml."""
    model_recipe = options["recipe"]
    volume, reference = input_volume(source, model_recipe)
    probabilities = predict_probabilities(model, volume, target_spacing=options["target_spacing"],
                                          tta=options["tta"], kind=model_recipe.kind)
    labels = postprocess(model_recipe.decode(probabilities, options["threshold"]),
                         largest_component=options["largest_component"],
                         min_lesion_size=options["min_lesion_size"], spacing=volume.spacing)
    todo = {name: path for name, path in outputs.items() if overwrite or not path.exists()}
    if "dicom_seg" in todo:
        write_dicom_seg(labels, reference, source, todo["dicom_seg"], label_names=options["classes"],
                        overwrite=True)
    if "probabilities" in todo:
        write_nifti_like(probabilities, reference, todo["probabilities"])
    if "labels" in todo:
        write_nifti_like(labels, reference, todo["labels"])
    return _foreground_ml(labels, volume.spacing)


def _label_names(model, model_path: Path | None, kind: str) -> dict[int, str]:
    """``{label value: name}`` of the foreground labels the model predicts."""
    contract = getattr(model, "contract", None)
    if contract is None:
        in_run = model_path is not None and model_path.suffix == ".keras"
        config = model_run_config(model_path) if in_run else None
        label = getattr(config, "label", None)
        contract = preprocessing_contract(model, label=label, kind=kind)
    classes = contract["output"]["classes"]
    return {1: classes[0]} if len(classes) == 1 else {i: name for i, name in enumerate(classes) if i}


def predict_batch(model, inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
                  threshold: float = 0.5, target_spacing: float | None = None,
                  largest_component: bool = False, min_lesion_size: float | None = None,
                  tta: bool = False, probabilities: bool = False, dicom_seg: bool = False,
                  overwrite: bool = False, progress: bool = True) -> BatchResult:
    """Predict every case of ``inputs`` into ``out_dir`` (module documentation).

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A model or model file (:func:`prostseg.use.inference.resolve_model`: a ``.keras``
        file in its run folder, or an export of :mod:`prostseg.use.export`).
    inputs : iterable of str or os.PathLike
        See :func:`collect_inputs`.
    out_dir : str or os.PathLike
        Output folder (created).
    threshold, target_spacing, largest_component, min_lesion_size, tta : optional
        See :func:`prostseg.use.inference.predict_volume`.
    probabilities : bool, optional
        Also write the probability maps.
    dicom_seg : bool, optional
        Also write a DICOM Segmentation for every DICOM series input (a case whose
        input is not DICOM fails with that reason).
    overwrite : bool, optional
        Predict every case again and replace its outputs; by default cases whose
        outputs all exist are skipped.
    progress : bool, optional
        Show a progress bar (on standard error).

    Returns
    -------
    BatchResult

    Raises
    ------
    InputError
        When the model or the list of inputs cannot be used (problems of single cases
        are reported in the summary instead).
    """
    from tqdm.auto import tqdm

    check_prediction_options(threshold=threshold, target_spacing=target_spacing, min_lesion_size=min_lesion_size)
    inputs = list(inputs)
    cases = collect_inputs(inputs)
    model_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    check_output_outside_inputs(out_dir, [model_path, *inputs, *(source for _, source in cases)])
    model, target_spacing, model_recipe = resolve_model(model, target_spacing)
    options = dict(threshold=threshold, target_spacing=target_spacing, largest_component=largest_component,
                   min_lesion_size=min_lesion_size, tta=tta, recipe=model_recipe,
                   classes=_label_names(model, model_path, model_recipe.kind))
    if dicom_seg:
        if not set(options["classes"].values()) <= set(SEGMENT_CODES):
            raise InputError(model_path, "the model does not record what it segments (lesion or gland), "
                             "which a DICOM SEG must say: keep the .keras file in its run folder, or "
                             "export it with --label")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress, file=sys.stderr)
    for case_id, source in bar:
        bar.set_postfix_str(case_id)
        outputs = _outputs(out_dir, case_id, probabilities, dicom_seg)
        row = {"case_id": case_id, "input": str(source), "status": "predicted", "seconds": 0.0,
               "foreground_ml": "", **{name: "" for name in ("labels", "probabilities", "dicom_seg")},
               "error": ""}
        start = time.perf_counter()
        try:
            if not overwrite and all(path.exists() for path in outputs.values()):
                row["status"] = "skipped"
                labels = load_volume(outputs["labels"], label=True)
                row["foreground_ml"] = _foreground_ml(labels.data, labels.spacing)
            else:
                row["foreground_ml"] = _predict_one(model, source, outputs, options, overwrite)
            row.update({name: str(path) for name, path in outputs.items()})
        except InputError as err:
            row.update(status="failed", error=str(err))
        row["seconds"] = round(time.perf_counter() - start, 3)
        rows.append(row)
    summary = out_dir / SUMMARY_FILE
    with atomic_path(summary) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return BatchResult(rows, summary)
