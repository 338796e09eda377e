"""Public prostate MRI datasets: manifests, download, offline import and verification.

A *manifest* is a JSON file in ``data_manifests/`` that says where a public dataset
comes from (URLs, licence, citation, checksums where a trustworthy one is known) and
how its files map onto the prostseg case layout (``CASE_ID/t2w.nii.gz``,
``adc``, ``dwi``, ``lesion``, ``zones``). The functions here work from a manifest:

- :func:`list_manifests` and :func:`load_manifest` find and validate manifests;
- :func:`fetch` downloads the manifest's archives with pooch (needs network);
- :func:`import_local` converts files the user already has (offline);
- :func:`verify` re-checks downloaded archives and the converted cases.

Each case is written into a temporary folder next to its destination and renamed
into place when complete, so an interrupted import never leaves half a case, and an
existing case is replaced only with ``overwrite=True``.

Examples
--------
>>> names = [manifest.name for manifest in list_manifests()]
>>> "msd-prostate" in names
True
>>> load_manifest("msd-prostate").files[0].filename
'Task05_Prostate.tar'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import site
import sys
import tarfile
import tempfile
import textwrap
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import jsonschema

from prostseg.atomic import atomic_path, remove_leftovers
from prostseg.data.dataset import CASE_ROLES, MASKS, PATIENTS_FILE, volume_file
from prostseg.data.download import (
    LOCK_FILE, FileRecord, MissingFile, NetworkError, download, read_lock, write_lock,
)
from prostseg.data.io import check_same_grid, check_volume_file, header_volume
from prostseg.errors import COUNT, DataWarning, InputError, ProstsegError, path_argument

# A manifest fills the roles of prostseg.data.dataset.CASE_ROLES, in that order; the label maps
# among them (prostseg.data.dataset.MASKS) are written as uint8.
LABEL_ROLES = MASKS
#: Extensions copied unchanged when a role needs no conversion.
COPYABLE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")

_MANIFEST_DIR_ENV = "PROSTSEG_MANIFEST_DIR"
_RECORD_PREFIX = ".prostseg-import-"

_FILE_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "pattern": {
            "oneOf": [
                {"type": "string", "pattern": "\\{case\\}"},
                {"type": "array", "items": {"type": "string", "pattern": "\\{case\\}"}, "minItems": 1},
            ]
        },
        "parts": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["pattern", "value"],
                "properties": {
                    "pattern": {"type": "string", "pattern": "\\{case\\}"},
                    "value": {"type": "integer", "minimum": 1, "maximum": 255},
                },
            },
        },
        "channel": {"type": "integer", "minimum": 0},
        "label_map": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 255},
        },
        "binarize": {"type": "boolean"},
        "combine": {"enum": ["single", "union"]},
        "required": {"type": "boolean"},
    },
    "oneOf": [{"required": ["pattern"]}, {"required": ["parts"]}],
}

# a path below the source's base URL: no leading slash, no "." or ".." parts
_REPOSITORY_PATH = {"type": "string", "pattern": "^(?!(.*/)?\\.\\.?(/|$))[^/\\\\]+(/[^/\\\\]+)*$"}
_INDEX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["base_url", "made", "subset", "cases"],
    "properties": {
        "base_url": {"type": "string", "pattern": "^https?://.*/$"},
        "made": {"type": "string", "minLength": 1},
        "renamed": {
            "type": "array",
            "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string", "minLength": 1}},
        },
        "subset": {"type": "string", "minLength": 1},
        "checksums": {
            "type": "object",
            "propertyNames": _REPOSITORY_PATH,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["size", "sha256"],
                "properties": {
                    "size": {"type": "integer", "minimum": 0},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        },
        "cases": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
            "additionalProperties": {
                "type": "object",
                "required": ["t2w"],
                "propertyNames": {"enum": list(CASE_ROLES)},
                "additionalProperties": {"type": "array", "minItems": 1, "items": _REPOSITORY_PATH},
            },
        },
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "prostseg dataset manifest",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version", "name", "title", "description", "homepage",
        "licence", "citation", "files", "layout", "notes",
    ],
    "properties": {
        "schema_version": {"const": 1},
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "homepage": {"type": "string", "pattern": "^https?://"},
        "licence": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "applies_to", "url", "source", "verified"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "applies_to": {"type": "string", "minLength": 1},
                    "url": {"type": ["string", "null"]},
                    "source": {"type": "string", "minLength": 1},
                    "verified": {"type": "boolean"},
                },
            },
        },
        "citation": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text", "doi"],
                "properties": {
                    "text": {"type": "string", "minLength": 1},
                    "doi": {"type": ["string", "null"], "pattern": "^10\\.[0-9]{4,9}/\\S+$"},
                },
            },
        },
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["url", "filename", "sha256", "md5", "size", "archive", "checksum_source"],
                "properties": {
                    "url": {"type": "string", "pattern": "^(https?|ftp)://"},
                    "filename": {"type": "string", "pattern": "^[^/\\\\]+$"},
                    "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                    "md5": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"},
                    "size": {"type": ["integer", "null"], "minimum": 1},
                    "archive": {"enum": ["zip", "tar", "tar.gz", None]},
                    "checksum_source": {"type": ["string", "null"]},
                    "note": {"type": "string"},
                },
            },
        },
        "layout": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cases_from", "case_id", "files"],
            "properties": {
                "cases_from": {"type": "string", "pattern": "\\{case\\}"},
                "case_id": {"type": "string", "pattern": "\\{case\\}"},
                "patient_id": {"type": "string", "minLength": 1},
                "case_number_width": {"type": "integer", "minimum": 2, "maximum": 12},
                "files": {
                    "type": "object",
                    "required": ["t2w"],
                    "propertyNames": {"enum": list(CASE_ROLES)},
                    "additionalProperties": _FILE_SPEC_SCHEMA,
                },
            },
        },
        "notes": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "index": _INDEX_SCHEMA,
        "derived": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role", "cases", "model", "settings", "note"],
                "properties": {
                    "role": {"enum": list(CASE_ROLES)},
                    "cases": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    "model": {
                        "type": "object",
                        "required": ["name", "version", "licence", "file", "sha256"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "version": {"type": "string", "minLength": 1},
                            "licence": {"type": "string", "minLength": 1},
                            "file": {"type": "string", "minLength": 1},
                            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        },
                    },
                    "settings": {"type": "object"},
                    "cases_made": {"type": "array", "items": {"type": "object"}},
                    "note": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class ManifestFile:
    """One downloadable file of a dataset (usually an archive)."""

    url: str
    filename: str
    sha256: str | None
    md5: str | None
    size: int | None
    archive: str | None
    checksum_source: str | None

    @property
    def known_hash(self) -> str | None:
        """The strongest published checksum as ``"alg:hex"`` (pooch style), or None."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return None


