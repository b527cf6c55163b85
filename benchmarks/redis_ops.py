"""What one interactive job costs Redis: commands and round trips, by purpose.

The number that sizes the fleet's Redis: this cost per job times the jobs per second is
what one Redis must carry (broker and fleet state in the same server, as the smallest
deployment has them). Real processes on loopback: a redis-server, moto's S3 server, the
Gemini emulator and one worker (`gvw worker --pool threads --concurrency 1`, gossip,
mingle and heartbeat on as deployed), all started from the code of `--repo`; producers are
`gvw submit TASK URI --wait` processes of the same code, one a job, one after another.

Every client reaches redis-server through a counting TCP proxy in this process: one port
each for the worker's broker (CELERY_BROKER_URL), the worker's fleet state
(GVW_REDIS_URL), and the producers' two. The proxy reads the RESP commands clients send
and counts a round trip each time a client connection writes after having received
something (a request burst, however many commands a pipeline puts in it). Each command
is given a purpose by its key: the broker's connections are "broker", set-up included
(the `vision` queue, `unacked*`, `_kombu.binding.*`, events and remote control on
pub/sub); on the fleet's, `gvw:lock:job:` lock, `gvw:claim:` `gvw:taken_at` `gvw:refused*`
claim, `gvw:deliveries:` `gvw:dead_letter*` deliveries, `gvw:answer:` answer store,
`gvw:answer-cache*` answer cache, `gvw:files:` file cache, `gvw:ratelimit:` rate limit,
`gvw:budget:` budget; a script's EVALSHA by its first key, SCRIPT LOAD by the script's
SHA-1; MULTI / EXEC by the other commands of their burst. Anything else (connection
set-up, other keys such as `gvw:batch:`) is "other", and listed by command and key. A
round trip counts for the purpose of the first command in it that names a key.

After a warm-up (2 jobs a task, not counted) and 30 s of the idle worker, per task: one
job not counted (no connection then wakes from a long idle with a health-check PING), N
jobs (each on its own image, so each pays its model call), then an idle window as long;
the worker's cost per job is (jobs window - idle window) / N. What the idle worker sends
(its timers: heartbeat, unacked restore, binding refresh, health checks, a batch
follower) is its own row, "polling": about 0, give or take one tick of a timer a window;
the purpose rows count the rest whole, so they are exact. A wait for work answered with
nothing (a BRPOP that timed out; since the atomic take, a BLMOVE wait that timed out or a
take that found the queue empty) is told from one that brings a job by its answer and
left out: what remains is what brings each job. The producers' cost is their whole
traffic / N. Every fleet feature that talks to Redis is on (GVW_RATE_LIMIT_RPM, GVW_BUDGET_USD_PER_DAY, GVW_ANSWER_CACHE_TTL_S;
`--features off` for the shipped defaults). Each figure is the median of --repeat runs.
With `--compare BEFORE`, BEFORE (an older checkout) runs first in the same run and each
row shows after/before. Nothing of the code under test is imported here: the script works
unchanged against older checkouts (flat worker/*.py, e.g. 81c5917):

    git clone -q . /tmp/redis_ops_before && git -C /tmp/redis_ops_before checkout -q 81c5917
    .venv/bin/python benchmarks/redis_ops.py [--jobs 20] [--repeat 3] [--tasks
caption,segment]
        [--repo PATH] [--compare /tmp/redis_ops_before] [--latency-ms 0] [--json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]

PURPOSES = (
    "broker",
    "lock",
    "claim",
    "deliveries",
    "answer store",
    "answer cache",
    "file cache",
    "rate limit",
    "budget",
    "other",
)
# fleet keys by prefix, first match wins
FLEET_PREFIXES = (
    ("gvw:lock:job:", "lock"),
    ("gvw:claim:", "claim"),
    ("gvw:taken_at", "claim"),
    ("gvw:refused:", "claim"),
    ("gvw:refusals", "claim"),
    ("gvw:deliveries:", "deliveries"),
    ("gvw:dead_letter", "deliveries"),
    ("gvw:answer-cache", "answer cache"),
    ("gvw:answer:", "answer store"),
    ("gvw:files:", "file cache"),
    ("gvw:ratelimit:", "rate limit"),
    ("gvw:budget:", "budget"),
)
# what kombu keeps in Redis: a queue (and its priority lists), the unacked records and
# their mutex, bindings, and pub/sub channels for events and remote control
BROKER_KEY = re.compile(rb"^(vision|celery|unacked|_kombu\.|/\d+\.|celeryev|.*\.pidbox|.*reply\.)")
KEYLESS = {
    b"PING", b"SELECT", b"CLIENT", b"HELLO", b"AUTH", b"INFO", b"ECHO", b"TIME", b"MULTI",
    b"EXEC", b"DISCARD", b"UNWATCH", b"QUIT", b"RESET", b"COMMAND", b"CONFIG", b"DBSIZE",
    b"READONLY", b"SCRIPT",
}  # fmt: skip
# the table's rows: "polling" is what the worker's timers send (heartbeat, unacked restore,
# health checks, ...), jobs window minus idle window: about 0, give or take one tick a window
ROWS = (*PURPOSES, "polling", "total")
ROLES = ("worker-broker", "worker-fleet", "producer-broker", "producer-fleet")
SIDES = ("worker", "producer")

FEATURES_ON = {
    "GVW_RATE_LIMIT_RPM": "1000000",
    "GVW_BUDGET_USD_PER_DAY": "100000",
    "GVW_ANSWER_CACHE_TTL_S": "3600",
}
TASK_FLAGS: dict[str, list[str]] = {
    "caption": [],
    "segment": ["--prompt", "the shapes"],
    "detect": ["--prompt", "the shapes"],
    "vqa": ["--prompt", "How many shapes are there?"],
    "classify": ["--label", "circle", "--label", "dog"],
}
WARMUP_JOBS = 2
# the idle worker watched once after the warm-up, for the labels its timers send
IDLE_PROBE_S = 30.0
TAIL_S = 1.5  # after the last job's record: its ack and events reach Redis


def log(message: str) -> None:
    print(f"[redis_ops {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the counting proxy ---------------------------------------------------------------------


class RespReader:
    """The commands a client sends, from its byte stream: RESP arrays of bulk strings (or
    inline commands). Each argument is kept up to 256 bytes (a SCRIPT's up to 64 KB)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._args: list[bytes] | None = None
        self._left = 0
        self._bulk = -1  # bytes still to read of the current argument, CRLF included
        self._len = 0
        self._cap = 0
        self._cur = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, ...]]:
        self._buf += data
        done: list[tuple[bytes, ...]] = []
        while True:
            if self._bulk >= 0:
                if not self._buf:
                    break
                take = min(self._bulk, len(self._buf))
                room = self._cap - len(self._cur)
                if room > 0:
                    self._cur += self._buf[: min(take, room)]
                del self._buf[:take]
                self._bulk -= take
                if self._bulk > 0:
                    break
                assert self._args is not None
                self._args.append(bytes(self._cur[: self._len]))
                self._bulk = -1
                self._left -= 1
                if self._left == 0:
                    done.append(tuple(self._args))
                    self._args = None
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            if self._args is None:
                if line.startswith(b"*"):
                    count = int(line[1:])
                    if count > 0:
                        self._args, self._left = [], count
                elif line.split():
                    done.append(tuple(line.split()))
            else:
                self._len = int(line[1:])
                script = bool(self._args) and self._args[0].upper() == b"SCRIPT"
                self._cap = 65536 if script else 256
                self._cur = bytearray()
                self._bulk = self._len + 2
        return done


