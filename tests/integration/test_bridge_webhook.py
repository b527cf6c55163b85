"""`bridge webhook` as MinIO would use it: POSTed events, a bearer token, real jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from tests.harness import REPO_ROOT, Stack, free_port, wait_until
from tests.integration.test_bridge_sqs import BRIDGE
from worker.bridge.dispatch import CeleryJobSender, Dispatcher
from worker.bridge.job_ids import bridge_job_id
from worker.bridge.notifications import ObjectEvent
from worker.bridge.rules import load_rules
from worker.bridge.webhook import WebhookServer
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.integration

TOKEN = "s3cret-" + uuid.uuid4().hex
RULES = {"rules": [{"name": "minio-captions", "suffix": [".png"], "job": {"task": "caption"}}]}


def minio_event(bucket: str, key: str, etag: str, size: int) -> dict[str, Any]:
    """MinIO's webhook body: keys escaped as Go's url.QueryEscape does ("/" -> %2F)."""
    encoded = quote_plus(key, safe="")
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/{encoded}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2024-05-06T07:08:09.123Z",
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"principalId": "minioadmin"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": encoded,
                        "size": size,
                        "eTag": etag,
                        "contentType": "image/png",
                        "sequencer": "17CCB1A2B3F0A1B2",
                    },
                },
                "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64)"},
            }
        ],
    }


def post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def put_object(stack: Stack, key: str) -> dict[str, Any]:
    data = make_scene(320, 240, shapes=["blue rectangle"]).png_bytes()
    stack.put(key, data)
    etag = str(stack.s3.head_object(Bucket="inbox", Key=key)["ETag"]).strip('"')
    return minio_event("inbox", key, etag, len(data))


class Webhook:
    def __init__(self, proc: subprocess.Popen[str], url: str, log_path: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path


@pytest.fixture
def webhook_factory(stack: Stack, tmp_path: Path) -> Iterator[Any]:
    started: list[Webhook] = []
    rules_path = tmp_path / "rules.json"
    rules_path.write_text(json.dumps(RULES))

    def start(*, env: dict[str, str] | None = None, host: str = "127.0.0.1") -> Webhook:
        port = free_port()
        log_path = tmp_path / f"webhook-{port}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [
                    *BRIDGE,
                    "webhook",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--rules",
                    str(rules_path),
                ],
                env={**stack.env, "GVW_BRIDGE_TOKEN": TOKEN, **(env or {})},
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        hook = Webhook(proc, f"http://127.0.0.1:{port}", log_path)
        started.append(hook)
        return hook

    yield start
    for hook in started:
        if hook.proc.poll() is None:
            hook.proc.send_signal(signal.SIGTERM)
            try:
                hook.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(hook.proc.pid, signal.SIGKILL)
                hook.proc.wait(timeout=10)


def wait_ready(hook: Webhook) -> None:
    wait_until(
        lambda: get_json(hook.url + "/healthz")["status"] == "ok" or hook.proc.poll() is not None,
        timeout_s=30,
        what="the webhook",
    )
    assert hook.proc.poll() is None, hook.log_path.read_text()[-3000:]


def test_minio_events_with_the_token_become_results(stack: Stack, webhook_factory: Any) -> None:
    hook = webhook_factory()
    wait_ready(hook)
    key = f"minio-{uuid.uuid4().hex[:8]}/nested/a b+c ü.png"
    event = put_object(stack, key)
    body = json.dumps(event).encode()

    assert post(hook.url, body)[0] == 401  # no token
    assert post(hook.url, body, token="guess")[0] == 401
    assert get_json(hook.url + "/healthz")["notifications"] == 0  # refused before decoding

    status, answer = post(hook.url + "/minio/events", body, token=TOKEN)
    assert status == 200, answer
    (rule,) = load_rules(json.dumps(RULES))
    record_etag = event["Records"][0]["s3"]["object"]["eTag"]
    job_id = bridge_job_id(ObjectEvent("inbox", key, etag=record_etag), rule)
    assert answer["enqueued"] == [job_id]
    record = stack.record(job_id)
    assert record["status"] == "succeeded"
    assert record["images"][0]["uri"] == f"s3://inbox/{key}"

    status, answer = post(hook.url, b"{not json", token=TOKEN)
    assert status == 400 and "not JSON" in answer["error"]
    deletion = json.loads(
        json.dumps(event).replace("s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete")
    )
    status, answer = post(hook.url, json.dumps(deletion).encode(), token=TOKEN)
    assert (status, answer["enqueued"], answer["ignored"]) == (200, [], 1)

    hook.proc.send_signal(signal.SIGTERM)
    assert hook.proc.wait(timeout=15) == 0


def test_an_unreachable_broker_answers_503_so_minio_retries(
    stack: Stack, webhook_factory: Any
) -> None:
    hook = webhook_factory(env={"CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    wait_ready(hook)
    event = put_object(stack, f"minio-{uuid.uuid4().hex[:8]}/later.png")
    status, answer = post(hook.url, json.dumps(event).encode(), token=TOKEN)
    assert status == 503
    assert answer["enqueued"] == [] and "cannot reach the broker" in answer["error"]


def test_without_a_token_it_only_listens_on_loopback(stack: Stack, webhook_factory: Any) -> None:
    hook = webhook_factory(env={"GVW_BRIDGE_TOKEN": ""}, host="0.0.0.0")
    assert hook.proc.wait(timeout=30) == 2
    assert "GVW_BRIDGE_TOKEN" in hook.log_path.read_text()


def test_without_a_token_on_loopback_any_local_post_is_accepted(stack: Stack) -> None:
    dispatcher = Dispatcher(
        load_rules(json.dumps(RULES)), CeleryJobSender(stack.env["CELERY_BROKER_URL"])
    )
    server = WebhookServer(("127.0.0.1", 0), dispatcher, token=None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        event = put_object(stack, f"minio-{uuid.uuid4().hex[:8]}/local.png")
        status, answer = post(server.url, json.dumps(event).encode())
        assert status == 200, answer
        (job_id,) = answer["enqueued"]
        assert stack.record(job_id)["status"] == "succeeded"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
