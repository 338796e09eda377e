"""The figures of prostseg.viz and prostseg.book.widgets stay readable on the book's pages.

Each figure is made the way a chapter makes it (sizes, panels, titles), rendered like an
inline figure of the book (``bbox_inches="tight"``, 100 dpi, through
:mod:`prostseg.figure_png`) and shrunk, as the page does, to the text column: its smallest
text must still be 9 pixels tall, the floor of ``tests/test_book_site.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from prostseg import figure_png, viz
from prostseg.figure_png import BACKEND, read_text_record
from prostseg.data.io import Volume
from prostseg.book.widgets import slice_montage

SHOWN_MIN_PX = 9.0
RNG = np.random.default_rng(0)


def shown_text(figure) -> tuple[float, str]:
    """(height in pixels, text) of the smallest text as the page shows the figure."""
    png = io.BytesIO()
    figure.savefig(png, format="png", bbox_inches="tight", backend=BACKEND)
    record = read_text_record(png.getvalue())
    assert record.px is not None, "the figure shows no text"
    width = Image.open(png).width
    return record.px * min(1.0, figure_png.PAGE_COLUMN_PX / width), record.text


def _disc_labels(shape, radius):
    """A label map: a disc of zones 1-4 (quadrants) in the middle of every slice."""
    x, y = np.indices(shape[:2]) - np.array(shape[:2])[:, None, None] / 2
    zones = np.where(np.hypot(x, y) < radius, 1 + (x > 0) + 2 * (y > 0), 0).astype(np.uint8)
    return np.repeat(zones[..., None], shape[2], axis=2)


def _volume(shape=(160, 160, 16), spacing=(0.8, 0.8, 3.0)):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.array(shape) * spacing / 2
    return Volume(RNG.normal(100, 20, shape).astype(np.float32), affine)


def _pix2pix_history():
    zones = ["background", "peripheral_zone", "transition_zone", "central_zone",
             "anterior_fibromuscular_stroma", "mean"]
    return [{"epoch": e, "gen_total": 8 / (e + 1), "gen_gan": 1.3, "gen_l1": 0.06 / (e + 1), "disc": 1.1,
             **{f"val_dice_{zone}": e / 10 for zone in zones}, "seconds": 2.0} for e in range(8)]


def _unet_history():
    return [{"epoch": e, "dice": e / 5, "iou": e / 6, "loss": 1 / (e + 1), "val_dice": e / 6, "val_iou": e / 7,
             "val_loss": 1.2 / (e + 1)} for e in range(5)]


def _overlays_on_a_wide_figure():
    # chapters 3, 6 and 11 draw overlays on the panels of their own wide figures
    figure = Figure(figsize=(14, 4.8))
    truth = _disc_labels((160, 160, 1), 30)[..., 0]
    for ax, title in zip(figure.subplots(1, 3), ("U-Net: whole gland", "Pix2Pix: whole gland", "Pix2Pix: zones")):
        viz.overlay(RNG.random((160, 160)), truth, np.roll(truth, 4, axis=0), ax=ax, title=title)
    return figure


BOOK_FIGURES = {
    # chapter 2: montages of lesion and zones, and three levels of the gland
    "slice_montage, 8 slices": lambda: slice_montage(
        _volume(), mask=_disc_labels((160, 160, 16), 8) == 1, zones=_disc_labels((160, 160, 16), 30),
        title="phantom-000: zones and lesion on T2W"),
    "slice_montage, 3 levels": lambda: slice_montage(
        _volume(), zones=_disc_labels((160, 160, 16), 30), slices=[3, 8, 13], title="apex, mid-gland and base"),
    # chapter 2: the real scan beside four phantoms, and their histograms
    "plot_intensity_histograms, 5 volumes": lambda: viz.plot_intensity_histograms(
        {name: _volume() for name in ("ProstateX-0000", "phantom-000", "phantom-001", "phantom-002", "phantom-003")}),
    # chapter 4
    "plot_modalities": lambda: viz.plot_modalities(
        {"T2W": _volume(), "high-b DWI": _volume((64, 64, 16), (2, 2, 3)), "ADC": _volume((64, 64, 16), (2, 2, 3))}),
    "plot_checkerboard": lambda: viz.plot_checkerboard(
        RNG.random((160, 160)), RNG.random((160, 160)), title="header only: tiles of T2W and ADC"),
    "plot_alignment": lambda: viz.plot_alignment(*RNG.random((3, 160, 160)), fraction=0.6),
    "plot_joint_histograms": lambda: viz.plot_joint_histograms(
        RNG.random((40, 40, 4)), {"header only": RNG.random((40, 40, 4)), "registered": RNG.random((40, 40, 4))}),
    "overlay": lambda: viz.overlay(RNG.random((160, 160)), _disc_labels((160, 160, 1), 30)[..., 0],
                                   _disc_labels((160, 160, 1), 28)[..., 0], title="zones moved: header only"),
    "plot_channels": lambda: viz.plot_channels(RNG.random((160, 160, 3)), labels=_disc_labels((160, 160, 1), 30)[..., 0]),
    # chapter 5
    "plot_slice_grid": lambda: viz.plot_slice_grid(
        RNG.random((4, 160, 160)), titles=[f"phantom-001, slice {k}" for k in (6, 7, 8, 7)]),
    "plot_slice_grid, augmentations": lambda: viz.plot_slice_grid(
        RNG.random((8, 128, 128)), RNG.random((8, 128, 128)) > 0.99, titles=["12 of 64 draws"] * 8, columns=4),
    # chapters 7, 8, 10
    "plot_history, U-Net": lambda: viz.plot_history(_unet_history()),
    "plot_history, Pix2Pix": lambda: viz.plot_history(_pix2pix_history()),
    "plot_threshold_sweep": lambda: viz.plot_threshold_sweep(np.linspace(0.1, 0.9, 9), RNG.random(9),
                                                             metric="validation IoU"),
    "overlays on a wide figure": _overlays_on_a_wide_figure,
}


@pytest.mark.parametrize("name", BOOK_FIGURES)
def test_book_figures_keep_their_text_readable_on_the_page(name):
    px, text = shown_text(BOOK_FIGURES[name]())
    assert px >= SHOWN_MIN_PX, f"{name}: {text!r} is {px:.1f} px tall on the page"


def _title_boxes(figure):
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    titles = [ax.title for ax in figure.axes if ax.title.get_text()]
    return [(title.get_text(), title.get_window_extent(canvas.get_renderer())) for title in titles]


@pytest.mark.parametrize("name", ["slice_montage, 8 slices", "plot_alignment", "plot_modalities", "plot_slice_grid",
                                  "plot_channels", "plot_history, Pix2Pix", "overlays on a wide figure"])
def test_panel_titles_do_not_run_into_each_other(name):
    titles = _title_boxes(BOOK_FIGURES[name]())
    for index, (text, box) in enumerate(titles):
        for other, other_box in titles[index + 1:]:
            assert not box.overlaps(other_box), f"{name}: titles {text!r} and {other!r} overlap"


def test_history_legends_name_training_validation_and_zones():
    figure = viz.plot_history(_pix2pix_history())
    assert [ax.get_title() for ax in figure.axes] == ["gen_total", "gen_gan", "gen_l1", "disc", "validation Dice"]
    dice = [text.get_text() for text in figure.axes[-1].get_legend().get_texts()]
    assert dice == ["background", "PZ", "TZ", "CZ", "AFS", "mean"]
    loss = viz.plot_history(_unet_history()).axes[2]
    assert [text.get_text() for text in loss.get_legend().get_texts()] == ["training", "validation"]
    assert [line.get_linestyle() for line in loss.get_lines()] == ["-", "--"]
    with pytest.raises(ValueError, match="columns"):
        viz.plot_history(_unet_history(), columns=0)


@pytest.mark.parametrize("width", [2.0, 5.0, 6.9, 9.0, 13.0, 20.0])
@pytest.mark.parametrize("dpi", [72, 100, 144])
def test_text_size_is_readable_at_any_width(width, dpi):
    figure = Figure(figsize=(width, 3), dpi=dpi)
    size = viz.text_size(figure)
    shown_px = size * dpi / 72 * min(1.0, figure_png.PAGE_COLUMN_PX / (width * dpi))
    assert shown_px >= figure_png.MIN_TEXT_PX - 0.01
    assert size >= 10.0  # never below matplotlib's default
    assert viz.text_size(figure, scale=1.5) == pytest.approx(1.5 * size, abs=0.01)
