"""Stain normalization: Macenko and Reinhard, fitted once on a reference image.

Both normalizers follow scikit-learn's pattern: ``fit(reference)`` learns
the target stain appearance and stores it in attributes ending in ``_``;
``transform(tile)`` maps an RGB uint8 tile to that appearance. Tiles with
too little stained tissue (background, very pale tiles) are returned
unchanged, because stain vectors cannot be estimated from them.

- :class:`MacenkoNormalizer` (Macenko et al., "A method for normalizing
  histology slides for quantitative analysis", ISBI 2009): stain vectors
  are the extreme angles of the optical-density (OD) pixels projected onto
  the plane of their two main principal directions; concentrations are
  rescaled so their 99th percentiles match the reference, then rebuilt
  with the reference stain matrix.
- :class:`ReinhardNormalizer` (Reinhard et al., "Color transfer between
  images", IEEE CG&A 2001): per-channel mean and standard deviation in
  CIE L*a*b*, taken over tissue pixels, are matched to the reference.

The default reference is a 224 x 224 px normal colon mucosa tile of the
Kather CRC-VAL-HE-7K set (CC BY 4.0), shipped in ``assets/stain_reference``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from samplerflow.errors import InputError
from samplerflow.io import sha256_file

log = logging.getLogger(__name__)

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "assets" / "stain_reference"
DEFAULT_REFERENCE = REFERENCE_DIR / "CRC-VAL-HE-7K-NORM-TCGA-YLVCMEHK.tif"
# Transmitted light intensity of an empty field, 0..255.
BACKGROUND_INTENSITY = 240.0
# OD (natural log) below which a pixel counts as unstained on every channel.
OD_THRESHOLD = 0.15
# Percentile of the stain angle distribution taken as each extreme stain direction.
ANGLE_PERCENTILE = 1.0
CONCENTRATION_PERCENTILE = 99.0
# A tile needs at least this share of stained pixels to be normalized.
MIN_TISSUE_FRACTION = 0.05
MIN_TISSUE_PIXELS = 100


def load_reference(path: str | Path = DEFAULT_REFERENCE) -> np.ndarray:
    """Read a reference image as RGB uint8 (PNG, JPEG or TIFF)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Stain reference image not found: {path}")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def rgb_to_od(image: np.ndarray) -> np.ndarray:
    """Return the optical density (natural log) of RGB uint8 pixels, same shape, float64."""
    density = -np.log((image.astype(np.float64) + 1.0) / BACKGROUND_INTENSITY)
    return np.maximum(density, 0.0)


def od_to_rgb(density: np.ndarray) -> np.ndarray:
    """Return RGB uint8 pixels for optical densities (inverse of :func:`rgb_to_od`)."""
    return np.clip(BACKGROUND_INTENSITY * np.exp(-density) - 1.0 + 0.5, 0, 255).astype(np.uint8)


def stained_mask(image: np.ndarray) -> np.ndarray:
    """Return the (H, W) mask of pixels with OD above :data:`OD_THRESHOLD` on every channel."""
    return (rgb_to_od(image) > OD_THRESHOLD).all(axis=2)


def _has_enough_tissue(mask: np.ndarray) -> bool:
    return int(mask.sum()) >= max(MIN_TISSUE_PIXELS, MIN_TISSUE_FRACTION * mask.size)


def macenko_stain_matrix(image: np.ndarray) -> np.ndarray:
    """Estimate the unit H&E stain vectors of an RGB uint8 image as a (2, 3) OD matrix.

    Row 0 is haematoxylin, row 1 eosin: haematoxylin absorbs more red
    light, so its vector has the larger red component. Raises ValueError
    when the image has too little stained tissue.
    """
    mask = stained_mask(image)
    if not _has_enough_tissue(mask):
        raise ValueError(f"Too little stained tissue to estimate stain vectors ({int(mask.sum())} pixels)")
    density = rgb_to_od(image)[mask]
    _, eigenvectors = np.linalg.eigh(np.cov(density, rowvar=False))
    # eigh sorts eigenvalues ascending: the last two columns span the stain plane.
    plane = eigenvectors[:, 1:3]
    # Orient the basis so the OD pixels, which are all positive, project positively.
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    projected = density @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    stains = np.array([first, second] if first[0] > second[0] else [second, first])
    return stains / np.linalg.norm(stains, axis=1, keepdims=True)


