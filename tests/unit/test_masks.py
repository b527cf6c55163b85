"""tasks.masks: the model's mask value -> a boolean mask in the box, in image pixels."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from tasks.base import ImageSize
from tasks.detect import parse_detections
from tasks.masks import MASK_MAX_CHARS, BoxMask, UnsupportedMask, _plain_gray_png, decode_mask

SEGMENT_01 = "segment_01_cookbook_cupcakes-small-items_gemini-2.5-pro-exp-03-25.txt"
SEGMENT_02 = "segment_02_cookbook_cupcakes-small-items_gemini-2.5-flash.txt"
CUPCAKES = "images/cookbook_Cupcakes_display_620x620.png"


def png_bytes(pixels: NDArray[Any], mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def constant_map(value: int, side_px: int = 256) -> str:
    return data_uri(png_bytes(np.full((side_px, side_px), value, dtype=np.uint8)))


def boundary_px(mask: NDArray[np.bool_]) -> int:
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    interior = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return int(np.count_nonzero(mask & ~interior))


# --- the real answers ---------------------------------------------------------------


def real_masks(text: str, side_px: int) -> list[tuple[tuple[int, int, int, int], BoxMask]]:
    found = parse_detections(text, ImageSize(side_px, side_px), max_items=25)
    assert found.warnings == []
    return [
        (d.box_xyxy_px, decode_mask(d.item["mask"], d.box_xyxy_px, side_px, side_px))
        for d in found.objects
    ]


def test_the_cupcakes_image_is_the_size_the_tests_assume(gemini_real: Path) -> None:
    with Image.open(gemini_real / CUPCAKES) as image:
        assert image.size == (620, 620)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        pytest.param(SEGMENT_01, 20, id="segment_01-20-masks"),
        pytest.param(SEGMENT_02, 15, id="segment_02-15-masks"),
    ],
)
@pytest.mark.parametrize(
    "side_px", [pytest.param(620, id="620px"), pytest.param(2480, id="2480px-4x")]
)
def test_real_masks_decode_non_empty_inside_their_boxes(
    gemini_real: Path, name: str, count: int, side_px: int
) -> None:
    masks = real_masks((gemini_real / name).read_text(), side_px)
    assert len(masks) == count
    for box, mask in masks:
        x0, y0, x1, y1 = box
        assert mask.box_xyxy_px == box
        assert mask.crop.shape == (y1 - y0, x1 - x0)
        assert mask.area_px() > 0
        full = mask.to_full(side_px, side_px)
        assert full.shape == (side_px, side_px)
        assert int(np.count_nonzero(full)) == mask.area_px()
        outside = full.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any()


@pytest.mark.parametrize(
    "name", [pytest.param(SEGMENT_01, id="segment_01"), pytest.param(SEGMENT_02, id="segment_02")]
)
def test_real_mask_areas_scale_by_16_at_4x_the_size(gemini_real: Path, name: str) -> None:
    text = (gemini_real / name).read_text()
    small = real_masks(text, 620)
    large = real_masks(text, 2480)
    for (_, mask_620), (_, mask_2480) in zip(small, large, strict=True):
        # At 620 px every box edge is rounded to a whole pixel (up to half a pixel off,
        # where 2480 px is exact to a quarter) and BILINEAR moves the 127 contour by under
        # a pixel, so the areas may differ by up to half a pixel per boundary pixel of the
        # 620 px mask (observed at most 0.29 per boundary pixel, or 2.1% of the area).
        difference = abs(mask_2480.area_px() / 16 - mask_620.area_px())
        assert difference <= 0.5 * boundary_px(mask_620.crop)
    # over all objects the edge errors cancel out (observed 0.03% and 0.02%)
    total_620 = sum(mask.area_px() for _, mask in small)
    total_2480 = sum(mask.area_px() for _, mask in large)
    assert total_2480 / 16 == pytest.approx(total_620, rel=0.005)


def test_real_masks_are_256px_binary_maps(gemini_real: Path) -> None:
    # what the manifest says of them, and what makes 127 vs 128 moot for real masks
    found = parse_detections(
        (gemini_real / SEGMENT_01).read_text(), ImageSize(620, 620), max_items=25
    )
    for detection in found.objects:
        payload = detection.item["mask"].removeprefix("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
            assert (image.size, image.mode) == ((256, 256), "L")
            assert set(np.unique(np.asarray(image)).tolist()) <= {0, 255}


# --- PNG maps as Gemini writes them: 8-bit gray, unfiltered rows ------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def unfiltered_png(
    pixels: NDArray[np.uint8],
    *,
    filter_byte: int = 0,
    header: tuple[int, int] | None = None,
    stream: bytes | None = None,
    end: bool = True,
) -> bytes:
    """A gray PNG written by hand: every row with `filter_byte`, the IHDR size and the
    zlib stream replaceable to make it lie."""
    height_px, width_px = pixels.shape
    rows = b"".join(bytes([filter_byte]) + row.tobytes() for row in pixels)
    width_px, height_px = header or (width_px, height_px)
    ihdr = struct.pack(">IIBBBBB", width_px, height_px, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    data += png_chunk(b"IDAT", zlib.compress(rows) if stream is None else stream)
    return data + (png_chunk(b"IEND", b"") if end else b"")


def pillow_pixels(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


@pytest.mark.parametrize("name", [SEGMENT_01, SEGMENT_02])
def test_real_maps_are_read_without_pillow_and_match_it(gemini_real: Path, name: str) -> None:
    found = parse_detections((gemini_real / name).read_text(), ImageSize(620, 620), max_items=25)
    assert len(found.objects) in (20, 15)
    for detection in found.objects:
        data = base64.b64decode(detection.item["mask"].removeprefix("data:image/png;base64,"))
        plain = _plain_gray_png(data)
        assert plain is not None  # Gemini's maps take the fast path...
        assert np.array_equal(plain, pillow_pixels(data))  # ...to Pillow's pixels


def test_unfiltered_map_at_box_size_keeps_every_pixel() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (40, 70), dtype=np.uint8)
    mask = decode_mask(data_uri(unfiltered_png(pixels)), (5, 5, 75, 45), 80, 50)
    assert np.array_equal(mask.crop, pixels > 127)


def test_filtered_rows_are_left_to_pillow_and_undone() -> None:
    # filter 1 (Sub): each stored byte is the difference to its left neighbour
    deltas = np.random.default_rng(4).integers(0, 256, (32, 48), dtype=np.uint8)
    data = unfiltered_png(deltas, filter_byte=1)
    assert _plain_gray_png(data) is None
    expected = np.cumsum(deltas, axis=1, dtype=np.uint8)  # wraps mod 256, as PNG does
    assert np.array_equal(pillow_pixels(data), expected)
    mask = decode_mask(data_uri(data), (0, 0, 48, 32), 48, 32)
    assert np.array_equal(mask.crop, expected > 127)


def test_unfiltered_map_over_the_caps_is_refused_before_inflating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the header claims 4096x4096; the stream is a few bytes: refused on the header alone
    lying = unfiltered_png(np.zeros((2, 2), np.uint8), header=(4096, 4096))
    with pytest.raises(UnsupportedMask, match="over the cap of"):
        decode_mask(data_uri(lying), (0, 0, 10, 10), 100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)
    with pytest.raises(UnsupportedMask, match="decompression bomb"):
        decode_mask(data_uri(unfiltered_png(np.zeros((80, 80), np.uint8))), (0, 0, 9, 9), 99, 99)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param("short-stream", id="short-stream"),
        pytest.param("long-stream", id="zlib-stream-longer-than-the-image"),
        pytest.param("bad-crc", id="bad-idat-crc"),
        pytest.param("no-iend", id="no-iend"),
        pytest.param("cut", id="cut-mid-chunk"),
    ],
)
def test_damaged_unfiltered_maps_never_give_wrong_pixels(damage: str) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, (64, 64), dtype=np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    data = {
        "short-stream": lambda: unfiltered_png(pixels, stream=zlib.compress(rows)[:-30]),
        "long-stream": lambda: unfiltered_png(pixels, stream=zlib.compress(rows + bytes(10**6))),
        "bad-crc": lambda: unfiltered_png(pixels).replace(
            png_chunk(b"IDAT", zlib.compress(rows))[-4:], b"\x00\x00\x00\x00"
        ),
        "no-iend": lambda: unfiltered_png(pixels, end=False),
        "cut": lambda: unfiltered_png(pixels)[:60],
    }[damage]()
    # the fast path takes only a PNG it can vouch for; the rest is Pillow's to decode or refuse
    assert _plain_gray_png(data) is None
    try:
        mask = decode_mask(data_uri(data), (0, 0, 64, 64), 64, 64)
    except UnsupportedMask as exc:
        assert "truncated or corrupt" in str(exc)
    else:
        assert np.array_equal(mask.crop, pixels > 127)


@pytest.mark.parametrize(
    ("name", "what"),
    [
        pytest.param("segment_usercode_door-mask_repo-unknown.json", "list", id="door"),
        pytest.param(
            "segment_usercode_fire-extinguisher-mask_repo-unknown.json",
            "item",
            id="fire-extinguisher",
        ),
    ],
)
def test_secondary_png_masks_decode(gemini_real: Path, name: str, what: str) -> None:
    loaded = json.loads((gemini_real / "secondary" / name).read_text())
    item = loaded[0] if what == "list" else loaded
    found = parse_detections(json.dumps([item]), ImageSize(1000, 750), max_items=25)
    (detection,) = found.objects
    mask = decode_mask(detection.item["mask"], detection.box_xyxy_px, 1000, 750)
    assert 0 < mask.area_px() < mask.crop.size


# --- PNG probability maps -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "threshold_u8", "expected_fill"),
    [
        pytest.param(127, 127, 0.0, id="127-is-not-above-127"),
        pytest.param(128, 127, 1.0, id="128-is-above-127"),
        pytest.param(0, 0, 0.0, id="0-is-not-above-0"),
        pytest.param(1, 0, 1.0, id="1-is-above-0"),
        pytest.param(255, 254, 1.0, id="255-is-above-254"),
        pytest.param(255, 255, 0.0, id="nothing-is-above-255"),
    ],
)
def test_threshold_is_strictly_above(value: int, threshold_u8: int, expected_fill: float) -> None:
    mask = decode_mask(constant_map(value), (10, 20, 110, 70), 200, 100, threshold_u8=threshold_u8)
    assert mask.crop.shape == (50, 100)
    assert mask.area_px() == expected_fill * mask.crop.size


def test_soft_edged_map_at_box_size_binarizes_by_value() -> None:
    # a left-to-right ramp 0..255, at the box's own size: column c holds value c
    ramp = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    uri = data_uri(png_bytes(ramp))
    mask = decode_mask(uri, (0, 0, 256, 8), 256, 8)
    assert (mask.crop[:, 128:]).all()
    assert not mask.crop[:, :128].any()
    high = decode_mask(uri, (0, 0, 256, 8), 256, 8, threshold_u8=200)
    assert high.crop[0].nonzero()[0].tolist() == list(range(201, 256))


def test_soft_edged_map_resized_to_the_box_keeps_its_edge() -> None:
    # 256x256: black left half, a soft 8-px ramp, white right side; the box is 4x smaller
    pixels = np.zeros((256, 256), dtype=np.uint8)
    pixels[:, 124:132] = np.linspace(0, 255, 8).astype(np.uint8)
    pixels[:, 132:] = 255
    mask = decode_mask(data_uri(png_bytes(pixels)), (0, 0, 64, 64), 64, 64)
    # the ramp crosses 127 at column ~128 of 256, so at 1/4 scale the edge is column 32
    assert mask.crop[:, 33:].all()
    assert not mask.crop[:, :31].any()
    assert (mask.crop == mask.crop[0]).all()  # every row alike


def test_map_is_resized_to_a_non_square_box() -> None:
    # top half white: whatever the box shape, the top half of the box is the mask
    pixels = np.zeros((256, 256), dtype=np.uint8)
    pixels[:128] = 255
    mask = decode_mask(data_uri(png_bytes(pixels)), (100, 40, 400, 80), 500, 100)
    assert mask.crop.shape == (40, 300)
    assert mask.crop[:20].all()
    assert not mask.crop[20:].any()


GRADIENT = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("RGB", id="rgb"),
        pytest.param("RGBA", id="rgba"),
        pytest.param("LA", id="la"),
        pytest.param("P", id="palette"),
    ],
)
def test_other_png_modes_read_as_gray(mode: str) -> None:
    box = (0, 0, 100, 50)
    expected = decode_mask(data_uri(png_bytes(GRADIENT)), box, 100, 50)
    got = decode_mask(data_uri(png_bytes(GRADIENT, mode)), box, 100, 50)
    assert np.array_equal(got.crop, expected.crop)


def test_bilevel_png_mode_1() -> None:
    pixels = np.zeros((16, 16), dtype=np.uint8)
    pixels[:, 8:] = 255
    mask = decode_mask(data_uri(png_bytes(pixels, "1")), (0, 0, 16, 16), 16, 16)
    assert mask.crop[:, 8:].all()
    assert not mask.crop[:, :8].any()


def test_16_bit_png_is_scaled_not_clipped() -> None:
    # 128/255 of full scale must still be above 127, and 127/255 not; Pillow's
    # convert("L") would clip both to 255
    pixels = np.zeros((4, 8), dtype=np.uint16)
    pixels[:, :4] = 127 * 257
    pixels[:, 4:] = 128 * 257
    image = Image.fromarray(pixels)
    assert image.mode.startswith("I;16")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    mask = decode_mask(data_uri(buffer.getvalue()), (0, 0, 8, 4), 8, 4)
    assert mask.crop[:, 4:].all()
    assert not mask.crop[:, :4].any()


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda uri: uri.removeprefix("data:image/png;base64,"), id="bare-base64"),
        pytest.param(lambda uri: uri.rstrip("="), id="padding-dropped"),
        pytest.param(lambda uri: uri[:60] + "\n" + uri[60:], id="newline-in-base64"),
        pytest.param(lambda uri: "  " + uri + "\n", id="whitespace-around"),
        pytest.param(
            lambda uri: uri.replace("data:image/png", "DATA:image/png"), id="upper-scheme"
        ),
        pytest.param(
            lambda uri: uri.replace("image/png", "application/octet-stream"),
            id="other-media-type-png-bytes",
        ),
    ],
)
def test_png_string_variants_decode_alike(variant: Any) -> None:
    pixels = np.zeros((256, 256), dtype=np.uint8)
    pixels[64:192, 32:96] = 255
    uri = data_uri(png_bytes(pixels))
    expected = decode_mask(uri, (5, 5, 69, 69), 100, 100)
    assert 0 < expected.area_px() < expected.crop.size
    got = decode_mask(variant(uri), (5, 5, 69, 69), 100, 100)
    assert np.array_equal(got.crop, expected.crop)


# --- polygons -----------------------------------------------------------------------


def centres_inside(points_px: list[tuple[float, float]], height_px: int, width_px: int) -> Any:
    """Reference: crossing number of a ray to the right from every pixel centre."""
    ys, xs = np.mgrid[:height_px, :width_px] + 0.5
    inside = np.zeros((height_px, width_px), dtype=bool)
    for (xa, ya), (xb, yb) in zip(points_px, points_px[1:] + points_px[:1], strict=True):
        if ya == yb:
            continue
        crosses = (ya <= ys) != (yb <= ys)
        x_at = xa + (ys - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (x_at <= xs)
    return inside


def test_polygon_triangle_on_a_non_square_image() -> None:
    # 400x200 image, full-image box: the triangle below the diagonal from top-right to
    # bottom-left; pixel centres are never on the diagonal, so there are no ties
    mask = decode_mask([[0, 0], [1000, 0], [0, 1000]], (0, 0, 400, 200), 400, 200)
    ys, xs = np.mgrid[:200, :400] + 0.5
    assert np.array_equal(mask.crop, xs / 400 + ys / 200 < 1)
    assert mask.area_px() == pytest.approx(400 * 200 / 2, rel=0.01)


def test_polygon_rectangle_fills_exactly_its_pixels() -> None:
    rectangle = [[250, 100], [750, 100], [750, 900], [250, 900]]
    mask = decode_mask(rectangle, (0, 0, 400, 200), 400, 200)
    expected = np.zeros((200, 400), dtype=bool)
    expected[20:180, 100:300] = True  # x 250..750 of 400 px, y 100..900 of 200 px
    assert np.array_equal(mask.crop, expected)


def test_polygon_is_x_first() -> None:
    # hugging the left edge: the left columns, not the top rows (a y-first reading)
    left_strip = [[0, 0], [100, 0], [100, 1000], [0, 1000]]
    full = decode_mask(left_strip, (0, 0, 400, 200), 400, 200).to_full(400, 200)
    assert full[:, :40].all()
    assert not full[:, 40:].any()


def test_polygon_is_on_the_whole_image_scale_and_clipped_to_the_box() -> None:
    # the polygon covers x 0..500, y 0..1000 of the image; the box is x 100..300 px of 400
    mask = decode_mask([[0, 0], [500, 0], [500, 1000], [0, 1000]], (100, 50, 300, 150), 400, 200)
    assert mask.crop.shape == (100, 200)
    assert mask.crop[:, :100].all()  # image columns 100..199 are left of x=500 (200 px)
    assert not mask.crop[:, 100:].any()
    full = mask.to_full(400, 200)
    assert not full[:50].any() and not full[150:].any()


def test_list_of_polygons_is_their_union() -> None:
    left = [[0, 0], [500, 0], [500, 1000], [0, 1000]]
    overlapping = [[250, 0], [750, 0], [750, 1000], [250, 1000]]
    mask = decode_mask([left, overlapping], (0, 0, 400, 200), 400, 200)
    assert mask.crop[:, :300].all()  # the overlap stays set: a union, not even-odd
    assert not mask.crop[:, 300:].any()


def test_polygon_with_float_coordinates_and_tuple_points() -> None:
    mask = decode_mask(((100.5, 100.5), (899.5, 100.5), (500.0, 899.5)), (0, 0, 64, 48), 64, 48)
    assert 0 < mask.area_px() < 64 * 48


@pytest.mark.parametrize("seed", range(8))
def test_random_polygons_match_a_brute_force_point_in_polygon(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width_px, height_px = 97, 61
    count = int(rng.integers(3, 12))
    points = rng.uniform(-100, 1100, size=(count, 2)).round(1).tolist()
    box = (10, 5, 90, 55)
    mask = decode_mask(points, box, width_px, height_px)
    in_pixels = [(x * width_px / 1000, y * height_px / 1000) for x, y in points]
    expected = centres_inside(in_pixels, height_px, width_px)[5:55, 10:90]
    assert np.array_equal(mask.crop, expected)


# --- what is not a mask we can decode -----------------------------------------------


def truncated_png() -> str:
    data = png_bytes(np.arange(256 * 256, dtype=np.uint32).reshape(256, 256).astype(np.uint8))
    return data_uri(data[: len(data) // 2])


def png_of_side(side_px: int) -> str:
    return data_uri(png_bytes(np.zeros((side_px, side_px), dtype=np.uint8)))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(
            "<start_of_mask><seg_115><seg_7><seg_80><seg_51>",
            "segmentation tokens (<seg_N>) need the model's decoder",
            id="seg-tokens",
        ),
        pytest.param("gimme_mask_for_this", "unknown mask string", id="placeholder-string"),
        pytest.param("base64_encoded_png_data", "unknown mask string", id="docs-placeholder"),
        pytest.param("", "empty string", id="empty-string"),
        pytest.param("   ", "empty string", id="blank-string"),
        pytest.param(None, "mask is null", id="null"),
        pytest.param(42, "mask is a number", id="number"),
        pytest.param(True, "mask is a boolean", id="boolean"),
        pytest.param({"png": "iVBORw0KGgo"}, "mask is an object", id="object"),
        pytest.param([], "polygon mask is an empty list", id="empty-list"),
        pytest.param([[1, 2], [3, 4]], "polygon has 2 points", id="two-point-polygon"),
        pytest.param([[1, 2], [3, "4"], [5, 6]], "not a list of [x, y]", id="string-coordinate"),
        pytest.param([[1, 2], [3, True], [5, 6]], "not a list of [x, y]", id="bool-coordinate"),
        pytest.param([[1, 2, 3], [3, 4, 5], [5, 6, 7]], "not a list of [x, y]", id="triples"),
        pytest.param([1, 2, 3, 4, 5, 6], "not a list of [x, y]", id="flat-numbers"),
        pytest.param(
            [[[1, 2], [3, 4], [5, 6]], "x"], "polygon 1 is not a list", id="bad-second-polygon"
        ),
        pytest.param(
            [[0, 0], [1, float("nan")], [2, 2]], "not a list of [x, y]", id="nan-coordinate"
        ),
        pytest.param([[0, 0], [1e300, 0], [0, 1000]], "coordinates beyond", id="absurd-coordinate"),
        pytest.param([[0, 0], [1, 1]] * 5001, "over 10,000 points", id="too-many-points"),
        pytest.param(
            "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0jpeg").decode(),
            "data URI (image/jpeg) does not hold a PNG",
            id="jpeg-data-uri",
        ),
        pytest.param("data:image/png,iVBORw0KGgo", "is not base64 data", id="data-uri-not-base64"),
        pytest.param("data:image/png;base64", "is not base64 data", id="data-uri-no-payload"),
        pytest.param("data:image/png;base64,!!!!", "invalid base64", id="invalid-base64"),
        pytest.param(truncated_png(), "PNG mask is truncated or corrupt", id="truncated-png"),
        pytest.param(
            "iVBORw0KGgoAAAANSUhEUgAAAQAAAAEACAAAAAB5Gfe6AAAAAA",
            "PNG mask is truncated or corrupt",
            id="bare-base64-truncated",
        ),
        pytest.param(png_of_side(2049), "over the cap of", id="png-over-pixel-cap"),
        pytest.param("iVBORw0KGgo" + "A" * MASK_MAX_CHARS, "over the cap of", id="string-over-cap"),
    ],
)
def test_undecodable_masks_are_unsupported_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(UnsupportedMask) as caught:
        decode_mask(value, (0, 0, 10, 10), 100, 100)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_real_seg_token_masks_are_unsupported(gemini_real: Path) -> None:
    text = (
        gemini_real / "secondary" / "segment_usercode_seg-tokens_repo-unknown.py.txt"
    ).read_text()
    items = [
        json.loads(line.strip().rstrip(",")) for line in text.splitlines() if '"box_2d"' in line
    ]
    assert len(items) == 4
    for item in items:
        with pytest.raises(UnsupportedMask, match=r"segmentation tokens \(<seg_N>\)"):
            decode_mask(item["mask"], (0, 0, 10, 10), 100, 100)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            data_uri(unfiltered_png(np.zeros((2, 2), np.uint8), header=(4096, 4096))),
            id="plain-gray-read-without-pillow",
        ),
        pytest.param(
            data_uri(png_bytes(np.zeros((2049, 2049, 3), np.uint8))), id="rgb-read-by-pillow"
        ),
    ],
)
def test_a_raised_pillow_threshold_leaves_the_mask_cap_in_place(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # a worker whose GVW_MAX_IMAGE_PIXELS is far above Pillow's threshold raises it for the
    # whole process (worker.images.prepare.raise_pillow_threshold); a mask keeps its own cap
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**12)
    with pytest.raises(UnsupportedMask, match="over the cap of 4,194,304 pixels"):
        decode_mask(value, (0, 0, 10, 10), 100, 100)


def test_decompression_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # a 100x100 map against a bomb threshold lowered to 6,000 pixels: Pillow warns (it
    # errors only beyond twice the threshold), and the warning must refuse the mask
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)
    with pytest.raises(UnsupportedMask, match="decompression bomb"):
        decode_mask(png_of_side(80), (0, 0, 10, 10), 100, 100)


# --- boxes and BoxMask --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(constant_map(255), id="png"),
        pytest.param([[0, 0], [1000, 0], [0, 1000]], id="polygon"),
    ],
)
@pytest.mark.parametrize(
    ("box", "shape"),
    [
        pytest.param((10, 10, 10, 20), (10, 0), id="zero-width"),
        pytest.param((10, 20, 30, 20), (0, 20), id="zero-height"),
        pytest.param((150, 150, 160, 160), (0, 0), id="outside-the-image"),
    ],
)
def test_degenerate_box_gives_an_empty_mask(value: Any, box: Any, shape: tuple[int, int]) -> None:
    mask = decode_mask(value, box, 100, 100)
    assert mask.crop.shape == shape
    assert mask.area_px() == 0
    assert not mask.to_full(100, 100).any()


def test_box_beyond_the_image_is_clipped() -> None:
    mask = decode_mask(constant_map(255), (90, -5, 120, 10), 100, 100)
    assert mask.box_xyxy_px == (90, 0, 100, 10)
    assert mask.area_px() == 100


@pytest.mark.parametrize(
    ("box", "threshold_u8"),
    [
        pytest.param((0, 0, 10), 127, id="three-values"),
        pytest.param((0, 0, 10.0, 10), 127, id="float-coordinate"),
        pytest.param((0, 0, 10, 10), 256, id="threshold-256"),
        pytest.param((0, 0, 10, 10), -1, id="threshold-negative"),
        pytest.param((0, 0, 10, 10), True, id="threshold-bool"),
    ],
)
def test_caller_bugs_are_plain_value_errors(box: Any, threshold_u8: Any) -> None:
    with pytest.raises(ValueError) as caught:
        decode_mask(constant_map(255), box, 100, 100, threshold_u8=threshold_u8)
    assert not isinstance(caught.value, UnsupportedMask)


def test_box_mask_places_its_crop_in_the_full_mask() -> None:
    crop = np.array([[True, False, True], [False, True, False]])
    mask = BoxMask(x0_px=4, y0_px=1, crop=crop)
    assert mask.box_xyxy_px == (4, 1, 7, 3)
    assert mask.area_px() == 3
    full = mask.to_full(8, 5)
    assert full.dtype == np.bool_
    assert np.argwhere(full).tolist() == [[1, 4], [1, 6], [2, 5]]
    with pytest.raises(ValueError, match="does not fit"):
        mask.to_full(6, 5)


@pytest.mark.parametrize(
    "crop",
    [
        pytest.param(np.zeros((2, 2), dtype=np.uint8), id="uint8"),
        pytest.param(np.zeros(4, dtype=bool), id="1-d"),
    ],
)
def test_box_mask_wants_a_2d_bool_crop(crop: Any) -> None:
    with pytest.raises(ValueError, match="2-D bool"):
        BoxMask(0, 0, crop)


def test_full_masks_built_in_turn_in_one_array_equal_fresh_ones() -> None:
    from tasks.masks import BoxMask, FullMasks

    rng = np.random.default_rng(7)
    canvas = FullMasks(64, 48)
    for x0, y0, w, h in [(0, 0, 30, 20), (10, 5, 40, 30), (50, 40, 14, 8), (0, 0, 64, 48)]:
        mask = BoxMask(x0, y0, rng.random((h, w)) > 0.5)
        assert np.array_equal(canvas.of(mask), mask.to_full(64, 48))
    with pytest.raises(ValueError, match="does not fit"):
        canvas.of(BoxMask(60, 0, np.ones((4, 8), dtype=np.bool_)))