@dataclass(frozen=True)
class Manifest:
    """A validated dataset manifest; ``raw`` keeps the parsed JSON."""

    path: Path
    name: str
    title: str
    licence_names: tuple[str, ...]
    files: tuple[ManifestFile, ...]
    layout: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @property
    def index(self) -> dict[str, Any] | None:
        """The per-file index (``raw["index"]``) of a source that serves single files."""
        return self.raw.get("index")


@dataclass
class VerifyReport:
    """What :func:`verify` checked and which problems it found."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def manifest_dir() -> Path:
    """Return the folder holding the packaged manifests.

    Looks at ``$PROSTSEG_MANIFEST_DIR``, then ``data_manifests/`` at the root of a
    source checkout, then the copy an installed wheel puts in
    ``<prefix>/share/prostseg/data_manifests`` (``sys.prefix`` or the user base).
    """
    candidates = []
    if os.environ.get(_MANIFEST_DIR_ENV):
        candidates.append(Path(os.environ[_MANIFEST_DIR_ENV]))
    candidates.append(Path(__file__).resolve().parents[2] / "data_manifests")
    for prefix in (sys.prefix, site.getuserbase()):  # wheel data-files, system or --user
        candidates.append(Path(prefix) / "share" / "prostseg" / "data_manifests")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ProstsegError(
        "no data_manifests folder found; looked in " + ", ".join(map(str, candidates))
    )


def list_manifests() -> list[Manifest]:
    """Return every packaged manifest, validated, sorted by name."""
    return sorted(
        (load_manifest(path) for path in manifest_dir().glob("*.json")),
        key=lambda manifest: manifest.name,
    )


def load_manifest(name_or_path: str | os.PathLike) -> Manifest:
    """Load and validate a manifest given by name (``"msd-prostate"``) or JSON path.

    Raises
    ------
    InputError
        Naming the manifest file, when it is missing, is not JSON or does not follow
        :data:`MANIFEST_SCHEMA`.
    """
    text = os.fspath(path_argument(name_or_path, "name_or_path"))
    if text.endswith(".json") or os.sep in text or "/" in text:
        path = Path(text)
    else:
        path = manifest_dir() / f"{text}.json"
        if not path.is_file():
            known = sorted(p.stem for p in manifest_dir().glob("*.json"))
            raise InputError(path, f"no manifest named {text!r}; known: {', '.join(known)}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "manifest file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(MANIFEST_SCHEMA).iter_errors(raw)
    )
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise InputError(path, f"invalid manifest at {where}: {error.message}")
    if raw["name"] != path.stem:
        raise InputError(path, f"manifest name {raw['name']!r} differs from the file name")
    _check_index(path, raw)
    files = tuple(
        ManifestFile(**{key: entry[key] for key in ManifestFile.__dataclass_fields__})
        for entry in raw["files"]
    )
    return Manifest(
        path=path,
        name=raw["name"],
        title=raw["title"],
        licence_names=tuple(dict.fromkeys(item["name"] for item in raw["licence"])),
        files=files,
        layout=raw["layout"],
        raw=raw,
    )


def _check_index(path: Path, raw: dict) -> None:
    """Refuse an index whose cases name roles the layout lacks, or the wrong number of files."""
    layout = raw["layout"]["files"]
    for case_id, roles in raw.get("index", {}).get("cases", {}).items():
        for role, files in roles.items():
            spec = layout.get(role)
            if spec is None:
                raise InputError(path, f"index case {case_id}: the layout has no role {role!r}")
            wanted = len(spec["parts"]) if "parts" in spec else 1
            if len(files) != wanted and spec.get("combine") != "union":
                raise InputError(
                    path, f"index case {case_id}: {role} lists {len(files)} file(s), the layout {wanted}"
                )


def default_cache_dir(manifest: Manifest) -> Path:
    """Folder where :func:`fetch` keeps downloaded archives of ``manifest``."""
    import pooch

    return Path(pooch.os_cache("prostseg")) / manifest.name


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file, read in 1 MiB blocks.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp, "empty")
    ...     _ = path.write_bytes(b"")
    ...     file_digest(path, "md5")
    'd41d8cd98f00b204e9800998ecf8427e'
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, entry: ManifestFile) -> None:
    """Raise InputError naming ``path`` when it does not match the manifest's checksum."""
    for algorithm in ("sha256", "md5"):
        expected = getattr(entry, algorithm)
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise InputError(
                    path,
                    f"{algorithm} mismatch: expected {expected}, got {actual}; the file is "
                    "damaged or a different version than the manifest describes",
                )


