"""Exceptions raised by prostseg, and the ranges of numeric arguments that raise them.

Every problem with a user's file is reported as an :class:`InputError` whose message
starts with the file's path, so that a traceback in a notebook says which file to fix.
A number outside its :class:`Interval` is an :class:`InputError` naming the argument.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path


class ProstsegError(Exception):
    """Base class of the errors prostseg raises on purpose."""


class InputError(ProstsegError, ValueError):
    """A file or folder given by the user cannot be used as it is.

    Parameters
    ----------
    path : str or os.PathLike or None
        The offending file or folder (``None`` for in-memory input).
    problem : str
        What is wrong, phrased so that the user knows what to fix.

    Examples
    --------
    >>> err = InputError("case01/t2w.nii.gz", "expected a 3D volume, got shape (4, 4)")
    >>> str(err)
    'case01/t2w.nii.gz: expected a 3D volume, got shape (4, 4)'
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")


class OutputError(InputError):
    """A file or folder cannot be written: no permission, a read-only file, a full disk.

    The message names the destination the user asked for (never a temporary file).

    Examples
    --------
    >>> import errno
    >>> str(OutputError.from_os_error("runs/model.keras", OSError(errno.ENOSPC, "disk full")))
    'runs/model.keras: cannot write: No space left on device'
    """

    @classmethod
    def from_os_error(cls, path: str | os.PathLike, err: OSError) -> OutputError:
        """The error for ``path`` that ``err`` (raised while writing it) stands for."""
        reason = os.strerror(err.errno) if err.errno else str(err)
        return cls(path, f"cannot write: {reason}")


class DataWarning(UserWarning):
    """Data that can be used but probably not as the user meant (e.g. only empty masks)."""


def path_argument(value, name: str = "path") -> Path:
    """``value`` as a :class:`~pathlib.Path`, or an :class:`InputError` naming ``name``.

    Public functions call it on the paths they are given, so that ``None``, a number or
    an empty string is one clear error instead of a ``TypeError`` from :mod:`pathlib`.

    Examples
    --------
    >>> path_argument("data/case-01")
    PosixPath('data/case-01')
    >>> path_argument(None, "data_dir")
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: data_dir: expected the path of a file or folder, got NoneType None
    """
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, (str, os.PathLike)):
        raise InputError(None, f"{name}: expected the path of a file or folder, got {type(value).__name__} {value!r}")
    if not os.fspath(value):
        raise InputError(None, f"{name}: expected the path of a file or folder, got an empty path")
    return Path(value)


@dataclass(frozen=True)
class Interval:
    """The values a numeric argument may take: finite numbers between two bounds.

    One interval serves the command line (:meth:`parse`, a flag's type), the
    configuration dataclasses and the public functions (:meth:`check`), so that all
    three refuse the same values with the same words.

    Parameters
    ----------
    low, high : float
        The bounds; ``inf`` for none. NaN and infinite values are always refused.
    low_open, high_open : bool
        Exclude the bound itself.
    integer : bool
        Whole numbers only (``bool`` is not one).

    Examples
    --------
    >>> PROBABILITY.check(0.5, "threshold")
    0.5
    >>> PROBABILITY.check(2.0, "threshold")
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: threshold=2.0 is out of range: must be a number in (0, 1)
    >>> COUNT.parse("0")
    Traceback (most recent call last):
    ...
    ValueError: must be a whole number >= 1, got 0
    >>> POSITIVE.parse("inf")
    Traceback (most recent call last):
    ...
    ValueError: must be a finite number > 0, got inf
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """The interval in words, e.g. ``'a number in (0, 1)'``."""
        kind = "a whole number" if self.integer else "a number"
        if math.isinf(self.high):
            if math.isinf(self.low):
                return f"{kind}, finite"
            kind = kind if self.integer else "a finite number"
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if math.isinf(self.low):
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return (f"{kind} in {'(' if self.low_open else '['}{_num(self.low)}, "
                f"{_num(self.high)}{')' if self.high_open else ']'}")

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        value = float(value)
        return (math.isfinite(value)
                and (value > self.low if self.low_open else value >= self.low)
                and (value < self.high if self.high_open else value <= self.high))

    def check(self, value, name: str):
        """Return ``value``, or raise :class:`InputError` naming ``name`` and the interval."""
        if value not in self:
            raise InputError(None, f"{name}={value!r} is out of range: must be {self.describe()}")
        return value

    def parse(self, text: str):
        """The number ``text`` stands for (the type of a command-line flag); ``ValueError`` otherwise."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise ValueError(f"must be {self.describe()}, got {text!r}") from None
        if value not in self:
            raise ValueError(f"must be {self.describe()}, got {text}")
        return value


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


#: A probability or threshold strictly between 0 and 1.
PROBABILITY = Interval(0, 1, low_open=True, high_open=True)
#: A share of something that may be none of it but not all of it.
FRACTION = Interval(0, 1, high_open=True)
#: Counts, sizes and workers.
COUNT = Interval(1, integer=True)
#: Seeds and other whole numbers that may be 0.
NON_NEGATIVE_INT = Interval(0, integer=True)
#: Rates, spacings and other sizes that must be above 0.
POSITIVE = Interval(0, low_open=True)
#: Weights and volumes that may be 0.
NON_NEGATIVE = Interval(0)
