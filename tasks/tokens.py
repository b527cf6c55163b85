"""What an image costs in prompt tokens, estimated before asking.

Rule of Gemini 2.0 Flash and 2.5 Flash/Pro (Google's image-understanding guide): 258
tokens when both sides are at most 384 px; otherwise the image is cut into tiles of a crop
unit ``floor(min(width, height) / 1.5)`` px, ``ceil(width / unit) * ceil(height / unit)``
of them, 258 tokens each (960x540 -> unit 360 -> 3 x 2 tiles -> 1,548 tokens).

``media_resolution`` caps an image's tokens (the media-resolution guide's token table):
Gemini 3 and later spend a fixed 280 / 560 / 1,120 / 2,240 tokens an image at low / medium
/ high / ultra_high, high being their default; other models spend 64 at low and 256 at
medium, and follow the tile rule at high and by default.

Estimates only plan: the response's ``usage_metadata`` is the truth. Very thin images (one
side far shorter than the other) get a tiny crop unit and so a large estimate; that
follows the guide's formula.
"""

from __future__ import annotations

from tasks.model_families import family_of

__all__ = ["SMALL_IMAGE_MAX_SIDE_PX", "TOKENS_PER_TILE", "estimate_image_tokens"]

TOKENS_PER_TILE = 258
SMALL_IMAGE_MAX_SIDE_PX = 384
# tokens an image at each media_resolution (None: the tile rule)
_PER_PART_TOKENS = {None: 1120, "low": 280, "medium": 560, "high": 1120, "ultra_high": 2240}
_REQUEST_TOKENS = {"low": 64, "medium": 256}


def estimate_image_tokens(
    width_px: int,
    height_px: int,
    *,
    model: str | None = None,
    media_resolution: str | None = None,
) -> int:
    """Estimated prompt tokens of one ``width_px`` x ``height_px`` image (as sent), for
    ``model`` (None: the tile rule of 2.x) at ``media_resolution`` (None: the default)."""
    for side in (width_px, height_px):
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0:
            raise ValueError(f"image size must be positive integers, got {width_px}x{height_px}")
    if model is not None and family_of(model).media_resolution_per_part:
        return _PER_PART_TOKENS[media_resolution]
    fixed = _REQUEST_TOKENS.get(media_resolution or "")
    if fixed is not None:
        return fixed
    if width_px <= SMALL_IMAGE_MAX_SIDE_PX and height_px <= SMALL_IMAGE_MAX_SIDE_PX:
        return TOKENS_PER_TILE
    # floor(min / 1.5) in integers; a 1-px-thin image would give a crop unit of 0
    crop_unit_px = max(2 * min(width_px, height_px) // 3, 1)
    tiles = _ceil_div(width_px, crop_unit_px) * _ceil_div(height_px, crop_unit_px)
    return tiles * TOKENS_PER_TILE


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
