"""Focus quality control: a per-tile sharpness map over the tissue of a slide.

The default measure is the variance of the Laplacian of the optical
density (OD, summed over R, G and B) over tissue pixels, divided by the
squared mean OD. Optical density is proportional to stain amount, so a
tile stained half as strongly has half the OD and half the Laplacian, and
the ratio does not change: pale and dark slides are judged on the same
scale. Tenengrad (mean squared Sobel gradient of the OD, divided by the
squared mean OD) is the alternative measure.

Both measures depend on resolution, so tiles are always read at one
``mpp`` (0.5 um/px by default) whatever the scan resolution, and the blur
threshold belongs to that resolution.

:class:`DeepFocusNet` is the convolutional network of DeepFocus
(Senaras C, Niazi MKK, Lozanski G, Gurcan MN. DeepFocus: Detection of
out-of-focus regions in whole slide digital images using deep learning.
PLOS ONE 13(10): e0205387, 2018), rebuilt in PyTorch from the layer list
of the public TensorFlow definition (github.com/jamesdolezal/deepfocus,
``keras_model.py``). No weights ship with samplerflow; pass a PyTorch
state dict converted from a trained checkpoint to :func:`load_deepfocus`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch import nn

from samplerflow.aoi import tissue_mask
from samplerflow.errors import InputError
from samplerflow.focus_params import DEFAULT_FOCUS_MPP, MEASURES, SCORERS, FocusParams  # noqa: F401  (re-exported)
from samplerflow.io import atomic_path
from samplerflow.slide import SlideReader
from samplerflow.tiling import tissue_fractions
from samplerflow.units import SlidePixels

log = logging.getLogger(__name__)

# Tissue thresholds on 0..255 grey level and HSV saturation, as in the AOI stage.
TISSUE_BRIGHTNESS_MAX = 220
TISSUE_SATURATION_MIN = 20
# Tiles with fewer tissue pixels than this are scored over all their pixels.
MIN_TISSUE_PIXELS = 100
# Sharpness below which a tile read at 0.5 um/px counts as blurred. Set
# between sharp tiles (lowest score 0.69) and the same tiles blurred with a
# 1.5 px Gaussian (highest score 0.29) on 39 real H&E tiles; see
# docs/harmonization.md. It is an estimate from few tiles, so review it on
# your own slides.
DEFAULT_BLUR_THRESHOLD = {"laplacian": 0.35, "tenengrad": 1.5}


def optical_density(tile: np.ndarray) -> np.ndarray:
    """Return the optical density summed over R, G and B, as float32 (H, W)."""
    return -np.log((tile.astype(np.float32) + 1.0) / 256.0).sum(axis=2)


def sharpness(tile: np.ndarray, *, measure: str = "laplacian") -> float:
    """Return the stain-normalized sharpness of one RGB uint8 tile (higher is sharper).

    Statistics are taken over tissue pixels, or over the whole tile when it
    has fewer than :data:`MIN_TISSUE_PIXELS` of them. A tile with no optical
    density at all (pure white) scores 0.
    """
    if measure not in MEASURES:
        raise ValueError(f"Invalid focus measure {measure!r}: choose one of {', '.join(MEASURES)}")
    density = optical_density(tile)
    mask = tissue_mask(tile, brightness_max=TISSUE_BRIGHTNESS_MAX, saturation_min=TISSUE_SATURATION_MIN)
    if mask.sum() < MIN_TISSUE_PIXELS:
        mask = np.ones(mask.shape, dtype=bool)
    mean_density = float(density[mask].mean())
    if mean_density <= 1e-6:
        return 0.0
    if measure == "laplacian":
        response = cv2.Laplacian(density, cv2.CV_32F, ksize=3)
        energy = float(response[mask].var())
    else:
        gradient_x = cv2.Sobel(density, cv2.CV_32F, 1, 0)
        gradient_y = cv2.Sobel(density, cv2.CV_32F, 0, 1)
        energy = float((gradient_x**2 + gradient_y**2)[mask].mean())
    return energy / mean_density**2


class TileScorer(Protocol):
    """Scores RGB uint8 tiles and decides which are blurred."""

    name: str

    def score(self, tile: np.ndarray) -> float:
        """Return the tile's focus score."""

    def is_blurred(self, score: float) -> bool:
        """Tell whether a score means the tile is out of focus."""


