"""Token counts the emulator reports in `usageMetadata` (~4 chars a text token; images by
the Gemini 2.x tile rule, or the media-resolution table). Independent of the worker's own
estimator on purpose."""

from __future__ import annotations

import math

IMAGE_TOKENS_PER_TILE = 258
SMALL_IMAGE_MAX_SIDE_PX = 384


# Gemini 3 and later: a fixed count per image at each level, HIGH by default
_GEMINI_3_TOKENS = {
    None: 1120,
    "MEDIA_RESOLUTION_LOW": 280,
    "MEDIA_RESOLUTION_MEDIUM": 560,
    "MEDIA_RESOLUTION_HIGH": 1120,
    "MEDIA_RESOLUTION_ULTRA_HIGH": 2240,
}
# earlier models: LOW and MEDIUM fix the count; HIGH and the default follow the tiles
_GEMINI_2_TOKENS = {"MEDIA_RESOLUTION_LOW": 64, "MEDIA_RESOLUTION_MEDIUM": 256}


def is_gemini_3_or_later(model: str) -> bool:
    bare = model.removeprefix("models/")
    return bare.startswith("gemini-") and bare[7:8].isdigit() and int(bare[7:8]) >= 3


def image_tokens(
    width_px: int, height_px: int, *, model: str = "", media_resolution: str | None = None
) -> int:
    """258 if both sides <= 384 px; else 258 per tile, crop unit = floor(min side / 1.5);
    or what ``media_resolution`` fixes for ``model``."""
    if is_gemini_3_or_later(model):
        return _GEMINI_3_TOKENS.get(media_resolution, 1120)
    fixed = _GEMINI_2_TOKENS.get(media_resolution or "")
    if fixed is not None:
        return fixed
    if width_px <= SMALL_IMAGE_MAX_SIDE_PX and height_px <= SMALL_IMAGE_MAX_SIDE_PX:
        return IMAGE_TOKENS_PER_TILE
    unit = max(1, math.floor(min(width_px, height_px) / 1.5))
    tiles = math.ceil(width_px / unit) * math.ceil(height_px / unit)
    return tiles * IMAGE_TOKENS_PER_TILE


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
