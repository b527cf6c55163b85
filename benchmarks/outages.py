"""What an outage costs: a Redis restart with jobs in flight, and an S3 outage longer than
the retry budget, on real local services (redis-server with appendonly, moto's S3
server behind a TCP gate, the Gemini emulator, `celery worker` processes).

1. Redis restart: N segment jobs on 2 workers; Redis SIGKILLed once jobs run and more
   wait, back `--down-s` later with its AOF. Prints the time from Redis's return to the
   last job's record (goal: at most 60 s), the log lines the outage wrote (lines written
   while Redis was down, and warnings and errors after, until the last record; goal: at
   most 50), and, as the baseline of the same run, the same jobs without an outage.
2. S3 outage: M caption jobs with GVW_MAX_RETRIES=2; S3 unreachable for three times what
   those retries take. Prints the jobs committed with their real result after S3 returns
   (goal: all), the paid model calls (goal: one per job), and the time from S3's return to
   the last record, against the same jobs without an outage.

    .venv/bin/python benchmarks/outages.py [--jobs 200] [--s3-jobs 20] [--down-s 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.harness

from tests.harness import Stack, read_json, running_stack, start_worker
from tests.reliability.tcp_gate import TcpGate
from worker.emulator.scenes import make_scene

ENV = {
    # production's visibility timeout (15 min): a stranded job would show
    "GVW_VISIBILITY_TIMEOUT_S": "900",
    "GVW_LOG_FORMAT": "text",  # the lines an operator reads
    "CELERY_RESULT_BACKEND": "",  # as deployed: none
}
S3_RETRIES = {"GVW_MAX_RETRIES": "2", "GVW_RETRY_BASE_S": "2", "GVW_RETRY_MAX_S": "8"}


def put_scenes(stack: Stack, count: int, tag: str) -> list[str]:
    return [
        stack.put(
            f"outage/{tag}/{i}.png",
            make_scene(480, 360, shapes=["red circle", "blue rectangle"], seed=i).png_bytes(),
        )
        for i in range(count)
    ]


def records(stack: Stack, job_ids: list[str]) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    paginator = stack.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket="results", Prefix="vision/"):
        for obj in page.get("Contents", []):
            parts = obj["Key"].split("/")
            if len(parts) == 3 and parts[1] in job_ids and parts[2].endswith(".json"):
                found[parts[1]] = read_json(stack.s3, "results", obj["Key"]) or {}
    return found


def wait_records(stack: Stack, job_ids: list[str], timeout_s: float) -> float:
    """Seconds until every job has a record (polled every 0.5 s), or the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if len(records(stack, job_ids)) == len(job_ids):
            break
        time.sleep(0.5)
    return time.monotonic() - started


def lines(stack: Stack) -> list[str]:
    return [line for w in stack.workers for line in w.log().splitlines()]


def redis_restart(args: argparse.Namespace, *, outage: bool) -> dict[str, float]:
    logs = Path(tempfile.mkdtemp(prefix="gvw-bench-outage-redis-"))
    with running_stack(
        logs, workers=2, concurrency=4, extra_env=ENV, show_logs=False, redis_appendonly=True
    ) as stack:
        stack.emulator.configure(latency_ms=args.latency_ms)
        uris = put_scenes(stack, 8, "redis")
        job_ids = [
            stack.submit({"task": "segment", "images": [uris[i % 8]], "prompt": "the shapes"})
            for i in range(args.jobs)
        ]
        started = time.monotonic()
        if not outage:
            took = wait_records(stack, job_ids, args.timeout_s)
            return {"seconds": took, "records": len(records(stack, job_ids))}
        broker = stack.redis.client(db=0)
        while stack.model_calls() < 8 or broker.llen("vision") < 10:
            time.sleep(0.1)
        before = len(lines(stack))
        stack.redis.restart(down_s=args.down_s)
        during = lines(stack)[before:]
        after_return = len(lines(stack))
        took = wait_records(stack, job_ids, args.timeout_s)
        after = lines(stack)[after_return:]
        noisy = [line for line in after if " WARNING " in line or " ERROR " in line]
        return {
            "seconds": time.monotonic() - started,
            "after_return_s": took,
            "records": len(records(stack, job_ids)),
            "log_lines": len(during) + len(noisy),
            "calls": stack.model_calls(),
        }


def s3_outage(args: argparse.Namespace, *, outage: bool) -> dict[str, float]:
    logs = Path(tempfile.mkdtemp(prefix="gvw-bench-outage-s3-"))
    env = {**ENV, **S3_RETRIES}
    with (
        running_stack(logs, workers=0, extra_env=env, show_logs=False) as stack,
        TcpGate(stack.moto.port) as gate,
    ):
        worker_env = {**stack.env, "AWS_ENDPOINT_URL_S3": gate.url}
        stack.workers.append(start_worker(worker_env, logs, name="w1", concurrency=4))
        stack.emulator.configure(latency_ms=args.latency_ms)
        uris = put_scenes(stack, args.s3_jobs, "s3")
        # the retries' own budget: GVW_RETRY_BASE_S doubling, GVW_MAX_RETRIES times
        budget_s = sum(min(8.0, 2.0 * 2**k) for k in range(2))
        down_s = 3 * budget_s
        if outage:
            gate.cut()
        started = time.monotonic()
        job_ids = [stack.submit({"task": "caption", "images": [uri]}) for uri in uris]
        if outage:
            time.sleep(down_s)  # the outage itself
            gate.mend()
        took = wait_records(stack, job_ids, args.timeout_s)
        found = records(stack, job_ids)
        return {
            "seconds": time.monotonic() - started,
            "after_return_s": took,
            "down_s": down_s if outage else 0.0,
            "budget_s": budget_s,
            "succeeded": sum(1 for r in found.values() if r.get("status") == "succeeded"),
            "calls": stack.model_calls(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--s3-jobs", type=int, default=20)
    parser.add_argument("--down-s", type=float, default=6.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--phases", default="1,2")
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",")}
    if "1" in phases:
        base = redis_restart(args, outage=False)
        hit = redis_restart(args, outage=True)
        print(
            f"1. Redis restart, {args.jobs} segment jobs, down {args.down_s:g} s: every job's "
            f"record {hit['after_return_s']:.1f} s after Redis returned (goal <= 60 s); "
            f"{hit['records']:.0f}/{args.jobs} records; {hit['log_lines']:.0f} outage log lines "
            f"(goal <= 50); {hit['calls']:.0f} model calls for {args.jobs} jobs; "
            f"the whole run {hit['seconds']:.1f} s against {base['seconds']:.1f} s without the "
            f"outage ({hit['seconds'] / base['seconds']:.2f}x)"
        )
    if "2" in phases:
        base = s3_outage(args, outage=False)
        hit = s3_outage(args, outage=True)
        print(
            f"2. S3 unreachable {hit['down_s']:.0f} s (3x the {hit['budget_s']:.0f} s its 2 "
            f"retries take), {args.s3_jobs} caption jobs: {hit['succeeded']:.0f}/{args.s3_jobs} "
            f"committed with their real result (goal: all), {hit['calls']:.0f} paid model "
            f"calls (goal: {args.s3_jobs}), the last {hit['after_return_s']:.1f} s after S3 "
            f"returned; {base['seconds']:.1f} s for the same jobs without the outage"
        )


if __name__ == "__main__":
    main()
