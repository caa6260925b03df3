"""One reader interface over OpenSlide and tifffile.

OpenSlide (through openslide-bin) reads the vendor formats: Aperio SVS,
Hamamatsu NDPI/VMS, DICOM WSI, MIRAX, Leica SCN, Philips TIFF, Ventana BIF
and tiled generic TIFF. tifffile reads what OpenSlide rejects among TIFF
files: stripped (non-tiled) TIFF, OME-TIFF and TIFF with JPEG 2000 tiles.

Regions are read from the pyramid level closest to, and not coarser than,
the requested resolution, then resized with area interpolation, and large
requests are read in strips, so that a whole level 0 is never held in memory.
Associated images (label, macro, thumbnail) are never read: slide labels can
carry patient names.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ElementTree
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from samplerflow.errors import SampleError
from samplerflow.units import MicronsPerPixel, SlidePixels, is_plausible_mpp

log = logging.getLogger(__name__)

TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf2", ".tf8", ".svs", ".ome.tif", ".ome.tiff"}
# Formats that look like TIFF to tifffile but keep their pixels elsewhere, so
# reading them as TIFF would silently return an overview image.
UNSUPPORTED_SUFFIXES = {
    ".vsi": "Olympus VSI keeps its pixels in .ets files that neither OpenSlide nor tifffile "
    "reads; convert it to OME-TIFF first (for example with Bio-Formats bfconvert)",
    ".czi": "Zeiss CZI is not read by OpenSlide or tifffile; convert it to OME-TIFF first "
    "(for example with Bio-Formats bfconvert)",
}
# Largest region, in source pixels, decoded at once; bigger reads go in strips.
MAX_PIXELS_PER_READ = 32 * 1024 * 1024
BACKGROUND_RGB = 255


@dataclass(frozen=True)
class SlideInfo:
    """Geometry and provenance of an opened slide."""

    path: str
    backend: str
    vendor: str
    width: int
    height: int
    mpp: float
    mpp_source: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        payload = asdict(self)
        payload["level_dimensions"] = [list(size) for size in self.level_dimensions]
        payload["level_downsamples"] = list(self.level_downsamples)
        return payload


class SlideReader(ABC):
    """A whole-slide image opened for region reads in level-0 coordinates."""

    info: SlideInfo

    @abstractmethod
    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Read an RGB uint8 array of ``height x width`` at ``level``.

        ``x`` and ``y`` are the top-left corner in pixels of that level. Areas
        outside the slide are filled with white.
        """

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def mpp(self) -> MicronsPerPixel:
        """Microns per pixel of level 0."""
        return MicronsPerPixel(self.info.mpp)

    def best_level(self, downsample: float) -> int:
        """Return the coarsest level whose downsample does not exceed ``downsample``."""
        best = 0
        for level, level_downsample in enumerate(self.info.level_downsamples):
            if level_downsample <= downsample * (1 + 1e-6):
                best = level
        return best

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
        """Read a level-0 box and resize it to ``out_height x out_width`` RGB uint8.

        The source is the best pyramid level for the requested downsample;
        area interpolation anti-aliases the reduction. Requests larger than
        :data:`MAX_PIXELS_PER_READ` source pixels are read in horizontal strips.
        """
        if out_width <= 0 or out_height <= 0 or width <= 0 or height <= 0:
            raise ValueError(f"Empty region requested: {width}x{height} px -> {out_width}x{out_height}")
        downsample = min(width / out_width, height / out_height)
        level = self.best_level(downsample)
        level_downsample = self.info.level_downsamples[level]
        level_x0 = float(x) / level_downsample
        level_y0 = float(y) / level_downsample
        level_width = float(width) / level_downsample
        level_height = float(height) / level_downsample

        output = np.empty((out_height, out_width, 3), dtype=np.uint8)
        rows_per_strip = max(1, int(MAX_PIXELS_PER_READ / max(1.0, level_width) / (level_height / out_height)))
        for out_row0 in range(0, out_height, rows_per_strip):
            out_row1 = min(out_height, out_row0 + rows_per_strip)
            source_top = level_y0 + level_height * out_row0 / out_height
            source_bottom = level_y0 + level_height * out_row1 / out_height
            top = math.floor(source_top)
            bottom = max(top + 1, math.ceil(source_bottom))
            left = math.floor(level_x0)
            right = max(left + 1, math.ceil(level_x0 + level_width))
            pixels = self.read_level(level, left, top, right - left, bottom - top)
            # Crop the fractional part so the strip maps exactly onto its output rows.
            crop = _subpixel_crop(
                pixels,
                x0=level_x0 - left,
                y0=source_top - top,
                width=level_width,
                height=source_bottom - source_top,
            )
            output[out_row0:out_row1] = resize_area(crop, out_width, out_row1 - out_row0)
        return output

    def read_region_at_mpp(
        self, *, x: SlidePixels, y: SlidePixels, width: SlidePixels, height: SlidePixels, mpp: MicronsPerPixel
    ) -> np.ndarray:
        """Read a level-0 box resampled to ``mpp`` um/px (output size rounded to whole pixels)."""
        out_width = max(1, round(float(width) * self.info.mpp / float(mpp)))
        out_height = max(1, round(float(height) * self.info.mpp / float(mpp)))
        return self.read_region(x=x, y=y, width=width, height=height, out_width=out_width, out_height=out_height)

    def thumbnail(self, *, mpp: float) -> tuple[np.ndarray, float]:
        """Return the whole slide at about ``mpp`` um/px and the exact mpp it has.

        The thumbnail is never finer than level 0.
        """
        target = max(float(mpp), self.info.mpp)
        out_width = max(1, round(self.info.width * self.info.mpp / target))
        out_height = max(1, round(self.info.height * self.info.mpp / target))
        image = self.read_region(
            x=SlidePixels(0),
            y=SlidePixels(0),
            width=SlidePixels(self.info.width),
            height=SlidePixels(self.info.height),
            out_width=out_width,
            out_height=out_height,
        )
        actual_mpp = self.info.width * self.info.mpp / out_width
        return image, actual_mpp


