"""The emulator's Batch API, driven by the real google-genai SDK over loopback HTTP:
inline batches and JSONL-file batches, states, listing, cancelling, result files, and the
injected failures the worker's batch mode is tested against."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors, types

from worker.emulator import EmulatorServer
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)

API_KEY = "batch-test-key"
MODEL = "gemini-2.5-flash"


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key=API_KEY) as emulator:
        emulator.configure(batch_done_after_s=0)
        yield emulator


@pytest.fixture
def client(server: EmulatorServer) -> genai.Client:
    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=server.base_url))


def scene_part(seed: int) -> types.Part:
    scene = make_scene(320, 240, shapes=["red circle", "blue rectangle"], seed=seed)
    return types.Part.from_bytes(data=scene.png_bytes(), mime_type="image/png")


def inlined(seed: int, key: str) -> types.InlinedRequest:
    return types.InlinedRequest(
        model=MODEL,
        contents=[
            types.Content(role="user", parts=[scene_part(seed), types.Part(text="Describe it.")])
        ],
        metadata={"key": key},
    )


def test_an_inline_batch_answers_every_request_with_its_key(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.configure(batch_done_after_s=60)  # pending until the test says time has passed
    job = client.batches.create(
        model=MODEL,
        src=[inlined(1, "job-a"), inlined(2, "job-b")],
        config=types.CreateBatchJobConfig(display_name="gvw-test-1"),
    )
    assert job.name and job.name.startswith("batches/")
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.display_name == "gvw-test-1"
    server.configure(batch_done_after_s=0)
    done = client.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest is not None and done.dest.inlined_responses is not None
    responses = done.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "job-a"}, {"key": "job-b"}]
    for response in responses:
        assert response.response is not None and "circle" in (response.response.text or "")
        assert response.response.usage_metadata is not None
    stats = server.stats()
    assert (stats["batches_created"], stats["batch_calls"], stats["generate_calls"]) == (1, 2, 0)


def test_a_file_batch_answers_in_a_result_file_keyed_by_line(
    client: genai.Client, server: EmulatorServer
) -> None:
    lines = []
    for seed, key in ((3, "k-1"), (4, "k-2"), (5, "k-3")):
        request = {
            "contents": [
                {"role": "user", "parts": [{"text": f"Describe picture {seed} in one line."}]}
            ]
        }
        lines.append(json.dumps({"key": key, "request": request}))
    uploaded = client.files.upload(
        file=io.BytesIO("\n".join(lines).encode()),
        config=types.UploadFileConfig(mime_type="application/jsonl", display_name="in"),
    )
    job = client.batches.create(model=MODEL, src=uploaded.name or "")
    done = client.batches.get(name=job.name or "")
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest is not None and done.dest.file_name
    data = client.files.download(file=done.dest.file_name)
    results = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["key"] for r in results] == ["k-1", "k-2", "k-3"]
    assert all("response" in r and r["response"]["candidates"] for r in results)


def test_injected_failures_reach_the_requests_and_the_batch(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.queue_fault("batch_request", count=1)
    partly = client.batches.create(model=MODEL, src=[inlined(6, "a"), inlined(7, "b")])
    done = client.batches.get(name=partly.name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    first, second = done.dest.inlined_responses
    assert first.error is not None and first.response is None
    assert second.response is not None and second.error is None

    server.queue_fault("batch_expired")
    expired = client.batches.create(model=MODEL, src=[inlined(8, "c")])
    assert client.batches.get(name=expired.name or "").state == types.JobState.JOB_STATE_EXPIRED


def test_a_pending_batch_can_be_cancelled_and_is_listed(
    client: genai.Client, server: EmulatorServer
) -> None:
    server.configure(batch_done_after_s=60)
    job = client.batches.create(model=MODEL, src=[inlined(9, "x")])
    client.batches.cancel(name=job.name or "")
    assert client.batches.get(name=job.name or "").state == types.JobState.JOB_STATE_CANCELLED
    listed = [b.name for b in client.batches.list(config=types.ListBatchJobsConfig(page_size=5))]
    assert job.name in listed
    client.batches.delete(name=job.name or "")
    with pytest.raises(errors.ClientError) as caught:
        client.batches.get(name=job.name or "")
    assert caught.value.code == 404


@pytest.mark.parametrize("inline_max_bytes", [10_000_000, 0], ids=["inline", "file"])
def test_a_request_that_fails_inside_a_batch_keeps_its_own_error(
    server: EmulatorServer, inline_max_bytes: int
) -> None:
    # the worker's gateway reads a per-request error the same from an inline batch (the
    # SDK's JobError) and from a result file (a dict): the retry policy needs its status
    from tasks.errors import ModelRejected
    from worker.gemini.gateway import GeminiGateway

    gateway = GeminiGateway(api_key=API_KEY, base_url=server.base_url, timeout_s=30)
    gone = {
        "file_data": {"file_uri": f"{server.base_url}/v1beta/files/gone", "mime_type": "image/png"}
    }
    request = {"contents": [{"role": "user", "parts": [gone, {"text": "Describe it."}]}]}
    remote, source = gateway.create_batch(
        model=MODEL,
        requests=[{**request, "metadata": {"key": "job-1"}}],
        display_name="gone-file",
        inline_max_bytes=inline_max_bytes,
    )
    assert source == ("inline" if inline_max_bytes else "file")
    assert gateway.get_batch(remote.name).finished
    (error,) = gateway.batch_answers(remote.name).values()
    # the request's own 403 (its file is gone), not "Gemini 500: failed inside its batch"
    assert isinstance(error, ModelRejected) and "Gemini 403" in error.message, error
    assert "gone" in error.message