def fetch(
    manifest: Manifest | str,
    dest: str | os.PathLike,
    *,
    overwrite: bool = False,
    cache_dir: str | os.PathLike | None = None,
    downloader: Callable | None = None,
    cases: int | None = None,
    case_ids: Sequence[str] | None = None,
    workers: int = 1,
    mirror: str | None = None,
    progress: bool = True,
    retries: int = 3,
    backoff: float = 1.0,
) -> list[Path]:
    """Download a dataset, check it, and import it into ``dest`` (needs network access).

    A manifest with an ``index`` (a source that serves single files, such as
    ``prostatex-zones``) is fetched case by case: only the files of the chosen cases
    are downloaded, several at a time, into ``cache_dir`` under their paths in the
    source, each checked against the manifest's published checksum or else the lock
    file ``dest/data.lock.json``, which records the size and SHA-256 of every first
    download. Cases already in ``dest`` and files already in the cache whose record
    matches are not downloaded again, so an interrupted fetch resumes where it stopped.
    A case that cannot be completed (a file missing on the server, a checksum
    mismatch, masks on another grid than the image) is refused with one warning line
    naming the file or URL, and the other cases are still written.

    A manifest without an index is downloaded whole, archive by archive, with pooch
    (kept in ``cache_dir`` so that a second call does not download again), then
    imported with :func:`import_local`.

    Parameters
    ----------
    manifest : Manifest or str
        A manifest or its name.
    dest : path
        Folder to write the cases into (created if missing).
    overwrite : bool
        Replace cases that already exist in ``dest`` (by default an archive import
        refuses them, and a case-by-case fetch keeps them as they are).
    cache_dir : path, optional
        Where to keep the downloads (default :func:`default_cache_dir`).
    downloader : callable, optional
        Archives only: a pooch downloader ``(url, output_file, pooch)``; the default
        picks pooch's HTTP downloader with a tqdm progress bar.
    cases : int, optional
        Index only: fetch the first ``cases`` case ids of the index in sorted order
        (:func:`select_cases`), the same subset on every machine.
    case_ids : sequence of str, optional
        Index only: fetch these cases.
    workers : int
        Index only: files downloaded at the same time (threads), at least 1.
    mirror : str, optional
        Index only: a base URL replacing the index's ``base_url``; below it the files
        keep their paths in the source (an institution's copy, a test server).
    progress : bool
        Index only: show a progress bar of the files downloaded.
    retries, backoff : int, float
        Index only: further tries after a transient network failure, and the pause
        before the first of them in seconds (doubled for each next one); see
        :func:`prostseg.data.download.download`.

    Returns
    -------
    list of Path
        The case folders written by this call (cases already in ``dest`` are kept and
        not listed).

    Raises
    ------
    InputError
        Naming the URL or file at fault: a network failure after every retry (the fetch
        stops; what was complete is kept), an option the manifest does not support, or,
        after the other cases were written, the number of cases refused.

    Examples
    --------
    >>> select_cases(load_manifest("prostatex-zones"), cases=2)
    ['ProstateX-0001', 'ProstateX-0002']
    """
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(manifest)
    if manifest.index is not None:
        return _fetch_cases(
            manifest, Path(dest), cache, select_cases(manifest, cases=cases, case_ids=case_ids),
            overwrite=overwrite, workers=workers, mirror=mirror, progress=progress,
            retries=retries, backoff=backoff,
        )
    if cases is not None or case_ids is not None or mirror is not None or workers != 1:
        raise InputError(
            manifest.path,
            "the source serves whole archives only: choosing cases (cases=, case_ids=), "
            "mirror= and workers= need a manifest with a per-file 'index'",
        )
    return _fetch_archives(manifest, Path(dest), cache, overwrite=overwrite, downloader=downloader)


def select_cases(
    manifest: Manifest, *, cases: int | None = None, case_ids: Sequence[str] | None = None
) -> list[str]:
    """The case ids of ``manifest``'s index that a fetch takes, sorted.

    ``cases=N`` takes the first ``N`` case ids in sorted order (a fixed subset, the same
    on every machine); ``case_ids`` names them; neither takes every case.

    Raises
    ------
    InputError
        Naming the manifest, for an id the index lacks or more cases than it lists.

    Examples
    --------
    >>> select_cases(load_manifest("prostatex-zones"), case_ids=["ProstateX-0002"])
    ['ProstateX-0002']
    """
    if manifest.index is None:
        raise InputError(manifest.path, "has no per-file index to choose cases from")
    known = sorted(manifest.index["cases"])
    if cases is not None and case_ids is not None:
        raise InputError(manifest.path, "give the number of cases or their ids, not both")
    if case_ids is not None:
        unknown = sorted(set(case_ids) - set(known))
        if unknown:
            raise InputError(
                manifest.path, f"the index lists no case {', '.join(unknown)} (first: {known[0]})"
            )
        return sorted(set(case_ids))
    if cases is not None:
        if not 1 <= cases <= len(known):
            raise InputError(manifest.path, f"cases={cases}: the index lists 1 to {len(known)} cases")
        return known[:cases]
    return known


