"""`gvw enqueue-prefix` over a whole prefix, and a rerun that skips what is done."""

from __future__ import annotations

import io
import json
import re
import shlex
import uuid

import pytest
from PIL import Image

from tests.harness import Stack, list_job_keys
from tests.integration.test_cli import gvw
from worker.producers.bulk import deterministic_job_id

pytestmark = pytest.mark.integration


def tiny_png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), ((index * 37) % 256, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_enqueue_prefix_over_200_objects_then_rerun_skips_them(stack: Stack) -> None:
    prefix = f"bulk-{uuid.uuid4().hex[:8]}"
    for index in range(200):
        stack.put(f"{prefix}/batch {index // 50}/img+{index:03d}.png", tiny_png(index))
    for index in range(5):
        stack.put(f"{prefix}/notes-{index}.txt", b"not an image")
    calls_before = stack.model_calls()

    first = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/",
        "--task",
        "caption",
        "--suffix",
        ".png,.jpg",
        "--wait",
        "--timeout",
        "240",
        env=stack.env,
        timeout_s=300,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert "listed 200, submitted 200, skipped as done 0" in first.stdout
    assert "succeeded 200, failed 0" in first.stdout
    assert stack.model_calls() - calls_before == 200

    second = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/",
        "--task",
        "caption",
        "--suffix",
        ".png,.jpg",
        "--wait",
        env=stack.env,
        timeout_s=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert "listed 200, submitted 0, skipped as done 200" in second.stdout
    assert stack.model_calls() - calls_before == 200  # nothing paid twice

    # other options are other jobs
    third = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/batch 0/",
        "--task",
        "vqa",
        "--prompt",
        "What colour is it?",
        env=stack.env,
        timeout_s=300,
    )
    assert "listed 50, submitted 50" in third.stdout


def test_ids_are_deterministic_and_valid() -> None:
    from worker.contract.jobs import JOB_ID_PATTERN
    from worker.producers.bulk import deterministic_job_id

    template = {"task": "caption"}
    a = deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag1"', template)
    assert a == deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag1"', template)
    assert a != deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag2"', template)
    assert a != deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag1"', {"task": "detect"})
    assert re.match(JOB_ID_PATTERN, a)
    assert re.match(JOB_ID_PATTERN, deterministic_job_id("s3://inbox/" + "é" * 300, "e", template))


def test_a_dry_run_counts_and_prices_a_prefix_without_submitting(stack: Stack) -> None:
    prefix = f"dry-{uuid.uuid4().hex[:8]}"
    for index in range(30):
        buffer = io.BytesIO()
        # 960x540: 6 tiles of 258 tokens on 2.5 (the guide's example)
        Image.new("RGB", (960, 540), (index, 90, 200)).save(buffer, format="JPEG")
        stack.put(f"{prefix}/{index:03d}.jpg", buffer.getvalue())
    stack.put(f"{prefix}/readme.txt", b"not an image")

    dry = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/",
        "--task",
        "caption",
        "--suffix",
        ".jpg",
        "--options",
        '{"thinking_budget": 0, "max_output_tokens": 200}',
        "--dry-run",
        "--sample",
        "10",
        env=stack.env,
        timeout_s=120,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "30 images" in dry.stdout and "nothing was submitted" in dry.stdout
    assert "1,548 image tokens a job, from the headers of 10 sampled objects" in dry.stdout
    # 30 x (1,548 + 41 text) in, 30 x 200 out at gemini-2.5-flash ($0.30 / $2.50 per 1M):
    # the text is the caption request's own (what the worker's budget reserves for it), no
    # longer a flat 600-character guess (which made this $0.0303)
    cost = re.search(r"cost: at most \$([\d.]+) interactive, \$([\d.]+) through", dry.stdout)
    assert cost is not None, dry.stdout
    interactive, batch = float(cost.group(1)), float(cost.group(2))
    assert interactive == pytest.approx(0.0293, abs=0.0005)
    assert batch == pytest.approx(interactive / 2, abs=0.0001)
    # nothing of this prefix was sent: no message names it, queued or taken, and none of
    # the jobs a real run would send has a record
    broker = stack.redis.client()
    messages = broker.lrange("vision", 0, -1) + list(broker.hvals("unacked"))
    assert not [m for m in messages if prefix.encode() in m]
    template = {"task": "caption", "options": {"thinking_budget": 0, "max_output_tokens": 200}}
    for index in range(30):
        key = f"{prefix}/{index:03d}.jpg"
        etag = stack.s3.head_object(Bucket="inbox", Key=key)["ETag"]
        job_id = deterministic_job_id(f"s3://inbox/{key}", etag, template)
        assert not list_job_keys(stack.s3, job_id), job_id


