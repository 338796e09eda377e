"""Exceptions raised by prostseg.

Every problem with a user's file is reported as an :class:`InputError` whose message
starts with the file's path, so that a traceback in a notebook says which file to fix.
"""

from __future__ import annotations

import os


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
