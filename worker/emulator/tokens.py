"""Token counts the emulator reports in `usageMetadata` (Gemini 2.x image rule, ~4 chars a
text token). Independent of the worker's own estimator on purpose."""

from __future__ import annotations

import math

IMAGE_TOKENS_PER_TILE = 258
SMALL_IMAGE_MAX_SIDE_PX = 384


def image_tokens(width_px: int, height_px: int) -> int:
    """258 if both sides <= 384 px; else 258 per tile, crop unit = floor(min side / 1.5)."""
    if width_px <= SMALL_IMAGE_MAX_SIDE_PX and height_px <= SMALL_IMAGE_MAX_SIDE_PX:
        return IMAGE_TOKENS_PER_TILE
    unit = max(1, math.floor(min(width_px, height_px) / 1.5))
    tiles = math.ceil(width_px / unit) * math.ceil(height_px / unit)
    return tiles * IMAGE_TOKENS_PER_TILE


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
