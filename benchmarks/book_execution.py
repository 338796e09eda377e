"""Wall time of executing the book: every chapter notebook of ``_toc.yml`` with papermill.

Each notebook runs as the book's CI runs it (``tests/test_notebooks.py``): papermill,
kernel ``python3``, working directory ``book/``, default (smoke) parameters except
``output_dir``, which points into a temporary folder. Reported per notebook and in
total, with the time of a one-cell notebook as the fixed cost of starting a kernel.

``--quick`` executes only the one-cell notebook and lists the chapters without running
them.

Run::

    .venv/bin/python benchmarks/book_execution.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "book_execution"


def toc_notebooks(root: Path = common.REPO_ROOT) -> list[Path]:
    """The chapter notebooks listed in ``_toc.yml``, in book order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]
    entries = list(toc.get("chapters") or []) + [
        chapter for part in toc.get("parts") or [] for chapter in part.get("chapters") or []
    ]
    while entries:
        entry = entries.pop(0)
        files.append(entry["file"])
        entries[:0] = entry.get("sections") or []
    return [root / f"{name}.ipynb" for name in files if (root / f"{name}.ipynb").exists()]


def execute(notebook: Path, work: Path) -> dict:
    import papermill

    output_dir = work / notebook.stem
    started = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(notebook), str(work / f"{notebook.stem}.out.ipynb"), parameters={"output_dir": str(output_dir)},
            cwd=str(notebook.parent), kernel_name="python3", progress_bar=False)
    except papermill.PapermillExecutionError as err:  # report it and time the other chapters
        error = f"{err.ename}: {err.evalue}"[:300]
    return {"notebook": str(notebook.relative_to(common.REPO_ROOT)), "seconds": time.perf_counter() - started,
            "error": error}


def _one_cell_notebook(folder: Path) -> Path:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("output_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell("print(output_dir)")]
    path = folder / "kernel_start.ipynb"
    nbformat.write(notebook, path)
    return path


def main(argv=None) -> int:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    info = common.machine_info(with_tensorflow=True)
    chapters = toc_notebooks()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        probe = _one_cell_notebook(work)
        kernel_seconds, _ = common.timed(lambda: __import__("papermill").execute_notebook(
            str(probe), str(work / "probe.out.ipynb"), kernel_name="python3", progress_bar=False))
        runs = [] if args.quick else [execute(notebook, work) for notebook in chapters]
    total = sum(run["seconds"] for run in runs)
    failed = [run["notebook"] for run in runs if run["error"]]
    results = {"benchmark": NAME, "quick": args.quick, "machine": info,
               "chapters_listed": [str(p.relative_to(common.REPO_ROOT)) for p in chapters],
               "kernel_start_s": kernel_seconds, "notebooks": runs, "total_s": total, "failed": failed}
    rows = [[run["notebook"], run["seconds"], run["error"] or "ok"] for run in runs] + [["**total**", total, ""]]
    md = [common.heading("Book execution (papermill, default smoke parameters)", info, args.quick),
          f"Chapters listed in _toc.yml: {len(chapters)}"
          + ("" if chapters else " (none yet: only the root intro.md exists)")
          + f"; executed: {len(runs)}. Kernel start + one-cell notebook: {kernel_seconds:.3g} s.\n",
          common.table(["notebook", "seconds", "result"], rows), ""]
    common.write_results(args.out, NAME, results, "\n".join(md))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
