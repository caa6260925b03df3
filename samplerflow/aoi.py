"""Automatic object identification (AOI): tissue objects on a slide thumbnail.

File contract, per sample (all written atomically into one folder):

- ``thumbnail.png``: RGB thumbnail at ``thumbnail_mpp`` um/px (never finer
  than level 0; the exact value is in ``roi.json``).
- ``tissue_mask.png``: 8-bit mask on the thumbnail grid, 255 where a pixel is
  tissue by the brightness and saturation thresholds.
- ``overlay.png``: the thumbnail with each object's box and number drawn.
- ``roi.json``: slide geometry and the objects, each with ``location``
  [x, y] (top-left corner) and ``size`` [w, h] as fractions (0..1) of the
  slide's level-0 width and height, plus tissue area in um^2 and tissue
  pixel count on the thumbnail.

Tissue pixels are grouped into objects (separate sections and replicates)
with DBSCAN on their coordinates in micrometres. An ROI JSON supplied in the
samplesheet replaces detection; the mask is still computed for tiling.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from samplerflow.errors import SampleError
from samplerflow.io import atomic_path, write_json
from samplerflow.slide import SlideReader

log = logging.getLogger(__name__)

ROI_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class AoiParams:
    """Tissue detection settings; lengths in micrometres, intensities in 0..255."""

    thumbnail_mpp: float = 8.0
    brightness_max: int = 220
    saturation_min: int = 20
    eps_um: float = 50.0
    min_samples: int = 10
    min_object_area_um2: float = 20000.0
    padding_um: float = 100.0
    max_points: int = 200_000

    def __post_init__(self) -> None:
        checks = {
            "thumbnail_mpp": self.thumbnail_mpp > 0,
            "brightness_max": 0 < self.brightness_max <= 255,
            "saturation_min": 0 <= self.saturation_min < 255,
            "eps_um": self.eps_um > 0,
            "min_samples": self.min_samples >= 1,
            "min_object_area_um2": self.min_object_area_um2 >= 0,
            "padding_um": self.padding_um >= 0,
            "max_points": self.max_points >= 1000,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"Invalid AOI parameter {name}={getattr(self, name)!r}")


def tissue_mask(rgb: np.ndarray, *, brightness_max: int, saturation_min: int) -> np.ndarray:
    """Return a boolean mask of pixels darker than ``brightness_max`` and more saturated than ``saturation_min``."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return (grey < brightness_max) & (hsv[:, :, 1] > saturation_min)


def cluster_tissue(mask: np.ndarray, *, pixel_um: float, params: AoiParams) -> np.ndarray:
    """Label tissue pixels with DBSCAN object ids (0, 1, ...); -1 for background and noise.

    When the mask has more tissue pixels than ``max_points``, DBSCAN runs on
    a coarser grid (max-pooled blocks) and each pixel takes its block's label.
    """
    from sklearn.cluster import DBSCAN  # imported here: scikit-learn is slow to import for other commands

    labels = np.full(mask.shape, -1, dtype=np.int32)
    if not mask.any():
        return labels
    factor = 1
    while int(_pool_max(mask, factor).sum()) > params.max_points:
        factor *= 2
    pooled = _pool_max(mask, factor)
    rows, cols = np.nonzero(pooled)
    coordinates_um = np.column_stack([rows, cols]).astype(np.float64) * pixel_um * factor
    # Pooling widens the grid, so eps must at least reach the next block.
    eps = max(params.eps_um, 1.5 * pixel_um * factor)
    min_samples = max(1, round(params.min_samples / factor**2))
    point_labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(coordinates_um)
    pooled_labels = np.full(pooled.shape, -1, dtype=np.int32)
    pooled_labels[rows, cols] = point_labels
    expanded = np.repeat(np.repeat(pooled_labels, factor, axis=0), factor, axis=1)
    labels[:] = np.where(mask, expanded[: mask.shape[0], : mask.shape[1]], -1)
    return labels