class ReplyReader:
    """The replies a server sends, one flag per complete top-level reply: was it null (a
    BRPOP that timed out)? RESP2 and RESP3 (HELLO 3) alike."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._stack: list[list[int]] = []  # [elements left, 1 if an attribute]
        self._bulk = 0  # bytes still to read of a bulk value, CRLF included

    def feed(self, data: bytes) -> list[bool]:
        self._buf += data
        done: list[bool] = []
        while True:
            if self._bulk > 0:
                take = min(self._bulk, len(self._buf))
                del self._buf[:take]
                self._bulk -= take
                if self._bulk:
                    break
                self._value(done, null=False)
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            kind, rest = line[:1], line[1:]
            if kind in (b"$", b"!", b"="):
                if int(rest) < 0:
                    self._value(done, null=True)
                else:
                    self._bulk = int(rest) + 2
            elif kind in (b"*", b"~", b">", b"%", b"|"):
                count = int(rest)
                if count < 0:
                    self._value(done, null=True)
                elif count == 0:
                    self._value(done, null=False)
                else:
                    pairs = 2 if kind in (b"%", b"|") else 1
                    self._stack.append([count * pairs, int(kind == b"|")])
            else:  # + - : , # ( _ and inline
                self._value(done, null=kind == b"_")
        return done

    def _value(self, done: list[bool], *, null: bool) -> None:
        while self._stack:
            top = self._stack[-1]
            top[0] -= 1
            if top[0]:
                return
            self._stack.pop()
            if top[1]:  # an attribute ends: the value it annotates is still to come
                return
            null = False
        done.append(null)


@dataclass
class Event:
    t: float
    role: str
    conn: int
    burst: int
    args: tuple[bytes, ...]
    # a BRPOP answered with nothing (its timeout): the worker's idle polling, counted
    # apart; at load each BRPOP brings a job
    empty: bool = False


class EventLog:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._bursts = itertools.count(1)
        self._conns = itertools.count(1)

    def new_burst(self) -> int:
        return next(self._bursts)

    def new_conn(self) -> int:
        return next(self._conns)

    def window(self, start: float, end: float, side: str) -> list[Event]:
        return [e for e in self.events if start <= e.t < end and e.role.startswith(side)]


class _Conn:
    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.received = True  # the first write starts a burst
        self.burst = 0
        self.reader: RespReader | None = RespReader()
        self.replies = ReplyReader()
        self.pending: collections.deque[Event] = collections.deque()
        self.subscribed = False  # pub/sub: replies no longer pair with commands


class CountingProxy:
    """127.0.0.1:port -> redis-server, recording every command clients send."""

    def __init__(self, role: str, upstream_port: int, events: EventLog) -> None:
        self.role = role
        self._upstream = upstream_port
        self._log = events
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{role}", daemon=True)
        self._thread.start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [client, upstream]
        conn = _Conn(self._log.new_conn())
        back = threading.Thread(target=self._to_client, args=(upstream, client, conn), daemon=True)
        back.start()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                now = time.monotonic()
                if conn.received:  # a write after a reply: a new round trip
                    conn.burst = self._log.new_burst()
                    conn.received = False
                self._record(conn, now, data)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _shut(client, upstream)
            back.join(timeout=5)
            with self._lock:
                self._sockets.remove(client)
                self._sockets.remove(upstream)
            client.close()
            upstream.close()

    def _record(self, conn: _Conn, now: float, data: bytes) -> None:
        if conn.reader is None:
            return
        try:
            commands = conn.reader.feed(data)
        except ValueError:  # not RESP: forwarded, no longer counted
            log(f"{self.role}: connection {conn.id} sent what is not RESP; not counted further")
            conn.reader = None
            return
        for args in commands:
            event = Event(now, self.role, conn.id, conn.burst, args)
            self._log.events.append(event)
            if args[0].upper() in (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"):
                conn.subscribed = True  # pushes from now on: replies no longer pair
            if not conn.subscribed:
                conn.pending.append(event)

    @staticmethod
    def _to_client(upstream: socket.socket, client: socket.socket, conn: _Conn) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                conn.received = True  # before the client can see it and write again
                if not conn.subscribed:
                    try:
                        nulls = conn.replies.feed(data)
                    except ValueError:
                        conn.subscribed, nulls = True, []  # pairs no more
                    for null in nulls:
                        event = conn.pending.popleft() if conn.pending else None
                        if null and event is not None and is_wait_for_work(event.args):
                            event.empty = True
                client.sendall(data)
        except OSError:
            pass
        finally:
            _shut(client, upstream)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            _shut(*self._sockets)
        self._thread.join(timeout=2)


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# --- attribution ----------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")


def is_wait_for_work(args: tuple[bytes, ...]) -> bool:
    """A command of the worker's wait for a message, told apart when answered with nothing:
    kombu's BRPOP, or worker.queue.broker_transport's wait (BLMOVE of a queue onto itself)
    and take (a script whose first key is `unacked`)."""
    name = args[0].upper()
    return name in (b"BRPOP", b"BLMOVE") or (name == b"EVAL" and command_key(args) == b"unacked")


def command_key(args: tuple[bytes, ...]) -> bytes | None:
    name = args[0].upper()
    if name in KEYLESS or len(args) < 2:
        return None
    if name in (b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO"):
        numkeys = int(args[2]) if len(args) > 2 and args[2].isdigit() else 0
        return args[3] if numkeys > 0 and len(args) > 3 else None
    if name == b"SCAN":
        for i, arg in enumerate(args[:-1]):
            if arg.upper() == b"MATCH":
                return args[i + 1]
        return None
    return args[1]


def key_purpose(key: bytes, port_kind: str) -> str:
    for prefix, purpose in FLEET_PREFIXES:
        if key.startswith(prefix.encode()):
            return purpose
    if port_kind == "broker" or BROKER_KEY.match(key):
        return "broker"
    return "other"


_JOB_ID = re.compile(r"ro[0-9a-f]{6}-[a-z]+-[0-9a-z]+-\d+")
_HEX = re.compile(r"[0-9a-f]{16,}")
_NUMBER = re.compile(r"(?<![A-Za-z])\d{3,}")


def key_pattern(key: bytes) -> str:
    text = _JOB_ID.sub("{job}", _text(key[:120]))
    text = _HEX.sub("{hex}", text)
    return _NUMBER.sub("{n}", text)


Label = tuple[str, str]  # (purpose, command and key pattern)


@dataclass
class Tally:
    """Commands and round trips by purpose and label (a round trip by the label of its
    first command that names a key)."""

    commands: Counter[Label] = field(default_factory=Counter)
    trips: Counter[Label] = field(default_factory=Counter)
    idle_polls: int = 0  # BRPOPs that timed out, each its own round trip

    def add(self, other: Tally) -> None:
        self.commands.update(other.commands)
        self.trips.update(other.trips)
        self.idle_polls += other.idle_polls

    def labels(self) -> set[Label]:
        return {k for k, v in (self.commands + self.trips).items() if v}


def script_purposes(events: list[Event]) -> dict[bytes, str]:
    """SHA-1 (hex) of each script -> the purpose of the keys its EVALSHA calls name."""
    found: dict[bytes, str] = {}
    for e in events:
        name = e.args[0].upper()
        if name in (b"EVALSHA", b"EVALSHA_RO") and len(e.args) > 1:
            key = command_key(e.args)
            if key is not None:
                found.setdefault(e.args[1].lower(), key_purpose(key, e.role.split("-")[1]))
    return found


def tally(events: list[Event], scripts: dict[bytes, str]) -> Tally:
    out = Tally()
    bursts: dict[int, list[Event]] = {}
    for e in events:
        if e.empty:
            out.idle_polls += 1
        else:
            bursts.setdefault(e.burst, []).append(e)
    for burst in bursts.values():
        port_kind = burst[0].role.split("-")[1]
        own: list[str | None] = []
        for e in burst:
            key = command_key(e.args)
            name = e.args[0].upper()
            if key is not None:
                own.append(key_purpose(key, port_kind))
            elif name == b"SCRIPT" and len(e.args) > 2:
                sub = e.args[1].upper()
                if sub == b"LOAD":
                    sha = hashlib.sha1(e.args[2]).hexdigest().encode()
                    own.append(scripts.get(sha))
                else:  # EXISTS sha...
                    own.append(scripts.get(e.args[2].lower()))
            else:
                own.append(None)
        keyed = [p for p in own if p is not None]
        fallback = "broker" if port_kind == "broker" else (keyed[0] if keyed else "other")
        trip: Label | None = None
        for e, purpose in zip(burst, own, strict=True):
            label = (purpose or fallback, command_label(e.args))
            out.commands[label] += 1
            if trip is None and purpose is not None:
                trip = label
        out.trips[trip or (fallback, command_label(burst[0].args))] += 1
    return out


def command_label(args: tuple[bytes, ...]) -> str:
    """The command's name, and its key with job ids, hashes and numbers as patterns."""
    label = args[0].upper().decode("ascii", "replace")
    if label in ("CLIENT", "SCRIPT", "CONFIG") and len(args) > 1:
        label += " " + _text(args[1].upper())
    key = command_key(args)
    return label if key is None else f"{label} {key_pattern(key)}"


