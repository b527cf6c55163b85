"""Hardening: what a hostile or careless producer, or a model answer, could do to the fleet.

Each test drives real `celery worker` processes (redis-server, moto's S3 server, the
emulator or a stub speaking Gemini's REST API) the way an attacker or a careless producer
would: raw broker messages, reused job ids, crafted output URIs, huge jobs and answers,
remote-control broadcasts, absurd numbers, a storage outage. docs/security.md lists each
defence with the test that holds it.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from tests.conftest import GEMINI_REAL
from tests.harness import Stack, free_port, list_job_keys, read_json, wait_until
from tests.reliability.conftest import FleetFactory, assert_invariant
from tests.reliability.fakes import GeminiStub, S3Proxy
from worker.emulator.scenes import make_scene

# --- helpers ---------------------------------------------------------------------------------


def put_scene(
    stack: Stack, *, width: int = 320, height: int = 240, seed: int = 0, shapes: int = 2
) -> str:
    scene = make_scene(width, height, shapes=["red circle", "blue rectangle"][:shapes], seed=seed)
    return stack.put(f"h/{uuid.uuid4().hex}.png", scene.png_bytes())


def publish_raw(
    stack: Stack,
    body: Any,
    *,
    headers: dict[str, Any] | None,
    content_type: str = "application/json",
) -> None:
    """A message on `vision` exactly as given: no Celery on the producer side."""
    queue = Queue("vision", Exchange("vision", type="direct"), routing_key="vision")
    with Connection(stack.env["CELERY_BROKER_URL"]) as conn:
        producer = conn.Producer()
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        producer.publish(
            raw,
            exchange=queue.exchange,
            routing_key="vision",
            declare=[queue],
            headers=headers or {},
            content_type=content_type,
            content_encoding="utf-8",
        )


def celery_headers(task_id: str | None, task: Any = "vision.analyze") -> dict[str, Any]:
    headers: dict[str, Any] = {"lang": "py", "task": task, "retries": 0, "argsrepr": "..."}
    if task_id is not None:
        headers["id"] = task_id
    return headers


def dead_letter(stack: Stack, job_id: str) -> dict[str, str]:
    raw = stack.redis.client(db=1).hgetall(f"gvw:dead_letter:{job_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def stored_bytes(stack: Stack, key: str) -> int:
    return len(stack.s3.get_object(Bucket="results", Key=key)["Body"].read())


def broker_is_drained(stack: Stack) -> bool:
    """Nothing waiting on `vision` and nothing delivered but unacknowledged."""
    broker = stack.redis.client(db=0)
    return broker.llen("vision") == 0 and broker.hlen("unacked") == 0


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def metrics_text(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def jobs_total(text: str) -> dict[tuple[str, str], float]:
    """gvw_jobs_total samples by (task, outcome)."""
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("gvw_jobs_total{"):
            continue
        labels_text, value = line[len("gvw_jobs_total{") :].rsplit("} ", 1)
        labels = dict(pair.split("=", 1) for pair in labels_text.split(","))
        key = (labels["task"].strip('"'), labels["outcome"].strip('"'))
        found[key] = float(value)
    return found


def label_values(text: str, metric: str, label: str) -> set[str]:
    values = set()
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'{label}="' in line:
            values.add(line.split(f'{label}="', 1)[1].split('"', 1)[0])
    return values


# --- 1. a malformed message never stops a worker ----------------------------------------------


def test_malformed_messages_are_recorded_and_never_stop_a_worker(fleet: FleetFactory) -> None:
    with fleet(workers=1, concurrency=2) as stack:
        image = put_scene(stack)
        job = {"task": "caption", "images": [image]}
        other_output = {**job, "output": "s3://results/elsewhere"}
        ids = {name: f"bad-{name}-{uuid.uuid4().hex[:8]}" for name in "abcdefg"}
        malformed: list[tuple[Any, dict[str, Any] | None, str]] = [
            # a JSON string, not the [args, kwargs, embed] triple
            ("not a task message", celery_headers(ids["a"]), "application/json"),
            # args empty, args too long, unexpected kwargs
            ([[], {}, {}], celery_headers(ids["b"]), "application/json"),
            ([[other_output, "extra"], {}, {}], celery_headers(ids["c"]), "application/json"),
            ([[job], {"evil": True}, {}], celery_headers(ids["d"]), "application/json"),
            # kwargs and embed of the wrong types
            ([[job], ["not", "a", "dict"], {}], celery_headers(ids["e"]), "application/json"),
            ([[job], {}, "embed"], celery_headers(ids["f"]), "application/json"),
            # a triple of the wrong length
            ([[job], {}], celery_headers(ids["g"]), "application/json"),
            # no task id at all, a task name that is not a string, a body that is not JSON
            ([[job], {}, {}], celery_headers(None), "application/json"),
            (
                [[job], {}, {}],
                celery_headers("bad-name", task=["vision.analyze"]),
                "application/json",
            ),
            (b"{not json", celery_headers("bad-json"), "application/json"),
            # not a Celery message at all: no headers
            ({"hello": "world"}, None, "application/json"),
        ]
        for body, headers, content_type in malformed:
            publish_raw(stack, body, headers=headers, content_type=content_type)

        # the worker is still serving: a normal job sent right after succeeds
        after = stack.submit({"task": "caption", "images": [image]})
        assert stack.record(after)["status"] == "succeeded"
        wait_until(lambda: broker_is_drained(stack), timeout_s=30, what="every message acked")
        assert stack.worker.proc.poll() is None, stack.worker.log()[-3000:]

        # a dead letter wherever a job id could be read, an error.json where an output
        # could be determined (the job's own, or the default results folder)
        for name, job_id in ids.items():
            letter = dead_letter(stack, job_id)
            assert letter.get("code") == "invalid_job", (name, letter)
        records = {
            name: stack.record(job_id, timeout_s=20) for name, job_id in ids.items() if name != "c"
        }
        # the job named its own output: its error record is there
        records["c"] = wait_for_json(stack, f"elsewhere/{ids['c']}/error.json")
        for name, record in records.items():
            assert record["status"] == "failed", (name, record)
            assert record["error"]["code"] == "invalid_job", (name, record)
        assert "args" in records["b"]["error"]["message"]
        assert "args" in records["c"]["error"]["message"]
        assert "kwargs" in records["d"]["error"]["message"]
        assert "not the [args, kwargs, embed] triple" in records["a"]["error"]["message"]
        assert stack.model_calls() == 1  # only the normal job reached the model
        log = stack.worker.log()
        assert "malformed task message" in log


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'"a string"',
        b"[1, 2]",
        b'{"body": "no properties"}',
        b'{"properties": "not a mapping"}',
        b'{"properties": {"delivery_tag": "t-1"}}',  # no delivery_info
        b'{"properties": {"delivery_info": {"routing_key": "vision"}}}',  # no delivery tag
        b"[" * 5000 + b"]" * 5000,  # deeper than either JSON reader goes
    ],
    ids=["not-json", "string", "list", "no-properties", "bad-properties", "no-info", "no-tag",
         "deep"],
)  # fmt: skip
def test_a_queue_entry_that_is_no_message_at_all_is_dropped_loudly_and_never_stops_a_worker(
    fleet: FleetFactory, raw: bytes
) -> None:
    # pushed straight onto the queue's list, below kombu: no envelope to acknowledge,
    # reject or restore
    with fleet(workers=1, concurrency=2) as stack:
        broker = stack.redis.client(db=0)
        broker.lpush("vision", raw)
        after = stack.submit({"task": "caption", "images": [put_scene(stack)]})
        assert stack.record(after)["status"] == "succeeded"
        wait_until(lambda: broker_is_drained(stack), timeout_s=30, what="every message taken")
        assert stack.worker.proc.poll() is None, stack.worker.log()[-3000:]
        wait_until(
            lambda: (
                "an unreadable message was taken off queue vision and dropped" in stack.worker.log()
            ),
            timeout_s=10,
            what="the worker's log line on the dropped entry",
        )


# --- 2. a job id is an idempotency key, not a capability --------------------------------------


def test_a_reused_job_id_never_hands_out_another_jobs_answer(fleet: FleetFactory) -> None:
    with fleet(workers=1, concurrency=2) as stack:
        mine = put_scene(stack, seed=1)
        theirs = put_scene(stack, seed=2)
        job_id = f"shared-{uuid.uuid4().hex[:8]}"
        first = {"job_id": job_id, "task": "caption", "images": [mine]}
        stack.submit(dict(first))
        original = stack.record(job_id)
        assert original["status"] == "succeeded"
        calls = stack.model_calls()

        # the same job again (a redelivery, a producer retry): reused, no model call
        stack.submit(dict(first))
        # another producer reuses the id with other images and its own output folder
        stolen = {**first, "images": [theirs], "output": "s3://results/thief"}
        stack.submit(dict(stolen))
        refused = wait_for_json(stack, f"thief/{job_id}/error.json")
        assert refused["error"]["code"] == "invalid_job"
        assert "job_id already used by a different job" in refused["error"]["message"]
        assert read_json(stack.s3, "results", f"thief/{job_id}/result.json") is None
        # and one that writes to the same folder with another prompt: refused, and the
        # first job's folder stays exactly as it was
        stack.submit({**first, "prompt": "describe it in French"})
        wait_until(
            lambda: "job_id already used by a different job" in stack.worker.log(),
            timeout_s=30,
            what="the refusal of the reused id",
        )
        wait_until(lambda: broker_is_drained(stack), timeout_s=30, what="every message acked")
        assert stack.model_calls() == calls
        assert not any(k.endswith("error.json") for k in list_job_keys(stack.s3, job_id))
        assert read_json(stack.s3, "results", f"vision/{job_id}/result.json") == original
        assert dead_letter(stack, job_id) == {}


def wait_for_json(stack: Stack, key: str, timeout_s: float = 30) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def present() -> bool:
        record = read_json(stack.s3, "results", key)
        if record is not None:
            found.update(record)
        return record is not None

    wait_until(present, timeout_s=timeout_s, what=key, interval_s=0.2)
    return found


# --- 3. one URI parser: the check and the write see the same path ------------------------------


def test_an_encoded_output_path_cannot_write_outside_the_results_folder(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    results = tmp_path / "out" / "results"
    results.mkdir(parents=True)
    env = {"GVW_RESULTS_URI": f"file://{results}"}
    with fleet(workers=1, concurrency=2, extra_env=env) as stack:
        image = put_scene(stack)
        attacks = {
            # percent-decoded for the check, written verbatim: a sibling of the folder
            "encoded": f"file://{results}-evil%2F..%2Fresults",
            "dot-dot": f"file://{results}/../escaped",
            "dot": f"file://{results}/./x",
            "backslash": f"file://{results}/a\\..\\..\\escaped",
        }
        job_ids = {
            name: stack.submit({"task": "caption", "images": [image], "output": output})
            for name, output in attacks.items()
        }
        for name, job_id in job_ids.items():
            record_path = results / job_id / "error.json"
            wait_until(record_path.exists, timeout_s=30, what=f"{name} error record")
            record = json.loads(record_path.read_text())
            assert record["error"]["code"] == "invalid_job", (name, record)
        assert stack.model_calls() == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*"))
    outside = [p for p in written if not p.startswith("out/results")]
    assert outside == [], outside


# --- 4. bounded memory per job -----------------------------------------------------------------


def test_a_compare_job_of_twenty_24_megapixel_images_stays_under_1_gb(
    fleet: FleetFactory,
) -> None:
    scene = make_scene(6000, 4000, shapes=["red circle", "blue rectangle"], seed=4)
    with fleet(workers=1, concurrency=1) as stack:
        big = stack.put(f"big/{uuid.uuid4().hex}.jpg", scene.jpeg_bytes(quality=90))
        job_id = stack.submit({"task": "compare", "images": [big] * 20})
        record = stack.record(job_id, timeout_s=180)
        assert record["status"] == "succeeded", record
        assert len(record["images"]) == 20
        peak_mib = vm_hwm_kib(stack.worker.proc.pid) / 1024
    assert peak_mib < 1024, f"worker peak resident memory {peak_mib:.0f} MiB"


def test_a_job_above_the_pixel_budget_is_too_large_before_decoding(fleet: FleetFactory) -> None:
    # 30 MP per image, a 100 MP budget: the fourth image would pass it
    env = {"GVW_MAX_JOB_PIXELS": "100000000"}
    scene = make_scene(6000, 5000, shapes=["red circle"], seed=5)
    with fleet(workers=1, concurrency=1, extra_env=env) as stack:
        big = stack.put(f"big/{uuid.uuid4().hex}.jpg", scene.jpeg_bytes(quality=80))
        job_id = stack.submit({"task": "compare", "images": [big] * 3600})
        record = stack.record(job_id, timeout_s=120)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "too_large"
    assert "GVW_MAX_JOB_PIXELS" in record["error"]["message"]
    assert stack.model_calls() == 0


def test_3600_small_images_still_work(fleet: FleetFactory) -> None:
    with fleet(workers=1, concurrency=1) as stack:
        uris = [put_scene(stack, width=64, height=48, seed=i, shapes=1) for i in range(12)]
        images = [uris[i % len(uris)] for i in range(3600)]
        job_id = stack.submit({"task": "compare", "images": images, "prompt": "which differ?"})
        record = stack.record(job_id, timeout_s=240)
    assert record["status"] == "succeeded", record
    assert len(record["images"]) == 3600


# --- 5. bounded records ------------------------------------------------------------------------


def test_a_huge_invalid_job_leaves_a_bounded_dead_letter_and_error_record(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=1, concurrency=1) as stack:
        image = put_scene(stack)
        job_id = stack.submit({"task": "caption", "images": [image], "padding": "x" * 20_000_000})
        record = stack.record(job_id, timeout_s=60)
        assert record["error"]["code"] == "invalid_job"
        assert "padding" in record["error"]["message"]
        wait_until(lambda: bool(dead_letter(stack, job_id)), timeout_s=10, what="dead letter")
        size = stack.redis.client(db=1).memory_usage(f"gvw:dead_letter:{job_id}")
        error_bytes = stored_bytes(stack, f"vision/{job_id}/error.json")
        letter = dead_letter(stack, job_id)
    assert size is not None and size < 32 * 1024, size
    assert error_bytes < 32 * 1024, error_bytes
    summary = json.loads(letter["job"])  # a bounded summary, and says it is one
    assert summary["truncated"] is True
    assert summary["job_id"] == job_id
    assert "padding" in summary["unknown_fields"]


def test_huge_model_answers_are_cut_in_records_with_a_warning(fleet: FleetFactory) -> None:
    stub = GeminiStub("A cat. " * 7_500_000)  # about 52 MB of caption
    stub.start()
    try:
        env = {"GEMINI_BASE_URL": stub.url}
        with fleet(workers=1, concurrency=1, extra_env=env) as stack:
            image = put_scene(stack)
            caption = stack.submit({"task": "caption", "images": [image]})
            record = stack.record(caption, timeout_s=120)
            size = stored_bytes(stack, f"vision/{caption}/result.json")
            # unreadable JSON of several MB: the raw text kept in error.json is capped too
            stub.text = '[{"box_2d": [1, 2, ' + "9" * 5_000_000
            detect = stack.submit({"task": "detect", "images": [image]})
            failed = stack.record(detect, timeout_s=120)
            error_size = stored_bytes(stack, f"vision/{detect}/error.json")
    finally:
        stub.stop()
    assert record["status"] == "succeeded"
    assert size < 1_100_000, size
    assert len(record["output"]["text"]) <= 1_000_000
    assert any("cut" in w and "1,000,000" in w for w in record["warnings"]), record["warnings"]
    assert failed["error"]["code"] == "model_output_invalid"
    assert error_size < 1_100_000, error_size
    assert len(failed["error"]["raw_text"]) <= 1_000_000
    assert failed["error"]["raw_text_cut"] is True


# --- 6. producers cannot stop the fleet --------------------------------------------------------


def test_producers_cannot_shut_down_or_reconfigure_workers(fleet: FleetFactory) -> None:
    with fleet(workers=2, concurrency=1) as stack:
        control = stack.producer.control
        assert len(control.ping(timeout=3)) == 2  # the liveness probe still works
        control.shutdown()  # a broadcast any producer can send
        replies = control.rate_limit("vision.analyze", "1/h", reply=True, timeout=3)
        assert len(replies) == 2
        for reply in replies:
            [answer] = reply.values()
            assert "error" in answer, answer
        revoked = control.revoke("some-job", reply=True, timeout=3)
        assert all("error" in next(iter(r.values())) for r in revoked), revoked
        # still serving, at full speed, after all of that
        assert len(control.ping(timeout=3)) == 2
        assert all(worker.proc.poll() is None for worker in stack.workers)
        jobs = [stack.submit({"task": "caption", "images": [put_scene(stack)]}) for _ in range(3)]
        assert all(r["status"] == "succeeded" for r in assert_invariant(stack, jobs))
        assert "remote control command refused: shutdown" in stack.workers[0].log()


# --- 7. numbers from the model cannot crash a job ----------------------------------------------


def test_absurd_numbers_drop_their_item_and_the_model_is_asked_once(
    fleet: FleetFactory,
) -> None:
    items = [
        '{"box_2d": [1' + "0" * 400 + ', 10, 500, 500], "label": "absurd"}',
        '{"box_2d": [100, 100, 500, 500], "label": "cup"}',
    ]
    stub = GeminiStub("[" + ", ".join(items) + "]")
    stub.start()
    try:
        with fleet(workers=1, concurrency=1, extra_env={"GEMINI_BASE_URL": stub.url}) as stack:
            job_id = stack.submit({"task": "detect", "images": [put_scene(stack)]})
            record = stack.record(job_id)
    finally:
        stub.stop()
    assert record["status"] == "succeeded", record
    assert [o["label"] for o in record["output"]["objects"]] == ["cup"]
    assert any("absurd number" in w for w in record["warnings"]), record["warnings"]
    assert stub.calls == 1


# --- 8. a job never vanishes when storage is down ----------------------------------------------


def test_a_job_survives_a_storage_outage_longer_than_its_retry_budget(
    fleet: FleetFactory,
) -> None:
    # S3 answering 503 to everything is S3 being down, not the jobs' fault: a job that
    # cannot read its image waits for it, and one that failed for good (no labels) keeps
    # its record in the dead-letter index until storage takes error.json
    proxy = S3Proxy()
    proxy.start()
    try:
        env = {
            "AWS_ENDPOINT_URL_S3": proxy.url,
            "GVW_MAX_RETRIES": "1",
            "GVW_RETRY_BASE_S": "0.5",
            "GVW_RETRY_MAX_S": "2",
            "GVW_MAX_DELIVERIES": "5",
        }
        with fleet(workers=1, concurrency=2, extra_env=env) as stack:
            proxy.upstream = stack.moto.endpoint
            image = put_scene(stack)
            proxy.rule = lambda method, path: "reject"  # S3 answers 503 to everything
            waiting = stack.submit({"task": "caption", "images": [image]})
            failed = stack.submit({"task": "classify", "images": [image]})  # no labels
            # the failure is indexed first, in Redis, while S3 is still down
            wait_until(lambda: bool(dead_letter(stack, failed)), timeout_s=60, what="index")
            assert dead_letter(stack, failed)["recorded"] == "0"
            # ... and both wait for storage, far past their one retry
            wait_until(
                lambda: "storage is down: jobs wait for it" in stack.worker.log(),
                timeout_s=30,
                what="the outage noted",
            )
            time.sleep(5)  # the outage goes on: a duration, not a condition
            proxy.rule = lambda method, path: "forward"  # S3 is back
            records = assert_invariant(stack, [waiting, failed], timeout_s=60)
            wait_until(
                lambda: dead_letter(stack, failed).get("recorded") == "1",
                timeout_s=10,
                what="the index to note the record",
            )
    finally:
        proxy.stop()
    assert records[0]["status"] == "succeeded", records[0]
    assert records[1]["status"] == "failed" and records[1]["error"]["code"] == "invalid_job"
    assert stack.model_calls() == 1  # the job that waited, once


# --- 9. metrics tell the truth -----------------------------------------------------------------


def test_every_job_end_is_counted_once_with_bounded_labels(fleet: FleetFactory) -> None:
    port = str(free_port())
    with fleet(workers=1, concurrency=2, extra_env={"GVW_METRICS_PORT": port}) as stack:
        image = put_scene(stack)
        stack.put("h/not-an-image.png", b"%PDF-1.4 not an image")
        done = stack.submit({"task": "caption", "images": [image]})
        jobs = [
            done,
            stack.submit({"task": "caption", "images": ["s3://inbox/h/not-an-image.png"]}),
            stack.submit({"task": "t" + uuid.uuid4().hex, "images": [image]}),
        ]
        models = [f"gemini-made-up-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        jobs += [stack.submit({"task": "caption", "images": [image], "model": m}) for m in models]
        assert_invariant(stack, jobs)
        stack.submit({"job_id": done, "task": "caption", "images": [image]})  # already done
        wait_until(
            lambda: sum(jobs_total(metrics_text(port)).values()) >= len(jobs) + 1,
            timeout_s=20,
            what="every job counted",
        )
        text = metrics_text(port)
    counted = jobs_total(text)
    assert sum(counted.values()) == len(jobs) + 1, counted
    assert counted[("caption", "succeeded")] == 4  # the emulator answers any model name
    assert counted[("caption", "already_done")] == 1
    assert counted[("caption", "failed")] == 1  # the PDF
    assert counted[("invalid", "failed")] == 1  # a made-up task name is not a label value
    assert label_values(text, "gvw_model_calls_total", "model") == {"gemini-2.5-flash", "other"}


# --- 10. real answers in odd shapes are read ---------------------------------------------------


def test_real_answers_in_odd_shapes_are_read(fleet: FleetFactory) -> None:
    lone = GEMINI_REAL / "secondary/segment_usercode_fire-extinguisher-mask_repo-unknown.json"
    stub = GeminiStub(lone.read_text())
    stub.start()
    try:
        with fleet(workers=1, concurrency=1, extra_env={"GEMINI_BASE_URL": stub.url}) as stack:
            image = put_scene(stack, width=640, height=480)
            segment = stack.record(stack.submit({"task": "segment", "images": [image]}))
            stub.text = '```json\n[{"box_2d": [100, 200, 600, 700]}]\n```'
            detect = stack.record(stack.submit({"task": "detect", "images": [image]}))
            stub.text = "I see a cat, but I will not draw boxes."
            prose = stack.record(stack.submit({"task": "detect", "images": [image]}))
    finally:
        stub.stop()
    assert segment["status"] == "succeeded", segment
    [obj] = segment["output"]["objects"]
    assert obj["label"] == "clock of fire extinguisher" and obj["mask_area"] > 0
    assert detect["status"] == "succeeded", detect
    assert [o["label"] for o in detect["output"]["objects"]] == ["object"]
    assert any("no label" in w for w in detect["warnings"])
    # unreadable answers still fail loudly, never "nothing found"
    assert prose["status"] == "failed" and prose["error"]["code"] == "model_output_invalid"