def test_a_rerun_after_an_interruption_sends_only_what_is_missing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.producers.bulk import RedisSentLog, enqueue_prefix, run_key
    from worker.producers.client import VisionClient
    from worker.settings import Settings
    from worker.storage import StoreRouter

    prefix = f"resume-{uuid.uuid4().hex[:8]}"
    for index in range(120):
        stack.put(f"{prefix}/{index:03d}.png", tiny_png(index))
    # a broker database no worker reads: what the runs send stays there to be counted
    settings = Settings(
        celery_broker_url=f"{stack.redis.url}/7",
        gvw_redis_url=f"{stack.redis.url}/1",
        gvw_results_uri="s3://results/vision",
    )
    stores = StoreRouter()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stack.env["AWS_ENDPOINT_URL_S3"])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, stack.env[name])
    # what other tests of the session left queued there is not this run's
    stack.redis.client(db=7).delete("vision")
    template = {"task": "caption"}
    uri_prefix = f"s3://inbox/{prefix}/"
    sent = RedisSentLog(stack.redis.client(db=1), run_key(uri_prefix, template), ttl_s=3600)
    client = VisionClient(settings=settings, stores=stores)
    real_submit_many = client.submit_many
    groups = []

    def dies_after_one_group(jobs: list[dict[str, object]]) -> list[str]:
        if groups:
            raise KeyboardInterrupt  # Ctrl-C during the second group
        groups.append(len(jobs))
        return real_submit_many(jobs)

    monkeypatch.setattr(client, "submit_many", dies_after_one_group)
    with pytest.raises(KeyboardInterrupt):
        enqueue_prefix(client, stores.list_objects(uri_prefix), template, sent=sent, group_size=50)
    monkeypatch.setattr(client, "submit_many", real_submit_many)
    again = enqueue_prefix(
        client, stores.list_objects(uri_prefix), template, sent=sent, group_size=50
    )

    assert groups == [50]
    assert (again.listed, len(again.submitted), again.skipped_queued) == (120, 70, 50)
    broker = stack.redis.client(db=7)
    queued = [json.loads(m)["headers"]["id"] for m in broker.lrange("vision", 0, -1)]
    assert len(queued) == len(set(queued)) == 120  # every object once, none twice
    broker.delete("vision")


