"""Run one task per case, in parallel, on this machine or on a Dask cluster.

Dataset-wide commands (``prostseg register-dataset``) apply one function to every case
of a data folder. :func:`run_cases` does the running and nothing else:

* **Where.** One worker runs the cases one after the other in this process; several
  run in a pool of worker processes on this machine (the default, no Dask needed); a
  ``dask.distributed.Client`` (or a scheduler address) runs them on a Dask cluster of
  any size, e.g. SLURM jobs started by ``dask-jobqueue``. The task function must be
  importable (defined in a module, not in a notebook cell): worker processes import it.
* **Cores.** Each task gets a number of threads (``threads``, passed to the task) so
  that the workers together use the cores once: locally ``cores // workers`` (at least
  1); on Dask 1, for clusters that run one single-threaded worker process per core.
* **Failures stay with their case.** An exception in a task becomes a row with status
  ``failed`` and its one-line message; a worker process that dies (a crash in native
  code) is replaced, and the case that killed it is found by rerunning the suspects one
  at a time. The other cases go on either way.
* **Progress.** A progress bar with the cases done and the time left (``tqdm``, on
  standard error), and a callback per finished case, e.g. to rewrite a summary file.

Examples
--------
>>> def measure(case_dir, threads):
...     return {"status": "done", "name_length": len(case_dir.name)}
>>> rows = run_cases(measure, {"a": Path("a"), "bb": Path("bb")}, workers=1, progress=False)
>>> [(row["case"], row["status"], row["name_length"]) for row in rows]
[('a', 'done', 1), ('bb', 'done', 2)]
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from prostseg.atomic import atomic_path
from prostseg.errors import InputError, ProstsegError

__all__ = [
    "CaseRows",
    "connect",
    "one_line",
    "run_cases",
    "run_cases_with_summary",
    "usable_cores",
    "write_summary",
]

#: Warnings that say nothing about a case (native modules announcing their types).
_IGNORED_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning)

_DIED = "the worker process died while working on this case (a crash in native code?)"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: SLURM, cgroups, taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def one_line(err: BaseException) -> str:
    """An exception as one line: its message (with the type unless it is ours).

    Examples
    --------
    >>> one_line(ValueError("bad\\n  value"))
    'ValueError: bad | value'
    >>> one_line(ProstsegError("case-1: missing adc"))
    'case-1: missing adc'
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " | ".join(lines) or "no message"
    return text if isinstance(err, ProstsegError) else f"{type(err).__name__}: {text}"


