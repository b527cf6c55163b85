"""`gvw export` against merely reading the records: records per second, and peak memory.

N records (default 100,000; detect results with objects, captions, failures) are written as
a results folder on local storage (file://). In one run, each in a fresh process:

  read     list the folder and read and parse every record (what any export must do)
  export   the same records into a Parquet dataset (worker.exports.writer)

Each prints records per second and the process's peak resident memory (ru_maxrss); the
export's rate is also given as a ratio of the read's (goal: at least 0.5x) and its peak
memory against the goal (under 300 MB for 100,000 records).

    .venv/bin/python benchmarks/export.py [--records 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def record(index: int) -> dict[str, object]:
    job_id = f"job-{index:07d}"
    common = {"schema_version": 1, "job_id": job_id, "run": "bench-run"}
    if index % 20 == 0:
        return {
            **common, "task": "custom", "status": "failed", "attempts": 3,
            "error": {"code": "model_output_invalid", "message": "not JSON",
                      "raw_text": "the model said {" * 20},
            "failed_at": "2026-12-03T09:15:00.000Z",
            "job": {"task": "custom", "images": [f"s3://inbox/{index}.jpg"]},
        }  # fmt: skip
    output: dict[str, object]
    if index % 2:
        task = "detect"
        output = {"objects": [
            {"label": f"thing-{k}", "box_2d": [10, 20, 300, 400], "box": [20, 10, 400, 300]}
            for k in range(index % 7)
        ]}  # fmt: skip
    else:
        task, output = "caption", {"text": "a forklift beside a pallet of boxes " * 4}
    return {
        **common, "task": task, "status": "succeeded", "model": "gemini-2.5-flash",
        "mode": "interactive",
        "images": [{"uri": f"s3://inbox/{index}.jpg", "sha256": "ab" * 32,
                    "mime_type": "image/jpeg", "width": 4032, "height": 3024,
                    "transport": "inline"}],
        "output": output,
        "usage": {"prompt_tokens": 1290, "output_tokens": 80, "thoughts_tokens": 0,
                  "cost_usd": 0.000587},
        "warnings": [], "attempt": 1, "timings_ms": {"fetch": 12.5, "ask": 900.1},
        "completed_at": "2026-12-03T09:14:03.120Z",
    }  # fmt: skip


def write_records(root: Path, count: int) -> None:
    for index in range(count):
        folder = root / "vision" / f"job-{index:07d}"
        folder.mkdir(parents=True)
        name = "error.json" if index % 20 == 0 else "result.json"
        (folder / name).write_text(json.dumps(record(index)))


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from worker.storage import LocalStore
stores = LocalStore()
base = {base!r}
started = time.perf_counter()
uris = [u for u in stores.list_prefix(base) if u.endswith(("/result.json", "/error.json"))]
if {mode!r} == "read":
    for uri in uris:
        json.loads(stores.get_bytes(uri, max_bytes=64_000_000))
    count = len(uris)
else:
    from worker.exports.writer import export_records
    count = export_records(stores, uris, {dest!r}).added
elapsed = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"count": count, "seconds": elapsed, "peak_mb": peak_mb}}))
"""


def run(mode: str, base: str, dest: str) -> dict[str, float]:
    code = CHILD.format(repo=str(HERE), base=base, dest=dest, mode=mode)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing {args.records:,} records ...", flush=True)
        started = time.perf_counter()
        write_records(root, args.records)
        print(f"  {time.perf_counter() - started:.1f} s", flush=True)
        base = f"file://{root}/vision/"
        dest = f"file://{root}/datasets/bench"
        read = run("read", base, dest)
        export = run("export", base, dest)
        size_mb = sum(p.stat().st_size for p in (root / "datasets").rglob("*.parquet")) / 1e6
    print(f"\n{'':8} {'records':>9} {'seconds':>8} {'records/s':>10} {'peak MB':>8}")
    for label, row in (("read", read), ("export", export)):
        print(
            f"{label:8} {row['count']:>9,.0f} {row['seconds']:>8.1f} "
            f"{row['count'] / row['seconds']:>10,.0f} {row['peak_mb']:>8.0f}"
        )
    ratio = (export["count"] / export["seconds"]) / (read["count"] / read["seconds"])
    print(
        f"\nexport rate {ratio:.2f}x the rate of merely reading the records (goal: at least "
        f"0.5x); peak memory {export['peak_mb']:.0f} MB for {args.records:,} records (goal: "
        f"under 300 MB); dataset {size_mb:.1f} MB; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
