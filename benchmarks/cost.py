"""What a job costs the fleet: bytes, model calls, dollars and the day's budget.

Real `celery worker` processes, redis-server, moto's S3 server behind a logging proxy,
and the Gemini emulator over HTTP; every baseline runs in the same process, on the same
machine, in the same run.

1. Transport, per job, for one ~25 MB JPEG (24 MP, caption): bytes the worker read from
   S3, bytes it sent to Gemini, bytes Gemini fetched itself, and the worker's own time
   (its timings without the model call) against one Pillow decode of the same bytes, for
   GVW_TRANSPORT=url against inline (GVW_INLINE_MAX_BYTES raised to the API's 100 MB)
   and file_api.
2. The answer cache: 100 jobs over 10 distinct requests (each asked 10 times, under its
   own job id and object key), with GVW_ANSWER_CACHE_TTL_S=3600 against 0: model calls
   and dollars at the shipped prices.
3. The day's budget: jobs worth about two days of GVW_BUDGET_USD_PER_DAY; each "day"
   (the budget's Redis key, dropped to open the next) runs until it has no room, then
   the next opens: the most spent in any day against the budget, and no job lost.

    .venv/bin/python benchmarks/cost.py [--mb 25] [--skip transport,cache,budget]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.harness

import numpy as np
from PIL import Image

from tests.harness import Stack, running_stack, wait_until
from tests.reliability.fakes import S3Proxy
from worker.emulator.scenes import make_scene
from worker.producers.progress import Progress

LOGS = Path(tempfile.mkdtemp(prefix="gvw-bench-cost-"))


@contextmanager
def stack_behind_proxy(name: str, env: dict[str, str], workers: int = 1) -> Iterator[Any]:
    proxy = S3Proxy()
    proxy.start()
    (LOGS / name).mkdir()
    try:
        with running_stack(
            LOGS / name,
            workers=workers,
            concurrency=4,
            extra_env={**env, "AWS_ENDPOINT_URL_S3": proxy.url},
            show_logs=False,
        ) as stack:
            proxy.upstream = stack.moto.endpoint
            yield stack, proxy
    finally:
        proxy.stop()


def photo_jpeg(megabytes: float, seed: int) -> bytes:
    """A 24 MP photo-like JPEG (sensor noise, 4:4:4) of about `megabytes`."""
    scene = make_scene(6000, 4000, shapes=["red circle", "blue rectangle"], seed=seed)
    pixels = np.asarray(scene.image.convert("RGB"), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-40, 41, pixels.shape, dtype=np.int16)
    photo = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    quality = 93 if megabytes >= 20 else 85
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def decode_s(data: bytes, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def worker_s(record: dict[str, Any]) -> float:
    """The worker's own time: every stage but the model call."""
    return sum(v for k, v in record["timings_ms"].items() if k != "ask") / 1000


# --- 1. transport ----------------------------------------------------------------------


def transport(megabytes: float) -> None:
    data = photo_jpeg(megabytes, seed=1)
    decode = decode_s(data)
    print(f"\n1. Transport: one {len(data) / 1e6:.1f} MB 24 MP JPEG, caption, per job")
    print(f"   one Pillow decode of it: {decode * 1000:.0f} ms")
    big = {"GVW_MAX_INPUT_BYTES": "100000000"}
    modes = {
        "url": {"GVW_TRANSPORT": "url"},
        "inline": {**big, "GVW_TRANSPORT": "inline", "GVW_INLINE_MAX_BYTES": "100000000"},
        "file_api": {**big, "GVW_TRANSPORT": "file_api"},
    }
    rows = {}
    for mode, env in modes.items():
        with stack_behind_proxy(f"transport-{mode}", env) as (stack, proxy):
            key = f"bench/{uuid.uuid4().hex}.jpg"
            uri = stack.put(key, data)
            before = stack.emulator.stats()
            seen = len(proxy.log())
            record = stack.record(stack.submit({"task": "caption", "images": [uri]}), 600)
            after = stack.emulator.stats()
            log = proxy.log()[seen:]
        if record["status"] != "succeeded":
            raise SystemExit(f"{mode}: {record}")
        read = sum(e.body_bytes for e in log if e.key == key and "Boto3" in e.user_agent)
        rows[mode] = {
            "transport": record["images"][0]["transport"],
            "read": read,
            "sent": after["bytes_received_total"] - before["bytes_received_total"],
            "fetched": after["url_bytes_total"] - before["url_bytes_total"],
            "worker_s": worker_s(record),
        }
    print(
        f"   {'mode':9} {'transport':>9} {'read from S3':>13} {'sent to Gemini':>15} "
        f"{'Gemini fetched':>15} {'worker time':>12} {'/ decode':>9}"
    )
    for mode, r in rows.items():
        print(
            f"   {mode:9} {r['transport']:>9} {r['read'] / 1024:>10,.0f} KB "
            f"{r['sent'] / 1024:>12,.0f} KB {r['fetched'] / 1024:>12,.0f} KB "
            f"{r['worker_s'] * 1000:>9.0f} ms {r['worker_s'] / decode:>8.2f}x"
        )
    url, inline = rows["url"], rows["inline"]
    print(
        f"   url against inline: {inline['read'] / max(url['read'], 1):,.0f}x fewer bytes read, "
        f"{inline['sent'] / max(url['sent'], 1):,.0f}x fewer sent; worker read "
        f"{url['read'] / 1024:.0f} KB (goal: at most 256 KB), worker time "
        f"{url['worker_s'] / decode:.2f}x one decode (goal: at most 0.2x)"
    )


# --- 2. the answer cache ---------------------------------------------------------------------


