"""Conversion of any readable slide to a pyramidal tiled OME-TIFF.

File contract: ``{sample}.ome.tiff`` is an OME-TIFF whose first image is the
slide's level 0 with reduced-resolution levels in SubIFDs, each level half
the size of the one above, down to ``min_level_px`` on the shorter side.
Physical pixel size is stored twice: in the OME-XML (PhysicalSizeX/Y in um)
and in the TIFF resolution tags (pixels per centimetre), so tifffile,
OpenSlide and Bio-Formats read the same mpp. Associated images (label,
macro, thumbnail) are never copied, because labels can carry patient names.

Pixels are streamed tile by tile. Level 0 is read from the source's full
resolution one tile at a time. Each lower level is built by averaging 2 x 2
pixel blocks of the level above while that level is written, into chunked
scratch arrays on disk next to the output. Peak memory is a few tiles and
does not grow with the slide's pixel count. Scratch disk space is about a
third of the uncompressed level 0. With ``objects`` (from ``roi.json``) one
file per object is written instead, cropped to the object's box.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from samplerflow.io import atomic_path
from samplerflow.slide import SlideReader

log = logging.getLogger(__name__)

COMPRESSIONS = ("jpeg", "lzw", "deflate", "zstd", "none")
# Classic TIFF offsets are 32-bit, so larger outputs switch to BigTIFF well before 4 GiB.
BIGTIFF_THRESHOLD_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ConvertParams:
    """Output encoding: tile side in pixels, codec and JPEG quality."""

    tile_px: int = 512
    compression: str = "jpeg"
    jpeg_quality: int = 90
    min_level_px: int = 512

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"Invalid compression {self.compression!r}: choose one of {', '.join(COMPRESSIONS)}")
        if self.tile_px % 16 or self.tile_px < 16:
            raise ValueError(f"Invalid tile_px={self.tile_px}: TIFF tiles must be a positive multiple of 16")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"Invalid jpeg_quality={self.jpeg_quality}: must be in 1..100")
        if self.min_level_px < 1:
            raise ValueError(f"Invalid min_level_px={self.min_level_px}: must be >= 1")


def level_sizes(width: int, height: int, *, min_level_px: int) -> list[tuple[int, int]]:
    """Return (width, height) of each output level, halving until the shorter side would drop below ``min_level_px``."""
    sizes = [(width, height)]
    while min(sizes[-1]) // 2 >= min_level_px:
        previous_width, previous_height = sizes[-1]
        sizes.append((max(1, previous_width // 2), max(1, previous_height // 2)))
    return sizes


def _source_tiles(reader: SlideReader, *, box: tuple[int, int, int, int], tile_px: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (top, left, tile) of level 0 in row-major order, read at full resolution; edge tiles padded white."""
    x0, y0, width, height = box
    for top in range(0, height, tile_px):
        rows = min(tile_px, height - top)
        for left in range(0, width, tile_px):
            columns = min(tile_px, width - left)
            tile = np.full((tile_px, tile_px, 3), 255, dtype=np.uint8)
            tile[:rows, :columns] = reader.read_level(0, x0 + left, y0 + top, columns, rows)
            yield top, left, tile