@dataclass(frozen=True)
class SharpnessScorer:
    """Classical sharpness measure with a blur threshold (tiles below it are blurred)."""

    measure: str = "laplacian"
    blur_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"Invalid focus measure {self.measure!r}: choose one of {', '.join(MEASURES)}")
        if self.blur_threshold is not None and self.blur_threshold <= 0:
            raise ValueError(f"Invalid blur_threshold={self.blur_threshold}: must be positive")

    @property
    def name(self) -> str:
        return self.measure

    @property
    def threshold(self) -> float:
        """Blur threshold in use (the measure's default unless one was given)."""
        return self.blur_threshold if self.blur_threshold is not None else DEFAULT_BLUR_THRESHOLD[self.measure]

    def score(self, tile: np.ndarray) -> float:
        return sharpness(tile, measure=self.measure)

    def is_blurred(self, score: float) -> bool:
        return score < self.threshold


# --- DeepFocus -------------------------------------------------------------

DEEPFOCUS_PATCH_PX = 64
# (output channels, kernel size, max-pool after the block) of the five convolution blocks.
DEEPFOCUS_CONVOLUTIONS = ((32, 5, False), (32, 3, False), (64, 3, True), (128, 3, True), (128, 3, True))
DEEPFOCUS_HIDDEN = (128, 64)


class DeepFocusNet(nn.Module):
    """DeepFocus CNN: 64 x 64 RGB patch to (in focus, out of focus) probabilities.

    Layers, as in the published model: five 'same'-padded convolutions
    (32 5x5, 32 3x3, 64 3x3, 128 3x3, 128 3x3), each followed by ReLU and
    batch normalization, with 2x2 max pooling after the last three; two
    fully connected layers (128 and 64 units), each followed by ReLU,
    batch normalization and dropout 0.2; a 2-way softmax. The input is RGB
    in 0..1 minus each patch's mean over all pixels and channels. The
    feature map is flattened in height, width, channel order, as
    TensorFlow does, so a converted first dense kernel needs only a
    transpose.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = 3
        for out_channels, kernel, pool in DEEPFOCUS_CONVOLUTIONS:
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(out_channels),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_channels = out_channels
        # NOTE: batch-norm epsilon is PyTorch's 1e-5; match it to the source
        # framework's value when converting weights.
        self.features = nn.Sequential(*blocks)
        side = DEEPFOCUS_PATCH_PX // 2 ** sum(pool for _, _, pool in DEEPFOCUS_CONVOLUTIONS)
        hidden: list[nn.Module] = []
        in_features = in_channels * side * side
        for units in DEEPFOCUS_HIDDEN:
            hidden += [nn.Linear(in_features, units), nn.ReLU(inplace=True), nn.BatchNorm1d(units), nn.Dropout(0.2)]
            in_features = units
        self.hidden = nn.Sequential(*hidden)
        self.classifier = nn.Linear(in_features, 2)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Map (n, 3, 64, 64) RGB in 0..1 to (n, 2) softmax probabilities."""
        centred = patches - patches.mean(dim=(1, 2, 3), keepdim=True)
        features = self.features(centred)
        flat = features.permute(0, 2, 3, 1).flatten(1)
        return torch.softmax(self.classifier(self.hidden(flat)), dim=1)


