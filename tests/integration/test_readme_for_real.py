"""README.md's "Running it for real", word for word, as a new user runs it.

The section's variables (read from the README itself, with the hosts swapped for a local
redis-server, moto's S3 server and the emulator), `gvw doctor`, a `gvw worker` process, then
every command and snippet the section shows. Then what a user hits next: a job id used
twice, a job whose record cannot be written, a producer and workers that disagree on the
results folder, and a wait that runs out of time: each ends in one clear line, within
seconds of what the fleet knows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness import (
    REPO_ROOT,
    MotoServer,
    RedisServer,
    free_port,
    start_moto,
    start_redis,
    wait_for_record,
    wait_until,
)
from worker.emulator.scenes import make_scene

# in one test process, where the module's one deployment is started once (tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("readme")]

README = REPO_ROOT / "README.md"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def readme_exports(block: str) -> dict[str, str]:
    """`export A=1 B=2   # comment` lines, as the shell would read them."""
    found: dict[str, str] = {}
    for line in block.splitlines():
        if not line.startswith("export "):
            continue
        words = shlex.split(line, comments=True)[1:]
        for word in words:
            name, _, value = word.partition("=")
            found[name] = value
    return found


def readme_commands(block: str) -> list[list[str]]:
    """The `gvw ...` command lines of a block, comments dropped."""
    return [
        shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("gvw ")
    ]


@dataclass
class ReadmeDeployment:
    env: dict[str, str]
    redis: RedisServer
    moto: MotoServer
    emulator: Any
    worker: subprocess.Popen[str]
    worker_log: Path
    s3: Any

    def gvw(
        self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=env or self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """``code`` run by a producer's Python, with the deployment's variables."""
        return subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def put_scene(self, key: str, shapes: list[str], *, jpeg: bool = False) -> str:
        scene = make_scene(480, 360, shapes=shapes, seed=len(key))
        data = scene.jpeg_bytes() if jpeg else scene.png_bytes()
        self.s3.put_object(Bucket="inbox", Key=key, Body=data)
        return f"s3://inbox/{key}"


def _deployment_env(
    redis_server: RedisServer, moto: MotoServer, emulator_url: str
) -> dict[str, str]:
    block = code_blocks(readme_section("Running it for real"), "sh")[0]
    exports = readme_exports(block)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GVW_", "GEMINI_", "GOOGLE_", "AWS_", "CELERY_"))
    }
    for name, value in exports.items():
        value = value.replace("redis:6379", f"127.0.0.1:{redis_server.port}")
        value = value.replace("http://minio:9000", moto.endpoint)
        env[name] = value
    # the README's choice for a machine without a key: the emulator instead of Google
    assert "GEMINI_BASE_URL=http://127.0.0.1:8765" in block
    del env["GEMINI_API_KEY"]
    env["GEMINI_BASE_URL"] = emulator_url
    # the store's keys: moto's (the README's placeholders are "...")
    env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = "testing"
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeDeployment]:
    from worker.emulator.server import EmulatorServer

    tmp = tmp_path_factory.mktemp("readme")
    redis_server = start_redis(tmp)
    moto = start_moto()
    emulator = EmulatorServer()  # no key required: the README's emulator line sets none
    emulator.start()
    worker: subprocess.Popen[str] | None = None
    try:
        s3 = moto.s3()
        for bucket in ("inbox", "results"):
            s3.create_bucket(Bucket=bucket)
        env = _deployment_env(redis_server, moto, emulator.base_url)
        setup = code_blocks(readme_section("Running it for real"), "sh")[0]
        commands = readme_commands(setup)
        assert [c[:2] for c in commands] == [
            ["gvw", "--version"],
            ["gvw", "doctor"],
            ["gvw", "worker"],
        ]
        log_path = tmp / "worker.log"
        with log_path.open("w") as handle:
            worker = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", *commands[2][1:]],
                env=env,
                cwd=REPO_ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        wait_until(
            lambda: " ready." in log_path.read_text() or worker.poll() is not None,
            timeout_s=60,
            what="gvw worker",
            interval_s=0.1,
        )
        assert worker.poll() is None, log_path.read_text()[-3000:]
        yield ReadmeDeployment(env, redis_server, moto, emulator, worker, log_path, s3)
    finally:
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, 15)
            worker.wait(timeout=30)
        emulator.stop()
        moto.stop()
        redis_server.stop()


def _task_state_keys(job_id: str, servers: list[tuple[str, int]]) -> list[str]:
    """Celery task-state keys of a job in every Redis database the test can reach."""
    found = []
    for host, port in servers:
        for db in range(16):
            client = redis.Redis(host=host, port=port, db=db, socket_connect_timeout=1)
            try:
                if client.exists(f"celery-task-meta-{job_id}"):
                    found.append(f"{host}:{port}/{db}")
            except redis.RedisError:
                break  # nothing listens there: nothing was written there
    return found


def test_the_readme_deployment_is_ready_and_runs_every_readme_command(
    deployment: ReadmeDeployment,
) -> None:
    version = deployment.gvw("--version")
    assert version.returncode == 0 and version.stdout.startswith("gvw "), version.stderr
    doctor = deployment.gvw("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert any(line.startswith("ok") and " backend " in line and "none" in line for line in lines)
    # no key is set: the emulator answered without one, and doctor says so
    assert not any("key accepted" in line for line in lines), lines
    assert any("no API key set" in line for line in lines), lines

    deployment.put_scene("photos/a.jpg", ["red circle", "blue rectangle"], jpeg=True)
    deployment.put_scene("a.jpg", ["green triangle"], jpeg=True)
    for key in ("2026/one.jpg", "2026/two.png"):
        deployment.put_scene(key, ["yellow rectangle"], jpeg=key.endswith(".jpg"))

    block = code_blocks(readme_section("Running it for real"), "sh")[1]
    for command in readme_commands(block):
        if command[1] == "result":  # a user reads the result once the job is done
            wait_for_record(deployment.s3, command[2], timeout_s=60)
        done = deployment.gvw(*command[1:])
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert done.stderr.count("Traceback") == 0, done.stderr

    # every snippet, with the README's host names swapped for the local servers
    for snippet in code_blocks(readme_section("Running it for real"), "python"):
        code = snippet.replace("redis://redis:6379", deployment.env["CELERY_BROKER_URL"][:-2])
        ran = subprocess.run(
            [sys.executable, "-c", code + "\nprint('snippet done')"],
            env=deployment.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert ran.returncode == 0 and "snippet done" in ran.stdout, ran.stderr[-2000:]
    caption = wait_for_record(deployment.s3, "a-0002", timeout_s=60)
    assert caption["status"] == "succeeded", caption


def test_no_result_backend_is_needed_or_written_to(deployment: ReadmeDeployment) -> None:
    uri = deployment.put_scene(f"nb/{uuid.uuid4().hex}.png", ["red circle"])
    job_id = f"nb-{uuid.uuid4().hex[:8]}"
    done = deployment.gvw("submit", "caption", uri, "--job-id", job_id, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "red circle" in done.stdout
    # no task state in the deployment's Redis, nor in a Redis the default would have used
    servers = [("127.0.0.1", deployment.redis.port), ("127.0.0.1", 6379)]
    assert _task_state_keys(job_id, servers) == []


def test_doctor_checks_a_result_backend_it_is_given(deployment: ReadmeDeployment) -> None:
    env = {**deployment.env, "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{free_port()}/0"}
    done = deployment.gvw("doctor", env=env)
    assert done.returncode == 1, done.stdout
    (line,) = [line for line in done.stdout.splitlines() if " backend " in line]
    assert line.startswith("FAIL") and "CELERY_RESULT_BACKEND" in line


def test_a_reused_job_id_is_reported_to_its_producer_never_answered_with_another_jobs_record(
    deployment: ReadmeDeployment,
) -> None:
    first = deployment.put_scene(f"reuse/{uuid.uuid4().hex}.png", ["red circle"])
    second = deployment.put_scene(f"reuse/{uuid.uuid4().hex}.png", ["blue rectangle"])
    job_id = f"reuse-{uuid.uuid4().hex[:8]}"
    classify = deployment.gvw(
        "submit", "classify", first, "--label", "circle", "--label", "square",
        "--job-id", job_id, "--wait", "--timeout", "60",
    )  # fmt: skip
    assert classify.returncode == 0, classify.stderr
    keys_before = sorted(
        o["Key"]
        for o in deployment.s3.list_objects_v2(Bucket="results", Prefix=f"vision/{job_id}/")[
            "Contents"
        ]
    )

    started = time.monotonic()
    caption = deployment.gvw(
        "submit", "caption", second, "--job-id", job_id, "--wait", "--timeout", "60"
    )
    assert caption.returncode == 1
    assert time.monotonic() - started < 20  # not the whole timeout
    assert "invalid_job: job_id already used by a different job" in caption.stderr
    assert caption.stderr.strip().count("\n") == 0
    assert "circle" not in caption.stdout  # never the first job's answer

    # the refusal is where an operator looks, and the first job's folder is untouched
    wait_until(
        lambda: "refused=1" in deployment.gvw("status", job_id).stdout,
        timeout_s=30,
        what="the refusal in gvw status",
    )
    status = deployment.gvw("status", job_id)
    assert "status=succeeded" in status.stdout  # the first job's, which it is
    letters = deployment.gvw("dead-letters", "list")
    (line,) = [line for line in letters.stdout.splitlines() if job_id in line]
    assert "invalid_job" in line and "refused" in line
    keys_after = sorted(
        o["Key"]
        for o in deployment.s3.list_objects_v2(Bucket="results", Prefix=f"vision/{job_id}/")[
            "Contents"
        ]
    )
    assert keys_after == keys_before

    # the Python client tells its own job from the other one, even in another process
    probe = textwrap.dedent(
        f"""
        from tasks.errors import JobIdConflict
        from worker.producers.client import VisionClient
        client = VisionClient()
        job = {{"task": "caption", "images": [{second!r}]}}
        try:
            client.wait({job_id!r}, timeout_s=30, job=job)
        except JobIdConflict as err:
            print("conflict:", err.code)
        print("status:", client.status({job_id!r}, job=job).error_code)
        """
    )
    ran = deployment.python(probe)
    assert "conflict: invalid_job" in ran.stdout, ran.stderr[-2000:]
    assert "status: invalid_job" in ran.stdout, ran.stderr[-2000:]


def test_a_job_whose_record_cannot_be_written_ends_the_wait_at_once(
    deployment: ReadmeDeployment,
) -> None:
    uri = deployment.put_scene(f"nw/{uuid.uuid4().hex}.png", ["red circle"])
    started = time.monotonic()
    done = deployment.gvw(
        "submit", "caption", uri, "--output", "s3://no-such-bucket/x", "--wait", "--timeout", "60"
    )
    assert done.returncode == 1
    assert time.monotonic() - started < 20, done.stderr
    assert "the bucket does not exist" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    job_id = done.stderr.split()[1].rstrip(":")
    status = deployment.gvw("status", job_id, "--output", "s3://no-such-bucket/x", "--json")
    assert status.returncode == 0, status.stderr
    assert '"status": "failed"' in status.stdout and "dead-letter" in status.stdout
    # the worker ended it cleanly: no "raised unexpected" traceback for the unwritable record
    assert "raised unexpected" not in deployment.worker_log.read_text()


def test_a_producer_reading_another_results_folder_is_told_so(
    deployment: ReadmeDeployment,
) -> None:
    uri = deployment.put_scene(f"rf/{uuid.uuid4().hex}.png", ["red circle"])
    env = {**deployment.env, "GVW_RESULTS_URI": "s3://results/elsewhere"}
    started = time.monotonic()
    done = deployment.gvw("submit", "caption", uri, "--wait", "--timeout", "60", env=env)
    assert done.returncode == 1
    assert time.monotonic() - started < 20, done.stderr
    assert "s3://results/vision/" in done.stderr and "GVW_RESULTS_URI" in done.stderr


def test_a_wait_that_runs_out_says_what_it_saw(deployment: ReadmeDeployment) -> None:
    uri = deployment.put_scene(f"to/{uuid.uuid4().hex}.png", ["red circle"])
    # a broker and a fleet Redis no worker uses: the job stays queued, nobody takes jobs
    base = deployment.env["CELERY_BROKER_URL"].rsplit("/", 1)[0]
    idle = {**deployment.env, "CELERY_BROKER_URL": f"{base}/5", "GVW_REDIS_URL": f"{base}/6"}
    done = deployment.gvw("submit", "caption", uri, "--wait", "--timeout", "2", env=idle)
    assert done.returncode == 1
    assert "still queued next in line on `vision`" in done.stderr, done.stderr
    assert "no worker has taken a job from `vision`" in done.stderr
    assert done.stderr.strip().count("\n") == 0

    # a job a worker holds: how long ago it was delivered
    deployment.emulator.configure(latency_ms=5000)
    try:
        slow = deployment.gvw("submit", "caption", uri, "--wait", "--timeout", "2")
    finally:
        deployment.emulator.configure(latency_ms=0)
    assert slow.returncode == 1
    assert re.search(r"delivered to a worker \d+ s ago", slow.stderr), slow.stderr


def test_the_client_checks_jobs_it_sent_together_and_reads_where_each_job_writes(
    deployment: ReadmeDeployment,
) -> None:
    probe = textwrap.dedent(
        f"""
        from tasks.errors import JobIdConflict
        from worker.producers.client import VisionClient
        client = VisionClient()
        first = {{"job_id": "{uuid.uuid4().hex[:8]}-m", "task": "caption",
                  "images": [{deployment.put_scene(f"m/{uuid.uuid4().hex}.png", ["red circle"])!r}]}}
        client.wait(client.submit(first), timeout_s=60)
        other = {{**first, "task": "vqa", "prompt": "How many shapes?"}}
        (job_id,) = client.submit_many([other])  # the same id, another job
        try:
            client.wait(job_id, timeout_s=30)
        except JobIdConflict as err:
            print("conflict:", err.code)
        # a job naming its own output: read there without being told again
        own = {{"task": "caption", "images": first["images"], "output": "s3://results/own"}}
        record = client.wait(client.submit(own), timeout_s=60)
        print("own:", record["status"])
        """
    )
    ran = deployment.python(probe)
    assert "conflict: invalid_job" in ran.stdout, ran.stderr[-2000:]
    assert "own: succeeded" in ran.stdout, ran.stderr[-2000:]
