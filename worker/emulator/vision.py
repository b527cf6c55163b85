"""Finds flat-coloured shapes in an image with numpy alone: what the emulator "sees".

The emulator looks at the pixel grid exactly as sent. It never applies EXIF orientation, so
a client that forgets to rotate an image upright gets boxes for the sideways picture, as it
would from the real model.

Steps (all array operations, no per-pixel Python loops):
1. Decode and shrink to at most `ANALYSIS_MAX_PIXELS` (JPEG via DCT scaling, which is
   cheap); boxes are relative (0-1), so the scale does not matter to the answer.
2. Background = the most common colour on the image border.
3. Foreground = pixels far from the background; each is given the nearest palette colour if
   it is close to one (edge pixels blended with the background are left out, so they cannot
   turn into a thin ring of some other colour).
4. One-pixel erosion, then connected components per colour: runs of equal colour per row,
   runs linked to overlapping runs of the row above (4-connectivity), linked runs merged by
   vectorised union-find (hooking + pointer jumping).
5. Per component, the box and mask are re-measured on the un-eroded crop with a midpoint
   rule (a pixel belongs to the shape if it is closer to the shape's colour than to the
   background), which gives unbiased edges even after blending by JPEG or downscaling.
6. Kind from the fill ratio of mask vs box: rectangle ~1.0, ellipse ~0.785, triangle ~0.5;
   an ellipse whose box is square (in pixels of the image as sent) is a circle.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from worker.emulator.palette import COLOUR_NAMES, PALETTE_ARRAY_F32

ANALYSIS_MAX_PIXELS: Final = 1_500_000
_FOREGROUND_MIN_DIST: Final = 60.0  # RGB distance from the background
_PALETTE_MAX_DIST: Final = 70.0  # RGB distance to the nearest palette colour
# components smaller than this share of the analysed image are noise (JPEG specks, text)
_MIN_AREA_FRACTION: Final = 0.0002
_MIN_AREA_PX: Final = 24
_REFINE_MARGIN_PX: Final = 2
_CIRCLE_MAX_ASPECT: Final = 1.15
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"heif"}
)


class UndecodableImage(ValueError):
    """The bytes are not an image Pillow can decode."""


@dataclass(frozen=True)
class SeenShape:
    colour_name: str
    kind: str
    # (x_min, y_min, x_max, y_max) as fractions 0-1 of the image as sent, edges exclusive
    box_xyxy_norm: tuple[float, float, float, float]
    fill_ratio: float
    # the shape's pixels inside its box, at analysis resolution
    mask_crop: npt.NDArray[np.bool_] = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.colour_name} {self.kind}"

    def box_2d(self) -> list[int]:
        """`[ymin, xmin, ymax, xmax]` as 0-1000 integers, y first, as Gemini writes boxes."""
        x_min, y_min, x_max, y_max = self.box_xyxy_norm
        return [round(y_min * 1000), round(x_min * 1000), round(y_max * 1000), round(x_max * 1000)]


@dataclass(frozen=True)
class ImageAnalysis:
    width_px: int  # of the image as sent (raw pixel grid, EXIF ignored)
    height_px: int
    background_rgb: tuple[int, int, int]
    shapes: list[SeenShape]

    @property
    def background_name(self) -> str:
        r, g, b = self.background_rgb
        if min(r, g, b) >= 245:
            return "white"
        if max(r, g, b) - min(r, g, b) <= 20:
            return "light grey" if min(r, g, b) >= 170 else "grey" if min(r, g, b) >= 80 else "dark"
        return "plain"


def analyse_image_bytes(data: bytes) -> ImageAnalysis:
    """Decode `data` (PNG, JPEG, WebP, HEIC if pillow-heif is installed) and analyse it."""
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        _register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width_px, height_px = image.size
            target = _analysis_size(width_px, height_px)
            if image.format == "JPEG":
                # DCT-domain downscaling during decode: a 4000x3000 JPEG decodes at 1000x750
                image.draft("RGB", target)
            rgb = image.convert("RGB")
    except Exception as exc:  # Pillow raises many types for corrupt or truncated data
        raise UndecodableImage(str(exc)) from exc
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BOX)
    return _analyse_rgb(np.asarray(rgb), width_px, height_px)


@functools.cache
def _register_heif_opener() -> bool:
    """The API accepts HEIC/HEIF, Pillow alone cannot read them; pillow-heif (a dependency of
    the project, optional here) can. Without it such images are answered as undecodable."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def analyse_image(image: Image.Image) -> ImageAnalysis:
    """Analyse an already decoded image (its pixel grid as is)."""
    target = _analysis_size(image.width, image.height)
    rgb = image.convert("RGB")
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BOX)
    return _analyse_rgb(np.asarray(rgb), image.width, image.height)


