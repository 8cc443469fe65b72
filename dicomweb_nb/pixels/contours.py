"""Contours (RT Structure Set ROIs) filled onto a voxel grid.

Points come in voxel coordinates ``(k, r, c)`` (fractional; ``c`` along a row, ``r`` down the
rows, integers at pixel centres). A closed planar contour marks the pixels whose centres lie
inside it, by the even-odd rule, so several contours of one ROI on one slice cut holes into
each other, as RT planning systems draw them.

Why not PIL's ``ImageDraw.polygon``: it also fills every pixel the outline touches. For a
10 x 10 mm square on a 1 mm grid it marks 121 pixels (area 100 mm^2, +21 %); the centre rule
here marks 100, so volumes computed from the masks match the contoured ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

__all__ = ["fill_polygon", "rasterize_contours"]


def fill_polygon(shape: tuple[int, int], rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Pixels of a ``shape`` image whose centres lie inside the polygon (even-odd rule)."""
    out = np.zeros(shape, dtype=bool)
    r0, c0 = np.asarray(rows, float), np.asarray(columns, float)
    if r0.size < 3:
        return out
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    moving = r0 != r1  # horizontal edges never cross a row of centres
    r0, c0, r1, c1 = r0[moving], c0[moving], r1[moving], c1[moving]
    low, high = np.minimum(r0, r1), np.maximum(r0, r1)
    first = max(0, int(np.ceil(low.min()))) if low.size else 0
    last = min(shape[0] - 1, int(np.floor(high.max()))) if high.size else -1
    for row in range(first, last + 1):
        # Half-open in r so a vertex on a row of centres is counted once.
        crossing = (low <= row) & (row < high)
        if not crossing.any():
            continue
        t = (row - r0[crossing]) / (r1[crossing] - r0[crossing])
        xs = np.sort(c0[crossing] + t * (c1[crossing] - c0[crossing]))
        for start, stop in zip(xs[0::2], xs[1::2]):
            left = max(0, int(np.ceil(start)))
            right = min(shape[1], int(np.ceil(stop)))  # centres c with start <= c < stop
            if right > left:
                out[row, left:right] ^= True
    return out


def _mark_polyline(target: np.ndarray, rows: np.ndarray, columns: np.ndarray, closed: bool) -> None:
    points = np.c_[rows, columns]
    if closed and len(points) > 1:
        points = np.vstack([points, points[:1]])
    if len(points) == 1:
        samples = points
    else:
        pieces = []
        for a, b in itertools.pairwise(points):
            steps = max(2, int(np.ceil(np.max(np.abs(b - a)) * 2)) + 1)  # at most half a pixel apart
            pieces.append(a + np.linspace(0.0, 1.0, steps)[:, None] * (b - a))
        samples = np.vstack(pieces)
    index = np.rint(samples).astype(int)
    inside = (index[:, 0] >= 0) & (index[:, 0] < target.shape[0]) & (index[:, 1] >= 0) & (index[:, 1] < target.shape[1])
    target[index[inside, 0], index[inside, 1]] = True


def rasterize_contours(mask: np.ndarray, contours: Iterable[tuple[str, np.ndarray]], *,
                       slice_tolerance: float = 0.5) -> list[str]:
    """Fill contours ``(geometric type, points (n, 3) as k, r, c)`` into a ``(slices, rows, columns)`` mask.

    ``CLOSED_PLANAR`` contours are filled (even-odd across the contours of one slice); ``POINT``
    marks its pixel; ``OPEN_PLANAR``/``OPEN_NONPLANAR`` mark the pixels along the line. Contours
    farther than ``slice_tolerance`` slices from every slice are skipped and described in the list
    returned.
    """
    skipped: list[str] = []
    per_slice: dict[int, np.ndarray] = {}
    for number, (kind, points) in enumerate(contours):
        points = np.asarray(points, float)
        kind = kind.upper()
        if kind in ("POINT", "OPEN_NONPLANAR"):
            for k_value, r, c in points:
                k = int(np.rint(k_value))
                if 0 <= k < mask.shape[0] and abs(k_value - k) <= slice_tolerance:
                    _mark_polyline(mask[k], np.array([r]), np.array([c]), closed=False)
            if kind == "OPEN_NONPLANAR" and len(points) > 1:
                for a, b in itertools.pairwise(points):
                    k = int(np.rint((a[0] + b[0]) / 2))
                    if 0 <= k < mask.shape[0]:
                        _mark_polyline(mask[k], np.array([a[1], b[1]]), np.array([a[2], b[2]]), closed=False)
            continue
        k_mean = float(points[:, 0].mean())
        k = int(np.rint(k_mean))
        if not 0 <= k < mask.shape[0] or np.max(np.abs(points[:, 0] - k)) > slice_tolerance:
            skipped.append(f"contour {number + 1} ({kind}) lies at slice {k_mean:.2f}, not on a slice of the grid")
            continue
        if kind == "OPEN_PLANAR":
            _mark_polyline(mask[k], points[:, 1], points[:, 2], closed=False)
            continue
        filled = fill_polygon(mask.shape[1:], points[:, 1], points[:, 2])
        per_slice[k] = filled if k not in per_slice else per_slice[k] ^ filled
    for k, filled in per_slice.items():
        mask[k] |= filled
    return skipped