def _subpixel_crop(pixels: np.ndarray, *, x0: float, y0: float, width: float, height: float) -> np.ndarray:
    """Crop to whole pixels covering the fractional box; the residual shift is below one source pixel."""
    left = int(round(x0))
    top = int(round(y0))
    right = max(left + 1, int(round(x0 + width)))
    bottom = max(top + 1, int(round(y0 + height)))
    return pixels[top:bottom, left:right]


def resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB uint8 image with area interpolation (anti-aliased when shrinking)."""
    if image.shape[1] == width and image.shape[0] == height:
        return np.ascontiguousarray(image)
    shrinking = image.shape[1] >= width and image.shape[0] >= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Convert grey, RGBA or 16-bit pixel arrays to RGB uint8 (alpha composited on white)."""
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.integer):
            scale = float(np.iinfo(pixels.dtype).max)
        else:
            scale = float(max(1.0, np.nanmax(pixels))) if pixels.size else 1.0
        pixels = np.clip(pixels.astype(np.float32) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(pixels[:, :, :3])
        # Integer compositing keeps memory at 2 bytes per channel for large regions.
        weight = alpha.astype(np.uint16)
        rgb = pixels[:, :, :3].astype(np.uint16) * weight + BACKGROUND_RGB * (255 - weight)
        return ((rgb + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(pixels[:, :, :3])


class OpenSlideReader(SlideReader):
    """Reader for every format OpenSlide opens."""

    def __init__(self, path: Path, handle: Any, *, vendor: str, mpp: float, mpp_source: str) -> None:
        self._handle = handle
        width, height = handle.dimensions
        self.info = SlideInfo(
            path=str(path),
            backend="openslide",
            vendor=vendor,
            width=int(width),
            height=int(height),
            mpp=mpp,
            mpp_source=mpp_source,
            level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
            level_downsamples=tuple(float(d) for d in handle.level_downsamples),
        )

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        downsample = self.info.level_downsamples[level]
        location = (int(round(x * downsample)), int(round(y * downsample)))
        region = self._handle.read_region(location, level, (int(width), int(height)))
        # OpenSlide returns RGBA with alpha 0 outside the scanned area.
        return _to_rgb(np.asarray(region))

    def close(self) -> None:
        self._handle.close()


class TiffFileReader(SlideReader):
    """Reader for TIFF files OpenSlide rejects: stripped TIFF, OME-TIFF, JPEG 2000 tiles.

    Pixels are read through tifffile's zarr store, which decodes only the
    tiles or strips a region touches.
    """

    def __init__(self, path: Path) -> None:
        import tifffile
        import zarr

        self._tiff = tifffile.TiffFile(path)
        series = self._tiff.series[0]
        self._axes = series.axes
        store = series.aszarr()
        root = zarr.open(store, mode="r")
        levels = series.levels if len(series.levels) > 1 else [series]
        if hasattr(root, "shape"):
            self._arrays = [root]
        else:
            self._arrays = [root[str(index)] for index in range(len(levels))]
        sizes = [self._size_of(array.shape) for array in self._arrays]
        width, height = sizes[0]
        # open_slide() applies the mpp rule after checking that pixels decode.
        self.metadata_mpp, self.metadata_mpp_source = _tiff_mpp(self._tiff)
        if self._tiff.is_ome:
            vendor = "ome-tiff"
        elif self._tiff.is_svs:
            vendor = "aperio"
        else:
            vendor = "generic-tiff"
        self.info = SlideInfo(
            path=str(path),
            backend="tifffile",
            vendor=vendor,
            width=width,
            height=height,
            mpp=float("nan"),
            mpp_source="",
            level_dimensions=tuple(sizes),
            level_downsamples=tuple(width / size[0] for size in sizes),
        )

    def _size_of(self, shape: tuple[int, ...]) -> tuple[int, int]:
        axes = self._axes
        return int(shape[axes.index("X")]), int(shape[axes.index("Y")])

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        array = self._arrays[level]
        level_width, level_height = self.info.level_dimensions[level]
        output = np.full((height, width, 3), BACKGROUND_RGB, dtype=np.uint8)
        left, top = max(0, x), max(0, y)
        right, bottom = min(level_width, x + width), min(level_height, y + height)
        if right <= left or bottom <= top:
            return output
        index: list[Any] = []
        for axis in self._axes:
            if axis == "Y":
                index.append(slice(top, bottom))
            elif axis == "X":
                index.append(slice(left, right))
            elif axis in "SC":
                index.append(slice(None))
            else:
                index.append(0)  # first plane of T, Z or other leading axes
        pixels = np.asarray(array[tuple(index)])
        kept_axes = [axis for axis in self._axes if axis in "YXSC"]
        order = [kept_axes.index("Y"), kept_axes.index("X")] + [
            position for position, axis in enumerate(kept_axes) if axis in "SC"
        ]
        pixels = np.transpose(pixels, order)
        output[top - y : bottom - y, left - x : right - x] = _to_rgb(pixels)
        return output

    def close(self) -> None:
        self._tiff.close()


def _tiff_mpp(tiff: Any) -> tuple[float | None, str]:
    """Read mpp from OME-XML, the Aperio description or the resolution tags, in that order."""
    if tiff.is_ome and tiff.ome_metadata:
        value = _ome_physical_size(tiff.ome_metadata)
        if value is not None:
            return value, "metadata:ome-physical-size"
    page = tiff.pages[0]
    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1)), "metadata:aperio-description"
    resolution = page.tags.get("XResolution")
    unit = page.tags.get("ResolutionUnit")
    if resolution is not None and unit is not None:
        numerator, denominator = resolution.value
        pixels_per_unit = numerator / denominator if denominator else 0.0
        microns_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
        if pixels_per_unit > 0 and microns_per_unit is not None:
            return microns_per_unit / pixels_per_unit, "metadata:tiff-resolution"
    return None, ""


def _ome_physical_size(ome_xml: str) -> float | None:
    """Return PhysicalSizeX of the first OME image in micrometres."""
    to_microns = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels") and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            factor = to_microns.get(unit)
            if factor is None:
                return None
            return float(element.attrib["PhysicalSizeX"]) * factor
    return None


def _choose_mpp(
    path: Path, metadata_mpp: float | None, metadata_source: str, samplesheet_mpp: float | None
) -> tuple[float, str]:
    """Apply the mpp rule: file metadata, else the samplesheet, else fail."""
    if metadata_mpp is not None and not is_plausible_mpp(metadata_mpp):
        log.warning(
            "%s: ignoring implausible mpp %.4g from %s (often a 72-dpi default)",
            path, metadata_mpp, metadata_source,
        )
        metadata_mpp = None
    if metadata_mpp is not None:
        if samplesheet_mpp is not None and abs(samplesheet_mpp - metadata_mpp) > 0.05 * metadata_mpp:
            log.warning(
                "%s: samplesheet mpp %.4g differs from the file's %.4g (%s); using the file's value",
                path, samplesheet_mpp, metadata_mpp, metadata_source,
            )
        log.info("%s: mpp %.4g from %s", path, metadata_mpp, metadata_source)
        return float(metadata_mpp), metadata_source
    if samplesheet_mpp is not None:
        log.info("%s: mpp %.4g from the samplesheet (file has none)", path, samplesheet_mpp)
        return float(samplesheet_mpp), "samplesheet"
    raise SampleError(
        "no_mpp",
        f"{path}: the file has no microns-per-pixel metadata and the samplesheet gives none; "
        "add an 'mpp' column value for this sample (e.g. 0.25 for 40x, 0.5 for 20x)",
    )


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    return magic[:2] in (b"II", b"MM") and int.from_bytes(
        magic[2:4], "little" if magic[:2] == b"II" else "big"
    ) in (42, 43)


def _is_ome_pyramid(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            return bool(tiff.is_ome) and len(tiff.series[0].levels) > 1
    except Exception:  # unreadable files are diagnosed by the readers below
        return False


def open_slide(path: str | Path, *, mpp: float | None = None) -> SlideReader:
    """Open a whole-slide image with the backend that reads it.

    ``mpp`` is the samplesheet's value, used only when the file has no
    resolution metadata. Raises :class:`SampleError` with status
    ``unreadable`` or ``unsupported_format`` for files that cannot be read,
    and ``no_mpp`` when no resolution is known.
    """
    import openslide

    path = Path(path)
    if not path.is_file():
        raise SampleError("unreadable", f"{path}: file not found or not a regular file")
    if path.stat().st_size == 0:
        raise SampleError("unreadable", f"{path}: the file is empty (0 bytes); copy it again from its source")
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        raise SampleError("unsupported_format", f"{path}: {UNSUPPORTED_SUFFIXES[suffix]}")

    detected = openslide.OpenSlide.detect_format(str(path))
    openslide_error: Exception | None = None
    # OpenSlide reads only the first level of an OME-TIFF pyramid kept in SubIFDs; tifffile reads them all.
    if detected == "generic-tiff" and _is_ome_pyramid(path):
        detected = None
    if detected is not None:
        try:
            handle = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as error:
            openslide_error = error
        else:
            properties = handle.properties
            metadata_mpp: float | None = None
            source = ""
            if openslide.PROPERTY_NAME_MPP_X in properties:
                metadata_mpp = float(properties[openslide.PROPERTY_NAME_MPP_X])
                source = f"metadata:{openslide.PROPERTY_NAME_MPP_X}"
                mpp_y = properties.get(openslide.PROPERTY_NAME_MPP_Y)
                if mpp_y is not None and abs(float(mpp_y) - metadata_mpp) > 0.01 * metadata_mpp:
                    log.warning("%s: non-square pixels (mpp-x %s, mpp-y %s); using mpp-x", path, metadata_mpp, mpp_y)
            # Pixels are checked before mpp, so a damaged file reports 'unreadable' first.
            reader: SlideReader = OpenSlideReader(path, handle, vendor=detected, mpp=float("nan"), mpp_source="")
            _probe(reader)
            try:
                chosen_mpp, chosen_source = _choose_mpp(path, metadata_mpp, source, mpp)
            except SampleError:
                reader.close()
                raise
            reader.info = replace(reader.info, mpp=chosen_mpp, mpp_source=chosen_source)
            return reader

    if _is_tiff(path) and (detected in (None, "generic-tiff")):
        try:
            reader = TiffFileReader(path)
        except Exception as error:  # tifffile raises many types for corrupt files
            reason = f"OpenSlide: {openslide_error}; tifffile: {error}" if openslide_error else f"tifffile: {error}"
            raise SampleError("unreadable", f"{path}: cannot read the TIFF ({reason})") from error
        _probe(reader)
        try:
            chosen_mpp, chosen_source = _choose_mpp(path, reader.metadata_mpp, reader.metadata_mpp_source, mpp)
        except SampleError:
            reader.close()
            raise
        reader.info = replace(reader.info, mpp=chosen_mpp, mpp_source=chosen_source)
        return reader

    if openslide_error is not None:
        raise SampleError(
            "unreadable",
            f"{path}: OpenSlide recognized the format '{detected}' but failed to open it ({openslide_error}); "
            "the file or a companion file is damaged or missing",
        )
    raise SampleError(
        "unsupported_format",
        f"{path}: not a slide format OpenSlide or tifffile reads; convert it to a tiled TIFF "
        "or OME-TIFF (for example with Bio-Formats bfconvert or vips tiffsave)",
    )


def _probe(reader: SlideReader) -> None:
    """Decode one small region so that damaged pixel data fails at open, not mid-run."""
    level = len(reader.info.level_dimensions) - 1
    width, height = reader.info.level_dimensions[level]
    try:
        reader.read_level(level, 0, 0, max(1, min(64, width)), max(1, min(64, height)))
    except Exception as error:  # decoder errors come in many types
        reader.close()
        raise SampleError(
            "unreadable", f"{reader.info.path}: pixel data cannot be decoded ({type(error).__name__}: {error})"
        ) from error
