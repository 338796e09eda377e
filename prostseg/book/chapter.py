"""The first cell of every chapter: data folder, output folder, seed and clean-up.

Each chapter calls :func:`setup` once, right after its ``parameters`` cell::

    chapter = book.setup("07_train-unet", data_dir=data_dir,
                         output_dir=output_dir, seed=seed, cleanup=cleanup)

and ends with ``chapter.finish()``. The conventions it carries:

* **data**: ``data_dir=None`` means the book's phantom dataset (or, for chapters that
  look at real MRI first, the real studies that ship with prostseg, and for the gland
  U-Net those studies with phantoms beside them), kept in
  ``<outputs>/phantom-data`` with the fixed seed :data:`prostseg.book.data.PHANTOM_SEED`;
  a chapter's parameters never rewrite it;
* **outputs**: ``output_dir=None`` means ``<outputs>/<notebook stem>``, e.g.
  ``../outputs/07_train-unet``, where ``<outputs>`` is
  :func:`prostseg.book.data.outputs_root` (the repository's ``outputs/`` when the chapter
  runs in ``book/``, else ``outputs/`` next to the notebook);
* **seed**: the randomness of training (split, initial weights, data stream), never
  the data; :func:`setup` seeds Python's and NumPy's generators, and Keras's when the
  chapter imported Keras;
* **clean-up**: everything the chapter writes is named through :meth:`Chapter.output`
  (or :meth:`Chapter.track`); :meth:`Chapter.finish` deletes exactly those paths when
  ``cleanup`` is True, and nothing else.

Examples
--------
>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> chapter = setup("06_unet", output_dir=f"{root}/06_unet", data="none", seed=0,
...                 cleanup=True)
>>> figure = chapter.output("figure.png")
>>> _ = figure.write_text("a figure")
>>> chapter.finish()  # doctest: +ELLIPSIS
removed 1 path(s) written by this chapter from .../06_unet
>>> figure.exists()
False
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prostseg.book import data as _data

__all__ = ["Chapter", "setup"]

_DATA_DEFAULTS = ("phantom", "real", "gland", "none")


@dataclass
class Chapter:
    """What :func:`setup` prepared for a chapter.

    Attributes
    ----------
    name : str
        The notebook's stem, e.g. ``"07_train-unet"``.
    root : pathlib.Path
        The book's outputs folder (phantom and real data, every chapter's outputs).
    output_dir : pathlib.Path
        This chapter's output folder (created).
    data_dir : pathlib.Path or None
        The data the chapter works on: the reader's folder, the phantom dataset or the
        real data; None when the chapter asked for none.
    seed : int or None
        The training seed.
    cleanup : bool
        Whether :meth:`finish` deletes what the chapter wrote.
    written : list of pathlib.Path
        The paths named by :meth:`output` and :meth:`track`, for :meth:`finish`.
    """

    name: str
    root: Path
    output_dir: Path
    data_dir: Path | None
    seed: int | None
    cleanup: bool = False
    written: list[Path] = field(default_factory=list)

    def output(self, name: str | os.PathLike) -> Path:
        """Return ``output_dir / name``, a file or folder this chapter writes.

        The path is added to :attr:`written`, so that :meth:`finish` can delete it.

        Examples
        --------
        >>> chapter = Chapter("x", Path("out"), Path("out/x"), None, None)
        >>> chapter.output("split.json"), chapter.written
        (PosixPath('out/x/split.json'), [PosixPath('out/x/split.json')])
        """
        return self.track(self.output_dir / name)

    def track(self, path: str | os.PathLike) -> Path:
        """Add a path this chapter writes outside :attr:`output_dir` to :attr:`written`.

        Examples
        --------
        >>> Chapter("x", Path("out"), Path("out/x"), None, None).track("data/aligned")
        PosixPath('data/aligned')
        """
        path = Path(path)
        if path not in self.written:
            self.written.append(path)
        return path

    def output_of(self, chapter: str) -> Path:
        """The default output folder of another chapter, e.g. chapter 7's run.

        Examples
        --------
        >>> Chapter("x", Path("out"), Path("out/x"), None, None).output_of("07_train-unet")
        PosixPath('out/07_train-unet')
        """
        return self.root / chapter

    def phantom_data(self) -> Path:
        """The book's phantom dataset (written on first use, never with another seed)."""
        return _data.tutorial_data(root=self.root)

    def real_data(self) -> Path:
        """The real data folder of :func:`prostseg.book.data.real_data`."""
        return _data.real_data(root=self.root)

    def finish(self) -> None:
        """Delete what the chapter wrote when :attr:`cleanup` is True, and say so.

        Only the paths of :attr:`written` are deleted (files and whole folders), then
        :attr:`output_dir` if nothing else is left in it.
        """
        if not self.cleanup:
            return
        removed = 0
        for path in self.written:  # a path inside a folder removed before is gone
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed += 1
        if self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
            self.output_dir.rmdir()
        print(f"removed {removed} path(s) written by this chapter from {self.output_dir}")


def _seed_everything(seed: int) -> None:
    """Seed Python's and NumPy's generators, and Keras's when Keras is imported."""
    random.seed(seed)
    np.random.seed(seed)
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.utils.set_random_seed(seed)


def setup(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    cleanup: bool = False,
    data: str = "phantom",
) -> Chapter:
    """Prepare a chapter: its data, its output folder, its seed and its clean-up list.

    Parameters
    ----------
    name : str
        The notebook's stem, e.g. ``"07_train-unet"``: the name of its output folder.
    data_dir : str or os.PathLike, optional
        The reader's data, a folder in the case layout (checked, never written to).
    output_dir : str or os.PathLike, optional
        Where the chapter writes; default ``<outputs>/<name>``
        (:func:`prostseg.book.data.outputs_root`).
    seed : int, optional
        The training seed (split, initial weights, data stream). It never changes the
        data: the phantom dataset always has the seed
        :data:`prostseg.book.data.PHANTOM_SEED`.
    cleanup : bool, optional
        Whether :meth:`Chapter.finish` deletes what the chapter wrote.
    data : {"phantom", "real", "gland", "none"}, optional
        The data when ``data_dir`` is None: the book's phantom dataset, the real data of
        :func:`prostseg.book.data.real_data`, the real cases with gland masks and the
        phantoms of :func:`prostseg.book.data.gland_training_data`, or none.

    Returns
    -------
    Chapter

    Raises
    ------
    ValueError
        For an unknown ``data`` or a negative ``seed``.
    InputError
        When ``data_dir`` is not a folder in the case layout.
    """
    if data not in _DATA_DEFAULTS:
        raise ValueError(f"data must be one of {_DATA_DEFAULTS}, got {data!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = _data.outputs_root()
    output_dir = Path(root / name if output_dir is None else output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    chapter = Chapter(name, root, output_dir, None, seed, cleanup)
    if data_dir is not None:
        chapter.data_dir = _data.tutorial_data(data_dir)
    elif data == "phantom":
        chapter.data_dir = chapter.phantom_data()
    elif data == "real":
        chapter.data_dir = chapter.real_data()
    elif data == "gland":
        chapter.data_dir = _data.gland_training_data(root=chapter.root)
    if chapter.data_dir is not None:
        print(_data.describe_source(chapter.data_dir))
    if seed is not None:
        _seed_everything(seed)
    return chapter
