"""Large and reused images go through the File API, uploaded once for the whole fleet.

Two `celery worker` processes, real redis-server, moto's S3 server and the emulator over
HTTP. The inline limit is lowered so a 2.4 MB image counts as large.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import REPO_ROOT, Stack, running_stack, wait_until
from worker.emulator.scenes import Scene, make_scene
from worker.settings import Settings

# in one test process, where the module's one fleet is started once (tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("file_api")]

INLINE_MAX_BYTES = 1_000_000
UPLOAD_LOCK_TTL_S = 4.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "GVW_INLINE_MAX_BYTES": str(INLINE_MAX_BYTES),
        "GVW_UPLOAD_LOCK_TTL_S": str(UPLOAD_LOCK_TTL_S),
    }
    with running_stack(
        tmp_path_factory.mktemp("fleet"), workers=2, concurrency=4, extra_env=env
    ) as stack:
        yield stack


def large_png(scene: Scene) -> bytes:
    """Stored without compression: ~3 bytes a pixel, so 1000x800 weighs 2.4 MB."""
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG", compress_level=0)
    data = buffer.getvalue()
    assert len(data) > INLINE_MAX_BYTES
    return data


def records(stack: Stack, job_ids: list[str], timeout_s: float = 90) -> list[dict]:
    return [stack.record(job_id, timeout_s=timeout_s) for job_id in job_ids]


def test_large_image_is_uploaded_once_for_20_jobs_on_2_workers(fleet: Stack) -> None:
    scene = make_scene(1000, 800, shapes=["red circle", "blue rectangle"], seed=21)
    uri = fleet.put(f"big/{uuid.uuid4().hex}.png", large_png(scene))
    uploads_before = fleet.uploads()
    job_ids = [fleet.submit({"task": "caption", "images": [uri]}) for _ in range(20)]
    results = records(fleet, job_ids)
    assert all(r["status"] == "succeeded" for r in results), results
    assert fleet.uploads() - uploads_before == 1
    assert {r["images"][0]["transport"] for r in results} == {"file_api"}
    assert all("red circle" in r["output"]["text"] for r in results)
    # both workers took part: the single upload was shared across processes
    # (a worker logs a task's success just after its result is visible, hence the wait)
    for worker in fleet.workers:
        wait_until(
            lambda w=worker: "vision.analyze" in w.log() and "succeeded" in w.log(),  # type: ignore[misc]
            timeout_s=10,
            what=f"{worker.name} to log a success",
        )


def test_small_image_goes_inline_without_upload(fleet: Stack) -> None:
    uri = fleet.put(f"small/{uuid.uuid4().hex}.png", make_scene(320, 240, shapes=1).png_bytes())
    uploads_before = fleet.uploads()
    record = fleet.record(fleet.submit({"task": "caption", "images": [uri]}))
    assert record["images"][0]["transport"] == "inline"
    assert fleet.uploads() == uploads_before


def test_expired_file_uri_is_uploaded_again(fleet: Stack) -> None:
    scene = make_scene(1000, 800, shapes=["green triangle"], seed=22)
    uri = fleet.put(f"big/{uuid.uuid4().hex}.png", large_png(scene))
    uploads_before = fleet.uploads()
    first = fleet.record(fleet.submit({"task": "caption", "images": [uri]}))
    assert first["status"] == "succeeded"
    assert fleet.uploads() - uploads_before == 1
    fleet.emulator.expire_files()  # Gemini deleted it; our cache still holds the URI
    calls_before = fleet.model_calls()
    second = fleet.record(fleet.submit({"task": "caption", "images": [uri]}))
    assert second["status"] == "succeeded", second
    assert second["images"][0]["transport"] == "file_api"
    assert fleet.uploads() - uploads_before == 2  # uploaded again, once
    assert fleet.model_calls() - calls_before == 2  # the refused call and its repeat
    statuses = [r["status_code"] for r in fleet.emulator.stats()["requests"][-2:]]
    assert statuses == [403, 200]


def test_file_still_processing_is_waited_for(fleet: Stack) -> None:
    fleet.emulator.configure(processing_delay_s=2.0)
    try:
        scene = make_scene(1000, 800, shapes=["orange rectangle"], seed=23)
        uri = fleet.put(f"big/{uuid.uuid4().hex}.png", large_png(scene))
        started = time.monotonic()
        record = fleet.record(fleet.submit({"task": "caption", "images": [uri]}))
        assert record["status"] == "succeeded", record
        assert time.monotonic() - started >= 2.0
        assert "orange rectangle" in record["output"]["text"]
    finally:
        fleet.emulator.configure(processing_delay_s=0.0)


def test_killed_upload_lock_holder_blocks_no_longer_than_the_lock_timeout(fleet: Stack) -> None:
    scene = make_scene(1000, 800, shapes=["purple circle"], seed=24)
    data = large_png(scene)
    uri = fleet.put(f"big/{uuid.uuid4().hex}.png", data)
    project = Settings(
        gemini_base_url=fleet.env["GEMINI_BASE_URL"], gemini_api_key=fleet.env["GEMINI_API_KEY"]
    ).api_project_fingerprint
    sha = hashlib.sha256(data).hexdigest()  # an upright PNG is sent as stored
    lock_key = f"gvw:files:{project}:lock:{sha}"
    # a process that takes the upload lock through the real code path, then dies mid-upload
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time, redis\n"
                "from worker.fleet.file_cache import RedisFileCache\n"
                f"cache = RedisFileCache(redis.Redis.from_url('{fleet.redis.url}/1'), "
                f"project='{project}', lock_ttl_s={UPLOAD_LOCK_TTL_S})\n"
                f"cache.get_or_upload('{sha}', lambda: time.sleep(600))\n"
            ),
        ],
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    r = fleet.redis.client(1)
    wait_until(lambda: bool(r.exists(lock_key)), timeout_s=20, what="the holder's lock")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    started = time.monotonic()
    uploads_before = fleet.uploads()
    record = fleet.record(fleet.submit({"task": "caption", "images": [uri]}))
    waited_s = time.monotonic() - started
    assert record["status"] == "succeeded", record
    assert fleet.uploads() - uploads_before == 1
    assert waited_s < UPLOAD_LOCK_TTL_S + 10


def test_compare_three_images_mixing_transports_keeps_their_order(fleet: Stack) -> None:
    a = make_scene(400, 300, shapes=["red circle"], seed=31)
    b = make_scene(1000, 800, shapes=["blue rectangle"], seed=32)
    c = make_scene(400, 300, shapes=["green triangle"], seed=33)
    uris = [
        fleet.put(f"cmp/{uuid.uuid4().hex}.png", a.png_bytes()),
        fleet.put(f"cmp/{uuid.uuid4().hex}.png", large_png(b)),
        fleet.put(f"cmp/{uuid.uuid4().hex}.png", c.png_bytes()),
    ]
    record = fleet.record(
        fleet.submit({"task": "compare", "images": uris, "prompt": "What differs between them?"})
    )
    assert record["status"] == "succeeded", record
    assert [i["transport"] for i in record["images"]] == ["inline", "file_api", "inline"]
    assert [i["uri"] for i in record["images"]] == uris
    text = record["output"]["text"]
    assert "Only in image 1: red circle" in text
    assert "Only in image 2: blue rectangle" in text
    assert "Only in image 3: green triangle" in text


def test_custom_takes_several_images(fleet: Stack) -> None:
    uris = [
        fleet.put(f"multi/{uuid.uuid4().hex}.png", make_scene(300, 200, shapes=[label]).png_bytes())
        for label in ("red circle", "yellow rectangle")
    ]
    record = fleet.record(
        fleet.submit({"task": "custom", "images": uris, "prompt": "Describe each image."})
    )
    assert record["status"] == "succeeded"
    text = record["output"]["text"]
    assert text.index("red circle") < text.index("yellow rectangle")


def test_operators_list_and_purge_the_uploads(fleet: Stack) -> None:
    from tests.integration.test_cli import gvw

    scene = make_scene(1000, 800, shapes=["cyan circle"], seed=41)
    data = large_png(scene)
    uri = fleet.put(f"big/{uuid.uuid4().hex}.png", data)
    assert fleet.record(fleet.submit({"task": "caption", "images": [uri]}))["status"] == "succeeded"

    listed = gvw("files", "list", "--json", env=fleet.env)
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    ours = [e for e in entries if e["sha256"] == hashlib.sha256(data).hexdigest()]
    assert len(ours) == 1
    assert ours[0]["uri"].startswith(fleet.env["GEMINI_BASE_URL"])

    fresh_only = gvw("files", "purge", env=fleet.env)  # --expired-only is the default
    assert fresh_only.returncode == 0, fresh_only.stderr
    assert fresh_only.stdout.startswith("deleted 0 uploads")

    everything = gvw("files", "purge", "--all", env=fleet.env)
    assert everything.returncode == 0, everything.stderr
    assert not everything.stdout.startswith("deleted 0 uploads")
    assert gvw("files", "list", "--json", env=fleet.env).stdout.strip() == ""
    # the next job needing the image uploads it again and succeeds
    uploads_before = fleet.uploads()
    assert fleet.record(fleet.submit({"task": "caption", "images": [uri]}))["status"] == "succeeded"
    assert fleet.uploads() - uploads_before == 1
