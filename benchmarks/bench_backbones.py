"""Time each neural backbone per tile on this machine: read, resize and model, with random weights.

The tiles are the demo run's own (default tissue detection and 128 um grid,
scale 1 only), read with the extraction stage's read plan for each
backbone's input size. For every backbone the script times, per tile:

- read: ``read_single_scale`` of the base-scale tile from the slide;
- resize: ``resize_tile`` to the input size plus ``Backbone.prepare``
  (normalization), which the extraction stage runs in DataLoader workers;
- model: ``Backbone.embed`` on batches of ``--batch-size`` tiles.

Weights are random (``--random-weights``), which does not change the cost.
Throughput is tiles per second of one process running the three steps in a
row; the stage overlaps reading and resizing (workers) with the model.

Run by hand, never in tests:

    .venv/bin/python benchmarks/bench_backbones.py --tiles 16 --batch-size 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY / "benchmarks"))
from bench_tile_reading import DEMO_SLIDE, demo_grid  # noqa: E402
from machine import print_description  # noqa: E402

DEFAULT_BACKBONES = ("inception_v3", "ctranspath", "uni", "conch")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slide", type=Path, default=DEMO_SLIDE, help="whole-slide image (default: the demo slide)")
    parser.add_argument("--backbone", action="append", help=f"backbone to time; repeat for several (default: {', '.join(DEFAULT_BACKBONES)})")
    parser.add_argument("--tiles", type=int, default=16, help="tiles timed per backbone (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per model batch (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--autocast", default="bfloat16", help="CUDA autocast precision: bfloat16, float16 or none (default: %(default)s)")
    return parser.parse_args()


def time_backbone(name: str, slide: Path, grid, args: argparse.Namespace) -> dict[str, float]:
    """Return seconds per tile for read, resize and model, and tiles per second overall."""
    from samplerflow.features import create_backbone
    from samplerflow.features.extract import plan_reads, read_single_scale, resize_tile
    from samplerflow.slide import open_slide

    backbone = create_backbone(name)
    backbone.set_inference_options(autocast_dtype=None if args.autocast == "none" else args.autocast, channels_last=True)
    backbone.load(weights=None, random_weights=True, device=args.device)
    centres = grid.centres_px[: args.tiles]

    with open_slide(slide) as reader:
        plan = plan_reads(reader, grid, input_size=backbone.input_size)
        start = time.perf_counter()
        tiles = [read_single_scale(reader, plan, (float(x), float(y)), 1) for x, y in centres]
        read_s = time.perf_counter() - start

    start = time.perf_counter()
    prepared = np.stack([backbone.prepare(resize_tile(tile, backbone.input_size)) for tile in tiles])
    resize_s = time.perf_counter() - start

    backbone.embed(prepared[:1])  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    for first in range(0, len(prepared), args.batch_size):
        backbone.embed(prepared[first : first + args.batch_size])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    model_s = time.perf_counter() - start

    count = len(tiles)
    return {
        "read_ms": 1000 * read_s / count,
        "resize_ms": 1000 * resize_s / count,
        "model_ms": 1000 * model_s / count,
        "tiles_per_s": count / (read_s + resize_s + model_s),
        "model_tiles_per_s": count / model_s,
    }


def main() -> int:
    args = parse_args()
    print_description()
    print(f"slide {args.slide.name}, {args.tiles} tiles, batch {args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}")
    grid = demo_grid(args.slide)
    print("| backbone | input px | read ms/tile | resize+normalize ms/tile | model ms/tile | model tiles/s | all steps tiles/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    from samplerflow.features import create_backbone

    for name in args.backbone or DEFAULT_BACKBONES:
        result = time_backbone(name, args.slide, grid, args)
        print(
            f"| {name} | {create_backbone(name).input_size} | {result['read_ms']:.1f} | {result['resize_ms']:.1f} | "
            f"{result['model_ms']:.0f} | {result['model_tiles_per_s']:.2f} | {result['tiles_per_s']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
