"""Conversion to pyramidal OME-TIFF: pixels, metadata, associated images, memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from samplerflow.convert import ConvertParams, level_sizes, object_box, write_pyramid
from samplerflow.slide import open_slide

REPO = Path(__file__).resolve().parent.parent
DEMO_SLIDE = REPO / "assets" / "demo" / "CMU-1-Small-Region.svs"


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    error = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


@pytest.fixture(scope="module")
def demo_reader():
    with open_slide(DEMO_SLIDE) as reader:
        yield reader


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "none"])
def test_lossless_conversion_exact(demo_reader, tmp_path, compression):
    output = tmp_path / "slide.ome.tiff"
    write_pyramid(demo_reader, output, params=ConvertParams(compression=compression, min_level_px=256))
    source = demo_reader.read_level(0, 0, 0, demo_reader.info.width, demo_reader.info.height)
    with open_slide(output) as converted:
        pixels = converted.read_level(0, 0, 0, converted.info.width, converted.info.height)
    assert np.array_equal(pixels, source)


def test_jpeg_conversion_psnr(demo_reader, tmp_path):
    output = tmp_path / "slide.ome.tiff"
    write_pyramid(demo_reader, output, params=ConvertParams(compression="jpeg", jpeg_quality=90, min_level_px=256))
    source = demo_reader.read_level(0, 0, 0, demo_reader.info.width, demo_reader.info.height)
    with open_slide(output) as converted:
        pixels = converted.read_level(0, 0, 0, converted.info.width, converted.info.height)
    assert psnr(source, pixels) > 30.0


def test_converted_mpp_matches_readers(demo_reader, tmp_path):
    output = tmp_path / "slide.ome.tiff"
    write_pyramid(demo_reader, output, params=ConvertParams(min_level_px=256))
    with openslide.OpenSlide(str(output)) as handle:
        openslide_mpp = float(handle.properties[openslide.PROPERTY_NAME_MPP_X])
    with tifffile.TiffFile(output) as tiff:
        levels = tiff.series[0].levels
        resolution = tiff.pages[0].tags["XResolution"].value
    with open_slide(output) as converted:
        ours = converted.info
    assert openslide_mpp == pytest.approx(0.499, rel=1e-6)
    assert 1e4 / (resolution[0] / resolution[1]) == pytest.approx(0.499, rel=1e-6)
    assert ours.mpp == pytest.approx(0.499, rel=1e-9)
    assert ours.mpp_source == "metadata:ome-physical-size"
    assert len(levels) == len(level_sizes(2220, 2967, min_level_px=256))
    assert ours.level_dimensions[1] == (1110, 1483)


def test_converted_has_no_associated_images(demo_reader, tmp_path):
    output = tmp_path / "slide.ome.tiff"
    write_pyramid(demo_reader, output, params=ConvertParams(min_level_px=256))
    with openslide.OpenSlide(str(DEMO_SLIDE)) as source:
        assert set(source.associated_images) == {"label", "macro", "thumbnail"}
    with openslide.OpenSlide(str(output)) as handle:
        assert dict(handle.associated_images) == {}
    with tifffile.TiffFile(output) as tiff:
        assert len(tiff.series) == 1
        assert len(tiff.pages) == 1
        assert "label" not in (tiff.pages[0].description or "").lower()


def test_lower_levels_are_block_means(demo_reader, tmp_path):
    output = tmp_path / "slide.ome.tiff"
    write_pyramid(demo_reader, output, params=ConvertParams(compression="zstd", min_level_px=256))
    with tifffile.TiffFile(output) as tiff:
        level0 = tiff.series[0].levels[0].asarray()
        level1 = tiff.series[0].levels[1].asarray()
    height, width = level1.shape[:2]
    expected = level0[: 2 * height, : 2 * width].reshape(height, 2, width, 2, 3).astype(np.uint16)
    expected = ((expected.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)
    assert np.array_equal(level1, expected)


def test_object_crop_box(demo_reader, tmp_path):
    item = {"location": [0.25, 0.5], "size": [0.5, 0.25]}
    box = object_box(item, width=2220, height=2967)
    output = tmp_path / "object1.ome.tiff"
    summary = write_pyramid(demo_reader, output, params=ConvertParams(compression="zstd", min_level_px=128), box=box)
    source = demo_reader.read_level(0, box[0], box[1], box[2], box[3])
    with open_slide(output) as converted:
        pixels = converted.read_level(0, 0, 0, converted.info.width, converted.info.height)
    assert summary["width_px"] == box[2]
    assert np.array_equal(pixels, source)


def test_invalid_convert_params():
    with pytest.raises(ValueError, match="compression"):
        ConvertParams(compression="webp2000")
    with pytest.raises(ValueError, match="multiple of 16"):
        ConvertParams(tile_px=100)


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
import numpy as np, tifffile
from samplerflow.convert import ConvertParams, write_pyramid
from samplerflow.slide import open_slide

side, folder = int(sys.argv[1]), Path(sys.argv[2])
source = folder / f"source_{side}.tiff"

def tiles():
    for top in range(0, side, 512):
        for left in range(0, side, 512):
            tile = np.full((512, 512, 3), 210, np.uint8)
            tile[::7] = (top // 512 * 13) % 255
            tile[:, ::5] = (left // 512 * 29) % 255
            yield tile

tifffile.imwrite(source, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(512, 512), photometric="rgb",
                 compression="jpeg", resolution=(20000, 20000), resolutionunit="CENTIMETER")
reader = open_slide(source)
reader.read_level(0, 0, 0, 16, 16)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_pyramid(reader, folder / f"out_{side}.ome.tiff", params=ConvertParams(compression="jpeg"))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) // 1024)
"""


@pytest.mark.slow
def test_conversion_memory_bounded(tmp_path):
    """Peak memory of converting a single-level slide does not grow with its pixel count."""
    growth_mib = {}
    for side in (2048, 6144):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(side), str(tmp_path)],
            capture_output=True, text=True, check=True,
        )
        growth_mib[side] = int(result.stdout.strip().splitlines()[-1])
    large_raw_mib = 6144 * 6144 * 3 / 2**20
    assert growth_mib[6144] < 0.25 * large_raw_mib
    assert growth_mib[6144] - growth_mib[2048] < 32
