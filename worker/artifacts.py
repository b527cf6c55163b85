"""Pictures for people: overlays of boxes and labels on the upright image.

Artifact names never come from model text: callers name files from an index and a slug.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.base import TaskOutput
from tasks.masks import BoxMask
from tasks.rle import encode_box_mask_rle
from worker.images import PreparedImage
from worker.jobs import Job
from worker.ports import Stores
from worker.storage import join_uri

# Distinct, colour-blind-friendly-ish hues (Okabe-Ito order), cycled per object.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (0, 0, 0),
)
_SLUG_MAX_CHARS = 48


def slug(label: str) -> str:
    """`[a-z0-9-]{1,48}` from any label: safe as part of a key on every store."""
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return text[:_SLUG_MAX_CHARS].strip("-") or "object"


def encode_mask_png(mask: BoxMask, width_px: int, height_px: int) -> bytes:
    """A full-size 8-bit mask PNG (0 or 255), the size of the upright image.

    Built from the box-sized crop one object at a time, so a 12 MP image with 25 objects
    never holds 25 full masks in memory.
    """
    full = np.zeros((height_px, width_px), dtype=np.uint8)
    h, w = mask.crop.shape
    full[mask.y0_px : mask.y0_px + h, mask.x0_px : mask.x0_px + w][mask.crop] = 255
    buffer = io.BytesIO()
    # masks are mostly zeros: level 6 costs little more than 1 and halves the bytes
    Image.fromarray(full).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def render_overlay_png(
    upright: Image.Image,
    objects: Sequence[Mapping[str, Any]],
    *,
    masks: Sequence[BoxMask | None] | None = None,
    max_side_px: int = 2048,
    compress_level: int = 1,
) -> bytes:
    """The image with each object's translucent mask, pixel `box` ([x0, y0, x1, y1]) and
    label drawn on it.

    Overlays are for people: a 12 MP photo is reduced by a whole factor until its long side
    fits `max_side_px` (0 keeps full size), because a full-size PNG of a photo weighs ~20 MB
    and takes a second to encode, for no visible gain on a screen.
    """
    factor = 1
    if max_side_px > 0:
        factor = max(1, math.ceil(max(upright.width, upright.height) / max_side_px))
    # reduce() and convert() both return new images: the caller's stays untouched
    canvas = (upright.reduce(factor) if factor > 1 else upright).convert("RGB")
    if masks:
        canvas = _paint_masks(canvas, masks, factor)
    draw = ImageDraw.Draw(canvas)
    # line width and text size follow the canvas so labels stay readable at any size
    scale = max(canvas.width, canvas.height) / 1000
    line_px = max(2, round(3 * scale))
    font = _font(max(12, round(16 * scale)))
    for index, obj in enumerate(objects):
        colour = _PALETTE[index % len(_PALETTE)]
        x0, y0, x1, y1 = (round(int(v) / factor) for v in obj["box"])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line_px)
        text = str(obj.get("label", ""))[:80]
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            text_w, text_h = right - left, bottom - top
            pad = line_px
            # the label sits above the box, or inside it when the box touches the top edge
            ty = y0 - text_h - 2 * pad if y0 - text_h - 2 * pad >= 0 else y0
            draw.rectangle((x0, ty, x0 + text_w + 2 * pad, ty + text_h + 2 * pad), fill=colour)
            draw.text((x0 + pad - left, ty + pad - top), text, fill=_ink(colour), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


_MASK_ALPHA = 0.45


def _paint_masks(canvas: Image.Image, masks: Sequence[BoxMask | None], factor: int) -> Image.Image:
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    for index, mask in enumerate(masks):
        if mask is None or not mask.crop.any():
            continue
        # the crop at the canvas's scale: every factor-th pixel is enough for a picture
        crop = mask.crop[::factor, ::factor]
        y0, x0 = mask.y0_px // factor, mask.x0_px // factor
        h = min(crop.shape[0], pixels.shape[0] - y0)
        w = min(crop.shape[1], pixels.shape[1] - x0)
        region = pixels[y0 : y0 + h, x0 : x0 + w]
        colour = np.asarray(_PALETTE[index % len(_PALETTE)], dtype=np.float32)
        selected = crop[:h, :w]
        region[selected] = region[selected] * (1 - _MASK_ALPHA) + colour * _MASK_ALPHA
    return Image.fromarray(pixels.astype(np.uint8))


def _font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _ink(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if (299 * r + 587 * g + 114 * b) / 1000 > 128 else (255, 255, 255)


# Tasks whose output objects carry pixel boxes on the first image get an overlay.
OVERLAY_TASKS = frozenset({"detect", "segment"})


def write_artifacts(
    job: Job,
    stores: Stores,
    overlay_max_side_px: int,
    folder: str,
    attempt_id: str,
    prepared: Sequence[PreparedImage],
    parsed: TaskOutput,
    written: list[str],
) -> dict[str, str]:
    """Mask PNGs and the overlay of the first image (``prepared[0]``, with its pixels),
    under this attempt's own folder. Mask entries are added to
    `parsed.output["objects"]` (uri, area, COCO RLE)."""
    artifacts: dict[str, str] = {}
    objects = parsed.output.get("objects")
    if job.task not in OVERLAY_TASKS or not isinstance(objects, list) or not prepared:
        return artifacts
    base = join_uri(folder, "attempts", attempt_id)
    image = prepared[0]
    if image.upright is None:
        raise ValueError("the overlay's image was prepared without its pixels")
    masks: list[BoxMask | None] = list(parsed.masks or [None] * len(objects))
    for index, (obj, mask) in enumerate(zip(objects, masks, strict=True)):
        if mask is None:
            continue
        # names come from the index and a slug, never from the raw label
        uri = join_uri(base, "masks", f"{index:03d}-{slug(str(obj.get('label', '')))}.png")
        png = encode_mask_png(mask, image.width_px, image.height_px)
        stores.put_bytes(uri, png, content_type="image/png")
        written.append(uri)
        obj["mask"] = uri
        obj["mask_area"] = mask.area_px()
        obj["mask_rle"] = encode_box_mask_rle(mask, image.width_px, image.height_px)
    png = render_overlay_png(image.upright, objects, masks=masks, max_side_px=overlay_max_side_px)
    uri = join_uri(base, "overlay.png")
    stores.put_bytes(uri, png, content_type="image/png")
    written.append(uri)
    artifacts["overlay"] = uri
    return artifacts
