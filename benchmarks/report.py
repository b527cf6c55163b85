"""`gvw report` against merely reading what it shows: jobs per second, and the page's size.

N jobs (default 500; detect results with an overlay, captions, failures) are written as a
results folder on local storage (file://), each with its own picture, a 1600x1200 JPEG with
a photo's grain (an input, or the overlay a detect job drew). In one run, each in a fresh
process:

  read     list the folder, read and parse every record and read every picture's bytes
           (what any report that shows the pictures must do)
  report   the same into one HTML page with embedded thumbnails (worker.exports.gallery
           and worker.exports.report, as `gvw report --images embed` does)

Each prints jobs per second and peak resident memory. Goals: the report makes at least 33
jobs a second on one core (a 2,000-job run's page in a minute; its rate is also given as a
ratio of the read's, which a thumbnail's decode and encode dominate), and the page weighs
under 10 kB a job (a 2,000-job page under 20 MB: it can be mailed or attached to a ticket).

    .venv/bin/python benchmarks/report.py [--jobs 500]
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
sys.path.insert(0, str(HERE))


def picture(index: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    from worker.emulator.scenes import make_scene

    scene = make_scene(1600, 1200, shapes=["red circle", "blue rectangle"], seed=index)
    # a photo's grain: flat synthetic shapes would compress to a tenth of a camera's JPEG
    pixels = np.asarray(scene.image.convert("RGB"), dtype=np.int16)
    grain = np.random.default_rng(index).normal(0, 12, pixels.shape)
    noisy = np.clip(pixels + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_folder(root: Path, jobs: int) -> int:
    pictures = [picture(i) for i in range(8)]
    originals = root / "originals"
    originals.mkdir()
    for i, data in enumerate(pictures):
        (originals / f"{i}.jpg").write_bytes(data)
    total = 0
    for index in range(jobs):
        job_id = f"job-{index:06d}"
        folder = root / "results" / job_id
        folder.mkdir(parents=True)
        data = pictures[index % len(pictures)]
        total += len(data)
        image_uri = f"file://{root}/inbox/{index}.jpg"
        common = {"schema_version": 1, "job_id": job_id, "run": "bench"}
        if index % 20 == 0:
            (root / "inbox").mkdir(exist_ok=True)
            os.link(originals / f"{index % 8}.jpg", root / "inbox" / f"{index}.jpg")
            record = {**common, "task": "detect", "status": "failed", "attempts": 1,
                      "error": {"code": "invalid_image", "message": "cannot decode"},
                      "failed_at": "2026-12-03T09:15:00.000Z",
                      "job": {"task": "detect", "images": [image_uri]}}  # fmt: skip
            (folder / "error.json").write_text(json.dumps(record))
            continue
        overlay = folder / "attempts" / "a1" / "overlay.jpg"
        overlay.parent.mkdir(parents=True)
        os.link(originals / f"{index % 8}.jpg", overlay)  # the same bytes, one copy on disk
        detect = index % 2 == 1
        output = (
            {"objects": [{"label": f"thing-{k}", "box": [1, 2, 300, 400]} for k in range(3)]}
            if detect
            else {"text": "a forklift beside a pallet of boxes"}
        )
        record = {
            **common, "task": "detect" if detect else "caption", "status": "succeeded",
            "images": [{"uri": image_uri}], "output": output,
            "artifacts": {"overlay": f"file://{overlay}"},
            "usage": {"prompt_tokens": 1290, "output_tokens": 80, "cost_usd": 0.000587},
            "completed_at": "2026-12-03T09:14:03.120Z",
        }  # fmt: skip
        if not detect:  # a caption shows its input: the same picture, read from the inbox
            (root / "inbox").mkdir(exist_ok=True)
            os.link(originals / f"{index % 8}.jpg", root / "inbox" / f"{index}.jpg")
            del record["artifacts"]
        (folder / "result.json").write_text(json.dumps(record))
    return total


def run_pass(kind: str, root: Path) -> dict[str, float]:
    import resource

    from worker.exports.gallery import ImageMode, gallery_of
    from worker.exports.report import render_report
    from worker.storage import StoreRouter

    stores = StoreRouter()
    folder = f"file://{root}/results/"
    started = time.perf_counter()
    uris = [u for u in stores.list_prefix(folder) if u.endswith(("result.json", "error.json"))]
    page_bytes = 0
    if kind == "read":
        for uri in uris:
            record = json.loads(stores.get_bytes(uri, max_bytes=64_000_000))
            shown = (record.get("artifacts") or {}).get("overlay")
            if shown is None:
                images = record.get("images") or []
                shown = images[0]["uri"] if images else record["job"]["images"][0]
            stores.get_bytes(shown, max_bytes=64_000_000)
    else:
        gallery = gallery_of(stores, uris, mode=ImageMode.EMBED, link_lifetime_s=3600, limit=10**6)
        page = render_report(gallery, name="bench", source=folder, mode=ImageMode.EMBED,
                             link_lifetime_s=3600)  # fmt: skip
        page_bytes = len(page.encode())
        (root / "report.html").write_text(page)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"jobs": len(uris), "seconds": elapsed, "peak_mb": peak_mb, "page_bytes": page_bytes}


def open_in_browser(page: Path) -> dict[str, float] | None:
    """Debian's chromium through Playwright: how long the page takes to load, and to filter."""
    import shutil

    executable = shutil.which("chromium")
    if executable is None:
        print("browser (no chromium installed: not measured)")
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        tab.goto(page.as_uri(), wait_until="load", timeout=600_000)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        tab.select_option("select[name=label]", "thing-1")
        tab.wait_for_function("() => document.querySelector('#showing').textContent")
        filtered = time.perf_counter() - started
        browser.close()
    return {"loaded_s": loaded, "filtered_s": filtered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--pass", dest="one", choices=("read", "report"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_pass(args.one, args.root)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pictures_bytes = write_folder(root, args.jobs)
        results = {}
        for kind in ("read", "report"):
            done = subprocess.run(
                [sys.executable, __file__, "--pass", kind, "--root", str(root)],
                capture_output=True, text=True, check=True, env={**os.environ},
            )  # fmt: skip
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        opened = open_in_browser(root / "report.html")  # before the folder is removed
    read, report = results["read"], results["report"]
    read_rate = read["jobs"] / read["seconds"]
    report_rate = report["jobs"] / report["seconds"]
    print(f"jobs: {args.jobs}, pictures: {pictures_bytes / 1e6:.1f} MB (1600x1200 JPEG each)")
    print(f"read    {read_rate:8.1f} jobs/s   peak {read['peak_mb']:.0f} MB")
    print(f"report  {report_rate:8.1f} jobs/s   peak {report['peak_mb']:.0f} MB   "
          f"{report_rate / read_rate:.2f}x the read (goal: at least 33 jobs/s)")  # fmt: skip
    share = report["page_bytes"] / pictures_bytes
    if opened is not None:
        print(f"browser {opened['loaded_s']:.2f} s to the page's load event, "
              f"{opened['filtered_s']:.2f} s to filter it by a label (goal: seconds)")  # fmt: skip
    print(f"page    {report['page_bytes'] / 1e6:.2f} MB, {report['page_bytes'] / args.jobs / 1e3:.1f} kB "
          f"a job (goal: under 10 kB), {share:.1%} of the pictures' bytes")  # fmt: skip


if __name__ == "__main__":
    main()
