"""Scenarios 19 and 20 of docs/reliability.md: the stores around the worker fail.

19. Expired File API URI (403) -> uploaded again once, the job succeeds.
20. S3 write failures injected -> retried; the invariant still holds.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from tests.harness import list_job_keys
from tests.reliability.conftest import FleetFactory, assert_invariant
from tests.reliability.fakes import S3Proxy
from worker.emulator.scenes import Scene, make_scene

# --- 19. an expired File API upload -----------------------------------------------------------

INLINE_MAX_BYTES = 1_000_000
MODEL_LATENCY_MS = 450


def large_png(scene: Scene) -> bytes:
    """Stored without compression (~3 bytes a pixel): over the lowered inline limit."""
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG", compress_level=0)
    data = buffer.getvalue()
    assert len(data) > INLINE_MAX_BYTES
    return data


def test_expired_file_uri_is_uploaded_again_once_and_every_job_succeeds(
    fleet: FleetFactory,
) -> None:
    env = {"GVW_INLINE_MAX_BYTES": str(INLINE_MAX_BYTES)}
    with fleet(workers=2, concurrency=2, extra_env=env) as stack:
        scene = make_scene(1000, 800, shapes=["red circle", "blue rectangle"], seed=19)
        uri = stack.put(f"big/{uuid.uuid4().hex}.png", large_png(scene))
        first = stack.submit({"task": "caption", "images": [uri]})
        (record,) = assert_invariant(stack, [first])
        assert record["status"] == "succeeded", record
        assert record["images"][0]["transport"] == "file_api"
        assert stack.uploads() == 1

        # Gemini deletes the file (48 h later, or by hand); the fleet's cache still has it
        assert stack.emulator.expire_files()
        # Jobs arrive one after another and each call takes a while, as in production: a
        # later job is refused after an earlier one has already uploaded the image again.
        stack.emulator.configure(latency_ms=MODEL_LATENCY_MS)
        seen = len(stack.emulator.stats()["requests"])
        job_ids = []
        for _ in range(4):
            job_ids.append(stack.submit({"task": "caption", "images": [uri]}))
            time.sleep(MODEL_LATENCY_MS / 1000 / 3)
        records = assert_invariant(stack, job_ids)
        later = stack.emulator.stats()["requests"][seen:]
        uploads_again = stack.uploads() - 1

    for record in records:
        assert record["status"] == "succeeded", record
        assert record["images"][0]["transport"] == "file_api"
        assert "red circle" in record["output"]["text"]
    statuses = Counter(r["status_code"] for r in later)
    refused = statuses[403]
    # every job answered once; only jobs that sent the dead URI were refused, once each
    assert statuses[200] == len(job_ids), statuses
    assert set(statuses) <= {200, 403}, statuses
    assert 1 <= refused <= len(job_ids), statuses
    # the fleet uploads the image again once, however many jobs met the dead URI
    assert uploads_again == 1, (uploads_again, statuses)


# --- 20. S3 writes fail -----------------------------------------------------------------------


class FlakyResultsBucket:
    """Which PUTs to the results bucket fail, decided per job from the key:

    - the first overlay key of each job: every PUT answered 503 SlowDown. botocore's own
      retries cannot get it through, so the attempt fails and the task must retry (a new
      attempt writes a new key, which passes);
    - the first mask key of each job: one 503 SlowDown (botocore's retry gets it through);
    - the first result.json PUT of each job: written, then answered 500, as if the answer
      were lost on the way back. The retry of that conditional create meets the object it
      wrote itself (HTTP 412) and must still count as this attempt's commit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first_overlay: dict[str, str] = {}
        self.slowed_masks: dict[str, str] = {}
        self.lost_answers: set[str] = set()

    def __call__(self, method: str, path: str) -> str:
        parts = urlsplit(path).path.lstrip("/").split("/")
        if method != "PUT" or parts[0] != "results" or len(parts) < 4:
            return "forward"
        job_id, key = parts[2], "/".join(parts[1:])
        with self._lock:
            if key.endswith("/overlay.png") and self.first_overlay.setdefault(job_id, key) == key:
                return "reject"
            if "/masks/" in key and job_id not in self.slowed_masks:
                self.slowed_masks[job_id] = key
                return "reject"
            if key.endswith("/result.json") and job_id not in self.lost_answers:
                self.lost_answers.add(job_id)
                return "land_then_fail"
        return "forward"


def test_s3_write_failures_are_retried_and_the_invariant_holds(fleet: FleetFactory) -> None:
    faults = FlakyResultsBucket()
    proxy = S3Proxy(faults)
    proxy.start()
    try:
        with fleet(workers=2, concurrency=2, extra_env={"AWS_ENDPOINT_URL_S3": proxy.url}) as stack:
            proxy.upstream = stack.moto.endpoint
            scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=20)
            uri = stack.put(f"s3faults/{uuid.uuid4().hex}.png", scene.png_bytes())
            tasks = ["detect"] * 4 + ["segment"] * 2
            job_ids = [stack.submit({"task": task, "images": [uri]}) for task in tasks]
            records = assert_invariant(stack, job_ids, timeout_s=120)
            model_calls = stack.model_calls()
            keys = {job_id: list_job_keys(stack.s3, job_id) for job_id in job_ids}
        log = proxy.log()
    finally:
        proxy.stop()

    for job_id, record in zip(job_ids, records, strict=True):
        assert record["status"] == "succeeded", record
        # the overlay write failed for good once: exactly one retry of the whole attempt
        assert record["attempt"] == 2, record
        committed = f"vision/{job_id}/attempts/{record['attempt_id']}/"
        assert faults.first_overlay[job_id].startswith(f"vision/{job_id}/attempts/")
        assert not faults.first_overlay[job_id].startswith(committed)  # not the failed one
        assert faults.first_overlay[job_id] not in keys[job_id]  # it never landed
        assert job_id in faults.lost_answers
    # the paid answer was kept: storage trouble costs no second model call
    assert model_calls == len(job_ids)

    by_key: dict[str, list[Any]] = {}
    for entry in log:
        by_key.setdefault(entry.key, []).append(entry)
    for job_id in job_ids:
        overlay = [e.action for e in by_key[faults.first_overlay[job_id]]]
        assert len(overlay) >= 2 and set(overlay) == {"rejected"}, overlay  # botocore retried
        result = [
            (e.action, e.status)
            for e in by_key[f"vision/{job_id}/result.json"]
            if e.method == "PUT"
        ]
        # written but answered 500, then botocore's retry met its own object: 412
        assert result[:2] == [("landed_then_failed", 500), ("forwarded", 412)], result
    for key in faults.slowed_masks.values():
        mask = [(e.action, e.status) for e in by_key[key]]
        assert mask[:2] == [("rejected", 503), ("forwarded", 200)], mask
    assert len(faults.slowed_masks) == tasks.count("segment")
