"""`gvw submit | status | result`: one job, from a producer's side."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from worker.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN, fail, job_options


def cmd_submit(args: argparse.Namespace) -> int:
    from worker.contract.jobs import new_job_id
    from worker.producers.client import VisionClient

    job: dict[str, Any] = {"task": args.task, "images": list(args.images), **job_options(args)}
    job["job_id"] = args.job_id or new_job_id()
    client = VisionClient()
    job_id = client.submit(job)  # refused here, with the worker's own message, if invalid
    if not args.wait:
        print(json.dumps({"job_id": job_id}) if args.json else job_id)
        return EXIT_OK
    # the client remembers the job it sent: another job's record under this id is a
    # conflict (invalid_job), never this job's answer
    record = client.wait(job_id, args.timeout, output=args.output)
    return _print_record(record, as_json=args.json)


def _print_record(record: dict[str, Any], *, as_json: bool) -> int:
    """The record on stdout (a summary, or the JSON as stored); a failed job's reason
    once, on stderr, with exit status 1."""
    from worker.contract.records import ErrorRecord, read_record

    typed = read_record(json.dumps(record).encode())
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    elif not isinstance(typed, ErrorRecord):
        for line in _result_lines(typed):
            print(line)
    if isinstance(typed, ErrorRecord):
        fail(f"{typed.job_id}: failed: {typed.error.code}: {typed.error.message}")
        return EXIT_FAILED
    return EXIT_OK


def _result_lines(record: Any) -> list[str]:
    """A succeeded job for people: status, answer, artifacts, cost, warnings."""
    usage = record.usage
    cost = f"${usage.cost_usd:.6f}" if usage.cost_usd is not None else "cost unknown"
    lines = [
        f"{record.job_id}: succeeded ({record.task}, {record.model}, {record.mode}; "
        f"{usage.prompt_tokens:,} tokens in, {usage.output_tokens:,} out, {cost})"
    ]
    if record.answer_reused_from is not None:
        lines.append(f"answer reused from job {record.answer_reused_from.job_id}")
    output = dict(record.output)
    objects = output.pop("objects", None)
    if "text" in output:
        lines.append(str(output.pop("text")))
    if "labels" in output:
        lines.append("labels: " + ", ".join(str(x) for x in output.pop("labels") or []) or "-")
    if "data" in output:
        lines.append(json.dumps(output.pop("data"), indent=2, ensure_ascii=False)[:4000])
    if isinstance(objects, list):
        lines.append(f"{len(objects)} objects:")
        for item in objects[:50]:
            box = item.get("box")
            mask = f"  mask {item['mask']}" if item.get("mask") else ""
            lines.append(f"  {str(item.get('label', ''))[:60]!r} box {box}{mask}")
        if len(objects) > 50:
            lines.append(f"  ... {len(objects) - 50} more (--json for all)")
    for key, value in output.items():  # anything a later task adds
        lines.append(f"{key}: {json.dumps(value, ensure_ascii=False)[:400]}")
    if record.artifacts.get("overlay"):
        lines.append(f"overlay: {record.artifacts['overlay']}")
    for warning in record.warnings:
        lines.append(f"warning: {warning}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from worker.producers.client import VisionClient

    state = VisionClient().status(args.job_id, output=args.output)
    info: dict[str, Any] = {"job_id": state.job_id, "status": state.state}
    if state.uri:
        info["uri"] = state.uri
    if state.error_code:
        info["error"] = state.error_code
    if state.batch is not None:
        info["batch"] = state.batch
    if state.refused:
        info["refused"] = state.refused
    if args.json:
        print(json.dumps({**info, "detail": state.detail} if state.detail else info))
    elif state.state != "unknown":
        print(" ".join(f"{k}={v}" for k, v in info.items()))
        if state.detail:
            print(f"  {state.detail}")
    if state.state == "unknown":
        fail(f"no job {args.job_id}: {state.detail or 'not known to the fleet'}")
        return EXIT_UNKNOWN
    return EXIT_OK


def cmd_result(args: argparse.Namespace) -> int:
    return _show_record(args, _stored_record(args))


def _stored_record(args: argparse.Namespace, stores: Any = None) -> dict[str, Any] | None:
    from worker.producers.client import VisionClient

    return VisionClient(stores=stores).result(args.job_id, output=args.output)


def _show_record(args: argparse.Namespace, record: dict[str, Any] | None) -> int:
    """The record as `gvw result` prints it; without one, what the fleet knows."""
    from worker.producers.client import VisionClient

    if record is None:
        client = VisionClient()
        state = client.status(args.job_id, output=args.output)
        if state.state == "failed" and state.error_code:
            # failed for good, its error.json unwritten: the fleet's dead letter says so
            fail(f"{args.job_id}: failed: {state.error_code}: {state.detail or ''}".rstrip(": "))
            return EXIT_FAILED
        seen = state.detail or state.state
        fail(f"no result for {args.job_id} yet: {state.state}; {seen}")
        return EXIT_FAILED
    return _print_record(record, as_json=args.json)


def cmd_show(args: argparse.Namespace) -> int:
    """`gvw show JOB [--open]`: the job's record as `result` prints it; with --open, its
    overlay downloaded (beside the working directory, `gvw-show/JOB/`) and opened where
    there is a display, else its path printed."""
    from worker.storage import StoreRouter

    stores = StoreRouter()
    record = _stored_record(args, stores)
    status = _show_record(args, record)
    if not args.open or record is None:
        return status
    overlay = (record.get("artifacts") or {}).get("overlay")
    if not isinstance(overlay, str):
        fail(f"{args.job_id}: no overlay to open (only detect and segment draw one)")
        return EXIT_FAILED
    folder = Path("gvw-show") / args.job_id  # a job id is a safe file name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / overlay.rsplit("/", 1)[-1]
    path.write_bytes(stores.get_bytes(overlay, max_bytes=OVERLAY_MAX_BYTES))
    opener = _opener()
    if opener is None:
        print(f"overlay: {path} (no display to open it on)")
        return status
    subprocess.run([opener, str(path)], check=False, stdin=subprocess.DEVNULL)
    print(f"overlay: {path}")
    return status


# an overlay is at most GVW_OVERLAY_MAX_SIDE_PX on a side, as JPEG or PNG
OVERLAY_MAX_BYTES = 64_000_000


def _opener() -> str | None:
    """The desktop's opener where there is a display: `open` on macOS, `xdg-open` with an
    X or Wayland display."""
    if sys.platform == "darwin":
        return "open"
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return shutil.which("xdg-open")
    return None
