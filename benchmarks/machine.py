"""Describe the machine a benchmark ran on: CPU model, cores, RAM and library versions.

Imported by the bench_*.py scripts in this folder; each prints this
description before its results so that a recorded table carries its hardware.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def usable_cores() -> int:
    """Return the cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe() -> list[tuple[str, str]]:
    """Return (name, value) rows: date, platform, CPU, cores, RAM, load, thread settings and library versions."""
    from samplerflow.provenance import package_versions

    rows = [
        ("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
        ("platform", platform.platform()),
        ("CPU model", _cpu_model()),
        ("logical CPUs (os.cpu_count)", str(os.cpu_count())),
        ("usable cores (affinity)", str(usable_cores())),
        ("RAM", _memory_gib()),
        # Other processes on the machine slow every timing; the load average shows whether there were any.
        ("load average (1, 5, 15 min)", " ".join(f"{value:.2f}" for value in os.getloadavg())),
    ]
    for variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR"):
        if variable in os.environ:
            rows.append((variable, os.environ[variable]))
    rows += [(name, version) for name, version in package_versions().items()]
    return rows


def print_description() -> None:
    """Print :func:`describe` as a two-column table."""
    rows = describe()
    width = max(len(name) for name, _ in rows)
    print("Machine and software")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows as a Markdown table, so the output can be pasted into docs/benchmarks.md."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    print("| " + " | ".join(f"{cell:<{w}}" for cell, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(f"{str(cell):<{w}}" for cell, w in zip(row, widths)) + " |")
    print()
