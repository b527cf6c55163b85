"""The model's mask of one object -> a boolean mask in pixels of the upright image.

Gemini 2.5 answers each segmented object with a ``box_2d`` and a ``mask``; what the
``mask`` holds varies (``fixtures/gemini_real/`` and its ``secondary/``):

    mask value                                  here
    ------------------------------------------  ---------------------------------------
    "data:image/png;base64,iVBORw0KGgo..."      PNG probability map (0-255) of the box
    "iVBORw0KGgo..." (no data: prefix)          the same PNG, bare base64
    [[x, y], ...] (x first, 0-1000, whole img)  polygon, rasterized into the box
    [[[x, y], ...], [[x, y], ...]]              several polygons, their union
    "<start_of_mask><seg_115><seg_7>..."        UnsupportedMask: VQ tokens, no decoder
    anything else ("gimme_mask_for_this", ...)  UnsupportedMask: reported, never guessed

A PNG map is read as Google's guide reads it: resized to the box's pixel size bilinearly,
then foreground where **strictly above** the threshold (127, the midpoint). The guide
then copies it pixel by pixel into a full-size array in a Python double loop; here it
stays a crop of the box (`BoxMask`) and a full-size mask is built only on demand, so a
12 MP image with 20 objects holds 20 box crops, not 20 full masks.

Two choices make a mask cost little more than inflating its PNG (``benchmarks/masks.py``):

- the maps Gemini writes (8-bit gray, unfiltered rows, like every map in the fixtures)
  are read with zlib and numpy; any other PNG goes through Pillow, with the same caps;
- the resize is Pillow's, per direction: bilinear when enlarging (what the guide does),
  nearest when shrinking, where the guide's bilinear widens its filter and costs 15-20
  times more; on a map thresholded at its midpoint the two differ on a handful of edge
  pixels (on the real fixtures 99.997% of the guide's full-mask pixels agree on a
  1024x1024 image, 99.9996% on a 12 MP one).

Pixel boxes are ``(x0, y0, x1, y1)``, x first, half-open (`tasks.geometry`). A pixel
belongs to a polygon when its centre ``(col + 0.5, row + 0.5)`` lies inside it (even-odd
rule), so a polygon tracing the box's own edges fills exactly the box.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile

from tasks.geometry import BOX_2D_SCALE

__all__ = [
    "MASK_MAX_CHARS",
    "MASK_MAX_PIXELS",
    "POLYGON_MAX_ABS_COORDINATE",
    "POLYGON_MAX_POINTS",
    "BoxMask",
    "FullMasks",
    "UnsupportedMask",
    "decode_mask",
]

# Real masks are ~1-2 KB of base64 (a 256x256 PNG); a whole answer is capped by the output
# tokens (65,536 tokens, ~260 KB of text), so anything near this cap is not a real mask.
MASK_MAX_CHARS: Final = 2_000_000
# Real maps decode to 256x256 whatever the box shape; 64 times that area (2048x2048, 4 MB
# as 8-bit) is room for a finer map and still stops a zlib bomb (1000:1) before load().
MASK_MAX_PIXELS: Final = 2048 * 2048
# A polygon costs memory per row it crosses; this bounds a runaway vertex list.
POLYGON_MAX_POINTS: Final = 10_000
# Points may lie outside the image (the box clips them), but not absurdly far: this keeps
# the arithmetic finite and catches answers in some other unit.
POLYGON_MAX_ABS_COORDINATE: Final = 100 * BOX_2D_SCALE

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK_HEAD = struct.Struct(">I4s")
_PNG_IHDR = struct.Struct(">IIBBBBB")
_PNG_CRC = struct.Struct(">I")
_PNG_SIGNATURE_BASE64: Final = "iVBORw0KGgo"  # base64 of the signature's first 8 bytes
_SEG_TOKEN = re.compile(r"<start_of_mask>|<seg_\d+>")
_WHITESPACE = re.compile(r"\s+")
_PREVIEW_CHARS: Final = 40


class UnsupportedMask(ValueError):
    """A mask value that cannot be turned into pixels; the message names its format."""


@dataclass(frozen=True, eq=False)  # eq on arrays is elementwise; identity is what holds
class BoxMask:
    """One object's mask: ``crop`` (rows, cols) placed with its top-left at
    ``(x0_px, y0_px)`` in pixels of the upright image; outside the crop is background."""

    x0_px: int
    y0_px: int
    crop: NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.crop.ndim != 2 or self.crop.dtype != np.bool_:
            raise ValueError(
                f"crop must be a 2-D bool array, got {self.crop.ndim}-D {self.crop.dtype}"
            )
        if self.x0_px < 0 or self.y0_px < 0:
            raise ValueError(f"crop origin must not be negative: ({self.x0_px}, {self.y0_px})")

    @property
    def box_xyxy_px(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the crop, half-open."""
        height_px, width_px = self.crop.shape
        return (self.x0_px, self.y0_px, self.x0_px + width_px, self.y0_px + height_px)

    def area_px(self) -> int:
        """Foreground pixels."""
        return int(np.count_nonzero(self.crop))

    def to_full(self, width_px: int, height_px: int) -> NDArray[np.bool_]:
        """The mask on the whole ``width_px`` x ``height_px`` image (a new array)."""
        x0, y0, x1, y1 = self.box_xyxy_px
        if x1 > width_px or y1 > height_px:
            raise ValueError(
                f"mask box {self.box_xyxy_px} does not fit a {width_px}x{height_px} image"
            )
        # built per call and not kept: the caller writes one object's full mask at a time,
        # so a 12 MP image with 20 objects holds one 12 MB array, not twenty
        full = np.zeros((height_px, width_px), dtype=np.bool_)
        full[y0:y1, x0:x1] = self.crop
        return full


