from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image

from worker.pipeline.artifacts import render_overlay_png, slug


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


@pytest.mark.parametrize(
    ("box", "size"),
    [
        pytest.param((0, 0, 7, 5), (7, 5), id="box-is-the-image"),
        pytest.param((3, 2, 4, 3), (10, 8), id="one-pixel"),
        pytest.param((0, 0, 300, 1), (300, 700), id="top-row-tall-image"),
        pytest.param((5, 699, 9, 700), (300, 700), id="bottom-row"),
        pytest.param((100, 256, 250, 700), (300, 700), id="crossing-zero-blocks"),
        pytest.param((0, 0, 0, 0), (64, 600), id="empty-crop"),
    ],
)
def test_hand_written_mask_pngs_decode_to_the_full_mask(
    box: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    import io as _io

    import numpy as np
    from PIL import Image

    from tasks.mask_png import encode_mask_png
    from tasks.masks import BoxMask

    x0, y0, x1, y1 = box
    rng = np.random.default_rng(sum(box))
    crop = rng.random((y1 - y0, x1 - x0)) > 0.5
    width, height = size
    png = encode_mask_png(BoxMask(x0, y0, crop), width, height)
    with Image.open(_io.BytesIO(png)) as im:
        im.load()  # Pillow checks the zlib stream, its checksum and the chunk CRCs
        assert (im.mode, im.size) == ("L", size)
        pixels = np.asarray(im)
    expected = np.zeros((height, width), dtype=np.uint8)
    expected[y0:y1, x0:x1][crop] = 255
    assert np.array_equal(pixels, expected)
    # zlib itself checks the stream's Adler-32, computed here without summing the zeros
    idat_length = int.from_bytes(png[33:37], "big")
    assert png[37:41] == b"IDAT"
    raw = zlib.decompress(png[41 : 41 + idat_length])
    assert len(raw) == height * (width + 1)
