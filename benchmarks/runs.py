"""What a run costs the fleet beyond its jobs, and how soon a job's end reaches its receiver.

Real processes on loopback: a redis-server (broker and fleet state), moto's S3 server behind
a proxy that logs every request, the Gemini emulator, and 2 workers (`celery worker`, thread
pool, concurrency 4). Three passes in one run, each of N jobs (`--jobs`, default 300) on
images of their own, each waited for until every job has its record:

  plain    the jobs alone (`VisionClient.submit_many`): the baseline
  run      the same number of jobs as one run (`enqueue_prefix` with a run, as
           `gvw enqueue-prefix` does): members counted before they are sent, each job's
           moves counted by the workers, summary.json kept, the run sealed and finished
  events   a run whose jobs name a webhook (`job.completed`) and whose end does
           (`run.completed`), received by a server in this process that verifies every
           signature (`standardwebhooks`)

Per pass: Redis commands per job (`INFO commandstats`, every client, less what the idle
fleet sends in as long: measured first), S3 requests per job (the proxy's log) and, of
them, the run's own (keys under `_runs/`: definition, members, summaries), per job and in
all. For `events`: the delay from each job's commit (its result.json's `completed_at`) to
its event's arrival, median and p99, and from the last commit to `run.completed`.

    .venv/bin/python benchmarks/runs.py [--jobs 300]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.harness

from PIL import Image

from tests.harness import Stack, free_port, running_stack, wait_until
from tests.reliability.fakes import S3Proxy

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
IDLE_WINDOW_S = 5.0


class Receiver:
    """A webhook receiver on 127.0.0.1: every verified event's arrival time, by id."""

    def __init__(self) -> None:
        from standardwebhooks import Webhook

        self.arrivals: dict[str, tuple[float, dict[str, Any]]] = {}
        self.bad = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    event = Webhook(SECRET).verify(body, dict(self.headers.items()))
                except Exception:
                    event = None
                with lock:
                    if event is None:
                        receiver.bad += 1
                    else:
                        receiver.arrivals.setdefault(event["id"], (arrived, event))
                self.send_response(204 if event is not None else 400)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, event_type: str) -> list[tuple[float, dict[str, Any]]]:
        return [v for v in self.arrivals.values() if v[1]["type"] == event_type]


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (seed % 256, (seed // 256) % 256, 120)).save(buffer, "PNG")
    return buffer.getvalue()


def redis_commands(stack: Stack) -> int:
    stats = stack.redis.client(db=0).info("commandstats")
    # the INFO that reads them counts too: one a read, the same in every pass
    return sum(int(v["calls"]) for v in stats.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    receiver = Receiver()
    proxy = S3Proxy()
    proxy.start()
    env = {
        "AWS_ENDPOINT_URL_S3": proxy.url,
        "GVW_NOTIFY_DESTINATIONS": json.dumps({receiver.url: {"secret": SECRET}}),
        "GVW_NOTIFY_BACKOFF_BASE_S": "0.2",
        "GVW_NOTIFY_BACKOFF_MAX_S": "2",
        "GVW_LOG_FORMAT": "json",
    }
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_stack(
                Path(tmp), workers=2, concurrency=4, extra_env=env, show_logs=False
            ) as stack,
        ):
            proxy.upstream = stack.moto.endpoint
            for name, value in stack.moto.env().items():
                os.environ[name] = value
            os.environ["AWS_ENDPOINT_URL_S3"] = proxy.url
            measure(stack, proxy, receiver, args.jobs)
    finally:
        proxy.stop()
        receiver.server.shutdown()


def measure(stack: Stack, proxy: S3Proxy, receiver: Receiver, jobs: int) -> None:
    from worker.producers.bulk import enqueue_prefix
    from worker.producers.client import VisionClient
    from worker.producers.runs import fleet_ledger, start_run
    from worker.runs.records import RunSource
    from worker.settings import Settings
    from worker.storage import StoreRouter

    settings = Settings(
        celery_broker_url=stack.env["CELERY_BROKER_URL"],
        gvw_redis_url=stack.env["GVW_REDIS_URL"],
        gvw_results_uri="s3://results/vision",
    )
    stores = StoreRouter()
    client = VisionClient(settings=settings, stores=stores)
    ledger = fleet_ledger(settings.gvw_redis_url, ttl_s=3600)
    with ThreadPoolExecutor(16) as pool:
        for label in ("warm", "plain", "run", "events"):
            count = 8 if label == "warm" else jobs
            list(pool.map(lambda i, lb=label: stack.put(f"{lb}/{i:05d}.png", png(i)), range(count)))  # type: ignore[misc]

    def records_of(prefix: str) -> dict[str, dict[str, Any]]:
        found = {}
        paginator = stack.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket="results", Prefix="vision/"):
            for item in page.get("Contents", []):
                parts = item["Key"].split("/")
                if len(parts) == 3 and parts[1].startswith(prefix) and parts[2] == "result.json":
                    found[parts[1]] = item["Key"]
        return found

    def wait_all(prefix: str, count: int) -> None:
        wait_until(lambda: len(records_of(prefix)) >= count, timeout_s=600, what=prefix,
                   interval_s=0.5)  # fmt: skip

    # warm-up: imports, connections, the first upload of each worker
    client.submit_many(
        [{"task": "caption", "images": [f"s3://inbox/warm/{i:05d}.png"], "job_id": f"warm-{i}"}
         for i in range(8)]
    )  # fmt: skip
    wait_all("warm-", 8)
    stack.wait_until_settled()
    # what the idle fleet sends to Redis (its timers), per second
    before = redis_commands(stack)
    time.sleep(IDLE_WINDOW_S)
    idle_per_s = (redis_commands(stack) - before) / IDLE_WINDOW_S

    rows = {}
    for label in ("plain", "run", "events"):
        prefix_uri = f"s3://inbox/{label}/"
        seen = len(proxy.log())
        commands = redis_commands(stack)
        started = time.monotonic()
        if label == "plain":
            client.submit_many(
                [{"task": "caption", "images": [f"{prefix_uri}{i:05d}.png"],
                  "job_id": f"plain-{i:05d}"} for i in range(jobs)]
            )  # fmt: skip
            run_id = None
        else:
            template: dict[str, Any] = {"task": "caption"}
            if label == "events":
                template["notify"] = [receiver.url]
            run = start_run(
                stores,
                ledger,
                results=settings.gvw_results_uri,
                name=label,
                template=template,
                source=RunSource(kind="prefix", prefix=prefix_uri, suffixes=[".png"]),
                notify=[receiver.url] if label == "events" else (),
            )
            enqueue_prefix(client, stores.list_objects(prefix_uri), template, run=run)
            run.seal()
            run_id = run.run_id
        wait_until(
            lambda rid=run_id: finished(stack, rid, jobs),  # type: ignore[misc]
            timeout_s=600,
            what=f"the {label} pass",
            interval_s=0.5,
        )
        stack.wait_until_settled()
        elapsed_s = time.monotonic() - started
        if label == "events":
            wait_until(
                lambda: (
                    len(receiver.of_type("job.completed")) >= jobs
                    and receiver.of_type("run.completed")
                ),
                timeout_s=120,
                what="every event",
            )
        spent = redis_commands(stack) - commands - idle_per_s * elapsed_s
        requests = proxy.log()[seen:]
        own = [r for r in requests if "/_runs/" in r.path]
        rows[label] = (spent / jobs, len(requests) / jobs, len(own), elapsed_s)

    base_redis, base_s3 = rows["plain"][0], rows["plain"][1]
    print(f"\n{jobs} jobs a pass; the idle fleet sends {idle_per_s:.1f} Redis commands/s "
          "(subtracted)")  # fmt: skip
    print(
        f"{'pass':8} {'Redis/job':>10} {'beyond plain':>13} {'S3/job':>8} "
        f"{'beyond plain':>13} {'run S3 (all)':>13} {'run S3/job':>11} {'seconds':>8}"
    )
    for label, (redis_per_job, s3_per_job, own, elapsed_s) in rows.items():
        print(
            f"{label:8} {redis_per_job:>10.1f} {redis_per_job - base_redis:>+13.1f} "
            f"{s3_per_job:>8.2f} {s3_per_job - base_s3:>+13.2f} {own:>13} "
            f"{own / jobs:>11.3f} {elapsed_s:>8.1f}"
        )
    delays = event_delays(stack, receiver)
    print(
        f"\njob.completed: commit to arrival median {statistics.median(delays['jobs']):.3f} s, "
        f"p99 {percentile(delays['jobs'], 99):.3f} s over {len(delays['jobs'])} events; "
        f"run.completed {delays['run'][0]:.3f} s after the last commit; "
        f"{receiver.bad} bad signatures"
    )
    run_row = rows["run"]
    print(
        f"goal: at most 1 storage request per job for a run, a constant number per run: "
        f"{run_row[2] / jobs:.3f} a job ({run_row[2]} in all for {jobs} jobs)"
    )


def finished(stack: Stack, run_id: str | None, jobs: int) -> bool:
    """Every job of the pass has its record (plain), or its run has finished."""
    if run_id is None:
        paginator = stack.s3.get_paginator("list_objects_v2")
        count = 0
        for page in paginator.paginate(Bucket="results", Prefix="vision/plain-"):
            count += sum(1 for i in page.get("Contents", []) if i["Key"].endswith("result.json"))
        return count >= jobs
    body = stack.redis.client(db=1).hget(f"gvw:run:{run_id}:meta", "finished_at")
    return body is not None


def event_delays(stack: Stack, receiver: Receiver) -> dict[str, list[float]]:
    commits = {}
    for arrived, event in receiver.of_type("job.completed"):
        key = event["data"]["record_uri"].removeprefix("s3://results/")
        record = json.loads(stack.s3.get_object(Bucket="results", Key=key)["Body"].read())
        commits[event["data"]["job_id"]] = (arrived, _seconds(record["completed_at"]))
    jobs = [arrived - committed for arrived, committed in commits.values()]
    last_commit = max(committed for _, committed in commits.values())
    runs = [arrived - last_commit for arrived, _ in receiver.of_type("run.completed")]
    return {"jobs": jobs, "run": runs}


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
