"""A worker process does its one-off set-up before its first job, without the network."""

from __future__ import annotations

import logging
import socket

import pytest

from worker import runtime
from worker.gemini import GeminiGateway
from worker.queue.app import _pool_runs_jobs_here
from worker.settings import Settings


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_gemini_warm_up_needs_no_server() -> None:
    # nothing listens on the port: a warm-up that called the network would raise
    gateway = GeminiGateway(api_key="k", base_url=f"http://127.0.0.1:{closed_port()}", timeout_s=1)
    gateway.warm_up()


def test_warm_up_builds_the_s3_client_only_when_s3_is_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = Settings(
        gemini_api_key="k",
        gvw_allowed_inputs="file:///tmp/",
        gvw_allowed_outputs="file:///tmp/",
        gvw_results_uri="file:///tmp/gvw-warm-up",
    )
    ports = runtime.build_ports(local, local=True)
    with caplog.at_level(logging.INFO, logger="worker.runtime"):
        assert runtime.warm_up(ports) >= 0
    assert ports.stores._s3 is None  # a files-only worker never loads boto3's client
    assert any(r.getMessage() == "worker process warmed up" for r in caplog.records)

    s3 = Settings(gemini_api_key="k", gvw_allowed_inputs="s3://inbox/")
    ports = runtime.build_ports(s3, local=True)
    runtime.warm_up(ports)
    assert ports.stores._s3 is not None


def test_a_failing_warm_up_step_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(gemini_api_key="k", gvw_allowed_inputs="file:///tmp/")
    ports = runtime.build_ports(settings, local=True)

    def broken() -> None:
        raise RuntimeError("SDK internals moved")

    monkeypatch.setattr(ports.gemini, "warm_up", broken)
    with caplog.at_level(logging.WARNING, logger="worker.runtime"):
        runtime.warm_up(ports)
    assert any("gemini types" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("pool", "warm_in_main_process"),
    [
        ("threads", True),
        ("prefork", False),
        ("processes", False),
        ("solo", False),
        (None, False),
        ("no.such:Pool", False),
    ],
)
def test_the_main_process_is_warmed_only_where_it_runs_jobs(
    pool: str | None, warm_in_main_process: bool
) -> None:
    # prefork children and the solo pool are warmed by worker_process_init instead
    assert _pool_runs_jobs_here(pool) is warm_in_main_process
