"""Time the demo: `samplerflow run` on assets/demo/samplesheet.csv, fresh and resumed.

Each repeat runs the command line in a new process into a fresh temporary
folder, as `make demo` does (handcrafted backbone, default parameters).
It then runs it a second time into the same folder, where the resume
stamps should make every step skip. For every run the
script prints the process wall time and the per-step seconds that the
runner wrote to pipeline_info/timings.tsv. The process wall time minus the
runner's ``total`` is interpreter start-up and imports (torch among them).

Run by hand, never in tests:

    .venv/bin/python benchmarks/bench_demo.py
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_SHEET = REPOSITORY / "assets" / "demo" / "samplesheet.csv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh + resumed run pairs (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the output folders (their paths are printed)")
    return parser.parse_args()


def samplerflow_command() -> list[str]:
    """Return the command that starts the samplerflow CLI of this interpreter's environment."""
    script = Path(sys.executable).parent / "samplerflow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "samplerflow.cli"]


def run_once(outdir: Path) -> tuple[float, list[dict[str, str]]]:
    """Run the demo into ``outdir``; return the process wall seconds and the rows of timings.tsv."""
    command = samplerflow_command() + [
        "--no-progress", "run", "--input", str(DEMO_SHEET), "--outdir", str(outdir),
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"FAIL: {' '.join(command)} exited with status {completed.returncode}")
    with open(outdir / "pipeline_info" / "timings.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return wall, rows


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import print_description, print_table

    print_description()
    print(f"Command: {' '.join(samplerflow_command())} --no-progress run --input {DEMO_SHEET.relative_to(REPOSITORY)} --outdir TMP")
    print()

    walls: dict[str, list[float]] = {"fresh": [], "resumed": []}
    steps: dict[tuple[str, str], list[str]] = {}
    order: list[str] = []
    skipped: dict[tuple[str, str], list[str]] = {}
    for repeat in range(args.repeats):
        outdir = Path(tempfile.mkdtemp(prefix="samplerflow-demo-")) / "results"
        for kind in ("fresh", "resumed"):
            wall, rows = run_once(outdir)
            walls[kind].append(wall)
            for row in rows:
                if row["step"] not in order:
                    order.append(row["step"])
                steps.setdefault((kind, row["step"]), []).append(row["seconds"])
                skipped.setdefault((kind, row["step"]), []).append(row["skipped"])
        if args.keep:
            print(f"repeat {repeat + 1}: outputs kept in {outdir}")
        else:
            shutil.rmtree(outdir.parent)

    header = ["step"] + [f"{kind} run {index + 1} s" for kind in ("fresh", "resumed") for index in range(args.repeats)]
    table = []
    for step in order:
        cells = [step]
        for kind in ("fresh", "resumed"):
            seconds = steps.get((kind, step), [])
            flags = skipped.get((kind, step), [])
            cells += [f"{value}" + (" (skipped)" if flag == "true" else "") for value, flag in zip(seconds, flags)]
        table.append(cells)
    table.append(["process wall time"] + [f"{wall:.2f}" for kind in ("fresh", "resumed") for wall in walls[kind]])
    print("Per-step seconds from pipeline_info/timings.tsv (total = the runner's own wall time):")
    print_table(header, table)
    for kind in ("fresh", "resumed"):
        print(f"{kind} run, process wall time: median {statistics.median(walls[kind]):.2f} s, "
              f"min {min(walls[kind]):.2f} s, max {max(walls[kind]):.2f} s")
    print(f"CPU threads available to the runs: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
