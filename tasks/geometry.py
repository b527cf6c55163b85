"""Gemini's box_2d and pixel boxes of the upright image.

Gemini answers boxes as ``box_2d = [ymin, xmin, ymax, xmax]`` on a 0-1000 scale, **y
first**, relative to the image it was shown (EXIF orientation applied). Pixel boxes here
are ``xyxy_px = (x0, y0, x1, y1)``, x first, half-open: ``x1`` is one past the last column,
so ``x1 - x0`` is the width and a full-image box is ``(0, 0, width_px, height_px)``.

Pixels are rounded to the nearest value (halves up) in both directions, so for images up
to 1000 px a side a pixel box survives pixel -> box_2d -> pixel unchanged, and for images of
1000 px or more a normalized box_2d survives box_2d -> pixel -> box_2d unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

__all__ = [
    "ABSURD_NUMBER",
    "BOX_2D_SCALE",
    "Box2D",
    "InvalidBox2D",
    "XyxyPx",
    "box_2d_to_xyxy_px",
    "is_sane_number",
    "normalize_box_2d",
    "xyxy_px_to_box_2d",
]

BOX_2D_SCALE = 1000

Box2D = tuple[int, int, int, int]
"""``(ymin, xmin, ymax, xmax)`` on 0-1000, y first."""

XyxyPx = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels of the upright image, x first, half-open."""


class InvalidBox2D(ValueError):
    """A box_2d from the model that cannot be used; the message is the reason."""


def normalize_box_2d(value: object) -> Box2D:
    """The model's box_2d made usable: 4 finite numbers, clipped to 0-1000, corners
    ordered, rounded to integers.

    Raises InvalidBox2D when it is not 4 numbers (bools and numeric strings are not
    numbers) or when it is empty (zero height or width) after clipping.
    """
    if not isinstance(value, list | tuple):
        raise InvalidBox2D(f"box_2d is not a list of 4 numbers: {_short(value)}")
    if len(value) != 4:
        raise InvalidBox2D(f"box_2d has {len(value)} values, not 4: {_short(value)}")
    for number in value:
        # bool is an int subclass, but true/false in a box is a malformed answer
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidBox2D(f"box_2d holds a non-number: {_short(value)}")
        if not is_sane_number(number):
            raise InvalidBox2D(f"box_2d holds a non-finite or absurd number: {_short(value)}")
    ymin, xmin, ymax, xmax = (_clip_round(number) for number in value)
    # some answers give the corners the wrong way round; the box they mean is clear
    ymin, ymax = min(ymin, ymax), max(ymin, ymax)
    xmin, xmax = min(xmin, xmax), max(xmin, xmax)
    if ymin == ymax or xmin == xmax:
        raise InvalidBox2D(
            f"box_2d is empty after clipping to 0-{BOX_2D_SCALE}: {_short(value)} -> "
            f"{[ymin, xmin, ymax, xmax]}"
        )
    return (ymin, xmin, ymax, xmax)


# A model's coordinate beyond this is not a coordinate: JSON integers have no size limit,
# and `10**400` overflows every float conversion (math.isfinite, math.floor(x + 0.5)).
ABSURD_NUMBER: Final = 10**9


def is_sane_number(value: object) -> bool:
    """A real number (not a bool) that is finite and within ±`ABSURD_NUMBER`: safe to
    turn into a float and to clip. Never raises, whatever JSON handed us."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return -ABSURD_NUMBER <= value <= ABSURD_NUMBER
    return math.isfinite(value) and -ABSURD_NUMBER <= value <= ABSURD_NUMBER


def box_2d_to_xyxy_px(box_2d: Sequence[int], width_px: int, height_px: int) -> XyxyPx:
    """Pixel box ``(x0, y0, x1, y1)`` of a normalized box_2d on a ``width_px`` x
    ``height_px`` image: ``x = xmin / 1000 * width_px`` and so on, rounded.

    Always within the image. A box_2d thinner than a pixel still covers one pixel, so a
    mask can be placed in it.
    """
    _check_size(width_px, height_px)
    ymin, xmin, ymax, xmax = _check_box_2d(box_2d)
    x0 = _div_round(xmin * width_px, BOX_2D_SCALE)
    x1 = _div_round(xmax * width_px, BOX_2D_SCALE)
    y0 = _div_round(ymin * height_px, BOX_2D_SCALE)
    y1 = _div_round(ymax * height_px, BOX_2D_SCALE)
    x0, x1 = _at_least_one_px(x0, x1, width_px)
    y0, y1 = _at_least_one_px(y0, y1, height_px)
    return (x0, y0, x1, y1)


def xyxy_px_to_box_2d(xyxy_px: Sequence[int], width_px: int, height_px: int) -> Box2D:
    """The box_2d ``(ymin, xmin, ymax, xmax)`` of a pixel box on a ``width_px`` x
    ``height_px`` image: the inverse of `box_2d_to_xyxy_px`, rounded."""
    _check_size(width_px, height_px)
    if len(xyxy_px) != 4 or not all(_is_int(v) for v in xyxy_px):
        raise ValueError(f"xyxy_px must be 4 integers, got {xyxy_px!r}")
    x0, y0, x1, y1 = xyxy_px
    if not (0 <= x0 <= x1 <= width_px and 0 <= y0 <= y1 <= height_px):
        raise ValueError(f"xyxy_px {xyxy_px!r} is not an ordered box inside {width_px}x{height_px}")
    return (
        _div_round(y0 * BOX_2D_SCALE, height_px),
        _div_round(x0 * BOX_2D_SCALE, width_px),
        _div_round(y1 * BOX_2D_SCALE, height_px),
        _div_round(x1 * BOX_2D_SCALE, width_px),
    )


def _clip_round(number: float) -> int:
    return min(max(math.floor(number + 0.5), 0), BOX_2D_SCALE)


def _div_round(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in exact integer arithmetic."""
    return (2 * numerator + denominator) // (2 * denominator)


def _at_least_one_px(low: int, high: int, size_px: int) -> tuple[int, int]:
    if high > low:
        return low, high
    return (low, low + 1) if low < size_px else (size_px - 1, size_px)


def _check_box_2d(box_2d: Sequence[int]) -> Box2D:
    if len(box_2d) != 4 or not all(_is_int(v) for v in box_2d):
        raise ValueError(f"box_2d must be 4 integers (see normalize_box_2d), got {box_2d!r}")
    ymin, xmin, ymax, xmax = box_2d
    if not (0 <= ymin < ymax <= BOX_2D_SCALE and 0 <= xmin < xmax <= BOX_2D_SCALE):
        raise ValueError(f"box_2d {box_2d!r} is not normalized (see normalize_box_2d)")
    return (ymin, xmin, ymax, xmax)


def _check_size(width_px: int, height_px: int) -> None:
    if not (_is_int(width_px) and _is_int(height_px) and width_px > 0 and height_px > 0):
        raise ValueError(f"image size must be positive integers, got {width_px}x{height_px}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
