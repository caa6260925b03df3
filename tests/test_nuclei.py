"""Nuclear morphometry: counts on drawn tiles, watershed splits, backbone registration."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DEMO_SLIDE

from samplerflow.features import available_backbones, create_backbone
from samplerflow.nuclei import (
    LABELS,
    NucleiBackbone,
    NucleusParams,
    nuclear_features,
    segment_nuclei,
)
from samplerflow.slide import open_slide

MPP = 0.5
TILE_PX = 256
PINK = (232, 160, 200)
PURPLE = (85, 55, 150)
RADIUS_UM = 3.5


def draw_tile(centres_px: list[tuple[int, int]], *, seed: int = 0) -> np.ndarray:
    """Dark-purple disks of radius 3.5 um on pink at 0.5 um/px, lightly blurred, with pixel noise."""
    rng = np.random.default_rng(seed)
    tile = np.zeros((TILE_PX, TILE_PX, 3), dtype=np.uint8)
    tile[:] = PINK
    radius_px = round(RADIUS_UM / MPP)
    for x, y in centres_px:
        cv2.circle(tile, (int(x), int(y)), radius_px, PURPLE, -1)
    tile = cv2.GaussianBlur(tile, (0, 0), 0.8)
    noisy = tile.astype(np.float32) + rng.normal(0, 3.0, tile.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def separated_centres(count: int, *, min_gap_px: int, seed: int) -> list[tuple[int, int]]:
    """Place ``count`` disk centres whose disks are at least ``min_gap_px`` apart, away from the border."""
    rng = np.random.default_rng(seed)
    radius_px = round(RADIUS_UM / MPP)
    centres: list[tuple[int, int]] = []
    while len(centres) < count:
        x, y = rng.integers(radius_px + 2, TILE_PX - radius_px - 2, size=2)
        if all((x - cx) ** 2 + (y - cy) ** 2 >= (2 * radius_px + min_gap_px) ** 2 for cx, cy in centres):
            centres.append((int(x), int(y)))
    return centres


@pytest.mark.parametrize(("count", "seed"), [(10, 0), (40, 1), (80, 2)])
def test_separated_nuclei_counted(count, seed):
    tile = draw_tile(separated_centres(count, min_gap_px=4, seed=seed), seed=seed)
    features = dict(zip(LABELS, nuclear_features(tile, mpp=MPP)))
    assert abs(features["nucleus_count"] - count) <= 0.1 * count


def test_touching_pairs_split():
    # Pairs of disks whose centres are 1.6 radii apart overlap into one blob each.
    radius_px = round(RADIUS_UM / MPP)
    offset = round(1.6 * radius_px)
    pair_anchors = separated_centres(12, min_gap_px=2 * radius_px + 6, seed=5)
    centres = []
    for x, y in pair_anchors:
        x = min(x, TILE_PX - radius_px - 2 - offset)
        centres += [(x, y), (x + offset, y)]
    tile = draw_tile(centres, seed=5)
    labels = segment_nuclei(tile, mpp=MPP)
    components, _ = cv2.connectedComponents((labels > 0).astype(np.uint8))
    # The pairs really touch: the foreground has one blob per pair (the count includes the background).
    assert components - 1 == 12
    # Measured: 24 nuclei in 12 blobs.
    assert abs(len(np.unique(labels)) - 1 - 24) <= 2


def test_nucleus_area_and_density_units():
    count = 30
    tile = draw_tile(separated_centres(count, min_gap_px=4, seed=7), seed=7)
    features = dict(zip(LABELS, nuclear_features(tile, mpp=MPP)))
    tile_area_mm2 = (TILE_PX * MPP / 1000) ** 2
    assert features["nucleus_density_per_mm2"] == pytest.approx(features["nucleus_count"] / tile_area_mm2)
    # A 3.5 um radius disk is 38.5 um^2; thresholding the blurred edge moves it by a few um^2.
    assert features["nucleus_area_mean_um2"] == pytest.approx(np.pi * RADIUS_UM**2, rel=0.25)
    assert features["nucleus_area_sd_um2"] < 10.0
    assert features["nucleus_eccentricity_mean"] < 0.5
    assert features["nucleus_solidity_mean"] > 0.9
    assert features["nucleus_hematoxylin_mean"] > 0.05


def test_area_scales_with_mpp():
    tile = draw_tile(separated_centres(20, min_gap_px=4, seed=3), seed=3)
    at_half = dict(zip(LABELS, nuclear_features(tile, mpp=0.5)))
    # Halving mpp with every length parameter halved segments the same pixels.
    defaults = NucleusParams()
    halved = NucleusParams(
        smoothing_um=defaults.smoothing_um / 2,
        min_separation_um=defaults.min_separation_um / 2,
        min_area_um2=defaults.min_area_um2 / 4,
        max_area_um2=defaults.max_area_um2 / 4,
    )
    at_quarter = dict(zip(LABELS, nuclear_features(tile, mpp=0.25, params=halved)))
    assert at_quarter["nucleus_count"] == at_half["nucleus_count"]
    assert at_quarter["nucleus_area_mean_um2"] == pytest.approx(at_half["nucleus_area_mean_um2"] / 4, rel=0.01)


def test_blank_tiles_give_zeros():
    for colour in ((255, 255, 255), PINK):
        tile = np.zeros((TILE_PX, TILE_PX, 3), dtype=np.uint8)
        tile[:] = colour
        features = nuclear_features(tile, mpp=MPP)
        assert np.array_equal(features, np.zeros(len(LABELS), dtype=np.float32))


def test_real_tile_plausible():
    with open_slide(DEMO_SLIDE) as reader:
        tile = reader.read_level(0, 1000, 1400, TILE_PX, TILE_PX)
    features = dict(zip(LABELS, nuclear_features(tile, mpp=reader.info.mpp)))
    assert features["nucleus_count"] >= 5
    assert 10.0 <= features["nucleus_area_mean_um2"] <= 150.0
    assert np.isfinite(list(features.values())).all()


def test_registered_as_backbone():
    assert "nuclei" in available_backbones()
    backbone = create_backbone("nuclei")
    assert isinstance(backbone, NucleiBackbone)
    assert backbone.dim == len(backbone.feature_labels()) == len(LABELS)
    tile = draw_tile(separated_centres(10, min_gap_px=4, seed=0))
    prepared = backbone.prepare(tile)
    assert prepared.dtype == np.float32
    embedded = backbone.embed(np.stack([prepared, prepared]))
    assert embedded.shape == (2, backbone.dim)


def test_backbone_rejects_zero_mpp():
    with pytest.raises(ValueError, match="mpp"):
        NucleiBackbone(mpp=0.0)
