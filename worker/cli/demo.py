"""`gvw demo`: the whole pipeline on embedded defaults, no services and no API key.

A real Celery worker (thread pool) runs in this process on an in-memory broker; storage is
`LocalStore` under the demo folder; Gemini is the bundled emulator, in-process, looking at
synthetic scenes it can answer about truthfully. Every job goes through the real
`vision.analyze` task, exactly as in production. With GEMINI_API_KEY set and `--images
DIR`, the same jobs run on your own images against Google.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image

_SCHEMA = {
    "type": "object",
    "properties": {
        "shape_count": {"type": "integer"},
        "colours": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["shape_count", "colours"],
}
_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif", ".tiff"}

# Narrower than this, a table of four columns shows too little of any answer to be worth
# it: the terminal wraps its lines instead.
MIN_TABLE_WIDTH_CHARS: Final = 60
# The answer gives way first, down to this; only then do the other columns.
_MIN_ANSWER_CHARS: Final = 16
_COLUMN_GAP: Final = "  "


def run_demo(*, workdir: str, images_dir: str | None, model: str | None) -> int:
    root = Path(workdir).resolve()
    inputs = root / "inputs"
    results = root / "results"
    inputs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)

    from worker.settings import get_settings

    base = get_settings()
    emulator = None
    if images_dir:
        if not base.api_key:
            print("gvw demo: --images needs GEMINI_API_KEY (or GOOGLE_API_KEY)", file=sys.stderr)
            return 2
        source = Path(images_dir).resolve()
        jobs = _jobs_for_user_images(source)
        allowed_inputs = f"file://{source}/"
        base_url = base.gemini_base_url
        api_key = base.api_key
        where = base_url or "Google's Gemini API"
    else:
        from worker.emulator.server import EmulatorServer

        emulator = EmulatorServer(api_key="demo-key")
        emulator.start()
        emulator.configure(batch_done_after_s=1.0)  # Google's batches take up to 24 h
        jobs = _jobs_for_scenes(inputs)
        allowed_inputs = f"file://{inputs}/"
        base_url = emulator.base_url
        api_key = "demo-key"
        where = f"the Gemini emulator at {base_url}"
    try:
        return _run(
            jobs,
            root=root,
            results=results,
            allowed_inputs=allowed_inputs,
            base_url=base_url,
            api_key=api_key,
            model=model,
            where=where,
        )
    finally:
        if emulator is not None:
            emulator.stop()


def _run(
    jobs: list[dict[str, Any]],
    *,
    root: Path,
    results: Path,
    allowed_inputs: str,
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    where: str,
) -> int:
    from pydantic import SecretStr

    from worker import runtime
    from worker.queue.app import analyze, app
    from worker.settings import get_settings

    settings = get_settings().model_copy(
        update={
            "gemini_base_url": base_url,
            "gemini_api_key": SecretStr(api_key) if api_key else None,
            "gvw_results_uri": f"file://{results}",
            "gvw_allowed_inputs": allowed_inputs,
            "gvw_retry_base_s": 0.5,
            "gvw_retry_max_s": 5.0,
            # the batch job goes as soon as it waits, and is followed closely
            "gvw_batch_max_wait_s": 0.2,
            "gvw_batch_poll_s": 0.5,
            **({"gvw_model": model} if model else {}),
        }
    )
    runtime.set_ports(runtime.build_ports(settings, local=True))
    # an embedded broker and result store: nothing to install or start. Celery reads
    # these two variables ahead of its own configuration.
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["CELERY_RESULT_BACKEND"] = "cache+memory://"
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        broker_transport_options={},
        result_backend_transport_options={},
    )

    from celery.contrib.testing.worker import start_worker

    from worker.observability import configure_logging, send_logs_to

    # the terminal is for progress and results; the worker's own lines go to a file
    log_path = root / "worker.log"
    send_logs_to(str(log_path))
    configure_logging(settings.gvw_log_level, fmt=settings.gvw_log_format, secrets=(api_key or "",))
    print(f"gvw demo: {len(jobs)} jobs, results under {_shown(results)}")
    print(f"model answers from {where}; worker log: {_shown(log_path)}")
    started = time.monotonic()
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        for job in jobs:
            analyze.apply_async(args=[job], task_id=job["job_id"], queue="vision")
        records = _wait_all(jobs, results, timeout_s=300)
        elapsed = time.monotonic() - started
    _print_table(records, root)
    failed = [r for r in records if r.get("status") != "succeeded"]
    print(f"\n{len(records) - len(failed)} succeeded, {len(failed)} failed in {elapsed:.1f} s")
    return 1 if failed else 0


def _wait_all(
    jobs: list[dict[str, Any]], results: Path, *, timeout_s: float
) -> list[dict[str, Any]]:
    from worker.producers.progress import Progress

    pending = {job["job_id"]: job for job in jobs}
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    shown = -1
    bar = Progress("jobs", len(jobs))
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            for name in ("result.json", "error.json"):
                path = results / job_id / name
                if path.exists():
                    record = json.loads(path.read_text())
                    record["_path"] = str(path)
                    done[job_id] = record
                    del pending[job_id]
                    break
        if len(done) != shown:
            shown = len(done)
            bar.update(shown)
        time.sleep(0.1)
    bar.close()
    for job_id in pending:
        done[job_id] = {"job_id": job_id, "status": "timed out", "task": pending[job_id]["task"]}
    return [done[job["job_id"]] for job in jobs]


def _shown(path: Path) -> str:
    """A path as short as it can be said: relative to here when it is below here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_table(records: list[dict[str, Any]], root: Path) -> None:
    """The jobs' answers as a table as wide as the terminal, then where their files are:
    a path is never cut, so paths are not in the table."""
    rows = [("job", "task", "status", "answer")]
    overlays: list[str] = []
    for record in records:
        rows.append(
            (
                record.get("job_id", ""),
                (record.get("task") or "") + ("*" if record.get("mode") == "batch" else ""),
                record.get("status", ""),
                _answer(record),
            )
        )
        overlay = (record.get("artifacts") or {}).get("overlay")
        if overlay:
            overlays.append(_shown(Path(overlay.removeprefix("file://"))))
    for line in render_table(rows, terminal_width_chars(), ellipsis=_ellipsis()):
        print(line)
    if any(r.get("mode") == "batch" for r in records):
        print("* answered through the Gemini Batch API, at the batch price")
    records_at = Path(_shown(root / "results")) / "<job>" / "result.json"
    print(f"\nrecords: {records_at} (or error.json)")
    if overlays:
        print("overlays:")
        for path in overlays:
            print(path)  # whole, and alone on its line: to copy, or to click


