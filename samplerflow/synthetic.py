"""Tiny synthetic H&E-like slides for tests, demos and the Nextflow test profile.

Each slide is a pyramidal tiled TIFF (JPEG tiles, levels halving in
successive pages) with its resolution in the TIFF resolution tags, which
both OpenSlide and tifffile read. Tissue objects are pink eosin-stained
ellipses holding haematoxylin-stained nuclei of one of two kinds:

- ``round``: dense, small round nuclei (a small-round-cell pattern);
- ``spindle``: sparser, elongated nuclei aligned in fascicles.

Geometry is drawn in micrometres from a seeded generator, so slides of the
same seed at different mpp show the same tissue at different resolutions.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from samplerflow.io import atomic_path

log = logging.getLogger(__name__)

KINDS = ("round", "spindle")
BACKGROUND = np.array([243, 241, 246], dtype=np.float32)
EOSIN = np.array([232, 160, 200], dtype=np.float32)
HEMATOXYLIN = np.array([85, 55, 150], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticSpec:
    """Size, resolution and tissue pattern of one synthetic slide."""

    kind: str = "round"
    width_um: float = 1600.0
    height_um: float = 1200.0
    mpp: float = 0.5
    objects: int = 2
    seed: int = 0
    tile_px: int = 256
    min_level_px: int = 256

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Invalid synthetic kind {self.kind!r}: choose {' or '.join(KINDS)}")
        if self.mpp <= 0 or self.width_um <= 0 or self.height_um <= 0:
            raise ValueError("Synthetic slide size and mpp must be positive")
        if self.objects < 1:
            raise ValueError("A synthetic slide needs at least one tissue object")


def render(spec: SyntheticSpec) -> np.ndarray:
    """Render the level-0 RGB uint8 image of a synthetic slide."""
    rng = np.random.default_rng(spec.seed)
    width = max(1, round(spec.width_um / spec.mpp))
    height = max(1, round(spec.height_um / spec.mpp))

    def px(length_um: float) -> int:
        return max(1, round(length_um / spec.mpp))

    tissue = np.zeros((height, width), dtype=np.uint8)
    # Objects sit side by side, each an ellipse filling most of its column.
    column_um = spec.width_um / spec.objects
    for index in range(spec.objects):
        centre_x = (index + 0.5) * column_um + rng.uniform(-0.05, 0.05) * column_um
        centre_y = spec.height_um / 2 + rng.uniform(-0.05, 0.05) * spec.height_um
        axis_x = column_um * rng.uniform(0.30, 0.42)
        axis_y = spec.height_um * rng.uniform(0.30, 0.42)
        angle = rng.uniform(-20, 20)
        cv2.ellipse(tissue, (px(centre_x), px(centre_y)), (px(axis_x), px(axis_y)), angle, 0, 360, 255, -1)

    nuclei = np.zeros((height, width), dtype=np.uint8)
    area_mm2 = spec.width_um * spec.height_um / 1e6
    if spec.kind == "round":
        count = int(2600 * area_mm2)
    else:
        count = int(1100 * area_mm2)
    xs = rng.uniform(0, spec.width_um, count)
    ys = rng.uniform(0, spec.height_um, count)
    for x_um, y_um in zip(xs, ys):
        x_px, y_px = min(width - 1, px(x_um)), min(height - 1, px(y_um))
        if not tissue[y_px, x_px]:
            continue
        if spec.kind == "round":
            radius = rng.uniform(2.8, 4.2)
            axes = (px(radius), px(radius * rng.uniform(0.85, 1.0)))
            angle = rng.uniform(0, 180)
        else:
            axes = (px(rng.uniform(7.0, 11.0)), px(rng.uniform(1.6, 2.4)))
            # Fascicles: orientation varies slowly across the slide.
            angle = math.degrees(math.sin(x_um / 400.0) + math.cos(y_um / 300.0)) + rng.normal(0, 8)
        intensity = int(rng.uniform(170, 255))
        cv2.ellipse(nuclei, (x_px, y_px), axes, angle, 0, 360, intensity, -1)

    tissue_f = cv2.GaussianBlur(tissue.astype(np.float32) / 255.0, (0, 0), max(0.5, 4.0 / spec.mpp))
    nuclei_f = cv2.GaussianBlur(nuclei.astype(np.float32) / 255.0, (0, 0), max(0.3, 0.4 / spec.mpp))
    # Stroma texture: fibrillar noise at a few micrometres.
    noise = rng.normal(0, 1, (max(1, height // 8), max(1, width // 8))).astype(np.float32)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    stroma = EOSIN[None, None, :] * (1 + 0.04 * noise[:, :, None])
    image = BACKGROUND[None, None, :] * (1 - tissue_f[:, :, None]) + stroma * tissue_f[:, :, None]
    image = image * (1 - nuclei_f[:, :, None]) + HEMATOXYLIN[None, None, :] * nuclei_f[:, :, None]
    image += rng.normal(0, 2.0, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def write_pyramid_tiff(image: np.ndarray, destination: Path, *, mpp: float, tile_px: int = 256, min_level_px: int = 256) -> None:
    """Write an RGB image as a JPEG-tiled pyramidal TIFF with mpp in the resolution tags."""
    levels = [image]
    while min(levels[-1].shape[:2]) // 2 >= min_level_px:
        previous = levels[-1]
        levels.append(cv2.resize(previous, (previous.shape[1] // 2, previous.shape[0] // 2), interpolation=cv2.INTER_AREA))
    with atomic_path(destination) as temporary, tifffile.TiffWriter(temporary) as writer:
        for index, level in enumerate(levels):
            downsample = image.shape[1] / level.shape[1]
            pixels_per_cm = 1e4 / (mpp * downsample)
            writer.write(
                level,
                tile=(tile_px, tile_px),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 92},
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if index else 0,
                metadata=None,
            )


def write_slide(spec: SyntheticSpec, destination: Path) -> Path:
    """Render and write one synthetic slide."""
    write_pyramid_tiff(render(spec), destination, mpp=spec.mpp, tile_px=spec.tile_px, min_level_px=spec.min_level_px)
    log.info("Wrote synthetic %s slide %s (%.0f x %.0f um at %.3g um/px)", spec.kind, destination, spec.width_um, spec.height_um, spec.mpp)
    return destination


def write_cohort(
    outdir: Path,
    *,
    per_kind: int = 2,
    mpp: float = 0.5,
    width_um: float = 1600.0,
    height_um: float = 1200.0,
    centers: int = 2,
    seed: int = 0,
) -> Path:
    """Write ``per_kind`` slides of each kind and a samplesheet; return the samplesheet path.

    Labels are the kinds; each slide is its own patient; centres alternate.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind_index, kind in enumerate(KINDS):
        for replicate in range(per_kind):
            sample = f"synth_{kind}_{replicate + 1}"
            slide_seed = seed * 1000 + kind_index * 100 + replicate
            spec = SyntheticSpec(kind=kind, width_um=width_um, height_um=height_um, mpp=mpp, seed=slide_seed)
            write_slide(spec, outdir / f"{sample}.tiff")
            rows.append(
                {
                    "sample": sample,
                    "patient": f"patient_{kind}_{replicate + 1}",
                    "image": f"{sample}.tiff",
                    "center": f"center_{(kind_index * per_kind + replicate) % centers + 1}",
                    "label": kind,
                }
            )
    sheet = outdir / "samplesheet.csv"
    with atomic_path(sheet) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sample", "patient", "image", "center", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return sheet
