"""COCO run-length encoding of boolean masks, byte for byte as pycocotools writes it.

``{"size": [height, width], "counts": "<string>"}``: the mask is read column by column
(Fortran order), as alternating runs that start with a run of zeros (of length 0 when the
first pixel is set). The run lengths are compressed as pycocotools' ``rleToString``
(``maskApi.c``) does: from the fourth run on, each run is stored as its difference from
the run two before it; each number is written as signed 5-bit groups, least significant
first, 0x20 marking "more groups follow", every group offset by 48 into printable ASCII.

Runs are computed with numpy (no per-pixel Python loops); `encode_box_mask_rle` finds the
runs of a whole-image mask from a `BoxMask` crop alone, without building the full mask.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from tasks.masks import BoxMask

__all__ = ["decode_rle", "encode_box_mask_rle", "encode_rle"]

# a run difference is within +-2**32, which 7 signed groups of 5 bits (35 bits) hold
_MAX_GROUPS: Final = 7


def encode_rle(mask: NDArray[np.bool_]) -> dict[str, Any]:
    """COCO compressed RLE of a 2-D mask: ``{"size": [h, w], "counts": str}``."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    height_px, width_px = mask.shape
    column_major = np.asarray(mask, dtype=np.bool_).ravel(order="F")
    if column_major.size == 0:
        return _rle(height_px, width_px, np.zeros(1, dtype=np.int64))
    changes = np.flatnonzero(column_major[1:] != column_major[:-1]) + 1
    bounds = np.concatenate(([0], changes, [column_major.size]))
    runs = np.diff(bounds)
    if column_major[0]:
        runs = np.concatenate(([0], runs))  # COCO always starts with a run of zeros
    return _rle(height_px, width_px, runs)


def encode_box_mask_rle(box_mask: BoxMask, width_px: int, height_px: int) -> dict[str, Any]:
    """`encode_rle` of ``box_mask.to_full(width_px, height_px)``, from the crop alone.

    In column-major order the full mask is zeros except where crop columns lie, so the
    runs of ones are the crop's per-column runs moved to whole-image positions; runs
    that meet across a column break (a box spanning the full height) are joined.
    """
    x0, y0, x1, y1 = box_mask.box_xyxy_px
    if x1 > width_px or y1 > height_px:
        raise ValueError(f"mask box {box_mask.box_xyxy_px} does not fit {width_px}x{height_px}")
    crop_height_px, crop_width_px = box_mask.crop.shape
    total = width_px * height_px
    if total == 0 or not box_mask.crop.any():
        return _rle(height_px, width_px, np.array([total], dtype=np.int64))
    # one zero row above and below each crop column, so every run of ones starts and
    # ends inside its own column
    padded = np.zeros((crop_height_px + 2, crop_width_px), dtype=np.int8)
    padded[1:-1] = box_mask.crop
    steps = np.diff(padded.ravel(order="F"))
    starts = np.flatnonzero(steps == 1) + 1
    ends = np.flatnonzero(steps == -1) + 1  # one past the last set pixel
    column_len = crop_height_px + 2
    start_px = (x0 + starts // column_len) * height_px + y0 + starts % column_len - 1
    end_px = (x0 + ends // column_len) * height_px + y0 + ends % column_len - 1
    # a run ending at the image's bottom row continues in the next column's top row
    separate = start_px[1:] != end_px[:-1]
    start_px = start_px[np.concatenate(([True], separate))]
    end_px = end_px[np.concatenate((separate, [True]))]
    bounds = np.empty(2 * len(start_px) + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = start_px
    bounds[2:-1:2] = end_px
    bounds[-1] = total
    runs = np.diff(bounds)
    # COCO ends with the last real run: no zero-length run of zeros after a final one
    return _rle(height_px, width_px, runs[:-1] if runs[-1] == 0 else runs)


def decode_rle(rle: dict[str, Any]) -> NDArray[np.bool_]:
    """The mask of a COCO compressed RLE (``counts`` as str or bytes)."""
    height_px, width_px = (int(v) for v in rle["size"])
    counts = rle["counts"]
    text = counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
    runs = _runs_from_string(text)
    if sum(runs) != height_px * width_px:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, not {height_px}x{width_px}")
    values = np.arange(len(runs)) % 2 == 1  # zeros first
    column_major = np.repeat(values, runs)
    return column_major.reshape((height_px, width_px), order="F")


def _rle(height_px: int, width_px: int, runs: NDArray[np.int64]) -> dict[str, Any]:
    return {"size": [height_px, width_px], "counts": _runs_to_string(runs)}


def _runs_to_string(runs: NDArray[np.int64]) -> str:
    """pycocotools' ``rleToString``, vectorized over all runs."""
    runs = np.asarray(runs, dtype=np.int64)
    values = runs.copy()
    values[3:] -= runs[1:-2]  # x -= cnts[i-2] for i > 2
    # The C loop writes 5-bit groups until the rest is only sign bits, that is: a value
    # takes the fewest groups n whose 5n bits hold it as a signed number.
    n_groups = np.ones(len(values), dtype=np.int64)
    for k in range(1, _MAX_GROUPS):
        limit = 1 << (5 * k - 1)
        n_groups += (values >= limit) | (values < -limit)
    first_char = np.cumsum(n_groups) - n_groups
    chars = np.empty(int(n_groups.sum()), dtype=np.uint8)
    for k in range(int(n_groups.max(initial=0))):
        active = n_groups > k
        group = (values[active] >> (5 * k)) & 0x1F  # >> is arithmetic: signs kept
        more = np.where(n_groups[active] > k + 1, 0x20, 0)
        chars[first_char[active] + k] = group + more + 48
    return chars.tobytes().decode("ascii")


def _runs_from_string(text: str) -> list[int]:
    """pycocotools' ``rleFrString`` (tests and tools only, so plain Python)."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            if position >= len(text):
                raise ValueError("RLE counts string ends inside a number")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"RLE counts string holds {text[position]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("RLE counts string decodes to a negative run")
        runs.append(value)
    return runs