def _scratch_tiles(level: Any, *, tile_px: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (top, left, tile) of a scratch level stored as a zarr array."""
    height, width = level.shape[:2]
    for top in range(0, height, tile_px):
        for left in range(0, width, tile_px):
            tile = np.full((tile_px, tile_px, 3), 255, dtype=np.uint8)
            block = level[top : top + tile_px, left : left + tile_px]
            tile[: block.shape[0], : block.shape[1]] = block
            yield top, left, tile


def _halve(tile: np.ndarray) -> np.ndarray:
    """Average 2 x 2 pixel blocks (exact area downsampling by two)."""
    height, width = tile.shape[0] // 2 * 2, tile.shape[1] // 2 * 2
    blocks = tile[:height, :width].reshape(height // 2, 2, width // 2, 2, 3).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def _tiles_feeding_next(
    tiles: Iterator[tuple[int, int, np.ndarray]], next_level: Any | None
) -> Iterator[np.ndarray]:
    """Yield tiles to the TIFF writer; write each tile's halved copy into the next scratch level."""
    for top, left, tile in tiles:
        if next_level is not None:
            height, width = next_level.shape[:2]
            half = _halve(tile)
            row, column = top // 2, left // 2
            rows, columns = min(half.shape[0], height - row), min(half.shape[1], width - column)
            if rows > 0 and columns > 0:
                next_level[row : row + rows, column : column + columns] = half[:rows, :columns]
        yield tile


def _ome_metadata(mpp: float) -> dict[str, Any]:
    return {
        "axes": "YXS",
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }


def write_pyramid(
    reader: SlideReader,
    destination: Path,
    *,
    params: ConvertParams,
    box: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    """Write the slide (or the level-0 ``box`` x, y, w, h) as a pyramidal OME-TIFF; return a summary."""
    info = reader.info
    if box is None:
        box = (0, 0, info.width, info.height)
    _, _, box_width, box_height = box
    sizes = level_sizes(box_width, box_height, min_level_px=params.min_level_px)
    estimated_bytes = sum(w * h * 3 for w, h in sizes)
    bigtiff = estimated_bytes > BIGTIFF_THRESHOLD_BYTES
    compression = None if params.compression == "none" else params.compression
    compressionargs = {"level": params.jpeg_quality} if params.compression == "jpeg" else None

    with contextlib.ExitStack() as stack:
        temporary = stack.enter_context(atomic_path(destination))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".convert-", dir=destination.parent)))
        writer = stack.enter_context(tifffile.TiffWriter(temporary, bigtiff=bigtiff, ome=True))
        # Levels 1.. are built while the level above is written, into chunked zarr scratch
        # arrays on disk, so each level is read once and memory stays at a few tiles.
        scratch_levels = [
            zarr.create_array(
                store=str(scratch / f"level{index}.zarr"), shape=(height, width, 3), dtype="uint8",
                chunks=(params.tile_px, params.tile_px, 3), fill_value=255,
            )
            for index, (width, height) in enumerate(sizes) if index > 0
        ]
        for index, (width, height) in enumerate(sizes):
            level_mpp = info.mpp * box_width / width
            pixels_per_cm = 1e4 / level_mpp
            if index == 0:
                tiles = _source_tiles(reader, box=box, tile_px=params.tile_px)
            else:
                tiles = _scratch_tiles(scratch_levels[index - 1], tile_px=params.tile_px)
            next_level = scratch_levels[index] if index < len(scratch_levels) else None
            writer.write(
                _tiles_feeding_next(tiles, next_level),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(params.tile_px, params.tile_px),
                photometric="rgb",
                compression=compression,
                compressionargs=compressionargs,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subifds=len(sizes) - 1 if index == 0 else None,
                subfiletype=1 if index else 0,
                metadata=_ome_metadata(info.mpp) if index == 0 else None,
                software="samplerflow",
            )
    log.info(
        "Converted %s -> %s (%d levels, %s, %s)",
        info.path, destination, len(sizes), params.compression, "BigTIFF" if bigtiff else "TIFF",
    )
    return {
        "output": str(destination),
        "levels": len(sizes),
        "width_px": box_width,
        "height_px": box_height,
        "mpp": info.mpp,
        "compression": params.compression,
        "bigtiff": bigtiff,
    }


def object_box(item: dict[str, Any], *, width: int, height: int) -> tuple[int, int, int, int]:
    """Return the level-0 box (x, y, w, h) of an ROI object with normalized location and size."""
    x = int(math.floor(item["location"][0] * width))
    y = int(math.floor(item["location"][1] * height))
    right = min(width, int(math.ceil((item["location"][0] + item["size"][0]) * width)))
    bottom = min(height, int(math.ceil((item["location"][1] + item["size"][1]) * height)))
    return x, y, max(1, right - x), max(1, bottom - y)
