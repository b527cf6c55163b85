"""A fleet under load: throughput, kills, and the shared rate limit.

Real processes on loopback (redis-server, moto's S3 server, the Gemini emulator with a
fixed model latency, 4 `celery worker` processes), three phases in one run:

1. throughput: N jobs against the ideal min(slots / latency, rate limit);
2. kills: the same with a random worker SIGKILLed every few seconds (and started again):
   committed / submitted, duplicate commits (from the workers' "job committed" log
   lines) and extra model calls;
3. rate limit: GVW_RATE_LIMIT_RPM below the ideal; the most calls the emulator saw in any
   60 s window against the limit, and the share of the limit used.

    .venv/bin/python benchmarks/fleet.py [--jobs 500] [--concurrency 2] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.harness

from tests.harness import Stack, read_json, running_stack, start_worker

WORKERS = 4
FAST = {
    # short redelivery so killed jobs come back within the phase
    "GVW_VISIBILITY_TIMEOUT_S": "15",
    "GVW_SOFT_TIME_LIMIT_S": "5",
    "GVW_HARD_TIME_LIMIT_S": "6",
    "GVW_RETRY_BASE_S": "0.5",
    "GVW_RETRY_MAX_S": "4",
    "GVW_JOB_LOCK_TTL_S": "3",
    "GVW_LOG_LEVEL": "INFO",
}


def tiny_png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (index % 256, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def submit_all(stack: Stack, jobs: int, tag: str) -> tuple[list[str], float]:
    uris = [stack.put(f"fleet/{tag}/{i}.png", tiny_png(i)) for i in range(min(jobs, 50))]
    started_epoch_s = time.time()
    ids = [
        stack.submit(
            {"job_id": f"{tag}-{i:05d}", "task": "caption", "images": [uris[i % len(uris)]]}
        )
        for i in range(jobs)
    ]
    return ids, started_epoch_s


def wait_all(stack: Stack, ids: list[str], timeout_s: float) -> tuple[int, float]:
    """Committed count, and the epoch second of the last commit (from result.json's
    `completed_at`, so this polling, kept slow to leave the CPU to the fleet, adds no
    delay to the measurement)."""
    deadline = time.monotonic() + timeout_s
    wanted = set(ids)
    done: set[str] = set()
    paginator = stack.s3.get_paginator("list_objects_v2")
    while time.monotonic() < deadline:
        done = set()
        for page in paginator.paginate(Bucket="results", Prefix="vision/"):
            for obj in page.get("Contents", []):
                parts = obj["Key"].split("/")
                if len(parts) == 3 and parts[2] in ("result.json", "error.json"):
                    done.add(parts[1])
        if wanted <= done:
            break
        time.sleep(2.0)
    last = 0.0
    for job_id in wanted & done:
        record = read_json(stack.s3, "results", f"vision/{job_id}/result.json") or {}
        stamp = record.get("completed_at")
        if stamp:
            last = max(last, datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return len(wanted & done), last or time.time()


def commits_per_job(stack: Stack) -> Counter[str]:
    counts: Counter[str] = Counter()
    for worker in stack.workers:
        for line in worker.log().splitlines():
            if line.startswith("{") and '"job committed"' in line:
                counts[json.loads(line)["job_id"]] += 1
    return counts


def max_calls_in_window(times: list[float], window_s: float = 60.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def run_phase(
    args: argparse.Namespace, name: str, extra_env: dict[str, str], *, kill_every_s: float = 0.0
) -> dict[str, float]:
    logs = Path(tempfile.mkdtemp(prefix=f"gvw-bench-fleet-{name.replace(' ', '-')}-"))
    print(f"{name}: worker logs in {logs}")
    with running_stack(
        logs,
        workers=WORKERS,
        concurrency=args.concurrency,
        extra_env={**FAST, **extra_env},
        show_logs=False,
    ) as stack:
        # keep every request in the emulator's log: phase 3 reads all their times
        stack.emulator.configure(latency_ms=args.latency_ms, request_log_size=args.jobs * 4)
        stop = threading.Event()
        kills = 0

        def killer() -> None:
            nonlocal kills
            rng = random.Random(7)
            while not stop.wait(kill_every_s):
                index = rng.randrange(len(stack.workers))
                stack.workers[index].kill()
                kills += 1
                stack.workers[index] = start_worker(
                    stack.env, logs, name=f"r{kills}", concurrency=args.concurrency
                )

        ids, started = submit_all(stack, args.jobs, name)
        thread = threading.Thread(target=killer, daemon=True) if kill_every_s else None
        if thread:
            thread.start()
        committed, finished = wait_all(stack, ids, timeout_s=args.timeout_s)
        stop.set()
        if thread:
            thread.join(timeout=60)
        stats = stack.emulator.stats()
        # when each call arrived (the log stamps the answer): what a quota counts
        calls = [r["time"] - r["duration_ms"] / 1000 for r in stats["requests"]]
        duplicates = sum(1 for n in commits_per_job(stack).values() if n > 1)
        return {
            "committed": committed,
            "seconds": finished - started,
            "calls": stats["generate_calls"],
            "duplicates": duplicates,
            "kills": kills,
            "max_window": max_calls_in_window(calls),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2, help="threads per worker")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--kill-every-s", type=float, default=4.0)
    parser.add_argument("--rpm", type=int, default=300, help="limit for phase 3")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--phases", default="1,2,3")
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",")}
    slots = WORKERS * args.concurrency
    ideal = slots / (args.latency_ms / 1000)
    print(
        f"{args.jobs} jobs, {WORKERS} workers x {args.concurrency} threads = {slots} slots, "
        f"model latency {args.latency_ms:.0f} ms: ideal {ideal:.1f} jobs/s"
    )
    log_env = {"GVW_RATE_LIMIT_RPM": "0"}

    if "1" in phases:
        r = run_phase(args, "plain", log_env)
        rate = r["committed"] / r["seconds"]
        print(
            f"\n1. throughput: {r['committed']}/{args.jobs} in {r['seconds']:.1f} s = "
            f"{rate:.1f} jobs/s = {100 * rate / ideal:.0f}% of ideal ({ideal:.1f}); "
            f"model calls {r['calls']}"
        )
    if "2" in phases:
        r = run_phase(args, "kills", log_env, kill_every_s=args.kill_every_s)
        print(
            f"\n2. kills: {r['kills']} SIGKILLs (one every {args.kill_every_s:.0f} s); "
            f"committed {r['committed']}/{args.jobs} = {100 * r['committed'] / args.jobs:.1f}%; "
            f"duplicate commits {r['duplicates']}; extra model calls "
            f"{r['calls'] - args.jobs}; {r['seconds']:.1f} s"
        )
    if "3" in phases:
        limit_ideal = min(ideal, args.rpm / 60)
        r = run_phase(args, "limit", {"GVW_RATE_LIMIT_RPM": str(args.rpm)})
        print(
            f"\n3. rate limit {args.rpm}/min (ideal {limit_ideal * 60:.0f}/min): "
            f"most calls in any 60 s window {r['max_window']} = "
            f"{100 * r['max_window'] / args.rpm:.0f}% of the limit; committed "
            f"{r['committed']}/{args.jobs} in {r['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