def jpeg(width: int, height: int, shade: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 90, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        pytest.param(["--task", "captoin"], "unknown task 'captoin'", id="typo-task"),
        pytest.param(["--task", "classify"], "labels", id="classify-without-labels"),
        pytest.param(
            ["--task", "caption", "--options", '{"bogus": 1}'],
            "options.bogus: unknown field",
            id="unknown-option",
        ),
        pytest.param(["--task", "compare"], "compare", id="one-image-compare"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-run"])
def test_a_job_the_workers_would_refuse_is_refused_before_the_prefix_is_listed(
    stack: Stack, flags: list[str], says: str, dry_run: bool
) -> None:
    # an allowed bucket that does not exist: listing it would fail; the job is refused first
    env = {**stack.env, "GVW_ALLOWED_INPUTS": "s3://inbox/,s3://no-such-bucket-at-all/"}
    done = gvw(
        "enqueue-prefix",
        "s3://no-such-bucket-at-all/x/",
        *flags,
        *(["--dry-run"] if dry_run else []),
        env=env,
        timeout_s=60,
    )
    assert done.returncode == 1, done.stdout
    assert "invalid_job" in done.stderr and says in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "dry run" not in done.stdout and "listed" not in done.stdout


def test_a_prefix_outside_the_allowed_inputs_is_refused_before_listing(stack: Stack) -> None:
    for dry in (["--dry-run"], []):
        done = gvw(
            "enqueue-prefix", "s3://other/anything/", "--task", "caption", *dry, env=stack.env
        )
        assert done.returncode == 1
        assert "input_not_allowed" in done.stderr and "GVW_ALLOWED_INPUTS" in done.stderr


def test_a_dry_run_counts_only_what_the_real_run_would_send(stack: Stack) -> None:
    prefix = f"mixed-{uuid.uuid4().hex[:8]}"
    for index in range(4):
        stack.put(f"{prefix}/{index}.jpg", jpeg(960, 540, index))
    stack.put(f"{prefix}/notes.txt", b"not an image")
    stack.put(f"{prefix}/results/old-job/result.json", b"{}")  # a results folder inside
    stack.put(f"{prefix}/bad/../x.jpg", jpeg(64, 64))  # a key no job may name
    run = ["enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption"]
    run += ["--output", f"s3://inbox/{prefix}/results"]
    dry = gvw(*run, "--dry-run", env=stack.env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 4 images" in dry.stdout, dry.stdout
    assert "1,548 image tokens a job, from the headers of 4 sampled objects)" in dry.stdout
    assert "left out 1 objects whose keys no job may name" in dry.stderr

    real = gvw(*run, "--wait", env=stack.env)
    assert real.returncode == 0, real.stdout + real.stderr
    assert "listed 4, submitted 4" in real.stdout and "succeeded 4, failed 0" in real.stdout
    again = gvw(*run, "--dry-run", env=stack.env)
    assert "dry run: 0 images" in again.stdout and "(4 more are done already)" in again.stdout


def test_the_readme_dry_run_example_prints_what_the_command_prints(stack: Stack) -> None:
    from tests.integration.test_readme_for_real import README

    text = README.read_text()
    example = text[text.index("$ gvw enqueue-prefix s3://inbox/catalogue/") :]
    example = example[: example.index("```")]
    command = example.split("\n$")[0].replace("\\\n", " ").removeprefix("$ ")
    words = shlex.split(command.splitlines()[0])
    readme_out = re.search(r"\(([\d,]+) image tokens a job.*\(([\d,]+) a job, output", example)
    assert readme_out is not None, example
    readme_cost = re.search(r"\$([\d.,]+) interactive, \$([\d.,]+) through", example)
    readme_jobs = re.search(r"dry run: ([\d,]+) images", example)
    assert readme_cost is not None and readme_jobs is not None

    prefix = f"readme-{uuid.uuid4().hex[:8]}"
    for index in range(3):
        stack.put(f"{prefix}/{index}.jpg", jpeg(1200, 900, index))
    words[2] = f"s3://inbox/{prefix}/"
    done = gvw(*words[1:], env=stack.env)
    assert done.returncode == 0, done.stderr
    ours = re.search(r"\(([\d,]+) image tokens a job.*\(([\d,]+) a job, output", done.stdout)
    assert ours is not None, done.stdout
    assert ours.groups() == readme_out.groups(), (done.stdout, example)
    # the README's cost is its token counts at the shipped prices
    from worker.prices import load_prices

    tokens = re.search(r"about ([\d,]+) in .* at most ([\d,]+) out", example)
    assert tokens is not None, example
    tokens_in, tokens_out = (int(t.replace(",", "")) for t in tokens.groups())
    price = load_prices(None).price_of("gemini-2.5-flash")
    assert price is not None
    usd = (tokens_in * price.input_usd + tokens_out * price.output_usd) / 1e6
    interactive, batch = (float(x.replace(",", "")) for x in readme_cost.groups())
    assert interactive == pytest.approx(usd, abs=0.01)
    assert batch == pytest.approx(interactive / 2, abs=0.01)
    jobs = int(readme_jobs.group(1).replace(",", ""))
    assert jobs * int(ours.group(2).replace(",", "")) == tokens_out