class FullMasks:
    """Full-size masks of one image, one object at a time, in one reused array: `of`
    clears the previous object's box and writes this one's. A 12 MP image's full mask is
    12 MB; allocating (and faulting in) a fresh one per object costs more than decoding
    the mask itself. The array `of` returns is valid until its next call."""

    def __init__(self, width_px: int, height_px: int) -> None:
        self.width_px = width_px
        self.height_px = height_px
        self._full = np.zeros((height_px, width_px), dtype=np.bool_)
        self._last: tuple[int, int, int, int] | None = None

    def of(self, mask: BoxMask) -> NDArray[np.bool_]:
        x0, y0, x1, y1 = mask.box_xyxy_px
        if x1 > self.width_px or y1 > self.height_px:
            raise ValueError(
                f"mask box {mask.box_xyxy_px} does not fit a {self.width_px}x{self.height_px} image"
            )
        if self._last is not None:
            lx0, ly0, lx1, ly1 = self._last
            self._full[ly0:ly1, lx0:lx1] = False
        self._full[y0:y1, x0:x1] = mask.crop
        self._last = (x0, y0, x1, y1)
        return self._full


def decode_mask(
    value: Any,
    box_xyxy_px: Sequence[int],
    width_px: int,
    height_px: int,
    *,
    threshold_u8: int = 127,
) -> BoxMask:
    """The model's ``mask`` for the object in ``box_xyxy_px`` of a ``width_px`` x
    ``height_px`` upright image.

    A PNG map is foreground where its value, resized to the box, is strictly above
    ``threshold_u8``; a polygon is clipped to the box. Raises `UnsupportedMask` when the
    value is no mask we can decode (the message says which format and why), and
    ValueError when the box or threshold is not valid input (a caller's bug).
    """
    if isinstance(threshold_u8, bool) or not isinstance(threshold_u8, int):
        raise ValueError(f"threshold_u8 must be an integer 0-255, got {threshold_u8!r}")
    if not 0 <= threshold_u8 <= 255:
        raise ValueError(f"threshold_u8 must be 0-255, got {threshold_u8}")
    x0, y0, x1, y1 = _clipped_box(box_xyxy_px, width_px, height_px)
    box_width_px, box_height_px = x1 - x0, y1 - y0

    if isinstance(value, str):
        probability_u8 = _png_map_of(value)
        if box_width_px == 0 or box_height_px == 0:
            return _empty(x0, y0, box_width_px, box_height_px)
        resized = _resized(probability_u8, box_width_px, box_height_px)
        return BoxMask(x0, y0, resized > threshold_u8)
    if isinstance(value, list | tuple):
        polygons = _polygons_of(value)
        if box_width_px == 0 or box_height_px == 0:
            return _empty(x0, y0, box_width_px, box_height_px)
        crop = np.zeros((box_height_px, box_width_px), dtype=np.bool_)
        scale = np.array([width_px, height_px], dtype=np.float64) / BOX_2D_SCALE
        origin = np.array([x0, y0], dtype=np.float64)
        for polygon in polygons:
            crop |= _rasterize_even_odd(polygon * scale - origin, box_height_px, box_width_px)
        return BoxMask(x0, y0, crop)
    if value is None:
        raise UnsupportedMask("mask is null")
    raise UnsupportedMask(
        f"mask is {_json_type(value)}, not a PNG string or a polygon list: {_preview(value)}"
    )


