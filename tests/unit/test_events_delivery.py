"""Events from a job's end to a destination: the event and its id, its signature, the
backoff, a delivery run (worker/events/deliverer.py) and the webhook sender against a
real HTTP server on 127.0.0.1, and the job's end seam (worker/pipeline/ended.py)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tasks.errors import FleetUnavailable
from worker.contract.jobs import parse_job
from worker.contract.records import Outcome
from worker.events.deliverer import Deliverer, backoff_s
from worker.events.destinations import DeliveryRefused, Destination
from worker.events.emitter import EventHub
from worker.events.outbox import Delivery, LocalOutbox
from worker.events.records import event_id, job_completed, make_event
from worker.events.senders import WebhookSender
from worker.events.signing import signed_headers
from worker.pipeline.ended import job_ended
from worker.settings import NotifyRoute, Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def outcome(**changes: Any) -> Outcome:
    fields: dict[str, Any] = {
        "job_id": "j-1",
        "status": "succeeded",
        "record_uri": "s3://results/vision/j-1/result.json",
        "cost_usd": 0.0012,
        "fingerprint": "fp-1",
    }
    return Outcome(**{**fields, **changes})


# --- the event ------------------------------------------------------------------------------


def test_job_completed_has_standard_webhooks_shape() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    event = job_completed(outcome(), now=when)
    body = json.loads(event.body())
    assert body == {
        "id": event.id,
        "type": "job.completed",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "data": {
            "job_id": "j-1",
            "status": "succeeded",
            "record_uri": "s3://results/vision/j-1/result.json",
            "cost_usd": 0.0012,
            "error_code": None,
            "run": None,
        },
    }
    failed = job_completed(outcome(status="failed", record_uri="", error_code="invalid_image"))
    assert failed.data["error_code"] == "invalid_image"
    assert failed.data["record_uri"] is None


def test_an_event_id_is_stable_for_the_same_end_only() -> None:
    first = job_completed(outcome(), now=datetime(2026, 1, 1, tzinfo=UTC))
    again = job_completed(outcome(already_done=True), now=datetime(2026, 1, 2, tzinfo=UTC))
    assert first.id == again.id and first.id.startswith("evt_") and len(first.id) == 36
    assert job_completed(outcome(fingerprint="fp-other")).id != first.id  # another job
    assert job_completed(outcome(status="failed", error_code="internal")).id != first.id
    assert event_id("run.completed", "j-1") != event_id("job.completed", "j-1")


def test_a_job_that_has_not_ended_has_no_event() -> None:
    with pytest.raises(ValueError):
        job_completed(outcome(status="batched"))


def test_an_event_body_is_bounded() -> None:
    with pytest.raises(ValueError, match="bytes"):
        make_event("run.completed", "r", {"x": "a" * 70_000})


# --- signatures and backoff -----------------------------------------------------------------


def test_a_signature_verifies_with_the_standard_webhooks_library() -> None:
    body = job_completed(outcome()).body()
    headers = signed_headers(SecretStr(SECRET), "evt_1", body, datetime.now(UTC))
    assert Webhook(SECRET).verify(body, headers)["data"]["job_id"] == "j-1"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("j-1", "j-2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(body, headers)


def test_backoff_doubles_within_its_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts, full_s in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 20.0), (30, 20.0)):
        for _ in range(50):
            delay_s = backoff_s(attempts, base_s=2.0, max_s=20.0, rng=rng)
            assert full_s / 2 <= delay_s <= full_s


# --- a delivery run -------------------------------------------------------------------------


class Recorder:
    def __init__(self, fail_times: int = 0, error: Exception | None = None) -> None:
        self.sent: list[Delivery] = []
        self.fail_times = fail_times
        self.error = error or ConnectionError("connection refused")

    def send(self, delivery: Delivery, destination: Destination, route: NotifyRoute) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise self.error
        self.sent.append(delivery)


def settings(**changes: Any) -> Settings:
    fields: dict[str, Any] = {
        "gvw_notify_destinations": '{"sqs:gvw-": {}}',
        "gvw_notify_max_attempts": 3,
        "gvw_notify_backoff_base_s": 0.01,
        "gvw_notify_backoff_max_s": 0.02,
    }
    return Settings(**{**fields, **changes})


def deliver_all(deliverer: Deliverer, outbox: LocalOutbox, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while outbox.pending_count() and time.monotonic() < deadline:
        deliverer.run_once()
        time.sleep(0.01)


def test_a_run_delivers_what_is_due() -> None:
    outbox, sender = LocalOutbox(), Recorder()
    hub = EventHub(outbox, settings())
    event = job_completed(outcome())
    assert hub.emit(event, ["sqs:gvw-a", "sqs:gvw-b", "sqs:gvw-a"]) == 2
    report = Deliverer(outbox, settings(), {"sqs": sender}).run_once()
    assert report is not None and report.delivered == 2
    assert sorted(d.destination for d in sender.sent) == ["sqs:gvw-a", "sqs:gvw-b"]
    assert {d.body for d in sender.sent} == {event.body()}
    assert outbox.pending_count() == 0


def test_a_destination_that_is_down_is_tried_again_then_delivered() -> None:
    outbox, sender = LocalOutbox(), Recorder(fail_times=2)
    EventHub(outbox, settings()).emit(job_completed(outcome()), ["sqs:gvw-a"])
    deliver_all(Deliverer(outbox, settings(), {"sqs": sender}), outbox)
    (delivered,) = sender.sent
    assert delivered.attempts == 3


def test_a_delivery_that_used_its_attempts_is_kept_as_failed() -> None:
    outbox, sender = LocalOutbox(), Recorder(fail_times=99)
    EventHub(outbox, settings()).emit(job_completed(outcome()), ["sqs:gvw-a"])
    deliver_all(Deliverer(outbox, settings(), {"sqs": sender}), outbox)
    (failed,) = outbox.listing(limit=10, failed_only=True)
    assert failed.attempts == 3
    assert "3 attempts failed" in failed.error and "connection refused" in failed.error
    # redelivered once the destination is back
    sender.fail_times = 0
    outbox.redeliver([failed.delivery_id], now=time.time())
    deliver_all(Deliverer(outbox, settings(), {"sqs": sender}), outbox)
    assert len(sender.sent) == 1


def test_a_refused_delivery_fails_at_once() -> None:
    outbox = LocalOutbox()
    sender = Recorder(fail_times=1, error=DeliveryRefused("refused: loopback"))
    EventHub(outbox, settings()).emit(job_completed(outcome()), ["sqs:gvw-a"])
    Deliverer(outbox, settings(), {"sqs": sender}).run_once()
    (failed,) = outbox.listing(limit=10, failed_only=True)
    assert (failed.attempts, failed.error) == (1, "refused: loopback")


def test_a_destination_the_allow_list_dropped_since_is_refused() -> None:
    outbox, sender = LocalOutbox(), Recorder()
    EventHub(outbox, settings()).emit(job_completed(outcome()), ["sqs:gvw-a"])
    later = settings(gvw_notify_destinations='{"sqs:other-": {}}')
    Deliverer(outbox, later, {"sqs": sender}).run_once()
    assert sender.sent == []
    (failed,) = outbox.listing(limit=10, failed_only=True)
    assert "no longer allows" in failed.error


def test_emit_leaves_out_destinations_the_allow_list_does_not_permit() -> None:
    outbox = LocalOutbox()
    woken: list[bool] = []
    hub = EventHub(outbox, settings())
    hub.wake = lambda: woken.append(True)
    assert hub.emit(job_completed(outcome()), ["https://evil.example.com/", "sqs:gvw-a"]) == 1
    assert [d.destination for d in outbox.listing(limit=10)] == ["sqs:gvw-a"]
    assert woken == [True]
    assert hub.emit(job_completed(outcome()), ["sqs:gvw-a"]) == 0  # a duplicate wakes no one
    assert woken == [True]


# --- the webhook sender, on a real server -----------------------------------------------------


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 keeping what it was sent."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = status
        received = self.requests
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append(
                    ({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                )
                self.send_response(receiver.status)
                if location:
                    self.send_header("location", location)
                self.send_header("content-length", "4")
                self.end_headers()
                self.wfile.write(b"nope")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def webhook_delivery(url: str) -> Delivery:
    event = job_completed(outcome())
    now = time.time()
    return Delivery(
        delivery_id=f"{event.id}.x",
        event_id=event.id,
        type=event.type,
        destination=url,
        body=event.body(),
        attempts=1,
        state="pending",
        error="",
        created=now,
        updated=now,
        next_at=now,
    )


def test_a_webhook_is_signed_and_verifies(receiver: Receiver) -> None:
    from worker.events.destinations import parse_destination

    url = f"http://127.0.0.1:{receiver.port}/hooks/gvw?k=1"
    sender = WebhookSender(timeout_s=5)
    try:
        delivery = webhook_delivery(url)
        route = NotifyRoute(f"http://127.0.0.1:{receiver.port}/", SecretStr(SECRET))
        sender.send(delivery, parse_destination(url), route)
    finally:
        sender.close()
    ((headers, body),) = receiver.requests
    assert headers["webhook-id"] == delivery.event_id
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert Webhook(SECRET).verify(body, headers)["type"] == "job.completed"


def test_a_redirect_is_not_followed_and_fails_the_attempt() -> None:
    from worker.events.destinations import parse_destination
    from worker.events.senders import DeliveryFailed

    target = Receiver()
    redirecting = Receiver(status=307, location=f"http://127.0.0.1:{target.port}/")
    url = f"http://127.0.0.1:{redirecting.port}/"
    sender = WebhookSender(timeout_s=5)
    try:
        with pytest.raises(DeliveryFailed, match=r"HTTP 307 \(a redirect, not followed\)"):
            sender.send(
                webhook_delivery(url),
                parse_destination(url),
                NotifyRoute(url, SecretStr(SECRET)),
            )
        assert target.requests == []
    finally:
        sender.close()
        target.stop()
        redirecting.stop()


def test_a_loopback_name_not_listed_literally_is_never_requested(receiver: Receiver) -> None:
    from worker.events.destinations import parse_destination

    url = f"http://localhost:{receiver.port}/hook"
    sender = WebhookSender(timeout_s=5)
    try:
        with pytest.raises(DeliveryRefused, match="loopback"):
            sender.send(
                webhook_delivery(url),
                parse_destination(url),
                NotifyRoute(f"http://localhost:{receiver.port}/", SecretStr(SECRET)),
            )
    finally:
        sender.close()
    assert receiver.requests == []


# --- the job's end seam ---------------------------------------------------------------------


class FakeEvents:
    def __init__(self, error: Exception | None = None) -> None:
        self.emitted: list[tuple[str, list[str]]] = []
        self.error = error

    def emit(self, event: Any, destinations: list[str]) -> int:
        if self.error is not None:
            raise self.error
        self.emitted.append((event.id, list(destinations)))
        return 1


def ports_with(events: FakeEvents) -> Any:
    return SimpleNamespace(events=events)


JOB = {"job_id": "j-1", "task": "caption", "images": ["s3://in/a.jpg"], "notify": ["sqs:gvw-a"]}


def test_a_job_s_end_emits_its_event_to_its_destinations() -> None:
    events = FakeEvents()
    job_ended(ports_with(events), parse_job(JOB), outcome())
    assert events.emitted == [(job_completed(outcome()).id, ["sqs:gvw-a"])]


def test_an_invalid_job_s_end_is_told_where_its_notify_is_well_formed() -> None:
    events = FakeEvents()
    job_ended(ports_with(events), {**JOB, "task": "nope"}, outcome(status="failed"))
    job_ended(ports_with(events), {**JOB, "notify": "sqs:gvw-a"}, outcome(status="failed"))
    assert [d for _, d in events.emitted] == [["sqs:gvw-a"]]


def test_no_event_for_a_job_that_waits_or_names_no_destination() -> None:
    events = FakeEvents()
    job_ended(ports_with(events), parse_job(JOB), outcome(status="batched", record_uri=""))
    job_ended(ports_with(events), parse_job({**JOB, "notify": None}), outcome())
    assert events.emitted == []


def test_redis_away_at_a_job_s_end_goes_to_the_caller_other_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(FleetUnavailable):
        job_ended(ports_with(FakeEvents(FleetUnavailable("down"))), parse_job(JOB), outcome())
    job_ended(ports_with(FakeEvents(RuntimeError("bug"))), parse_job(JOB), outcome())
    assert "could not keep the job's completion event" in caplog.text
