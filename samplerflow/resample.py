"""Resolution standardization: present every slide at one target resolution.

Slides from different scanners come at different microns per pixel (mpp),
typically 0.25 um/px (40x) or 0.5 um/px (20x). :class:`ResampledSlideReader`
wraps any :class:`~samplerflow.slide.SlideReader` so that its level 0 is a
virtual grid at ``target_mpp``: a tile of a fixed size in micrometres then
spans the same number of pixels on every slide, and pixels are resampled
from the source pyramid with area interpolation (an anti-aliasing box
filter) when shrinking and bilinear interpolation when enlarging.

The scale factor is ``source_mpp / target_mpp``: output pixels per source
level-0 pixel (0.5 when a 0.25 um/px slide is shown at 0.5 um/px).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from samplerflow.errors import InputError
from samplerflow.slide import SlideReader, open_slide, resize_area
from samplerflow.units import MicronsPerPixel, SlidePixels, is_plausible_mpp

log = logging.getLogger(__name__)

DEFAULT_TARGET_MPP = MicronsPerPixel(0.25)
"""Target resolution of the reference SAMPLER pipeline, in um/px."""


def scale_factor(*, source_mpp: float, target_mpp: float) -> float:
    """Return output pixels per source pixel for resampling ``source_mpp`` to ``target_mpp``."""
    for name, value in (("source_mpp", source_mpp), ("target_mpp", target_mpp)):
        if not is_plausible_mpp(float(value)):
            raise ValueError(f"Invalid {name}={value!r} um/px: expected a scanner resolution such as 0.25 or 0.5")
    return float(source_mpp) / float(target_mpp)


def resample_image(image: np.ndarray, *, source_mpp: float, target_mpp: float) -> tuple[np.ndarray, float]:
    """Resample an RGB uint8 image from ``source_mpp`` to ``target_mpp`` um/px.

    Returns the resampled image and the scale factor. Shrinking uses area
    interpolation, which averages every source pixel under an output pixel,
    so fine texture does not alias into false patterns.
    """
    factor = scale_factor(source_mpp=source_mpp, target_mpp=target_mpp)
    height, width = image.shape[:2]
    out_width = max(1, round(width * factor))
    out_height = max(1, round(height * factor))
    return resize_area(image, out_width, out_height), factor


class ResampledSlideReader(SlideReader):
    """A slide presented with level 0 at ``target_mpp`` um/px.

    Level 0 of this reader is the target grid. Each source pyramid level
    coarser than the target grid is offered as a further level, with its
    downsample expressed relative to the target grid, so thumbnails still
    read from small levels. Reads go through the source's
    :meth:`~samplerflow.slide.SlideReader.read_region`, which picks the
    source level closest to, and not coarser than, the request.
    """

    def __init__(self, source: SlideReader, *, target_mpp: float = DEFAULT_TARGET_MPP) -> None:
        self.source = source
        self.target_mpp = MicronsPerPixel(float(target_mpp))
        self.scale_factor = scale_factor(source_mpp=source.info.mpp, target_mpp=self.target_mpp)
        source_info = source.info
        width = max(1, round(source_info.width * self.scale_factor))
        height = max(1, round(source_info.height * self.scale_factor))
        # Source level i, in target pixels, has downsample d_i * scale_factor.
        downsamples = [1.0]
        dimensions = [(width, height)]
        for level_downsample in source_info.level_downsamples:
            virtual = level_downsample * self.scale_factor
            if virtual > downsamples[-1] * (1 + 1e-6):
                downsamples.append(virtual)
                dimensions.append((max(1, round(width / virtual)), max(1, round(height / virtual))))
        self.info = replace(
            source_info,
            width=width,
            height=height,
            mpp=float(self.target_mpp),
            mpp_source=f"resampled:{source_info.mpp:.4g}->{float(self.target_mpp):.4g} ({source_info.mpp_source})",
            level_dimensions=tuple(dimensions),
            level_downsamples=tuple(downsamples),
        )
        log.info(
            "%s: presenting %.4g um/px as %.4g um/px (scale factor %.4g, %dx%d -> %dx%d px)",
            source_info.path, source_info.mpp, self.target_mpp, self.scale_factor,
            source_info.width, source_info.height, width, height,
        )

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        # One pixel of this level covers `level_downsample / scale_factor` source level-0 pixels.
        source_per_pixel = self.info.level_downsamples[level] / self.scale_factor
        return self.source.read_region(
            x=SlidePixels(x * source_per_pixel),
            y=SlidePixels(y * source_per_pixel),
            width=SlidePixels(width * source_per_pixel),
            height=SlidePixels(height * source_per_pixel),
            out_width=int(width),
            out_height=int(height),
        )

    def read_region(
        self,
        *,
        x: SlidePixels,
        y: SlidePixels,
        width: SlidePixels,
        height: SlidePixels,
        out_width: int,
        out_height: int,
    ) -> np.ndarray:
        # One read of the source, at its own best level: going through this reader's
        # virtual levels would first build an enlarged copy when the target is finer.
        factor = self.scale_factor
        return self.source.read_region(
            x=SlidePixels(float(x) / factor),
            y=SlidePixels(float(y) / factor),
            width=SlidePixels(float(width) / factor),
            height=SlidePixels(float(height) / factor),
            out_width=out_width,
            out_height=out_height,
        )

    def close(self) -> None:
        self.source.close()

    def provenance(self) -> dict[str, Any]:
        """Return the resampling record for QC: source and target mpp and the scale factor."""
        return {
            "source_mpp": float(self.source.info.mpp),
            "source_mpp_source": self.source.info.mpp_source,
            "target_mpp": float(self.target_mpp),
            "scale_factor": self.scale_factor,
        }


def open_resampled(path: str | Path, *, mpp: float | None = None, target_mpp: float | None = None) -> SlideReader:
    """Open a slide, presented at ``target_mpp`` um/px when one is given.

    ``mpp`` is the samplesheet value used when the file has none. A slide
    already within 0.1% of the target is returned as it is, so converting
    and then resampling does not resample twice.
    """
    reader = open_slide(path, mpp=mpp)
    if target_mpp is None:
        return reader
    try:
        factor = scale_factor(source_mpp=reader.info.mpp, target_mpp=target_mpp)
    except ValueError as error:
        reader.close()
        raise InputError(f"Invalid --target-mpp {target_mpp!r}: {error}") from error
    if abs(factor - 1.0) <= 1e-3:
        return reader
    return ResampledSlideReader(reader, target_mpp=target_mpp)


def resampling_fields(reader: SlideReader, *, target_mpp: float | None) -> dict[str, Any]:
    """Return the QC fields of resolution standardization for a reader from :func:`open_resampled`."""
    if target_mpp is None:
        return {}
    if isinstance(reader, ResampledSlideReader):
        record = reader.provenance()
        return {"source_mpp": record["source_mpp"], "target_mpp": record["target_mpp"], "scale_factor": record["scale_factor"]}
    return {"source_mpp": float(reader.info.mpp), "target_mpp": float(target_mpp), "scale_factor": 1.0}
