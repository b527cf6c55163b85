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
from PIL import Image

from tasks.errors import (
    InvalidImage,
    InvalidJob,
    JobIdConflict,
    ModelOutputInvalid,
    QuotaExhausted,
    RecordNotWritten,
    StorageUnavailable,
    TooLarge,
)
from tests.unit.test_images import one_colour_gray_png
from worker.contract.jobs import parse_job
from worker.contract.records import ErrorRecord, ResultRecord, read_record
from worker.emulator.scenes import make_scene
from worker.emulator.server import EmulatorServer
from worker.pipeline.failures import publish_error, publish_pending_record
from worker.pipeline.flow import run
from worker.pipeline.ports import Ports
from worker.runtime import build_ports
from worker.settings import Settings
from worker.storage import StoreRouter

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)


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
    letter = ports.dead_letters.get("pdf")
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


def test_gvw_max_image_pixels_is_the_limit_above_pillows_own_threshold(
    emulator: EmulatorServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the worker may raise Pillow's process-global threshold: leave it as found
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    uri = put(root, "big.png", one_colour_gray_png(10000, 9500))  # 95 MP, above Pillow's 89.5
    job = {"task": "caption", "images": [uri]}
    default_px = Settings.model_fields["gvw_max_image_pixels"].default
    with pytest.raises(TooLarge, match=f"95000000 pixels, above the limit of {default_px}$"):
        run(parse_job({"job_id": "big-default", **job}), local_ports(emulator, root))
    ports = local_ports(emulator, root, gvw_max_image_pixels=100_000_000)
    assert run(parse_job({"job_id": "big-raised", **job}), ports).status == "succeeded"
    record = record_of(root, "big-raised")
    assert isinstance(record, ResultRecord)
    assert (record.images[0].width, record.images[0].height) == (10000, 9500)


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
    pending = ports.dead_letters.pending_record("later")
    assert pending is not None and json.loads(pending)["error"]["code"] == "invalid_image"
    monkeypatch.undo()
    outcome = publish_pending_record(ports, "later", f"file://{root}/out/later")
    assert outcome.status == "failed"
    assert ports.dead_letters.pending_record("later") is None
    record = record_of(root, "later")
    assert isinstance(record, ErrorRecord) and record.error.code == "invalid_image"


# ---- the answer cache (GVW_ANSWER_CACHE_TTL_S) ----------------------------------------


def test_an_identical_request_is_answered_once_across_job_ids(
    emulator: EmulatorServer, root: Path
) -> None:
    ports = local_ports(emulator, root, gvw_answer_cache_ttl_s=3600)
    # the same bytes under two names: the key is the content, not the URI or the job id
    a, b = put(root, "a.png", scene_png(3)), put(root, "copy.png", scene_png(3))
    before = calls(emulator)
    run(parse_job({"job_id": "payer", "task": "detect", "prompt": "shapes", "images": [a]}), ports)
    run(parse_job({"job_id": "reuser", "task": "detect", "prompt": "shapes", "images": [b]}), ports)
    assert calls(emulator) == before + 1
    payer, reuser = record_of(root, "payer"), record_of(root, "reuser")
    assert isinstance(payer, ResultRecord) and isinstance(reuser, ResultRecord)
    assert payer.answer_reused_from is None and payer.usage.total_tokens > 0
    assert reuser.answer_reused_from is not None
    assert reuser.answer_reused_from.job_id == "payer"
    assert reuser.output == payer.output
    assert (reuser.usage.total_tokens, reuser.usage.cost_usd) == (0, 0.0)
    assert [image.transport for image in reuser.images] == ["none"]
    assert reuser.images[0].uri == b  # its own images, described as always
    assert reuser.artifacts and reuser.artifacts != payer.artifacts  # its own overlay


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"prompt": "circles only"}, id="prompt"),
        pytest.param({"model": "gemini-2.5-pro"}, id="model"),
        pytest.param({"options": {"temperature": 0.3}}, id="options"),
        pytest.param({"options": {"fresh": True}}, id="fresh"),
        pytest.param({"seed": 4}, id="image"),
    ],
)
def test_a_request_that_differs_or_asks_fresh_calls_the_model(
    emulator: EmulatorServer, root: Path, change: dict[str, Any]
) -> None:
    ports = local_ports(emulator, root, gvw_answer_cache_ttl_s=3600)
    job = {"task": "detect", "prompt": "shapes", "images": [put(root, "a.png", scene_png(3))]}
    run(parse_job({"job_id": "first", **job}), ports)
    seed = change.pop("seed", None)
    if seed is not None:
        change = {"images": [put(root, "other.png", scene_png(seed))]}
    before = calls(emulator)
    run(parse_job({"job_id": "second", **job, **change}), ports)
    assert calls(emulator) == before + 1
    second = record_of(root, "second")
    assert isinstance(second, ResultRecord) and second.answer_reused_from is None


