"""Fixtures for integration tests: moto's S3 server over real HTTP on loopback.

One server per test session (`moto_s3_endpoint`); each test gets boto3's environment
pointed at it (`s3_env`) and a bucket of its own (`s3_bucket`), so tests never see each
other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# AWS settings that would leak the developer's own account or config into a test
_FOREIGN_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
)


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto server running in a thread of this process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point boto3 (through its own environment variables) at the moto server."""
    for name in _FOREIGN_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_s3_endpoint


@pytest.fixture(scope="session")
def moto_s3_client(moto_s3_endpoint: str) -> Any:
    """A plain boto3 S3 client on the moto server, for arranging and inspecting objects
    (the code under test builds its own, from `s3_env`)."""
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=moto_s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_bucket(s3_env: str, moto_s3_client: Any) -> str:
    """A new, empty bucket on the moto server."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    moto_s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """redis-server, moto's S3 server, the Gemini emulator and one `celery worker`
    subprocess (thread pool), shared by the tests of a session."""
    from tests.harness import free_port, running_stack

    env = {"GVW_METRICS_PORT": str(free_port())}
    with running_stack(tmp_path_factory.mktemp("stack"), extra_env=env) as running:
        yield running
