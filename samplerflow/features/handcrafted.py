"""Weight-free H&E tile features: stain, colour and texture statistics.

Every value is a deterministic function of the tile's pixels, computed on
the CPU, so the demo gives meaningful SAMPLER vectors without downloads.

Groups (in output order):

- Colour deconvolution into haematoxylin, eosin and DAB optical densities
  (Ruifrok and Johnston's stain vectors, scikit-image ``rgb2hed``): mean,
  standard deviation and 10th/50th/90th percentiles per stain.
- Haematoxylin-rich area: fraction of pixels above a fixed haematoxylin
  density, and the count and mean area (px) of connected haematoxylin blobs,
  a proxy for nuclei.
- Colour: 8-bin histograms of R, G and B; mean and standard deviation of
  HSV saturation and value; mean optical density; fraction of non-background
  pixels.
- Texture: grey-level co-occurrence statistics (contrast, dissimilarity,
  homogeneity, energy, correlation, ASM; 32 grey levels, distances 1 and 3 px,
  averaged over four angles); uniform LBP histogram (8 neighbours, radius 1);
  mean and standard deviation of the Sobel gradient magnitude.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2hed
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.measure import label as label_components

from samplerflow.features.registry import Backbone, register

GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
GLCM_DISTANCES = (1, 3)
GLCM_LEVELS = 32
LBP_POINTS = 8
STAIN_PERCENTILES = (10, 50, 90)
HISTOGRAM_BINS = 8
# Haematoxylin optical density above which a pixel counts as nuclear-stained,
# on rgb2hed's scale (typical H&E nuclei reach 0.05-0.2).
HEMATOXYLIN_THRESHOLD = 0.05
BACKGROUND_GREY = 220


def _labels() -> list[str]:
    names: list[str] = []
    for stain in ("hematoxylin", "eosin", "dab"):
        names += [f"{stain}_mean", f"{stain}_std"] + [f"{stain}_p{p}" for p in STAIN_PERCENTILES]
    names += ["hematoxylin_area_fraction", "hematoxylin_blob_count", "hematoxylin_blob_mean_area_px"]
    for channel in "rgb":
        names += [f"{channel}_hist{index}" for index in range(HISTOGRAM_BINS)]
    names += ["saturation_mean", "saturation_std", "value_mean", "value_std", "optical_density_mean", "tissue_fraction"]
    for distance in GLCM_DISTANCES:
        names += [f"glcm_{prop.lower()}_d{distance}" for prop in GLCM_PROPERTIES]
    names += [f"lbp_uniform_{index}" for index in range(LBP_POINTS + 2)]
    names += ["sobel_mean", "sobel_std"]
    return names


LABELS = _labels()


def handcrafted_features(tile: np.ndarray) -> np.ndarray:
    """Compute the feature vector of one RGB uint8 tile (see the module docstring)."""
    values: list[float] = []
    hed = rgb2hed(tile)
    for channel in range(3):
        stain = hed[:, :, channel]
        values += [float(stain.mean()), float(stain.std())]
        values += [float(v) for v in np.percentile(stain, STAIN_PERCENTILES)]

    nuclear = hed[:, :, 0] > HEMATOXYLIN_THRESHOLD
    _, count = label_components(nuclear, return_num=True, connectivity=2)
    values += [float(nuclear.mean()), float(count), float(nuclear.sum() / count) if count else 0.0]

    for channel in range(3):
        histogram, _ = np.histogram(tile[:, :, channel], bins=HISTOGRAM_BINS, range=(0, 256))
        values += list((histogram / histogram.sum()).astype(float))
    hsv = cv2.cvtColor(tile, cv2.COLOR_RGB2HSV).astype(np.float64) / 255.0
    values += [float(hsv[:, :, 1].mean()), float(hsv[:, :, 1].std()), float(hsv[:, :, 2].mean()), float(hsv[:, :, 2].std())]
    optical_density = -np.log((tile.astype(np.float64) + 1.0) / 256.0)
    grey = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)
    values += [float(optical_density.mean()), float((grey < BACKGROUND_GREY).mean())]

    quantized = (grey.astype(np.uint16) * GLCM_LEVELS // 256).astype(np.uint8)
    matrix = graycomatrix(
        quantized, distances=list(GLCM_DISTANCES), angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
        levels=GLCM_LEVELS, symmetric=True, normed=True,
    )
    for distance_index in range(len(GLCM_DISTANCES)):
        for prop in GLCM_PROPERTIES:
            # Flat tiles have undefined correlation (0/0); report 0 instead of NaN.
            value = np.nan_to_num(graycoprops(matrix, prop)[distance_index].mean(), nan=0.0)
            values.append(float(value))

    lbp = local_binary_pattern(grey, LBP_POINTS, 1, method="uniform")
    histogram, _ = np.histogram(lbp, bins=LBP_POINTS + 2, range=(0, LBP_POINTS + 2))
    values += list((histogram / histogram.sum()).astype(float))

    grey_float = grey.astype(np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(grey_float, cv2.CV_32F, 1, 0), cv2.Sobel(grey_float, cv2.CV_32F, 0, 1))
    values += [float(magnitude.mean()), float(magnitude.std())]
    return np.asarray(values, dtype=np.float32)


@register("handcrafted")
class HandcraftedBackbone(Backbone):
    """Stain, colour and texture statistics; no weights, CPU only."""

    name = "handcrafted"
    input_size = 224
    dim = len(LABELS)

    def prepare(self, tile: np.ndarray) -> np.ndarray:
        return handcrafted_features(tile)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32)

    def feature_labels(self) -> list[str]:
        return list(LABELS)
