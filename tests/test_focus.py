"""Focus QC: sharpness on real H&E tiles with added blur, slide flags, heatmap, DeepFocus."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import DEMO_SLIDE, load_rgb
from sklearn.metrics import roc_auc_score

from samplerflow.aoi import tissue_mask
from samplerflow.errors import InputError
from samplerflow.focus import (
    DeepFocusNet,
    DeepFocusScorer,
    SharpnessScorer,
    assess_focus,
    focus_map,
    load_deepfocus,
    sharpness,
    write_heatmap,
)
from samplerflow.slide import SlideInfo, SlideReader, open_slide

SHARED_TILES = (
    "tiles/histolab_tissue_detection/tissue-level0-4302-10273-4814-10785.png",
    "tiles/histolab_tissue_detection/tissue-level2-4640-4649-8736-8746.png",
    "tiles/kather_crc/CRC-VAL-HE-7K-NORM-TCGA-YLVCMEHK.tif",
)
DEMO_TILE_PX = 256


class ArraySlideReader(SlideReader):
    """A one-level slide held in memory, for slides changed by a test (e.g. blurred)."""

    def __init__(self, image: np.ndarray, *, mpp: float) -> None:
        self.image = image
        height, width = image.shape[:2]
        self.info = SlideInfo(
            path="memory", backend="array", vendor="array", width=width, height=height, mpp=mpp,
            mpp_source="test", level_dimensions=((width, height),), level_downsamples=(1.0,),
        )

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        output = np.full((height, width, 3), 255, dtype=np.uint8)
        left, top = max(0, x), max(0, y)
        right, bottom = min(self.info.width, x + width), min(self.info.height, y + height)
        if right > left and bottom > top:
            output[top - y : bottom - y, left - x : right - x] = self.image[top:bottom, left:right]
        return output


@pytest.fixture(scope="module")
def demo_image() -> np.ndarray:
    with open_slide(DEMO_SLIDE) as reader:
        return reader.read_level(0, 0, 0, reader.info.width, reader.info.height)


def _demo_tissue_tiles(image: np.ndarray) -> list[np.ndarray]:
    tiles = []
    for top in range(0, image.shape[0] - DEMO_TILE_PX + 1, DEMO_TILE_PX):
        for left in range(0, image.shape[1] - DEMO_TILE_PX + 1, DEMO_TILE_PX):
            tile = image[top : top + DEMO_TILE_PX, left : left + DEMO_TILE_PX]
            if tissue_mask(tile, brightness_max=220, saturation_min=20).mean() > 0.5:
                tiles.append(tile)
    return tiles


@pytest.fixture(scope="module")
def real_tiles(wsi_data: Path, demo_image: np.ndarray) -> list[np.ndarray]:
    """Tissue tiles from the shared set, the three MoPaDi TCGA tiles and the demo slide."""
    tiles = [load_rgb(wsi_data / name) for name in SHARED_TILES]
    tiles += [load_rgb(path) for path in sorted((wsi_data / "features" / "mopadi").rglob("*.jpg"))]
    tiles += _demo_tissue_tiles(demo_image)
    return tiles


@pytest.mark.parametrize(
    ("measure", "sigma_px"), [("laplacian", 1.0), ("laplacian", 1.5), ("laplacian", 2.0), ("tenengrad", 2.0)]
)
def test_sharpness_auroc_real_tiles(real_tiles, measure, sigma_px):
    # Measured on 39 tiles: laplacian AUROC 0.995 at sigma 1 px and 1.000 at
    # sigma 1.5 and 2 px; tenengrad 1.000 at sigma 2 px.
    assert len(real_tiles) >= 30
    sharp = [sharpness(tile, measure=measure) for tile in real_tiles]
    blurred = [sharpness(cv2.GaussianBlur(tile, (0, 0), sigma_px), measure=measure) for tile in real_tiles]
    labels = [1] * len(sharp) + [0] * len(blurred)
    assert roc_auc_score(labels, sharp + blurred) >= 0.95


def test_default_threshold_splits_real_tiles(real_tiles):
    scorer = SharpnessScorer()
    sharp_flags = [scorer.is_blurred(scorer.score(tile)) for tile in real_tiles]
    blurred_flags = [scorer.is_blurred(scorer.score(cv2.GaussianBlur(tile, (0, 0), 2.0))) for tile in real_tiles]
    assert sum(sharp_flags) == 0
    assert all(blurred_flags)


def test_sharpness_ignores_stain_strength(real_tiles):
    # Scaling optical density by 0.6 mimics a paler stain of the same focus.
    tile = real_tiles[0]
    density = -np.log((tile.astype(np.float64) + 1.0) / 256.0)
    pale = np.clip(256.0 * np.exp(-0.6 * density) - 1.0 + 0.5, 0, 255).astype(np.uint8)
    assert sharpness(pale) == pytest.approx(sharpness(tile), rel=0.2)


def test_sharpness_white_tile_zero():
    assert sharpness(np.full((64, 64, 3), 255, dtype=np.uint8)) == 0.0


def test_sharpness_rejects_unknown_measure():
    with pytest.raises(ValueError, match="brenner"):
        sharpness(np.zeros((8, 8, 3), dtype=np.uint8), measure="brenner")


def test_focus_map_sharp_slide_ok(demo_image):
    result = focus_map(ArraySlideReader(demo_image, mpp=0.499))
    qc = assess_focus(result)
    assert result.tissue_tiles >= 10
    assert qc["status"] == "ok"
    assert qc["blurred_fraction"] <= 0.1


def test_focus_map_blurred_slide_flagged(demo_image):
    blurred = cv2.GaussianBlur(demo_image, (0, 0), 2.0)
    qc = assess_focus(focus_map(ArraySlideReader(blurred, mpp=0.499)), max_blurred_fraction=0.1)
    assert qc["status"] == "out_of_focus"
    assert qc["blurred_fraction"] > 0.9
    assert "tissue tiles" in qc["reason"]


def test_focus_map_half_blurred_fraction(demo_image):
    half = demo_image.copy()
    middle = half.shape[0] // 2
    half[middle:] = cv2.GaussianBlur(demo_image, (0, 0), 2.0)[middle:]
    result = focus_map(ArraySlideReader(half, mpp=0.499), tile_size_um=64.0)
    assert 0.3 < result.blurred_fraction < 0.7
    rows_blurred = result.blurred.sum(axis=1)
    assert rows_blurred[: result.blurred.shape[0] // 3].sum() == 0


def test_heatmap_png_written(demo_image, tmp_path):
    result = focus_map(ArraySlideReader(demo_image, mpp=0.499))
    destination = tmp_path / "focus_heatmap.png"
    write_heatmap(result, destination, pixels_per_tile=4)
    image = cv2.imread(str(destination))
    assert image.shape[:2] == (result.scores.shape[0] * 4, result.scores.shape[1] * 4)
    off_tissue = np.argwhere(~result.tissue)
    if len(off_tissue):
        row, col = off_tissue[0]
        assert (image[row * 4, col * 4] == 255).all()


def test_deepfocus_random_init_runs(demo_image):
    torch.manual_seed(0)
    scorer = DeepFocusScorer(DeepFocusNet().eval())
    score = scorer.score(demo_image[:256, :256])
    assert 0.0 <= score <= 1.0
    probabilities = scorer.model(torch.rand(3, 3, 64, 64))
    assert probabilities.shape == (3, 2)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3))


def test_deepfocus_layer_shapes():
    shapes = {name: tuple(value.shape) for name, value in DeepFocusNet().state_dict().items()}
    assert shapes["features.0.0.weight"] == (32, 3, 5, 5)
    assert shapes["features.4.0.weight"] == (128, 128, 3, 3)
    assert shapes["hidden.0.weight"] == (128, 8 * 8 * 128)
    assert shapes["classifier.weight"] == (2, 64)


def test_deepfocus_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(1)
    model = DeepFocusNet()
    path = tmp_path / "deepfocus.pt"
    torch.save(model.state_dict(), path)
    loaded = load_deepfocus(path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_deepfocus_rejects_wrong_checkpoint(tmp_path):
    state = DeepFocusNet().state_dict()
    state["classifier.weight"] = torch.zeros(3, 64)
    path = tmp_path / "wrong_shape.pt"
    torch.save(state, path)
    with pytest.raises(InputError, match="does not match the DeepFocus architecture"):
        load_deepfocus(path)


def test_deepfocus_rejects_missing_keys(tmp_path):
    state = DeepFocusNet().state_dict()
    del state["hidden.0.weight"]
    path = tmp_path / "missing_key.pt"
    torch.save(state, path)
    with pytest.raises(InputError, match="hidden.0.weight"):
        load_deepfocus(path)


def test_deepfocus_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_deepfocus(tmp_path / "absent.pt")