def _analysis_size(width_px: int, height_px: int) -> tuple[int, int]:
    # a pixel budget rather than a side limit, so a long thin image keeps its short side
    scale = min(1.0, (ANALYSIS_MAX_PIXELS / (width_px * height_px)) ** 0.5)
    return max(1, round(width_px * scale)), max(1, round(height_px * scale))


def _analyse_rgb(rgb: npt.NDArray[np.uint8], width_px: int, height_px: int) -> ImageAnalysis:
    height, width = rgb.shape[:2]
    background = _border_mode_rgb(rgb)
    colour_ids = _classify_pixels(rgb, background)
    eroded = _erode_same_colour(colour_ids)
    components = _connected_components(eroded)

    min_area = max(_MIN_AREA_PX, _MIN_AREA_FRACTION * height * width)
    shapes: list[SeenShape] = []
    for colour_id, y0, x0, y1, x1, area in components:
        if area < min_area:
            continue
        shape = _measure_shape(rgb, background, colour_id, (x0, y0, x1, y1), width_px, height_px)
        if shape is not None:
            shapes.append(shape)
    shapes.sort(key=lambda s: (s.box_xyxy_norm[1], s.box_xyxy_norm[0]))
    return ImageAnalysis(
        width_px=width_px,
        height_px=height_px,
        background_rgb=(int(background[0]), int(background[1]), int(background[2])),
        shapes=shapes,
    )


def _border_mode_rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int32)
    # quantise so JPEG noise does not split the background into many colours
    keys = (border[:, 0] >> 4) << 8 | (border[:, 1] >> 4) << 4 | (border[:, 2] >> 4)
    mode_key = np.bincount(keys).argmax()
    return border[keys == mode_key].mean(axis=0).astype(np.float32)


