"""tasks.tokens: image token estimates (258 per tile)."""

from __future__ import annotations

import pytest

from tasks.tokens import estimate_image_tokens


@pytest.mark.parametrize(
    ("width_px", "height_px", "expected"),
    [
        pytest.param(960, 540, 1548, id="guide-example-960x540-6-tiles"),
        pytest.param(540, 960, 1548, id="guide-example-portrait"),
        pytest.param(384, 384, 258, id="small-limit"),
        pytest.param(1, 1, 258, id="one-pixel"),
        pytest.param(384, 10, 258, id="small-thin"),
        # unit = floor(100 / 1.5) = 66; ceil(385/66) * ceil(100/66) = 6 * 2 = 12 tiles
        pytest.param(385, 100, 12 * 258, id="just-over-small"),
        # unit = floor(385 / 1.5) = 256; 2 * 2 tiles
        pytest.param(385, 385, 4 * 258, id="just-over-square"),
        # unit = floor(482 / 1.5) = 321; ceil(640/321) * ceil(482/321) = 2 * 2
        pytest.param(640, 482, 4 * 258, id="640x482"),
        # unit = 2016; 2 * 2 tiles
        pytest.param(4032, 3024, 4 * 258, id="12mp-photo"),
        # unit = floor(1 / 1.5) = 0, taken as 1: 1000 * 1 tiles (the formula, followed)
        pytest.param(1000, 1, 1000 * 258, id="one-pixel-thin-strip"),
    ],
)
def test_estimate_image_tokens(width_px: int, height_px: int, expected: int) -> None:
    assert estimate_image_tokens(width_px, height_px) == expected


@pytest.mark.parametrize(
    ("width_px", "height_px"),
    [
        pytest.param(0, 10, id="zero"),
        pytest.param(10, -1, id="negative"),
        pytest.param(10.0, 10, id="float"),
        pytest.param(True, 10, id="bool"),
    ],
)
def test_estimate_image_tokens_rejects_bad_sizes(width_px: object, height_px: object) -> None:
    with pytest.raises(ValueError):
        estimate_image_tokens(width_px, height_px)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "level", "expected"),
    [
        # Gemini 3 and later: a fixed count per image, high by default
        ("gemini-3-flash-preview", None, 1120),
        ("gemini-3-pro-preview", "low", 280),
        ("gemini-3-pro-preview", "medium", 560),
        ("gemini-3-pro-preview", "ultra_high", 2240),
        # earlier models: low and medium fix the count, high follows the tiles
        ("gemini-2.5-flash", "low", 64),
        ("gemini-2.5-flash", "medium", 256),
        ("gemini-2.5-flash", "high", 1548),
        ("gemini-2.5-flash", None, 1548),
        ("gemini-flash-latest", "low", 64),  # an alias: the request-wide table
    ],
)
def test_media_resolution_caps_the_estimate(model: str, level: str | None, expected: int) -> None:
    assert estimate_image_tokens(960, 540, model=model, media_resolution=level) == expected
