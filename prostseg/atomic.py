"""Write files atomically: readers see the old file or the complete new one, never half.

:func:`atomic_path` hands out a temporary path in the destination's own folder; the
caller writes the file there with any library (nibabel, matplotlib, ``shutil``...).
When the ``with`` block ends without an error, the file is flushed to disk and renamed
over the destination in one step (:func:`os.replace`, atomic on POSIX and Windows within
one file system). When the block raises, the temporary file is removed and the
destination is left as it was.

The block may also create a *folder* at the temporary path (a ``tf.train`` checkpoint,
say): every file in it is flushed and the folder renamed into place as a whole. A folder
destination must not exist yet (or be empty); remove a stale one first.

A process killed inside the block leaves its temporary file (or folder) behind, under a
hidden name (``.NAME.<random>.tmp...``) that no reader takes for the output;
:func:`remove_leftovers` deletes them before a folder is written again.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "notes.txt"
>>> with atomic_path(target) as tmp:
...     _ = tmp.write_text("complete")
>>> target.read_text(encoding="utf-8")
'complete'
>>> try:
...     with atomic_path(target) as tmp:
...         _ = tmp.write_text("half")
...         raise RuntimeError("interrupted")
... except RuntimeError:
...     pass
>>> target.read_text(encoding="utf-8"), sorted(p.name for p in target.parent.iterdir())
('complete', ['notes.txt'])

Errors of the file system (no permission, a read-only file system, a full disk) are
raised as :class:`prostseg.errors.OutputError`, whose one-line message names the
destination, not the temporary file. A destination without write permission is
refused rather than silently replaced: the user protected it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prostseg.errors import OutputError

# The names atomic_path gives its temporary files: ".NAME.<mkstemp's random part>.tmp<suffix>".
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*")

__all__ = ["atomic_path", "remove_leftovers"]


def _fsync(path: Path) -> None:
    """Flush a file, or every file in a folder, to disk."""
    if path.is_dir():
        for child in path.iterdir():
            _fsync(child)
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _check_writable(path: Path) -> None:
    """Refuse a destination the user made read-only (root would replace it silently)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise OutputError.from_os_error(path, err) from None
    if not mode & 0o222 or not os.access(path, os.W_OK):
        raise OutputError(path, "is read-only; make it writable or choose another output")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The destination file. Missing parent folders are created.

    Yields
    ------
    pathlib.Path
        A new, not yet existing path in the same folder, with the same file name ending
        (``.nii.gz``, ``.png``...) so that writers that choose the format from the name
        still do.

    Raises
    ------
    prostseg.errors.OutputError
        When the destination is read-only, or the folder cannot be created or written
        (no permission, read-only file system, disk full): ``"<path>: cannot write: ..."``.
    """
    path = Path(path)
    name = path.name
    suffix = "".join(path.suffixes[-2:]) if name.endswith(".nii.gz") else path.suffix
    _check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{suffix}",
                                            dir=path.parent)
    except OSError as err:
        raise OutputError.from_os_error(path, err) from None
    os.close(handle)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers that refuse to overwrite get a path that does not exist
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError.from_os_error(path, err) from None
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders :func:`atomic_path` left in ``folder``.

    Only a process killed inside an ``atomic_path`` block leaves them; call this where
    no other process writes into ``folder`` at the same time.

    Returns
    -------
    list of pathlib.Path
        What was removed (nothing when ``folder`` does not exist).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / ".history.csv.k2j_x0ab.tmp.csv").write_text("half")
    >>> _ = (folder / "history.csv").write_text("whole")
    >>> [path.name for path in remove_leftovers(folder)], [p.name for p in folder.iterdir()]
    (['.history.csv.k2j_x0ab.tmp.csv'], ['history.csv'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = sorted(path for path in folder.glob(".*.tmp*") if _TEMPORARY.fullmatch(path.name))
    for path in leftovers:
        _remove(path)
    return leftovers