# --- the services ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, *, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def redis_pong(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class Processes:
    """Every process this run starts, each in its own process group, stopped at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> Any:
        with (self.log_dir / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        return proc

    def log_text(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str) -> None:
        for proc_name, proc in self._procs:
            if proc_name == name:
                _stop(proc)

    def stop_all(self) -> None:
        for _, proc in reversed(self._procs):
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


def clean_env() -> dict[str, str]:
    drop = ("GVW_", "GEMINI_", "GOOGLE_", "AWS_", "CELERY_", "PYTHONPATH")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return env


def scene_png(seed: int) -> bytes:
    """A 640x480 scene of flat shapes the emulator can see; every seed its own bytes (its
    bits in the top row, too faint to be seen as a shape), so no job reuses another's
    answer from the answer cache."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 480), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    x, y = 40 + (seed * 37) % 300, 40 + (seed * 53) % 200
    draw.ellipse((x, y, x + 140, y + 140), fill=(220, 30, 30))
    draw.rectangle((360, 220 + seed % 40, 560, 400), fill=(30, 60, 220))
    for bit in range(32):
        if seed >> bit & 1:
            image.putpixel((bit, 0), (238, 238, 238))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def describe(repo: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


# --- one checkout ---------------------------------------------------------------------------


@dataclass
class Run:
    """One repetition of one task: the windows' tallies and what they took."""

    jobs: int
    seconds: float
    busy: Tally  # the worker's, in the jobs window
    idle: Tally  # the worker's, in the idle window as long
    producer: Tally
    failed: int


class Checkout:
    """One checkout's services and worker, with every Redis client behind the proxies."""

    def __init__(self, repo: Path, args: argparse.Namespace, work: Path, tag: str) -> None:
        self.repo = repo
        self.args = args
        self.work = work
        self.tag = tag
        self.events = EventLog()
        self.procs = Processes(work)
        self.proxies: dict[str, CountingProxy] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.s3: Any = None
        self.startup: Tally | None = None
        self.startup_s = 0.0
        self.idle = Tally()  # every idle window's, summed
        self.idle_s = 0.0

    def start(self) -> None:
        py = sys.executable
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        redis_port = free_port()
        self.procs.start(
            "redis",
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work), "--maxmemory-policy", "noeviction"],
            cwd=self.work,
            env=clean_env(),
        )  # fmt: skip
        wait_for(lambda: redis_pong(redis_port), timeout_s=15, what="redis-server")
        moto_port = free_port()
        moto_module = "tests.moto_server" if (HERE / "tests/moto_server.py").exists() else None
        self.procs.start(
            "moto",
            [py, "-m", moto_module or "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            cwd=HERE,
            env=clean_env(),
        )
        emulator_port = free_port()
        code_env = {**clean_env(), "PYTHONPATH": str(self.repo), "PYTHONUNBUFFERED": "1"}
        self.procs.start(
            "emulator",
            [py, "-m", "worker.emulator", "--host", "127.0.0.1", "--port", str(emulator_port),
             "--api-key", "bench", "--latency-ms", str(self.args.latency_ms)],
            cwd=self.repo,
            env=code_env,
        )  # fmt: skip
        import boto3

        endpoint = f"http://127.0.0.1:{moto_port}"
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        wait_for(lambda: self.s3.list_buckets() is not None, timeout_s=60, what="moto server")
        for bucket in ("inbox", "results"):
            self.s3.create_bucket(Bucket=bucket)
        wait_for(lambda: listening(emulator_port), timeout_s=60, what="the Gemini emulator")
        for role in ROLES:
            self.proxies[role] = CountingProxy(role, redis_port, self.events)
        common = {
            **code_env,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "GEMINI_BASE_URL": f"http://127.0.0.1:{emulator_port}",
            "GEMINI_API_KEY": "bench",
            "GVW_RESULTS_URI": "s3://results/vision",
            "GVW_ALLOWED_INPUTS": "s3://inbox/",
            "CELERY_RESULT_BACKEND": "",  # as deployed: none
            "GVW_LOG_FORMAT": "text",
            **(FEATURES_ON if self.args.features == "on" else {}),
        }
        for side in SIDES:
            self.env[side] = {
                **common,
                "CELERY_BROKER_URL": self.proxies[f"{side}-broker"].url(0),
                "GVW_REDIS_URL": self.proxies[f"{side}-fleet"].url(1),
            }
        started = time.monotonic()
        proc = self.procs.start(
            "worker",
            [py, "-m", "worker.cli", "worker", "--pool", "threads", "--concurrency", "1",
             "--loglevel", "INFO", "--hostname", f"{self.tag}@127.0.0.1"],
            cwd=self.repo,
            env=self.env["worker"],
        )  # fmt: skip
        wait_for(
            lambda: " ready." in self.procs.log_text("worker") or proc.poll() is not None,
            timeout_s=120,
            what="the worker",
            interval_s=0.2,
        )
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{self.procs.log_text('worker')[-3000:]}")
        time.sleep(3.0)  # mingle and the first polls done
        ended = time.monotonic()
        self.startup_s = ended - started
        self.startup = tally(self.events.window(started, ended, "worker"), self._scripts())

    def _scripts(self) -> dict[bytes, str]:
        return script_purposes(list(self.events.events))

    def submit(self, task: str, job_id: str, seed: int) -> bool:
        key = f"redis-ops/{job_id}.png"
        self.s3.put_object(Bucket="inbox", Key=key, Body=scene_png(seed))
        argv = [sys.executable, "-m", "worker.cli", "submit", task, f"s3://inbox/{key}",
                *TASK_FLAGS.get(task, []), "--job-id", job_id, "--wait", "--timeout", "120",
                "--json"]  # fmt: skip
        try:
            done = subprocess.run(
                argv,
                cwd=self.repo,
                env=self.env["producer"],
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            log(f"{self.tag}: {job_id}: the producer did not return within 180 s")
            return False
        if done.returncode != 0:
            log(f"{self.tag}: {job_id}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.returncode == 0

    def warm_up(self, tasks: list[str], stamp: str) -> None:
        for t, task in enumerate(tasks):
            for i in range(WARMUP_JOBS):
                self.submit(task, f"ro{stamp}-{task}-w-{i}", 100 * t + i)
        time.sleep(2.0)

    def probe_idle(self, seconds: float) -> None:
        start = time.monotonic()
        time.sleep(seconds)
        end = time.monotonic()
        time.sleep(1.5)  # the last BRPOP's answer
        self.idle.add(tally(self.events.window(start, end, "worker"), self._scripts()))
        self.idle_s += end - start

    def run(self, task: str, rep: int, stamp: str) -> Run:
        n = self.args.jobs
        # a job just before the window (not counted): no connection comes back from more
        # than redis-py's 25 s health-check interval with a PING, as none does at load
        seed = 100_000_000 * (self.args.tasks.index(task) + 1) + 100_000 * rep
        self.submit(task, f"ro{stamp}-{task}-p{rep}-0", seed + 99_999)
        time.sleep(0.5)  # its acknowledgement and events
        start = time.monotonic()
        failed = 0
        for i in range(n):
            ok = self.submit(task, f"ro{stamp}-{task}-{rep}-{i}", seed + i)
            failed += not ok
        time.sleep(TAIL_S)
        end = time.monotonic()
        seconds = end - start
        time.sleep(seconds)  # the idle window, as long
        idle_end = time.monotonic()
        time.sleep(1.5)  # the last BRPOP's answer (1 s timeout): did it bring a job?
        scripts = self._scripts()
        busy = tally(self.events.window(start, end, "worker"), scripts)
        idle = tally(self.events.window(end, idle_end, "worker"), scripts)
        producer = tally(self.events.window(start, end, "producer"), scripts)
        self.idle.add(idle)
        self.idle_s += idle_end - end
        return Run(n, seconds, busy, idle, producer, failed)

    def stop(self) -> None:
        self.procs.stop("worker")  # first, while Redis still answers
        for proxy in self.proxies.values():
            proxy.close()
        self.procs.stop_all()


def measure(repo: Path, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"gvw-redis-ops-{tag}-"))
    checkout = Checkout(repo, args, work, tag)
    stamp = os.urandom(3).hex()
    runs: dict[str, list[Run]] = {task: [] for task in args.tasks}
    started = time.monotonic()
    try:
        log(f"{tag}: starting redis-server, S3, the emulator and a worker from {repo}")
        checkout.start()
        log(f"{tag}: warm-up ({WARMUP_JOBS} jobs a task)")
        checkout.warm_up(args.tasks, stamp)
        log(f"{tag}: the idle worker, {IDLE_PROBE_S:g} s")
        checkout.probe_idle(IDLE_PROBE_S)
        for rep in range(args.repeat):
            for task in args.tasks:
                run = checkout.run(task, rep, stamp)
                runs[task].append(run)
                worker = run.busy.commands.total() - run.idle.commands.total()
                log(
                    f"{tag}: {task} run {rep + 1}/{args.repeat}: {run.jobs} jobs in "
                    f"{run.seconds:.1f} s (+ as long idle), {run.failed} failed; worker "
                    f"{worker / run.jobs:.2f} commands a job, "
                    f"producer {run.producer.commands.total() / run.jobs:.2f}"
                )
    except BaseException:
        tail = checkout.procs.log_text("worker")[-3000:]
        if tail:
            log(f"{tag}: the worker's log ends:\n{tail}")
        raise
    finally:
        checkout.stop()
        if args.keep_logs:
            log(f"{tag}: logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return summarize(repo, checkout, runs, time.monotonic() - started)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def per_job(run: Run, polling: set[Label]) -> dict[str, dict[str, dict[str, float]]]:
    """One run's commands and round trips a job, by side and row (purposes, "polling",
    "total"). The worker's labels that its idle windows send too (``polling``: timers that
    run whether or not jobs do) are jobs window minus idle window; its other labels, and
    the producers' traffic, are counted whole."""
    out: dict[str, dict[str, dict[str, float]]] = {
        side: {row: {} for row in ROWS} for side in (*SIDES, "total")
    }
    for metric, attr in (("commands", "commands"), ("round_trips", "trips")):
        worker = dict.fromkeys(ROWS, 0.0)
        for label, count in getattr(run.busy, attr).items():
            worker["polling" if label in polling else label[0]] += count
        for count in getattr(run.idle, attr).values():
            worker["polling"] -= count  # every label of an idle window is in `polling`
        producer = dict.fromkeys(ROWS, 0.0)
        for (purpose, _), count in getattr(run.producer, attr).items():
            producer[purpose] += count
        for rows in (worker, producer):
            rows["total"] = sum(rows[row] for row in ROWS if row != "total")
        for row in ROWS:
            out["worker"][row][metric] = worker[row] / run.jobs
            out["producer"][row][metric] = producer[row] / run.jobs
            out["total"][row][metric] = (worker[row] + producer[row]) / run.jobs
    return out


def summarize(
    repo: Path, checkout: Checkout, runs: dict[str, list[Run]], seconds: float
) -> dict[str, Any]:
    polling = checkout.idle.labels()
    tasks: dict[str, Any] = {}
    for task, task_runs in runs.items():
        each = [per_job(run, polling) for run in task_runs]
        entry: dict[str, Any] = {
            side: {
                row: {
                    metric: _median([one[side][row][metric] for one in each])
                    for metric in ("commands", "round_trips")
                }
                for row in ROWS
            }
            for side in (*SIDES, "total")
        }
        detail: dict[str, dict[str, float]] = {}
        for side in SIDES:
            labels: set[Label] = set()
            for run in task_runs:
                labels |= run.busy.labels() if side == "worker" else run.producer.labels()
            detail[side] = {
                f"{purpose}: {label}"
                + (" (polling)" if side == "worker" and (purpose, label) in polling else ""): (
                    _median(
                        [
                            (
                                run.busy.commands[(purpose, label)]
                                - run.idle.commands[(purpose, label)]
                                if side == "worker"
                                else run.producer.commands[(purpose, label)]
                            )
                            / run.jobs
                            for run in task_runs
                        ]
                    )
                )
                for purpose, label in sorted(labels, key=lambda k: (PURPOSES.index(k[0]), k[1]))
            }
        entry["detail"] = detail
        entry["runs"] = [
            {
                "jobs": run.jobs,
                "seconds": round(run.seconds, 2),
                "failed": run.failed,
                "worker_commands_jobs_window": run.busy.commands.total(),
                "worker_commands_idle_window": run.idle.commands.total(),
                "worker_round_trips_jobs_window": run.busy.trips.total(),
                "worker_round_trips_idle_window": run.idle.trips.total(),
                "worker_brpop_timeouts_jobs_window": run.busy.idle_polls,
                "worker_brpop_timeouts_idle_window": run.idle.idle_polls,
                "producer_commands": run.producer.commands.total(),
                "producer_round_trips": run.producer.trips.total(),
            }
            for run in task_runs
        ]
        tasks[task] = entry
    startup = checkout.startup or Tally()
    idle, idle_s = checkout.idle, checkout.idle_s or 1.0
    return {
        "repo": str(repo),
        "commit": describe(repo),
        "seconds": round(seconds, 1),
        "worker_startup": {
            "seconds": round(checkout.startup_s, 1),
            "commands": startup.commands.total() + startup.idle_polls,
            "round_trips": startup.trips.total() + startup.idle_polls,
        },
        "worker_idle_per_s": {
            "commands": round((idle.commands.total() + idle.idle_polls) / idle_s, 2),
            "round_trips": round((idle.trips.total() + idle.idle_polls) / idle_s, 2),
            "detail": {
                "broker: BRPOP (timed out)": round(idle.idle_polls / idle_s, 3),
                **{
                    f"{purpose}: {label}": round(count / idle_s, 3)
                    for (purpose, label), count in sorted(idle.commands.items())
                    if count
                },
            },
        },
        "tasks": tasks,
    }


# --- output ---------------------------------------------------------------------------------


def ratio(after: float, before: float) -> str:
    if before == 0:
        return "-" if after == 0 else "new"
    return f"{after / before:.2f}x"


def ratios(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, entry in after["tasks"].items():
        if task not in before["tasks"]:
            continue
        out[task] = {
            side: {
                purpose: {
                    metric: ratio(values[metric], before["tasks"][task][side][purpose][metric])
                    for metric in ("commands", "round_trips")
                }
                for purpose, values in entry[side].items()
            }
            for side in (*SIDES, "total")
        }
    return out


def print_tables(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)  # ["before", "after"] or ["repo"]
    for name in names:
        r = results[name]
        print(
            f"{name}: {r['repo']} at {r['commit']}; worker start-up "
            f"{r['worker_startup']['commands']} commands, {r['worker_startup']['round_trips']} "
            f"round trips in {r['worker_startup']['seconds']:.0f} s (not per job); idle worker "
            f"{r['worker_idle_per_s']['commands']:.2f} commands, "
            f"{r['worker_idle_per_s']['round_trips']:.2f} round trips a second"
        )
    features = "on" if args.features == "on" else "off (shipped defaults)"
    print(
        f"\nRedis commands and round trips per interactive job, median of {args.repeat} runs of "
        f"{args.jobs} jobs. worker: one `gvw worker`, jobs window minus an idle window as long "
        f"(BRPOPs that timed out left out); polling: what its timers send (the idle worker's "
        f"commands), about 0 give or take a tick. producer: `gvw submit --wait` processes. "
        f"Fleet features (rate limit, budget, answer cache) {features}; emulator latency "
        f"{args.latency_ms:g} ms."
    )
    head = f"{'':9}{'':14}"
    sub = f"{'':9}{'purpose':14}"
    for name in names:
        head += f"{name:>17}"
        sub += f"{'cmds':>8}{'trips':>9}"
    if len(names) == 2:
        head += f"{names[1] + '/' + names[0]:>18}"
        sub += f"{'cmds':>9}{'trips':>9}"
    side_rows = {
        "worker": (*PURPOSES, "polling", "total"),
        "producer": (*PURPOSES, "total"),
        "total": ("total",),
    }
    for task in args.tasks:
        print(f"\n{task}")
        print(head)
        print(sub)
        for side, rows in side_rows.items():
            for row in rows:
                line = f"{side if row == rows[0] else '':9}{row:14}"
                for name in names:
                    values = results[name]["tasks"][task][side][row]
                    line += f"{values['commands']:8.2f}{values['round_trips']:9.2f}"
                if len(names) == 2:
                    after = results[names[1]]["tasks"][task][side][row]
                    before = results[names[0]]["tasks"][task][side][row]
                    for metric in ("commands", "round_trips"):
                        shown = "-" if row == "polling" else ratio(after[metric], before[metric])
                        line += f"{shown:>9}"
                print(line)
    print("\nunder 'other' (commands a job, by command and key):")
    listed = False
    for name in names:
        for task in args.tasks:
            for side in SIDES:
                detail = results[name]["tasks"][task]["detail"][side]
                others = {
                    k.removeprefix("other: "): v
                    for k, v in detail.items()
                    if k.startswith("other:") and not k.endswith("(polling)") and v
                }
                if others:
                    listed = True
                    items = ", ".join(f"{k} {v:g}" for k, v in others.items())
                    print(f"  {name} {task} {side}: {items}")
    if not listed:
        print("  nothing")
    print("\npolling: the idle worker's commands, a second (BRPOP timeouts apart):")
    for name in names:
        idle = results[name]["worker_idle_per_s"]["detail"]
        print(f"  {name}: " + ", ".join(f"{k} {v:g}" for k, v in idle.items()))
    if args.detail:
        print("\nevery command (a job, by purpose, command and key):")
        for name in names:
            for task in args.tasks:
                for side in SIDES:
                    print(f"  {name} {task} {side}:")
                    for k, v in results[name]["tasks"][task]["detail"][side].items():
                        if v:
                            print(f"    {v:8.2f}  {k}")
    runs = ", ".join(f"{name} {results[name]['seconds']:.0f} s" for name in names)
    print(f"\nrun time: {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repo", type=Path, default=HERE, help="the checkout to measure")
    parser.add_argument("--compare", type=Path, metavar="PATH_BEFORE", help="and this one")
    parser.add_argument("--jobs", type=int, default=20, help="jobs a task a run")
    parser.add_argument("--repeat", type=int, default=3, help="runs a task (median)")
    parser.add_argument("--tasks", default="caption,segment")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the emulator's")
    parser.add_argument("--features", choices=("on", "off"), default="on")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--detail", action="store_true", help="list every command")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not 1 <= args.jobs < 99_999 or args.repeat < 1 or not args.tasks:
        parser.error("--jobs (below 99999) and --repeat must be at least 1, and a task given")
    for path in [args.repo, args.compare]:
        if path is not None and not (path / "worker").is_dir():
            parser.error(f"{path} is not a checkout of this project (no worker/)")

    def stop_on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # the finally blocks stop every process

    signal.signal(signal.SIGTERM, stop_on_term)
    begun = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    if args.compare is not None:
        results["before"] = measure(args.compare.resolve(), args, "before")
        results["after"] = measure(args.repo.resolve(), args, "after")
    else:
        results["repo"] = measure(args.repo.resolve(), args, "repo")
    if args.json:
        out: dict[str, Any] = {
            "config": {
                "jobs": args.jobs,
                "repeat": args.repeat,
                "tasks": args.tasks,
                "latency_ms": args.latency_ms,
                "features": args.features,
                "purposes": list(PURPOSES),
            },
            "checkouts": results,
            "seconds": round(time.monotonic() - begun, 1),
        }
        if args.compare is not None:
            out["ratio_after_before"] = ratios(results["after"], results["before"])
        print(json.dumps(out, indent=2))
    else:
        print_tables(results, args)
        print(f"whole run: {time.monotonic() - begun:.0f} s")


if __name__ == "__main__":
    main()
