"""Patient-level train/validation/test splits.

Slices of one patient are strongly correlated, so a split must never put slices of the
same patient into two parts. A split is made of *case ids* (case folders, see
:mod:`prostseg.data.dataset`), and a :class:`PatientSplit` cannot be built with a case in
two parts. Usually a case is a patient; in collections with several examinations per
patient (PI-CAI names its cases ``<patient_id>_<study_id>``) the cases of one patient
are grouped: :func:`split_patients` takes a ``patient_ids`` mapping (case id to patient
id) and puts all cases of a patient into the same part. A data folder supplies that
mapping in a ``patients.json`` file (written by ``prostseg data import`` from the
manifest's ``patient_id`` pattern); :func:`read_patient_ids` reads it, and
:func:`patients_across_parts` checks a split against it.

:func:`split_patients` is deterministic for a given seed and independent of the order
of the ids: each id is ranked by the SHA-256 hash of ``"<seed>:<id>"``, which does not
depend on the NumPy or Python version either. Save the split with
:meth:`PatientSplit.to_json` next to the results it produced.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import operator
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prostseg.atomic import atomic_path
from prostseg.data.dataset import PATIENTS_FILE
from prostseg.errors import InputError, path_argument
from prostseg.preparation.preprocessing import resize_image

__all__ = [
    "PatientSplit",
    "patients_across_parts",
    "read_patient_ids",
    "split_patients",
    "leave_one_out",
    "SliceLeakage",
    "slice_level_split",
    "patient_split_slices",
    "slice_leakage",
]

_PARTS = ("train", "val", "test")



def _checked_ids(case_ids: Iterable[str]) -> list[str]:
    """Return the ids sorted, raising ValueError on non-string, empty or repeated ids."""
    case_ids = list(case_ids)
    for case_id in case_ids:
        if not isinstance(case_id, str) or not case_id:
            raise ValueError(f"case ids must be non-empty strings, got {case_id!r}")
    repeated = sorted(case_id for case_id, count in collections.Counter(case_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"case ids must be unique; repeated: {', '.join(repeated)}")
    return sorted(case_ids)


@dataclass(frozen=True)
class PatientSplit:
    """Case ids of the training, validation and test patients.

    Each part is stored as a sorted tuple. Construction fails with a :class:`ValueError`
    when an id is repeated (within a part or across parts) or when ``train`` is empty.

    Parameters
    ----------
    train, val, test : iterable of str
        Case ids of each part; ``val`` and ``test`` may be empty.
    seed : int or None
        Seed that :func:`split_patients` used, ``None`` for splits not drawn at random
        (e.g. :func:`leave_one_out`).

    Examples
    --------
    >>> split = PatientSplit(train=["p3", "p1"], val=["p2"], test=[], seed=None)
    >>> split.train
    ('p1', 'p3')
    >>> PatientSplit(train=["p1"], val=["p1"], test=[], seed=0)
    Traceback (most recent call last):
    ...
    ValueError: patients in more than one part: p1 (train, val)
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int | None

    def __post_init__(self) -> None:
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        parts_of = collections.defaultdict(list)
        for name in _PARTS:
            ids = getattr(self, name)
            if isinstance(ids, str):
                raise ValueError(f"{name!r} must be a collection of case ids, got the string {ids!r}")
            ids = _checked_ids(ids)
            object.__setattr__(self, name, tuple(ids))
            for case_id in ids:
                parts_of[case_id].append(name)
        shared = [f"{case_id} ({', '.join(names)})" for case_id, names in sorted(parts_of.items()) if len(names) > 1]
        if shared:
            raise ValueError(f"patients in more than one part: {'; '.join(shared)}")
        if not self.train:
            raise ValueError("the training part is empty")

    def to_dict(self) -> dict:
        """Return ``{"seed": ..., "train": [...], "val": [...], "test": [...]}``."""
        return {"seed": self.seed, **{name: list(getattr(self, name)) for name in _PARTS}}

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the split to a JSON file, creating missing parent folders.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file.
        overwrite : bool, optional
            Replace an existing file; by default an existing file raises
            :class:`FileExistsError`. The file is written atomically
            (:func:`prostseg.atomic.atomic_path`).

        Returns
        -------
        pathlib.Path
            The written file.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it")
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> PatientSplit:
        """Read a split written by :meth:`to_json`, checking its structure.

        Raises
        ------
        prostseg.errors.InputError
            When the file is not valid JSON, lacks or adds keys, holds values of the
            wrong type, or breaks a split invariant (e.g. a patient in two parts).
        """
        try:
            content = json.loads(path_argument(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(path, f"not a JSON split file ({error})") from None
        if not isinstance(content, dict):
            raise InputError(path, f"expected a JSON object, got {type(content).__name__}")
        expected = {"seed", *_PARTS}
        if content.keys() != expected:
            missing, unknown = sorted(expected - content.keys()), sorted(content.keys() - expected)
            raise InputError(path, f"expected keys {sorted(expected)}; missing {missing}, unknown {unknown}")
        for name in _PARTS:
            if not isinstance(content[name], list):
                raise InputError(path, f"{name!r} must be a list of case ids, got {content[name]!r}")
        try:
            return cls(**content)
        except ValueError as error:
            raise InputError(path, str(error)) from None


def _part_size(n_cases: int, fraction: float) -> int:
    """``round(n_cases * fraction)`` (halves up), but at least 1 when fraction > 0."""
    if fraction == 0:
        return 0
    return max(1, math.floor(n_cases * fraction + 0.5))


def split_patients(
    case_ids: Iterable[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    patient_ids: Mapping[str, str] | None = None,
) -> PatientSplit:
    """Split patients at random into training, validation and test parts.

    Part sizes count patients: test and validation each get ``n * fraction`` patients
    rounded half up, and at least one when their fraction is positive; training gets
    the rest. When that leaves no training patient (tiny datasets), validation and then
    test give patients back until training has one. With the default fractions and one
    case per patient: 1 case -> (1, 0, 0) for (train, val, test); 2 -> (1, 0, 1);
    3 -> (1, 1, 1); 10 -> (6, 2, 2); 20 -> (14, 3, 3). For a handful of patients
    prefer :func:`leave_one_out`.

    Parameters
    ----------
    case_ids : iterable of str
        The cases; order does not matter, repeats are an error.
    val_fraction, test_fraction : float, optional
        Fractions in ``[0, 1)`` with a sum below 1.
    seed : int, optional
        Same seed and same set of ids give the same split.
    patient_ids : mapping of str to str, optional
        Patient id of each case (:func:`read_patient_ids`); all cases of a patient go
        to the same part. By default every case is its own patient. Patients are ranked
        by the SHA-256 hash of ``"<seed>:<patient id>"``.

    Returns
    -------
    PatientSplit

    Examples
    --------
    >>> split = split_patients([f"case{i:02d}" for i in range(10)], seed=1)
    >>> len(split.train), len(split.val), len(split.test)
    (6, 2, 2)
    >>> split == split_patients(reversed(split.train + split.val + split.test), seed=1)
    True

    Two examinations of patient 10001 (PI-CAI style) stay together:

    >>> cases = ["10001_1", "10001_2", "10002_1", "10003_1"]
    >>> split = split_patients(cases, val_fraction=0, test_fraction=0.34, seed=0,
    ...                        patient_ids={case: case.split("_")[0] for case in cases})
    >>> patients_across_parts(split, {case: case.split("_")[0] for case in cases})
    []
    """
    case_ids = _checked_ids(case_ids)
    if not case_ids:
        raise ValueError("no case ids to split")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"fractions must be in [0, 1) with a sum below 1; got val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    patient_of = _patient_map(case_ids, patient_ids)
    cases_of = collections.defaultdict(list)
    for case_id in case_ids:
        cases_of[patient_of[case_id]].append(case_id)
    n_patients = len(cases_of)
    n_test, n_val = _part_size(n_patients, test_fraction), _part_size(n_patients, val_fraction)
    while n_test + n_val >= n_patients and (n_test or n_val):
        if n_val:
            n_val -= 1
        else:
            n_test -= 1
    ranked = sorted(cases_of, key=lambda patient: hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest())

    def cases(patients):
        return [case_id for patient in patients for case_id in cases_of[patient]]

    return PatientSplit(
        train=cases(ranked[n_test + n_val :]), val=cases(ranked[n_test : n_test + n_val]),
        test=cases(ranked[:n_test]), seed=seed,
    )


def _patient_map(case_ids: list[str], patient_ids: Mapping[str, str] | None) -> dict[str, str]:
    if patient_ids is None:
        return {case_id: case_id for case_id in case_ids}
    missing = [case_id for case_id in case_ids if case_id not in patient_ids]
    if missing:
        raise ValueError(f"no patient id for case(s) {', '.join(missing[:5])}")
    bad = [case_id for case_id in case_ids if not isinstance(patient_ids[case_id], str) or not patient_ids[case_id]]
    if bad:
        raise ValueError(f"patient ids must be non-empty strings; case {bad[0]} has {patient_ids[bad[0]]!r}")
    return {case_id: patient_ids[case_id] for case_id in case_ids}


def read_patient_ids(data_dir: str | os.PathLike, case_ids: Iterable[str]) -> dict[str, str]:
    """The patient id of each case of a data folder.

    From ``data_dir/patients.json`` (:data:`prostseg.data.dataset.PATIENTS_FILE`, a JSON object mapping case
    ids to patient ids) when the folder has one, else every case is its own patient.

    Raises
    ------
    prostseg.errors.InputError
        When ``patients.json`` is not a JSON object of strings or lacks a case.

    Examples
    --------
    >>> import tempfile
    >>> read_patient_ids(tempfile.mkdtemp(), ["a", "b"])
    {'a': 'a', 'b': 'b'}
    """
    case_ids = list(case_ids)
    path = Path(data_dir) / PATIENTS_FILE
    if not path.is_file():
        return {case_id: case_id for case_id in case_ids}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({error})") from None
    if not isinstance(content, dict) or not all(isinstance(v, str) and v for v in content.values()):
        raise InputError(path, "expected a JSON object mapping case ids to non-empty patient id strings")
    missing = [case_id for case_id in case_ids if case_id not in content]
    if missing:
        raise InputError(path, f"no patient id for case(s) {', '.join(missing[:5])}")
    return {case_id: content[case_id] for case_id in case_ids}


def patients_across_parts(split: PatientSplit, patient_ids: Mapping[str, str]) -> list[str]:
    """Patients whose cases lie in more than one part of ``split``, as readable strings.

    Examples
    --------
    >>> split = PatientSplit(train=["p1_a"], val=[], test=["p1_b"], seed=None)
    >>> patients_across_parts(split, {"p1_a": "p1", "p1_b": "p1"})
    ['p1 (train: p1_a; test: p1_b)']
    """
    parts_of = collections.defaultdict(dict)
    for name in _PARTS:
        for case_id in getattr(split, name):
            parts_of[patient_ids.get(case_id, case_id)].setdefault(name, []).append(case_id)
    crossings = []
    for patient, parts in sorted(parts_of.items()):
        if len(parts) > 1:
            where = "; ".join(f"{part}: " + ", ".join(cases) for part, cases in parts.items())
            crossings.append(f"{patient} ({where})")
    return crossings


def leave_one_out(case_ids: Iterable[str]) -> list[PatientSplit]:
    """Return one split per patient, testing on that patient and training on the others.

    Meant for very small datasets (e.g. the three real ProstateX cases): the validation
    part is empty and ``seed`` is ``None``. Splits come in sorted id order.

    Parameters
    ----------
    case_ids : iterable of str
        At least two unique ids.

    Returns
    -------
    list of PatientSplit

    Examples
    --------
    >>> [split.test for split in leave_one_out(["b", "a", "c"])]
    [('a',), ('b',), ('c',)]
    """
    case_ids = _checked_ids(case_ids)
    if len(case_ids) < 2:
        raise ValueError(f"leave-one-out needs at least 2 cases, got {len(case_ids)}")
    return [
        PatientSplit(train=[other for other in case_ids if other != held_out], val=(), test=(held_out,), seed=None)
        for held_out in case_ids
    ]


# --- slice-level splits, for comparison only ----------------------------------------

#: A slice of a patient: ``(case_id, k)`` for the axial slice ``k``.
SliceId = tuple[str, int]


def _checked_slice_counts(case_slices: Mapping[str, int]) -> dict[str, int]:
    counts = {case_id: operator.index(n) for case_id, n in case_slices.items()}
    _checked_ids(counts)
    if not counts or min(counts.values()) < 1:
        raise ValueError("every case needs at least one slice")
    return counts


def slice_level_split(
    case_slices: Mapping[str, int], *, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[SliceId]]:
    """Split *slices* at random, ignoring patients: the mistake this package avoids.

    Shuffling all slices and cutting the list puts slices of one patient into both
    parts. This function makes that split only so that :func:`slice_leakage` can show
    what it does; train on :func:`split_patients`.

    Parameters
    ----------
    case_slices : mapping of str to int
        Number of axial slices of each case.
    test_fraction : float, optional
        Fraction of all slices put into the test part (rounded, at least one).
    seed : int, optional

    Returns
    -------
    dict
        ``{"train": [...], "test": [...]}``, lists of ``(case_id, k)`` in sorted order.

    Examples
    --------
    >>> parts = slice_level_split({"p1": 10, "p2": 10}, test_fraction=0.25, seed=0)
    >>> len(parts["train"]), len(parts["test"])
    (15, 5)
    """
    counts = _checked_slice_counts(case_slices)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    slices = [(case_id, k) for case_id in sorted(counts) for k in range(counts[case_id])]
    order = np.random.default_rng(seed).permutation(len(slices))
    n_test = max(1, _part_size(len(slices), test_fraction))
    return {
        "train": sorted(slices[i] for i in order[n_test:]),
        "test": sorted(slices[i] for i in order[:n_test]),
    }


def patient_split_slices(split: PatientSplit, case_slices: Mapping[str, int]) -> dict[str, list[SliceId]]:
    """The slices of each part of a patient-level split.

    Parameters
    ----------
    split : PatientSplit
    case_slices : mapping of str to int
        Number of axial slices of each case; it must cover every case of ``split``.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, lists of ``(case_id, k)``.

    Examples
    --------
    >>> split = PatientSplit(train=["p1"], val=[], test=["p2"], seed=None)
    >>> patient_split_slices(split, {"p1": 2, "p2": 1})
    {'train': [('p1', 0), ('p1', 1)], 'val': [], 'test': [('p2', 0)]}
    """
    counts = _checked_slice_counts(case_slices)
    missing = sorted(set(split.train + split.val + split.test) - set(counts))
    if missing:
        raise ValueError(f"no slice count for cases {', '.join(missing)}")
    return {name: [(case_id, k) for case_id in getattr(split, name) for k in range(counts[case_id])]
            for name in _PARTS}


@dataclass(frozen=True)
class SliceLeakage:
    """How much of the training data a test set has already seen (:func:`slice_leakage`).

    Attributes
    ----------
    test_slices : int
    patient_in_train : float
        Fraction of test slices whose patient also has slices in the training part.
    neighbour_in_train : float
        Fraction of test slices whose adjacent slice (``k - 1`` or ``k + 1``, 3 mm
        away in a prostate MRI) is a training slice.
    nearest_same_patient : float or None
        Fraction of test slices whose most similar training slice (highest
        correlation) comes from the same patient; None without volumes.
    nearest_correlation : float or None
        Median correlation of a test slice with its most similar training slice.
    """

    test_slices: int
    patient_in_train: float
    neighbour_in_train: float
    nearest_same_patient: float | None = None
    nearest_correlation: float | None = None

    def to_dict(self) -> dict:
        """The attributes as one row of a table, under short column names.

        Examples
        --------
        >>> for column, value in SliceLeakage(12, 1.0, 0.75).to_dict().items():
        ...     print(f"{column}: {value}")
        test slices: 12
        patient in train: 1.0
        neighbour in train: 0.75
        nearest: same patient: None
        nearest: correlation: None
        """
        return {column: getattr(self, name) for name, column in _LEAKAGE_COLUMNS.items()}


#: Column name of each attribute in :meth:`SliceLeakage.to_dict`.
_LEAKAGE_COLUMNS = {
    "test_slices": "test slices",
    "patient_in_train": "patient in train",
    "neighbour_in_train": "neighbour in train",
    "nearest_same_patient": "nearest: same patient",
    "nearest_correlation": "nearest: correlation",
}


def _slice_features(volumes: Mapping[str, np.ndarray], slices: list[SliceId], size: int) -> np.ndarray:
    """Each slice resized to ``size`` x ``size`` and z-scored, one row per slice."""
    rows = []
    for case_id, k in slices:
        pixels = resize_image(np.asarray(volumes[case_id])[:, :, k].astype(np.float64), size).ravel()
        spread = pixels.std()
        rows.append((pixels - pixels.mean()) / spread if spread > 0 else np.zeros_like(pixels))
    return np.array(rows)


def slice_leakage(
    train: Iterable[SliceId],
    test: Iterable[SliceId],
    volumes: Mapping[str, np.ndarray] | None = None,
    *,
    size: int = 64,
) -> SliceLeakage:
    """Measure how close the test slices are to the training slices.

    With a patient-level split every fraction is 0. With a slice-level split
    (:func:`slice_level_split`) nearly every test slice has its patient, usually its
    neighbouring slice, in the training part; with ``volumes`` a nearest-neighbour
    search shows that the most similar training slice is then mostly from the same
    patient: the test measures memory, not generalisation.

    Parameters
    ----------
    train, test : iterable of (case_id, k)
        Slices of the two parts.
    volumes : mapping of case id to array (X, Y, Z), optional
        Image volumes (e.g. ``load_volume(case.path("t2w")).data``) for the
        nearest-neighbour search: every slice is resized to ``size`` x ``size``
        (:func:`prostseg.preparation.preprocessing.resize_image`) and compared by Pearson
        correlation of its pixels.
    size : int, optional
        Side of the resized slices.

    Returns
    -------
    SliceLeakage

    Examples
    --------
    >>> parts = slice_level_split({"p1": 20, "p2": 20, "p3": 20}, test_fraction=0.2, seed=0)
    >>> leak = slice_leakage(parts["train"], parts["test"])
    >>> leak.test_slices, leak.patient_in_train
    (12, 1.0)
    >>> split = PatientSplit(train=["p1", "p2"], val=[], test=["p3"], seed=None)
    >>> by_patient = patient_split_slices(split, {"p1": 20, "p2": 20, "p3": 20})
    >>> slice_leakage(by_patient["train"], by_patient["test"]).neighbour_in_train
    0.0
    """
    train, test = sorted(set(train)), sorted(set(test))
    if not train or not test:
        raise ValueError("need at least one training and one test slice")
    train_set = set(train)
    train_patients = {case_id for case_id, _ in train}
    patient_in_train = np.mean([case_id in train_patients for case_id, _ in test])
    neighbour_in_train = np.mean([(c, k - 1) in train_set or (c, k + 1) in train_set for c, k in test])
    if volumes is None:
        return SliceLeakage(len(test), float(patient_in_train), float(neighbour_in_train))
    missing = sorted({case_id for case_id, _ in train + test} - set(volumes))
    if missing:
        raise ValueError(f"no volume for cases {', '.join(missing)}")
    correlation = _slice_features(volumes, test, size) @ _slice_features(volumes, train, size).T / size**2
    nearest = correlation.argmax(axis=1)
    same_patient = [train[j][0] == case_id for (case_id, _), j in zip(test, nearest)]
    return SliceLeakage(
        len(test),
        float(patient_in_train),
        float(neighbour_in_train),
        float(np.mean(same_patient)),
        float(np.median(correlation.max(axis=1))),
    )