def _classify_pixels(
    rgb: npt.NDArray[np.uint8], background: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """0 for background or unrecognised colour, else 1 + palette index."""
    height, width = rgb.shape[:2]
    pixels = rgb.reshape(-1, 3).astype(np.float32)
    dist2_bg = np.square(pixels - background).sum(axis=1)
    fg_index = np.flatnonzero(dist2_bg > _FOREGROUND_MIN_DIST**2)
    colour_ids = np.zeros(height * width, dtype=np.uint8)
    if fg_index.size:
        fg = pixels[fg_index]
        # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, as a matrix product (N x 3 @ 3 x K)
        dist2 = (
            np.square(fg).sum(axis=1, keepdims=True)
            - 2.0 * fg @ PALETTE_ARRAY_F32.T
            + np.square(PALETTE_ARRAY_F32).sum(axis=1)
        )
        nearest = dist2.argmin(axis=1)
        close = dist2[np.arange(nearest.size), nearest] < _PALETTE_MAX_DIST**2
        colour_ids[fg_index[close]] = nearest[close].astype(np.uint8) + 1
    return colour_ids.reshape(height, width)


def _erode_same_colour(colour_ids: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Keep a pixel only if its four neighbours have its colour: removes specks and the
    one-pixel fringes that JPEG leaves around edges."""
    keep = colour_ids != 0
    keep[1:, :] &= colour_ids[1:, :] == colour_ids[:-1, :]
    keep[:-1, :] &= colour_ids[:-1, :] == colour_ids[1:, :]
    keep[:, 1:] &= colour_ids[:, 1:] == colour_ids[:, :-1]
    keep[:, :-1] &= colour_ids[:, :-1] == colour_ids[:, 1:]
    return np.where(keep, colour_ids, 0).astype(np.uint8)


def _connected_components(
    colour_ids: npt.NDArray[np.uint8],
) -> list[tuple[int, int, int, int, int, int]]:
    """Components of equal non-zero colour: (colour_id, y0, x0, y1, x1, area), edges exclusive."""
    height, width = colour_ids.shape
    stride = width + 1
    # a zero column after every row, so no run continues onto the next row
    padded = np.zeros((height, stride), dtype=np.uint8)
    padded[:, :width] = colour_ids
    flat = padded.ravel()
    boundaries = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [flat.size]))
    values = flat[starts]
    coloured = values != 0
    starts, ends, values = starts[coloured], ends[coloured], values[coloured]
    n_runs = starts.size
    if n_runs == 0:
        return []

    # Runs are sorted and disjoint, so the runs of the row above that overlap run j are a
    # contiguous slice [lo, hi) found by binary search on the run ends/starts shifted by a row.
    lo = np.searchsorted(ends, starts - stride, side="right")
    hi = np.searchsorted(starts, ends - stride, side="left")
    counts = np.maximum(hi - lo, 0)
    below = np.repeat(np.arange(n_runs), counts)
    above = lo[below] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    same = values[above] == values[below]
    roots = _union_find(n_runs, above[same], below[same])

    component_ids, run_component = np.unique(roots, return_inverse=True)
    n_components = component_ids.size
    rows = starts // stride
    col_starts = starts - rows * stride
    col_ends = ends - rows * stride
    area = np.bincount(run_component, weights=ends - starts, minlength=n_components)
    y0 = np.full(n_components, height)
    x0 = np.full(n_components, width)
    y1 = np.zeros(n_components, dtype=np.int64)
    x1 = np.zeros(n_components, dtype=np.int64)
    np.minimum.at(y0, run_component, rows)
    np.minimum.at(x0, run_component, col_starts)
    np.maximum.at(y1, run_component, rows + 1)
    np.maximum.at(x1, run_component, col_ends)
    colour = np.zeros(n_components, dtype=np.int64)
    colour[run_component] = values
    return [
        (int(colour[i]), int(y0[i]), int(x0[i]), int(y1[i]), int(x1[i]), int(area[i]))
        for i in range(n_components)
    ]


def _union_find(
    n: int, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Root per node for the undirected edges (a[i], b[i]); the root is the smallest node."""
    parent = np.arange(n)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        # hook the larger root under the smaller one, then flatten every path
        np.minimum.at(parent, np.maximum(pa, pb)[differ], np.minimum(pa, pb)[differ])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def _measure_shape(
    rgb: npt.NDArray[np.uint8],
    background: npt.NDArray[np.float32],
    colour_id: int,
    box_xyxy: tuple[int, int, int, int],
    width_px: int,
    height_px: int,
) -> SeenShape | None:
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box_xyxy
    # the erosion took a pixel (more at sharp tips) off every side; look a little wider
    margin = _REFINE_MARGIN_PX + 1
    cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
    cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
    crop = rgb[cy0:cy1, cx0:cx1].astype(np.float32)
    colour = PALETTE_ARRAY_F32[colour_id - 1]
    inside = np.square(crop - colour).sum(axis=2) < np.square(crop - background).sum(axis=2)
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None
    ry0, ry1 = int(rows[0]), int(rows[-1]) + 1
    rx0, rx1 = int(cols[0]), int(cols[-1]) + 1
    mask_crop = inside[ry0:ry1, rx0:rx1]
    fill_ratio = float(mask_crop.mean())

    box_norm = (
        (cx0 + rx0) / width,
        (cy0 + ry0) / height,
        (cx0 + rx1) / width,
        (cy0 + ry1) / height,
    )
    box_w_px = (box_norm[2] - box_norm[0]) * width_px
    box_h_px = (box_norm[3] - box_norm[1]) * height_px
    return SeenShape(
        colour_name=COLOUR_NAMES[colour_id - 1],
        kind=_kind_from_fill(fill_ratio, box_w_px / max(box_h_px, 1e-9)),
        box_xyxy_norm=box_norm,
        fill_ratio=fill_ratio,
        mask_crop=mask_crop,
    )


def _kind_from_fill(fill_ratio: float, aspect: float) -> str:
    if fill_ratio >= 0.9:
        return "rectangle"
    if fill_ratio >= 0.68:
        round_box = 1 / _CIRCLE_MAX_ASPECT <= aspect <= _CIRCLE_MAX_ASPECT
        return "circle" if round_box else "ellipse"
    if fill_ratio >= 0.35:
        return "triangle"
    return "shape"
