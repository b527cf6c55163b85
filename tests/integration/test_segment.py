"""Segmentation through the whole worker: full-size masks line up with the true shapes."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.rle import decode_rle
from tests.harness import Stack, list_job_keys
from tests.integration.test_pipeline import exif_rotated_jpeg
from worker.emulator.scenes import Scene, make_scene

pytestmark = pytest.mark.integration


def s3_bytes(stack: Stack, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bytes(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def assert_masks_match(stack: Stack, record: dict[str, Any], scene: Scene) -> None:
    objects = record["output"]["objects"]
    assert sorted(o["label"] for o in objects) == sorted(scene.labels)
    job_prefix = f"s3://results/vision/{record['job_id']}/attempts/{record['attempt_id']}/masks/"
    for shape in scene.shapes:
        (obj,) = [o for o in objects if o["label"] == shape.label]
        assert obj["mask"].startswith(job_prefix)
        png = Image.open(io.BytesIO(s3_bytes(stack, obj["mask"])))
        assert png.mode == "L"
        assert png.size == scene.image.size  # the upright original's size
        pixels = np.asarray(png)
        assert set(np.unique(pixels)) <= {0, 255}
        found = pixels == 255
        score = mask_iou(found, shape.mask)
        assert score >= 0.9, (shape.label, score)
        assert obj["mask_area"] == int(found.sum())
        assert np.array_equal(decode_rle(obj["mask_rle"]), found)


@pytest.mark.parametrize(
    ("size", "orientation"),
    [
        pytest.param((640, 480), None, id="non-square-png"),
        pytest.param((480, 720), None, id="portrait-png"),
        pytest.param((900, 600), 6, id="exif-orientation-6-jpeg"),
        pytest.param((900, 600), 8, id="exif-orientation-8-jpeg"),
    ],
)
def test_full_size_masks_match_the_true_masks(
    stack: Stack, size: tuple[int, int], orientation: int | None
) -> None:
    scene = make_scene(*size, shapes=["red circle", "blue rectangle", "green triangle"], seed=7)
    data = exif_rotated_jpeg(scene, orientation) if orientation else scene.png_bytes()
    uri = stack.put(f"seg/{uuid.uuid4().hex}.img", data)
    record = stack.record(stack.submit({"task": "segment", "images": [uri]}))
    assert record["status"] == "succeeded", record
    assert (record["images"][0]["width"], record["images"][0]["height"]) == size
    assert_masks_match(stack, record, scene)
    # a photo's overlay is a JPEG (cheap to encode), anything else's a PNG
    assert record["artifacts"]["overlay"].endswith(
        "/overlay.jpg" if orientation else "/overlay.png"
    )


def test_an_overlay_can_be_left_out_while_masks_are_kept(stack: Stack) -> None:
    scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=8)
    uri = stack.put(f"seg/{uuid.uuid4().hex}.png", scene.png_bytes())
    job = {"task": "segment", "images": [uri], "options": {"overlay": False}}
    record = stack.record(stack.submit(job))
    assert record["status"] == "succeeded", record
    assert record["artifacts"] == {}
    assert_masks_match(stack, record, scene)


def test_12_megapixel_image_is_scaled_down_before_sending(stack: Stack) -> None:
    scene = make_scene(4000, 3000, shapes=["magenta circle", "orange rectangle"], seed=12)
    uri = stack.put(f"seg/{uuid.uuid4().hex}.png", scene.png_bytes())
    record = stack.record(stack.submit({"task": "segment", "images": [uri]}), timeout_s=120)
    assert record["status"] == "succeeded", record
    image = record["images"][0]
    assert (image["width"], image["height"]) == (4000, 3000)
    # within GVW_FIT_WITHIN_PX (1024), by a whole factor when that keeps 90% of it
    assert (image["sent_width"], image["sent_height"]) == (1000, 750)
    assert_masks_match(stack, record, scene)


def test_segment_keys_stay_inside_the_job_folder(stack: Stack) -> None:
    scene = make_scene(500, 400, shapes=["red circle", "cyan circle"], seed=3)
    uri = stack.put(f"seg/{uuid.uuid4().hex}.png", scene.png_bytes())
    job_id = stack.submit({"task": "segment", "images": [uri]})
    record = stack.record(job_id)
    keys = list_job_keys(stack.s3, job_id)
    assert all(k.startswith(f"vision/{job_id}/") for k in keys)
    masks = [o["mask"] for o in record["output"]["objects"]]
    assert len(masks) == len(set(masks)) == 2