def _fetch_archives(
    manifest: Manifest, dest: Path, cache: Path, *, overwrite: bool, downloader: Callable | None
) -> list[Path]:
    """Download the manifest's archives with pooch, then import them."""
    import pooch

    if not manifest.files:
        raise InputError(manifest.path, "lists no downloadable files; use import_local")
    cache.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        target = cache / entry.filename
        try:
            pooch.retrieve(
                entry.url,
                known_hash=entry.known_hash,
                fname=entry.filename,
                path=cache,
                downloader=downloader,
                progressbar=True,
            )
        except ValueError as err:  # pooch reports a hash mismatch as ValueError
            raise InputError(target, f"download failed verification: {err}") from None
        except OSError as err:  # requests' errors are OSErrors: name the URL, no traceback
            if getattr(err, "filename", None):
                raise
            raise InputError(entry.url, f"cannot download: {err}") from None
    return import_local(manifest, cache, dest, overwrite=overwrite)


def _fetch_cases(
    manifest: Manifest,
    dest: Path,
    cache: Path,
    chosen: list[str],
    *,
    overwrite: bool,
    workers: int,
    mirror: str | None,
    progress: bool,
    retries: int,
    backoff: float,
) -> list[Path]:
    """Download the files of the ``chosen`` cases of an index and write the cases."""
    from tqdm.auto import tqdm

    COUNT.check(workers, "workers")
    index = manifest.index
    base = (mirror or index["base_url"]).rstrip("/") + "/"
    dest.mkdir(parents=True, exist_ok=True)
    record = _read_record(dest, manifest)
    todo = []
    for case_id in chosen:
        if (dest / case_id).exists() and not overwrite:
            if case_id not in record["cases"]:
                warnings.warn(
                    f"{dest / case_id}: exists and was not written by an import; kept as it is",
                    DataWarning, stacklevel=3,
                )
            continue
        todo.append(case_id)
    lock = read_lock(dest, manifest.name)
    published = {
        name: FileRecord(**entry) for name, entry in index.get("checksums", {}).items()
    }
    names = sorted({name for case_id in todo for files in index["cases"][case_id].values()
                    for name in files})
    expected = {name: published.get(name) or lock.get(name) for name in names}
    missing = [name for name in names if not _cached(cache / name, expected[name])]
    for folder in sorted({(cache / name).parent for name in missing}):
        remove_leftovers(folder)  # temporary files of a killed fetch
    failed: dict[str, str] = {}
    bar = tqdm(total=len(missing), unit="file", desc=f"{manifest.name}", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_download_indexed, base, name, cache / name, expected=expected[name],
                        renamed=index.get("renamed", ()), retries=retries, backoff=backoff): name
            for name in missing
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                stop, recorded = None, len(lock)
                for future in done:
                    name = futures[future]
                    try:
                        downloaded, served_as = future.result()
                        lock.setdefault(name, downloaded)
                        if served_as != name:
                            warnings.warn(f"{base}{served_as}: {name} is served under this irregular "
                                          "name; fetched from there", DataWarning, stacklevel=2)
                    except NetworkError as err:  # the next file would fail the same way
                        stop = stop or err
                    except InputError as err:  # this file only: its case is refused
                        failed[name] = str(err)
                    bar.update()
                if len(lock) > recorded:
                    write_lock(dest, manifest.name, lock)
                if stop is not None:
                    raise stop
        finally:
            for future in pending:
                future.cancel()
            bar.close()
    plan = []
    for case_id in todo:
        problems = [failed[n] for files in index["cases"][case_id].values() for n in files
                    if n in failed]
        plan.append((case_id, problems[0] if problems else _index_sources(
            manifest, case_id, cache)))
    return _write_cases(dest, manifest, plan, record, overwrite=overwrite)


def _download_indexed(base: str, name: str, target: Path, *, expected: FileRecord | None,
                      renamed: Sequence[Sequence[str]], **options) -> tuple[FileRecord, str]:
    """Download file ``name`` of an index into ``target``; return its record and the name
    the server had it under.

    When the server has no file of that name (HTTP 404), each ``(old, new)`` pair of the
    index's ``renamed`` list is tried on the file name (``ProstateX-0086_tz`` ->
    ``ProstateX-086_tz``); the file is still stored and recorded under ``name``.
    """
    try:
        return download(base + name, target, expected=expected, **options), name
    except MissingFile as missing:
        folder, _, file_name = name.rpartition("/")
        for old, new in renamed:
            other = f"{folder}/{file_name.replace(old, new, 1)}" if folder else file_name.replace(old, new, 1)
            if other == name:
                continue
            try:
                return download(base + other, target, expected=expected, **options), other
            except MissingFile:
                continue
        raise missing


def _cached(path: Path, expected: FileRecord | None) -> bool:
    """True when ``path`` is a complete download matching its record."""
    if expected is None or not path.is_file() or path.stat().st_size != expected.size:
        return False
    return file_digest(path) == expected.sha256


