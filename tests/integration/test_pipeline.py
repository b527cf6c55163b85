"""A job goes in, one committed result comes out: real redis-server, moto's S3 server over
HTTP, the Gemini emulator over HTTP, and a real `celery worker` subprocess. Jobs are sent
with `send_task` exactly as a producer would."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from tasks import registry
from tests.harness import Stack, list_job_keys, read_json
from worker.emulator.scenes import Scene, make_scene

pytestmark = pytest.mark.integration


def iou(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def assert_boxes_match(objects: list[dict[str, Any]], scene: Scene) -> None:
    assert len(objects) == len(scene.shapes), objects
    for shape in scene.shapes:
        matches = [o for o in objects if o["label"] == shape.label]
        assert len(matches) == 1, (shape.label, objects)
        score = iou(matches[0]["box"], shape.box_xyxy_px)
        assert score >= 0.9, (shape.label, matches[0]["box"], shape.box_xyxy_px, score)


def exif_rotated_jpeg(scene: Scene, orientation: int) -> bytes:
    """Stored pixels rotated, with the EXIF tag that makes a viewer show `scene` upright."""
    stored = scene.image.transpose(
        {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    data = buffer.getvalue()
    # the test's own premise: a viewer applying the tag sees the upright scene
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == scene.image.size
    return data


# --- detection lines up with the truth ------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "fmt", "orientation"),
    [
        pytest.param((640, 480), "png", None, id="non-square-png"),
        pytest.param((480, 800), "png", None, id="portrait-png"),
        pytest.param((800, 600), "jpeg", 6, id="exif-orientation-6-jpeg"),
        pytest.param((800, 600), "jpeg", 8, id="exif-orientation-8-jpeg"),
    ],
)
def test_detected_boxes_match_the_true_boxes(
    stack: Stack, size: tuple[int, int], fmt: str, orientation: int | None
) -> None:
    scene = make_scene(*size, shapes=["red circle", "blue rectangle", "green triangle"], seed=3)
    data = exif_rotated_jpeg(scene, orientation) if orientation else scene.png_bytes()
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.{fmt}", data)
    job_id = stack.submit({"task": "detect", "images": [uri], "prompt": "the shapes"})
    record = stack.record(job_id)
    assert record["status"] == "succeeded", record
    image = record["images"][0]
    assert (image["width"], image["height"]) == size  # the upright size
    assert image["transport"] == "inline"
    assert_boxes_match(record["output"]["objects"], scene)
    overlay_uri = record["artifacts"]["overlay"]
    assert overlay_uri.startswith(f"s3://results/vision/{job_id}/attempts/")
    overlay = stack.s3.get_object(Bucket="results", Key=overlay_uri.split("/", 3)[3])["Body"].read()
    assert Image.open(io.BytesIO(overlay)).size == size


def test_every_text_task_answers_about_the_scene(stack: Stack) -> None:
    scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=5)
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", scene.png_bytes())
    schema = {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "labels": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["count", "labels"],
    }
    jobs = {
        "caption": {"task": "caption", "images": [uri]},
        "vqa": {"task": "vqa", "images": [uri], "prompt": "How many shapes are there?"},
        "classify": {"task": "classify", "images": [uri], "labels": ["circle", "triangle", "dog"]},
        "custom": {"task": "custom", "images": [uri], "prompt": "Describe the shapes."},
        "custom-schema": {
            "task": "custom",
            "images": [uri],
            "prompt": "Count the shapes.",
            "response_schema": schema,
        },
    }
    ids = {name: stack.submit(job) for name, job in jobs.items()}
    records = {name: stack.record(job_id) for name, job_id in ids.items()}
    for name, record in records.items():
        assert record["status"] == "succeeded", (name, record)
        assert record["usage"]["total_tokens"] > 0
        assert record["usage"]["estimated_image_tokens"] == 258 * 4  # 640x480 -> 2x2 tiles
    assert "red circle" in records["caption"]["output"]["text"]
    assert "2" in records["vqa"]["output"]["text"]
    assert records["classify"]["output"]["labels"] == ["circle"]
    assert "blue rectangle" in records["custom"]["output"]["text"]
    data = records["custom-schema"]["output"]["data"]
    assert data["count"] == 2


# --- bad input: an error record with its code, and no model call ----------------------------


def _truncated_jpeg() -> bytes:
    data = make_scene(320, 240, shapes=1, seed=1).jpeg_bytes()
    return data[: len(data) // 2]


def _bomb_png() -> bytes:
    # 20000 x 20000 of one colour: a few hundred kB on disk, 400 MP decoded
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000), 0).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "uri", "code"),
    [
        pytest.param(
            b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", None, "invalid_image", id="pdf-named-png"
        ),
        pytest.param(b"", None, "invalid_image", id="zero-bytes"),
        pytest.param(b"hello, I am text", None, "invalid_image", id="not-an-image"),
        pytest.param(_truncated_jpeg(), None, "invalid_image", id="truncated-jpeg"),
        pytest.param(_bomb_png(), None, "too_large", id="decompression-bomb"),
        pytest.param(None, "s3://other/a.png", "input_not_allowed", id="disallowed-bucket"),
        pytest.param(None, "file:///etc/passwd", "input_not_allowed", id="file-etc-passwd"),
        pytest.param(None, "s3://inbox/does/not/exist.png", "input_not_found", id="missing-key"),
    ],
)
def test_bad_inputs_end_in_an_error_record_without_a_model_call(
    stack: Stack, data: bytes | None, uri: str | None, code: str
) -> None:
    if data is not None:
        uri = stack.put(f"bad/{uuid.uuid4().hex}.png", data)
    calls_before = stack.model_calls()
    job_id = stack.submit({"task": "caption", "images": [uri]})
    record = stack.record(job_id)
    assert record["status"] == "failed"
    assert record["error"]["code"] == code, record
    assert record["error"]["retryable"] is False
    assert record["attempts"] == 1
    assert stack.model_calls() == calls_before
    assert list_job_keys(stack.s3, job_id) == [f"vision/{job_id}/error.json"]


def test_invalid_job_is_recorded_under_its_job_id(stack: Stack) -> None:
    job_id = stack.submit({"task": "detect", "images": ["s3://inbox/a.png"], "colour": "red"})
    record = stack.record(job_id)
    assert record["error"]["code"] == "invalid_job"
    assert "colour" in record["error"]["message"]


# --- the model misbehaves --------------------------------------------------------------------


def test_429_with_retry_delay_then_success_gives_one_result(stack: Stack) -> None:
    scene = make_scene(400, 300, shapes=2, seed=8)
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", scene.png_bytes())
    stack.emulator.queue_fault("429", retry_delay_s=2)
    calls_before = stack.model_calls()
    job_id = stack.submit({"task": "caption", "images": [uri]})
    record = stack.record(job_id)
    assert record["status"] == "succeeded"
    assert record["attempt"] == 2
    assert stack.model_calls() - calls_before == 2
    log = stack.emulator.stats()["requests"][-2:]
    assert log[1]["time"] - log[0]["time"] >= 2.0  # the retryDelay was honoured


def test_safety_block_is_final_without_retry(stack: Stack) -> None:
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", make_scene(300, 200, shapes=1).png_bytes())
    stack.emulator.queue_fault("safety")
    calls_before = stack.model_calls()
    record = stack.record(stack.submit({"task": "caption", "images": [uri]}))
    assert record["error"]["code"] == "model_blocked"
    assert stack.model_calls() - calls_before == 1


def test_unreadable_output_is_asked_again_then_recorded_with_the_raw_text(stack: Stack) -> None:
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", make_scene(300, 200, shapes=1).png_bytes())
    stack.emulator.queue_fault("garbage", count=3)
    calls_before = stack.model_calls()
    record = stack.record(stack.submit({"task": "detect", "images": [uri]}))
    assert record["error"]["code"] == "model_output_invalid"
    assert record["error"]["raw_text"]
    assert record["attempts"] == 3  # GVW_OUTPUT_RETRIES=2 re-asks
    assert stack.model_calls() - calls_before == 3


def test_truncated_answer_is_retried_and_then_succeeds(stack: Stack) -> None:
    scene = make_scene(500, 400, shapes=["red circle", "blue rectangle"], seed=2)
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", scene.png_bytes())
    stack.emulator.queue_fault("max_tokens")
    record = stack.record(stack.submit({"task": "detect", "images": [uri]}))
    assert record["status"] == "succeeded"
    assert_boxes_match(record["output"]["objects"], scene)


# --- exactly one result -----------------------------------------------------------------------


def test_same_job_three_times_gives_one_result_and_one_model_call(stack: Stack) -> None:
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", make_scene(640, 480, shapes=3).png_bytes())
    job = {"job_id": f"dup-{uuid.uuid4().hex[:8]}", "task": "detect", "images": [uri]}
    calls_before = stack.model_calls()
    for _ in range(3):
        stack.submit(dict(job))
    record = stack.record(job["job_id"])
    assert record["status"] == "succeeded"
    _wait_quiet(stack)  # let the two duplicates finish too
    assert stack.model_calls() - calls_before == 1
    keys = list_job_keys(stack.s3, job["job_id"])
    assert keys.count(f"vision/{job['job_id']}/result.json") == 1
    overlays = [k for k in keys if k.endswith("overlay.png")]
    assert len(overlays) == 1
    assert record["artifacts"]["overlay"].endswith(overlays[0])


def test_a_committed_job_is_not_run_again(stack: Stack) -> None:
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", make_scene(320, 240, shapes=2).png_bytes())
    job = {"job_id": f"again-{uuid.uuid4().hex[:8]}", "task": "caption", "images": [uri]}
    stack.record(stack.submit(dict(job)))
    first = read_json(stack.s3, "results", f"vision/{job['job_id']}/result.json")
    calls_before = stack.model_calls()
    stack.submit(dict(job))
    _wait_quiet(stack)
    assert stack.model_calls() == calls_before
    assert read_json(stack.s3, "results", f"vision/{job['job_id']}/result.json") == first


def _wait_quiet(stack: Stack, *, timeout_s: float = 30) -> None:
    """Wait until the broker queue is empty and no task is active on the worker."""
    from tests.harness import wait_until

    r = stack.redis.client(0)
    inspect = stack.producer.control.inspect(timeout=1.0)

    def idle() -> bool:
        if r.llen("vision"):
            return False
        if r.zcard("unacked_index"):
            return False
        active = inspect.active() or {}
        return not any(active.values())

    wait_until(idle, timeout_s=timeout_s, what="an idle worker", interval_s=0.3)


def test_result_json_is_valid_json_with_the_contract_fields(stack: Stack, tmp_path: Path) -> None:
    uri = stack.put(f"scenes/{uuid.uuid4().hex}.png", make_scene(320, 240, shapes=1).png_bytes())
    job_id = stack.submit({"task": "detect", "images": [uri]})
    stack.record(job_id)
    body = stack.s3.get_object(Bucket="results", Key=f"vision/{job_id}/result.json")["Body"].read()
    record = json.loads(body)
    for key in (
        "schema_version",
        "job_id",
        "task",
        "status",
        "model",
        "images",
        "output",
        "usage",
        "warnings",
    ):
        assert key in record
    for key in ("prompt_tokens", "output_tokens", "total_tokens", "estimated_image_tokens"):
        assert isinstance(record["usage"][key], int)
    assert set(record["images"][0]) >= {
        "uri",
        "sha256",
        "mime_type",
        "width",
        "height",
        "transport",
    }


def test_an_internal_error_after_the_answer_never_asks_the_model_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug after Gemini answered (here: the parser itself raising) fails the attempt;
    the retry publishes the answer already paid for instead of calling the model again."""
    from worker.contract.jobs import parse_job
    from worker.emulator.server import EmulatorServer
    from worker.pipeline.flow import run
    from worker.runtime import build_ports
    from worker.settings import Settings

    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "scene.png"
    image.write_bytes(make_scene(320, 240, shapes=["red circle"], seed=3).png_bytes())
    with EmulatorServer(api_key="k") as emulator:
        settings = Settings(
            gemini_base_url=emulator.base_url,
            gemini_api_key="k",
            gvw_results_uri=f"file://{tmp_path}/out",
            gvw_allowed_inputs=f"file://{tmp_path}/in/",
        )
        ports = build_ports(settings, local=True)
        job = parse_job({"job_id": "paid-once", "task": "detect", "images": [f"file://{image}"]})
        task = registry.get_task("detect")
        real_parse = task.parse

        def broken_parse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug after the answer")

        monkeypatch.setattr(task, "parse", broken_parse)
        with pytest.raises(RuntimeError):
            run(job, ports)
        monkeypatch.setattr(task, "parse", real_parse)
        outcome = run(job, ports, attempt=2)
        calls = emulator.stats()["generate_calls"]
    assert outcome.status == "succeeded"
    assert calls == 1
    record = json.loads((tmp_path / "out" / "paid-once" / "result.json").read_text())
    assert record["output"]["objects"]
