"""Real processes on loopback for integration and reliability tests.

Each helper starts a real server (redis-server, moto's S3 server, a `celery worker`) on a
free 127.0.0.1 port, waits until it answers, and stops it (and its process group) at the
end. Every wait loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import redis

REPO_ROOT = Path(__file__).resolve().parents[1]


# Ports for the servers the tests start are taken from a block of this process's own,
# below Linux's ephemeral range (32768-60999, where the kernel picks the port of every
# outgoing connection and of every bind to port 0): no connection of the suite's, and no
# other process of the same run (pytest-xdist workers gw0, gw1, ... each have a block), can
# take a port between the moment it is chosen and the moment its server binds it, or while
# a restarted server is down. Within a block ports go round in order, so a port is not
# handed out again until the whole block has been.
_PORT_BLOCKS_START = 20_000
_PORT_BLOCK_SIZE = 500
_PORT_BLOCKS = 24  # 20000-31999
_port_lock = threading.Lock()
_port_cursor: list[int] = []


def _port_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    index = int(worker[2:]) if worker[2:].isdigit() else os.getpid()
    return _PORT_BLOCKS_START + (index % _PORT_BLOCKS) * _PORT_BLOCK_SIZE


def free_port() -> int:
    """A loopback port no server is bound to, from this process's own block."""
    with _port_lock:
        block = _port_block()
        if not _port_cursor:
            # a random start: two runs at once on one machine rarely walk the same ports
            _port_cursor.append(random.randrange(_PORT_BLOCK_SIZE))
        for _ in range(_PORT_BLOCK_SIZE):
            port = block + _port_cursor[0] % _PORT_BLOCK_SIZE
            _port_cursor[0] += 1
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {block}-{block + _PORT_BLOCK_SIZE - 1}")


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
            # moto's server answers SQS and SNS at the same endpoint (completion events)
            "AWS_ENDPOINT_URL_SQS": self.endpoint,
            "AWS_ENDPOINT_URL_SNS": self.endpoint,
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


def spawn_worker(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str = "w1",
    pool: str = "threads",
    concurrency: int = 4,
) -> CeleryWorker:
    """A `celery worker` process started, not yet known to be ready (`wait_ready`)."""
    log_path = log_dir / f"worker-{name}.log"
    with log_path.open("w") as handle:
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
    return CeleryWorker(name, proc, log_path)


def wait_ready(worker: CeleryWorker, timeout_s: float = 60) -> CeleryWorker:
    """Wait until the worker says it is ready (raises if it exits first)."""
    wait_until(
        lambda: " ready." in worker.log() or worker.proc.poll() is not None,
        timeout_s=timeout_s,
        what=f"celery worker {worker.name}",
        interval_s=0.1,
    )
    if worker.proc.poll() is not None:
        raise RuntimeError(f"worker {worker.name} exited early:\n{worker.log()[-4000:]}")
    return worker


def start_worker(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str = "w1",
    pool: str = "threads",
    concurrency: int = 4,
) -> CeleryWorker:
    worker = spawn_worker(env, log_dir, name=name, pool=pool, concurrency=concurrency)
    try:
        return wait_ready(worker)
    except BaseException:
        worker.kill()
        raise


def stop_workers(workers: list[CeleryWorker], sig: int = signal.SIGTERM) -> None:
    """`CeleryWorker.stop` for several workers at once: each is signalled once, then each
    is waited for (20 s, then SIGKILL), so their shutdowns overlap."""
    running = [worker for worker in workers if worker.proc.poll() is None]
    for worker in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, sig)
    for worker in running:
        try:
            worker.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(timeout=20)


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
    """The job's result.json, or its error.json, once one is there (within `timeout_s`).

    Each look is one listing of the job's folder (its artifacts folded into one common
    prefix), and a read only once a record is listed; looks come every 0.1 s for the first
    2 s, then every 0.25 s, then (after 10 s) every 0.5 s. A record is seen within half a
    second, and a test waiting a minute does not keep the S3 server busy meanwhile."""
    folder = f"{prefix}/{job_id}/"
    found: dict[str, Any] = {}

    def done() -> bool:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder, Delimiter="/")
        names = {item["Key"].removeprefix(folder) for item in listed.get("Contents", [])}
        for name in ("result.json", "error.json"):
            if name in names:
                record = read_json(s3, bucket, folder + name)
                if record is not None:
                    found.update(record)
                    return True
        return False

    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if done():
                return found
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for a record for {job_id}")
        waited_s = now - started
        interval_s = 0.1 if waited_s < 2 else 0.25 if waited_s < 10 else 0.5
        time.sleep(min(interval_s, deadline - now))