def _index_sources(manifest: Manifest, case_id: str, cache: Path) -> dict:
    """The sources of one case of the index, as :func:`_resolve_role` gives them."""
    sources = {}
    for role, names in manifest.index["cases"][case_id].items():
        spec = manifest.layout["files"][role]
        for name in names:
            if case_id not in PurePosixPath(name).name:
                warnings.warn(
                    f"{name}: the file name does not carry the case id {case_id} (an "
                    "irregular name of the source); the manifest's index assigns it to it",
                    DataWarning, stacklevel=4,
                )
        values = [part["value"] for part in spec["parts"]] if "parts" in spec else None
        sources[role] = {"paths": [cache / name for name in names], "values": values}
    return sources


def import_local(
    manifest: Manifest | str,
    source_dir: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Convert a dataset the user already has into the prostseg case layout.

    ``source_dir`` may hold the manifest's archives (checked against known checksums,
    then unpacked into a temporary folder) and/or their already unpacked contents.
    The manifest's ``layout`` patterns are searched in both.

    Returns
    -------
    list of Path
        The case folders written, sorted.

    A case that cannot be converted (label values the manifest does not map, masks
    whose grid differs from the T2W image) is refused with one
    :class:`~prostseg.errors.DataWarning` line naming the file; the other cases are
    still written, and then an :class:`InputError` says how many were refused.

    Raises
    ------
    InputError
        Naming the file or folder at fault: a checksum mismatch, no case found, an
        ambiguous or missing required file, an existing case without
        ``overwrite=True``, or (after the others were written) refused cases.
    """
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    source = Path(source_dir)
    if not source.is_dir():
        raise InputError(source, "source folder does not exist")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".prostseg-unpack-", dir=dest) as unpack:
        index = _index([source, *_unpack_archives(manifest, source, Path(unpack))])
        width = manifest.layout.get("case_number_width")
        cases = sorted(_collect(index, manifest.layout["cases_from"], width))
        tables = {
            role: _role_tables(spec, index, width)
            for role, spec in manifest.layout["files"].items()
        }
        if not cases:
            raise InputError(
                source, f"no case matches {manifest.layout['cases_from']!r} of {manifest.path.name}"
            )
        case_ids = {manifest.layout["case_id"].format(case=case): case for case in cases}
        existing = sorted(cid for cid in case_ids if (dest / cid).exists())
        if existing and not overwrite:
            raise InputError(
                dest / existing[0],
                f"{len(existing)} case(s) already exist (first: {existing[0]}); "
                "pass overwrite=True to replace them",
            )
        record = _read_record(dest, manifest)
        plan = []
        for case_id, case in sorted(case_ids.items()):
            sources = {
                role: _resolve_role(spec, tables[role], case)
                for role, spec in manifest.layout["files"].items()
            }
            _require(manifest, sources, case, source)
            plan.append((case_id, sources))
        return _write_cases(dest, manifest, plan, record, overwrite=overwrite)


def _read_record(dest: Path, manifest: Manifest) -> dict:
    """The import record of ``dest`` (the SHA-256 of every file written per case)."""
    path = _record_path(dest, manifest)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"manifest": manifest.name, "cases": {}}


def _write_cases(
    dest: Path, manifest: Manifest, plan: list[tuple[str, dict | str]], record: dict, *,
    overwrite: bool,
) -> list[Path]:
    """Write each planned case, refusing a bad one with a warning; update the record.

    ``plan`` pairs a case id with its sources, or with the problem (one line) that
    already rules it out. Cases that fail (masks on another grid, label values the
    manifest does not map...) are reported as :class:`~prostseg.errors.DataWarning`
    lines and the others are still written; then one :class:`InputError` sums up.
    """
    written, refused = [], []
    try:
        for case_id, sources in plan:
            try:
                if isinstance(sources, str):
                    raise InputError(None, sources)
                case_dir = _write_case(dest, case_id, sources, manifest, overwrite)
            except InputError as err:
                refused.append(f"case {case_id} refused: {err}")
                warnings.warn(refused[-1], DataWarning, stacklevel=3)
                continue
            written.append(case_dir)
            record["cases"][case_id] = {
                path.name: file_digest(path) for path in sorted(case_dir.iterdir())
            }
    finally:
        if written:
            with atomic_path(_record_path(dest, manifest)) as tmp:
                tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            _write_patient_ids(manifest, dest, [case_dir.name for case_dir in written])
    if refused:
        raise InputError(
            dest,
            f"{len(refused)} of {len(plan)} case(s) refused, {len(written)} written; "
            f"first: {refused[0]}",
        )
    return written


def _write_patient_ids(manifest: Manifest, dest: Path, case_ids: list[str]) -> None:
    """Add the cases' patient ids to ``dest/patients.json`` (:mod:`prostseg.preparation.splits`).

    The layout's optional ``patient_id`` is a regular expression whose first group,
    searched in the case id, is the patient id (PI-CAI: ``^([^_]+)_``).
    """
    pattern = manifest.layout.get("patient_id")
    if pattern is None:
        return
    path = dest / PATIENTS_FILE
    patients = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for case_id in case_ids:
        match = re.search(pattern, case_id)
        if match is None or not match.groups() or not match.group(1):
            raise InputError(manifest.path, f"layout.patient_id {pattern!r} finds no patient id in case {case_id}")
        patients[case_id] = match.group(1)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(patients, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def verify(
    manifest: Manifest | str,
    dest: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> VerifyReport:
    """Re-check downloaded files and the cases written by :func:`import_local` or :func:`fetch`.

    Archives found in ``cache_dir`` are checked against the manifest's checksums (an
    archive that was never downloaded is skipped: the offline import does not need
    one). Single files fetched case by case are checked against the manifest's
    published checksum, or else against the lock file ``dest/data.lock.json``; a file
    that differs is deleted from the cache (the next fetch downloads it again), and one
    no longer in the cache is skipped. Every case recorded at import time must still
    exist with a ``t2w`` image and files whose SHA-256 matches what was written.
    """
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    dest = Path(dest)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(manifest)
    report = VerifyReport()
    published = (manifest.index or {}).get("checksums", {})
    for name, locked in sorted(read_lock(dest, manifest.name).items()):
        path = cache / name
        wanted = FileRecord(**published[name]) if name in published else locked
        source = "the manifest" if name in published else LOCK_FILE
        if not path.is_file():
            report.checked.append(f"{path}: not in the download cache, skipped")
        elif _cached(path, wanted):
            report.checked.append(f"{path}: matches {source}")
        else:
            path.unlink()
            report.problems.append(
                f"{path}: differs from {source} (sha256 or size); deleted from the cache"
            )
    for entry in manifest.files:
        archive = cache / entry.filename
        if not archive.is_file():
            report.checked.append(f"{archive}: not downloaded, skipped")
        elif entry.known_hash is None:
            report.checked.append(f"{archive}: no published checksum, unverified")
        else:
            try:
                check_file(archive, entry)
                report.checked.append(f"{archive}: checksum ok")
            except InputError as err:
                report.problems.append(str(err))
    record_path = _record_path(dest, manifest)
    if not record_path.is_file():
        report.problems.append(f"{record_path}: no import record; run import or fetch first")
        return report
    record = json.loads(record_path.read_text(encoding="utf-8"))
    for case_id, digests in sorted(record["cases"].items()):
        case_dir = dest / case_id
        if not case_dir.is_dir():
            report.problems.append(f"{case_dir}: case folder is missing")
            continue
        if not any(name.startswith("t2w.") for name in digests):
            report.problems.append(f"{case_dir}: no t2w image")
        for name, expected in sorted(digests.items()):
            path = case_dir / name
            if not path.is_file():
                report.problems.append(f"{path}: file is missing")
            elif file_digest(path) != expected:
                report.problems.append(f"{path}: changed since import (sha256 differs)")
        report.checked.append(f"{case_dir}: {len(digests)} file(s) checked")
    return report


def describe_list(manifests: Sequence[Manifest], *, width: int = 79) -> str:
    """Name, title and licence of each manifest (``prostseg data list``), ``width`` columns wide.

    Titles and licences are wrapped, indented past the column of names; ``width`` is
    raised to at least the name column plus 20 characters.

    Examples
    --------
    >>> print(describe_list([load_manifest("msd-prostate")], width=48))
    msd-prostate  Medical Segmentation Decathlon,
                  Task05 Prostate
                  licence: CC BY-SA 4.0
    """
    column = max((len(manifest.name) for manifest in manifests), default=0) + 2
    wrap = textwrap.TextWrapper(
        width=max(width, column + 20), subsequent_indent=" " * column, break_on_hyphens=False
    )
    entries = []
    for manifest in manifests:
        entries += wrap.wrap(f"{manifest.name:<{column}}{manifest.title}")
        entries += wrap.wrap(f"{'':<{column}}licence: {'; '.join(manifest.licence_names)}")
    return "\n".join(entries)


def describe(manifest: Manifest) -> str:
    """Return a human-readable summary of a manifest (used by ``prostseg data show``)."""
    raw = manifest.raw
    lines = [f"{manifest.name}: {manifest.title}", "", raw["description"], ""]
    lines.append(f"homepage: {raw['homepage']}")
    for item in raw["licence"]:
        state = "verified" if item["verified"] else "UNVERIFIED"
        lines.append(f"licence ({item['applies_to']}): {item['name']} [{state}; {item['source']}]")
    for item in raw["citation"]:
        doi = f" doi:{item['doi']}" if item["doi"] else ""
        lines.append(f"cite: {item['text']}{doi}")
    for entry in manifest.files:
        check = entry.known_hash or "no published checksum (unverified)"
        lines.append(f"file: {entry.filename} <- {entry.url} [{check}]")
    lines.append("layout:")
    lines.append(f"  cases: {manifest.layout['cases_from']} -> {manifest.layout['case_id']}")
    for role, spec in manifest.layout["files"].items():
        what = spec.get("pattern") or [part["pattern"] for part in spec["parts"]]
        extra = {k: v for k, v in spec.items() if k not in ("pattern", "parts")}
        lines.append(f"  {role}: {what}" + (f" {extra}" if extra else ""))
    lines.extend(f"note: {note}" for note in raw["notes"])
    return "\n".join(lines)



# --- helpers -------------------------------------------------------------------------


def _record_path(dest: Path, manifest: Manifest) -> Path:
    return dest / f"{_RECORD_PREFIX}{manifest.name}.json"


def _unpack_archives(manifest: Manifest, source: Path, unpack: Path) -> list[Path]:
    """Check and unpack the manifest's archives present in ``source``; return the roots."""
    roots = []
    for entry in manifest.files:
        archive = source / entry.filename
        if not archive.is_file():
            continue
        check_file(archive, entry)
        if entry.archive is None:
            continue
        root = unpack / entry.filename
        root.mkdir()
        _extract(archive, entry.archive, root)
        roots.append(root)
    return roots


