"""Real processes on loopback for integration and reliability tests.

Each helper starts a real server (redis-server, moto's S3 server, a `celery worker`) on a
free 127.0.0.1 port, waits until it answers, and stops it (and its process group) at the
end. Every wait loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import redis

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def _stop_group(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout_s: float = 10
) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path
    # persist every write to an append-only file in `dir` (production's `appendonly yes`)
    appendonly: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def stop(self) -> None:
        _stop_group(self.proc)

    def restart(self, *, down_s: float = 0.0) -> None:
        """Kill this redis-server (SIGKILL: no goodbye to clients) and start a new one on
        the same port and data directory: empty, unless it runs with `appendonly`, in
        which case it loads every write the killed one acknowledged."""
        _stop_group(self.proc, signal.SIGKILL)
        time.sleep(down_s)
        self.proc = _spawn_redis(self.port, self.dir, appendonly=self.appendonly)
        wait_until(lambda: bool(self.client().ping()), timeout_s=10, what="redis-server restart")


def _spawn_redis(port: int, tmp_dir: Path, *, appendonly: bool = False) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            # fsync before acknowledging, so a SIGKILL loses nothing a client was told is
            # stored (production's `everysec` may lose the last second; tests must not flake)
            "--appendfsync",
            "always",
            "--dir",
            str(tmp_dir),
            "--maxmemory-policy",
            "noeviction",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_redis(tmp_dir: Path, *, appendonly: bool = False) -> RedisServer:
    port = free_port()
    server = RedisServer(
        port, _spawn_redis(port, tmp_dir, appendonly=appendonly), tmp_dir, appendonly
    )
    wait_until(lambda: bool(server.client().ping()), timeout_s=10, what="redis-server")
    return server


@dataclass
class MotoServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        _stop_group(self.proc)


def start_moto() -> MotoServer:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = MotoServer(port, proc)
    wait_until(lambda: server.s3().list_buckets() is not None, timeout_s=30, what="moto server")
    return server


@dataclass
class CeleryWorker:
    name: str
    proc: subprocess.Popen[str]
    log_path: Path
    _ready: threading.Event = field(default_factory=threading.Event)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop_group(self.proc, sig, timeout_s=20)

    def kill(self) -> None:
        _stop_group(self.proc, signal.SIGKILL)


def worker_env(
    *,
    redis_server: RedisServer,
    moto: MotoServer,
    gemini_base_url: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GVW_", "GEMINI_", "AWS_"))}
    env.update(moto.env())
    env.update(
        {
            "CELERY_BROKER_URL": f"{redis_server.url}/0",
            "CELERY_RESULT_BACKEND": f"{redis_server.url}/0",
            "GVW_REDIS_URL": f"{redis_server.url}/1",
            "GEMINI_BASE_URL": gemini_base_url,
            "GEMINI_API_KEY": "test-key",
            "GVW_RESULTS_URI": "s3://results/vision",
            "GVW_ALLOWED_INPUTS": "s3://inbox/",
            "GVW_RETRY_BASE_S": "0.5",
            "GVW_RETRY_MAX_S": "10",
            "GVW_SOFT_TIME_LIMIT_S": "60",
            "GVW_HARD_TIME_LIMIT_S": "70",
            "GVW_VISIBILITY_TIMEOUT_S": "120",
            "GVW_GEMINI_TIMEOUT_S": "30",
            # the tests read the workers' logs as JSON lines
            "GVW_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if extra:
        env.update(extra)
    return env


def start_worker(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str = "w1",
    pool: str = "threads",
    concurrency: int = 4,
) -> CeleryWorker:
    log_path = log_dir / f"worker-{name}.log"
    handle = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-Q",
            "vision",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    worker = CeleryWorker(name, proc, log_path)
    try:
        wait_until(
            lambda: " ready." in worker.log() or proc.poll() is not None,
            timeout_s=60,
            what=f"celery worker {name}",
            interval_s=0.1,
        )
    finally:
        handle.close()
    if proc.poll() is not None:
        raise RuntimeError(f"worker {name} exited early:\n{worker.log()[-4000:]}")
    return worker


# --- reading results from S3 -----------------------------------------------------------------


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return dict(json.loads(body))


def wait_for_record(
    s3: Any, job_id: str, *, bucket: str = "results", prefix: str = "vision", timeout_s: float = 60
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def done() -> bool:
        for name in ("result.json", "error.json"):
            record = read_json(s3, bucket, f"{prefix}/{job_id}/{name}")
            if record is not None:
                found.update(record)
                return True
        return False

    wait_until(done, timeout_s=timeout_s, what=f"a record for {job_id}", interval_s=0.2)
    return found


def list_job_keys(
    s3: Any, job_id: str, *, bucket: str = "results", prefix: str = "vision"
) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{job_id}/"):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


@contextlib.contextmanager
def services(
    tmp_dir: Path, *, redis_appendonly: bool = False
) -> Iterator[tuple[RedisServer, MotoServer]]:
    redis_server = start_redis(tmp_dir, appendonly=redis_appendonly)
    try:
        moto = start_moto()
        try:
            yield redis_server, moto
        finally:
            moto.stop()
    finally:
        redis_server.stop()


# --- the whole stack: redis, S3, emulator, one worker ----------------------------------------


@dataclass
class Stack:
    redis: RedisServer
    moto: MotoServer
    emulator: Any  # worker.emulator.server.EmulatorServer
    workers: list[CeleryWorker]
    env: dict[str, str]
    producer: Any  # celery.Celery
    s3: Any

    @property
    def worker(self) -> CeleryWorker:
        return self.workers[0]

    def put(self, key: str, data: bytes, bucket: str = "inbox") -> str:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    def submit(self, job: dict[str, Any]) -> str:
        job_id = job.setdefault("job_id", f"t-{uuid.uuid4().hex[:12]}")
        self.producer.send_task("vision.analyze", args=[job], queue="vision", task_id=job_id)
        return str(job_id)

    def record(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        return wait_for_record(self.s3, job_id, timeout_s=timeout_s)

    def model_calls(self) -> int:
        return int(self.emulator.stats()["generate_calls"])

    def uploads(self) -> int:
        return int(self.emulator.stats()["uploads_completed"])


@contextlib.contextmanager
def running_stack(
    tmp_dir: Path,
    *,
    workers: int = 1,
    concurrency: int = 4,
    extra_env: Mapping[str, str] | None = None,
    show_logs: bool = True,
    pool: str = "threads",
    redis_appendonly: bool = False,
) -> Iterator[Stack]:
    from celery import Celery

    from worker.emulator.server import EmulatorServer

    with services(tmp_dir, redis_appendonly=redis_appendonly) as (redis_server, moto):
        s3 = moto.s3()
        for bucket in ("inbox", "results", "other"):
            s3.create_bucket(Bucket=bucket)
        emulator = EmulatorServer(api_key="test-key")
        emulator.start()
        env = worker_env(
            redis_server=redis_server, moto=moto, gemini_base_url=emulator.base_url, extra=extra_env
        )
        started: list[CeleryWorker] = []
        try:
            for index in range(workers):
                started.append(
                    start_worker(
                        env, tmp_dir, name=f"w{index + 1}", concurrency=concurrency, pool=pool
                    )
                )
            producer = Celery("test-producer", broker=f"{redis_server.url}/0", set_as_current=False)
            yield Stack(redis_server, moto, emulator, started, env, producer, s3)
        finally:
            for worker in started:
                worker.stop()
            for worker in started if show_logs else ():
                print(f"--- {worker.name} ---\n{worker.log()[-3000:]}")
            emulator.stop()
