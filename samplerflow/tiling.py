"""Tile centres on a square, hexagonal or random grid inside the tissue objects.

File contract: ``tiles.parquet`` has one row per kept centre:

==================  =======  ==================================================
column              type     meaning
==================  =======  ==================================================
tile_id             int64    0..n-1, row order of every feature matrix
object_id           int32    ROI object containing the centre (1-based)
grid_row, grid_col  int32    position on the grid (-1 for the random grid)
center_x_px         float64  centre in level-0 pixels
center_y_px         float64
center_x_um         float64  centre in micrometres from the slide's corner
center_y_um         float64
tissue_fraction     float32  tissue share of the base tile inside the ROIs
==================  =======  ==================================================

The parquet schema metadata key ``samplerflow`` contains the tiling
parameters and slide geometry as JSON. The grid is defined in micrometres from the
slide's top-left corner, so slides scanned at different resolutions get the
same centres in micrometres. For scale k the tile around a centre covers
k x ``tile_size_um`` on each side.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from samplerflow.errors import SampleError
from samplerflow.io import atomic_path
from samplerflow.units import Microns, MicronsPerPixel, SlidePixels

log = logging.getLogger(__name__)

GRIDS = ("square", "hex", "random")
METADATA_KEY = b"samplerflow"


@dataclass(frozen=True)
class TilingParams:
    """Grid settings; lengths in micrometres."""

    grid: str = "square"
    tile_size_um: float = 128.0
    spacing_um: float | None = None
    scales: tuple[int, ...] = (1, 2, 3, 4)
    min_tissue_fraction: float = 0.5
    seed: int = 0
    max_tiles: int | None = None

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise ValueError(f"Invalid grid {self.grid!r}: choose one of {', '.join(GRIDS)}")
        if self.tile_size_um <= 0:
            raise ValueError(f"Invalid tile_size_um={self.tile_size_um}: must be positive")
        if self.spacing_um is not None and self.spacing_um <= 0:
            raise ValueError(f"Invalid spacing_um={self.spacing_um}: must be positive")
        if not self.scales or any(int(k) != k or k < 1 for k in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"Invalid scales {self.scales}: give distinct whole numbers >= 1, e.g. 1,2,3,4")
        if not 0 <= self.min_tissue_fraction <= 1:
            raise ValueError(f"Invalid min_tissue_fraction={self.min_tissue_fraction}: must be in 0..1")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ValueError(f"Invalid max_tiles={self.max_tiles}: must be >= 1")

    @property
    def spacing(self) -> Microns:
        """Centre-to-centre spacing; defaults to the base tile size (no overlap)."""
        return Microns(self.spacing_um if self.spacing_um is not None else self.tile_size_um)


@dataclass(frozen=True)
class TileGrid:
    """Tile centres of one slide, with the parameters that made them."""

    table: pd.DataFrame
    params: TilingParams
    mpp: MicronsPerPixel
    slide_width_px: int
    slide_height_px: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def centres_px(self) -> np.ndarray:
        """Centres in level-0 pixels, shape (n, 2) as (x, y)."""
        return self.table[["center_x_px", "center_y_px"]].to_numpy(dtype=np.float64)

    def tile_side_px(self, scale: int) -> SlidePixels:
        """Side of the scale-k tile in level-0 pixels."""
        return SlidePixels(scale * self.params.tile_size_um / self.mpp)

    def metadata(self) -> dict[str, Any]:
        """Return the parameters and geometry stored with the table."""
        params = asdict(self.params)
        params["scales"] = list(self.params.scales)
        params["spacing_um"] = float(self.params.spacing)
        return {
            "params": params,
            "mpp": float(self.mpp),
            "slide_width_px": self.slide_width_px,
            "slide_height_px": self.slide_height_px,
            **self.extra,
        }


def candidate_centres(
    boxes_um: list[tuple[float, float, float, float]], params: TilingParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return centres in um (n, 2) and their grid rows and columns, inside any box.

    ``boxes_um`` are (x0, y0, x1, y1) object boxes in micrometres.
    """
    spacing = float(params.spacing)
    if not boxes_um:
        return np.empty((0, 2)), np.empty(0, np.int32), np.empty(0, np.int32)
    x_max = max(box[2] for box in boxes_um)
    y_max = max(box[3] for box in boxes_um)
    if params.grid == "random":
        rng = np.random.default_rng(params.seed)
        area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes_um)
        count = max(1, round(area / spacing**2))
        weights = np.array([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes_um], dtype=float)
        chosen = rng.choice(len(boxes_um), size=count, p=weights / weights.sum())
        lows = np.array([boxes_um[i][:2] for i in chosen])
        highs = np.array([boxes_um[i][2:] for i in chosen])
        centres = lows + rng.random((count, 2)) * (highs - lows)
        minus_one = np.full(count, -1, dtype=np.int32)
        return centres, minus_one, minus_one.copy()

    row_pitch = spacing * (math.sqrt(3) / 2 if params.grid == "hex" else 1.0)
    n_rows = int(math.ceil(y_max / row_pitch)) + 1
    n_cols = int(math.ceil(x_max / spacing)) + 1
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    x = (cols + 0.5) * spacing
    if params.grid == "hex":
        x = x + (rows % 2) * spacing / 2
    y = (rows + 0.5) * row_pitch
    inside = np.zeros(rows.size, dtype=bool)
    for x0, y0, x1, y1 in boxes_um:
        inside |= (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
    return np.column_stack([x[inside], y[inside]]), rows[inside].astype(np.int32), cols[inside].astype(np.int32)


def tissue_fractions(
    centres_um: np.ndarray, *, tile_size_um: float, mask: np.ndarray, mask_mpp: float
) -> np.ndarray:
    """Return the fraction of mask pixels set under each base tile (summed-area table, O(1) per tile)."""
    height, width = mask.shape
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    half = tile_size_um / 2 / mask_mpp
    x0 = np.clip(np.round(centres_um[:, 0] / mask_mpp - half), 0, width).astype(np.int64)
    x1 = np.clip(np.round(centres_um[:, 0] / mask_mpp + half), 0, width).astype(np.int64)
    y0 = np.clip(np.round(centres_um[:, 1] / mask_mpp - half), 0, height).astype(np.int64)
    y1 = np.clip(np.round(centres_um[:, 1] / mask_mpp + half), 0, height).astype(np.int64)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    # The footprint is measured against the full tile area, so tiles at the slide edge count the outside as non-tissue.
    area = np.maximum(1.0, (2 * half) ** 2)
    return np.clip(total / area, 0.0, 1.0).astype(np.float32)


def make_grid(roi: dict[str, Any], mask: np.ndarray, params: TilingParams) -> TileGrid:
    """Place centres in the ROI objects and keep those with enough tissue.

    ``roi`` is the ``roi.json`` payload (slide geometry and objects);
    ``mask`` the boolean tissue mask on the thumbnail grid.
    """
    slide = roi["slide"]
    mpp = MicronsPerPixel(float(slide["mpp"]))
    width_px, height_px = int(slide["width"]), int(slide["height"])
    width_um, height_um = width_px * mpp, height_px * mpp
    mask_mpp = width_um / mask.shape[1]

    boxes_um = [
        (
            item["location"][0] * width_um,
            item["location"][1] * height_um,
            (item["location"][0] + item["size"][0]) * width_um,
            (item["location"][1] + item["size"][1]) * height_um,
        )
        for item in roi["objects"]
    ]
    # Tissue only counts inside an ROI box, so curated ROIs exclude tissue outside them.
    in_roi = np.zeros_like(mask, dtype=bool)
    for x0, y0, x1, y1 in boxes_um:
        in_roi[
            int(y0 / mask_mpp) : int(math.ceil(y1 / mask_mpp)),
            int(x0 / mask_mpp) : int(math.ceil(x1 / mask_mpp)),
        ] = True
    centres_um, rows, cols = candidate_centres(boxes_um, params)
    fractions = tissue_fractions(
        centres_um, tile_size_um=params.tile_size_um, mask=mask & in_roi, mask_mpp=mask_mpp
    )
    keep = fractions >= params.min_tissue_fraction
    if params.min_tissue_fraction == 0:
        keep &= fractions > 0
    centres_um, rows, cols, fractions = centres_um[keep], rows[keep], cols[keep], fractions[keep]
    if params.max_tiles is not None and len(centres_um) > params.max_tiles:
        chosen = np.sort(np.random.default_rng(params.seed).choice(len(centres_um), params.max_tiles, replace=False))
        centres_um, rows, cols, fractions = centres_um[chosen], rows[chosen], cols[chosen], fractions[chosen]
        log.info("Subsampled to %d tiles (max_tiles)", params.max_tiles)

    object_ids = np.zeros(len(centres_um), dtype=np.int32)
    for item, (x0, y0, x1, y1) in reversed(list(zip(roi["objects"], boxes_um))):
        inside = (centres_um[:, 0] >= x0) & (centres_um[:, 0] < x1) & (centres_um[:, 1] >= y0) & (centres_um[:, 1] < y1)
        object_ids[inside] = int(item["id"])

    table = pd.DataFrame(
        {
            "tile_id": np.arange(len(centres_um), dtype=np.int64),
            "object_id": object_ids,
            "grid_row": rows.astype(np.int32),
            "grid_col": cols.astype(np.int32),
            "center_x_px": centres_um[:, 0] / mpp,
            "center_y_px": centres_um[:, 1] / mpp,
            "center_x_um": centres_um[:, 0],
            "center_y_um": centres_um[:, 1],
            "tissue_fraction": fractions.astype(np.float32),
        }
    )
    grid = TileGrid(
        table=table,
        params=params,
        mpp=mpp,
        slide_width_px=width_px,
        slide_height_px=height_px,
        extra={"slide_path": slide["path"], "mpp_source": slide["mpp_source"]},
    )
    if table.empty:
        raise SampleError(
            "no_tiles",
            f"{slide['path']}: no {params.tile_size_um:g} um tile centre has a tissue fraction >= "
            f"{params.min_tissue_fraction:g} inside the ROI objects (slide is "
            f"{width_um:.0f} x {height_um:.0f} um); lower --min-tissue-fraction or --tile-size-um",
        )
    return grid


def write_tiles(grid: TileGrid, destination: Path) -> None:
    """Write the tiles table as parquet with the grid metadata, atomically."""
    table = pa.Table.from_pandas(grid.table, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(grid.metadata(), sort_keys=True).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(destination) as temporary:
        pq.write_table(table, temporary)


def read_tiles(path: Path) -> TileGrid:
    """Read a tiles table written by :func:`write_tiles`."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise SampleError("invalid_tiles", f"{path}: not a samplerflow tiles table (no grid metadata); rerun the tile stage")
    metadata = json.loads(raw)
    params_dict = dict(metadata["params"])
    params_dict["scales"] = tuple(params_dict["scales"])
    params = TilingParams(**params_dict)
    extra = {key: value for key, value in metadata.items() if key not in ("params", "mpp", "slide_width_px", "slide_height_px")}
    return TileGrid(
        table=table.to_pandas(),
        params=params,
        mpp=MicronsPerPixel(metadata["mpp"]),
        slide_width_px=int(metadata["slide_width_px"]),
        slide_height_px=int(metadata["slide_height_px"]),
        extra=extra,
    )