def _extract(archive: Path, kind: str, root: Path) -> None:
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    target = (root / member).resolve()
                    if not target.is_relative_to(root.resolve()):
                        raise InputError(archive, f"member {member!r} would leave the folder")
                bundle.extractall(root)
        else:
            with tarfile.open(archive, "r:gz" if kind == "tar.gz" else "r:") as bundle:
                bundle.extractall(root, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError) as err:
        raise InputError(archive, f"cannot unpack {kind} archive: {err}") from None


def _glob_to_regex(pattern: str) -> re.Pattern:
    """Regex for a glob with one ``{case}`` placeholder (``**/`` spans folders)."""
    out = []
    for token in re.split(r"(\{case\}|\*\*/|\*|\?)", pattern):
        if token == "{case}":
            out.append(r"(?P<case>[^/]+?)")
        elif token == "**/":
            out.append(r"(?:[^/]+/)*")
        elif token == "*":
            out.append(r"[^/]*")
        elif token == "?":
            out.append(r"[^/]")
        else:
            out.append(re.escape(token))
    return re.compile("".join(out))


def _visible(path: Path, root: Path) -> bool:
    """False for files under hidden names (``.DS_Store``, ``._x`` resource forks)."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _index(roots: list[Path]) -> list[tuple[Path, list[str]]]:
    """List each root's visible files once, as POSIX paths relative to the root."""
    return [
        (root, sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and _visible(p, root)))
        for root in roots
    ]


