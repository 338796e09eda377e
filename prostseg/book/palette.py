"""The book's colours for zone maps and lesion masks: one palette for every figure.

Overlays (:mod:`prostseg.book.widgets`) draw each zone in :data:`ZONE_COLOURS` over the
image; figures that show a label map on its own use :func:`zone_colormap` (the same
colours on a black background) and :func:`zone_legend` for the key. The colours are
the Okabe-Ito set, which readers with the common colour-vision deficiencies tell apart.

Examples
--------
>>> cmap = zone_colormap()
>>> cmap.N, cmap(1) == zone_colormap()(1)
(5, True)
>>> [handle.get_label() for handle in zone_legend()]
['peripheral zone', 'transition zone', 'central zone', 'anterior fibromuscular stroma']
"""

from __future__ import annotations

from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from prostseg.data.dataset import ZONE_NAMES

__all__ = ["ZONE_COLOURS", "ZONE_COLOUR_NAMES", "LESION_COLOUR", "BACKGROUND_COLOUR", "zone_colormap", "zone_legend"]

#: Colour of each zone class, indexed by label (background, 0, is not drawn in overlays).
ZONE_COLOURS = (None, "#e69f00", "#56b4e9", "#009e73", "#cc79a7")
#: Names of the colours of the zone classes, for text (label 0: :data:`BACKGROUND_COLOUR`).
ZONE_COLOUR_NAMES = ("black", "orange", "sky blue", "bluish green", "reddish purple")
#: Colour of the lesion mask in overlays.
LESION_COLOUR = "#ff2020"
#: Colour of label 0 where a zone map is shown on its own.
BACKGROUND_COLOUR = "black"


def zone_colormap() -> ListedColormap:
    """A colormap for a zone map shown on its own: label ``i`` in :data:`ZONE_COLOURS`.

    Show the map with ``vmin=-0.5, vmax=4.5`` (or ``set_clim(-0.5, 4.5)``) so that each
    integer label falls in its own colour.

    Returns
    -------
    matplotlib.colors.ListedColormap
        Five colours: :data:`BACKGROUND_COLOUR`, then the four zones.

    Examples
    --------
    >>> zone_colormap().colors[0]
    'black'
    """
    return ListedColormap([BACKGROUND_COLOUR, *ZONE_COLOURS[1:]], name="prostseg-zones")


def zone_legend(alpha: float = 1.0) -> list[Patch]:
    """Legend entries for the four zones, in :data:`ZONE_COLOURS`.

    Parameters
    ----------
    alpha : float, optional
        Opacity of the patches (that of the overlay they explain).

    Returns
    -------
    list of matplotlib.patches.Patch
        One patch per zone (labels 1 to 4), labelled with its name.

    Examples
    --------
    >>> zone_legend()[0].get_facecolor()[:3] == zone_colormap()(1)[:3]
    True
    """
    return [Patch(color=colour, alpha=alpha, label=name)
            for colour, name in zip(ZONE_COLOURS[1:], ZONE_NAMES[1:])]
