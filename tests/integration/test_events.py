"""Completion events end to end (docs/events.md): real redis-server, moto's server (S3,
SQS, SNS), the Gemini emulator and real `celery worker` processes, with the receivers on
127.0.0.1: a webhook server verifying every signature with `standardwebhooks`, SQS and
SNS through moto, and a second Celery app's worker consuming queue ``callbacks``.

Two stacks, one module each fixture: ``patient`` (many attempts, for a receiver that is
down for a while) and ``impatient`` (3 attempts, for an event that uses them up).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from standardwebhooks import Webhook

from tests.harness import (
    REPO_ROOT,
    CeleryWorker,
    Stack,
    free_port,
    running_stack,
    wait_ready,
    wait_until,
)
from worker.emulator.scenes import make_scene

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("events")]

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:gvw-done"


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 503 while ``down``, 204 otherwise, and
    keeps every request, whether its signature verified (standardwebhooks)."""

    def __init__(self, port: int) -> None:
        self.down = False
        self.lock = threading.Lock()
        self.accepted: list[dict[str, Any]] = []  # verified events answered 2xx
        self.refused: list[dict[str, Any]] = []  # verified events answered 503
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    event = Webhook(SECRET).verify(body, dict(self.headers.items()))
                except Exception:
                    event = None
                with receiver.lock:
                    if event is None:
                        receiver.bad_signatures += 1
                    elif receiver.down:
                        receiver.refused.append(event)
                    else:
                        receiver.accepted.append(event)
                    status = 503 if receiver.down or event is None else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self) -> int:
        with self.lock:
            return len(self.accepted) + len(self.refused) + self.bad_signatures

    def accepted_jobs(self) -> dict[str, str]:
        """job id -> event id of every verified event answered 2xx."""
        with self.lock:
            return {e["data"]["job_id"]: e["id"] for e in self.accepted}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notify_env(allow: dict[str, Any], *, attempts: int) -> dict[str, str]:
    """The stack's settings for events (SQS and SNS reach moto through the harness's
    AWS_ENDPOINT_URL_SQS / _SNS): backoff from 0.2 s to 1 s."""
    return {
        "GVW_NOTIFY_DESTINATIONS": json.dumps(allow),
        "GVW_NOTIFY_MAX_ATTEMPTS": str(attempts),
        "GVW_NOTIFY_BACKOFF_BASE_S": "0.2",
        "GVW_NOTIFY_BACKOFF_MAX_S": "1",
        "GVW_NOTIFY_TIMEOUT_S": "5",
    }


