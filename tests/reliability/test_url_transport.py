"""URL transport (GVW_TRANSPORT=url): Gemini fetches an S3 object through a pre-signed URL.

Real `celery worker` processes, redis-server, moto's S3 server behind a logging proxy, and
the emulator, which fetches the URL from that proxy and answers from the pixels it got.
The proxy tells the worker's requests (boto3) from the emulator's (urllib) by their
User-Agent, so the test sees what each side read.
"""

from __future__ import annotations

import io
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.harness import Stack
from tests.reliability.conftest import FleetFactory, assert_invariant
from tests.reliability.fakes import S3Proxy, S3Request
from worker.emulator.scenes import make_scene

URL_ENV = {"GVW_TRANSPORT": "url", "GVW_URL_TTL_S": "120"}
SIGNATURE = "X-Amz-Signature"


@pytest.fixture
def proxy() -> Iterator[S3Proxy]:
    server = S3Proxy()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def photo_jpeg(seed: int, *, orientation: int = 1, size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A photo-like JPEG (sensor noise over the scene: hundreds of KB, as photos are)."""
    scene = make_scene(*size, shapes=["red circle", "blue rectangle"], seed=seed)
    pixels = np.asarray(scene.image.convert("RGB"), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-16, 17, pixels.shape, dtype=np.int16)
    photo = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    data = buffer.getvalue()
    assert len(data) > 256 * 1024  # far more than the worker reads of it
    return data


def worker_reads(log: list[S3Request], key: str) -> list[S3Request]:
    return [e for e in log if e.key == key and e.method == "GET" and "Boto3" in e.user_agent]


def fetched_by_gemini(log: list[S3Request], key: str) -> list[S3Request]:
    return [e for e in log if e.key == key and e.method == "GET" and SIGNATURE in e.path]


def worker_logs(stack: Stack) -> str:
    return "".join(worker.log() for worker in stack.workers)


def all_records_text(records: list[dict[str, Any]]) -> str:
    import json

    return json.dumps(records)


def metrics_text(stack: Stack) -> str:
    port = stack.env.get("GVW_METRICS_PORT")
    if not port:
        return ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def test_gemini_reads_an_upright_photo_from_s3_and_the_worker_only_its_header(
    fleet: FleetFactory, proxy: S3Proxy
) -> None:
    env = {**URL_ENV, "AWS_ENDPOINT_URL_S3": proxy.url}
    with fleet(workers=1, concurrency=2, extra_env=env) as stack:
        proxy.upstream = stack.moto.endpoint
        data = photo_jpeg(31)
        key = f"url/{uuid.uuid4().hex}.jpg"
        uri = stack.put(key, data)
        head = stack.s3.head_object(Bucket="inbox", Key=key)
        job_ids = [
            stack.submit({"task": "caption", "images": [uri]}),
            stack.submit({"task": "detect", "prompt": "shapes", "images": [uri],
                          "options": {"overlay": False}}),
        ]  # fmt: skip
        records = assert_invariant(stack, job_ids)
        logs = worker_logs(stack)
        fetches = stack.emulator.stats()
    log = proxy.log()

    caption, detect = records
    for record in records:
        assert record["status"] == "succeeded", record
        (image,) = record["images"]
        assert image["transport"] == "url"
        assert image["sha256"] is None  # the worker never had the bytes
        assert image["etag"] == head["ETag"] and image["size_bytes"] == len(data)
        assert (image["width"], image["height"]) == (1600, 1200)
    assert "red circle" in caption["output"]["text"]  # the emulator saw the pixels
    assert {o["label"] for o in detect["output"]["objects"]} >= {"red circle"}
    # the worker read a header per job, never the object; Gemini read it whole
    reads = worker_reads(log, key)
    assert len(reads) == 2 and all(r.body_bytes <= 64 * 1024 for r in reads)
    fetched = fetched_by_gemini(log, key)
    assert len(fetched) == 2 and all(f.body_bytes == len(data) for f in fetched)
    assert fetches["url_fetches"] == 2
    # a pre-signed URL is a credential: in no log and no record
    assert SIGNATURE not in logs and SIGNATURE not in all_records_text(records)


@pytest.mark.parametrize(
    ("name", "job", "data"),
    [
        pytest.param(
            "rotated", {"task": "caption"}, lambda: photo_jpeg(32, orientation=6), id="exif"
        ),
        pytest.param(
            "gif",
            {"task": "caption"},
            lambda: _gif(make_scene(320, 240, shapes=["red circle"], seed=33).image),
            id="gif",
        ),
        pytest.param(
            "overlay", {"task": "detect", "prompt": "shapes"}, lambda: photo_jpeg(34), id="overlay"
        ),
        pytest.param(
            "segment",
            {"task": "segment", "prompt": "shapes", "options": {"overlay": False}},
            lambda: photo_jpeg(35),
            id="reduced-copy",
        ),
    ],
)
def test_an_image_that_needs_preparing_goes_the_bytes_way(
    fleet: FleetFactory, proxy: S3Proxy, name: str, job: dict[str, Any], data: Any
) -> None:
    env = {**URL_ENV, "AWS_ENDPOINT_URL_S3": proxy.url}
    with fleet(workers=1, concurrency=2, extra_env=env) as stack:
        proxy.upstream = stack.moto.endpoint
        key = f"url/{name}-{uuid.uuid4().hex}"
        uri = stack.put(key, data())
        (record,) = assert_invariant(stack, [stack.submit({**job, "images": [uri]})])
    assert record["status"] == "succeeded", record
    assert record["images"][0]["transport"] == "inline"
    assert record["images"][0]["sha256"]
    assert not fetched_by_gemini(proxy.log(), key)


def test_a_url_gemini_cannot_fetch_falls_back_to_the_bytes(
    fleet: FleetFactory, proxy: S3Proxy
) -> None:
    # S3 answers the pre-signed GET "Request has expired", as it does past its lifetime
    proxy.rule = lambda method, path: "expire" if SIGNATURE in path else "forward"
    env = {**URL_ENV, "AWS_ENDPOINT_URL_S3": proxy.url}
    with fleet(workers=1, concurrency=2, extra_env=env) as stack:
        proxy.upstream = stack.moto.endpoint
        key = f"url/{uuid.uuid4().hex}.jpg"
        uri = stack.put(key, photo_jpeg(36))
        (record,) = assert_invariant(stack, [stack.submit({"task": "caption", "images": [uri]})])
        calls = stack.emulator.stats()["requests"]
        logs = worker_logs(stack)
    assert record["status"] == "succeeded", record
    assert record["images"][0]["transport"] == "inline"
    assert any("could not fetch" in w for w in record["warnings"]), record["warnings"]
    assert [c["status_code"] for c in calls][-2:] == [400, 200]
    assert SIGNATURE not in logs


def _gif(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("P").save(buffer, format="GIF")
    return buffer.getvalue()
