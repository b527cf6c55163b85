"""The worker's own time per job, by stage, against one plain Pillow decode of the same image.

Runs `worker.pipeline.flow.run` in this process on local storage, with the Gemini emulator
(in-process, no added latency) as the model. The model's own time is taken out of the
"ask" stage using the emulator's per-request server time, so "ask" is what the worker
spends building, sending and receiving the request. Each figure is the median of
--repeat runs.

Every task runs; compare gets the image twice and its figures are per image.

    .venv/bin/python benchmarks/overhead.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from worker.contract.jobs import parse_job
from worker.emulator.scenes import make_scene
from worker.emulator.server import EmulatorServer
from worker.observability import StageTimer
from worker.pipeline.flow import run
from worker.runtime import build_ports
from worker.settings import Settings

STAGES = ("fetch", "prepare", "ask", "read", "publish")
TASKS: dict[str, dict[str, object]] = {
    "caption": {},
    "vqa": {"prompt": "How many shapes are there?"},
    "classify": {"labels": ["circle", "dog", "rectangle"]},
    "detect": {},
    "segment": {},
    "compare": {},
    "custom": {"prompt": "Count the shapes.", "response_schema": {"type": "object"}},
}


def photo_like_jpeg(width_px: int, height_px: int) -> bytes:
    """A synthetic scene with sensor-like noise, so the JPEG weighs what a photo does."""
    scene = make_scene(width_px, height_px, shapes=["red circle", "blue rectangle"], seed=4)
    pixels = np.asarray(scene.image, dtype=np.int16)
    noise = np.random.default_rng(0).normal(0, 6, pixels.shape).astype(np.int16)
    noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def plain_png(width_px: int, height_px: int) -> bytes:
    scene = make_scene(width_px, height_px, shapes=["green triangle", "orange rectangle"], seed=5)
    return scene.png_bytes()


def decode_s(data: bytes) -> float:
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    inputs = {
        "12 MP JPEG (4000x3000)": ("photo.jpg", photo_like_jpeg(4000, 3000)),
        "1 MP PNG (1250x800)": ("plain.png", plain_png(1250, 800)),
    }
    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(api_key="bench") as emulator:
        root = Path(tmp)
        (root / "in").mkdir()
        settings = Settings(
            gemini_base_url=emulator.base_url,
            gemini_api_key="bench",
            gvw_results_uri=f"file://{root}/out",
            gvw_allowed_inputs=f"file://{root}/in/",
        )
        ports = build_ports(settings, local=True)
        print(
            f"{'image':24} {'task':7} "
            + " ".join(f"{s:>9}" for s in STAGES)
            + f" {'total':>9} {'decode':>9} {'ratio':>7}"
        )
        print(
            f"{'':24} {'':7} "
            + " ".join(f"{'ms':>9}" for _ in STAGES)
            + f" {'ms':>9} {'ms':>9} {'x':>7}"
        )
        for name, (filename, data) in inputs.items():
            path = root / "in" / filename
            path.write_bytes(data)
            for task, extra in TASKS.items():
                per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
                totals: list[float] = []
                # compare needs two images: its figures are per image
                images = 2 if task == "compare" else 1
                for i in range(args.repeat):
                    job = parse_job(
                        {
                            "job_id": f"b-{task}-{filename}-{i}",
                            "task": task,
                            "images": [f"file://{path}"] * images,
                            **extra,
                        }
                    )
                    timer = StageTimer()
                    run(job, ports, timer=timer)
                    server_s = emulator.stats()["requests"][-1]["duration_ms"] / 1000
                    timer.seconds["ask"] -= server_s
                    for stage in STAGES:
                        per_stage[stage].append(timer.seconds.get(stage, 0.0) / images)
                    totals.append(sum(timer.seconds.get(s, 0.0) for s in STAGES) / images)
                decode = statistics.median(decode_s(data) for _ in range(args.repeat))
                total = statistics.median(totals)
                cells = " ".join(f"{statistics.median(per_stage[s]) * 1000:9.1f}" for s in STAGES)
                print(
                    f"{name:24} {task:7} {cells} {total * 1000:9.1f} {decode * 1000:9.1f} "
                    f"{total / decode:7.2f}"
                )
        print(
            f"\nmedian of {args.repeat} runs; 'ask' excludes the emulator's own server time; "
            "ratio = worker total / one plain Pillow decode of the same bytes"
        )


if __name__ == "__main__":
    main()
