"""Nuclear morphometry per tile: classical segmentation of haematoxylin-stained nuclei.

Steps, for one RGB uint8 tile at a known resolution (um/px):

1. Haematoxylin optical density by colour deconvolution with Ruifrok and
   Johnston's H&E-DAB stain vectors (scikit-image ``rgb2hed``), smoothed
   with a Gaussian of ``smoothing_um``.
2. Foreground: haematoxylin above Otsu's threshold of the tile, and never
   below ``min_hematoxylin`` (so a tile without nuclei does not get a
   threshold inside its stroma); holes filled.
3. Touching nuclei are split by a watershed on the negated Euclidean
   distance transform, seeded at distance maxima at least
   ``min_separation_um`` apart.
4. Objects outside ``min_area_um2``..``max_area_um2`` are dropped.

Features (in output order, see :data:`LABELS`): nucleus count; density in
nuclei per mm^2 of tile area; mean and standard deviation of nucleus area
in um^2; mean eccentricity (0 for a circle); mean solidity (area over
convex hull area); mean haematoxylin optical density inside nuclei
(``rgb2hed`` scale). Tiles without nuclei give a count and density of 0
and 0 for the other features.

The ``nuclei`` backbone gets tiles already resized to ``input_size``
(256 px), so their resolution is the tile's size in micrometres times its
scale, divided by 256. Feature extraction passes that value to
:meth:`NucleiBackbone.prepare_at` for every scale, so areas and densities
are in real units at every field of view (0.5 um/px for a 128 um base
tile, 2 um/px for its 4x field of view, where small nuclei span only a
few pixels). :meth:`NucleiBackbone.prepare` alone assumes the ``mpp`` the
backbone was constructed with (0.5 um/px by default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import regionprops
from skimage.segmentation import watershed

from samplerflow.features.registry import Backbone, register

log = logging.getLogger(__name__)

LABELS = [
    "nucleus_count",
    "nucleus_density_per_mm2",
    "nucleus_area_mean_um2",
    "nucleus_area_sd_um2",
    "nucleus_eccentricity_mean",
    "nucleus_solidity_mean",
    "nucleus_hematoxylin_mean",
]
DEFAULT_INPUT_MPP = 0.5
INPUT_SIZE = 256


@dataclass(frozen=True)
class NucleusParams:
    """Segmentation settings; lengths in um, areas in um^2, intensities in haematoxylin OD."""

    smoothing_um: float = 1.0
    min_hematoxylin: float = 0.05
    min_separation_um: float = 3.0
    min_area_um2: float = 10.0
    max_area_um2: float = 400.0

    def __post_init__(self) -> None:
        if self.smoothing_um < 0 or self.min_hematoxylin < 0:
            raise ValueError("smoothing_um and min_hematoxylin must be >= 0")
        if self.min_separation_um <= 0:
            raise ValueError(f"Invalid min_separation_um={self.min_separation_um}: must be positive")
        if not 0 <= self.min_area_um2 < self.max_area_um2:
            raise ValueError(
                f"Invalid nucleus area range {self.min_area_um2}..{self.max_area_um2} um^2: need 0 <= min < max"
            )


def hematoxylin_channel(tile: np.ndarray) -> np.ndarray:
    """Return the haematoxylin optical density of an RGB uint8 tile as float (H, W)."""
    return rgb2hed(tile)[:, :, 0]


def segment_nuclei(tile: np.ndarray, *, mpp: float, params: NucleusParams | None = None) -> np.ndarray:
    """Return an int32 label image of the nuclei of an RGB uint8 tile at ``mpp`` um/px (0 is background)."""
    params = params or NucleusParams()
    if mpp <= 0:
        raise ValueError(f"Invalid mpp={mpp}: must be positive (um per pixel of the tile)")
    hematoxylin = hematoxylin_channel(tile)
    if params.smoothing_um > 0:
        hematoxylin = ndimage.gaussian_filter(hematoxylin, params.smoothing_um / mpp)
    if float(hematoxylin.max() - hematoxylin.min()) < 1e-6:
        return np.zeros(hematoxylin.shape, dtype=np.int32)
    threshold = max(float(threshold_otsu(hematoxylin)), params.min_hematoxylin)
    foreground = ndimage.binary_fill_holes(hematoxylin > threshold)
    min_area_px = params.min_area_um2 / mpp**2
    components, count = ndimage.label(foreground)
    if count == 0:
        return np.zeros(hematoxylin.shape, dtype=np.int32)
    sizes = np.bincount(components.ravel())
    foreground &= sizes[components] >= min_area_px

    distance = ndimage.distance_transform_edt(foreground)
    min_distance_px = max(1, round(params.min_separation_um / mpp))
    peaks = peak_local_max(
        distance, min_distance=min_distance_px, labels=components * foreground, exclude_border=False
    )
    markers = np.zeros(distance.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=foreground)

    max_area_px = params.max_area_um2 / mpp**2
    areas = np.bincount(labels.ravel())
    keep = (areas >= min_area_px) & (areas <= max_area_px)
    keep[0] = False
    labels[~keep[labels]] = 0
    return labels.astype(np.int32)


def nuclear_features(tile: np.ndarray, *, mpp: float, params: NucleusParams | None = None) -> np.ndarray:
    """Compute the :data:`LABELS` features of one RGB uint8 tile at ``mpp`` um/px, as float32."""
    labels = segment_nuclei(tile, mpp=mpp, params=params)
    hematoxylin = hematoxylin_channel(tile)
    regions = regionprops(labels, intensity_image=hematoxylin)
    tile_area_mm2 = tile.shape[0] * tile.shape[1] * (mpp / 1000.0) ** 2
    count = len(regions)
    if count == 0:
        return np.zeros(len(LABELS), dtype=np.float32)
    areas_um2 = np.array([region.area for region in regions], dtype=np.float64) * mpp**2
    values = [
        float(count),
        count / tile_area_mm2,
        float(areas_um2.mean()),
        float(areas_um2.std()),
        float(np.mean([region.eccentricity for region in regions])),
        float(np.mean([region.solidity for region in regions])),
        float(np.mean([region.intensity_mean for region in regions])),
    ]
    return np.asarray(values, dtype=np.float32)


@register("nuclei")
class NucleiBackbone(Backbone):
    """Nuclear count, density, size, shape and haematoxylin statistics; no weights, CPU only."""

    name = "nuclei"
    input_size = INPUT_SIZE
    dim = len(LABELS)

    def __init__(self, *, mpp: float = DEFAULT_INPUT_MPP, params: NucleusParams | None = None) -> None:
        super().__init__()
        if mpp <= 0:
            raise ValueError(f"Invalid mpp={mpp}: must be the tile's um per pixel after resizing to {INPUT_SIZE} px")
        self.mpp = float(mpp)
        self.params = params or NucleusParams()
        self.provenance = {"weights": "none", "input_mpp": "tile_size_um * scale / input_size"}

    def prepare(self, tile: np.ndarray) -> np.ndarray:
        return nuclear_features(tile, mpp=self.mpp, params=self.params)

    def prepare_at(self, tile: np.ndarray, *, mpp: float) -> np.ndarray:
        return nuclear_features(tile, mpp=mpp, params=self.params)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32)

    def feature_labels(self) -> list[str]:
        return list(LABELS)