def stain_concentrations(image: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """Return per-pixel stain concentrations (H*W, 2) by least squares on OD."""
    density = rgb_to_od(image).reshape(-1, 3)
    concentrations, *_ = np.linalg.lstsq(stain_matrix.T, density.T, rcond=None)
    return concentrations.T


class MacenkoNormalizer:
    """Macenko stain normalization; fit on one reference, transform many tiles."""

    def fit(self, reference: np.ndarray) -> MacenkoNormalizer:
        """Learn the reference stain matrix and 99th-percentile concentrations."""
        _check_rgb(reference)
        self.stain_matrix_ = macenko_stain_matrix(reference)
        concentrations = stain_concentrations(reference, self.stain_matrix_)
        self.max_concentrations_ = np.percentile(concentrations, CONCENTRATION_PERCENTILE, axis=0)
        log.debug("Macenko reference stains %s, max concentrations %s", self.stain_matrix_, self.max_concentrations_)
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        """Return ``image`` with the reference stains; pale or background tiles are returned unchanged."""
        _check_rgb(image)
        if not hasattr(self, "stain_matrix_"):
            raise RuntimeError("MacenkoNormalizer is not fitted: call fit(reference) first")
        if not _has_enough_tissue(stained_mask(image)):
            return image
        try:
            stain_matrix = macenko_stain_matrix(image)
        except (ValueError, np.linalg.LinAlgError) as error:
            log.debug("Macenko: tile returned unchanged (%s)", error)
            return image
        concentrations = stain_concentrations(image, stain_matrix)
        max_concentrations = np.percentile(concentrations, CONCENTRATION_PERCENTILE, axis=0)
        if (max_concentrations <= 1e-6).any():
            return image
        concentrations = concentrations * (self.max_concentrations_ / max_concentrations)
        density = concentrations @ self.stain_matrix_
        return od_to_rgb(density).reshape(image.shape)


class ReinhardNormalizer:
    """Reinhard colour transfer in L*a*b*; fit on one reference, transform many tiles."""

    def fit(self, reference: np.ndarray) -> ReinhardNormalizer:
        """Learn the reference L*a*b* mean and standard deviation over stained pixels."""
        _check_rgb(reference)
        mask = stained_mask(reference)
        if not _has_enough_tissue(mask):
            raise ValueError("The Reinhard reference has too little stained tissue; choose a tissue-filled tile")
        self.mean_, self.std_ = _lab_statistics(reference, mask)
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        """Return ``image`` with the reference colour statistics; pale or background tiles are returned unchanged."""
        _check_rgb(image)
        if not hasattr(self, "mean_"):
            raise RuntimeError("ReinhardNormalizer is not fitted: call fit(reference) first")
        mask = stained_mask(image)
        if not _has_enough_tissue(mask):
            return image
        mean, std = _lab_statistics(image, mask)
        lab = rgb2lab(image)
        lab = (lab - mean) / np.maximum(std, 1e-6) * self.std_ + self.mean_
        with warnings.catch_warnings():
            # Shifted L*a*b* values can fall outside sRGB; lab2rgb clips them and warns.
            warnings.filterwarnings("ignore", message=".*negative Z values.*", category=UserWarning)
            rgb = lab2rgb(lab)
        return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _lab_statistics(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = rgb2lab(image)[mask]
    return pixels.mean(axis=0), pixels.std(axis=0)


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"Expected an RGB uint8 image (H, W, 3), got dtype {image.dtype} and shape {image.shape}")


def default_normalizer(method: str = "macenko") -> MacenkoNormalizer | ReinhardNormalizer:
    """Return a normalizer of ``method`` ('macenko' or 'reinhard') fitted on the shipped reference tile."""
    normalizers = {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer}
    if method not in normalizers:
        raise InputError(f"Unknown stain normalization {method!r}: choose macenko or reinhard")
    return normalizers[method]().fit(load_reference())


STAIN_METHODS = ("none", "macenko", "reinhard")


@dataclass(frozen=True)
class StainParams:
    """Stain normalization of tiles before feature extraction: method and reference image."""

    method: str = "none"
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.method not in STAIN_METHODS:
            raise InputError(f"Unknown stain normalization {self.method!r}: choose one of {', '.join(STAIN_METHODS)}")
        if self.reference is not None and self.method == "none":
            raise InputError("--stain-reference needs a method: add --stain-norm macenko or --stain-norm reinhard")
        if self.reference is not None and not Path(self.reference).expanduser().is_file():
            raise InputError(f"Stain reference image not found: {self.reference}; pass an existing PNG, JPEG or TIFF tile")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def reference_path(self) -> Path:
        """Return the reference image in use (the shipped Kather tile unless one was given)."""
        return Path(self.reference).expanduser() if self.reference else DEFAULT_REFERENCE

    def fitted(self) -> MacenkoNormalizer | ReinhardNormalizer | None:
        """Return the normalizer fitted on the reference, or None when normalization is off."""
        if not self.enabled:
            return None
        normalizers = {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer}
        reference = self.reference_path()
        try:
            return normalizers[self.method]().fit(load_reference(reference))
        except ValueError as error:
            raise InputError(f"{reference}: cannot fit {self.method} stain normalization ({error}); choose a tissue-filled reference tile") from error

    def provenance(self) -> dict[str, str]:
        """Return the method, reference path and reference checksum for QC and feature files."""
        if not self.enabled:
            return {"method": "none"}
        reference = self.reference_path()
        return {"method": self.method, "reference": str(reference), "reference_sha256": sha256_file(reference)}
