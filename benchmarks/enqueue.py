"""`gvw enqueue-prefix` at the speed of listing.

20,000 objects on moto's S3 server (behind a proxy that counts requests), a redis-server
as the broker, no worker consuming. In one run:
  listing: the prefix listed alone (what any enqueue must do), objects per second;
  enqueue: the whole enqueue (listing, one listing of the results folder, job ids,
           validation, pipelined sends), objects per second, and the S3 requests it made
           beyond listing the prefix, per object;
  rerun:   the same enqueue again (nothing done yet, everything already queued): what it
           sends (nothing) and what it costs.

    .venv/bin/python benchmarks/enqueue.py [--objects 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.harness

from tests.harness import services
from tests.reliability.fakes import S3Proxy
from worker.producers.bulk import RedisSentLog, enqueue_prefix, run_key
from worker.producers.client import VisionClient
from worker.settings import Settings
from worker.storage import StoreRouter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, services(Path(tmp)) as (redis_server, moto):
        proxy = S3Proxy()
        proxy.start()
        proxy.upstream = moto.endpoint
        try:
            for name, value in moto.env().items():
                os.environ[name] = value
            os.environ["AWS_ENDPOINT_URL_S3"] = proxy.url
            run(args.objects, redis_server.url, proxy)
        finally:
            proxy.stop()


def run(count: int, redis_url: str, proxy: S3Proxy) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"])
    for bucket in ("inbox", "results"):
        s3.create_bucket(Bucket=bucket)
    print(f"putting {count:,} objects ...", flush=True)
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(Bucket="inbox", Key=f"bench/{i:06d}.jpg", Body=b"x"),
                range(count),
            )
        )
    prefix = "s3://inbox/bench/"
    settings = Settings(
        celery_broker_url=f"{redis_url}/0",
        gvw_redis_url=f"{redis_url}/1",
        gvw_results_uri="s3://results/vision",
    )
    stores = StoreRouter()
    client = VisionClient(settings=settings, stores=stores)
    template = {"task": "caption"}

    seen = len(proxy.log())
    started = time.perf_counter()
    listed = sum(1 for _ in stores.list_objects(prefix))
    listing_s = time.perf_counter() - started
    listing_requests = len(proxy.log()) - seen

    import redis

    sent = RedisSentLog(
        redis.Redis.from_url(f"{redis_url}/1"), run_key(prefix, template), ttl_s=3600
    )
    rows = {}
    for label in ("enqueue", "rerun"):
        seen = len(proxy.log())
        started = time.perf_counter()
        summary = enqueue_prefix(client, stores.list_objects(prefix), template, sent=sent)
        elapsed_s = time.perf_counter() - started
        requests = proxy.log()[seen:]
        beyond = [r for r in requests if not _lists(r.path, "inbox", "bench/")]
        rows[label] = (summary, elapsed_s, len(beyond))
    queued = redis.Redis.from_url(f"{redis_url}/0").llen("vision")

    print(f"\n{listed:,} objects; listing alone: {listing_s:.2f} s, {listed / listing_s:,.0f}/s, "
          f"{listing_requests} requests")  # fmt: skip
    print(f"{'':8} {'submitted':>10} {'skipped':>8} {'seconds':>8} {'objects/s':>10} "
          f"{'/ listing':>10} {'S3 req beyond listing':>22} {'per object':>11}")  # fmt: skip
    for label, (summary, elapsed_s, beyond) in rows.items():
        skipped = summary.skipped_done + summary.skipped_queued
        print(
            f"{label:8} {len(summary.submitted):>10,} {skipped:>8,} {elapsed_s:>8.2f} "
            f"{listed / elapsed_s:>10,.0f} {(listed / elapsed_s) / (listed / listing_s):>9.2f}x "
            f"{beyond:>22} {beyond / listed:>11.5f}"
        )
    enqueue_s = rows["enqueue"][1]
    print(
        f"\nenqueue rate {listed / enqueue_s:,.0f}/s against listing {listed / listing_s:,.0f}/s: "
        f"{listing_s / enqueue_s:.2f}x (goal: at least 0.5); S3 requests beyond the listing "
        f"{rows['enqueue'][2] / listed:.5f} per object (goal: at most 0.01); "
        f"{queued:,} messages queued for {listed:,} objects"
    )


def _lists(path: str, bucket: str, key_prefix: str) -> bool:
    """A ListObjectsV2 of `bucket` under `key_prefix` (the listing every enqueue makes)."""
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    return (
        parts.path.strip("/") == bucket
        and "list-type" in query
        and query.get("prefix", [""])[0].startswith(key_prefix)
    )


if __name__ == "__main__":
    main()