def _pool_max(mask: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return mask
    height = -(-mask.shape[0] // factor) * factor
    width = -(-mask.shape[1] // factor) * factor
    padded = np.zeros((height, width), dtype=bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded.reshape(height // factor, factor, width // factor, factor).any(axis=(1, 3))


def objects_from_labels(
    labels: np.ndarray, *, pixel_um: float, slide_width_um: float, slide_height_um: float, params: AoiParams
) -> list[dict[str, Any]]:
    """Turn pixel labels into padded, normalized object boxes, numbered top to bottom, left to right."""
    objects = []
    for label in np.unique(labels[labels >= 0]):
        rows, cols = np.nonzero(labels == label)
        pixel_count = int(rows.size)
        area_um2 = pixel_count * pixel_um**2
        if area_um2 < params.min_object_area_um2:
            continue
        x0_um = cols.min() * pixel_um - params.padding_um
        y0_um = rows.min() * pixel_um - params.padding_um
        x1_um = (cols.max() + 1) * pixel_um + params.padding_um
        y1_um = (rows.max() + 1) * pixel_um + params.padding_um
        x0, y0 = max(0.0, x0_um / slide_width_um), max(0.0, y0_um / slide_height_um)
        x1, y1 = min(1.0, x1_um / slide_width_um), min(1.0, y1_um / slide_height_um)
        objects.append(
            {
                "location": [round(x0, 6), round(y0, 6)],
                "size": [round(x1 - x0, 6), round(y1 - y0, 6)],
                "area_um2": round(area_um2, 1),
                "pixel_count": pixel_count,
            }
        )
    objects.sort(key=lambda item: (round(item["location"][1], 2), item["location"][0]))
    for number, item in enumerate(objects, start=1):
        item["id"] = number
    return objects


def load_roi_objects(path: Path) -> list[dict[str, Any]]:
    """Load objects from a curated ROI JSON: a full ``roi.json`` or a bare list of objects."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SampleError("invalid_roi", f"{path}: cannot read the ROI JSON ({error})") from error
    items = payload.get("objects") if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise SampleError(
            "invalid_roi",
            f"{path}: expected a list of objects (or {{\"objects\": [...]}}) each with "
            "'location' [x, y] and 'size' [w, h] in 0..1",
        )
    objects = []
    for number, item in enumerate(items, start=1):
        try:
            x, y = (float(value) for value in item["location"])
            w, h = (float(value) for value in item["size"])
        except (KeyError, TypeError, ValueError) as error:
            raise SampleError(
                "invalid_roi", f"{path}: object {number} needs 'location' [x, y] and 'size' [w, h] ({error})"
            ) from error
        if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1 and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6):
            raise SampleError(
                "invalid_roi",
                f"{path}: object {number} location {[x, y]} size {[w, h]} is outside the slide; "
                "values are fractions of the slide's width and height (0..1)",
            )
        objects.append({"id": int(item.get("id", number)), "location": [x, y], "size": [w, h]})
    return objects


def detect_objects(
    reader: SlideReader, outdir: Path, *, params: AoiParams, roi_path: Path | None = None
) -> dict[str, Any]:
    """Run AOI on one slide and write the per-sample files; return the ``roi.json`` payload.

    Raises :class:`SampleError` with status ``no_tissue`` when no object is
    found; the thumbnail, mask and overlay are written first for review.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    info = reader.info
    thumbnail, thumbnail_mpp = reader.thumbnail(mpp=params.thumbnail_mpp)
    mask = tissue_mask(thumbnail, brightness_max=params.brightness_max, saturation_min=params.saturation_min)
    slide_width_um = info.width * info.mpp
    slide_height_um = info.height * info.mpp

    if roi_path is not None:
        objects = load_roi_objects(roi_path)
        _count_mask_in_boxes(objects, mask, thumbnail_mpp)
        source = "manual"
        log.info("%s: %d objects from curated ROI %s", info.path, len(objects), roi_path)
    else:
        labels = cluster_tissue(mask, pixel_um=thumbnail_mpp, params=params)
        objects = objects_from_labels(
            labels,
            pixel_um=thumbnail_mpp,
            slide_width_um=slide_width_um,
            slide_height_um=slide_height_um,
            params=params,
        )
        source = "detected"
        log.info("%s: tissue objects detected: %d", info.path, len(objects))

    _write_png(outdir / "thumbnail.png", thumbnail)
    _write_png(outdir / "tissue_mask.png", mask.astype(np.uint8) * 255)
    _write_png(outdir / "overlay.png", draw_overlay(thumbnail, objects))
    payload = {
        "schema_version": ROI_SCHEMA_VERSION,
        "source": source,
        "slide": info.to_dict(),
        "thumbnail": {"mpp": thumbnail_mpp, "width": int(thumbnail.shape[1]), "height": int(thumbnail.shape[0])},
        "parameters": {key: value for key, value in params.__dict__.items()},
        "objects": objects,
    }
    write_json(outdir / "roi.json", payload)
    if not objects:
        raise SampleError(
            "no_tissue",
            f"{info.path}: no tissue object found on the {thumbnail_mpp:.2f} um/px thumbnail "
            f"(brightness < {params.brightness_max}, saturation > {params.saturation_min}, "
            f"objects >= {params.min_object_area_um2:g} um^2; the slide is {slide_width_um:.0f} x "
            f"{slide_height_um:.0f} um); check overlay.png, adjust the AOI "
            "thresholds or supply an ROI JSON in the samplesheet",
        )
    return payload


def _count_mask_in_boxes(objects: list[dict[str, Any]], mask: np.ndarray, thumbnail_mpp: float) -> None:
    height, width = mask.shape
    for item in objects:
        x0 = int(item["location"][0] * width)
        y0 = int(item["location"][1] * height)
        x1 = int(np.ceil((item["location"][0] + item["size"][0]) * width))
        y1 = int(np.ceil((item["location"][1] + item["size"][1]) * height))
        count = int(mask[y0:y1, x0:x1].sum())
        item["pixel_count"] = count
        item["area_um2"] = round(count * thumbnail_mpp**2, 1)


def draw_overlay(thumbnail: np.ndarray, objects: list[dict[str, Any]]) -> np.ndarray:
    """Draw each object's box and number on a copy of the thumbnail."""
    overlay = thumbnail.copy()
    height, width = overlay.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    for item in objects:
        x0 = int(item["location"][0] * width)
        y0 = int(item["location"][1] * height)
        x1 = int((item["location"][0] + item["size"][0]) * width) - 1
        y1 = int((item["location"][1] + item["size"][1]) * height) - 1
        cv2.rectangle(overlay, (x0, y0), (x1, y1), (0, 160, 0), thickness)
        cv2.putText(
            overlay, str(item["id"]), (x0 + 2 * thickness, y0 + 12 * thickness),
            cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 200), thickness, cv2.LINE_AA,
        )
    return overlay


def _write_png(destination: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    with atomic_path(destination) as temporary:
        if not cv2.imwrite(str(temporary), image):
            raise OSError(f"Failed to write {destination}")


def read_mask(path: Path) -> np.ndarray:
    """Read ``tissue_mask.png`` as a boolean array."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise SampleError("invalid_mask", f"{path}: cannot read the tissue mask PNG; rerun the aoi stage")
    return mask > 127
