"""Tables for the chapters: rows of numbers as Markdown that a notebook displays.

Examples
--------
>>> print(markdown_table([{"zone": "PZ", "Dice": 0.81234}, {"zone": "TZ", "Dice": 0.9}]))
| zone | Dice |
|---|---|
| PZ | 0.812 |
| TZ | 0.9 |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["markdown_table"]


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        value = float(value) + 0.0  # no "-0"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, (tuple, list, np.ndarray)):
        if all(isinstance(v, str) for v in value):
            return " ".join(value)  # e.g. the values of an elastix parameter
        return " x ".join(_cell(v) for v in value)  # shapes and voxel sizes
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping] | Mapping, headers: Sequence[str] = ("key", "value")) -> str:
    """Format rows (dicts with the same keys) as a Markdown table.

    Floats get 3 significant digits; tuples and arrays of numbers are written
    ``a x b x c`` (shapes, voxel sizes), lists of strings joined by spaces.

    Parameters
    ----------
    rows : sequence of mapping, or mapping
        One dict per row; the keys of the first row are the column headers. A single
        mapping gives a two-column table, one row per key.
    headers : (str, str), optional
        Column headers of the two-column table of a single mapping.

    Returns
    -------
    str

    Examples
    --------
    >>> print(markdown_table([{"volume": "t2w", "shape": (384, 384, 19)}]))
    | volume | shape |
    |---|---|
    | t2w | 384 x 384 x 19 |
    >>> print(markdown_table({"Metric": ["AdvancedMattesMutualInformation"]}, headers=("parameter", "value")))
    | parameter | value |
    |---|---|
    | Metric | AdvancedMattesMutualInformation |
    """
    if isinstance(rows, Mapping):
        key_header, value_header = headers
        rows = [{key_header: key, value_header: value} for key, value in rows.items()]
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to format")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)
