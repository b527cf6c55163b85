"""The pipeline itself, fast: local adapters (files, in-memory locks and caches) and the
in-process emulator, no Celery, no Redis, no S3 server. Milliseconds per job, so the
decisions the pipeline makes (commit, reuse, refuse, recover, record) are tested one by
one here; the end-to-end tests drive the same code through real workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import InvalidImage, JobIdConflict, RecordNotWritten, StorageUnavailable, TooLarge
from worker.emulator.scenes import make_scene
from worker.emulator.server import EmulatorServer
from worker.failures import publish_error, publish_pending_record
from worker.jobs import parse_job
from worker.pipeline import run
from worker.ports import Ports
from worker.records import ErrorRecord, ResultRecord, read_record
from worker.runtime import build_ports
from worker.settings import Settings
from worker.storage import StoreRouter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key="k") as server:
        yield server


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return tmp_path


def local_ports(emulator: EmulatorServer, root: Path, **settings: Any) -> Ports:
    return build_ports(
        Settings(
            gemini_base_url=emulator.base_url,
            gemini_api_key="k",
            gvw_results_uri=f"file://{root}/out",
            gvw_allowed_inputs=f"file://{root}/in/",
            **settings,
        ),
        local=True,
    )


def put(root: Path, name: str, data: bytes) -> str:
    (root / "in" / name).write_bytes(data)
    return f"file://{root}/in/{name}"


def scene_png(seed: int = 1, width: int = 320, height: int = 240) -> bytes:
    return make_scene(width, height, shapes=["red circle", "blue rectangle"], seed=seed).png_bytes()


def record_of(root: Path, job_id: str) -> ResultRecord | ErrorRecord:
    folder = root / "out" / job_id
    path = folder / "result.json" if (folder / "result.json").exists() else folder / "error.json"
    return read_record(path.read_bytes())


def calls(emulator: EmulatorServer) -> int:
    return int(emulator.stats()["generate_calls"])


@pytest.mark.parametrize(
    "job",
    [
        pytest.param({"task": "caption"}, id="caption"),
        pytest.param({"task": "vqa", "prompt": "How many shapes?"}, id="vqa"),
        pytest.param({"task": "classify", "labels": ["circle", "dog"]}, id="classify"),
        pytest.param({"task": "detect", "prompt": "the shapes"}, id="detect"),
        pytest.param({"task": "segment", "prompt": "the shapes"}, id="segment"),
        pytest.param({"task": "custom", "prompt": "Describe it."}, id="custom"),
    ],
)
def test_every_task_commits_one_result(
    emulator: EmulatorServer, root: Path, job: dict[str, Any]
) -> None:
    ports = local_ports(emulator, root)
    uri = put(root, "a.png", scene_png())
    outcome = run(parse_job({"job_id": f"t-{job['task']}", **job, "images": [uri]}), ports)
    assert outcome.status == "succeeded" and not outcome.already_done
    record = record_of(root, f"t-{job['task']}")
    assert isinstance(record, ResultRecord)
    assert [image.uri for image in record.images] == [uri]
    assert record.images[0].transport == "inline"
    assert record.fingerprint is not None


def test_a_finished_job_is_not_run_again(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root)
    job = parse_job(
        {"job_id": "again", "task": "caption", "images": [put(root, "a.png", scene_png())]}
    )
    run(job, ports)
    before = calls(emulator)
    outcome = run(job, ports)
    assert outcome.already_done and calls(emulator) == before


def test_a_bad_image_fails_and_is_recorded(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root)
    job = parse_job(
        {"job_id": "pdf", "task": "caption", "images": [put(root, "a.png", b"%PDF-1.4")]}
    )
    with pytest.raises(InvalidImage) as caught:
        run(job, ports)
    outcome = publish_error(
        ports,
        job_id=job.job_id,
        task=job.task,
        output=None,
        error=caught.value,
        attempts=1,
        job=job.as_record(),
        fingerprint=job.fingerprint(f"file://{root}/out/pdf"),
    )
    assert outcome.status == "failed"
    record = record_of(root, "pdf")
    assert isinstance(record, ErrorRecord) and record.error.code == "invalid_image"
    letter = ports.deliveries.get("pdf")
    assert letter is not None and letter.recorded


def test_a_reused_id_with_another_job_is_refused(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root)
    first = parse_job(
        {"job_id": "mine", "task": "caption", "images": [put(root, "a.png", scene_png(1))]}
    )
    run(first, ports)
    other = parse_job(
        {"job_id": "mine", "task": "caption", "images": [put(root, "b.png", scene_png(2))]}
    )
    before = calls(emulator)
    with pytest.raises(JobIdConflict):
        run(other, ports)
    assert calls(emulator) == before


def test_large_requests_go_through_the_file_api_and_recover_expired_files(
    emulator: EmulatorServer, root: Path
) -> None:
    ports = local_ports(emulator, root, gvw_inline_max_bytes=4_000)  # under any request
    images = [put(root, f"{i}.png", scene_png(i, 640, 480)) for i in range(3)]
    run(parse_job({"job_id": "files-1", "task": "compare", "images": images}), ports)
    record = record_of(root, "files-1")
    assert isinstance(record, ResultRecord)
    assert {image.transport for image in record.images} == {"file_api"}
    uploads = emulator.stats()["uploads_completed"]
    emulator.expire_files()  # Gemini forgot them: 403 on the cached URIs
    run(parse_job({"job_id": "files-2", "task": "compare", "images": images}), ports)
    assert emulator.stats()["uploads_completed"] == uploads + 3  # uploaded again, once
    assert isinstance(record_of(root, "files-2"), ResultRecord)


def test_a_paid_answer_is_published_without_a_second_call(
    emulator: EmulatorServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = local_ports(emulator, root)
    job = parse_job(
        {"job_id": "paid", "task": "caption", "images": [put(root, "a.png", scene_png())]}
    )

    def lost_commit(*args: Any, **kwargs: Any) -> bool:
        raise StorageUnavailable("S3 is down")

    real_create = StoreRouter.create_exclusive
    monkeypatch.setattr(StoreRouter, "create_exclusive", lost_commit)
    with pytest.raises(StorageUnavailable):
        run(job, ports)
    monkeypatch.setattr(StoreRouter, "create_exclusive", real_create)
    before = calls(emulator)
    assert run(job, ports, attempt=2).status == "succeeded"
    assert calls(emulator) == before


def test_a_job_past_its_pixel_budget_is_too_large(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root, gvw_max_job_pixels=200_000)
    uri = put(root, "a.png", scene_png(1, 320, 240))  # 76,800 px: the third passes the budget
    before = calls(emulator)
    with pytest.raises(TooLarge, match="GVW_MAX_JOB_PIXELS"):
        run(parse_job({"job_id": "budget", "task": "compare", "images": [uri] * 3}), ports)
    assert calls(emulator) == before  # nothing asked: the refusal came first


def test_a_failure_storage_refuses_is_kept_and_written_later(
    emulator: EmulatorServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = local_ports(emulator, root)
    error = InvalidImage("not an image")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("S3 is down")

    monkeypatch.setattr(StoreRouter, "exists_each", down)
    with pytest.raises(RecordNotWritten):
        publish_error(
            ports, job_id="later", task="caption", output=None, error=error, attempts=1, job={}
        )
    pending = ports.deliveries.pending_record("later")
    assert pending is not None and json.loads(pending)["error"]["code"] == "invalid_image"
    monkeypatch.undo()
    outcome = publish_pending_record(ports, "later", f"file://{root}/out/later")
    assert outcome.status == "failed"
    assert ports.deliveries.pending_record("later") is None
    record = record_of(root, "later")
    assert isinstance(record, ErrorRecord) and record.error.code == "invalid_image"
