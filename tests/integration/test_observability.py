"""What operators see: Prometheus metrics per worker and JSON log lines with the job id."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from tests.harness import Stack, wait_until
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.integration


def metrics(stack: Stack) -> str:
    url = f"http://127.0.0.1:{stack.env['GVW_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The value of `name` with exactly these labels in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, value = line.rsplit(" ", 1)
        found_name, _, label_text = metric.partition("{")
        found = dict(
            pair.split("=", 1) for pair in label_text.rstrip("}").split(",") if "=" in pair
        )
        if found_name == name and {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return 0.0


def test_metrics_count_jobs_model_calls_tokens_and_stages(stack: Stack) -> None:
    before = metrics(stack)
    uri = stack.put(f"obs/{uuid.uuid4().hex}.png", make_scene(320, 240, shapes=2).png_bytes())
    record = stack.record(stack.submit({"task": "caption", "images": [uri]}))
    assert record["status"] == "succeeded"
    jobs = ("gvw_jobs_total", {"task": "caption", "outcome": "succeeded"})
    jobs_before = sample(before, jobs[0], **jobs[1])
    # the job is counted as the task returns, just after its result became visible
    wait_until(
        lambda: sample(metrics(stack), jobs[0], **jobs[1]) >= jobs_before + 1,
        timeout_s=10,
        what="the job to be counted",
    )
    after = metrics(stack)
    assert sample(after, jobs[0], **jobs[1]) == jobs_before + 1
    calls = ("gvw_model_calls_total", {"model": "gemini-2.5-flash", "outcome": "ok"})
    assert sample(after, calls[0], **calls[1]) >= sample(before, calls[0], **calls[1]) + 1
    assert sample(after, "gvw_tokens_total", kind="prompt") > sample(
        before, "gvw_tokens_total", kind="prompt"
    )
    assert sample(after, "gvw_stage_seconds_count", stage="ask") > 0


def test_logs_are_json_lines_with_the_job_id_and_no_api_key(stack: Stack) -> None:
    uri = stack.put(f"obs/{uuid.uuid4().hex}.png", make_scene(320, 240, shapes=1).png_bytes())
    job_id = stack.submit({"task": "caption", "images": [uri]})
    stack.record(job_id)

    def json_lines() -> list[dict[str, object]]:
        text = stack.worker.log()
        text = text[: text.rfind("\n") + 1]  # whole lines only: the last may be half written
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    # "job committed" is written just after the result becomes visible: wait for it
    wait_until(
        lambda: any(
            line.get("job_id") == job_id and line["message"] == "job committed"
            for line in json_lines()
        ),
        timeout_s=10,
        what="the worker to log the commit",
    )
    lines = json_lines()
    # the worker (threads pool) did its one-off set-up before taking jobs
    assert any(line["message"] == "worker process warmed up" for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert stack.env["GEMINI_API_KEY"] not in stack.worker.log()
