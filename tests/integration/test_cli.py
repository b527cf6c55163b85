"""`gvw` as an operator uses it: against the real stack, from a subprocess."""

from __future__ import annotations

import json
import os
import re
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
    assert json.loads(status.stdout)["status"] == "unknown"
    assert status.returncode == 3  # its own exit code: not "queued", not a failure
    assert status.stderr.startswith("gvw: no job never-submitted")


def test_status_tells_a_queued_job_from_an_unknown_one(stack: Stack, tmp_path: Path) -> None:
    # a broker database no worker reads: what is sent there stays queued
    env = {**stack.env, "CELERY_BROKER_URL": f"{stack.redis.url}/7"}
    job_id = f"queued-{uuid.uuid4().hex[:8]}"
    sent = gvw("submit", "caption", "s3://inbox/a.png", "--job-id", job_id, env=env)
    assert sent.returncode == 0, sent.stderr
    status = gvw("status", job_id, "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "queued"
    # submitting never touched the result backend (down here), only the broker
    env_no_backend = {**env, "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/0"}
    again = gvw("submit", "caption", "s3://inbox/a.png", env=env_no_backend)
    assert again.returncode == 0, again.stderr
    stack.redis.client(db=7).delete("vision")  # the session's other tests use that database


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        pytest.param("http://example.com/a.jpg", "only s3:// and file://", id="http"),
        pytest.param("inbox/a.jpg", "only s3:// and file://", id="no-scheme"),
        pytest.param("s3:/inbox/a.jpg", "only s3:// and file://", id="one-slash"),
        pytest.param("s3:/x", "at least 6 characters", id="too-short"),
        pytest.param("s3://inbox", "no object key", id="bucket-only"),
    ],
)
def test_uris_the_worker_would_refuse_are_refused_at_submit(
    stack: Stack, uri: str, reason: str
) -> None:
    done = gvw("submit", "caption", uri, env=stack.env)
    assert done.returncode == 1
    assert reason in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_an_output_the_worker_would_refuse_is_refused_at_submit(stack: Stack) -> None:
    done = gvw("submit", "caption", "s3://inbox/a.png", "--output", "http://x/", env=stack.env)
    assert done.returncode == 1
    assert "only s3:// and file://" in done.stderr


def test_a_dead_broker_fails_fast_with_one_line_naming_it(stack: Stack) -> None:
    import time

    env = {**stack.env, "CELERY_BROKER_URL": "redis://:hunter2@127.0.0.1:1/0"}
    started = time.monotonic()
    done = gvw("submit", "caption", "s3://inbox/a.png", env=env, timeout_s=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 15
    assert "cannot reach the broker at redis://:**@127.0.0.1:1/0" in done.stderr
    assert "hunter2" not in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_a_worker_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GVW_", "GEMINI_", "GOOGLE_"))}
    env["CELERY_BROKER_URL"] = "redis://127.0.0.1:1/0"
    done = gvw("worker", "--concurrency", "1", env=env, cwd=tmp_path, timeout_s=60)
    assert done.returncode == 2
    assert "gvw worker: no Gemini API key" in done.stderr


def test_doctor_passes_on_a_ready_deployment(stack: Stack) -> None:
    done = gvw("doctor", env=stack.env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("broker", "redis", "clock", "results", "inputs", "gemini"):
        assert any(line.startswith("ok") and f" {name} " in line for line in lines), (name, lines)
    assert any("key accepted, model gemini-2.5-flash known" in line for line in lines)
    # the test Redis keeps nothing on disk: reported, not a failure
    assert any(line.startswith("warn") and "persistence" in line for line in lines)


def test_doctor_says_what_to_fix(stack: Stack) -> None:
    env = {
        **stack.env,
        "GVW_REDIS_URL": "redis://127.0.0.1:1/1",
        "GVW_RESULTS_URI": "s3://no-such-bucket/vision",
        "GVW_ALLOWED_INPUTS": "s3://inbox/,s3://no-such-bucket-either/",
        "GEMINI_API_KEY": "wrong-key",
    }
    done = gvw("doctor", env=env)
    assert done.returncode == 1
    failed = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith("FAIL")}
    assert set(failed) == {"redis", "results", "inputs", "gemini"}, done.stdout
    assert "fix GVW_REDIS_URL" in failed["redis"]
    assert "GVW_RESULTS_URI" in failed["results"]
    assert "no-such-bucket-either" in failed["inputs"]
    assert "API key was refused" in failed["gemini"]
    unknown_model = gvw("doctor", env={**stack.env, "GVW_MODEL": "imagined-model-9"})
    assert unknown_model.returncode == 1
    assert "model 'imagined-model-9' is unknown here" in unknown_model.stdout


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
    assert "10 succeeded, 0 failed" in done.stdout
    results = sorted((tmp_path / "demo" / "results").glob("*/result.json"))
    assert len(results) == 10
    # one job goes through the Gemini Batch API (the emulator's), at the batch price
    (batched,) = [json.loads(p.read_text()) for p in results if p.parent.name.endswith("-batch")]
    assert batched["mode"] == "batch" and batched["status"] == "succeeded"
    assert "circle" in batched["output"]["text"] and batched["usage"]["cost_usd"] > 0
    overlays = list((tmp_path / "demo" / "results").glob("*/attempts/*/overlay.*"))  # jpg: photos
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


# --- errors that name what is wrong, and the CLI's own gaps -----------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GVW_", "GEMINI_", "CELERY_"))}
    # nothing listens here: each command must stop at its argument or setting, first
    env["CELERY_BROKER_URL"] = "redis://127.0.0.1:1/0"
    env["GVW_REDIS_URL"] = "redis://127.0.0.1:1/1"
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        pytest.param("GVW_MAX_DELIVERIES", "five", "a whole number >= 1", id="not-a-number"),
        pytest.param("GVW_TRANSPORT", "s3url", "one of auto, inline, file_api, url", id="choice"),
        pytest.param("GVW_RETRY_BASE_S", "-1", "a number > 0", id="out-of-range"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["doctor"], id="doctor"),
        pytest.param(["worker", "--concurrency", "1"], id="worker"),
        pytest.param(["submit", "caption", "s3://inbox/a.png"], id="submit"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable_its_value_and_what_is_allowed(
    command: list[str], variable: str, value: str, says: str, tmp_path: Path
) -> None:
    done = gvw(*command, env=_clean_env(**{variable: value}), cwd=tmp_path, timeout_s=60)
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert line.count("\n") == 0, line
    assert f"{variable}={value!r}" in line and says in line, line
    assert "ValidationError" not in line and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        pytest.param(["--schema", "{bad"], "--schema: its value is not valid JSON", id="schema"),
        pytest.param(["--schema", "@/no/such.json"], "--schema: cannot read", id="schema-file"),
        pytest.param(["--options", "{bad"], "--options: its value is not valid JSON", id="options"),
        pytest.param(["--options", "[1]"], "--options: expected a JSON object", id="options-list"),
    ],
)
def test_a_bad_json_flag_is_one_line_naming_the_flag(flags: list[str], says: str) -> None:
    done = gvw("submit", "custom", "s3://inbox/a.png", "--prompt", "x", *flags, env=_clean_env())
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and says in done.stderr, done.stderr
    assert "JSONDecodeError" not in done.stderr


