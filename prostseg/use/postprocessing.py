"""Clean up predicted masks: keep the largest connected component, drop small ones.

A prostate is one organ, so a segmentation of it should be one connected piece. A
network that looks at one slice at a time can still mark a few pixels elsewhere (a
bright seminal vesicle, a bladder wall) as gland: *false islands*. Keeping only the
largest connected component removes them without touching the main prediction.

* :func:`component_sizes` -- voxel counts of the connected components of a mask.
* :func:`largest_component` -- a binary mask reduced to its largest component.
* :func:`largest_gland_component` -- a zone label map reduced to the largest component
  of the whole gland (all zones together), each voxel kept keeping its zone label.
* :func:`remove_small_components` -- drop the components smaller than a number of
  voxels (specks of a lesion map that a radiologist would not call a lesion), each
  voxel kept keeping its label.

Connectivity
------------
Two foreground voxels belong to the same component when they are neighbours, and
``connectivity`` says which voxels are neighbours, as in
:func:`scipy.ndimage.generate_binary_structure`: ``1`` (the default) means voxels that
share a *face* (6 neighbours in 3D, 4 in 2D); ``2`` adds voxels that share an edge (18
in 3D, 8 in 2D); ``3`` adds those that share only a corner (26 in 3D). In a volume
indexed ``(x, y, z)`` the neighbours along ``z`` are the adjacent slices, so a gland
that overlaps itself from one slice to the next is one component. Face connectivity is
the strict choice: an island that touches the gland only along an edge or a corner
counts as an island of its own and is removed.

Ties
----
When several components share the largest size, the one whose first voxel comes first
in C (row-major) order of the array is kept, the order in which
:func:`scipy.ndimage.label` numbers them. The result is therefore deterministic.

Examples
--------
>>> import numpy as np
>>> mask = np.zeros((5, 5), bool)
>>> mask[0:3, 0:3] = True   # the organ: 9 pixels
>>> mask[4, 4] = True       # a false island: 1 pixel
>>> component_sizes(mask).tolist()
[9, 1]
>>> int(largest_component(mask).sum())
9
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = ["component_sizes", "largest_component", "largest_gland_component", "remove_small_components"]


def _labelled(mask: ArrayLike, connectivity: int) -> tuple[np.ndarray, int]:
    """(component ids, number of components) of the non-zero voxels of ``mask``."""
    mask = np.asarray(mask)
    if mask.ndim < 1:
        raise ValueError(f"expected an array with at least one axis, got shape {mask.shape}")
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)) \
            or not 1 <= connectivity <= mask.ndim:
        raise ValueError(f"connectivity must be an int from 1 to {mask.ndim} (the number of axes), "
                         f"got {connectivity!r}")
    structure = ndimage.generate_binary_structure(mask.ndim, int(connectivity))
    return ndimage.label(mask != 0, structure=structure)


def component_sizes(mask: ArrayLike, *, connectivity: int = 1) -> np.ndarray:
    """Voxel counts of the connected components of a mask, largest first.

    Parameters
    ----------
    mask : array_like
        Binary mask (bool, or any values: non-zero is foreground), any number of axes.
    connectivity : int, optional
        Which voxels are neighbours (see the module documentation): 1 (faces) to
        ``mask.ndim`` (corners too).

    Returns
    -------
    numpy.ndarray of int64
        One count per component, in decreasing order; empty for an empty mask.

    Examples
    --------
    >>> diagonal = np.eye(3, dtype=bool)
    >>> component_sizes(diagonal).tolist()  # faces only: three separate pixels
    [1, 1, 1]
    >>> component_sizes(diagonal, connectivity=2).tolist()  # corners join them
    [3]
    >>> component_sizes(np.zeros((2, 2))).tolist()
    []
    """
    labels, count = _labelled(mask, connectivity)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return np.sort(sizes)[::-1].astype(np.int64)


def largest_component(mask: ArrayLike, *, connectivity: int = 1) -> np.ndarray:
    """Keep the largest connected component of a binary mask.

    Parameters
    ----------
    mask : array_like
        Binary mask (bool, or any values: non-zero is foreground), any number of axes:
        a slice ``(X, Y)`` or a volume ``(X, Y, Z)``.
    connectivity : int, optional
        Which voxels are neighbours (see the module documentation); the default 1
        joins voxels that share a face.

    Returns
    -------
    numpy.ndarray of bool, same shape
        True exactly on the largest component (the first of equally large ones, in C
        order); all False for an empty mask.

    See Also
    --------
    largest_gland_component : the same for a zone label map.

    Examples
    --------
    >>> mask = np.array([[1, 1, 0, 0],
    ...                  [0, 0, 0, 1],
    ...                  [0, 0, 0, 1]])
    >>> largest_component(mask).astype(int)  # a tie of two: the first in C order stays
    array([[1, 1, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 0]])
    >>> largest_component(np.zeros((2, 3), bool)).any()
    np.False_
    """
    labels, count = _labelled(mask, connectivity)
    if count == 0:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    return labels == int(np.argmax(sizes))  # argmax: the first of equal maxima


def largest_gland_component(labels: ArrayLike, *, connectivity: int = 1) -> np.ndarray:
    """Keep the zone labels inside the largest connected component of the whole gland.

    The gland is every non-zero label together (all zones). Its largest component is
    found with :func:`largest_component`; inside it every voxel keeps its zone label,
    everything outside becomes 0 (background). Zones are not cleaned one by one: a
    zone may legitimately lie in several pieces inside the gland (the peripheral zone
    wraps around the transition zone).

    Parameters
    ----------
    labels : array_like of int
        A label map such as the zone map of :mod:`prostseg.data.dataset` (0 background,
        1 .. 4 zones), any number of axes.
    connectivity : int, optional
        See :func:`largest_component`.

    Returns
    -------
    numpy.ndarray, same shape and dtype as ``labels``

    Examples
    --------
    >>> zones = np.array([[1, 2, 0, 0, 3],
    ...                   [1, 2, 0, 0, 0]], np.uint8)
    >>> largest_gland_component(zones)
    array([[1, 2, 0, 0, 0],
           [1, 2, 0, 0, 0]], dtype=uint8)
    """
    labels = np.asarray(labels)
    return np.where(largest_component(labels, connectivity=connectivity), labels, 0).astype(labels.dtype)


def remove_small_components(labels: ArrayLike, min_voxels: int, *, connectivity: int = 1) -> np.ndarray:
    """Set to 0 the connected components of the foreground smaller than ``min_voxels``.

    Components are those of the foreground (every non-zero label together), as in
    :func:`largest_gland_component`; the voxels of the components kept keep their labels.

    Parameters
    ----------
    labels : array_like
        Binary mask or label map, any number of axes.
    min_voxels : int
        Components of fewer voxels are removed (0 or 1 removes nothing).
    connectivity : int, optional
        See :func:`largest_component`.

    Returns
    -------
    numpy.ndarray
        ``labels`` with the components removed set to 0 (same shape and dtype).

    Examples
    --------
    >>> lesions = np.array([[1, 1, 0, 2],
    ...                     [1, 0, 0, 0]], np.uint8)
    >>> remove_small_components(lesions, 2)
    array([[1, 1, 0, 0],
           [1, 0, 0, 0]], dtype=uint8)
    """
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, (int, np.integer)) or min_voxels < 0:
        raise ValueError(f"min_voxels must be an int >= 0, got {min_voxels!r}")
    labels = np.asarray(labels)
    components, count = _labelled(labels, connectivity)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return np.where(keep[components], labels, 0).astype(labels.dtype)
