"""The pixel size an image is sent at when a task asks for it to fit a square.

One rule for the worker that resizes (`worker.images.prepare.fit_within`), the request's
token estimate and the dry run's (`gvw enqueue-prefix --dry-run`), so an estimate prices
the image the model will see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# a whole-factor reduce is enough when what it leaves is at least this share of the target
_REDUCE_ENOUGH = 0.9


@dataclass(frozen=True)
class FitPlan:
    """How an image reaches its sent size: ``reduce_factor`` (a whole-factor box filter,
    1 for none), then, when ``resize_to_px`` is set, a bilinear resize to it."""

    reduce_factor: int
    resize_to_px: tuple[int, int] | None
    sent_px: tuple[int, int]


def fit_plan(width_px: int, height_px: int, max_side_px: int) -> FitPlan:
    """Scale to fit ``max_side_px`` square, aspect kept (as Pillow's ``thumbnail`` sizes it).

    A whole-factor reduce does it alone when the smallest factor that fits keeps at least
    90% of ``max_side_px`` (a 4000x3000 photo becomes 1000x750); otherwise a reduce takes the
    image to within twice the target and a resize does the rest. ``max_side_px`` of 0, or
    an image that fits already, is sent as it is. Sizes after a reduce are Pillow's: a
    partial block at the edge counts (ceiling division).
    """
    long_side = max(width_px, height_px)
    if max_side_px <= 0 or long_side <= max_side_px:
        return FitPlan(1, None, (width_px, height_px))
    whole = math.ceil(long_side / max_side_px)
    if long_side // whole >= _REDUCE_ENOUGH * max_side_px:
        return FitPlan(whole, None, (-(-width_px // whole), -(-height_px // whole)))
    scale = long_side / max_side_px
    size = (max(1, round(width_px / scale)), max(1, round(height_px / scale)))
    factor = int(scale) if scale >= 2 else 1  # what is left for the resize: under 2x
    return FitPlan(factor, size, size)
