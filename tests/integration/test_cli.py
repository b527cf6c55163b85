"""`gvw` as an operator uses it: against the real stack, from a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, Stack, wait_until
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.integration


def gvw(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env if env is not None else os.environ.copy(),
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def test_submit_wait_prints_the_result(stack: Stack) -> None:
    scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=11)
    uri = stack.put(f"cli/{uuid.uuid4().hex}.png", scene.png_bytes())
    job_id = f"cli-{uuid.uuid4().hex[:8]}"
    done = gvw(
        "submit",
        "detect",
        uri,
        "--prompt",
        "the shapes",
        "--job-id",
        job_id,
        "--wait",
        "--json",
        "--timeout",
        "60",
        env=stack.env,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["job_id"] == job_id
    assert sorted(o["label"] for o in record["output"]["objects"]) == [
        "blue rectangle",
        "red circle",
    ]

    status = gvw("status", job_id, "--json", env=stack.env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "succeeded"

    result = gvw("result", job_id, "--json", env=stack.env)
    assert result.returncode == 0
    assert json.loads(result.stdout)["output"] == record["output"]


def test_submit_classify_with_labels(stack: Stack) -> None:
    uri = stack.put(
        f"cli/{uuid.uuid4().hex}.png", make_scene(400, 300, shapes=["green triangle"]).png_bytes()
    )
    done = gvw(
        "submit",
        "classify",
        uri,
        "--label",
        "triangle",
        "--label",
        "circle",
        "--wait",
        "--json",
        env=stack.env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"]["labels"] == ["triangle"]


def test_a_failed_job_exits_non_zero_with_one_line(stack: Stack) -> None:
    uri = stack.put(f"cli/{uuid.uuid4().hex}.png", b"not an image at all")
    done = gvw("submit", "caption", uri, "--wait", env=stack.env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "invalid_image" in done.stderr


def test_a_bad_job_is_refused_before_it_is_sent(stack: Stack) -> None:
    done = gvw("submit", "vqa", "s3://inbox/a.png", env=stack.env)  # vqa needs --prompt
    assert done.returncode == 1
    assert "prompt" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_unknown_job_has_no_result(stack: Stack) -> None:
    done = gvw("result", "never-submitted", env=stack.env)
    assert done.returncode == 1
    assert "no result" in done.stderr
    status = gvw("status", "never-submitted", "--json", env=stack.env)
    assert json.loads(status.stdout)["status"] == "pending"


@pytest.mark.parametrize("command", ["submit", "status", "result", "worker", "demo", "emulator"])
def test_every_command_explains_itself(command: str) -> None:
    done = gvw(command, "--help")
    assert done.returncode == 0
    assert "usage: gvw" in done.stdout


def test_demo_runs_every_task_with_no_services(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GVW_", "GEMINI_", "CELERY_"))}
    # unreachable on purpose: the demo must not need Redis or a broker
    env["CELERY_BROKER_URL"] = "redis://127.0.0.1:1/0"
    env["GVW_REDIS_URL"] = "redis://127.0.0.1:1/1"
    done = gvw("demo", "--dir", str(tmp_path / "demo"), env=env, cwd=tmp_path, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 succeeded, 0 failed" in done.stdout
    results = sorted((tmp_path / "demo" / "results").glob("*/result.json"))
    assert len(results) == 9
    overlays = list((tmp_path / "demo" / "results").glob("*/attempts/*/overlay.png"))
    assert len(overlays) == 3
    masks = list((tmp_path / "demo" / "results").glob("*-segment/attempts/*/masks/*.png"))
    assert len(masks) == 3
    # progress and results for the person running it; the worker's lines go to a file
    output = done.stdout + done.stderr
    assert '"level"' not in output and "celery.worker" not in output, output[:2000]
    assert len(output.splitlines()) < 40, output
    log = tmp_path / "demo" / "worker.log"
    assert "worker log: " in done.stdout and "worker.log" in done.stdout
    assert "worker process warmed up" in log.read_text()
    assert "left" in done.stderr or "done in" in done.stderr  # rate and time left


def test_version_names_the_installed_release() -> None:
    from importlib.metadata import version

    done = gvw("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gvw {version('gemini-vision-worker')}"


def test_worker_loglevel_flag_wins_over_the_environment(stack: Stack, tmp_path: Path) -> None:
    """`gvw worker --loglevel WARNING` with GVW_LOG_LEVEL=INFO prints no INFO line; without
    the flag, GVW_LOG_LEVEL decides. Logs are readable text unless GVW_LOG_FORMAT=json."""
    from celery import Celery

    producer = Celery("probe", broker=stack.env["CELERY_BROKER_URL"], set_as_current=False)
    logs = {}
    for name, flag in (("flag", ["--loglevel", "WARNING"]), ("env", [])):
        env = {**stack.env, "GVW_LOG_LEVEL": "INFO", "GVW_LOG_FORMAT": "text"}
        log_path = tmp_path / f"{name}.log"
        with log_path.open("w") as handle:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker.cli",
                    "worker",
                    "--concurrency",
                    "1",
                    "--hostname",
                    f"{name}-{uuid.uuid4().hex[:6]}@%h",
                    *flag,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: len(producer.control.ping(timeout=1)) >= 2,  # the stack's and this one
                timeout_s=60,
                what=f"the {name} worker",
            )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        logs[name] = log_path.read_text()
    assert " INFO " not in logs["flag"], logs["flag"][:2000]
    assert " INFO " in logs["env"]
    assert not any(line.startswith("{") for line in logs["env"].splitlines())
