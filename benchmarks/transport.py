"""Bytes sent to Gemini and uploads, with the fleet-wide File API cache and without it.

50 jobs over 5 distinct 25 MB images on 2 `celery worker` processes (real redis-server,
moto's S3 server, the Gemini emulator over HTTP). The same workload runs twice in one go:
  cached: the worker as shipped (one upload per image for the whole fleet)
  naive:  entries never cached (GVW_FILE_CACHE_MARGIN_S above the 48 h file lifetime),
          so every job uploads its image again
Latency is the worker's own "ask" stage (upload + generateContent) from result.json:
the first use of each image (5 jobs, one per image) against the 45 later uses.

    .venv/bin/python benchmarks/transport.py [--jobs 50] [--images 5] [--mb 25]
"""

from __future__ import annotations

import argparse
import io
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


def big_png(side_px: int, seed: int) -> bytes:
    """An uncompressed PNG (~3 bytes a pixel): 25 MB at 2887x2887."""
    scene = make_scene(side_px, side_px, shapes=3, seed=seed)
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def run_workload(stack: Stack, images: list[bytes], jobs: int, *, label: str) -> dict[str, Any]:
    uris = [stack.put(f"bench/{uuid.uuid4().hex}.png", data) for data in images]
    stats_before = stack.emulator.stats()
    bar = Progress(label, jobs)
    started = time.monotonic()
    # first use of each image, together
    first_ids = [stack.submit({"task": "caption", "images": [uri]}) for uri in uris]
    first = []
    for job_id in first_ids:
        first.append(stack.record(job_id, timeout_s=600))
        bar.update(len(first))
    # then every later use at once
    later_ids = [
        stack.submit({"task": "caption", "images": [uris[i % len(uris)]]})
        for i in range(jobs - len(uris))
    ]
    later = []
    for job_id in later_ids:
        later.append(stack.record(job_id, timeout_s=600))
        bar.update(len(first) + len(later))
    bar.close()
    elapsed_s = time.monotonic() - started
    stats = stack.emulator.stats()
    failed = [r for r in first + later if r["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {failed[0]}")
    return {
        "uploads": stats["uploads_completed"] - stats_before["uploads_completed"],
        "bytes": stats["bytes_received_total"] - stats_before["bytes_received_total"],
        "first_ask_ms": statistics.median(r["timings_ms"]["ask"] for r in first),
        "later_ask_ms": statistics.median(r["timings_ms"]["ask"] for r in later),
        "elapsed_s": elapsed_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--mb", type=float, default=25.0)
    args = parser.parse_args()

    side_px = int((args.mb * 1_000_000 / 3) ** 0.5)
    images = [big_png(side_px, seed) for seed in range(args.images)]
    sizes_mb = [len(d) / 1e6 for d in images]
    print(
        f"{args.jobs} jobs over {args.images} images of {statistics.mean(sizes_mb):.1f} MB "
        f"({side_px}x{side_px} PNG) on 2 workers x 4 threads"
    )
    results: dict[str, dict[str, Any]] = {}
    modes = {"cached": {}, "naive": {"GVW_FILE_CACHE_MARGIN_S": str(49 * 3600)}}
    logs = Path(tempfile.mkdtemp(prefix="gvw-bench-transport-"))
    print(f"worker logs: {logs}")
    for mode, env in modes.items():
        (logs / mode).mkdir()
        with running_stack(
            logs / mode,
            workers=2,
            concurrency=4,
            extra_env={**env, "GVW_MAX_INPUT_BYTES": "100000000"},
            show_logs=False,
        ) as stack:
            results[mode] = run_workload(stack, images, args.jobs, label=mode)
    cached, naive = results["cached"], results["naive"]
    print(
        f"\n{'':8} {'uploads':>8} {'MB sent':>9} {'ask, first use':>15} {'ask, later use':>15} "
        f"{'wall':>7}"
    )
    for mode in ("cached", "naive"):
        r = results[mode]
        print(
            f"{mode:8} {r['uploads']:>8} {r['bytes'] / 1e6:>9.1f} {r['first_ask_ms']:>12.0f} ms "
            f"{r['later_ask_ms']:>12.0f} ms {r['elapsed_s']:>6.1f}s"
        )
    print(
        f"\nnaive / cached: {naive['bytes'] / cached['bytes']:.1f}x the bytes, "
        f"{naive['uploads'] / max(cached['uploads'], 1):.1f}x the uploads"
    )
    print(
        f"uploads == distinct images: {cached['uploads'] == args.images} "
        f"({cached['uploads']} uploads, {args.images} images)"
    )


if __name__ == "__main__":
    main()
