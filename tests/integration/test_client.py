"""The client library as a backend service uses it: submit, status, wait, result."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tasks.errors import InvalidJob
from tests.harness import REPO_ROOT, Stack
from worker.emulator.scenes import make_scene
from worker.producers.client import VisionClient
from worker.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> VisionClient:
    for key, value in stack.moto.env().items():
        monkeypatch.setenv(key, value)
    settings = Settings(
        celery_broker_url=stack.env["CELERY_BROKER_URL"],
        celery_result_backend=stack.env["CELERY_RESULT_BACKEND"],
        gvw_results_uri=stack.env["GVW_RESULTS_URI"],
    )
    return VisionClient(settings=settings)


def test_submit_then_wait_gives_the_result(stack: Stack, client: VisionClient) -> None:
    uri = stack.put(
        f"client/{uuid.uuid4().hex}.png", make_scene(400, 300, shapes=["red circle"]).png_bytes()
    )
    job_id = client.submit(
        {"task": "caption", "images": [uri], "job_id": f"c-{uuid.uuid4().hex[:8]}"}
    )
    record = client.wait(job_id, timeout_s=60)
    assert record["job_id"] == job_id
    assert "red circle" in record["output"]["text"]
    assert client.status(job_id).state == "succeeded"
    assert client.result(job_id) == record
    # the Celery task id is the job id
    from celery import Celery

    backend = Celery(backend=stack.env["CELERY_RESULT_BACKEND"], set_as_current=False)
    assert backend.AsyncResult(job_id).state == "SUCCESS"


def test_a_bad_job_never_leaves_the_client(stack: Stack, client: VisionClient) -> None:
    job_id = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidJob, match="labels"):
        client.submit({"task": "classify", "images": ["s3://inbox/a.png"], "job_id": job_id})
    assert client.status(job_id).state == "unknown"  # nothing was sent
    assert client.result(job_id) is None


def test_failed_job_status_names_the_code(stack: Stack, client: VisionClient) -> None:
    uri = stack.put(f"client/{uuid.uuid4().hex}.png", b"%PDF-1.4 not an image")
    job_id = client.submit({"task": "caption", "images": [uri]})
    record = client.wait(job_id, timeout_s=60)
    assert record["status"] == "failed"
    status = client.status(job_id)
    assert (status.state, status.error_code, status.done) == ("failed", "invalid_image", True)


def test_wait_gives_up_at_its_timeout(client: VisionClient) -> None:
    with pytest.raises(TimeoutError):
        client.wait("never-submitted", timeout_s=0.5)


def test_the_client_imports_none_of_the_heavy_dependencies() -> None:
    probe = (
        "import sys, worker.producers.client\n"
        "from worker.contract.jobs import parse_job\n"
        "parse_job({'task': 'segment', 'images': ['s3://inbox/a.png']})\n"
        "heavy = ['google.genai', 'numpy', 'PIL', 'boto3', 'redis', 'prometheus_client']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