def terminal_width_chars() -> int:
    """The terminal's width in characters (``COLUMNS`` first, then the terminal itself,
    80 when there is none), at least `MIN_TABLE_WIDTH_CHARS`."""
    return max(MIN_TABLE_WIDTH_CHARS, shutil.get_terminal_size().columns)


def render_table(rows: Sequence[Sequence[str]], width: int, *, ellipsis: str = "…") -> list[str]:
    """``rows`` (the first is the header) as aligned columns, a rule under the header, in
    lines of at most ``width`` characters.

    The last column (the answer) gives way first, down to a few words; then the widest
    of the others. A cell too long for its column is cut at a word boundary, with
    ``ellipsis`` in place of what is left out: never inside a word (a word longer than
    the whole column is left out entirely).
    """
    cells = [[" ".join(str(cell).split()) for cell in row] for row in rows]
    count = len(cells[0])
    gaps = len(_COLUMN_GAP) * (count - 1)
    least = max(1, len(ellipsis))
    if width < gaps + least * count:
        raise ValueError(f"a table of {count} columns needs {gaps + least * count} characters")
    widths = [max(len(row[i]) for row in cells) for i in range(count)]
    excess = sum(widths) + gaps - width
    last = count - 1
    if excess > 0:
        give = min(excess, max(0, widths[last] - max(_MIN_ANSWER_CHARS, least)))
        widths[last] -= give
        excess -= give
    while excess > 0:
        widest = max(range(count), key=lambda i: (widths[i], i == last))
        widths[widest] -= 1
        excess -= 1
    lines = []
    for index, row in enumerate(cells):
        shown = [_fit(cell, widths[i], ellipsis).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(_COLUMN_GAP.join(shown).rstrip())
        if index == 0:
            lines.append(_COLUMN_GAP.join("-" * w for w in widths))
    return lines


def _fit(cell: str, width: int, ellipsis: str) -> str:
    if len(cell) <= width:
        return cell
    # whole words only: a hyphen is not a place to cut (a "blue-" would read as a word)
    return textwrap.shorten(cell, width, placeholder=ellipsis, break_on_hyphens=False)


def _ellipsis() -> str:
    """The ellipsis standard output can print: "…", or "..." on an ASCII console."""
    try:
        "…".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "..."
    return "…"


def _answer(record: dict[str, Any]) -> str:
    if record.get("status") != "succeeded":
        err = record.get("error") or {}
        return f"{err.get('code', '')}: {err.get('message', '')}"
    output = record.get("output") or {}
    if "text" in output:
        return " ".join(str(output["text"]).split())
    if "labels" in output:
        return ", ".join(output["labels"]) or "(none apply)"
    if "objects" in output:
        return f"{len(output['objects'])} objects: " + ", ".join(
            o["label"] for o in output["objects"]
        )
    return json.dumps(output.get("data", output), ensure_ascii=False)


# --- the jobs ------------------------------------------------------------------------------------


def _jobs_for_scenes(inputs: Path) -> list[dict[str, Any]]:
    from worker.emulator.scenes import make_scene

    run_id = time.strftime("%H%M%S")
    street = make_scene(960, 640, shapes=["red circle", "blue rectangle", "green triangle"], seed=1)
    table = make_scene(640, 800, shapes=["orange rectangle", "purple circle"], seed=2)
    street_path = inputs / "scene-a.png"
    street.image.save(street_path)
    # stored sideways with an EXIF orientation tag: the worker must show the model the
    # upright picture and report boxes on it
    rotated_path = inputs / "scene-b-exif-rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    table.image.transpose(Image.Transpose.ROTATE_90).save(rotated_path, quality=95, exif=exif)
    a, b = f"file://{street_path}", f"file://{rotated_path}"

    def job(name: str, **fields: Any) -> dict[str, Any]:
        return {"job_id": f"demo-{run_id}-{name}", **fields}

    return [
        job("caption", task="caption", images=[a]),
        job("vqa", task="vqa", images=[a], prompt="How many shapes are there?"),
        job("classify", task="classify", images=[a], labels=["circle", "triangle", "star", "dog"]),
        job("detect", task="detect", images=[a], prompt="the coloured shapes"),
        job("detect-exif", task="detect", images=[b], prompt="the coloured shapes"),
        job("segment", task="segment", images=[a], prompt="the coloured shapes"),
        job("compare", task="compare", images=[a, b], prompt="Which shapes differ?"),
        job("custom", task="custom", images=[b], prompt="Describe this picture for an inventory."),
        job(
            "custom-json",
            task="custom",
            images=[a],
            prompt="Count the shapes and list colours.",
            response_schema=_SCHEMA,
        ),
        # through the Gemini Batch API at half the price (gvw enqueue-prefix --batch)
        job("batch", task="caption", images=[b], options={"mode": "batch"}),
    ]


def _jobs_for_user_images(source: Path) -> list[dict[str, Any]]:
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in _SUFFIXES)[:20]
    if not images:
        raise SystemExit(f"gvw demo: no images in {source}")
    run_id = time.strftime("%H%M%S")
    jobs = []
    for index, path in enumerate(images):
        uri = f"file://{path}"
        for task in ("caption", "detect", "segment"):
            jobs.append(
                {"job_id": f"demo-{run_id}-{index:02d}-{task}", "task": task, "images": [uri]}
            )
    return jobs
