"""The same jobs interactive and through the Gemini Batch API, on the emulator.

500 caption jobs over 500 distinct images on 2 `celery worker` processes (real
redis-server, moto's S3 server, the emulator over HTTP answering batches 2 s after
creation), once interactive and once with `options.mode: "batch"`, in one run. Prints
model calls, batch jobs, the cost at the shipped prices from each result's
`usage.cost_usd` (goal: batch at most 55% of interactive), and the worker's own time per
job (every stage but the model call; in batch mode both runs: the one that prepared the
request and the one that published the answer).

    .venv/bin/python benchmarks/batch.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.harness

from tests.harness import Stack, running_stack
from worker.emulator.scenes import make_scene
from worker.producers.progress import Progress

BATCH_ENV = {
    "GVW_BATCH_MAX_WAIT_S": "2",
    "GVW_BATCH_POLL_S": "1",
    "GVW_BATCH_MAX_REQUESTS": "1000",
}


def run(stack: Stack, images: list[bytes], mode: str) -> dict[str, Any]:
    uris = [stack.put(f"bench-{mode}/{uuid.uuid4().hex}.png", data) for data in images]
    before = stack.emulator.stats()
    started = time.monotonic()
    ids = [
        stack.submit({"task": "caption", "images": [uri], "options": {"mode": mode}})
        for uri in uris
    ]
    bar = Progress(mode, len(ids))
    records = []
    for job_id in ids:
        records.append(stack.record(job_id, timeout_s=900))
        bar.update(len(records))
    bar.close()
    elapsed_s = time.monotonic() - started
    after = stack.emulator.stats()
    failed = [r for r in records if r["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{mode}: {len(failed)} failed: {failed[0]}")
    return {
        "calls": after["generate_calls"] - before["generate_calls"],
        "batch_requests": after["batch_requests_total"] - before["batch_requests_total"],
        "batches": after["batches_created"] - before["batches_created"],
        "usd": sum(r["usage"]["cost_usd"] for r in records),
        "worker_ms": statistics.median(
            sum(v for k, v in r["timings_ms"].items() if not k.endswith("ask")) for r in records
        ),
        "modes": {r["mode"] for r in records},
        "elapsed_s": elapsed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    images = [
        make_scene(320, 240, shapes=["red circle", "blue rectangle"], seed=seed).png_bytes()
        for seed in range(args.jobs)
    ]
    logs = Path(tempfile.mkdtemp(prefix="gvw-bench-batch-"))
    print(f"worker logs: {logs}")
    with running_stack(
        logs, workers=2, concurrency=4, extra_env=BATCH_ENV, show_logs=False
    ) as stack:
        stack.emulator.configure(batch_done_after_s=2.0)
        rows = {mode: run(stack, images, mode) for mode in ("interactive", "batch")}
    print(
        f"\n{args.jobs} caption jobs, 2 workers x 4 threads\n"
        f"{'mode':12} {'model calls':>12} {'batch jobs':>11} {'batch requests':>15} "
        f"{'cost':>11} {'worker time/job':>16} {'wall':>7}"
    )
    for mode, r in rows.items():
        print(
            f"{mode:12} {r['calls']:>12} {r['batches']:>11} {r['batch_requests']:>15} "
            f"${r['usd']:>10.5f} {r['worker_ms']:>13.1f} ms {r['elapsed_s']:>6.1f}s"
        )
    interactive, batch = rows["interactive"], rows["batch"]
    print(
        f"\nbatch cost / interactive cost: {batch['usd'] / interactive['usd']:.1%} "
        f"(goal: at most 55%); results record mode {sorted(batch['modes'])}"
    )


if __name__ == "__main__":
    main()