class Fleet:
    def __init__(self, stack: Stack, hooks: dict[str, Receiver], callbacks: Path) -> None:
        self.stack = stack
        self.hooks = hooks
        self.callbacks = callbacks

    def job(self, notify: list[str]) -> str:
        return self.stack.submit({"task": "caption", "images": [self.image()], "notify": notify})

    def image(self) -> str:
        scene = make_scene(96, 64, shapes=["red circle"], seed=1)
        return self.stack.put(f"events/{uuid.uuid4().hex}.png", scene.png_bytes())

    def gvw(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            cwd=REPO_ROOT,
            env=self.stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def failed_events(self) -> list[dict[str, Any]]:
        done = self.gvw("events", "list", "--failed", "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def start_callbacks_worker(stack: Stack, tmp_dir: Path, callbacks: Path) -> None:
    """A `celery worker` of tests/events_callbacks.py on queue ``callbacks``, stopped with
    the stack (it joins `stack.workers`)."""
    log_path = tmp_dir / "worker-callbacks.log"
    env = {**stack.env, "GVW_TEST_CALLBACKS_FILE": str(callbacks)}
    with log_path.open("w") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.events_callbacks",
                "worker",
                "-Q",
                "callbacks",
                "--pool",
                "solo",
                "--hostname",
                "callbacks@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    worker = CeleryWorker("callbacks", proc, log_path)
    stack.workers.append(worker)
    wait_ready(worker)


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A receiver on 127.0.0.1 (listed literally), another reached by the name localhost
    (not listed literally: refused at delivery), SQS, SNS and Celery destinations; 30
    attempts a delivery."""
    tmp_dir = tmp_path_factory.mktemp("events-patient")
    hook, hidden = Receiver(free_port()), Receiver(free_port())
    hidden_port = hidden.server.server_address[1]
    allow = {
        hook.url: {"secret": SECRET},
        f"http://localhost:{hidden_port}/": {"secret": SECRET},
        "sqs:gvw-": {},
        "sns:arn:aws:sns:us-east-1:123456789012:gvw-": {},
        "celery:callbacks/": {},
    }
    callbacks = tmp_dir / "callbacks.jsonl"
    try:
        with running_stack(tmp_dir, extra_env=notify_env(allow, attempts=30)) as stack:
            start_callbacks_worker(stack, tmp_dir, callbacks)
            yield Fleet(stack, {"hook": hook, "hidden": hidden}, callbacks)
    finally:
        hook.stop()
        hidden.stop()


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One receiver on 127.0.0.1; 3 attempts a delivery (about a second of backoff)."""
    tmp_dir = tmp_path_factory.mktemp("events-impatient")
    hook = Receiver(free_port())
    try:
        with running_stack(
            tmp_dir, extra_env=notify_env({hook.url: {"secret": SECRET}}, attempts=3)
        ) as stack:
            yield Fleet(stack, {"hook": hook}, tmp_dir / "unused.jsonl")
    finally:
        hook.stop()


# --- (a) a webhook that is down for a while ---------------------------------------------------


def test_every_job_s_event_arrives_after_the_receiver_comes_back(patient: Fleet) -> None:
    hook = patient.hooks["hook"]
    url = hook.url + "hooks/gvw?source=test"
    hook.down = True
    try:
        jobs = [patient.job([url]) for _ in range(6)]
        # no job failed or waited for the receiver: every record is committed while it is down
        records = [patient.stack.record(job_id) for job_id in jobs]
        assert [r["status"] for r in records] == ["succeeded"] * len(jobs)
        # and every event was tried, and refused, while it was down
        wait_until(
            lambda: {e["data"]["job_id"] for e in hook.refused} >= set(jobs),
            timeout_s=30,
            what="every event tried while the receiver is down",
        )
    finally:
        hook.down = False
    wait_until(
        lambda: set(hook.accepted_jobs()) >= set(jobs),
        timeout_s=60,
        what="every job's event delivered once the receiver is back",
    )
    assert hook.bad_signatures == 0
    with hook.lock:
        delivered = [e for e in hook.accepted if e["data"]["job_id"] in jobs]
    # at least once: deduplicated by id, exactly the set of jobs, one id a job
    by_id = {e["id"]: e for e in delivered}
    assert sorted(e["data"]["job_id"] for e in by_id.values()) == sorted(jobs)
    for event in by_id.values():
        assert event["type"] == "job.completed"
        data = event["data"]
        assert data["status"] == "succeeded" and data["error_code"] is None
        assert data["record_uri"] == f"s3://results/vision/{data['job_id']}/result.json"
        assert data["run"] is None
        assert isinstance(data["cost_usd"], float)


# --- (b) SQS and SNS through moto -------------------------------------------------------------


def test_events_reach_sqs_and_sns(patient: Fleet) -> None:
    endpoint = patient.stack.moto.endpoint
    options: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    sqs, sns = boto3.client("sqs", **options), boto3.client("sns", **options)
    queue_url = sqs.create_queue(QueueName="gvw-done")["QueueUrl"]
    topic_arn = sns.create_topic(Name="gvw-done")["TopicArn"]
    assert topic_arn == TOPIC_ARN
    sink_url = sqs.create_queue(QueueName="sink-of-topic")["QueueUrl"]
    sink_arn = sqs.get_queue_attributes(QueueUrl=sink_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=sink_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    job_id = patient.job(["sqs:gvw-done", f"sns:{TOPIC_ARN}"])
    assert patient.stack.record(job_id)["status"] == "succeeded"

    def one_message(url: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            reply = sqs.receive_message(
                QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1
            )
            found.extend(reply.get("Messages", []))
            return bool(found)

        wait_until(arrived, timeout_s=30, what=f"an event on {url}", interval_s=0.2)
        return found[0]

    for message in (one_message(queue_url), one_message(sink_url)):
        event = json.loads(message["Body"])
        assert event["type"] == "job.completed"
        assert event["data"]["job_id"] == job_id
        assert event["id"].startswith("evt_")


# --- (c) a Celery task in a second app ----------------------------------------------------------


def test_an_event_reaches_a_celery_task_in_another_app(patient: Fleet) -> None:
    job_id = patient.job(["celery:callbacks/tests.job_done"])
    assert patient.stack.record(job_id)["status"] == "succeeded"

    def received() -> list[dict[str, Any]]:
        if not patient.callbacks.exists():
            return []
        lines = patient.callbacks.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"]["data"]["job_id"] == job_id]

    wait_until(lambda: bool(received()), timeout_s=30, what="the callback task's run")
    (first, *_) = received()
    assert first["event"]["type"] == "job.completed"
    assert first["task_id"] == first["event"]["id"]  # the event's id is the task's id


# --- (e) refused destinations -------------------------------------------------------------------


def test_a_job_naming_a_destination_outside_the_allow_list_is_invalid(patient: Fleet) -> None:
    hook = patient.hooks["hook"]
    job_id = patient.job([hook.url + "told", "https://hooks.elsewhere.example.com/x"])
    record = patient.stack.record(job_id)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "invalid_job"
    assert record["error"]["field"] == "notify.1"
    assert "notify.1" in record["error"]["message"]
    # the allowed destination is still told that the job failed
    wait_until(lambda: job_id in hook.accepted_jobs(), timeout_s=30, what="the failure's event")
    with hook.lock:
        (event,) = [e for e in hook.accepted if e["data"]["job_id"] == job_id]
    assert (event["data"]["status"], event["data"]["error_code"]) == ("failed", "invalid_job")
    assert event["data"]["record_uri"] == f"s3://results/vision/{job_id}/error.json"


def test_a_loopback_address_not_listed_literally_is_refused_at_delivery(patient: Fleet) -> None:
    hidden = patient.hooks["hidden"]
    port = hidden.server.server_address[1]
    job_id = patient.job([f"http://localhost:{port}/hook"])
    assert patient.stack.record(job_id)["status"] == "succeeded"  # allowed by its prefix

    def refused() -> list[dict[str, Any]]:
        return [e for e in patient.failed_events() if e["destination"].endswith(f":{port}/hook")]

    wait_until(lambda: bool(refused()), timeout_s=30, what="the refused delivery", interval_s=0.5)
    (row,) = refused()
    assert row["state"] == "failed" and row["attempts"] == 1
    assert "refused: localhost resolves to" in row["error"] and "loopback" in row["error"]
    assert hidden.requests() == 0  # never requested


# --- (d) an event that used its attempts, redelivered -----------------------------------------


def test_a_failed_event_is_listed_and_redelivered(impatient: Fleet) -> None:
    hook = impatient.hooks["hook"]
    hook.down = True
    try:
        # sent by the command line this time: gvw submit --notify
        sent = impatient.gvw("submit", "caption", impatient.image(), "--notify", hook.url + "late")
        assert sent.returncode == 0, sent.stderr
        job_id = sent.stdout.strip()
        assert impatient.stack.record(job_id)["status"] == "succeeded"

        def failed() -> list[dict[str, Any]]:
            return [e for e in impatient.failed_events() if e["destination"].endswith("/late")]

        wait_until(lambda: bool(failed()), timeout_s=60, what="the failed event", interval_s=0.5)
        (row,) = failed()
        assert row["attempts"] == 3
        assert "3 attempts failed" in row["error"] and "HTTP 503" in row["error"]
        with hook.lock:
            assert [e["id"] for e in hook.refused] == [row["event_id"]] * 3
        listed = impatient.gvw("events", "list", "--failed")
        assert row["event_id"] in listed.stdout and SECRET not in listed.stdout
    finally:
        hook.down = False
    done = impatient.gvw("events", "redeliver", row["event_id"])
    assert done.returncode == 0, done.stderr
    assert "1 deliveries due again" in done.stdout
    wait_until(lambda: job_id in hook.accepted_jobs(), timeout_s=30, what="the redelivered event")
    assert hook.accepted_jobs()[job_id] == row["event_id"]
    wait_until(lambda: not failed(), timeout_s=10, what="the failed list emptied")


# --- a run, from enqueue-prefix to its completion webhook -----------------------------------


def test_a_run_from_enqueue_prefix_to_its_completion_webhook(patient: Fleet) -> None:
    hook = patient.hooks["hook"]
    prefix = f"run-events-{uuid.uuid4().hex[:8]}"
    for index in range(5):
        scene = make_scene(96, 64, shapes=["blue rectangle"], seed=index)
        patient.stack.put(f"{prefix}/{index}.png", scene.png_bytes())
    patient.stack.put(f"{prefix}/broken.png", b"\x89PNG\r\n\x1a\n and then nothing")
    done = patient.gvw(
        "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption", "--notify", hook.url
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]

    def run_events() -> list[dict[str, Any]]:
        with hook.lock:
            return [e for e in hook.accepted if e["type"] == "run.completed"
                    and e["data"]["run_id"] == run_id]  # fmt: skip

    wait_until(lambda: bool(run_events()), timeout_s=60, what="the run's completion event")
    event = run_events()[0]
    data = event["data"]
    assert data["state"] == "finished" and data["members"] == 6
    assert data["counts"]["succeeded"] == 5 and data["failed_by_code"] == {"invalid_image": 1}
    assert data["summary_uri"] == f"s3://results/vision/_runs/{run_id}/summary.json"
    assert hook.bad_signatures == 0
    assert len({e["id"] for e in run_events()}) == 1  # one event, however often delivered


def test_a_run_naming_a_destination_outside_the_allow_list_is_refused_before_listing(
    patient: Fleet,
) -> None:
    done = patient.gvw(
        "enqueue-prefix", "s3://inbox/anything/", "--task", "caption",
        "--notify", "https://elsewhere.example.com/hook",
    )  # fmt: skip
    assert done.returncode == 1
    assert "notify.0" in done.stderr and "GVW_NOTIFY_DESTINATIONS" in done.stderr
    assert "run " not in done.stdout  # no run was made