def load_deepfocus(path: str | Path, *, device: str = "cpu") -> DeepFocusNet:
    """Load a DeepFocus PyTorch state dict with strict key and shape checks.

    Raises :class:`InputError` when the file is missing, is not a state dict
    or does not match :class:`DeepFocusNet` exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"DeepFocus checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for unreadable files
        raise InputError(f"{path}: cannot read the DeepFocus checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a PyTorch state dict for DeepFocusNet, found {type(state).__name__}")
    model = DeepFocusNet()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InputError(
            f"{path}: the checkpoint does not match the DeepFocus architecture; convert the weights "
            f"to DeepFocusNet's parameter names and shapes ({error})"
        ) from error
    model.to(device).eval()
    log.info("Loaded DeepFocus weights from %s", path)
    return model


class DeepFocusScorer:
    """Out-of-focus probability of a tile: the mean over its 64 x 64 patches.

    Tiles must be read at the resolution the checkpoint was trained at;
    that is the caller's choice of ``mpp`` in :func:`focus_map`.
    """

    name = "deepfocus"

    def __init__(self, model: DeepFocusNet, *, blur_probability: float = 0.5) -> None:
        if not 0 < blur_probability < 1:
            raise ValueError(f"Invalid blur_probability={blur_probability}: must be in (0, 1)")
        self.model = model.eval()
        self.blur_probability = blur_probability
        self.threshold = blur_probability

    def score(self, tile: np.ndarray) -> float:
        rows = tile.shape[0] // DEEPFOCUS_PATCH_PX
        cols = tile.shape[1] // DEEPFOCUS_PATCH_PX
        if rows == 0 or cols == 0:
            raise ValueError(f"Tile of {tile.shape[1]}x{tile.shape[0]} px is smaller than one 64 x 64 DeepFocus patch")
        cropped = tile[: rows * DEEPFOCUS_PATCH_PX, : cols * DEEPFOCUS_PATCH_PX].astype(np.float32) / 255.0
        patches = cropped.reshape(rows, DEEPFOCUS_PATCH_PX, cols, DEEPFOCUS_PATCH_PX, 3).transpose(0, 2, 4, 1, 3)
        batch = torch.from_numpy(np.ascontiguousarray(patches.reshape(-1, 3, DEEPFOCUS_PATCH_PX, DEEPFOCUS_PATCH_PX)))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            probabilities = self.model(batch.to(device))
        return float(probabilities[:, 1].mean())

    def is_blurred(self, score: float) -> bool:
        return score > self.blur_probability


# --- Slide maps --------------------------------------------------------------


@dataclass(frozen=True)
class FocusMap:
    """Focus scores on a square grid of tiles covering the slide.

    ``scores`` and ``blurred`` are (rows, cols); tiles with too little
    tissue have a NaN score and are never blurred.
    """

    scores: np.ndarray
    blurred: np.ndarray
    tissue: np.ndarray
    tile_size_um: float
    mpp: float
    scorer: str
    threshold: float

    @property
    def tissue_tiles(self) -> int:
        return int(self.tissue.sum())

    @property
    def blurred_tiles(self) -> int:
        return int(self.blurred.sum())

    @property
    def blurred_fraction(self) -> float:
        """Blurred share of the tissue tiles (0 when there are none)."""
        return self.blurred_tiles / self.tissue_tiles if self.tissue_tiles else 0.0


def focus_map(
    reader: SlideReader,
    *,
    scorer: TileScorer | None = None,
    tile_size_um: float = 128.0,
    mpp: float = DEFAULT_FOCUS_MPP,
    min_tissue_fraction: float = 0.5,
    thumbnail_mpp: float = 8.0,
) -> FocusMap:
    """Score every tissue tile of ``tile_size_um`` um read at ``mpp`` um/px.

    Tissue comes from the AOI thresholds on a ``thumbnail_mpp`` thumbnail;
    a tile is scored when at least ``min_tissue_fraction`` of it is tissue.
    """
    scorer = scorer if scorer is not None else SharpnessScorer()
    if tile_size_um <= 0 or mpp <= 0:
        raise ValueError(f"Invalid focus grid: tile_size_um={tile_size_um}, mpp={mpp}; both must be positive")
    info = reader.info
    thumbnail, actual_thumbnail_mpp = reader.thumbnail(mpp=thumbnail_mpp)
    mask = tissue_mask(thumbnail, brightness_max=TISSUE_BRIGHTNESS_MAX, saturation_min=TISSUE_SATURATION_MIN)
    rows = max(1, math.ceil(info.height * info.mpp / tile_size_um))
    cols = max(1, math.ceil(info.width * info.mpp / tile_size_um))
    grid_rows, grid_cols = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centres_um = np.column_stack([(grid_cols.ravel() + 0.5) * tile_size_um, (grid_rows.ravel() + 0.5) * tile_size_um])
    fractions = tissue_fractions(centres_um, tile_size_um=tile_size_um, mask=mask, mask_mpp=actual_thumbnail_mpp)
    tissue = (fractions >= min_tissue_fraction).reshape(rows, cols)

    scores = np.full((rows, cols), np.nan, dtype=np.float64)
    blurred = np.zeros((rows, cols), dtype=bool)
    side_px = SlidePixels(tile_size_um / info.mpp)
    out_px = max(1, round(tile_size_um / mpp))
    for row, col in zip(*np.nonzero(tissue)):
        tile = reader.read_region(
            x=SlidePixels(col * side_px),
            y=SlidePixels(row * side_px),
            width=side_px,
            height=side_px,
            out_width=out_px,
            out_height=out_px,
        )
        scores[row, col] = scorer.score(tile)
        blurred[row, col] = scorer.is_blurred(scores[row, col])
    threshold = float(getattr(scorer, "threshold", float("nan")))
    result = FocusMap(
        scores=scores, blurred=blurred, tissue=tissue, tile_size_um=float(tile_size_um), mpp=float(mpp),
        scorer=scorer.name, threshold=threshold,
    )
    log.info(
        "%s: focus %s on %d tissue tiles, %d blurred (%.1f%%)",
        info.path, scorer.name, result.tissue_tiles, result.blurred_tiles, 100 * result.blurred_fraction,
    )
    return result


def assess_focus(result: FocusMap, *, max_blurred_fraction: float = 0.1) -> dict[str, Any]:
    """Return the slide's focus QC fields; status ``out_of_focus`` when too many tissue tiles are blurred."""
    if not 0 <= max_blurred_fraction <= 1:
        raise ValueError(f"Invalid max_blurred_fraction={max_blurred_fraction}: must be in 0..1")
    status, reason = "ok", ""
    if result.blurred_fraction > max_blurred_fraction:
        status = "out_of_focus"
        reason = (
            f"{result.blurred_tiles} of {result.tissue_tiles} tissue tiles ({100 * result.blurred_fraction:.1f}%) "
            f"are blurred by {result.scorer} (threshold {result.threshold:.3g} at {result.mpp:g} um/px), "
            f"above the {100 * max_blurred_fraction:.1f}% limit; rescan the slide or review focus_heatmap.png"
        )
    return {
        "status": status,
        "reason": reason,
        "focus_scorer": result.scorer,
        "focus_threshold": result.threshold,
        "focus_mpp": result.mpp,
        "focus_tile_size_um": result.tile_size_um,
        "tissue_tiles": result.tissue_tiles,
        "blurred_tiles": result.blurred_tiles,
        "blurred_fraction": result.blurred_fraction,
    }