def test_submit_takes_options_and_batch_mode_and_refuses_unknown_options() -> None:
    # refused before the broker (which is down here) with the worker's own message
    done = gvw(
        "submit", "caption", "s3://inbox/a.png", "--options", '{"bogus": 1}', env=_clean_env()
    )
    assert done.returncode == 1 and "options.bogus: unknown field" in done.stderr, done.stderr
    sent = gvw(
        "submit", "caption", "s3://inbox/a.png", "--options", '{"max_items": 3}', "--batch",
        env=_clean_env(),
    )  # fmt: skip
    assert "cannot reach the broker" in sent.stderr, sent.stderr  # valid: it tried to send


def test_every_flag_has_help_and_the_exit_statuses_are_documented() -> None:
    import argparse

    from worker.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and (
                not action.help
            ):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "gvw")
    assert missing == [], missing
    usage = gvw("--help").stdout
    for status in ("0  success", "1  ", "2  usage", "3  `gvw status`"):
        assert status in usage, usage


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_worker_needs_a_positive_concurrency(value: str) -> None:
    done = gvw("worker", "--concurrency", value, env=_clean_env())
    assert done.returncode == 2 and "--concurrency" in done.stderr


def test_both_emulator_entry_points_take_the_same_flags() -> None:
    def flags(*command: str) -> set[str]:
        text = subprocess.run(
            [sys.executable, *command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        return set(re.findall(r"--[a-z][a-z0-9-]+", text)) - {"--help"}

    via_gvw = flags("-m", "worker.cli", "emulator")
    via_module = flags("-m", "worker.emulator")
    assert via_gvw == via_module
    assert {"--host", "--port", "--api-key", "--latency-ms"} <= via_gvw


def test_result_shows_the_status_answer_artifacts_cost_and_warnings(stack: Stack) -> None:
    scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=21)
    uri = stack.put(f"cli/{uuid.uuid4().hex}.png", scene.png_bytes())
    job_id = f"res-{uuid.uuid4().hex[:8]}"
    done = gvw(
        "submit", "segment", uri, "--prompt", "the shapes", "--job-id", job_id, "--wait",
        env=stack.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = gvw("result", job_id, env=stack.env)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert first.startswith(f"{job_id}: succeeded (segment, ") and "$" in first, first
    assert "2 objects:" in shown.stdout
    assert shown.stdout.count("mask s3://results/vision/") == 2
    assert f"overlay: s3://results/vision/{job_id}/attempts/" in shown.stdout


def test_a_failed_wait_prints_its_error_once(stack: Stack) -> None:
    uri = stack.put(f"cli/{uuid.uuid4().hex}.png", b"not an image at all")
    done = gvw("submit", "caption", uri, "--wait", env=stack.env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("invalid_image") == 1
