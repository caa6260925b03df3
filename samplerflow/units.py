"""Physical and pixel units.

Whole-slide code breaks most often on units, so lengths carry their unit in
their type: a tile size in micrometres cannot be passed where level-0 pixels
are expected without an explicit conversion through the slide's mpp.
"""

from __future__ import annotations

from typing import NewType

Microns = NewType("Microns", float)
"""A length in micrometres (um)."""

SlidePixels = NewType("SlidePixels", float)
"""A length or coordinate in pixels of the slide's level 0 (full resolution)."""

TilePixels = NewType("TilePixels", int)
"""A side length in pixels of an image given to a feature extractor."""

MicronsPerPixel = NewType("MicronsPerPixel", float)
"""A resolution: micrometres covered by one pixel (mpp)."""

# Physically plausible scan resolutions. 72-dpi defaults written by image
# editors (352.8 um/px) fall outside and are treated as missing metadata.
MIN_PLAUSIBLE_MPP = 0.01
MAX_PLAUSIBLE_MPP = 100.0


def microns_to_slide_pixels(length: Microns, *, mpp: MicronsPerPixel) -> SlidePixels:
    """Convert a length in micrometres to level-0 pixels."""
    return SlidePixels(float(length) / float(mpp))


def slide_pixels_to_microns(length: SlidePixels, *, mpp: MicronsPerPixel) -> Microns:
    """Convert a length in level-0 pixels to micrometres."""
    return Microns(float(length) * float(mpp))


def is_plausible_mpp(value: float) -> bool:
    """Tell whether a microns-per-pixel value can come from a real scanner."""
    return MIN_PLAUSIBLE_MPP <= value <= MAX_PLAUSIBLE_MPP