def _collect(
    index: list[tuple[Path, list[str]]], pattern: str, width: int | None = None
) -> dict[str, list[Path]]:
    """Map each case id to the files matching ``pattern``, from the first root having any.

    With ``width`` (the layout's ``case_number_width``), a case id ending in a shorter
    number is padded with zeros to that many digits, with a warning naming the file.
    """
    regex = _glob_to_regex(pattern)
    found: dict[str, list[Path]] = {}
    for root, names in index:
        in_root: dict[str, list[Path]] = {}
        for name in names:
            match = regex.fullmatch(name)
            if match:
                case = _padded(match.group("case"), width, root / name)
                in_root.setdefault(case, []).append(root / name)
        for case, paths in in_root.items():
            found.setdefault(case, paths)
    return found


def _padded(case: str, width: int | None, path: Path) -> str:
    """``case`` with its final number zero-padded to ``width`` digits (warning when changed).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _padded("ProstateX-012", 4, Path("ProstateX-012_pz.nii.gz"))
    'ProstateX-0012'
    >>> str(caught[0].message)
    'ProstateX-012_pz.nii.gz: case number 012 has fewer than 4 digits; taken as ProstateX-0012'
    """
    match = re.fullmatch(r"(.*?)(\d+)", case)
    if width is None or match is None or len(match[2]) >= width:
        return case
    fixed = match[1] + match[2].zfill(width)
    warnings.warn(
        f"{path}: case number {match[2]} has fewer than {width} digits; taken as {fixed}",
        DataWarning, stacklevel=4,
    )
    return fixed


def _role_tables(spec: dict, index, width: int | None = None) -> list[dict[str, list[Path]]]:
    """One case table per pattern (or per part) of a role."""
    if "parts" in spec:
        return [_collect(index, part["pattern"], width) for part in spec["parts"]]
    patterns = spec["pattern"] if isinstance(spec["pattern"], list) else [spec["pattern"]]
    return [_collect(index, pattern, width) for pattern in patterns]


def _resolve_role(spec: dict, tables: list[dict], case: str) -> dict | None:
    """Return ``{"paths": [...], "values": [...] or None}`` for one role of one case."""
    if "parts" in spec:
        paths, values = [], []
        for part, table in zip(spec["parts"], tables):
            found = table.get(case, [])
            if len(found) > 1:
                raise InputError(found[1], f"more than one file matches {part['pattern']!r}")
            if found:
                paths.append(found[0])
                values.append(part["value"])
        return {"paths": paths, "values": values} if paths else None
    for table in tables:
        found = table.get(case, [])
        if len(found) > 1 and spec.get("combine", "single") == "single":
            raise InputError(
                found[1],
                f"{len(found)} files match the pattern for case {case!r} "
                f"(also {found[0].name}); the manifest expects exactly one",
            )
        if found:
            return {"paths": found, "values": None}
    return None


def _require(manifest: Manifest, sources: dict, case: str, source: Path) -> None:
    for role, spec in manifest.layout["files"].items():
        needed = spec.get("required", role == "t2w")
        if needed and sources[role] is None:
            raise InputError(
                source, f"case {case!r} has no {role} file (manifest {manifest.path.name})"
            )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in COPYABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(path, f"unsupported file type; expected one of {COPYABLE_SUFFIXES}")


def _needs_conversion(spec: dict, paths: list[Path]) -> bool:
    return (
        len(paths) > 1
        or "parts" in spec
        or any(key in spec for key in ("channel", "label_map", "binarize"))
    )


