"""PNG images of matplotlib figures that record the size of their smallest text.

Whether a figure's text can be read depends on its size *as shown*: a figure wider than
the page is shrunk to the page, and its text with it. The pixels of a PNG no longer say
how tall its text was drawn, so this module writes it into the PNG, as a text chunk
named :data:`TEXT_RECORD_KEY` holding JSON such as ``{"px": 13.9, "text": "epoch"}``:
the height in image pixels of the smallest text drawn (its font size at the image's
resolution) and that text. A figure that draws no text records ``{"px": null}``. The
book's site test (``tests/test_book_site.py``) reads the record of every figure on every
page and scales it by the width the browser shows the image at.

Three ways in, all through one renderer:

- this module is a matplotlib backend: ``figure.savefig(file, backend=BACKEND)``;
- :func:`save_png` saves a figure to a new file that way;
- the book's build renders the figures that notebook cells show inline the same way
  (``book/ipython_kernel_config.py`` sets ``InlineBackend.print_figure_kwargs``).

:func:`read_text_record` reads the record back, and :func:`text_size` gives the font size
that stays readable on the page (:data:`PAGE_COLUMN_PX`, :data:`MIN_TEXT_PX`).

Examples
--------
>>> import io
>>> from matplotlib.figure import Figure
>>> figure = Figure(figsize=(4, 3), dpi=100)
>>> _ = figure.add_subplot().set_title("loss", fontsize=12)
>>> png = io.BytesIO()
>>> figure.savefig(png, format="png", backend=BACKEND)
>>> record = read_text_record(png.getvalue())
>>> round(record.px, 2), record.text  # 12 pt at 100 dpi; tick labels are 10 pt
(13.89, '0.0')
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from PIL import Image

from prostseg.atomic import atomic_path
from prostseg.errors import InputError

__all__ = ["BACKEND", "MIN_TEXT_PX", "PAGE_COLUMN_PX", "TEXT_RECORD_KEY", "FigureCanvas", "TextRecord",
           "read_text_record", "save_png", "text_size"]

#: The name of this module as a matplotlib backend (``savefig(..., backend=BACKEND)``).
BACKEND = f"module://{__name__}"
#: Keyword of the PNG text chunk that holds the record.
TEXT_RECORD_KEY = "prostseg:smallest-text"
#: Width in CSS pixels at which the book shows an image as wide as its text column, in a
#: 1280 px wide browser window (measured); a wider figure is shown shrunk to it.
PAGE_COLUMN_PX = 676
#: Height in pixels, as shown on that column, of the smallest text of prostseg's figures (the
#: book's site test accepts 9 px and more).
MIN_TEXT_PX = 10.0


@dataclass(frozen=True)
class TextRecord:
    """The smallest text a PNG shows: its height in image pixels and the text itself.

    Both are None for an image without text.
    """

    px: float | None
    text: str | None = None

    def to_json(self) -> str:
        # ASCII only (non-ASCII escaped): PNG tEXt chunks are Latin-1
        return json.dumps({"px": None if self.px is None else round(self.px, 2), "text": self.text})


class _RecordingRenderer(RendererAgg):
    """The Agg renderer, noting the pixel size of every non-blank text it draws."""

    def __init__(self, width, height, dpi):
        super().__init__(width, height, dpi)
        self.drawn_text: list[tuple[float, str]] = []

    def clear(self):
        super().clear()
        self.drawn_text = []

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if str(s).strip():
            self.drawn_text.append((self.points_to_pixels(prop.get_size_in_points()), str(s)))
        super().draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    def smallest_text(self) -> TextRecord:
        if not self.drawn_text:
            return TextRecord(None)
        px, text = min(self.drawn_text, key=lambda drawn: drawn[0])
        return TextRecord(float(px), text)


class FigureCanvas(FigureCanvasAgg):
    """Agg canvas whose PNGs carry a :class:`TextRecord` under :data:`TEXT_RECORD_KEY`."""

    def get_renderer(self):
        width, height = self.figure.bbox.size
        key = width, height, self.figure.dpi
        if self._lastKey != key or not isinstance(getattr(self, "renderer", None), _RecordingRenderer):
            self.renderer = _RecordingRenderer(width, height, self.figure.dpi)
            self._lastKey = key
        return self.renderer

    def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None, dpi=None, facecolor=None,
                  edgecolor=None, orientation=None, bbox_inches_restore=None):
        # print_figure passes dpi ... bbox_inches_restore to the print methods of other
        # packages' backends; it has already applied them to the figure.
        FigureCanvasAgg.draw(self)
        metadata = {**(metadata or {}), TEXT_RECORD_KEY: self.renderer.smallest_text().to_json()}
        mpl.image.imsave(filename_or_obj, self.buffer_rgba(), format="png", origin="upper",
                         dpi=self.figure.dpi, metadata=metadata, pil_kwargs=pil_kwargs)


def read_text_record(png: bytes | str | os.PathLike) -> TextRecord | None:
    """The :class:`TextRecord` of a PNG (its bytes or its path), or None if it has none.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> png = io.BytesIO()
    >>> Figure(figsize=(1, 1)).savefig(png, format="png", backend=BACKEND)
    >>> read_text_record(png.getvalue())
    TextRecord(px=None, text=None)
    >>> png = io.BytesIO()
    >>> Figure(figsize=(1, 1)).savefig(png, format="png")  # plain Agg: no record
    >>> read_text_record(png.getvalue()) is None
    True
    """
    source = io.BytesIO(png) if isinstance(png, bytes) else png
    with Image.open(source) as image:
        value = image.text.get(TEXT_RECORD_KEY) if hasattr(image, "text") else None
    if value is None:
        return None
    record = json.loads(value)
    return TextRecord(record["px"], record.get("text"))


def save_png(figure, path: str | os.PathLike, *, dpi: float = 100, overwrite: bool = False) -> Path:
    """Save a figure as a PNG that records its smallest text (cropped to its contents).

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    path : path
        The PNG to write; its folder is created.
    dpi : float, optional
        Resolution; text of ``s`` points is ``s * dpi / 72`` pixels tall.
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        When ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> from matplotlib.figure import Figure
    >>> figure = Figure(figsize=(3, 2))
    >>> _ = figure.add_subplot().set_xlabel("epoch", fontsize=9)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     saved = save_png(figure, Path(folder) / "curve.png", dpi=144)
    ...     read_text_record(saved)
    TextRecord(px=18.0, text='epoch')
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "exists; pass overwrite=True to replace it")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", backend=BACKEND)
    return path


