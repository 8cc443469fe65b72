"""Whole-slide images as lazy multi-resolution pyramids: ``Client.slide(study, series)``.

A VL Whole Slide Microscopy series holds one instance per pyramid level, each a multi-frame image
whose frames are the tiles of its Total Pixel Matrix. With Dimension Organization Type
``TILED_FULL`` (PS3.3 C.7.6.17.3) the frames need no per-frame positions: tile ``(ty, tx)`` of
focal plane ``z`` and optical path ``p`` is frame ``1 + tx + ty * tiles_across + tiles * (z + planes
* p)``. Each level becomes a dask array over the level's pixels whose reads go through
``TileReader``: a region fetches only the tiles it touches, in frames requests of several tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DicomWebError
from ..pixels.decode import PixelAttributes
from ..protocol import DicomJson, DicomWebSource
from . import cache as frame_cache
from .lazy import (
    MAX_FRAMES_PER_REQUEST,
    FrameFetcher,
    InstanceFrames,
    SourceHandle,
    expected_dtype,
    full_index,
    json_first,
    json_values,
    require_dask,
)

__all__ = ["Slide", "SlideLevel", "TileReader", "lazy_slide"]

# Chunks of a level: whole tiles, about this many bytes (a chunk is computed at once; reads of a
# region within it fetch only the tiles they touch).
CHUNK_BYTES = 64 << 20
_PYRAMID_FLAVORS = frozenset({"VOLUME", "THUMBNAIL"})  # ImageType value 3; LABEL and OVERVIEW are other pictures


def _pixel_spacing(meta: DicomJson) -> tuple[float, float] | None:
    """Pixel Spacing (mm) from the Shared Functional Groups' Pixel Measures, where it is given."""
    for group in json_values(meta, "52009229")[:1]:
        for measures in json_values(group or {}, "00289110")[:1]:
            spacing = json_values(measures or {}, "00280030")
            if len(spacing) == 2:
                return float(spacing[0]), float(spacing[1])
    spacing = json_values(meta, "00280030")
    return (float(spacing[0]), float(spacing[1])) if len(spacing) == 2 else None


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level: an instance, its size in pixels, its tile size and its pixel spacing (mm)."""

    instance: str
    shape: tuple[int, int]  # total pixel matrix (rows, columns)
    tile: tuple[int, int]  # frame (rows, columns)
    pixel_spacing: tuple[float, float] | None
    focal_planes: int
    optical_paths: int
    image_type: str

    @property
    def tiles(self) -> tuple[int, int]:
        """Tiles down and across."""
        return -(-self.shape[0] // self.tile[0]), -(-self.shape[1] // self.tile[1])


class TileReader:
    """The array-like behind one level: ``reader[rows, columns]`` fetches and pastes the tiles the index touches."""

    def __init__(self, fetcher: FrameFetcher, level: SlideLevel, dtype: np.dtype, samples: int, *, focal_plane: int = 0,
                 optical_path: int = 0):
        self.fetcher = fetcher
        self.level = level
        self.samples = samples
        self.dtype = np.dtype(dtype)
        self.shape = level.shape + ((samples,) if samples > 1 else ())
        self.ndim = len(self.shape)
        per_plane = level.tiles[0] * level.tiles[1]
        self.first_frame = 1 + per_plane * (focal_plane + level.focal_planes * optical_path)

    def __dask_tokenize__(self) -> Any:
        f = self.fetcher
        return ("dicomweb-nb-tiles", f.handle.url, f.study, f.series, self.level, self.first_frame, str(self.dtype))

    def frame_of(self, tile_row: int, tile_column: int) -> int:
        return self.first_frame + tile_row * self.level.tiles[1] + tile_column

    def __getitem__(self, index: Any) -> np.ndarray:
        index = full_index(index, self.ndim)
        rows = np.arange(self.shape[0])[index[0]]
        columns = np.arange(self.shape[1])[index[1]]
        row_list, column_list = np.atleast_1d(rows), np.atleast_1d(columns)
        tile_rows, tile_columns = self.level.tile
        out = np.zeros((len(row_list), len(column_list), *self.shape[2:]), dtype=self.dtype)
        if len(row_list) and len(column_list):
            wanted_rows = np.unique(row_list // tile_rows)
            wanted_columns = np.unique(column_list // tile_columns)
            # A band of tile rows at a time: memory stays at what one band of tiles needs.
            band = max(1, MAX_FRAMES_PER_REQUEST // max(1, len(wanted_columns)))
            for start in range(0, len(wanted_rows), band):
                tile_row_block = wanted_rows[start:start + band]
                tiles = [(int(ty), int(tx)) for ty in tile_row_block for tx in wanted_columns]
                buffer = np.empty((len(tiles), tile_rows, tile_columns, *self.shape[2:]), dtype=self.dtype)
                self.fetcher.fill(buffer, [(0, self.frame_of(ty, tx)) for ty, tx in tiles])
                for (ty, tx), tile in zip(tiles, buffer):
                    in_rows = np.nonzero(row_list // tile_rows == ty)[0]
                    in_columns = np.nonzero(column_list // tile_columns == tx)[0]
                    if len(in_rows) and len(in_columns):
                        out[np.ix_(in_rows, in_columns)] = tile[np.ix_(row_list[in_rows] - ty * tile_rows,
                                                                       column_list[in_columns] - tx * tile_columns)]
        picked: tuple[Any, ...] = (0 if np.ndim(rows) == 0 else slice(None), 0 if np.ndim(columns) == 0 else slice(None))
        region: np.ndarray = out[picked + tuple(index[2:])]
        return region


@dataclass
class Slide:
    """A whole-slide image as a pyramid of lazy dask arrays, largest level first.

    ``levels[i]`` is ``(rows, columns, samples)`` (``(rows, columns)`` for one sample);
    ``level_info[i]`` its instance, tile size and pixel spacing; ``downsamples[i]`` its size ratio
    to level 0. ``slide.levels[-1].compute()`` is the whole slide at the coarsest level.
    """

    study: str
    series: str
    levels: list[Any]
    level_info: list[SlideLevel]
    extras: list[DicomJson] = field(default_factory=list, repr=False)  # label, overview: other instances

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, level: int) -> Any:
        return self.levels[level]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(level.shape) for level in self.levels]

    @property
    def downsamples(self) -> list[float]:
        base = self.level_info[0].shape[1]
        return [base / info.shape[1] for info in self.level_info]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{info.shape[0]}x{info.shape[1]}" for info in self.level_info)
        return f"<Slide {self.series}: {len(self.levels)} levels ({sizes})>"


def pyramid_levels(metadata: Sequence[DicomJson]) -> tuple[list[tuple[SlideLevel, DicomJson]], list[DicomJson]]:
    """The TILED_FULL pyramid levels of a series (largest first) and its other instances."""
    levels: list[tuple[SlideLevel, DicomJson]] = []
    others: list[DicomJson] = []
    for meta in metadata:
        total_rows, total_columns = json_first(meta, "00480007"), json_first(meta, "00480006")
        image_type = [str(v).upper() for v in json_values(meta, "00080008")]
        flavor = image_type[2] if len(image_type) > 2 else "VOLUME"
        if total_rows is None or total_columns is None or not json_first(meta, "00280010") or flavor not in _PYRAMID_FLAVORS:
            others.append(meta)
            continue
        organization = str(json_first(meta, "00209311", "") or "").upper()
        frames = int(json_first(meta, "00280008", 1) or 1)
        uid = str(json_first(meta, "00080018", ""))
        level = SlideLevel(
            uid,
            (int(total_rows), int(total_columns)),
            (int(json_first(meta, "00280010")), int(json_first(meta, "00280011"))),
            _pixel_spacing(meta),
            int(json_first(meta, "00480303", 1) or 1),
            int(json_first(meta, "00480302", 1) or 1),
            flavor,
        )
        expected = level.tiles[0] * level.tiles[1] * level.focal_planes * level.optical_paths
        if organization != "TILED_FULL" and not (frames == 1 and expected == 1):
            raise DicomWebError(f"instance {uid} is tiled as {organization or 'unspecified'}, not TILED_FULL: its tiles "
                                "need per-frame positions, which pacs.slide does not read")
        if frames < expected:
            raise DicomWebError(f"instance {uid} has {frames} frames, fewer than the {expected} tiles of its "
                                f"{level.shape[0]}x{level.shape[1]} matrix")
        levels.append((level, meta))
    levels.sort(key=lambda item: -item[0].shape[0] * item[0].shape[1])
    return levels, others


def lazy_slide(source: DicomWebSource, study: str, series: str, *, max_per_host: int = 8, cache: bool = True,
               focal_plane: int = 0, optical_path: int = 0) -> Slide:
    """A whole-slide image series as a ``Slide``; see ``Client.slide``."""
    require_dask()
    import dask.array as da
    from dask.base import tokenize

    metadata = source.retrieve_metadata(study, series)
    levels, others = pyramid_levels(metadata)
    if not levels:
        raise DicomWebError(f"series {series} has no tiled image (Total Pixel Matrix) to make a pyramid of")
    handle = SourceHandle(source)
    settings = frame_cache.settings() if cache else None
    if settings is not None and not settings.enabled:
        settings = None
    arrays = []
    for level, meta in levels:
        if not (0 <= focal_plane < level.focal_planes and 0 <= optical_path < level.optical_paths):
            raise ValueError(f"level {level.instance} has {level.focal_planes} focal plane(s) and "
                             f"{level.optical_paths} optical path(s); asked for {focal_plane}, {optical_path}")
        attrs = PixelAttributes.from_json(meta)
        fetcher = FrameFetcher(handle, study, series, [InstanceFrames(level.instance, attrs)], rescaling=False,
                               max_per_host=max_per_host, cache=settings)
        reader = TileReader(fetcher, level, expected_dtype(attrs, False), attrs.samples_per_pixel,
                            focal_plane=focal_plane, optical_path=optical_path)
        tile_bytes = level.tile[0] * level.tile[1] * attrs.samples_per_pixel * reader.dtype.itemsize
        per_side = max(1, int((CHUNK_BYTES / max(1, tile_bytes)) ** 0.5))
        chunks = (level.tile[0] * per_side, level.tile[1] * per_side, *reader.shape[2:])
        arrays.append(da.from_array(reader, chunks=chunks, asarray=False, fancy=True, lock=False,
                                    meta=np.empty((0,) * reader.ndim, dtype=reader.dtype),
                                    name=f"dicom-slide-{tokenize(reader)[:16]}"))
    return Slide(study, series, arrays, [level for level, _ in levels], others)