def _write_case(
    dest: Path, case_id: str, sources: dict, manifest: Manifest, overwrite: bool
) -> Path:
    """Write one case into a temporary folder, then rename it into ``dest/case_id``."""
    final = dest / case_id
    staging = Path(tempfile.mkdtemp(prefix=f".{case_id}-", dir=dest))
    try:
        t2w_grid = None
        for role in CASE_ROLES:
            found = sources.get(role)
            if found is None:
                continue
            spec = manifest.layout["files"][role]
            if _needs_conversion(spec, found["paths"]):
                image = _convert(role, spec, found)
                out = staging / volume_file(role)
                image.to_filename(out)
            else:
                src = found["paths"][0]
                out = staging / f"{role}{_suffix(src)}"
                shutil.copyfile(src, out)
            if role == "t2w":
                t2w_grid = _staged_grid(out, found["paths"][0])
            elif role in LABEL_ROLES and t2w_grid is not None:
                check_same_grid(t2w_grid, _staged_grid(out, found["paths"][0]))
        if final.exists():
            if not overwrite:
                raise InputError(final, "case already exists; pass overwrite=True to replace it")
            trash = Path(tempfile.mkdtemp(prefix=f".{case_id}-old-", dir=dest))
            final.rename(trash / case_id)
            staging.rename(final)
            shutil.rmtree(trash)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


def _staged_grid(staged: Path, source: Path):
    """The grid (a voxel-less Volume) of a staged file, named after its source file.

    Masks must lie on the T2W grid in full (shape and affine, within
    :data:`prostseg.data.io.GRID_TOLERANCE` of a voxel), not only in shape: a mask shifted in
    space would otherwise be imported as if it marked the right voxels.
    """
    import dataclasses

    try:
        return dataclasses.replace(header_volume(staged), path=source)
    except InputError as err:
        raise InputError(source, err.problem) from None


def _convert(role: str, spec: dict, found: dict):
    """Build the NIfTI image of one role from its source files (NIfTI only)."""
    import nibabel as nib
    import numpy as np

    images = []
    for path in found["paths"]:
        if not path.name.endswith((".nii", ".nii.gz")):
            raise InputError(path, f"converting {role} needs a NIfTI file")
        check_volume_file(path, components=None)
        try:
            images.append((path, nib.load(path)))
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
            raise InputError(path, f"cannot read NIfTI file: {err}") from None
    first_path, first = images[0]
    for path, image in images[1:]:
        if image.shape[:3] != first.shape[:3] or not np.allclose(
            image.affine, first.affine, atol=1e-3
        ):
            raise InputError(path, f"grid differs from {first_path.name}; cannot combine")

    def data_of(path, image):
        try:
            data = np.asanyarray(image.dataobj)
        except (OSError, EOFError, ValueError, zlib.error) as err:
            raise InputError(path, f"cannot read NIfTI file: {err}") from None
        if "channel" in spec:
            if data.ndim != 4 or spec["channel"] >= data.shape[3]:
                raise InputError(path, f"has shape {data.shape}; no channel {spec['channel']}")
            data = data[..., spec["channel"]]
        elif data.ndim != 3:
            raise InputError(path, f"expected a 3D volume, got shape {data.shape}")
        return data

    if role not in LABEL_ROLES:
        return _image_like(data_of(first_path, first), first)

    merged = np.zeros(first.shape[:3], dtype=np.uint8)
    for index, (path, image) in enumerate(images):
        data = data_of(path, image)
        if not np.array_equal(data, np.round(data)):
            raise InputError(path, "label map holds non-integer values")
        data = data.astype(np.int64)
        if found["values"] is not None:  # one binary mask per label value
            stray = sorted(set(np.unique(data).tolist()) - {0, 1})
            if stray:  # a known irregularity of some sources (PROSTATEx zone masks)
                warnings.warn(
                    f"{path}: binary mask holds the value(s) {stray} besides 0 and 1; "
                    "every non-zero voxel is taken as inside",
                    DataWarning, stacklevel=2,
                )
            merged[data > 0] = found["values"][index]
        elif spec.get("binarize"):
            merged[data > 0] = 1
        elif "label_map" in spec:
            mapping = {int(key): value for key, value in spec["label_map"].items()}
            unknown = sorted(set(np.unique(data).tolist()) - mapping.keys())
            if unknown:
                raise InputError(path, f"label values {unknown} are not in the manifest's label_map")
            for source_value, target_value in mapping.items():
                merged[data == source_value] = target_value
        else:
            if data.min() < 0 or data.max() > 255:
                raise InputError(path, "label values outside 0-255; add a label_map")
            merged = np.maximum(merged, data.astype(np.uint8))
    return _image_like(merged, first)


def _image_like(data, reference):
    """A new NIfTI image of ``data`` with the geometry and units of ``reference``."""
    import nibabel as nib

    image = nib.Nifti1Image(data, reference.affine)
    image.header.set_xyzt_units(*reference.header.get_xyzt_units())
    image.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    image.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    return image


__all__ = [
    "MANIFEST_SCHEMA",
    "Manifest",
    "ManifestFile",
    "VerifyReport",
    "check_file",
    "default_cache_dir",
    "describe",
    "describe_list",
    "fetch",
    "file_digest",
    "import_local",
    "list_manifests",
    "load_manifest",
    "manifest_dir",
    "verify",
]
