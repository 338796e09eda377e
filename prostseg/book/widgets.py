"""An axial slice browser that keeps working on the book's static web pages.

:func:`slice_browser` returns an ipywidgets widget: a slider over the axial slices,
a choice of overlay (none, lesion mask, zone map) and an intensity window. The pages
of the book are static HTML, which keeps a widget's *state* but runs no Python, so the
browser is built to need none for its main controls: every slice is rendered once, in
Python, to a small PNG, and the slider and the overlay buttons are tied to the images
with :func:`ipywidgets.jslink`, which the web page runs itself. On a static page you
can therefore page through the slices and switch overlays; only the intensity window
needs a running kernel (it renders the slices again).

:func:`slice_montage` is the static twin: a matplotlib figure of a few slices with the
same overlays and colours, for printed pages and for readers without JavaScript.

Both show slices like every figure of the book (:func:`prostseg.viz.to_display`):
anterior at the top and the patient's right on the left (radiological convention),
with the physical aspect ratio of the voxels.

Examples
--------
>>> import numpy as np
>>> volume = np.random.default_rng(0).random((32, 24, 5))
>>> mask = np.zeros(volume.shape, np.uint8)
>>> mask[10:14, 8:12, 2] = 1
>>> browser = slice_browser(volume, mask=mask)
>>> browser.slider.max, browser.index
(4, 2)
>>> browser.slider.value = 4
>>> browser.index
4
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import ipywidgets as widgets
import nibabel as nib
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import ArrayLike
from PIL import Image

from prostseg.book.palette import LESION_COLOUR, ZONE_COLOURS
from prostseg.data.dataset import NUM_ZONE_CLASSES, ZONE_NAMES
from prostseg.errors import InputError
from prostseg.data.io import Volume
from prostseg.figure_png import text_size
from prostseg.viz import to_display

__all__ = ["SliceBrowser", "slice_browser", "slice_montage"]

#: Opacity of the overlay colours.
OVERLAY_ALPHA = 0.5
#: Default intensity window: these percentiles of the volume.
WINDOW_PERCENTILES = (0.5, 99.5)


def _volume_parts(volume: Volume | ArrayLike, what: str):
    """``(data, affine or None, path or None)`` of a Volume or a 3D array."""
    if isinstance(volume, Volume):
        data, affine, path = volume.data, volume.affine, volume.path
    else:
        data, affine, path = np.asarray(volume), None, None
    if data.ndim != 3:
        raise InputError(path, f"the {what} must be a 3D (x, y, z) volume, got shape {data.shape}")
    return data, affine, path


def _spacing(affine: np.ndarray | None) -> tuple[float, float, float]:
    """Voxel size in mm (ones for a bare array)."""
    return (1.0, 1.0, 1.0) if affine is None else tuple(float(v) for v in nib.affines.voxel_sizes(affine))


def _checked_labels(labels, shape, what: str, num_classes: int) -> np.ndarray:
    """Label array of ``labels`` (Volume or array) checked against the image ``shape``."""
    data, _, path = _volume_parts(labels, what)
    if data.shape != shape:
        raise InputError(path, f"the {what} has shape {data.shape}, but the image has shape {shape}")
    if num_classes == 2:
        return (data != 0).astype(np.uint8)
    values = np.unique(data)
    bad = values[(values < 0) | (values >= num_classes) | (values % 1 != 0)]
    if bad.size:
        raise InputError(path, f"the {what} holds values {bad[:5].tolist()} outside the labels 0..{num_classes - 1}")
    return data.astype(np.uint8)


def _lookup_table(colours: Sequence[str | None]) -> np.ndarray:
    """RGBA (uint8) colour of each label; ``None`` is transparent."""
    table = np.zeros((len(colours), 4), np.uint8)
    for label, colour in enumerate(colours):
        if colour is not None:
            table[label] = np.round(np.array(to_rgba(colour, OVERLAY_ALPHA)) * 255)
    return table


def _default_window(data: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(data, WINDOW_PERCENTILES))
    return (low, high) if high > low else (low, low + 1.0)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def _grey_png(slice2d: np.ndarray, window: tuple[float, float]) -> bytes:
    low, high = window
    scaled = np.clip((slice2d.astype(np.float64) - low) / max(high - low, 1e-12), 0.0, 1.0)
    return _png(np.round(to_display(scaled) * 255).astype(np.uint8))


def _colour_png(label_slice: np.ndarray, table: np.ndarray) -> bytes:
    return _png(table[to_display(label_slice)])


def _display_size(shape, spacing, size: int) -> tuple[int, int]:
    """On-screen ``(width, height)`` in pixels: longer side ``size``, true aspect ratio."""
    width_mm, height_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    scale = size / max(width_mm, height_mm)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


class SliceBrowser(widgets.VBox):
    """The widget :func:`slice_browser` returns; see there for the parameters.

    Attributes
    ----------
    slider : ipywidgets.IntSlider
        The axial slice index ``k`` (``volume.data[:, :, k]``).
    overlay : ipywidgets.ToggleButtons or None
        ``"none"``, ``"lesion"`` and/or ``"zones"``; None without masks.
    window : ipywidgets.FloatRangeSlider
        Intensity window mapped to black..white (needs a running kernel).
    """

    def __init__(
        self,
        volume: Volume | ArrayLike,
        *,
        mask: Volume | ArrayLike | None = None,
        zones: Volume | ArrayLike | None = None,
        window: tuple[float, float] | None = None,
        title: str | None = None,
        size: int = 360,
    ):
        data, affine, _ = _volume_parts(volume, "image")
        self._data = data
        depth = data.shape[2]
        spacing = _spacing(affine)
        width, height = (f"{n}px" for n in _display_size(data.shape, spacing, size))
        image_layout = {"width": width, "height": height, "grid_area": "view"}
        start = depth // 2

        window = _default_window(data) if window is None else (float(window[0]), float(window[1]))
        self._images = [widgets.Image(value=_grey_png(data[:, :, k], window), format="png",
                                      layout=widgets.Layout(width=width, height=height)) for k in range(depth)]
        self._slice_stacks = [widgets.Stack(self._images, selected_index=start,
                                            layout=widgets.Layout(grid_area="view"))]

        overlays = {}
        if mask is not None:
            overlays["lesion"] = (_checked_labels(mask, data.shape, "mask", 2), (None, LESION_COLOUR))
        if zones is not None:
            overlays["zones"] = (_checked_labels(zones, data.shape, "zone map", NUM_ZONE_CLASSES), ZONE_COLOURS)
        overlay_choices = [widgets.Box()]  # "none"
        for labels, colours in overlays.values():
            table = _lookup_table(colours)
            stack = widgets.Stack(
                [widgets.Image(value=_colour_png(labels[:, :, k], table), format="png",
                               layout=widgets.Layout(width=width, height=height)) for k in range(depth)],
                selected_index=start,
            )
            self._slice_stacks.append(stack)
            overlay_choices.append(stack)
        self._overlays = widgets.Stack(overlay_choices, selected_index=len(overlay_choices) - 1,
                                       layout=widgets.Layout(grid_area="view"))

        self.slider = widgets.IntSlider(value=start, min=0, max=depth - 1, description="slice",
                                        continuous_update=True)
        self._links = [widgets.jslink((self.slider, "value"), (stack, "selected_index"))
                       for stack in self._slice_stacks]
        self.slider.observe(self._show_slice, "value")

        controls = [self.slider]
        if affine is not None:  # where each slice lies: its S coordinate in mm
            centre = (np.array(data.shape[:2]) - 1) / 2
            positions = [float((affine @ [*centre, k, 1.0])[2]) for k in range(depth)]
            self._positions = widgets.Stack([widgets.Label(f"S {z:+.1f} mm") for z in positions],
                                            selected_index=start)
            self._slice_stacks.append(self._positions)
            self._links.append(widgets.jslink((self.slider, "value"), (self._positions, "selected_index")))
            controls.append(self._positions)

        rows = [widgets.HBox(controls)]
        self.overlay = None
        if overlays:
            self.overlay = widgets.ToggleButtons(options=["none", *overlays], index=len(overlays),
                                                 description="overlay", style={"button_width": "70px"})
            self._links.append(widgets.jslink((self.overlay, "index"), (self._overlays, "selected_index")))
            self.overlay.observe(self._show_overlay, "index")
            rows.append(self.overlay)

        low, high = _default_window(np.array([data.min(), data.max()]))
        self.window = widgets.FloatRangeSlider(value=window, min=min(low, window[0]), max=max(high, window[1]),
                                               step=(high - low) / 200, description="window",
                                               continuous_update=False, readout_format=".4g")
        self.window.observe(self._render_window, "value")

        view = widgets.GridBox([self._slice_stacks[0], self._overlays],
                               layout=widgets.Layout(grid_template_areas='"view"', width="max-content"))
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        super().__init__([*header, *rows, view, self.window])

    @property
    def index(self) -> int:
        """The index ``k`` of the slice on display."""
        return self._slice_stacks[0].selected_index

    @property
    def overlay_mode(self) -> str:
        """The overlay on display: ``"none"``, ``"lesion"`` or ``"zones"``."""
        return "none" if self.overlay is None else self.overlay.value

    def _show_slice(self, change) -> None:
        # jslink does this in the web page; this keeps the Python side in step
        for stack in self._slice_stacks:
            stack.selected_index = change["new"]

    def _show_overlay(self, change) -> None:
        self._overlays.selected_index = change["new"]

    def _render_window(self, change) -> None:
        for k, image in enumerate(self._images):
            image.value = _grey_png(self._data[:, :, k], change["new"])


def slice_browser(
    volume: Volume | ArrayLike,
    *,
    mask: Volume | ArrayLike | None = None,
    zones: Volume | ArrayLike | None = None,
    window: tuple[float, float] | None = None,
    title: str | None = None,
    size: int = 360,
) -> SliceBrowser:
    """Browse the axial slices of a volume, optionally with a lesion mask and zone map.

    Parameters
    ----------
    volume : Volume or array_like, shape (X, Y, Z)
        The image in canonical order (:func:`prostseg.data.io.load_volume`). A
        :class:`~prostseg.data.io.Volume` also gives the voxel spacing (true aspect ratio)
        and the S coordinate of each slice.
    mask : Volume or array_like, shape (X, Y, Z), optional
        Binary mask (any non-zero voxel is foreground), drawn in :data:`prostseg.book.palette.LESION_COLOUR`.
    zones : Volume or array_like of int, shape (X, Y, Z), optional
        Zone labels ``0..4`` (:data:`prostseg.data.dataset.ZONE_NAMES`), drawn in
        :data:`prostseg.book.palette.ZONE_COLOURS`.
    window : (float, float), optional
        Intensities shown as black and white; by default the
        :data:`WINDOW_PERCENTILES` of the volume.
    title : str, optional
        Shown above the controls.
    size : int, optional
        Length in screen pixels of the longer side of the image.

    Returns
    -------
    SliceBrowser
        An :class:`ipywidgets.VBox`. It opens on the middle slice, with the last
        overlay given (zones, else the mask) switched on.

    Raises
    ------
    InputError
        When the volume is not 3D, when a mask does not have the volume's shape, or
        when the zone map holds values other than ``0..4``. The message names the
        file of a :class:`~prostseg.data.io.Volume`.

    Notes
    -----
    Each slice is stored as a PNG in the widget's state, about 20 kB for a
    160 x 160 slice, so a notebook with a browser over a few dozen slices grows by a
    megabyte or so. Browse a region of interest (``volume.data[..., k0:k1]``) for
    longer volumes.

    Examples
    --------
    >>> import numpy as np
    >>> zones = np.zeros((16, 16, 3), np.uint8)
    >>> zones[4:12, 4:12] = 2
    >>> browser = slice_browser(np.ones((16, 16, 3)), zones=zones)
    >>> browser.overlay.options, browser.overlay_mode
    (('none', 'zones'), 'zones')
    >>> slice_browser(np.ones((16, 16, 3)), mask=np.zeros((16, 16, 4)))
    Traceback (most recent call last):
    ...
    prostseg.errors.InputError: the mask has shape (16, 16, 4), but the image has shape (16, 16, 3)
    """
    return SliceBrowser(volume, mask=mask, zones=zones, window=window, title=title, size=size)


def _montage_slices(data, labels: Sequence[np.ndarray], count: int) -> list[int]:
    """Up to ``count`` evenly spread slices, within the slices that hold labels if any."""
    covered = [np.flatnonzero(label.any(axis=(0, 1))) for label in labels]
    covered = np.concatenate(covered) if covered else np.array([], int)
    first, last = (covered.min(), covered.max()) if covered.size else (0, data.shape[2] - 1)
    return sorted({int(k) for k in np.round(np.linspace(first, last, min(count, last - first + 1)))})


def slice_montage(
    volume: Volume | ArrayLike,
    *,
    mask: Volume | ArrayLike | None = None,
    zones: Volume | ArrayLike | None = None,
    slices: Sequence[int] | None = None,
    count: int = 8,
    columns: int = 4,
    window: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """A figure of axial slices with the overlays of :func:`slice_browser`.

    Parameters
    ----------
    volume, mask, zones, window
        As for :func:`slice_browser`; the mask and the zones may be drawn together.
    slices : sequence of int, optional
        Slice indices to show. By default ``count`` slices evenly spread over the slices
        that hold any mask or zone voxel (over the whole volume without overlays).
    count : int, optional
        Number of slices chosen when ``slices`` is None.
    columns : int, optional
        Panels per row.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Each panel is titled with the slice index (and S position for a Volume); a
        legend names the overlay colours.

    Examples
    --------
    >>> import numpy as np
    >>> figure = slice_montage(np.random.default_rng(0).random((20, 20, 6)), count=3)
    >>> [ax.get_title() for ax in figure.axes if ax.get_visible()]
    ['slice 0', 'slice 2', 'slice 5']
    """
    data, affine, _ = _volume_parts(volume, "image")
    layers = []
    if mask is not None:
        layers.append((_checked_labels(mask, data.shape, "mask", 2), (None, LESION_COLOUR)))
    if zones is not None:
        layers.insert(0, (_checked_labels(zones, data.shape, "zone map", NUM_ZONE_CLASSES), ZONE_COLOURS))
    if slices is None:
        slices = _montage_slices(data, [labels for labels, _ in layers], count)
    slices = [int(k) for k in slices]
    if not slices or min(slices) < 0 or max(slices) >= data.shape[2]:
        raise ValueError(f"slices must be indices in 0..{data.shape[2] - 1}, got {slices}")
    window = _default_window(data) if window is None else window
    spacing = _spacing(affine)
    columns = min(columns, len(slices))
    rows = -(-len(slices) // columns)
    panel = 2.6
    figure = Figure(figsize=(panel * columns, panel * rows + (0.5 if title else 0.0) + (0.4 if layers else 0.0)),
                    layout="constrained")
    size = text_size(figure)
    for position, k in enumerate(slices):
        ax = figure.add_subplot(rows, columns, position + 1)
        ax.imshow(to_display(data[:, :, k]), cmap="gray", vmin=window[0], vmax=window[1],
                  aspect=spacing[1] / spacing[0], interpolation="nearest")
        for labels, colours in layers:
            ax.imshow(_lookup_table(colours)[to_display(labels[:, :, k])], aspect=spacing[1] / spacing[0],
                      interpolation="nearest")
        label = f"slice {k}"
        if affine is not None:
            centre = (np.array(data.shape[:2]) - 1) / 2
            label += f" (S {float((affine @ [*centre, k, 1.0])[2]):+.0f} mm)"
        ax.set_title(label, fontsize=size)
        ax.set_axis_off()
    handles = []
    for labels, colours in layers:
        for value in np.unique(labels):
            if colours[value] is not None:
                name = "lesion" if len(colours) == 2 else ZONE_NAMES[value]
                handles.append(Patch(color=colours[value], alpha=OVERLAY_ALPHA + 0.2, label=name))
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=size)
    if title:
        figure.suptitle(title, fontsize=text_size(figure, scale=1.2))
    return figure
