"""Pictures for people: overlays of boxes and labels on the upright image.

Artifact names never come from model text: callers name files from an index and a slug.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.base import TaskOutput
from tasks.mask_png import encode_mask_png
from tasks.masks import BoxMask
from tasks.rle import encode_box_mask_rle
from worker.contract.jobs import Job
from worker.images.prepare import PreparedImage
from worker.storage import join_uri
from worker.storage.port import Stores

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


# An overlay is a picture for people: a photo's overlay is a JPEG (a 2,000 px PNG of a
# photo takes 200 ms to encode, four times the photo's own decode; JPEG takes 15), any
# other image's a PNG, as lossless as the image. Masks themselves are always PNG.
_PHOTO_FORMATS = frozenset({"JPEG", "HEIC", "HEIF"})
_OVERLAY_JPEG_QUALITY = 85


def overlay_format(source_format: str) -> tuple[str, str, str]:
    """(Pillow format, file extension, content type) of an image's overlay."""
    if source_format in _PHOTO_FORMATS:
        return "JPEG", "jpg", "image/jpeg"
    return "PNG", "png", "image/png"


def render_overlay(
    upright: Image.Image,
    objects: Sequence[Mapping[str, Any]],
    *,
    masks: Sequence[BoxMask | None] | None = None,
    max_side_px: int = 2048,
    image_format: str = "PNG",
    full_size_px: tuple[int, int] | None = None,
) -> bytes:
    """The image with each object's translucent mask, pixel `box` ([x0, y0, x1, y1]) and
    label drawn on it, encoded as `image_format` ("PNG" or "JPEG").

    Overlays are for people: a 12 MP photo is reduced by a whole factor until its long side
    fits `max_side_px` (0 keeps full size), because a full-size overlay of a photo weighs
    megabytes and takes a second to encode, for no visible gain on a screen.

    ``upright`` may be a smaller decode of the picture (`worker.images.prepare` decodes a JPEG at
    the scale the overlay needs); ``full_size_px`` is then the picture's own size, the
    frame of the boxes and masks.
    """
    full_width, full_height = full_size_px or upright.size
    factor = 1
    if max_side_px > 0:
        factor = max(1, math.ceil(max(full_width, full_height) / max_side_px))
    canvas = _canvas(upright, (math.ceil(full_width / factor), math.ceil(full_height / factor)))
    if canvas.mode != "RGB":
        canvas = canvas.convert("RGB")
    if masks and any(mask is not None for mask in masks):
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
    if image_format == "JPEG":
        canvas.save(buffer, format="JPEG", quality=_OVERLAY_JPEG_QUALITY)
    else:
        canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _canvas(upright: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``upright`` at ``size``, as a new image (the caller's stays untouched): a whole-
    factor reduce where one lands on it, else a bilinear resize."""
    if upright.size == size:
        return upright.copy()
    factor = upright.width // size[0]
    if factor > 1:
        reduced = upright.reduce(factor)
        if reduced.size == size:
            return reduced
    return upright.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def render_overlay_png(
    upright: Image.Image,
    objects: Sequence[Mapping[str, Any]],
    *,
    masks: Sequence[BoxMask | None] | None = None,
    max_side_px: int = 2048,
) -> bytes:
    """`render_overlay` as a PNG."""
    return render_overlay(upright, objects, masks=masks, max_side_px=max_side_px)


_MASK_ALPHA = 0.45


def _paint_masks(canvas: Image.Image, masks: Sequence[BoxMask | None], factor: int) -> Image.Image:
    """Each mask blended in its colour at `_MASK_ALPHA`, by Pillow's `paste` of the colour
    through the mask (the blend runs in C on the canvas's own bytes; the canvas is the
    caller's new image, painted in place)."""
    alpha = round(_MASK_ALPHA * 255)
    for index, mask in enumerate(masks):
        if mask is None or not mask.crop.any():
            continue
        # the crop at the canvas's scale: every factor-th pixel is enough for a picture
        crop = mask.crop[::factor, ::factor]
        y0, x0 = mask.y0_px // factor, mask.x0_px // factor
        h = min(crop.shape[0], canvas.height - y0)
        w = min(crop.shape[1], canvas.width - x0)
        if h <= 0 or w <= 0:
            continue
        stencil = Image.fromarray(crop[:h, :w].view(np.uint8) * np.uint8(alpha))
        canvas.paste(_PALETTE[index % len(_PALETTE)], (x0, y0, x0 + w, y0 + h), stencil)
    return canvas


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


@dataclass(frozen=True)
class Artifacts:
    """What an attempt wrote: the output with its objects' mask entries, the artifacts
    the record names (the overlay), and every URI written (deleted if another attempt
    commits first)."""

    output: dict[str, Any]
    named: dict[str, str] = field(default_factory=dict)
    written: tuple[str, ...] = ()


def write_artifacts(
    job: Job,
    stores: Stores,
    overlay_max_side_px: int,
    folder: str,
    attempt_id: str,
    size_px: tuple[int, int] | None,
    picture: PreparedImage | None,
    parsed: TaskOutput,
) -> Artifacts:
    """Mask PNGs, the size of the first (upright) image (``size_px``), and its overlay,
    drawn on ``picture`` (prepared with its pixels; none when the job says
    ``options.overlay: false``), under this attempt's own folder. The output returned is
    ``parsed.output`` with each masked object's entry (uri, area, COCO RLE); ``parsed``
    is left as it was."""
    objects = parsed.output.get("objects")
    if job.task not in OVERLAY_TASKS or not isinstance(objects, list) or size_px is None:
        return Artifacts(parsed.output)
    base = join_uri(folder, "attempts", attempt_id)
    width_px, height_px = size_px
    masks: list[BoxMask | None] = list(parsed.masks or [None] * len(objects))
    written: list[str] = []
    with_masks: list[Any] = []
    for index, (obj, mask) in enumerate(zip(objects, masks, strict=True)):
        if mask is None:
            with_masks.append(obj)
            continue
        # names come from the index and a slug, never from the raw label
        uri = join_uri(base, "masks", f"{index:03d}-{slug(str(obj.get('label', '')))}.png")
        png = encode_mask_png(mask, width_px, height_px)
        stores.put_bytes(uri, png, content_type="image/png")
        written.append(uri)
        with_masks.append(
            {
                **obj,
                "mask": uri,
                "mask_area": mask.area_px(),
                "mask_rle": encode_box_mask_rle(mask, width_px, height_px),
            }
        )
    output = {**parsed.output, "objects": with_masks}
    if not job.options.overlay:
        return Artifacts(output, written=tuple(written))
    if picture is None or picture.upright is None:
        raise ValueError("the overlay's image was prepared without its pixels")
    image_format, extension, content_type = overlay_format(picture.source_format)
    drawn = render_overlay(
        picture.upright,
        with_masks,
        masks=masks,
        max_side_px=overlay_max_side_px,
        image_format=image_format,
        full_size_px=size_px,
    )
    uri = join_uri(base, f"overlay.{extension}")
    stores.put_bytes(uri, drawn, content_type=content_type)
    written.append(uri)
    return Artifacts(output, {"overlay": uri}, tuple(written))