def test_without_the_cache_every_job_pays(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root)  # GVW_ANSWER_CACHE_TTL_S=0, the default
    uri = put(root, "a.png", scene_png(3))
    before = calls(emulator)
    for job_id in ("one", "two"):
        run(parse_job({"job_id": job_id, "task": "caption", "images": [uri]}), ports)
    assert calls(emulator) == before + 2


def test_an_unreadable_answer_is_never_handed_on(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root, gvw_answer_cache_ttl_s=3600)
    job = {"task": "detect", "prompt": "shapes", "images": [put(root, "a.png", scene_png(5))]}
    emulator.queue_fault("garbage", count=1)
    with pytest.raises(ModelOutputInvalid):
        run(parse_job({"job_id": "garbled", **job}), ports)
    before = calls(emulator)
    run(parse_job({"job_id": "next", **job}), ports)
    assert calls(emulator) == before + 1  # asked, not served the garbage
    record = record_of(root, "next")
    assert isinstance(record, ResultRecord) and record.answer_reused_from is None


def test_a_cache_hit_uploads_nothing(emulator: EmulatorServer, root: Path) -> None:
    # a request past the inline limit goes by File API: on a hit, nothing is uploaded
    ports = local_ports(emulator, root, gvw_inline_max_bytes=4_000, gvw_answer_cache_ttl_s=3600)
    images = [put(root, f"u{i}.png", scene_png(20 + i, 640, 480)) for i in range(2)]
    run(parse_job({"job_id": "up-1", "task": "compare", "images": images}), ports)
    first = record_of(root, "up-1")
    assert isinstance(first, ResultRecord)
    assert {image.transport for image in first.images} == {"file_api"}
    emulator.expire_files()  # a second job that asked would have to upload again
    uploads, before = emulator.stats()["uploads_completed"], calls(emulator)
    run(parse_job({"job_id": "up-2", "task": "compare", "images": images}), ports)
    assert (emulator.stats()["uploads_completed"], calls(emulator)) == (uploads, before)


# ---- media_resolution ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "level", "image_tokens"),
    [
        # per request on 2.5 (the emulator refuses a per-part level there)
        pytest.param("gemini-2.5-flash", "low", 64, id="2.5-low"),
        pytest.param("gemini-2.5-flash", None, 1548, id="2.5-default"),
        # per image part on 3 (the emulator refuses ultra_high on the request)
        pytest.param("gemini-3-flash-preview", "ultra_high", 2240, id="3-ultra_high"),
        pytest.param("gemini-3-flash-preview", "medium", 560, id="3-medium"),
    ],
)
def test_media_resolution_is_sent_the_way_the_model_takes_it(
    emulator: EmulatorServer, root: Path, model: str, level: str | None, image_tokens: int
) -> None:
    ports = local_ports(emulator, root)
    uri = put(root, "wide.png", scene_png(8, 960, 540))
    options = {"media_resolution": level} if level else {}
    job = {"job_id": "res", "task": "caption", "model": model, "images": [uri]}
    run(parse_job({**job, "options": options}), ports)
    record = record_of(root, "res")
    assert isinstance(record, ResultRecord)
    assert record.media_resolution == level
    assert record.usage.estimated_image_tokens == image_tokens
    prompt_text_tokens = record.usage.prompt_tokens - image_tokens
    assert 0 < prompt_text_tokens < 100  # the model counted what the estimate said


