"""tasks.geometry: box_2d (0-1000, y first) <-> pixel boxes of the upright image."""

from __future__ import annotations

import pytest

from tasks.geometry import (
    InvalidBox2D,
    box_2d_to_xyxy_px,
    normalize_box_2d,
    xyxy_px_to_box_2d,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param([384, 65, 562, 203], (384, 65, 562, 203), id="ints-kept"),
        pytest.param((0, 0, 1000, 1000), (0, 0, 1000, 1000), id="full-image-tuple"),
        pytest.param([10.4, 20.5, 30.6, 40.0], (10, 21, 31, 40), id="floats-rounded-half-up"),
        pytest.param([562, 203, 384, 65], (384, 65, 562, 203), id="both-corners-swapped"),
        pytest.param([384, 203, 562, 65], (384, 65, 562, 203), id="x-swapped"),
        pytest.param([-20, -1, 1005, 2000], (0, 0, 1000, 1000), id="out-of-range-clipped"),
        pytest.param([1200, 900, 500, -3], (500, 0, 1000, 900), id="swapped-and-clipped"),
        pytest.param([0, 0, 0.6, 0.6], (0, 0, 1, 1), id="sub-unit-box-rounds-to-one"),
    ],
)
def test_normalize_box_2d(raw: object, expected: tuple[int, int, int, int]) -> None:
    assert normalize_box_2d(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param([1, 2, 3], "has 3 values", id="three-values"),
        pytest.param([1, 2, 3, 4, 5], "has 5 values", id="five-values"),
        pytest.param([], "has 0 values", id="empty-list"),
        pytest.param(None, "not a list", id="null"),
        pytest.param("1, 2, 3, 4", "not a list", id="string"),
        pytest.param({"ymin": 1}, "not a list", id="object"),
        pytest.param([1, 2, True, 4], "non-number", id="bool-rejected"),
        pytest.param([1, 2, "3", 4], "non-number", id="numeric-string-rejected"),
        pytest.param([1, 2, None, 4], "non-number", id="null-value"),
        pytest.param([[1, 2], [3, 4]], "has 2 values", id="corner-pairs"),
        pytest.param([1, 2, float("nan"), 4], "non-finite", id="nan"),
        pytest.param([1, 2, float("inf"), 4], "non-finite", id="infinity"),
        pytest.param([100, 10, 100, 50], "empty", id="zero-height"),
        pytest.param([10, 100, 50, 100], "empty", id="zero-width"),
        pytest.param([1200, 0, 1500, 100], "empty", id="empty-after-clipping"),
        pytest.param([-5, 0, -1, 100], "empty", id="empty-after-clipping-below"),
        pytest.param([10, 10, 10.2, 50], "empty", id="empty-after-rounding"),
    ],
)
def test_normalize_box_2d_rejects_with_a_reason(raw: object, reason: str) -> None:
    with pytest.raises(InvalidBox2D, match=reason):
        normalize_box_2d(raw)


@pytest.mark.parametrize(
    ("box_2d", "width_px", "height_px", "expected"),
    [
        # socks sent at 640x482 (detect_02): x = xmin / 1000 * 640, y = ymin / 1000 * 482
        # 248*0.64=158.72 53*0.482=25.546 527*0.64=337.28 388*0.482=187.016
        pytest.param((53, 248, 388, 527), 640, 482, (159, 26, 337, 187), id="sock-left-640x482"),
        # 662*0.64=423.68 236*0.482=113.752 862*0.64=551.68 653*0.482=314.746
        pytest.param((236, 662, 653, 862), 640, 482, (424, 114, 552, 315), id="sock-right"),
        pytest.param((0, 0, 1000, 1000), 640, 482, (0, 0, 640, 482), id="full-image"),
        pytest.param((500, 500, 1000, 1000), 640, 482, (320, 241, 640, 482), id="lower-right"),
        # 250*0.482=120.5 and 750*0.482=361.5: halves round up
        pytest.param((250, 0, 750, 1000), 640, 482, (0, 121, 640, 362), id="halves-round-up"),
        # docs/contract.md's example on 4032x3024
        pytest.param((384, 65, 562, 203), 4032, 3024, (262, 1161, 818, 1699), id="contract"),
        # 501*0.482=241.482 rounds to 241 = y0: a sliver still covers one pixel
        pytest.param((500, 500, 501, 501), 640, 482, (320, 241, 321, 242), id="sliver-1px"),
        pytest.param((999, 999, 1000, 1000), 100, 100, (99, 99, 100, 100), id="sliver-at-edge"),
        pytest.param((0, 0, 1, 1), 1, 1, (0, 0, 1, 1), id="one-pixel-image"),
    ],
)
def test_box_2d_to_xyxy_px(
    box_2d: tuple[int, int, int, int],
    width_px: int,
    height_px: int,
    expected: tuple[int, int, int, int],
) -> None:
    assert box_2d_to_xyxy_px(box_2d, width_px, height_px) == expected


