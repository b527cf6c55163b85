"""A job's completion event when the fleet's Redis is down at the job's end, in process:
the real `vision.analyze` task applied eagerly over local adapters and the in-process
emulator, with an outbox whose Redis goes away. The job waits for Redis like any outage
(its record committed); the next delivery finds the record and emits the same event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Retry

from tasks.errors import FleetUnavailable
from tests.integration.test_pipeline_local import calls, local_ports, put, record_of, scene_png
from worker import runtime
from worker.emulator.server import EmulatorServer
from worker.events.outbox import LocalOutbox
from worker.events.records import Event
from worker.queue import app as app_module
from worker.queue.app import FINAL_ERROR_HEADER, analyze

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)

ALLOW = '{"sqs:gvw-": {}}'


class FlakyOutbox(LocalOutbox):
    """An outbox whose Redis does not answer for the next ``failing`` adds."""

    def __init__(self, failing: int) -> None:
        super().__init__()
        self.failing = failing

    def add(self, event: Event, destination: str, *, now: float) -> bool | None:
        if self.failing > 0:
            self.failing -= 1
            raise FleetUnavailable("the fleet's Redis (GVW_REDIS_URL) does not answer")
        return super().add(event, destination, now=now)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key="k") as server:
        yield server


@pytest.fixture
def runs_asked(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Delivery runs the task asks for (no broker here: the message is not sent)."""
    asked: list[float] = []
    monkeypatch.setattr(app_module, "_send_events_tick", asked.append)
    return asked


def install(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, root: Path) -> Any:
    (root / "in").mkdir(exist_ok=True)
    ports = local_ports(emulator, root, gvw_notify_destinations=ALLOW)
    outbox = FlakyOutbox(failing=1)
    ports.events.outbox = outbox  # type: ignore[misc]
    monkeypatch.setattr(runtime, "_ports", ports)
    monkeypatch.setattr(runtime, "_installed", True)
    return outbox


def retried_headers(monkeypatch: pytest.MonkeyPatch, job: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    original = analyze.retry

    def capture(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs.get("headers") or {})
        return original(*args, **kwargs)

    monkeypatch.setattr(analyze, "retry", capture)
    with pytest.raises(Retry):  # the job's end waits for Redis
        analyze.apply(args=[job], task_id=job["job_id"], throw=True)
    monkeypatch.setattr(analyze, "retry", original)
    return seen


def test_redis_down_at_a_success_s_end_waits_and_emits_the_same_event_later(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runs_asked: list[float],
) -> None:
    outbox = install(monkeypatch, emulator, tmp_path)
    job = {
        "job_id": "told-later",
        "task": "caption",
        "images": [put(tmp_path, "a.png", scene_png())],
        "notify": ["sqs:gvw-done"],
    }
    headers = retried_headers(monkeypatch, job)
    assert record_of(tmp_path, "told-later").status == "succeeded"  # committed already
    assert outbox.pending_count() == 0 and runs_asked == []
    paid = calls(emulator)

    # the message comes back once Redis answers: the record is found, the event emitted
    result = analyze.apply(args=[job], task_id="told-later", headers=headers, throw=True).get()
    assert result["already_done"] is True
    assert calls(emulator) == paid  # not run again
    (kept,) = outbox.listing(limit=10)
    event = json.loads(kept.body)
    assert (kept.destination, event["type"]) == ("sqs:gvw-done", "job.completed")
    assert event["data"]["status"] == "succeeded" and event["data"]["cost_usd"] is not None
    assert event["data"]["record_uri"].endswith("/told-later/result.json")
    assert len(runs_asked) == 1

    # a third delivery (a duplicate message) emits the same event id: kept once
    analyze.apply(args=[job], task_id="told-later", throw=True)
    assert [d.event_id for d in outbox.listing(limit=10)] == [kept.event_id]
    assert len(runs_asked) == 1


def test_redis_down_at_a_failure_s_end_waits_carrying_it(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runs_asked: list[float],
) -> None:
    outbox = install(monkeypatch, emulator, tmp_path)
    job = {
        "job_id": "failed-later",
        "task": "caption",
        "images": [put(tmp_path, "a.png", b"%PDF-1.4 not an image")],
        "notify": ["sqs:gvw-done"],
    }
    headers = retried_headers(monkeypatch, job)
    assert headers[FINAL_ERROR_HEADER]["code"] == "invalid_image"
    analyze.apply(args=[job], task_id="failed-later", headers=headers, throw=True)
    (kept,) = outbox.listing(limit=10)
    data = json.loads(kept.body)["data"]
    assert (data["status"], data["error_code"]) == ("failed", "invalid_image")
    assert data["cost_usd"] is None


def test_a_job_naming_a_destination_outside_the_allow_list_is_refused_before_any_read(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runs_asked: list[float],
) -> None:
    outbox = install(monkeypatch, emulator, tmp_path)
    outbox.failing = 0
    job = {
        "job_id": "bad-notify",
        "task": "caption",
        "images": [put(tmp_path, "a.png", scene_png())],
        "notify": ["sqs:gvw-ok", "https://evil.example.com/x"],
    }
    analyze.apply(args=[job], task_id="bad-notify", throw=True)
    record = record_of(tmp_path, "bad-notify")
    assert record.status == "failed" and record.error.code == "invalid_job"  # type: ignore[union-attr]
    assert "notify.1" in record.error.message  # type: ignore[union-attr]
    assert calls(emulator) == 0
    # the destination the allow-list permits is told of the failure
    assert [d.destination for d in outbox.listing(limit=10)] == ["sqs:gvw-ok"]