def test_ultra_high_on_an_older_model_is_the_jobs_error(
    emulator: EmulatorServer, root: Path
) -> None:
    ports = local_ports(emulator, root)
    uri = put(root, "a.png", scene_png())
    before = calls(emulator)
    job = {"job_id": "ultra", "task": "caption", "images": [uri]}
    with pytest.raises(InvalidJob, match="ultra_high needs a Gemini 3"):
        run(parse_job({**job, "options": {"media_resolution": "ultra_high"}}), ports)
    assert calls(emulator) == before


# ---- the day's budget (GVW_BUDGET_USD_PER_DAY) -------------------------------------------


def test_a_budget_needs_a_price_for_the_model(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root, gvw_budget_usd_per_day=5.0)
    job = {"job_id": "unpriced", "task": "caption", "model": "gemini-flash-latest"}
    with pytest.raises(InvalidJob, match="no price in the price table"):
        run(parse_job({**job, "images": [put(root, "a.png", scene_png())]}), ports)


def test_a_request_dearer_than_the_day_is_refused_for_good(
    emulator: EmulatorServer, root: Path
) -> None:
    ports = local_ports(emulator, root, gvw_budget_usd_per_day=0.0001)
    job = {"job_id": "dear", "task": "caption", "images": [put(root, "a.png", scene_png())]}
    before = calls(emulator)
    with pytest.raises(QuotaExhausted, match="more than the whole day's budget"):
        run(parse_job(job), ports)
    assert calls(emulator) == before


def test_each_call_is_settled_at_what_it_cost(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root, gvw_budget_usd_per_day=1.0)
    for seed in (1, 2):
        job = {"job_id": f"spend-{seed}", "task": "caption"}
        run(parse_job({**job, "images": [put(root, f"{seed}.png", scene_png(seed))]}), ports)
    costs = []
    for seed in (1, 2):
        record = record_of(root, f"spend-{seed}")
        assert isinstance(record, ResultRecord) and record.usage.cost_usd
        costs.append(record.usage.cost_usd)
    today = ports.budget.today()
    assert today is not None and today.reserved_usd == 0
    assert today.spent_usd == pytest.approx(sum(costs), abs=2e-6)


# ---- GVW_TRANSPORT ------------------------------------------------------------------------


def test_file_api_mode_uploads_even_small_images(emulator: EmulatorServer, root: Path) -> None:
    ports = local_ports(emulator, root, gvw_transport="file_api")
    uri = put(root, "small.png", scene_png(41))
    run(parse_job({"job_id": "fa", "task": "caption", "images": [uri]}), ports)
    record = record_of(root, "fa")
    assert isinstance(record, ResultRecord) and record.images[0].transport == "file_api"


def test_inline_mode_refuses_what_only_the_file_api_could_carry(
    emulator: EmulatorServer, root: Path
) -> None:
    ports = local_ports(emulator, root, gvw_transport="inline", gvw_inline_max_bytes=4_000)
    uri = put(root, "big.png", scene_png(42, 640, 480))
    uploads = emulator.stats()["uploads_completed"]
    with pytest.raises(TooLarge, match="GVW_TRANSPORT=inline"):
        run(parse_job({"job_id": "il", "task": "caption", "images": [uri]}), ports)
    assert emulator.stats()["uploads_completed"] == uploads


# ---- batch mode (options.mode: "batch"; the local store stands in for Redis) ----------


def test_a_job_waiting_for_its_batch_is_not_paid_again_when_sent_without_batch_mode(
    emulator: EmulatorServer, root: Path
) -> None:
    ports = local_ports(emulator, root)
    uri = put(root, "a.png", scene_png())
    batched = {"job_id": "backfill-1", "task": "caption", "images": [uri]}
    before = calls(emulator)
    first = run(parse_job({**batched, "options": {"mode": "batch"}}), ports)
    # the same job, enqueued again without --batch while its batch is pending
    again = run(parse_job(batched), ports)
    assert (first.status, again.status) == ("batched", "batched")
    assert calls(emulator) == before and ports.batches is not None
    assert ports.batches.waiting_in("backfill-1") == ""


