"""Patient-level train/validation/test splits.

Slices of one patient are strongly correlated, so a split must never put slices of the
same patient into two parts. Here every split is made of *case ids* (one per patient,
see :mod:`prostseg.dataset`), and a :class:`PatientSplit` cannot be built with a patient
in two parts.

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
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prostseg.errors import InputError

__all__ = ["PatientSplit", "split_patients", "leave_one_out"]

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
            :class:`FileExistsError`.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("w" if overwrite else "x", encoding="utf-8") as file:
                json.dump(self.to_dict(), file, indent=2)
                file.write("\n")
        except FileExistsError:
            raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it") from None
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
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InputError(path, f"not valid JSON ({error})") from None
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
    case_ids: Iterable[str], *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> PatientSplit:
    """Split patients at random into training, validation and test parts.

    Part sizes: test and validation each get ``n * fraction`` cases rounded half up, and
    at least one case when their fraction is positive; training gets the rest. When that
    leaves no training case (tiny datasets), validation and then test give cases back
    until training has one. With the default fractions: 1 case -> (1, 0, 0) for
    (train, val, test); 2 -> (1, 0, 1); 3 -> (1, 1, 1); 10 -> (6, 2, 2); 20 -> (14, 3, 3).
    For a handful of patients prefer :func:`leave_one_out`.

    Parameters
    ----------
    case_ids : iterable of str
        One id per patient; order does not matter, repeats are an error.
    val_fraction, test_fraction : float, optional
        Fractions in ``[0, 1)`` with a sum below 1.
    seed : int, optional
        Same seed and same set of ids give the same split.

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
    n_cases = len(case_ids)
    n_test, n_val = _part_size(n_cases, test_fraction), _part_size(n_cases, val_fraction)
    while n_test + n_val >= n_cases and (n_test or n_val):
        if n_val:
            n_val -= 1
        else:
            n_test -= 1
    ranked = sorted(case_ids, key=lambda case_id: hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest())
    return PatientSplit(
        train=ranked[n_test + n_val :], val=ranked[n_test : n_test + n_val], test=ranked[:n_test], seed=seed
    )


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