# --- PNG probability maps -----------------------------------------------------------


def _resized(map_u8: NDArray[np.uint8], width_px: int, height_px: int) -> NDArray[np.uint8]:
    """The map resized to its box, each direction on its own. Enlarging: bilinear, as
    Google's guide does (smooth edges across the enlarged map's pixels). Shrinking:
    nearest. There the guide's bilinear averages 2-5 map pixels per box pixel (Pillow
    widens its filter when shrinking) at 15-20 times nearest's cost, and once thresholded
    the two differ only on edge pixels: `benchmarks/masks.py` prints how many (on the
    real fixtures, about as many as OpenCV's plain bilinear moves)."""
    map_height_px, map_width_px = map_u8.shape
    # a view of the map's bytes, not a copy (fromarray copies them since Pillow 13)
    image = Image.frombuffer(
        "L", (map_width_px, map_height_px), np.ascontiguousarray(map_u8), "raw", "L", 0, 1
    )
    if (width_px > map_width_px) == (height_px > map_height_px):
        # both enlarged (bilinear) or neither (nearest): one call, which Pillow runs as the
        # same two passes
        both = (
            _filter(width_px, map_width_px)
            if width_px != map_width_px
            else _filter(height_px, map_height_px)
        )
        return np.asarray(image.resize((width_px, height_px), both))
    if height_px < map_height_px:  # shrink first: the enlarging pass then has fewer rows
        image = image.resize((map_width_px, height_px), Image.Resampling.NEAREST)
    if width_px != map_width_px:
        image = image.resize((width_px, image.height), _filter(width_px, map_width_px))
    if height_px > map_height_px:
        image = image.resize((width_px, height_px), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _filter(size_px: int, map_size_px: int) -> Image.Resampling:
    return Image.Resampling.BILINEAR if size_px > map_size_px else Image.Resampling.NEAREST


def _png_map_of(text: str) -> NDArray[np.uint8]:
    """The 8-bit probability map (rows, cols) in a mask string, or UnsupportedMask."""
    stripped = text.strip()
    if not stripped:
        raise UnsupportedMask("mask is an empty string")
    if len(stripped) > MASK_MAX_CHARS:
        raise UnsupportedMask(
            f"mask string of {len(stripped):,} characters is over the cap of "
            f"{MASK_MAX_CHARS:,} (not a real mask)"
        )
    if _SEG_TOKEN.search(stripped):
        raise UnsupportedMask("segmentation tokens (<seg_N>) need the model's decoder")
    if stripped[:5].lower() == "data:":
        header, comma, payload = stripped.partition(",")
        media_type = header[5:].split(";")[0].strip() or "no media type"
        if not comma or ";base64" not in header.lower():
            raise UnsupportedMask(f"data URI ({media_type}) is not base64 data")
        data = _base64_bytes(payload, what=f"data URI ({media_type})")
        if not data.startswith(_PNG_SIGNATURE):
            raise UnsupportedMask(f"data URI ({media_type}) does not hold a PNG")
        return _decode_png_u8(data)
    if stripped.startswith(_PNG_SIGNATURE_BASE64):
        return _decode_png_u8(_base64_bytes(stripped, what="bare base64 PNG"))
    raise UnsupportedMask(
        f"unknown mask string (not a PNG data URI, base64 PNG or polygon): {_preview(stripped)}"
    )


def _base64_bytes(payload: str, *, what: str) -> bytes:
    compact = _WHITESPACE.sub("", payload)
    # some writers drop the trailing "="; the PNG's own checks catch real damage
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UnsupportedMask(f"{what}: invalid base64 ({exc})") from None


def _decode_png_u8(data: bytes) -> NDArray[np.uint8]:
    """Decode untrusted PNG bytes into an 8-bit gray array (rows, cols)."""
    plain = _plain_gray_png(data)
    if plain is not None:
        return plain
    return np.asarray(_decode_png_l(data))


def _plain_gray_png(data: bytes) -> NDArray[np.uint8] | None:
    """The pixels of an 8-bit gray, non-interlaced PNG whose rows are all unfiltered
    (what Gemini writes), or None for any other PNG, valid or not, which Pillow then
    decodes or refuses with its own reasons.

    Pillow spends half its time on such a map outside zlib; this reads it with zlib and a
    numpy view. It checks what Pillow checks (chunk bounds and CRCs, a complete zlib
    stream of exactly the expected size) and applies the same pixel caps first.
    """
    size = len(data)
    pos = len(_PNG_SIGNATURE)
    header: tuple[int, int, int, int, int, int, int] | None = None
    compressed: list[bytes] = []
    while True:
        if pos + 12 > size:
            return None  # truncated: no IEND
        length, kind = _PNG_CHUNK_HEAD.unpack_from(data, pos)
        end = pos + 8 + length
        if end + 4 > size:
            return None
        body = data[pos + 8 : end]
        if zlib.crc32(data[pos + 4 : end]) != _PNG_CRC.unpack_from(data, end)[0]:
            return None
        if header is None:
            if kind != b"IHDR" or length != _PNG_IHDR.size:
                return None
            header = _PNG_IHDR.unpack(body)
            width_px, height_px, bit_depth, colour_type, method, filtering, interlace = header
            if (bit_depth, colour_type, method, filtering, interlace) != (8, 0, 0, 0, 0):
                return None
            if width_px == 0 or height_px == 0:
                return None
            _check_map_pixels(width_px, height_px)
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
        elif kind == b"PLTE" or not kind[:1].islower():
            return None  # a palette in a gray image, or a critical chunk we do not know
        pos = end + 4
    width_px, height_px = header[0], header[1]
    expected = height_px * (width_px + 1)  # each row: its filter byte, then the pixels
    inflater = zlib.decompressobj()
    try:
        # max_length bounds the output whatever the input claims: no zlib bomb
        raw = inflater.decompress(b"".join(compressed), expected)
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unconsumed_tail:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height_px, width_px + 1)
    if rows[:, 0].any():
        return None  # filtered rows (Sub, Up, Average, Paeth): Pillow undoes them
    return rows[:, 1:]