@pytest.mark.parametrize(
    ("xyxy_px", "width_px", "height_px", "expected"),
    [
        # 26/0.482=53.94 159/0.64=248.44 187/0.482=387.97 337/0.64=526.56
        pytest.param((159, 26, 337, 187), 640, 482, (54, 248, 388, 527), id="sock-left"),
        pytest.param((0, 0, 640, 482), 640, 482, (0, 0, 1000, 1000), id="full-image"),
        pytest.param((262, 1161, 818, 1699), 4032, 3024, (384, 65, 562, 203), id="contract"),
        # 1/8*1000 = 125 exactly; 3/16*1000 = 187.5 rounds up
        pytest.param((1, 3, 2, 4), 8, 16, (188, 125, 250, 250), id="exact-and-half"),
    ],
)
def test_xyxy_px_to_box_2d(
    xyxy_px: tuple[int, int, int, int],
    width_px: int,
    height_px: int,
    expected: tuple[int, int, int, int],
) -> None:
    assert xyxy_px_to_box_2d(xyxy_px, width_px, height_px) == expected


@pytest.mark.parametrize(
    ("width_px", "height_px"),
    [
        pytest.param(640, 482, id="640x482"),
        pytest.param(7, 13, id="7x13"),
        pytest.param(1, 1, id="1x1"),
        pytest.param(999, 1000, id="999x1000"),
    ],
)
def test_pixel_boxes_survive_a_round_trip_on_images_up_to_1000px(
    width_px: int, height_px: int
) -> None:
    # the axes are independent: vary one while the other spans the image
    boxes = [(x0, 0, x1, height_px) for x0, x1 in _edges(width_px)]
    boxes += [(0, y0, width_px, y1) for y0, y1 in _edges(height_px)]
    for box in boxes:
        box_2d = xyxy_px_to_box_2d(box, width_px, height_px)
        assert box_2d_to_xyxy_px(box_2d, width_px, height_px) == box


@pytest.mark.parametrize(
    ("width_px", "height_px"),
    [
        pytest.param(1000, 1000, id="1000x1000"),
        pytest.param(4032, 3024, id="4032x3024"),
        pytest.param(1024, 1001, id="1024x1001"),
    ],
)
def test_box_2d_survives_a_round_trip_on_images_of_1000px_or_more(
    width_px: int, height_px: int
) -> None:
    boxes_2d = [(0, x0, 1000, x1) for x0, x1 in _edges(1000)]
    boxes_2d += [(y0, 0, y1, 1000) for y0, y1 in _edges(1000)]
    for box_2d in boxes_2d:
        box = box_2d_to_xyxy_px(box_2d, width_px, height_px)
        assert xyxy_px_to_box_2d(box, width_px, height_px) == box_2d


def _edges(size: int) -> list[tuple[int, int]]:
    """(low, high) pairs with 0 <= low < high <= size: every pair on small sizes, a prime
    stride through them on large ones (so every remainder, hence every rounding, occurs)."""
    step = 1 if size <= 50 else 7
    lows = sorted({*range(0, size, step), size - 1})
    return [(low, high) for low in lows for high in sorted({*range(low + 1, size + 1, step), size})]


@pytest.mark.parametrize(
    ("call", "args"),
    [
        pytest.param(box_2d_to_xyxy_px, ((0, 0, 10, 10), 0, 10), id="zero-width-image"),
        pytest.param(box_2d_to_xyxy_px, ((0, 0, 10, 10), 10, -1), id="negative-height"),
        pytest.param(box_2d_to_xyxy_px, ((0, 0, 10, 10), 10.0, 10), id="float-width"),
        pytest.param(box_2d_to_xyxy_px, ((10, 0, 0, 10), 10, 10), id="unordered-box-2d"),
        pytest.param(box_2d_to_xyxy_px, ((0, 0, 10, 1001), 10, 10), id="unclipped-box-2d"),
        pytest.param(box_2d_to_xyxy_px, ((0, 0, 10), 10, 10), id="three-values"),
        pytest.param(xyxy_px_to_box_2d, ((0, 0, 11, 10), 10, 10), id="px-box-outside-image"),
        pytest.param(xyxy_px_to_box_2d, ((5, 0, 4, 10), 10, 10), id="px-box-unordered"),
        pytest.param(xyxy_px_to_box_2d, ((0, 0, 5.0, 10), 10, 10), id="px-box-float"),
    ],
)
def test_conversions_reject_misuse(call: object, args: tuple[object, ...]) -> None:
    assert callable(call)
    with pytest.raises(ValueError):
        call(*args)