def list_job_keys(
    s3: Any, job_id: str, *, bucket: str = "results", prefix: str = "vision"
) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{job_id}/"):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def reset_moto(moto: MotoServer) -> None:
    """Empty a moto server, as a new one is: every bucket and object (and whatever else
    its services hold) gone. moto's own reset endpoint, then a check that it worked."""
    request = urllib.request.Request(f"{moto.endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        reply.read()
    left = moto.s3().list_buckets()["Buckets"]
    if left:
        raise RuntimeError(f"moto still has buckets after a reset: {left}")


class SharedMoto:
    """One moto S3 server for the tests of a process that each want a fresh one: `take()`
    empties it first (`reset_moto`). The tests of one process run one after another, and a
    stack stops every process it started before its test ends, so nothing of one test
    reaches the next one's S3. Started on first use; a server that died is replaced."""

    def __init__(self) -> None:
        self._server: MotoServer | None = None

    def take(self) -> MotoServer:
        if self._server is None or self._server.proc.poll() is not None:
            self._server = start_moto()
        reset_moto(self._server)
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextlib.contextmanager
def services(
    tmp_dir: Path, *, redis_appendonly: bool = False, shared_moto: SharedMoto | None = None
) -> Iterator[tuple[RedisServer, MotoServer]]:
    """redis-server of its own, and moto's S3 server: its own, or `shared_moto` emptied."""
    redis_server = start_redis(tmp_dir, appendonly=redis_appendonly)
    try:
        if shared_moto is not None:
            yield redis_server, shared_moto.take()
            return
        moto = start_moto()
        try:
            yield redis_server, moto
        finally:
            moto.stop()
    finally:
        redis_server.stop()


# --- the whole stack: redis, S3, emulator, one worker ----------------------------------------


class CallsInFlight:
    """Counts the emulator's model calls under way: begun, not yet answered (its request
    log and `generate_calls` see a call only once it is answered, after its latency)."""

    def __init__(self, emulator: Any) -> None:
        service = emulator.service
        generate = service.generate
        self._lock = threading.Lock()
        self._count = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._count += 1
            try:
                return generate(*args, **kwargs)
            finally:
                with self._lock:
                    self._count -= 1

        service.generate = counted  # the emulator's handlers and batches call it by name

    def __call__(self) -> int:
        with self._lock:
            return self._count


@dataclass
class Stack:
    redis: RedisServer
    moto: MotoServer
    emulator: Any  # worker.emulator.server.EmulatorServer
    workers: list[CeleryWorker]
    env: dict[str, str]
    producer: Any  # celery.Celery
    s3: Any
    calls_in_flight: Callable[[], int] = lambda: 0

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

    def broker_is_drained(self) -> bool:
        """Nothing on the `vision` queue, nothing delivered and unacknowledged. Jobs are
        acknowledged late, so a job that is running, and a retry waiting out its
        countdown in a worker, are both still there as unacknowledged messages."""
        broker = self.redis.client(db=0)
        try:
            return broker.llen("vision") == 0 and broker.hlen("unacked") == 0
        finally:
            broker.close()

    def wait_until_settled(self, *, timeout_s: float = 60) -> None:
        """Wait until nothing is left that could still happen: the broker drained (see
        `broker_is_drained`) and no model call under way at the emulator, seen twice 0.2 s
        apart (kombu takes a message off the queue before it records it as unacked: for
        that moment it is in neither place). Then a later model call, result or retry
        would have to come from a new message."""
        looks: list[bool] = []

        def settled() -> bool:
            looks.append(self.calls_in_flight() == 0 and self.broker_is_drained())
            return looks[-2:] == [True, True]

        wait_until(settled, timeout_s=timeout_s, what="the fleet to settle", interval_s=0.2)


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
    shared_moto: SharedMoto | None = None,
) -> Iterator[Stack]:
    """redis-server, moto's S3 server (or `shared_moto`, emptied), the emulator and
    `workers` Celery workers, all for this stack alone; stopped at the end."""
    from celery import Celery

    from worker.emulator.server import EmulatorServer

    with services(tmp_dir, redis_appendonly=redis_appendonly, shared_moto=shared_moto) as (
        redis_server,
        moto,
    ):
        s3 = moto.s3()
        for bucket in ("inbox", "results", "other"):
            s3.create_bucket(Bucket=bucket)
        emulator = EmulatorServer(api_key="test-key")
        calls_in_flight = CallsInFlight(emulator)
        emulator.start()
        env = worker_env(
            redis_server=redis_server, moto=moto, gemini_base_url=emulator.base_url, extra=extra_env
        )
        started: list[CeleryWorker] = []
        stack = Stack(redis_server, moto, emulator, started, env, None, s3, calls_in_flight)
        try:
            # started side by side: each spends a couple of seconds importing and warming up
            for index in range(workers):
                started.append(
                    spawn_worker(
                        env, tmp_dir, name=f"w{index + 1}", concurrency=concurrency, pool=pool
                    )
                )
            for worker in started:
                wait_ready(worker)
            stack.producer = Celery(
                "test-producer", broker=f"{redis_server.url}/0", set_as_current=False
            )
            yield stack
        finally:
            # the stack's workers, and those a test added to it (stack.workers)
            stop_workers(stack.workers)
            for worker in stack.workers if show_logs else ():
                print(f"--- {worker.name} ---\n{worker.log()[-3000:]}")
            emulator.stop()
