"""Tests of the PNG text record of prostseg.figure_png."""

from __future__ import annotations

import base64
import io

import pytest
from matplotlib.figure import Figure

from prostseg.errors import InputError
from prostseg.figure_png import BACKEND, TextRecord, read_text_record, save_png


def _png(figure, **savefig_kwargs) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", backend=BACKEND, **savefig_kwargs)
    return buffer.getvalue()


def test_the_record_holds_the_smallest_text_drawn():
    figure = Figure(figsize=(4, 3), dpi=100)
    ax = figure.add_subplot()
    ax.set_title("title", fontsize=14)
    ax.set_xlabel("the smallest", fontsize=7.2)
    ax.tick_params(labelsize=9)
    assert read_text_record(_png(figure)) == TextRecord(10.0, "the smallest")
    assert read_text_record(_png(figure, dpi=200)) == TextRecord(20.0, "the smallest")


def test_text_that_is_not_drawn_does_not_count():
    figure = Figure(figsize=(3, 3), dpi=100)
    image_ax, hidden_ax = figure.subplots(1, 2)
    image_ax.set_axis_off()  # its tick labels (10 pt) are not drawn
    image_ax.set_title("shown", fontsize=12)
    hidden_ax.set_title("hidden", fontsize=4)
    hidden_ax.set_visible(False)
    image_ax.text(0.5, 0.5, "   ", fontsize=3)  # blank
    image_ax.text(0.5, 0.5, "invisible", fontsize=3, visible=False)
    record = read_text_record(_png(figure))
    assert record.text == "shown" and record.px == pytest.approx(12 * 100 / 72, abs=0.01)


def test_a_figure_without_text_records_none():
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().set_axis_off()
    assert read_text_record(_png(figure)) == TextRecord(None)


def test_inline_rendering_of_notebooks_records_the_text():
    # What the book's kernels do: IPython's inline PNG formatter with the
    # print_figure_kwargs of book/ipython_kernel_config.py.
    from IPython.core.pylabtools import print_figure

    figure = Figure(figsize=(3, 2), dpi=100)
    figure.add_subplot().set_ylabel("Dice \u2212 unicode", fontsize=18)
    figure.axes[0].tick_params(labelsize=36)
    data = print_figure(figure, "png", bbox_inches="tight", base64=True, backend=BACKEND)
    assert read_text_record(base64.b64decode(data)) == TextRecord(25.0, "Dice \u2212 unicode")


def test_plain_matplotlib_pngs_have_no_record():
    buffer = io.BytesIO()
    Figure(figsize=(2, 2)).savefig(buffer, format="png")
    assert read_text_record(buffer.getvalue()) is None


def test_save_png_records_and_never_overwrites(tmp_path):
    figure = Figure(figsize=(3, 2), dpi=50)
    figure.add_subplot().set_title("t", fontsize=9)
    figure.axes[0].tick_params(labelsize=12)
    path = save_png(figure, tmp_path / "new" / "figure.png", dpi=144)
    assert read_text_record(path) == TextRecord(18.0, "t")
    with pytest.raises(InputError, match="figure.png: exists; pass overwrite=True"):
        save_png(figure, path)
    save_png(figure, path, dpi=72, overwrite=True)
    assert read_text_record(path) == TextRecord(9.0, "t")
