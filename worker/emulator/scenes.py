"""Synthetic scenes with known truth: flat-coloured shapes on a plain background.

`make_scene` draws non-overlapping rectangles, circles, ellipses and triangles, each in its
own palette colour, and returns the image together with every shape's label, pixel box and
pixel mask. Tests compare what the worker reports (through the emulator) with this truth.

Conventions:
- `box_xyxy_px` is `(x_min, y_min, x_max, y_max)` in pixel-edge coordinates of the image as
  generated (upright): `x_max`/`y_max` are exclusive, so a shape covering columns 10..19
  has `x_min=10, x_max=20`. Width is `x_max - x_min`.
- `mask` is a boolean array of shape `(height_px, width_px)`; it is exactly the set of
  pixels painted in the shape's colour (no anti-aliasing, so the colours stay flat).
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from worker.emulator.palette import COLOUR_NAMES, KINDS, PALETTE_RGB

WHITE_RGB: Final = (255, 255, 255)
LIGHT_GREY_RGB: Final = (225, 225, 225)

# Ellipses are drawn clearly elongated so that nobody (the detector included) can mistake
# one for a circle; circles are drawn exactly round.
_ELLIPSE_MIN_ASPECT: Final = 1.6
_MAX_PLACEMENT_TRIES: Final = 400


@dataclass(frozen=True)
class ShapeSpec:
    """What to draw. Leave `box_xyxy_px` as None to let `make_scene` place it."""

    colour_name: str
    kind: str
    box_xyxy_px: tuple[int, int, int, int] | None = None

    @classmethod
    def from_label(cls, label: str) -> ShapeSpec:
        """`"red circle"` -> `ShapeSpec("red", "circle")`."""
        colour_name, _, kind = label.strip().partition(" ")
        return cls(colour_name=colour_name, kind=kind)


@dataclass(frozen=True)
class TrueShape:
    label: str
    colour_name: str
    kind: str
    box_xyxy_px: tuple[int, int, int, int]
    mask: npt.NDArray[np.bool_] = field(repr=False, compare=False)

    def box_2d(self, width_px: int, height_px: int) -> list[int]:
        """The box as Gemini would write it: `[ymin, xmin, ymax, xmax]`, 0-1000, y first."""
        x_min, y_min, x_max, y_max = self.box_xyxy_px
        return [
            round(y_min / height_px * 1000),
            round(x_min / width_px * 1000),
            round(y_max / height_px * 1000),
            round(x_max / width_px * 1000),
        ]


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    shapes: list[TrueShape]
    background_rgb: tuple[int, int, int]

    @property
    def width_px(self) -> int:
        return self.image.width

    @property
    def height_px(self) -> int:
        return self.image.height

    @property
    def labels(self) -> list[str]:
        return [shape.label for shape in self.shapes]

    def png_bytes(self) -> bytes:
        return encode_png(self.image)

    def jpeg_bytes(self, quality: int = 95) -> bytes:
        return encode_jpeg(self.image, quality=quality)


def make_scene(
    width_px: int,
    height_px: int,
    shapes: int | Sequence[str | ShapeSpec] = 3,
    seed: int = 0,
    background: tuple[int, int, int] = WHITE_RGB,
) -> Scene:
    """Draw a scene. `shapes` is a count (random distinct colours and kinds) or a list of
    labels like `"red circle"` / `ShapeSpec`s. Colours must be distinct within a scene so
    every shape is its own colour; the same seed always gives the same scene."""
    rng = random.Random(seed)
    specs = _resolve_specs(shapes, rng)
    boxes = _place_boxes(specs, width_px, height_px, rng)

    image = Image.new("RGB", (width_px, height_px), background)
    true_shapes: list[TrueShape] = []
    for spec, box in zip(specs, boxes, strict=True):
        mask_image = Image.new("L", (width_px, height_px), 0)
        _draw_kind(ImageDraw.Draw(mask_image), spec.kind, box, rng)
        image.paste(PALETTE_RGB[spec.colour_name], mask=mask_image)
        mask = np.asarray(mask_image) > 0
        true_shapes.append(
            TrueShape(
                label=f"{spec.colour_name} {spec.kind}",
                colour_name=spec.colour_name,
                kind=spec.kind,
                box_xyxy_px=_mask_box_xyxy(mask),
                mask=mask,
            )
        )
    return Scene(image=image, shapes=true_shapes, background_rgb=background)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    # 4:4:4 chroma keeps flat colours flat up to the edge; with 4:2:0 the colour of a thin
    # tip (a triangle's apex) bleeds over two pixels.
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _resolve_specs(shapes: int | Sequence[str | ShapeSpec], rng: random.Random) -> list[ShapeSpec]:
    if isinstance(shapes, int):
        if not 0 <= shapes <= len(COLOUR_NAMES):
            raise ValueError(f"a scene holds 0 to {len(COLOUR_NAMES)} shapes, not {shapes}")
        colours = rng.sample(COLOUR_NAMES, shapes)
        return [ShapeSpec(colour, rng.choice(KINDS)) for colour in colours]
    specs = [ShapeSpec.from_label(s) if isinstance(s, str) else s for s in shapes]
    for spec in specs:
        if spec.colour_name not in PALETTE_RGB:
            raise ValueError(f"unknown colour {spec.colour_name!r}; choose from {COLOUR_NAMES}")
        if spec.kind not in KINDS:
            raise ValueError(f"unknown kind {spec.kind!r}; choose from {KINDS}")
    colours = [spec.colour_name for spec in specs]
    if len(set(colours)) != len(colours):
        raise ValueError("each shape in a scene must have its own colour")
    return specs


def _place_boxes(
    specs: Sequence[ShapeSpec], width_px: int, height_px: int, rng: random.Random
) -> list[tuple[int, int, int, int]]:
    """Random non-overlapping boxes, kept apart by a gap so shapes never touch."""
    short_side = min(width_px, height_px)
    gap = max(4, short_side // 40)
    placed: list[tuple[int, int, int, int]] = [s.box_xyxy_px for s in specs if s.box_xyxy_px]
    boxes: list[tuple[int, int, int, int]] = []
    # fewer shapes leave room for bigger ones
    max_side = short_side * (0.45 if len(specs) <= 3 else 0.32)
    min_side = max(12.0, short_side * 0.10)
    for spec in specs:
        if spec.box_xyxy_px is not None:
            boxes.append(spec.box_xyxy_px)
            continue
        for _ in range(_MAX_PLACEMENT_TRIES):
            box_w, box_h = _random_size(spec.kind, min_side, max_side, rng)
            if box_w >= width_px - 2 * gap or box_h >= height_px - 2 * gap:
                continue
            x0 = rng.randint(gap, width_px - gap - box_w)
            y0 = rng.randint(gap, height_px - gap - box_h)
            box = (x0, y0, x0 + box_w, y0 + box_h)
            if all(not _boxes_near(box, other, gap) for other in placed):
                placed.append(box)
                boxes.append(box)
                break
        else:
            raise ValueError(
                f"cannot place {len(specs)} shapes in {width_px}x{height_px} without overlap"
            )
    return boxes


def _random_size(
    kind: str, min_side: float, max_side: float, rng: random.Random
) -> tuple[int, int]:
    if kind == "circle":
        side = round(rng.uniform(min_side, max_side))
        return side, side
    if kind == "ellipse":
        long_side = rng.uniform(max(min_side * _ELLIPSE_MIN_ASPECT, max_side * 0.7), max_side)
        short_side = rng.uniform(min_side, long_side / _ELLIPSE_MIN_ASPECT)
        sides = (round(long_side), round(short_side))
        return sides if rng.random() < 0.5 else (sides[1], sides[0])
    return round(rng.uniform(min_side, max_side)), round(rng.uniform(min_side, max_side))


def _boxes_near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (
        a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
    )


def _draw_kind(
    draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], rng: random.Random
) -> None:
    x0, y0, x1, y1 = box
    # ImageDraw treats the second corner as inclusive; the box is exclusive at x1/y1
    last_x, last_y = x1 - 1, y1 - 1
    if kind == "rectangle":
        draw.rectangle((x0, y0, last_x, last_y), fill=255)
    elif kind in ("circle", "ellipse"):
        draw.ellipse((x0, y0, last_x, last_y), fill=255)
    elif kind == "triangle":
        # one side on the box edge and the apex on the opposite edge: area = half the box,
        # pointing up or down
        mid_x = (x0 + last_x) / 2
        if rng.random() < 0.5:
            points = [(x0, last_y), (last_x, last_y), (mid_x, y0)]
        else:
            points = [(x0, y0), (last_x, y0), (mid_x, last_y)]
        draw.polygon(points, fill=255)
    else:
        raise ValueError(f"unknown kind {kind!r}")


def _mask_box_xyxy(mask: npt.NDArray[np.bool_]) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