def heatmap_image(result: FocusMap, *, pixels_per_tile: int = 8) -> np.ndarray:
    """Render the focus map as RGB uint8: blurred tiles red, sharp tiles green, no tissue white.

    Colour varies with log2(score / threshold), clipped to +-2, so the
    scale is centred on the blur threshold for every measure.
    """
    import matplotlib

    colormap = matplotlib.colormaps["RdYlGn"]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.log2(result.scores / result.threshold)
    if result.scorer == "deepfocus":
        relative = -relative  # higher out-of-focus probability is worse
    position = np.clip((np.nan_to_num(relative, nan=0.0) + 2.0) / 4.0, 0.0, 1.0)
    image = (colormap(position)[:, :, :3] * 255).astype(np.uint8)
    image[~result.tissue] = 255
    return np.repeat(np.repeat(image, pixels_per_tile, axis=0), pixels_per_tile, axis=1)


def write_heatmap(result: FocusMap, destination: Path, *, pixels_per_tile: int = 8) -> None:
    """Write the focus heatmap PNG atomically."""
    image = heatmap_image(result, pixels_per_tile=pixels_per_tile)
    with atomic_path(destination) as temporary:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]):
            raise OSError(f"Failed to write the focus heatmap {destination}")


def make_scorer(params: FocusParams) -> TileScorer:
    """Build the tile scorer that ``params`` requests, loading the DeepFocus checkpoint if one is set."""
    if params.measure == "deepfocus":
        assert params.checkpoint is not None
        probability = params.blur_threshold if params.blur_threshold is not None else 0.5
        return DeepFocusScorer(load_deepfocus(params.checkpoint), blur_probability=probability)
    return SharpnessScorer(measure=params.measure, blur_threshold=params.blur_threshold)


def write_scores(result: FocusMap, destination: Path) -> None:
    """Write the focus map arrays (scores, blurred, tissue) and its settings as a compressed NPZ."""
    with atomic_path(destination) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(
            handle, scores=result.scores, blurred=result.blurred, tissue=result.tissue,
            tile_size_um=result.tile_size_um, mpp=result.mpp, threshold=result.threshold, scorer=result.scorer,
        )