def test_an_answer_already_paid_for_is_published_on_a_day_without_budget_left(
    emulator: EmulatorServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a batch's answers arrive whenever Gemini finishes: the day may be spent by then
    from dataclasses import replace

    from worker.fleet.budget import LocalBudget

    ports = local_ports(emulator, root, gvw_budget_usd_per_day=1.0)
    job = parse_job(
        {"job_id": "late", "task": "caption", "images": [put(root, "a.png", scene_png())]}
    )
    real_create = StoreRouter.create_exclusive

    def lost_commit(*args: Any, **kwargs: Any) -> bool:
        raise StorageUnavailable("S3 is down")

    monkeypatch.setattr(StoreRouter, "create_exclusive", lost_commit)
    with pytest.raises(StorageUnavailable):
        run(job, ports)  # the answer is paid and kept; the commit failed
    monkeypatch.setattr(StoreRouter, "create_exclusive", real_create)
    spent = LocalBudget(budget_usd=0.01)
    spent.settle(spent.reserve(0.01, max_wait_s=0), 0.011)  # nothing left today
    before = calls(emulator)
    assert run(job, replace(ports, budget=spent), attempt=2).status == "succeeded"
    assert calls(emulator) == before


def test_batches_are_sized_to_the_days_budget_and_a_job_dearer_than_the_day_fails(
    emulator: EmulatorServer, root: Path
) -> None:
    from dataclasses import replace

    from tasks.retry_policy import RetryPolicy
    from worker.batch.follower import BatchRunner
    from worker.fleet.budget import LocalBudget

    emulator.configure(batch_done_after_s=0)
    dispatched: list[str] = []
    policy = RetryPolicy(base_s=0.1, max_s=1, max_retries=3, output_retries=1)

    def batched_jobs(prefix: str, count: int) -> tuple[Ports, float]:
        """`count` jobs waiting for a batch, and one's estimated cost."""
        ports = local_ports(emulator, root, gvw_budget_usd_per_day=1.0, gvw_batch_max_wait_s=0)
        for seed in range(count):
            uri = put(root, f"{prefix}{seed}.png", scene_png(seed))
            job = {"job_id": f"{prefix}{seed}", "task": "caption", "images": [uri]}
            assert run(parse_job({**job, "options": {"mode": "batch"}}), ports).status == "batched"
        assert ports.batches is not None
        waiting = ports.batches.job(f"{prefix}0")
        assert waiting is not None and waiting.estimate_usd > 0
        return ports, waiting.estimate_usd

    def follow(ports: Ports, day_usd: float) -> None:
        ports = replace(
            ports,
            settings=ports.settings.model_copy(update={"gvw_budget_usd_per_day": day_usd}),
            budget=LocalBudget(budget_usd=day_usd),
        )
        assert ports.batches is not None
        runner = BatchRunner(
            ports, ports.batches, lambda job, _n: dispatched.append(job["job_id"]), policy
        )
        for _ in range(20):  # bounded: each run submits or follows what it can
            if not runner.run_once():
                return

    # six jobs, a day with room for four and a half: one batch of six would never fit;
    # two per batch (half a day each) do
    created = int(emulator.stats()["batches_created"])
    ports, estimate_usd = batched_jobs("sized-", 6)
    follow(ports, day_usd=estimate_usd * 4.5)
    assert sorted(dispatched) == [f"sized-{n}" for n in range(6)]
    assert int(emulator.stats()["batches_created"]) - created == 3

    # a single request dearer than the whole day: failed for good, never submitted
    created = int(emulator.stats()["batches_created"])
    ports, estimate_usd = batched_jobs("dear-", 1)
    follow(ports, day_usd=estimate_usd / 2)
    record = record_of(root, "dear-0")
    assert isinstance(record, ErrorRecord) and record.error.code == "quota_exhausted"
    assert int(emulator.stats()["batches_created"]) == created
