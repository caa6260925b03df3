"""Time tile reading on the bundled demo slide: one multi-scale read against one read per scale.

The tile centres are the demo run's own: tissue detection and a square grid
with the default parameters (128 um base tile, scales 1-4), placed by
samplerflow.aoi and samplerflow.tiling. The read plan is the extraction
stage's for a 224 px backbone input (samplerflow.features.extract.plan_reads).

For each backend that opens the slide (OpenSlide and, for a TIFF-based
file such as SVS, tifffile) the script times:

- ``read_multiscale``: one read of the scale-4 region per centre, cropped to
  all four scales (what the extraction stage does);
- ``read_single_scale`` for each scale on its own, and for all four in a row;
- ``resize_tile`` of the four crops to 224 x 224 px (backend-independent).

Each method reads every centre ``--passes`` times with a freshly opened
slide. The first pass is reported on its own because OpenSlide then decodes
tiles that later passes may take from its tile cache. The script also checks
that the multi-scale crops equal the single-scale reads pixel for pixel and
prints how far the two backends' pixels differ.

Run by hand, never in tests:

    .venv/bin/python benchmarks/bench_tile_reading.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_SLIDE = REPOSITORY / "assets" / "demo" / "CMU-1-Small-Region.svs"
INPUT_SIZE = 224


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slide", type=Path, default=DEMO_SLIDE, help="whole-slide image (default: the demo slide)")
    parser.add_argument("--passes", type=int, default=5, help="passes over all tile centres per method (default: %(default)s)")
    return parser.parse_args()


def demo_grid(slide: Path):
    """Return the tile grid the demo run places on ``slide`` (default AOI and tiling parameters)."""
    from samplerflow.aoi import AoiParams, detect_objects, read_mask
    from samplerflow.slide import open_slide
    from samplerflow.tiling import TilingParams, make_grid

    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as folder, open_slide(slide) as reader:
        roi = detect_objects(reader, Path(folder), params=AoiParams())
        mask = read_mask(Path(folder) / "tissue_mask.png")
    return make_grid(roi, mask, TilingParams())


def open_backends(slide: Path) -> dict[str, Callable[[], object]]:
    """Return a factory per backend that opens ``slide``; tifffile only for TIFF-based files."""
    from samplerflow.slide import OpenSlideReader, TiffFileReader, _is_tiff, open_slide

    factories: dict[str, Callable[[], object]] = {}
    probe = open_slide(slide)
    if isinstance(probe, OpenSlideReader):
        factories["openslide"] = lambda: open_slide(slide)
    probe.close()
    if _is_tiff(slide):
        # open_slide() picks OpenSlide whenever it can, so the tifffile reader is built directly.
        # NOTE: TiffFileReader's constructor is internal; adjust this call if its signature changes.
        factories["tifffile"] = lambda: TiffFileReader(slide)
    return factories


def time_passes(open_reader: Callable[[], object], read_all: Callable[[object], None], passes: int) -> list[float]:
    """Return the seconds of each pass; every pass opens the slide afresh and reads all centres."""
    seconds = []
    for _ in range(passes):
        reader = open_reader()
        try:
            started = time.perf_counter()
            read_all(reader)
            seconds.append(time.perf_counter() - started)
        finally:
            reader.close()
    return seconds


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import print_description, print_table

    from samplerflow.features.extract import plan_reads, read_multiscale, read_single_scale, resize_tile
    from samplerflow.slide import open_slide

    print_description()
    grid = demo_grid(args.slide)
    centres = [(float(x), float(y)) for x, y in grid.centres_px]
    with open_slide(args.slide) as reader:
        plan = plan_reads(reader, grid, input_size=INPUT_SIZE)
        info = reader.info
    sides = {scale: plan.box(centres[0], scale)[2] for scale in plan.scales}
    print(f"Slide: {args.slide.name}, {info.width} x {info.height} px at {info.mpp} um/px, "
          f"{len(info.level_dimensions)} level(s), vendor {info.vendor}")
    print(f"Tiles: {len(centres)} centres from the demo grid; read level {plan.level}; "
          f"tile side per scale (px): {sides}; passes per method: {args.passes}")
    print()

    backends = open_backends(args.slide)
    rows = []
    crops_by_backend: dict[str, list[dict[int, np.ndarray]]] = {}
    failures = []
    for backend, open_reader in backends.items():
        methods: list[tuple[str, Callable[[object], None]]] = [
            ("read_multiscale (scales 1-4, one read)", lambda r: [read_multiscale(r, plan, c) for c in centres]),
        ]
        for scale in plan.scales:
            methods.append(
                (f"read_single_scale, scale {scale}",
                 lambda r, s=scale: [read_single_scale(r, plan, c, s) for c in centres])
            )
        methods.append(
            ("read_single_scale x 4 (scales 1-4)",
             lambda r: [read_single_scale(r, plan, c, s) for c in centres for s in plan.scales])
        )
        for name, read_all in methods:
            seconds = time_passes(open_reader, read_all, args.passes)
            later = seconds[1:] or seconds
            rows.append([
                backend, name,
                f"{len(centres) / seconds[0]:.1f}",
                f"{len(centres) / statistics.median(later):.1f}",
                f"{1000 * statistics.median(later) / len(centres):.2f}",
            ])

        reader = open_reader()
        try:
            crops_by_backend[backend] = [read_multiscale(reader, plan, c) for c in centres]
            for crops, centre in zip(crops_by_backend[backend], centres):
                for scale in plan.scales:
                    if not np.array_equal(crops[scale], read_single_scale(reader, plan, centre, scale)):
                        failures.append(f"{backend}: multi-scale crop differs from the single read at {centre}, scale {scale}")
        finally:
            reader.close()

    crops = next(iter(crops_by_backend.values()))
    resize_seconds = []
    for _ in range(args.passes):
        started = time.perf_counter()
        for per_scale in crops:
            for scale in plan.scales:
                resize_tile(per_scale[scale], INPUT_SIZE)
        resize_seconds.append(time.perf_counter() - started)
    later = resize_seconds[1:] or resize_seconds
    rows.append([
        "-", f"resize_tile to {INPUT_SIZE} px (4 crops per tile)",
        f"{len(centres) / resize_seconds[0]:.1f}",
        f"{len(centres) / statistics.median(later):.1f}",
        f"{1000 * statistics.median(later) / len(centres):.2f}",
    ])

    print_table(["backend", "method", "tiles/s, first pass", "tiles/s, median of later passes", "ms/tile, median"], rows)

    if len(crops_by_backend) == 2:
        first, second = crops_by_backend.values()
        differences = np.concatenate([
            np.abs(a[s].astype(np.int16) - b[s].astype(np.int16)).ravel()
            for a, b in zip(first, second) for s in plan.scales
        ])
        print(f"OpenSlide vs tifffile pixels (all crops): max abs difference {differences.max()}, "
              f"mean {differences.mean():.4f}, share of values that differ {np.mean(differences > 0):.4%}")
    if failures:
        print("FAIL: " + "; ".join(failures[:5]))
        return 1
    print("read_multiscale crops equal read_single_scale reads for every centre, scale and backend: True")
    return 0


if __name__ == "__main__":
    sys.exit(main())