def text_size(figure: Figure | float, *, scale: float = 1.0) -> float:
    """Font size (points) of text that stays readable when a figure is shown on the book's page.

    A figure wider than :data:`PAGE_COLUMN_PX` pixels is shown shrunk to that width; text
    of this size is then still ``scale * MIN_TEXT_PX`` pixels tall. It is never smaller
    than ``scale`` times matplotlib's default font size.

    Parameters
    ----------
    figure : matplotlib.figure.Figure or float
        The figure, or its width in inches (at ``rcParams["figure.dpi"]``).
    scale : float, optional
        Relative size, e.g. 1.2 for a figure title.

    Returns
    -------
    float

    Examples
    --------
    A 5-inch figure fits the page at 100 dpi, so matplotlib's default (10 points) is
    fine; a 13.52-inch figure is shown at half its size and needs twice the text:

    >>> text_size(Figure(figsize=(5, 4), dpi=100)), text_size(Figure(figsize=(13.52, 4), dpi=100))
    (10.0, 14.4)
    >>> round(14.4 * 100 / 72 * 676 / 1352, 1)  # pixels as shown
    10.0

    In a notebook: ``ax.set_title("loss", fontsize=text_size(figure))``, or
    ``with matplotlib.rc_context({"font.size": text_size(13)}):`` around all the code
    that makes a 13-inch figure.
    """
    if isinstance(figure, Figure):
        width_inches, dpi = float(figure.get_figwidth()), float(figure.dpi)
    else:
        width_inches, dpi = float(figure), float(mpl.rcParams["figure.dpi"])
    shown = min(1.0, PAGE_COLUMN_PX / (width_inches * dpi))  # fraction of its width the page shows
    readable = MIN_TEXT_PX * 72.0 / (dpi * shown)
    return round(scale * max(float(mpl.rcParams["font.size"]), readable), 2)
