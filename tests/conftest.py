"""Shared fixtures: where the real test slides are, synthetic slides and helpers.

The folder of real slides is ``SAMPLERFLOW_TEST_DATA``, else
``<repo>/../shared/data/wsi``. Tests that need it skip when it is absent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

# Set before any test module imports matplotlib or huggingface_hub, which
# read these variables once at import time.
os.environ["MPLBACKEND"] = "Agg"
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_SHEET = REPO / "assets" / "demo" / "samplesheet.csv"
DEMO_SLIDE = REPO / "assets" / "demo" / "CMU-1-Small-Region.svs"

# Synthetic slides: same seed and size at two resolutions, two tissue objects.
SYNTHETIC_SEED = 3
SYNTHETIC_WIDTH_UM = 800.0
SYNTHETIC_HEIGHT_UM = 600.0


def data_root() -> Path:
    """Return the folder of real test slides (it may not exist)."""
    configured = os.environ.get("SAMPLERFLOW_TEST_DATA")
    if configured:
        return Path(configured).expanduser().resolve()
    return (REPO.parent / "shared" / "data" / "wsi").resolve()


@pytest.fixture(scope="session")
def wsi_data() -> Path:
    """Return the folder of real test slides, or skip the test when it is missing."""
    root = data_root()
    if not (root / "SOURCES.md").is_file():
        pytest.skip(
            f"real test slides not found at {root}: set SAMPLERFLOW_TEST_DATA to the folder "
            "that holds SOURCES.md, slides/, edge_cases/, tiles/ and features/"
        )
    return root


def run_cli(*args: str | Path) -> int:
    """Run ``samplerflow`` in this process and return its exit status."""
    from samplerflow.cli import main

    return main(["--no-progress", *(str(arg) for arg in args)])


def sha256_tree(folder: Path, *, exclude_dirs: Iterable[str] = ()) -> dict[str, str]:
    """Return {relative path: sha256} of every file under ``folder``, skipping the named folders anywhere."""
    skipped = set(exclude_dirs)
    digests = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or skipped & set(relative.parts[:-1]):
            continue
        digests[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def read_timings(outdir: Path) -> dict[str, bool]:
    """Return {'{sample}/{step}': skipped} from ``pipeline_info/timings.tsv`` (the total row left out)."""
    import pandas as pd

    table = pd.read_csv(outdir / "pipeline_info" / "timings.tsv", sep="\t", dtype=str)
    table = table[table["step"] != "total"]
    return {f"{row.sample}/{row.step}": row.skipped == "true" for row in table.itertuples()}


@pytest.fixture(scope="session")
def synthetic_slides(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    """Synthetic slides of one seed at 0.25 and 0.5 um/px: {mpp: path}.

    At 0.25 um/px the pyramid has four levels (3200 px down to 400 px wide).
    """
    from samplerflow.synthetic import SyntheticSpec, write_slide

    folder = tmp_path_factory.mktemp("synthetic")
    slides = {}
    for mpp in (0.25, 0.5):
        spec = SyntheticSpec(
            width_um=SYNTHETIC_WIDTH_UM, height_um=SYNTHETIC_HEIGHT_UM, mpp=mpp, objects=2, seed=SYNTHETIC_SEED
        )
        slides[mpp] = write_slide(spec, folder / f"synthetic_{mpp}.tiff")
    return slides


def load_rgb(path: Path) -> np.ndarray:
    """Read a PNG or TIFF tile as RGB uint8, compositing any alpha channel on white."""
    from PIL import Image

    image = Image.open(path)
    if image.mode in ("RGBA", "LA", "P"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[3])
        image = background
    return np.asarray(image.convert("RGB"))
