"""A worker's peak memory for a job of many large images, against a one-image job.

Each case runs `worker.pipeline.flow.run` in a fresh Python process (local storage, the Gemini
emulator in a process of its own, so only the worker's memory is measured) and reports
that process's peak resident set (`ru_maxrss`). The baseline, measured in the same run, is
the same 24-megapixel JPEG in a one-image caption job; the attack of issue 9 is a
`compare` job naming it 20 times. Images are prepared one at a time, so the 20-image job
should cost about what the one-image job costs, not 20 times the decoded image.

    .venv/bin/python benchmarks/memory.py [--images 20] [--width 6000 --height 4000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import free_port, wait_until


def run_case(root: Path, base_url: str, count: int) -> None:
    """In the child process: one job of `count` copies of the image; print the peak."""
    from worker.contract.jobs import parse_job
    from worker.observability import StageTimer
    from worker.pipeline.flow import run
    from worker.runtime import build_ports
    from worker.settings import Settings

    settings = Settings(
        gemini_base_url=base_url,
        gemini_api_key="bench",
        gvw_results_uri=f"file://{root}/out",
        gvw_allowed_inputs=f"file://{root}/in/",
    )
    ports = build_ports(settings, local=True)
    uri = f"file://{root}/in/big.jpg"
    task = "compare" if count > 1 else "caption"
    job = parse_job(
        {"job_id": f"mem-{count}-{time.time_ns()}", "task": task, "images": [uri] * count}
    )
    timer = StageTimer()
    started = time.perf_counter()
    outcome = run(job, ports, timer=timer)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"status": outcome.status, "peak_mib": peak_mib, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        run_case(Path(args.root), args.base_url, args.case)
        return

    from worker.emulator.scenes import make_scene

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        scene = make_scene(args.width, args.height, shapes=["red circle", "blue rectangle"])
        (root / "in" / "big.jpg").write_bytes(scene.jpeg_bytes(quality=90))
        port = free_port()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "emulator", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(base_url), timeout_s=30, what="the emulator")
            figures = {}
            for count in (1, args.images):
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--case",
                        str(count),
                        "--root",
                        str(root),
                        "--base-url",
                        base_url,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures[count] = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    megapixels = args.width * args.height / 1e6
    print(f"{'job':34} {'status':10} {'peak RSS':>10} {'time':>8}")
    for count, figure in figures.items():
        name = f"{count} x {megapixels:.0f} MP JPEG ({'compare' if count > 1 else 'caption'})"
        print(
            f"{name:34} {figure['status']:10} {figure['peak_mib']:8.0f} MiB "
            f"{figure['seconds']:7.1f}s"
        )
    ratio = figures[args.images]["peak_mib"] / figures[1]["peak_mib"]
    decoded_mib = args.width * args.height * 3 / 2**20
    print(
        f"\n{args.images}-image peak / 1-image peak: {ratio:.2f}x "
        f"(one decoded image is {decoded_mib:.0f} MiB; holding all {args.images} would add "
        f"{decoded_mib * (args.images - 1):.0f} MiB)"
    )


def _answers(base_url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/_emulator/stats", timeout=2) as response:
        return bool(response.status == 200)


if __name__ == "__main__":
    main()
