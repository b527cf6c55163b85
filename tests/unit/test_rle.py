"""tasks.rle: COCO compressed RLE, checked byte for byte against pycocotools."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pycocotools import mask as coco_mask

from tasks.masks import BoxMask
from tasks.rle import decode_rle, encode_box_mask_rle, encode_rle


def coco_encode(mask: NDArray[np.bool_]) -> dict[str, Any]:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))  # type: ignore[no-any-return]


def random_mask(seed: int, height_px: int, width_px: int) -> NDArray[np.bool_]:
    rng = np.random.default_rng(seed)
    return rng.random((height_px, width_px)) < rng.uniform(0.05, 0.95)


def blob(height_px: int, width_px: int) -> NDArray[np.bool_]:
    """A smooth shape: few, long runs (what real masks look like)."""
    ys, xs = np.mgrid[:height_px, :width_px]
    return ((xs - width_px * 0.4) / (width_px * 0.3)) ** 2 + (
        (ys - height_px * 0.6) / (height_px * 0.35)
    ) ** 2 < 1


def column(pattern: str) -> NDArray[np.bool_]:
    return np.array([c == "1" for c in pattern]).reshape(-1, 1)


MASKS = [
    pytest.param(np.zeros((7, 5), dtype=bool), id="empty"),
    pytest.param(np.ones((7, 5), dtype=bool), id="full"),
    pytest.param(np.eye(1, 35, 17, dtype=bool).reshape(7, 5), id="single-pixel"),
    pytest.param(np.eye(1, 35, 0, dtype=bool).reshape(7, 5), id="first-pixel-set"),
    pytest.param(np.eye(1, 35, 34, dtype=bool).reshape(7, 5), id="last-pixel-set"),
    pytest.param(np.ones((1, 1), dtype=bool), id="1x1-set"),
    pytest.param(np.zeros((1, 1), dtype=bool), id="1x1-clear"),
    pytest.param(random_mask(1, 1, 97), id="1xN"),
    pytest.param(random_mask(2, 97, 1), id="Nx1"),
    pytest.param(np.ones((1, 50), dtype=bool), id="1xN-full"),
    pytest.param(column("0110111000010"), id="Nx1-pattern"),
    pytest.param(np.indices((9, 11)).sum(axis=0) % 2 == 0, id="checkerboard"),
    pytest.param(blob(480, 640), id="blob-640x480"),
    # runs of 1e6 and more: multi-group numbers and large negative deltas
    pytest.param(blob(3024, 4032), id="blob-4032x3024"),
    *[
        pytest.param(random_mask(seed, 13 + seed, 29 - seed), id=f"random-{seed}")
        for seed in range(12)
    ],
]


@pytest.mark.parametrize("mask", MASKS)
def test_counts_are_those_of_pycocotools(mask: NDArray[np.bool_]) -> None:
    ours = encode_rle(mask)
    theirs = coco_encode(mask)
    assert ours["size"] == [mask.shape[0], mask.shape[1]] == list(theirs["size"])
    assert isinstance(ours["counts"], str)  # JSON-ready; pycocotools gives bytes
    assert ours["counts"] == theirs["counts"].decode("ascii")


# pycocotools 2.0.11's decode trips numpy 2's copy-keyword deprecation inside its own
# Cython code; nothing of ours is involved, so only that message is let through
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
@pytest.mark.parametrize("mask", MASKS)
def test_pycocotools_decodes_ours_to_the_mask_with_its_area(mask: NDArray[np.bool_]) -> None:
    ours = encode_rle(mask)
    assert np.array_equal(coco_mask.decode(ours).astype(bool), mask)
    assert int(coco_mask.area(ours)) == int(np.count_nonzero(mask))
    assert np.array_equal(decode_rle(ours), mask)


def test_known_encoding() -> None:
    # column-major runs 1 zero, 2 ones, 1 zero, 3 ones, 4 zeros, 1 one, 1 zero; from the
    # fourth run on each is stored as its difference from the run two before
    mask = column("0110111000010")
    # runs 1,2,1,3,4,1,1 -> 1,2,1,(3-2)=1,(4-1)=3,(1-3)=-2,(1-4)=-3 -> '1','2','1','1','3',
    # -2 -> 0b11110 + 48 = 'N', -3 -> 0b11101 + 48 = 'M'
    assert encode_rle(mask)["counts"] == "12113NM"


def test_decode_accepts_pycocotools_bytes() -> None:
    mask = random_mask(5, 20, 30)
    assert np.array_equal(decode_rle(coco_encode(mask)), mask)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        pytest.param({"size": [2, 2], "counts": "3"}, "cover 3 pixels", id="too-few-pixels"),
        pytest.param({"size": [2, 2], "counts": "1 "}, "holds ' '", id="bad-character"),
        pytest.param({"size": [2, 2], "counts": "P"}, "ends inside a number", id="cut-number"),
    ],
)
def test_decode_rejects_broken_rle(rle: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_rle(rle)


def test_encode_needs_a_2d_mask() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros(5, dtype=bool))


# --- from a box crop, without the full mask -----------------------------------------


BOXES = [
    pytest.param((3, 2, 9, 7), id="inside"),
    pytest.param((0, 0, 12, 10), id="whole-image"),
    pytest.param((4, 0, 8, 10), id="full-height-runs-join-across-columns"),
    pytest.param((0, 0, 1, 1), id="top-left-pixel"),
    pytest.param((11, 9, 12, 10), id="bottom-right-pixel"),
    pytest.param((0, 5, 12, 10), id="bottom-band"),
    pytest.param((6, 0, 7, 10), id="one-column"),
]


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("fill", ["random", "full", "empty"])
def test_box_mask_rle_equals_the_full_mask_rle(box: tuple[int, int, int, int], fill: str) -> None:
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    crop = {
        "random": random_mask(sum(box), *shape),
        "full": np.ones(shape, dtype=bool),
        "empty": np.zeros(shape, dtype=bool),
    }[fill]
    box_mask = BoxMask(x0, y0, crop)
    full = box_mask.to_full(12, 10)
    assert encode_box_mask_rle(box_mask, 12, 10) == encode_rle(full)
    assert encode_box_mask_rle(box_mask, 12, 10)["counts"] == coco_encode(full)["counts"].decode()


@pytest.mark.parametrize("seed", range(40))
def test_box_mask_rle_on_random_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width_px, height_px = (int(v) for v in rng.integers(1, 40, 2))
    x0 = int(rng.integers(0, width_px))
    y0 = int(rng.integers(0, height_px)) if seed % 3 else 0
    x1 = int(rng.integers(x0 + 1, width_px + 1))
    y1 = int(rng.integers(y0 + 1, height_px + 1)) if seed % 3 else height_px
    box_mask = BoxMask(x0, y0, random_mask(seed, y1 - y0, x1 - x0))
    assert encode_box_mask_rle(box_mask, width_px, height_px) == encode_rle(
        box_mask.to_full(width_px, height_px)
    )


def test_box_mask_rle_on_a_12_mp_image() -> None:
    box_mask = BoxMask(1000, 0, blob(3024, 1500))  # full height: runs join across columns
    expected = coco_encode(box_mask.to_full(4032, 3024))["counts"].decode()
    assert encode_box_mask_rle(box_mask, 4032, 3024)["counts"] == expected


def test_box_mask_rle_with_an_empty_crop() -> None:
    box_mask = BoxMask(5, 5, np.zeros((0, 3), dtype=bool))
    assert encode_box_mask_rle(box_mask, 12, 10) == encode_rle(np.zeros((10, 12), dtype=bool))


def test_box_mask_rle_must_fit_the_image() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_box_mask_rle(BoxMask(10, 0, np.ones((2, 3), dtype=bool)), 12, 10)
