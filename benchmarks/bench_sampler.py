"""Time samplerflow.sampler.percentiles against np.percentile on one tiles x features matrix.

Both run in this process on the same float32 matrix (default 20,000 x 1,024,
standard normal, fixed seed) with percentiles 5, 15, ..., 95. The script

1. times the first call of ``percentiles`` on its own, because that call
   compiles the numba transpose kernel (or loads it from numba's on-disk
   cache, see ``--cold``);
2. times both functions ``--repeats`` times, alternating them, and prints
   the best and median wall time and the speed-up (median over median);
3. checks that both return identical arrays (``np.array_equal``, same
   shape and dtype) and exits with status 1 when they differ.

A speed-up below ``--target`` (default 5) is printed as such; the exit status
stays 0 because the speed-up depends on the machine.

Run by hand, never in tests:

    .venv/bin/python benchmarks/bench_sampler.py
    .venv/bin/python benchmarks/bench_sampler.py --cold   # include numba compilation in the first call
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PERCENTILES = list(range(5, 100, 10))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="tiles (matrix rows) (default: %(default)s)")
    parser.add_argument("--cols", type=int, default=1_024, help="features (matrix columns) (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each function (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="threads for percentiles() (default: one per CPU, at most one per 256-column block)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the matrix (default: %(default)s)")
    parser.add_argument("--target", type=float, default=5.0, help="speed-up to compare against (default: %(default)s)")
    parser.add_argument(
        "--cold", action="store_true",
        help="point NUMBA_CACHE_DIR at an empty folder so the first call compiles the kernel from scratch",
    )
    return parser.parse_args()


def numba_cache_files() -> list[Path]:
    """Return numba's cached index files for samplerflow.sampler in the default cache location."""
    import samplerflow.sampler

    folder = Path(samplerflow.sampler.__file__).parent / "__pycache__"
    return sorted(folder.glob("sampler.*transpose_block*.nbi"))


def main() -> int:
    args = parse_args()
    if args.cold:
        # numba reads NUMBA_CACHE_DIR when it is first imported; samplerflow imports it lazily.
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="samplerflow-numba-")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import print_description, print_table

    from samplerflow.sampler import percentiles

    print_description()
    cache_state = "fresh NUMBA_CACHE_DIR (compiles)" if args.cold else (
        "numba cache present (loads)" if numba_cache_files() else "no numba cache yet (compiles)"
    )

    matrix = np.random.default_rng(args.seed).standard_normal((args.rows, args.cols)).astype(np.float32)
    print(f"Matrix: {args.rows} x {args.cols} float32, percentiles {PERCENTILES}, repeats {args.repeats}")
    print(f"percentiles(threads={args.threads}) first call: {cache_state}")
    print()

    started = time.perf_counter()
    fast = percentiles(matrix, PERCENTILES, threads=args.threads)
    first_call = time.perf_counter() - started

    reference_times, fast_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        reference = np.percentile(matrix, PERCENTILES, axis=0)
        reference_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        fast = percentiles(matrix, PERCENTILES, threads=args.threads)
        fast_times.append(time.perf_counter() - started)

    identical = fast.shape == reference.shape and fast.dtype == reference.dtype and np.array_equal(fast, reference)
    median_speedup = statistics.median(reference_times) / statistics.median(fast_times)
    best_speedup = min(reference_times) / min(fast_times)

    def row(name: str, times: list[float]) -> list[str]:
        return [name, f"{min(times):.3f}", f"{statistics.median(times):.3f}", f"{max(times):.3f}"]

    print_table(
        ["function", "best s", "median s", "worst s"],
        [
            row("np.percentile(X, P, axis=0)", reference_times),
            row("samplerflow.sampler.percentiles", fast_times),
        ],
    )
    print(f"first call of percentiles (kernel compile or cache load + one run): {first_call:.3f} s")
    print(f"speed-up, median over median: {median_speedup:.2f}x; best over best: {best_speedup:.2f}x")
    print(f"result: shape {fast.shape}, dtype {fast.dtype}; identical to np.percentile: {identical}")
    if not identical:
        difference = np.nanmax(np.abs(fast.astype(np.float64) - reference.astype(np.float64)))
        print(f"FAIL: values differ from np.percentile (max abs difference {difference:.3g})")
        return 1
    verdict = "meets" if median_speedup >= args.target else "is BELOW"
    print(f"median speed-up {median_speedup:.2f}x {verdict} the {args.target:g}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
