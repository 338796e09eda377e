"""Download single files over HTTP(S), checked, retried, and recorded in a lock file.

:func:`download` fetches one URL into a file: the bytes go to a hidden temporary file
beside the target (:func:`prostseg.atomic.atomic_path`), their SHA-256 is computed on
the way, and the file is renamed into place only when it is complete and matches the
checksum it is expected to have. Transient failures (a refused or reset connection, a
timeout, a connection closed before the announced length, HTTP 5xx or 429) are retried
with a growing pause; whatever is left after the last try, and any other HTTP error,
becomes one :class:`~prostseg.errors.InputError` naming the URL.

The *lock file* (:data:`LOCK_FILE`, beside the data) records the size and SHA-256 of
the first download of each file, keyed by its path below the source's base URL, so
that a rerun or another mirror can be checked against what was fetched the first time
(:func:`read_lock`, :func:`write_lock`).

Only the standard library is used (:mod:`urllib.request`).

Examples
--------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_lock(folder, "demo", {"a/b.nii.gz": FileRecord(size=3, sha256="0" * 64)})
>>> read_lock(folder, "demo")
{'a/b.nii.gz': FileRecord(size=3, sha256='0000000000000000000000000000000000000000000000000000000000000000')}
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from prostseg.atomic import atomic_path
from prostseg.errors import InputError

#: Name of the lock file written into the destination folder of a fetch.
LOCK_FILE = "data.lock.json"
#: HTTP status codes worth another try: the server may answer next time.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_BLOCK = 1 << 20

__all__ = [
    "LOCK_FILE",
    "TRANSIENT_STATUS",
    "FileRecord",
    "NetworkError",
    "download",
    "read_lock",
    "write_lock",
]


@dataclass(frozen=True)
class FileRecord:
    """Size in bytes and SHA-256 (hex) of one downloaded file."""

    size: int
    sha256: str


class NetworkError(InputError):
    """The server could not be reached, or kept failing, after every try.

    Unlike a missing file (HTTP 404) or a checksum mismatch, which concern one file,
    this usually stops a whole fetch: the next file would fail the same way.
    """


class MissingFile(InputError):
    """The server has no file at this URL (HTTP 404 or 410)."""


def download(
    url: str,
    target: str | os.PathLike,
    *,
    expected: FileRecord | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> FileRecord:
    """Download ``url`` into ``target``, atomically, and return its size and SHA-256.

    Parameters
    ----------
    url : str
        An ``http://`` or ``https://`` URL.
    target : path
        The file to write; missing folders are created. It appears only when the
        download is complete and checked.
    expected : FileRecord, optional
        Size and SHA-256 the file must have (a published checksum or the lock file).
    retries : int
        Further tries after a transient failure; the pause before try ``k`` is
        ``backoff * 2 ** (k - 1)`` seconds.
    backoff : float
        Pause before the first retry, in seconds.
    timeout : float
        Seconds without an answer before a try fails.

    Returns
    -------
    FileRecord
        What was written.

    Raises
    ------
    NetworkError
        ``"URL: cannot download: REASON"`` when every try failed transiently.
    MissingFile
        ``"URL: cannot download: HTTP 404 Not Found"`` (or 410).
    InputError
        Other answers that another try would not change; ``"URL: sha256 mismatch ..."`` when the file differs from
        ``expected`` (nothing is written then).
    """
    target = Path(target)
    problem = "no try made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            with atomic_path(target) as part, open(part, "wb") as out:
                record = _fetch_once(url, out, timeout)
                _check(url, record, expected)
            return record
        except _Transient as err:
            problem = str(err)
    tries = f"{retries + 1} tries" if retries else "1 try"
    raise NetworkError(url, f"cannot download: {problem} ({tries})")


class _Transient(Exception):
    """A failed try that another try may get past (not an OSError: atomic_path would
    take that for a failure to write the target)."""


def _fetch_once(url: str, out: BinaryIO, timeout: float) -> FileRecord:
    """One GET of ``url`` written to ``out``; raises on any failure, including a short body."""
    digest, size, announced = hashlib.sha256(), 0, None
    request = urllib.request.Request(url, headers={"User-Agent": "prostseg"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            for block in iter(lambda: response.read(_BLOCK), b""):
                digest.update(block)
                out.write(block)
                size += len(block)
    except http.client.IncompleteRead:
        raise _Transient(f"connection closed after {size} of {announced} bytes") from None
    except urllib.error.HTTPError as err:
        problem = f"HTTP {err.code} {err.reason}"
        if err.code in TRANSIENT_STATUS:
            raise _Transient(problem) from None
        raise (MissingFile if err.code in (404, 410) else InputError)(url, f"cannot download: {problem}") from None
    except urllib.error.URLError as err:
        raise _Transient(_reason(err.reason)) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(_reason(err)) from None
    if announced is not None and size != int(announced):
        raise _Transient(f"connection closed after {size} of {announced} bytes")
    return FileRecord(size=size, sha256=digest.hexdigest())


def _check(url: str, record: FileRecord, expected: FileRecord | None) -> None:
    if expected is not None and record != expected:
        raise InputError(
            url,
            f"sha256 mismatch: expected {expected.sha256} ({expected.size} bytes), got "
            f"{record.sha256} ({record.size} bytes); the file was not kept",
        )


def _reason(err: BaseException | str) -> str:
    """A short, lower-case reason for a failed connection (``"connection refused"``)."""
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed by the server without an answer"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def read_lock(folder: str | os.PathLike, manifest: str) -> dict[str, FileRecord]:
    """The records of ``folder``'s lock file (empty when there is none).

    Raises
    ------
    InputError
        Naming the lock file when it is not a lock file of ``manifest``.
    """
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        owner = raw["manifest"]
        records = {name: FileRecord(**entry) for name, entry in raw["files"].items()}
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a prostseg lock file ({err}); move it away") from None
    if owner != manifest:
        raise InputError(path, f"belongs to dataset {owner!r}, not {manifest!r}")
    return records


def write_lock(folder: str | os.PathLike, manifest: str, records: dict[str, FileRecord]) -> None:
    """Write ``folder``'s lock file atomically, files sorted by path."""
    body = {
        "manifest": manifest,
        "files": {name: asdict(records[name]) for name in sorted(records)},
    }
    with atomic_path(Path(folder) / LOCK_FILE) as tmp:
        tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
