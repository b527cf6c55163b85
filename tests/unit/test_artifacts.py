from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.artifacts import render_overlay_png, slug


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        pytest.param("Red Circle", "red-circle", id="plain"),
        pytest.param("../../x", "x", id="path-traversal"),
        pytest.param("", "object", id="empty"),
        pytest.param("日本語", "object", id="no-ascii-left"),
        pytest.param("Crème brûlée", "creme-brulee", id="accents-folded"),
        pytest.param("a" * 10_000, "a" * 48, id="10-kB-label"),
    ],
)
def test_slug_is_a_safe_key_part(label: str, expected: str) -> None:
    assert slug(label) == expected


def _overlay(size: tuple[int, int], box: list[int], **kwargs: int) -> Image.Image:
    upright = Image.new("RGB", size, (255, 255, 255))
    png = render_overlay_png(upright, [{"label": "thing", "box": box}], **kwargs)
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_overlay_draws_the_box_where_it_is() -> None:
    overlay = _overlay((400, 300), [100, 120, 300, 250])
    assert overlay.size == (400, 300)
    assert overlay.getpixel((200, 250)) != (255, 255, 255)  # bottom edge drawn
    assert overlay.getpixel((200, 200)) == (255, 255, 255)  # inside left alone
    assert overlay.getpixel((20, 280)) == (255, 255, 255)  # outside left alone


def test_large_overlays_are_reduced_and_boxes_follow() -> None:
    overlay = _overlay((4000, 3000), [1000, 1200, 3000, 2500], max_side_px=2048)
    assert overlay.size == (2000, 1500)
    assert overlay.getpixel((1000, 1250)) != (255, 255, 255)
    assert overlay.getpixel((1000, 1000)) == (255, 255, 255)


def test_full_size_overlay_when_asked() -> None:
    assert _overlay((3000, 100), [0, 0, 10, 10], max_side_px=0).size == (3000, 100)
