"""Which images a stream decodes at all: bounds on their size, read from the header before any pixel is decoded.

Kept apart from `nas.data.samples` (which imports PIL and webdataset, and through it torch) so that the command
line can show the defaults without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PIXELS = 40_000_000
"""Default limit on an image's width x height. A few KB of PNG or JPEG can declare a canvas of gigabytes once
decoded (a decompression bomb); 40 megapixels is above any photo worth a proxy's 224 px crop (DataComp's
download keeps images of at most 512 px a side) and bounds a loader's decode at ~120 MB of RGB. PIL refuses
on its own only above twice its `Image.MAX_IMAGE_PIXELS` (179 megapixels), which it decodes up to."""

MIN_SIDE = 8
"""Default shortest side, in pixels, of an image worth training on: below it a crop to the model's resolution
is almost all interpolation (a 1x1 image becomes a flat colour)."""


@dataclass(frozen=True)
class ImageLimits:
    """Which images are decoded at all: at most `max_pixels` (width x height), no side below `min_side`."""

    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE


DEFAULT_LIMITS = ImageLimits()
