"""Matplotlib figures: slices, prediction overlays, learning curves, threshold sweeps.

Every function returns a :class:`matplotlib.figure.Figure` (the one holding ``ax``
when an axes is given). New figures are made without pyplot, so nothing here opens a
window or needs a display; show one in a notebook by leaving it as a cell's last
value (or ``display(figure)``), save it with ``figure.savefig``.

Display convention
------------------
Data arrays are never flipped (see :mod:`prostseg.data.io`): an axial slice
``volume.data[:, :, k]`` is indexed ``(x, y)`` with ``+x`` towards the patient's Right
and ``+y`` towards Anterior. Figures show it the way radiologists read axial images
(the radiological convention): anterior at the top and the patient's right on the
*left* of the image, as if looking up from the patient's feet. :func:`to_display`
does that reorientation (``np.flip(slice, (0, 1)).T``); every figure here uses it, so
an image and its masks always stay aligned.

Readable text
-------------
The figures here size all their text with :func:`prostseg.figure_png.text_size`: large
enough to stay readable when the book's page shows the figure shrunk to its text column,
and never smaller than matplotlib's default. Figures made in a notebook can use it too
(``viz.text_size``). Save figures with :func:`prostseg.figure_png.save_png`, which
records the size of their smallest text in the PNG for the book's site test.

Where it sits
-------------
The figures draw what the stages make, so this module imports the light modules of
the first stages (:mod:`prostseg.preparation.registration` for mutual information,
:mod:`prostseg.networks.runs` for a run's history) and never TensorFlow; the later
stages (:mod:`prostseg.networks.architecture`, :mod:`prostseg.use.inference`) draw
with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from prostseg.figure_png import text_size
from prostseg.networks.runs import read_history
from prostseg.preparation.registration import mutual_information

__all__ = [
    "overlay",
    "plot_alignment",
    "plot_channels",
    "plot_checkerboard",
    "plot_colour_overlay",
    "plot_contour_overlay",
    "plot_history",
    "plot_intensity_histograms",
    "plot_joint_histograms",
    "plot_modalities",
    "plot_slice_grid",
    "plot_threshold_sweep",
    "show_slice",
    "text_size",
    "to_display",
]

_TRUTH_COLOUR = "lime"
_PREDICTION_COLOUR = "red"


def to_display(slice2d) -> np.ndarray:
    """Reorient an axial ``(x, y)`` slice for display: anterior up, patient's right on the left.

    Parameters
    ----------
    slice2d : array_like, shape (X, Y)
        ``volume.data[:, :, k]`` in canonical order.

    Returns
    -------
    numpy.ndarray, shape (Y, X)
        Row 0 is the most anterior row, column 0 the patient's rightmost column.

    Examples
    --------
    >>> a = np.zeros((3, 2))
    >>> a[2, 1] = 1  # the most right (x = 2) and most anterior (y = 1) voxel
    >>> to_display(a)
    array([[1., 0., 0.],
           [0., 0., 0.]])
    """
    slice2d = np.asarray(slice2d)
    if slice2d.ndim != 2:
        raise ValueError(f"expected a 2D (x, y) slice, got shape {slice2d.shape}")
    return np.flip(slice2d, (0, 1)).T


def _axes(ax, figsize=(5, 5)):
    """``(figure, ax)``: a new figure with one axes when ``ax`` is None."""
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=figsize)
    return figure, figure.add_subplot()


def _aspect(spacing: Sequence[float] | None) -> float:
    # displayed rows run along y, columns along x
    return 1.0 if spacing is None else float(spacing[1]) / float(spacing[0])


def show_slice(image_slice, *, ax=None, title: str | None = None,
               spacing: Sequence[float] | None = None, cmap: str = "gray") -> Figure:
    """Show an axial slice in the display convention of this module.

    Parameters
    ----------
    image_slice : array_like, shape (X, Y)
        ``volume.data[:, :, k]``.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    title : str, optional
    spacing : (float, float), optional
        In-plane voxel size ``(x, y)`` in mm, for the true aspect ratio.
    cmap : str, optional
        Colour map.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> figure = show_slice(np.random.default_rng(0).random((40, 30)), title="T2W")
    >>> figure.axes[0].get_title()
    'T2W'
    """
    figure, ax = _axes(ax)
    ax.imshow(to_display(image_slice), cmap=cmap, aspect=_aspect(spacing), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=text_size(figure))
    return figure


def _outline(ax, labels, colour: str, linestyle: str) -> None:
    """Draw the boundary of every non-zero label value of an ``(x, y)`` label slice."""
    labels = to_display(np.asarray(labels))
    for value in np.unique(labels[labels != 0]):
        ax.contour((labels == value).astype(float), levels=[0.5], colors=colour,
                   linewidths=1.2, linestyles=linestyle)


def overlay(image_slice, truth=None, pred=None, *, ax=None, title: str | None = None,
            spacing: Sequence[float] | None = None) -> Figure:
    """Outline the true and the predicted masks on an image slice.

    The truth is outlined in green (solid), the prediction in red (dashed); for label
    maps (zones) each label gets its own outline.

    Parameters
    ----------
    image_slice : array_like, shape (X, Y)
        The T2W slice ``volume.data[:, :, k]``.
    truth, pred : array_like, shape (X, Y), optional
        Masks or label maps of the same slice (0 is background).
    ax, title, spacing
        As for :func:`show_slice`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> image = np.random.default_rng(0).random((40, 30))
    >>> truth = np.zeros((40, 30), np.uint8)
    >>> truth[10:20, 5:15] = 1
    >>> figure = overlay(image, truth, np.roll(truth, 3, axis=0), title="case 1")
    >>> len(figure.axes[0].get_legend().get_texts())
    2
    """
    figure = show_slice(image_slice, ax=ax, title=title, spacing=spacing)
    ax = figure.axes[0] if ax is None else ax
    image_shape = np.shape(image_slice)
    handles = []
    for mask, colour, style, name in ((truth, _TRUTH_COLOUR, "solid", "truth"),
                                      (pred, _PREDICTION_COLOUR, "dashed", "prediction")):
        if mask is None:
            continue
        if np.shape(mask) != image_shape:
            raise ValueError(f"{name} has shape {np.shape(mask)}, the image slice {image_shape}")
        _outline(ax, mask, colour, style)
        handles.append(Line2D([], [], color=colour, linestyle=style, label=name))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=text_size(figure), framealpha=0.6)
    return figure


def _curve_label(column: str) -> str:
    """Legend label of a history column: training or validation, or the zone of a Dice column.

    Multi-word zone names are abbreviated as in the book (PZ, TZ, CZ, AFS).
    """
    if column.startswith("val_dice_"):
        words = column.removeprefix("val_dice_").split("_")
        return "".join(word[0].upper() for word in words) if len(words) > 1 else words[0]
    return "validation" if column.startswith("val_") else "training"


def plot_history(history: str | os.PathLike | Sequence[dict], *, columns: int = 3) -> Figure:
    """Learning curves of a training run.

    One panel per quantity (``loss``, ``iou``, ``gen_l1``, ...); training values are
    solid, the matching ``val_`` values dashed. Zone Dice columns of Pix2Pix runs
    (``val_dice_<zone>``) share one panel, labelled with the zones' abbreviations.

    Parameters
    ----------
    history : path or sequence of dict
        A run's ``history.csv`` or the rows of :func:`prostseg.training.loop.read_history`.
    columns : int, optional
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rows = [{"epoch": 0, "loss": 0.7, "val_loss": 0.8, "val_dice_peripheral_zone": 0.1},
    ...         {"epoch": 1, "loss": 0.5, "val_loss": 0.6, "val_dice_peripheral_zone": 0.4}]
    >>> figure = plot_history(rows)
    >>> [ax.get_title() for ax in figure.axes]
    ['loss', 'validation Dice']
    >>> [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    ['training', 'validation']
    """
    if isinstance(history, (str, os.PathLike)):
        history = read_history(history)
    if not history:
        raise ValueError("the history holds no epochs")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    epochs = [row["epoch"] + 1 for row in history]
    panels: dict[str, list[str]] = {}
    for column in history[0]:
        if column in ("epoch", "seconds"):
            continue
        if column.startswith("val_dice_"):
            panel = "validation Dice"
        else:
            panel = column[4:] if column.startswith("val_") else column
        panels.setdefault(panel, []).append(column)
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.6 * columns, 2.9 * rows), layout="constrained")
    size = text_size(figure)
    for index, (panel, names) in enumerate(panels.items(), start=1):
        ax = figure.add_subplot(rows, columns, index)
        for column in names:
            style = "--" if column.startswith("val_") and panel != "validation Dice" else "-"
            ax.plot(epochs, [row[column] for row in history], style, marker=".", label=_curve_label(column))
        ax.set_title(panel, fontsize=size)
        ax.set_xlabel("epoch", fontsize=size)
        ax.tick_params(labelsize=size)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(names) > 1:
            outside = len(names) > 3  # the zones of a Dice panel: beside the curves
            ax.legend(fontsize=size, **({"loc": "center left", "bbox_to_anchor": (1.0, 0.5)} if outside else {}))
    return figure


def plot_threshold_sweep(thresholds: Sequence[float], scores: Sequence[float], *, ax=None,
                         metric: str = "IoU") -> Figure:
    """Plot a score against the probability threshold, marking the best threshold.

    Parameters
    ----------
    thresholds, scores : sequence of float
        E.g. the thresholds given to :func:`prostseg.networks.metrics.threshold_sweep` and its result
        (on validation data: never choose the threshold on the test set).
    ax : matplotlib.axes.Axes, optional
    metric : str, optional
        Name of the score for the axis label.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> figure = plot_threshold_sweep([0.3, 0.5, 0.7], [0.4, 0.6, 0.5])
    >>> figure.axes[0].get_title()
    'best threshold 0.5: IoU 0.600'
    """
    thresholds, scores = np.asarray(thresholds, float), np.asarray(scores, float)
    if thresholds.shape != scores.shape or thresholds.ndim != 1 or thresholds.size == 0:
        raise ValueError(f"need two equally long 1D sequences, got shapes {thresholds.shape}, {scores.shape}")
    figure, ax = _axes(ax, figsize=(5, 3.5))
    order = np.argsort(thresholds)
    ax.plot(thresholds[order], scores[order], marker="o")
    best = int(np.nanargmax(scores))
    ax.axvline(thresholds[best], color="grey", linestyle=":")
    size = text_size(figure)
    ax.set_title(f"best threshold {thresholds[best]:g}: {metric} {scores[best]:.3f}", fontsize=size)
    ax.set_xlabel("threshold", fontsize=size)
    ax.set_ylabel(metric, fontsize=size)
    ax.tick_params(labelsize=size)
    return figure


# --- registration and dataset figures -------------------------------------------------
# Figures of chapters 4 (registration) and 5 (datasets): two images of one slice compared
# (checkerboard, colour and contour overlays, joint histograms), the channels of a
# registered stack, several modalities at their physical size, and grids of slices.

_FIXED_COLOUR = "magenta"
_MOVING_COLOUR = "lime"


def _unit_range(image, percentiles=(1.0, 99.0)) -> np.ndarray:
    """Scale an image to [0, 1] between two of its percentiles (a constant image: zeros)."""
    image = np.asarray(image, dtype=float)
    low, high = np.percentile(image, percentiles)
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _same_shape(fixed_slice, moving_slice) -> tuple[np.ndarray, np.ndarray]:
    fixed_slice, moving_slice = np.asarray(fixed_slice), np.asarray(moving_slice)
    if fixed_slice.ndim != 2 or fixed_slice.shape != moving_slice.shape:
        raise ValueError(f"need two 2D slices of one shape, got {fixed_slice.shape} and {moving_slice.shape}; "
                         "resample the moving image onto the fixed grid first")
    return fixed_slice, moving_slice


def plot_checkerboard(fixed_slice, moving_slice, *, tiles: int = 8, ax=None, title: str | None = None,
                      spacing: Sequence[float] | None = None) -> Figure:
    """Alternate square tiles of two images of the same slice.

    Where the images are aligned, edges run straight across the tile borders; a
    misalignment shows as steps at the borders. Each image is scaled to ``[0, 1]``
    between its 1st and 99th percentiles, so different contrasts (T2W, ADC) mix.

    Parameters
    ----------
    fixed_slice, moving_slice : array_like, shape (X, Y)
        The same axial slice of the fixed image and of the moving image resampled onto
        the fixed grid.
    tiles : int, optional
        Number of tiles along the longer side.
    ax, title, spacing
        As for :func:`show_slice`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> figure = plot_checkerboard(rng.random((40, 30)), rng.random((40, 30)), title="before")
    >>> figure.axes[0].get_title()
    'before'
    """
    fixed_slice, moving_slice = _same_shape(fixed_slice, moving_slice)
    if tiles < 1:
        raise ValueError(f"tiles must be at least 1, got {tiles}")
    side = max(1, int(np.ceil(max(fixed_slice.shape) / tiles)))
    rows, columns = np.indices(fixed_slice.shape) // side
    board = np.where((rows + columns) % 2 == 0, _unit_range(fixed_slice), _unit_range(moving_slice))
    figure, ax = _axes(ax)
    ax.imshow(to_display(board), cmap="gray", vmin=0, vmax=1, aspect=_aspect(spacing), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=text_size(figure))
    return figure


def plot_colour_overlay(fixed_slice, moving_slice, *, ax=None, title: str | None = None,
                        spacing: Sequence[float] | None = None) -> Figure:
    """Show the fixed image in magenta and the moving image in green on one slice.

    Structures that are bright in both look white or grey; a misalignment shows as
    magenta and green fringes on opposite sides of an edge. Each image is scaled to
    ``[0, 1]`` between its 1st and 99th percentiles.

    Parameters
    ----------
    fixed_slice, moving_slice : array_like, shape (X, Y)
    ax, title, spacing
        As for :func:`show_slice`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> figure = plot_colour_overlay(rng.random((40, 30)), rng.random((40, 30)))
    >>> figure.axes[0].get_images()[0].get_array().shape
    (30, 40, 3)
    """
    fixed_slice, moving_slice = _same_shape(fixed_slice, moving_slice)
    fixed, moving = to_display(_unit_range(fixed_slice)), to_display(_unit_range(moving_slice))
    figure, ax = _axes(ax)
    ax.imshow(np.stack([fixed, moving, fixed], axis=-1), aspect=_aspect(spacing), interpolation="nearest")
    ax.set_axis_off()
    ax.legend(handles=[Line2D([], [], color=_FIXED_COLOUR, lw=4, label="fixed"),
                       Line2D([], [], color=_MOVING_COLOUR, lw=4, label="moving")],
              loc="lower right", fontsize=text_size(figure), framealpha=0.6)
    if title:
        ax.set_title(title, fontsize=text_size(figure))
    return figure


def plot_contour_overlay(fixed_slice, moving_slice, *, levels: Sequence[float] = (50.0, 90.0), ax=None,
                         title: str | None = None, spacing: Sequence[float] | None = None) -> Figure:
    """Draw iso-intensity contours of the moving image over the fixed image.

    The contours (of the moving image smoothed by two pixels, at the given
    percentiles of its non-zero values) follow the organ and tissue boundaries of the
    moving image; on an aligned pair they lie on the same boundaries of the fixed
    image.

    Parameters
    ----------
    fixed_slice, moving_slice : array_like, shape (X, Y)
    levels : sequence of float, optional
        Percentiles (0-100) of the moving image's non-zero values to draw.
    ax, title, spacing
        As for :func:`show_slice`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> x = np.hypot(*np.indices((40, 40)) - 20.0)
    >>> figure = plot_contour_overlay(x, x, title="aligned")
    >>> len(figure.axes[0].collections) > 0
    True
    """
    fixed_slice, moving_slice = _same_shape(fixed_slice, moving_slice)
    figure = show_slice(fixed_slice, ax=ax, title=title, spacing=spacing)
    ax = figure.axes[0] if ax is None else ax
    smooth = ndimage.gaussian_filter(np.asarray(moving_slice, dtype=float), 2.0)
    values = smooth[np.asarray(moving_slice) != 0]
    if values.size:
        heights = np.unique(np.percentile(values, levels))
        if heights.size and smooth.min() < heights[0] and heights[-1] < smooth.max():
            ax.contour(to_display(smooth), levels=heights, colors=_MOVING_COLOUR, linewidths=0.8)
    return figure


def _central(slice2d, fraction: float) -> np.ndarray:
    """The central ``fraction`` of both axes of a 2D slice."""
    slice2d = np.asarray(slice2d)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    sizes = [max(1, int(round(n * fraction))) for n in slice2d.shape]
    return slice2d[tuple(slice((n - size) // 2, (n - size) // 2 + size) for n, size in zip(slice2d.shape, sizes))]


def plot_alignment(fixed_slice, before_slice, after_slice, *, spacing: Sequence[float] | None = None,
                   names: tuple[str, str] = ("T2W", "ADC"), fraction: float = 1.0) -> Figure:
    """Checkerboard, colour and contour overlays of a slice before and after registration.

    Parameters
    ----------
    fixed_slice : array_like, shape (X, Y)
        The fixed (T2W) slice.
    before_slice, after_slice : array_like, shape (X, Y)
        The moving image on the fixed grid after header-only resampling and after
        registration.
    spacing : (float, float), optional
        In-plane voxel size of the fixed grid.
    names : (str, str), optional
        Names of the fixed and the moving image.
    fraction : float, optional
        Show only the central ``fraction`` of both in-plane axes (the prostate sits
        near the centre; 0.5 zooms in twofold).

    Returns
    -------
    matplotlib.figure.Figure
        Two rows (before, after) of three panels.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = [rng.random((40, 40)) for _ in range(3)]
    >>> figure = plot_alignment(*images, fraction=0.5)
    >>> len(figure.axes), figure.axes[0].get_images()[0].get_array().shape
    (6, (20, 20))
    """
    fixed_slice, before_slice, after_slice = (_central(s, fraction) for s in (fixed_slice, before_slice, after_slice))
    figure = Figure(figsize=(11, 7.6), layout="constrained")
    axes = figure.subplots(2, 3)
    fixed_name, moving_name = names
    for row, (moving, when) in enumerate(((before_slice, "header only"), (after_slice, "registered"))):
        plot_checkerboard(fixed_slice, moving, ax=axes[row, 0], spacing=spacing,
                          title=f"{when}:\ncheckerboard {fixed_name} / {moving_name}")
        plot_colour_overlay(fixed_slice, moving, ax=axes[row, 1], spacing=spacing,
                            title=f"{when}:\n{fixed_name} magenta, {moving_name} green")
        plot_contour_overlay(fixed_slice, moving, ax=axes[row, 2], spacing=spacing,
                             title=f"{when}:\n{moving_name} contours on {fixed_name}")
    return figure


def plot_joint_histograms(fixed, movings: Mapping[str, np.ndarray], *, mask=None, bins: int = 32) -> Figure:
    """Joint intensity histograms of a fixed image with one or more moving images.

    Each panel counts voxel pairs (fixed intensity along x, moving intensity along y;
    logarithmic colour scale) and gives their mutual information
    (:func:`prostseg.preparation.registration.mutual_information`, same bins). Aligned images
    give a few sharp clusters, one per tissue; misaligned ones a blurred cloud.

    Parameters
    ----------
    fixed : array_like
        The fixed image (any shape).
    movings : mapping of str to array_like
        Title of each panel to a moving image of the fixed image's shape.
    mask : array_like of bool, optional
        Voxels to count (default all).
    bins : int, optional
        Bins per image.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> a = np.random.default_rng(0).random((20, 20))
    >>> figure = plot_joint_histograms(a, {"same": a, "squared": a**2})
    >>> [ax.get_title().split(":")[0] for ax in figure.axes]
    ['same', 'squared']
    """
    fixed = np.asarray(fixed, dtype=float)
    mask = np.ones(fixed.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if not movings:
        raise ValueError("no moving image given")
    figure = Figure(figsize=(4.2 * len(movings), 3.8), layout="constrained")
    size = text_size(figure)
    for index, (name, moving) in enumerate(movings.items(), start=1):
        moving = np.asarray(moving, dtype=float)
        if moving.shape != fixed.shape or mask.shape != fixed.shape:
            raise ValueError(f"{name}: shape {moving.shape}, mask {mask.shape}, fixed image {fixed.shape}")
        ax = figure.add_subplot(1, len(movings), index)
        counts, x_edges, y_edges = np.histogram2d(fixed[mask], moving[mask], bins=bins)
        ax.imshow(np.log1p(counts.T), origin="lower", aspect="auto", cmap="magma",
                  extent=(x_edges[0], x_edges[-1], y_edges[0], y_edges[-1]))
        information = mutual_information(fixed, moving, mask, bins=bins)
        ax.set_title(f"{name}: MI {information:.3f} nats", fontsize=size)
        ax.set_xlabel("fixed intensity", fontsize=size)
        ax.set_ylabel("moving intensity", fontsize=size)
        ax.tick_params(labelsize=size)
    return figure


def plot_channels(stack_slice, *, names: Sequence[str] = ("T2W", "DWI", "ADC"), labels=None,
                  spacing: Sequence[float] | None = None) -> Figure:
    """Show each channel of a multi-channel slice side by side (e.g. a registered stack).

    Each channel is scaled between its 0.5th and 99.5th percentiles, so that a few very
    bright voxels (urine on a high-b DWI) do not leave the rest of the image black.

    Parameters
    ----------
    stack_slice : array_like, shape (X, Y, C)
        ``stack.data[:, :, k]`` of a stack written by
        :func:`prostseg.preparation.registration.register_case`.
    names : sequence of str, optional
        Title of each channel.
    labels : array_like, shape (X, Y), optional
        A label map (e.g. zones) outlined on every channel.
    spacing : (float, float), optional
        In-plane voxel size.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> figure = plot_channels(np.random.default_rng(0).random((30, 30, 3)))
    >>> [ax.get_title() for ax in figure.axes]
    ['T2W', 'DWI', 'ADC']
    """
    stack_slice = np.asarray(stack_slice)
    if stack_slice.ndim != 3 or stack_slice.shape[-1] != len(names):
        raise ValueError(f"expected an (X, Y, {len(names)}) slice for channels {list(names)}, "
                         f"got shape {stack_slice.shape}")
    figure = Figure(figsize=(3.6 * len(names), 3.8), layout="constrained")
    for index, name in enumerate(names):
        ax = figure.add_subplot(1, len(names), index + 1)
        channel = _unit_range(stack_slice[..., index], (0.5, 99.5))  # a few bright voxels do not darken the rest
        if labels is None:
            show_slice(channel, ax=ax, title=name, spacing=spacing)
        else:
            overlay(channel, labels, ax=ax, title=name, spacing=spacing)
            ax.get_legend().remove()
    return figure


def plot_modalities(volumes: Mapping[str, object], *, z_mm: float | None = None) -> Figure:
    """One axial slice of each volume at its physical size and position, on shared axes.

    Each panel shows the slice nearest to the world height ``z_mm`` on the volume's own
    voxel grid, placed by its affine, so a coarse 2 mm ADC map and a 0.5 mm T2W
    volume of one study appear at the same scale with their fields of view. Axes are
    world millimetres (RAS), in the display convention of this module (patient's right
    on the left). Oblique grids are drawn as if axis aligned.

    Parameters
    ----------
    volumes : mapping of str to Volume
        Title of each panel to a :class:`prostseg.data.io.Volume`.
    z_mm : float, optional
        World height (S, mm) of the slices; by default the centre of the first volume.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from prostseg.data.io import Volume
    >>> fine = Volume(np.zeros((40, 40, 5), np.float32), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> coarse = Volume(np.ones((10, 10, 5), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> figure = plot_modalities({"T2W": fine, "ADC": coarse})
    >>> [ax.get_title().splitlines()[0] for ax in figure.axes]
    ['T2W', 'ADC']
    """
    if not volumes:
        raise ValueError("no volume given")
    figure = Figure(figsize=(4.2 * len(volumes), 4.4), layout="constrained")
    size = text_size(figure)
    axes = figure.subplots(1, len(volumes), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (name, volume) in zip(axes, volumes.items()):
        affine = np.asarray(volume.affine, dtype=float)
        shape = volume.data.shape
        if z_mm is None:
            z_mm = float(affine[2, :3] @ ((np.asarray(shape[:3]) - 1) / 2.0) + affine[2, 3])
        centre_xy = (np.asarray(shape[:2]) - 1) / 2.0
        heights = affine[2, 0] * centre_xy[0] + affine[2, 1] * centre_xy[1] + affine[2, 2] * np.arange(shape[2])
        k = int(np.argmin(np.abs(heights + affine[2, 3] - z_mm)))
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        low = affine[:2, 3] - spacing[:2] / 2
        high = affine[:2, 3] + (np.asarray(shape[:2]) - 0.5) * spacing[:2]
        ax.imshow(to_display(volume.data[:, :, k]), cmap="gray", interpolation="nearest",
                  extent=(high[0], low[0], low[1], high[1]))
        ax.set_title(f"{name}\n{shape[0]} x {shape[1]} voxels of {spacing[0]:.2g} x {spacing[1]:.2g} mm",
                     fontsize=size)
        ax.set_xlabel("x (mm), patient's right on the left", fontsize=size)
        ax.tick_params(labelsize=size)
    axes[0].set_ylabel("y (mm), anterior up", fontsize=size)
    return figure


def plot_intensity_histograms(volumes: Mapping[str, object], *, slices: Mapping[str, int] | None = None,
                              percentiles: Sequence[float] = (1.0, 99.0), bins: int = 64) -> Figure:
    """One slice of each volume above the intensity histograms of all of them.

    Every volume is normalised the same way before its histogram is taken: clipped to
    its own ``percentiles`` and scaled to [0, 1]. MRI intensities have no unit, so this
    compares the *shape* of the distributions (how much of a scan is dark, bright or in
    between), not scanner numbers.

    Parameters
    ----------
    volumes : mapping of str to Volume or array_like
        Name of each volume (panel title and legend entry) to a :class:`prostseg.data.io.Volume`
        or an array ``(X, Y, Z)``.
    slices : mapping of str to int, optional
        Axial slice to show per name; by default the middle slice.
    percentiles : (float, float), optional
        Clipping percentiles of the normalisation.
    bins : int, optional
        Histogram bins over [0, 1].

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> figure = plot_intensity_histograms({"a": rng.random((8, 8, 3)), "b": rng.normal(size=(6, 6, 2))})
    >>> histograms, *slices = figure.axes
    >>> [ax.get_title() for ax in slices], len(histograms.get_lines())
    (['a', 'b'], 2)
    """
    if not volumes:
        raise ValueError("no volume given")
    columns = len(volumes)
    figure = Figure(figsize=(max(2.6 * columns, 6.0), 6.4), layout="constrained")
    size = text_size(figure)
    grid = figure.add_gridspec(2, columns, height_ratios=(1.3, 1.0))
    plot = figure.add_subplot(grid[1, :])
    edges = np.linspace(0.0, 1.0, bins + 1)
    for column, (name, volume) in enumerate(volumes.items()):
        data = np.asarray(getattr(volume, "data", volume), dtype=np.float32)
        spacing = getattr(volume, "spacing", None)
        k = data.shape[2] // 2 if slices is None or name not in slices else int(slices[name])
        ax = figure.add_subplot(grid[0, column])
        show_slice(data[:, :, k], ax=ax, spacing=None if spacing is None else spacing[:2])
        ax.set_title(name, fontsize=size)
        counts, _ = np.histogram(_unit_range(data, percentiles), bins=edges)
        plot.plot((edges[:-1] + edges[1:]) / 2, counts / counts.sum(), label=name,
                  linewidth=2.0 if column == 0 else 1.2, color="black" if column == 0 else None)
    plot.set_xlabel(f"intensity, clipped to the {percentiles[0]:g}-{percentiles[1]:g}th percentile and scaled to [0, 1]",
                    fontsize=size)
    plot.set_ylabel("fraction of voxels", fontsize=size)
    plot.tick_params(labelsize=size)
    plot.legend(fontsize=size, ncols=min(columns, 4))
    return figure


def plot_slice_grid(images, labels=None, *, titles: Sequence[str] | None = None, columns: int = 4,
                    spacing: Sequence[float] | None = None) -> Figure:
    """Show several slices in a grid, with their label maps outlined.

    Parameters
    ----------
    images : array_like, shape (N, X, Y) or (N, X, Y, 1)
        Slices, e.g. one batch of :func:`prostseg.preparation.pipeline.unet_dataset` (its height
        axis is ``x``) or augmented copies of one slice.
    labels : array_like, shape (N, X, Y) or (N, X, Y, 1), optional
        Integer label maps or binary masks outlined in green; convert one-hot labels
        with :func:`prostseg.preparation.preprocessing.labels_from_one_hot` first.
    titles : sequence of str, optional
        One per slice.
    columns : int, optional
        Panels per row.
    spacing : (float, float), optional
        In-plane voxel size.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> images = np.random.default_rng(0).random((6, 16, 16, 1))
    >>> len(plot_slice_grid(images, images > 0.9, columns=4).axes)
    8
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"expected slices of shape (N, X, Y) or (N, X, Y, 1), got {images.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 4 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.shape != images.shape:
            raise ValueError(f"labels have shape {labels.shape}, the images {images.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} slices")
    rows = int(np.ceil(len(images) / columns))
    figure = Figure(figsize=(2.6 * columns, 2.7 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, ax in enumerate(axes):
        if index >= len(images):
            ax.set_axis_off()
            continue
        title = None if titles is None else titles[index]
        show_slice(images[index], ax=ax, title=title, spacing=spacing)
        if labels is not None:
            _outline(ax, labels[index], _TRUTH_COLOUR, "solid")
    return figure


def plot_mask_slices(image, mask, other=None, *, spacing: Sequence[float] | None = None,
                     margin: float = 15.0, columns: int = 7,
                     names: tuple[str, str] = ("mask", "other")) -> Figure:
    """Show every axial slice of a volume that holds a mask, cut to the mask's box.

    Each panel is one slice ``k`` with ``mask`` outlined in green (solid) and ``other``,
    when given, in red (dashed), so that a reader can judge a delineation on every
    slice it touches, not only on a chosen one.

    Parameters
    ----------
    image : array_like, shape (X, Y, Z)
        The volume (canonical order, as :func:`prostseg.data.io.load_volume` returns it).
    mask : array_like, shape (X, Y, Z)
        The delineation to show; its non-zero voxels are outlined.
    other : array_like, shape (X, Y, Z), optional
        A second delineation of the same volume (e.g. another rater's or model's).
    spacing : (float, float, float), optional
        Voxel size in mm; ``margin`` is in mm when given, in voxels otherwise.
    margin : float, optional
        Space kept around the box of the masks in each panel.
    columns : int, optional
        Panels per row.
    names : (str, str), optional
        Legend entries of ``mask`` and ``other``.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When the shapes differ or both masks are empty.

    Examples
    --------
    >>> image = np.random.default_rng(0).random((40, 30, 6))
    >>> mask = np.zeros((40, 30, 6), np.uint8)
    >>> mask[10:20, 5:15, 1:4] = 1
    >>> figure = plot_mask_slices(image, mask, np.roll(mask, 2, axis=0), columns=2)
    >>> [ax.get_title() for ax in figure.axes if ax.get_title()]
    ['slice 1', 'slice 2', 'slice 3']
    """
    image, mask = np.asarray(image), np.asarray(mask) > 0
    either = mask if other is None else mask | (np.asarray(other) > 0)
    if image.shape != mask.shape or either.shape != mask.shape:
        raise ValueError(f"image {image.shape}, mask {mask.shape} and other {np.shape(other)} must have one shape")
    if not either.any():
        raise ValueError("the masks are empty: no slice to show")
    found = np.argwhere(either)
    pad = np.ceil(margin / np.asarray(spacing[:2] if spacing is not None else (1.0, 1.0))).astype(int)
    low = np.maximum(found.min(axis=0)[:2] - pad, 0)
    high = np.minimum(found.max(axis=0)[:2] + 1 + pad, image.shape[:2])
    box = (slice(low[0], high[0]), slice(low[1], high[1]))
    shown = np.flatnonzero(either.any(axis=(0, 1)))
    rows = int(np.ceil(len(shown) / columns))
    figure = Figure(figsize=(2.2 * columns, 2.3 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    for ax, k in zip(axes, shown):
        show_slice(image[box + (k,)], ax=ax, title=f"slice {k}", spacing=None if spacing is None else spacing[:2])
        _outline(ax, mask[box + (k,)], _TRUTH_COLOUR, "solid")
        if other is not None:
            _outline(ax, np.asarray(other)[box + (k,)] > 0, _PREDICTION_COLOUR, "dashed")
    handles = [Line2D([], [], color=_TRUTH_COLOUR, label=names[0])]
    if other is not None:
        handles.append(Line2D([], [], color=_PREDICTION_COLOUR, linestyle="dashed", label=names[1]))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=text_size(figure))
    return figure