def _call(task: Callable, name: str, item, threads: int) -> dict:
    """Run ``task(item, threads)`` for case ``name``; never raises: a row either way."""
    started, cpu_started = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for category in _IGNORED_WARNINGS:
            warnings.simplefilter("ignore", category)
        try:
            row = {"status": "done", **task(item, threads)}
        except Exception as err:  # one bad case must not stop the others
            row = {"status": "failed", "error": one_line(err)}
    notes = list(row.pop("warnings", []))
    notes += [f"{w.category.__name__}: {w.message}" for w in caught]
    return {"case": name, **row, "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "warnings": "; ".join(dict.fromkeys(" ".join(str(n).split()) for n in notes))}


def _failed(name: str, error: str) -> dict:
    return {"case": name, "status": "failed", "seconds": 0.0, "warnings": "", "error": error}


def _in_process(task, items: Mapping, threads: int) -> Iterator[dict]:
    for name, item in items.items():
        yield _call(task, name, item, threads)


def _in_pool(task, items: Mapping, workers: int, threads: int) -> Iterator[dict]:
    """Worker processes, at most ``workers`` cases in flight, so that after a crash the
    suspects are known; they are rerun alone, and the one that crashes alone failed."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    queue, suspects, flying = deque(items), deque(), {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        while queue or suspects or flying:
            if suspects and not flying:
                name = suspects.popleft()
                flying[pool.submit(_call, task, name, items[name], threads)] = (name, True)
            while not suspects and queue and len(flying) < workers:
                name = queue.popleft()
                flying[pool.submit(_call, task, name, items[name], threads)] = (name, False)
            done, _ = wait(flying, return_when=FIRST_COMPLETED)
            if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                done, _ = wait(flying)  # a dead worker breaks the pool: all in flight end
                pool.shutdown(wait=True)
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            for future in done:
                name, alone = flying.pop(future)
                error = future.exception()
                if error is None:
                    yield future.result()
                elif not isinstance(error, BrokenProcessPool):  # e.g. an unpicklable result
                    yield _failed(name, one_line(error))
                elif alone:
                    yield _failed(name, _DIED)
                else:
                    suspects.append(name)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _on_dask(task, items: Mapping, client, threads: int) -> Iterator[dict]:
    from distributed import as_completed

    futures = {client.submit(_call, task, name, item, threads, pure=False,
                             key=f"prostseg-{name}-{os.urandom(4).hex()}"): name
               for name, item in items.items()}
    try:
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as err:  # e.g. KilledWorker: the case crashed its workers
                yield _failed(futures[future], f"the Dask task failed: {one_line(err)}")
    finally:
        client.cancel([future for future in futures if not future.done()])


def connect(scheduler: str):
    """A ``dask.distributed.Client`` of the scheduler at ``scheduler`` (``host:port``).

    Raises
    ------
    ProstsegError
        When Dask is not installed or the scheduler cannot be reached.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ProstsegError("a Dask scheduler needs Dask: pip install 'prostseg[dask]'") from None
    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as err:
        problem = one_line(err)
        raise ProstsegError(f"cannot reach the Dask scheduler at {scheduler}: {problem}") from None


def run_cases(
    task: Callable[[object, int], dict],
    items: Mapping[str, object],
    *,
    workers: int | None = None,
    client=None,
    threads: int | None = None,
    progress: bool = True,
    description: str = "cases",
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run ``task(item, threads)`` for every case; return one row per case.

    Parameters
    ----------
    task : callable
        Module-level function ``task(item, threads) -> dict``. The dict becomes the
        case's row; it may set ``status`` (default ``done``) and ``warnings`` (a list).
    items : mapping
        Case id -> the argument for ``task`` (picklable, e.g. the case folder).
    workers : int, optional
        Cases at a time on this machine (default: its usable cores); 1 runs them in
        this process. Ignored with ``client``.
    client : dask.distributed.Client or str, optional
        A Dask client, or the address of a scheduler to connect to (and disconnect from
        afterwards): run the cases on that cluster.
    threads : int, optional
        Threads per case (see the module notes for the default).
    progress : bool
        Show a progress bar with the time left.
    description : str
        Label of the progress bar.
    on_row : callable, optional
        Called in this process with each row as its case finishes.

    Returns
    -------
    list of dict
        Rows in the order of ``items``: ``case``, ``status`` (``failed`` with ``error``
        when the task raised or its worker died), the task's values, ``seconds`` (wall
        time in the task), ``cpu_seconds`` (CPU time of the process that ran it, all its
        threads) and ``warnings`` (one string; Python warnings included).
    """
    from tqdm import tqdm

    if workers is not None and workers < 1:
        raise ProstsegError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ProstsegError(f"threads must be at least 1, got {threads}")
    owned = isinstance(client, str)
    if owned:
        client = connect(client)
    workers = min(workers or usable_cores(), max(1, len(items)))
    if client is not None:
        rows = _on_dask(task, items, client, threads or 1)
    elif workers == 1:
        rows = _in_process(task, items, threads or usable_cores())
    else:
        rows = _in_pool(task, items, workers, threads or max(1, usable_cores() // workers))
    found = {}
    try:
        with tqdm(total=len(items), desc=description, unit="case", smoothing=0,
                  disable=not (progress and items)) as bar:
            for row in rows:
                found[row["case"]] = row
                if on_row is not None:
                    on_row(row)
                bar.update()
    finally:
        rows.close()
        if owned:
            client.close()
    return [found[name] for name in items]


def run_cases_with_summary(
    task: Callable[[object, int], dict],
    items: Mapping[str, object],
    rows: dict[str, dict],
    summary_csv: Path | None,
    columns: Sequence[str],
    **options,
) -> list[dict]:
    """:func:`run_cases` over ``items``, keeping ``rows`` and the summary CSV current.

    ``rows`` (case id -> row) holds every case of the dataset, those not in ``items``
    included (skipped ones, say); each finished case replaces its row, and the summary
    (when ``summary_csv`` is given) is written before the first case and after each.
    ``options`` go to :func:`run_cases`. Returns the rows in ``rows``' order.
    """
    def finished(row: dict) -> None:
        rows[row["case"]] = row
        if summary_csv is not None:
            write_summary(list(rows.values()), summary_csv, columns)

    if summary_csv is not None:
        write_summary(list(rows.values()), summary_csv, columns)
    run_cases(task, items, on_row=finished, **options)
    return list(rows.values())


@dataclass
class CaseRows:
    """What a dataset-wide command did, one row per case (the rows of :func:`run_cases`).

    Attributes
    ----------
    rows : list of dict
        One row per case folder; ``status`` ``failed`` comes with ``error``.
    summary_csv : Path or None
        The summary file, when one was asked for.
    """

    #: The verb of the command, for messages ("3 of 8 cases failed to prepare").
    ACTION: ClassVar[str] = "process"

    rows: list[dict]
    summary_csv: Path | None = None

    @property
    def failed(self) -> list[dict]:
        """The rows of the cases that failed."""
        return [row for row in self.rows if row["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        """Number of cases per status."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    def raise_if_failed(self) -> None:
        """Raise :class:`ProstsegError` listing every failed case with its error."""
        if self.failed:
            listed = "".join(f"\n  {row['case']}: {row['error']}" for row in self.failed)
            raise ProstsegError(
                f"{len(self.failed)} of {len(self.rows)} cases failed to {self.ACTION}:{listed}")


def write_summary(rows: Sequence[dict], path: Path, columns: Sequence[str]) -> None:
    """Write ``rows`` as a CSV of ``columns`` (other keys left out), atomically."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
    except OSError as err:
        raise InputError(path, f"cannot write the summary: {err.strerror or err}") from None
