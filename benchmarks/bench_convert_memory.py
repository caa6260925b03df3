"""Measure the peak memory of converting large synthetic slides to pyramidal OME-TIFF.

For each side length, one process writes a single-level, JPEG-tiled
(512 px) TIFF of side x side px at 0.5 um/px, streamed tile by tile. A
second, fresh process opens it with samplerflow and reads one small region,
so that the slide library and its caches are loaded, and records its
resident set. It then runs ``samplerflow.convert.write_pyramid`` with the
default ``ConvertParams`` (512 px JPEG tiles, quality 90) and records the
peak resident set (``ru_maxrss``). Splitting the two steps keeps the
source writer's memory out of the conversion's peak.

Run by hand, never in tests:

    .venv/bin/python benchmarks/bench_convert_memory.py
    .venv/bin/python benchmarks/bench_convert_memory.py --sides 4096,16384 --workdir /data/tmp

The 16384 px source is about 805 MB of raw pixels. Conversion writes its
scratch levels next to the output, so ``--workdir`` needs free disk of a
few times the compressed source size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import print_description, print_table

TILE_PX = 512
SOURCE_MPP = 0.5

WRITE_SOURCE = """
import sys
from pathlib import Path
import numpy as np, tifffile

side, path, tile_px, mpp = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

def tiles():
    # Stripes that differ per tile, so JPEG has edges to encode and levels differ.
    for top in range(0, side, tile_px):
        for left in range(0, side, tile_px):
            tile = np.full((tile_px, tile_px, 3), 210, np.uint8)
            tile[::7] = (top // tile_px * 13) % 255
            tile[:, ::5] = (left // tile_px * 29) % 255
            yield tile

pixels_per_cm = 1e4 / mpp
tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(tile_px, tile_px), photometric="rgb",
                 compression="jpeg", resolution=(pixels_per_cm, pixels_per_cm), resolutionunit="CENTIMETER")
"""

CONVERT = """
import json, resource, sys, time
from pathlib import Path
from samplerflow.convert import ConvertParams, write_pyramid
from samplerflow.slide import open_slide

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

source, output = Path(sys.argv[1]), Path(sys.argv[2])
reader = open_slide(source)
reader.read_level(0, 0, 0, 16, 16)
baseline_mib = rss_mib()
baseline_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
summary = write_pyramid(reader, output, params=ConvertParams())
seconds = time.perf_counter() - started
print(json.dumps({
    "backend": reader.info.backend,
    "baseline_mib": baseline_mib,
    "baseline_peak_mib": baseline_peak_mib,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "seconds": seconds,
    "levels": summary["levels"],
    "bigtiff": summary["bigtiff"],
    "output_bytes": output.stat().st_size,
}))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", default="4096,8192,16384", help="square slide sides in px, comma-separated (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the slides (default: a temporary folder, deleted afterwards)")
    return parser.parse_args()


def measure(side: int, folder: Path) -> dict:
    """Write the source slide, convert it in a fresh process and return that process's measurements."""
    source = folder / f"source_{side}.tiff"
    output = folder / f"converted_{side}.ome.tiff"
    subprocess.run([sys.executable, "-c", WRITE_SOURCE, str(side), str(source), str(TILE_PX), str(SOURCE_MPP)], check=True)
    completed = subprocess.run([sys.executable, "-c", CONVERT, str(source), str(output)], check=True, capture_output=True, text=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["source_bytes"] = source.stat().st_size
    source.unlink()
    output.unlink()
    return result


def main() -> None:
    args = parse_args()
    sides = [int(value) for value in args.sides.split(",") if value.strip()]
    print_description()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-convert-", dir=args.workdir) as name:
        for side in sides:
            result = measure(side, Path(name))
            raw_mib = side * side * 3 / 2**20
            rows.append([
                f"{side} x {side}", f"{raw_mib:.0f}", f"{result['source_bytes'] / 2**20:.1f}", result["backend"],
                f"{result['baseline_mib']:.0f}", f"{result['peak_mib']:.0f}",
                f"{result['peak_mib'] - result['baseline_mib']:.0f}",
                str(result["levels"]), f"{result['output_bytes'] / 2**20:.1f}", f"{result['seconds']:.1f}",
            ])
            print(f"{side} px done: {json.dumps(result)}", flush=True)
    print()
    print_table(
        ["slide (px)", "raw level 0 MiB", "source file MiB", "reader", "RSS before MiB", "peak RSS MiB",
         "peak - before MiB", "levels", "output MiB", "conversion s"],
        rows,
    )


if __name__ == "__main__":
    main()
