"""Extraction workers must start safely after the main process used threaded OpenCV and torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Large OpenCV and torch calls start their thread pools, as AOI does on a real
# slide, before the runner starts data-loader workers.
SCRIPT = """
import sys
import cv2
import numpy as np
import torch

image = np.random.default_rng(0).integers(0, 255, (6000, 6000, 3), dtype=np.uint8)
for _ in range(3):
    cv2.resize(image, (3000, 3000), interpolation=cv2.INTER_AREA)
    cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
torch.randn(500, 500) @ torch.randn(500, 500)

from samplerflow.cli import main

sys.exit(main(["--no-progress", "run", "--input", sys.argv[1], "--outdir", sys.argv[2],
               "--max-tiles", "4", "--scales", "1,2", "--workers", "2"]))
"""


def test_workers_start_after_threaded_opencv(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO / "assets" / "demo" / "samplesheet.csv"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "cohort.h5ad").is_file()


def test_workers_ignore_package_named_folder_in_working_dir(tmp_path):
    """A folder called samplerflow in the working folder (a clone, seen from its parent) must not shadow the package."""
    (tmp_path / "samplerflow").mkdir()
    script = Path(sys.executable).parent / "samplerflow"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "samplerflow.cli"]
    result = subprocess.run(
        [*command, "--no-progress", "run", "--input", str(REPO / "assets" / "demo" / "samplesheet.csv"),
         "--outdir", str(tmp_path / "out"), "--max-tiles", "4", "--scales", "1", "--workers", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "cohort.h5ad").is_file()