def answer_cache(distinct: int = 10, repeats: int = 10) -> None:
    print(f"\n2. The answer cache: {distinct * repeats} jobs over {distinct} distinct requests")
    scenes = [
        make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=s).png_bytes()
        for s in range(distinct)
    ]
    rows = {}
    for label, ttl in (("cache on", "3600"), ("cache off", "0")):
        with stack_behind_proxy(f"cache-{ttl}", {"GVW_ANSWER_CACHE_TTL_S": ttl}, workers=2) as (
            stack,
            _,
        ):
            # every repeat under its own object key and job id, all submitted at once
            uris = [
                [stack.put(f"cache/{uuid.uuid4().hex}.png", png) for png in scenes]
                for _ in range(repeats)
            ]
            job = {"task": "detect", "prompt": "the shapes", "options": {"thinking_budget": 0}}
            ids = [stack.submit({**job, "images": [u]}) for batch in uris for u in batch]
            bar = Progress(label, len(ids))
            records = []
            for job_id in ids:
                records.append(stack.record(job_id, 600))
                bar.update(len(records))
            bar.close()
            calls = stack.model_calls()
        failed = [r for r in records if r["status"] != "succeeded"]
        if failed:
            raise SystemExit(f"{label}: {failed[0]}")
        rows[label] = {
            "calls": calls,
            "usd": sum(r["usage"]["cost_usd"] or 0 for r in records),
            "reused": sum(1 for r in records if r.get("answer_reused_from")),
        }
    print(f"   {'':10} {'model calls':>12} {'reused':>7} {'cost':>11}")
    for label, r in rows.items():
        print(f"   {label:10} {r['calls']:>12} {r['reused']:>7} ${r['usd']:>10.6f}")
    on, off = rows["cache on"], rows["cache off"]
    print(
        f"   with the cache: {on['calls']} calls (goal: {distinct}), "
        f"{off['usd'] / max(on['usd'], 1e-12):.1f}x cheaper"
    )


# --- 3. the day's budget ----------------------------------------------------------------------


def budget(jobs: int = 45, budget_usd: float = 0.003) -> None:
    print(f"\n3. The day's budget: ${budget_usd} a day, {jobs} jobs worth about two days")
    env = {
        "GVW_BUDGET_USD_PER_DAY": str(budget_usd),
        "GVW_RATE_LIMIT_MAX_WAIT_S": "0.5",
        "GVW_RETRY_MAX_S": "2",
    }
    with stack_behind_proxy("budget", env, workers=2) as (stack, _):
        job = {"task": "caption", "options": {"thinking_budget": 0, "max_output_tokens": 100}}
        scenes = [
            make_scene(320, 240, shapes=["red circle"], seed=s).png_bytes() for s in range(jobs)
        ]
        ids = [
            stack.submit({**job, "images": [stack.put(f"b/{uuid.uuid4().hex}.png", png)]})
            for png in scenes
        ]
        days: list[tuple[float, int]] = []
        for _ in range(10):
            done = full_day(stack, ids)
            key, spent = day_spend(stack)
            days.append((spent, done))
            if done == len(ids):
                break
            stack.redis.client(db=1).delete(key)  # the next day opens
        failed = sum(1 for j in ids if stack.record(j, 60)["status"] != "succeeded")
        calls = stack.model_calls()
    print(f"   {'day':>4} {'spent':>10} {'of budget':>10} {'jobs done by then':>18}")
    for number, (spent, done) in enumerate(days, 1):
        print(f"   {number:>4} ${spent:>9.6f} {spent / budget_usd:>9.1%} {done:>18}")
    most = max(spent for spent, _ in days)
    print(
        f"   the most spent in a day: ${most:.6f}, {most / budget_usd:.1%} of the budget; "
        f"{calls} model calls for {len(ids)} jobs, {failed} failed, none lost"
    )


def day_spend(stack: Stack) -> tuple[str, float]:
    client = stack.redis.client(db=1)
    keys = list(client.scan_iter(match="gvw:budget:*"))
    if not keys:
        return "", 0.0
    values = {k.decode(): int(v) for k, v in client.hgetall(keys[0]).items()}
    return keys[0].decode(), values.get("spent", 0) / 1e6


def full_day(stack: Stack, ids: list[str]) -> int:
    """Wait until every job is done, or nothing is in flight and every waiting job was
    refused twice since the last commit. Returns the jobs done."""
    client = stack.redis.client(db=1)
    state = {"done": -1, "waits": 0}

    def waits() -> int:
        return sum(int(client.get(k) or 0) for k in client.scan_iter(match="gvw:deliveries:*:-1"))

    def done_count() -> int:
        return sum(
            1
            for j in ids
            if stack.s3.list_objects_v2(Bucket="results", Prefix=f"vision/{j}/result.json").get(
                "KeyCount"
            )
        )

    def full() -> bool:
        done, now = done_count(), waits()
        if done != state["done"]:
            state.update(done=done, waits=now)
            return False
        if done == len(ids):
            return True
        values = {k.decode(): int(v) for k, v in client.hgetall(day_spend(stack)[0]).items()}
        return values.get("reserved", 0) == 0 and now - state["waits"] >= 2 * (len(ids) - done)

    wait_until(full, timeout_s=300, what="the day's budget to be spent", interval_s=0.5)
    return state["done"]


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {
    "transport": lambda args: transport(args.mb),
    "cache": lambda args: answer_cache(),
    "budget": lambda args: budget(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=25.0)
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"worker logs: {LOGS}")
    for name, section in SECTIONS.items():
        if name not in skip:
            section(args)


if __name__ == "__main__":
    main()