def _check_map_pixels(width_px: int, height_px: int) -> None:
    """Refuse a map over our cap or Pillow's decompression-bomb limit, before decoding."""
    # Our cap is the guard: Pillow's threshold is process-global, and a worker whose
    # GVW_MAX_IMAGE_PIXELS is above it raises it (worker.images.prepare.raise_pillow_threshold).
    if width_px * height_px > MASK_MAX_PIXELS:
        raise UnsupportedMask(
            f"PNG mask of {width_px}x{height_px} px is over the cap of {MASK_MAX_PIXELS:,} pixels"
        )
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width_px * height_px > limit:
        raise UnsupportedMask(
            f"PNG mask is a decompression bomb: {width_px}x{height_px} px is over {limit:,} pixels"
        )


def _decode_png_l(data: bytes) -> Image.Image:
    """Decode untrusted PNG bytes into mode L, with the same guards as input images."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # process-global: a truncated mask would be padded with grey and read as if whole
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    try:
        # catch_warnings swaps process-global state (not thread-safe); the explicit pixel
        # cap below is the real guard and the bomb warning as an error the second line
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                _check_map_pixels(*im.size)
                im.load()  # inside the guard: truncated or corrupt data fails here
                return _as_l(im)
    except UnsupportedMask:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UnsupportedMask(f"PNG mask is a decompression bomb: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:
        # decoders of untrusted bytes fail in many ways (OSError "image file is truncated",
        # SyntaxError "broken PNG file", zlib.error, ...): all mean "not a usable PNG"
        raise UnsupportedMask(
            f"PNG mask is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from None


def _as_l(im: Image.Image) -> Image.Image:
    if im.mode == "L":
        return im  # loaded: leaving the `with` block closes only the file, not the pixels
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        # Pillow's convert("L") clips 16-bit values at 255; a 16-bit probability map
        # means 0-65535, so scale it instead
        wide = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
    # 1, P, LA, RGB, RGBA, ...: luminance is what a gray map drawn in colour means
    return im.convert("L")


# --- polygons -----------------------------------------------------------------------


def _polygons_of(value: list[Any] | tuple[Any, ...]) -> list[NDArray[np.float64]]:
    """``[[x, y], ...]`` or a list of those, as (n, 2) float arrays on 0-1000."""
    if not value:
        raise UnsupportedMask("polygon mask is an empty list")
    polygons = [value] if _is_point(value[0]) else list(value)
    arrays: list[NDArray[np.float64]] = []
    total_points = 0
    for number, polygon in enumerate(polygons):
        where = "polygon" if len(polygons) == 1 else f"polygon {number}"
        if not isinstance(polygon, list | tuple) or not all(_is_point(p) for p in polygon):
            raise UnsupportedMask(
                f"{where} is not a list of [x, y] number pairs: {_preview(polygon)}"
            )
        if len(polygon) < 3:
            raise UnsupportedMask(f"{where} has {len(polygon)} points; a polygon needs 3")
        total_points += len(polygon)
        if total_points > POLYGON_MAX_POINTS:
            raise UnsupportedMask(f"polygon mask has over {POLYGON_MAX_POINTS:,} points")
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if np.abs(points).max() > POLYGON_MAX_ABS_COORDINATE:
            raise UnsupportedMask(
                f"{where} has coordinates beyond ±{POLYGON_MAX_ABS_COORDINATE:,} "
                f"(expected 0-{BOX_2D_SCALE})"
            )
        arrays.append(points)
    return arrays


def _is_point(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_float_safe, value))


def _is_float_safe(value: Any) -> bool:
    """A real number that converts to a finite float. Not math.isfinite alone: a JSON
    integer like 10**400 makes it raise OverflowError. Magnitude is checked later, with
    its own message (`POLYGON_MAX_ABS_COORDINATE`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return -_FLOAT_SAFE_INT < value < _FLOAT_SAFE_INT
    return math.isfinite(value)


_FLOAT_SAFE_INT: Final = 10**300


def _rasterize_even_odd(
    points_px: NDArray[np.float64], height_px: int, width_px: int
) -> NDArray[np.bool_]:
    """Pixels of a ``height_px`` x ``width_px`` grid whose centres lie inside the polygon
    (x first, in pixels of that grid), by the even-odd rule, clipped to the grid.

    Scanline without per-pixel loops: every edge is crossed by the row centres in its
    y-span; each crossing toggles "inside" from the first pixel centre at or right of it,
    and a running XOR along each row turns the toggles into the filled rows.
    """
    xa, ya = points_px[:, 0], points_px[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    # Row r (centre r + 0.5) crosses an edge when low <= r + 0.5 < high (half-open, so a
    # vertex shared by two edges counts once and horizontal edges never count).
    low, high = np.minimum(ya, yb), np.maximum(ya, yb)
    first_row = np.clip(np.ceil(low - 0.5), 0, height_px).astype(np.intp)
    end_row = np.clip(np.ceil(high - 0.5), 0, height_px).astype(np.intp)
    rows_per_edge = np.maximum(end_row - first_row, 0)
    total = int(rows_per_edge.sum())
    toggles = np.zeros((height_px, width_px + 1), dtype=np.uint8)
    if total:
        edge = np.repeat(np.arange(len(xa)), rows_per_edge)
        offset = np.arange(total) - np.repeat(
            np.cumsum(rows_per_edge) - rows_per_edge, rows_per_edge
        )
        row = first_row[edge] + offset
        centre_y = row + 0.5
        t = (centre_y - ya[edge]) / (yb[edge] - ya[edge])
        crossing_x = xa[edge] + t * (xb[edge] - xa[edge])
        # toggles left of the grid act on its first column, right of it on none
        column = np.clip(np.ceil(crossing_x - 0.5), 0, width_px).astype(np.intp)
        # uint8 wraps at 256, an even number, so the parity survives any count
        np.add.at(toggles, (row, column), 1)
    inside = np.bitwise_xor.accumulate(toggles & 1, axis=1)
    return inside[:, :width_px].astype(np.bool_)


# --- small helpers ------------------------------------------------------------------


def _clipped_box(
    box_xyxy_px: Sequence[int], width_px: int, height_px: int
) -> tuple[int, int, int, int]:
    if len(box_xyxy_px) != 4 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in box_xyxy_px
    ):
        raise ValueError(f"box_xyxy_px must be 4 integers, got {box_xyxy_px!r}")
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"image size must be positive, got {width_px}x{height_px}")
    x0, y0, x1, y1 = (int(v) for v in box_xyxy_px)
    # tasks.geometry never gives a box outside the image or under 1 px; clipping keeps a
    # caller's stray box harmless (at worst an empty mask) instead of failing the job
    x0, x1 = min(max(x0, 0), width_px), min(max(x1, 0), width_px)
    y0, y1 = min(max(y0, 0), height_px), min(max(y1, 0), height_px)
    return x0, y0, max(x1, x0), max(y1, y0)


def _empty(x0: int, y0: int, width_px: int, height_px: int) -> BoxMask:
    return BoxMask(x0, y0, np.zeros((height_px, width_px), dtype=np.bool_))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"
