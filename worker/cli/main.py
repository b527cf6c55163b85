"""`gvw`: submit jobs, read their results, run workers, the demo and the emulator.

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from tasks.errors import GvwError
from worker.bridge.cli import add_bridge_parser, run_bridge
from worker.emulator.options import add_emulator_arguments
from worker.producers.bulk import IMAGE_SUFFIXES
from worker.producers.producer import BrokerUnavailable
from worker.settings import SettingsInvalid

EXIT_OK = 0
EXIT_FAILED = 1  # the job failed, or there is no record yet
EXIT_USAGE = 2  # a bad flag, flag value or setting
EXIT_UNKNOWN = 3  # `gvw status`: no record, not queued, not running


class UsageError(ValueError):
    """A flag's value cannot be used: the message names the flag and what is wrong."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: more than 0 seconds")
    return value


def _add_job_arguments(parser: argparse.ArgumentParser, *, for_each: str) -> None:
    """The flags that shape a job, shared by `submit` and `enqueue-prefix`."""
    parser.add_argument(
        "--prompt",
        metavar="TEXT",
        help="vqa: the question; custom: the instruction; detect/segment: what to find; "
        "caption/compare: optional",
    )
    parser.add_argument(
        "--label",
        action="append",
        dest="labels",
        metavar="L",
        help="classify: a candidate label (repeat the flag)",
    )
    parser.add_argument(
        "--output",
        metavar="URI",
        help="results folder (default GVW_RESULTS_URI): records go to URI/JOB_ID/",
    )
    parser.add_argument("--model", metavar="M", help="Gemini model (default GVW_MODEL)")
    parser.add_argument(
        "--schema",
        metavar="JSON",
        help="custom only: a JSON Schema for the answer (inline JSON, or @file.json)",
    )
    parser.add_argument(
        "--options",
        dest="options_json",
        metavar="JSON",
        help=f'{for_each} options, e.g. \'{{"media_resolution": "low", '
        '"max_output_tokens": 200}\' (max_items, mask_threshold, thinking_budget, '
        "temperature, max_output_tokens, overlay, fresh, media_resolution, mode)",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="answer through the Gemini Batch API: about half the price, within a day "
        "(options.mode batch; the workers group the requests into batch jobs)",
    )


_EPILOG = """\
examples:
  gvw demo                                   # the whole pipeline, no services, no API key
  gvw worker --concurrency 8                 # a worker on CELERY_BROKER_URL (threads pool)
  gvw submit detect s3://inbox/a.jpg --prompt "the cupcakes" --wait
  gvw submit classify s3://inbox/a.jpg --label cat --label dog --job-id a-0001
  gvw status a-0001 ; gvw result a-0001 --json
  gvw enqueue-prefix s3://inbox/2026/ --task caption --suffix .jpg,.png --wait
  gvw emulator --port 8765                   # a local Gemini REST emulator
  gvw files list ; gvw files purge --all     # File API uploads shared by the fleet
  gvw dead-letters list ; gvw dead-letters replay a-0001
  gvw doctor                                 # is this deployment ready? one line per check
  gvw bridge sqs --queue-url URL --rules rules.json   # S3 upload events -> jobs

configuration comes from the environment (GEMINI_API_KEY, GEMINI_BASE_URL,
CELERY_BROKER_URL, GVW_REDIS_URL, GVW_RESULTS_URI, GVW_ALLOWED_INPUTS, ...): see README.md.

exit status:
  0  success
  1  the job failed, a check failed, or the command could not do its work (one line on
     stderr says why)
  2  usage: a bad flag or flag value, or a setting in the environment that cannot be used
  3  `gvw status`: no job of that id is known (no record, not queued, not running)
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gemini-vision-worker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gvw",
        description="Gemini Vision Worker: Gemini image understanding on Celery workers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gvw {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    submit = sub.add_parser(
        "submit",
        help="enqueue one job and print its id",
        description="Enqueue one job on the `vision` queue.",
    )
    submit.add_argument(
        "task",
        metavar="TASK",
        help="caption | vqa | classify | detect | segment | compare | custom",
    )
    submit.add_argument(
        "images", metavar="URI", nargs="+", help="s3://bucket/key (or allowed file://)"
    )
    _add_job_arguments(submit, for_each="the job's")
    submit.add_argument(
        "--job-id",
        metavar="ID",
        help="idempotency key ([A-Za-z0-9][A-Za-z0-9._-]{0,127}); generated when absent",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job's record and print it (exit 1 when the job failed)",
    )
    submit.add_argument(
        "--timeout",
        type=_positive_float,
        default=600.0,
        metavar="S",
        help="with --wait: give up after S seconds (default 600)",
    )
    submit.add_argument("--json", action="store_true", help="print JSON instead of text")

    bulk = sub.add_parser(
        "enqueue-prefix",
        help="one job per object under a prefix (reruns skip done work)",
        description="Lists the objects under PREFIX (paginated) and submits one job each, "
        "with a job id derived from bucket, key, ETag and the job options, so a second run "
        "skips what is already committed.",
    )
    bulk.add_argument("prefix", metavar="PREFIX", help="s3://bucket/prefix (or allowed file://)")
    bulk.add_argument(
        "--task",
        required=True,
        metavar="TASK",
        help="the task for every object: caption | vqa | classify | detect | segment | custom",
    )
    bulk.add_argument(
        "--suffix",
        default="",
        metavar=".jpg,.png",
        help="only keys ending with one of these (comma-separated, any case; default: the "
        "image types the worker reads, " + ",".join(IMAGE_SUFFIXES) + "; * for every key)",
    )
    _add_job_arguments(bulk, for_each="every job's")
    bulk.add_argument("--wait", action="store_true", help="wait for every job and summarise")
    bulk.add_argument(
        "--resubmit",
        action="store_true",
        help="send again what an earlier run sent and is not done (a lost queue): by "
        "default a rerun skips it as already queued",
    )
    bulk.add_argument(
        "--dry-run",
        action="store_true",
        help="submit nothing: count the images and estimate their tokens and cost (from the "
        "listing and the headers of --sample objects)",
    )
    bulk.add_argument(
        "--sample",
        type=_positive_int,
        default=100,
        metavar="N",
        help="--dry-run: objects whose headers are read for their pixel sizes (default 100)",
    )
    bulk.add_argument(
        "--timeout",
        type=_positive_float,
        default=3600.0,
        metavar="S",
        help="with --wait: give up after S seconds (default 3600)",
    )

    for name, helptext, description in (
        (
            "status",
            "show a job's state",
            "A job's state: succeeded or failed (its record, or the fleet's dead-letter "
            "index), queued or running (the broker), batched, or unknown (exit status 3), "
            "with a line on what the fleet knows.",
        ),
        (
            "result",
            "print a job's result",
            "A job's record: its status, its answer, the overlay and mask URIs, its cost "
            "and warnings (--json: result.json or error.json as stored).",
        ),
    ):
        cmd = sub.add_parser(name, help=helptext, description=description)
        cmd.add_argument("job_id", metavar="JOB_ID", help="the job's id (as submit printed it)")
        cmd.add_argument(
            "--output", metavar="URI", help="the results folder the job named (its --output)"
        )
        cmd.add_argument("--json", action="store_true", help="print JSON")

    worker = sub.add_parser(
        "worker",
        help="run a worker with the project's defaults",
        description="Same as `celery -A worker worker -Q vision` with an "
        "I/O-bound thread pool by default.",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="jobs run at once (threads or processes; default 8)",
    )
    worker.add_argument(
        "--pool",
        choices=("threads", "prefork", "solo"),
        default="threads",
        help="threads (default: I/O-bound jobs), prefork (hands running jobs back on "
        "SIGTERM, enforces time limits) or solo",
    )
    worker.add_argument(
        "--loglevel",
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default GVW_LOG_LEVEL, else INFO); wins over it",
    )
    worker.add_argument(
        "--hostname", default=None, metavar="NAME", help="worker node name (celery -n)"
    )

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline on embedded defaults",
        description="Runs every task through a real Celery worker with an "
        "embedded broker, local storage under ./gvw-demo/ and the Gemini "
        "emulator in-process. No services and no API key needed.",
    )
    demo.add_argument("--dir", default="gvw-demo", help="working folder (default ./gvw-demo)")
    demo.add_argument(
        "--images",
        metavar="DIR",
        help="with GEMINI_API_KEY set: run on your own images against Google",
    )
    demo.add_argument("--model", default=None, help="model name (default GVW_MODEL)")

    emulator = sub.add_parser(
        "emulator",
        help="run the Gemini REST emulator",
        description="A local server speaking Gemini's REST API; point "
        "workers at it with GEMINI_BASE_URL=http://HOST:PORT.",
    )
    add_emulator_arguments(emulator)
    files = sub.add_parser(
        "files",
        help="File API uploads: list the cache, purge uploads",
        description="Images sent through the Gemini File API are cached "
        "fleet-wide in GVW_REDIS_URL, per API key and endpoint.",
    )
    files_sub = files.add_subparsers(dest="files_command", metavar="ACTION", required=True)
    files_list = files_sub.add_parser("list", help="what the cache holds (hash, size, expiry, URI)")
    files_list.add_argument("--json", action="store_true", help="print JSON lines")
    files_purge = files_sub.add_parser(
        "purge",
        help="delete this project's uploads from Gemini",
        description="Deletes uploads made by gvw (display name gvw-*). By default only those "
        "the cache no longer uses (--expired-only); --all deletes every one and empties the "
        "cache (running jobs then upload again once).",
    )
    scope = files_purge.add_mutually_exclusive_group()
    scope.add_argument(
        "--expired-only",
        dest="expired_only",
        action="store_true",
        default=True,
        help="only uploads past the cache's safety margin (default)",
    )
    scope.add_argument(
        "--all", dest="expired_only", action="store_false", help="every gvw upload of this project"
    )
    sub.add_parser(
        "doctor",
        help="check everything a deployment needs, one line each",
        description="Checks, with the worker's own settings: the broker, Redis (and its "
        "maxmemory-policy and persistence), the clocks, the results location (a probe "
        "written and deleted), each allowed input prefix (listed), and Gemini (the "
        "endpoint, the key and the model: one models.get, nothing generated). Exit status "
        "1 when any check fails.",
    )
    batches = sub.add_parser(
        "batches",
        help="the fleet's Gemini batch jobs (batch mode): list, show, cancel",
        description="Batch jobs the workers assembled from jobs in batch mode "
        "(options.mode batch, gvw enqueue-prefix --batch), with their state at Gemini and "
        "progress. Cancelling one sends its jobs back (GVW_BATCH_FALLBACK).",
    )
    batches_sub = batches.add_subparsers(dest="batches_command", metavar="ACTION", required=True)
    batches_list = batches_sub.add_parser("list", help="every batch kept, newest first")
    batches_list.add_argument("--json", action="store_true", help="print JSON lines")
    for action in ("show", "cancel"):
        one = batches_sub.add_parser(action, help=f"{action} one batch (its id, as listed)")
        one.add_argument("batch_id", metavar="BATCH_ID", help="the batch's id, as listed")
    costs = sub.add_parser(
        "costs",
        help="today's spending against GVW_BUDGET_USD_PER_DAY, and the price table in use",
        description="The fleet's spending of the current UTC day (spent, and reserved by "
        "calls in flight) against GVW_BUDGET_USD_PER_DAY, and the prices the worker uses "
        "(shipped, or GVW_PRICES_FILE), with the date they were taken.",
    )
    costs.add_argument("--json", action="store_true", help="print one JSON object")
    add_bridge_parser(sub)

    dead = sub.add_parser(
        "dead-letters",
        help="jobs that failed for good: list, replay",
        description="Every job that ended in error.json is indexed in "
        "GVW_REDIS_URL. Replay re-enqueues it with the same job id after "
        "removing its error.json.",
    )
    dead_sub = dead.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    dead_list = dead_sub.add_parser("list", help="job, code, message, attempts, when")
    dead_list.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="the newest N dead letters (default 100)",
    )
    dead_list.add_argument("--json", action="store_true", help="print JSON lines")
    dead_replay = dead_sub.add_parser("replay", help="re-enqueue jobs with their job ids")
    dead_replay.add_argument(
        "job_ids", metavar="JOB_ID", nargs="+", help="dead-lettered jobs to send again"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = _HANDLERS[args.command]
        return handler(args)
    except (SettingsInvalid, UsageError) as err:
        _fail(str(err))
        return EXIT_USAGE
    except GvwError as err:
        _fail(f"{err.code}: {err.message}")
        return EXIT_FAILED
    except (BrokerUnavailable, TimeoutError) as err:
        _fail(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:
        _fail(f"{exc.__class__.__name__}: {exc}")
        return EXIT_FAILED


def _fail(reason: str) -> None:
    print(f"gvw: {reason.splitlines()[0] if reason else 'error'}", file=sys.stderr)


# --- submit / status / result -------------------------------------------------------------


def _cmd_submit(args: argparse.Namespace) -> int:
    from worker.contract.jobs import new_job_id
    from worker.producers.client import VisionClient

    job: dict[str, Any] = {"task": args.task, "images": list(args.images), **_job_options(args)}
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
        _fail(f"{typed.job_id}: failed: {typed.error.code}: {typed.error.message}")
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


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("prompt", "output", "model"):
        if getattr(args, key, None):
            options[key] = getattr(args, key)
    if getattr(args, "labels", None):
        options["labels"] = args.labels
    if getattr(args, "schema", None):
        options["response_schema"] = _json_flag("--schema", args.schema, allow_file=True)
    if getattr(args, "options_json", None):
        value = _json_flag("--options", args.options_json, allow_file=False)
        if not isinstance(value, dict):
            raise UsageError(
                f"--options: expected a JSON object such as '{{\"max_items\": 10}}', "
                f"got {type(value).__name__}"
            )
        options["options"] = value
    if getattr(args, "batch", False):
        options["options"] = {**options.get("options", {}), "mode": "batch"}
    return options


def _json_flag(flag: str, text: str, *, allow_file: bool) -> Any:
    """A flag's JSON value (inline, or ``@file.json`` where allowed), or a UsageError
    naming the flag, where the JSON breaks and what is expected."""
    source = "its value"
    if allow_file and text.startswith("@"):
        source = text[1:]
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"{flag}: cannot read {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        expected = "inline JSON or @file.json" if allow_file else "inline JSON"
        raise UsageError(
            f"{flag}: {source} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); expected {expected}"
        ) from None


def _cmd_enqueue_prefix(args: argparse.Namespace) -> int:
    from worker.producers.bulk import check_prefix, enqueue_prefix, job_objects, wait_all
    from worker.producers.client import VisionClient
    from worker.producers.progress import Progress
    from worker.settings import get_settings
    from worker.storage import StoreRouter

    settings = get_settings()
    template = {"task": args.task, **_job_options(args)}
    suffixes = _suffixes(args.suffix)
    stores = StoreRouter(
        connect_timeout_s=settings.gvw_s3_connect_timeout_s,
        read_timeout_s=settings.gvw_s3_read_timeout_s,
    )
    client = VisionClient(settings=settings, stores=stores)
    # before a single object is listed: the job every object gets is checked exactly as
    # `submit` checks it, and the prefix against the inputs the fleet may read
    prefix = check_prefix(args.prefix, settings)
    client.validate({**template, "images": [prefix.rstrip("/") + "/object"]})
    results_folder = str(template.get("output") or settings.gvw_results_uri)

    unusable: list[str] = []

    def objects() -> Any:
        return job_objects(
            stores.list_objects(prefix),
            suffixes=suffixes,
            results_folder=results_folder,
            allowed_inputs=settings.allowed_input_prefixes,
            unusable=unusable,
        )

    if args.dry_run:
        from worker.cli.estimate import estimate_prefix
        from worker.prices import load_prices
        from worker.producers.bulk import deterministic_job_id

        # what the run itself would send: what is committed already is skipped
        done = client.committed(output=template.get("output"))
        skipped: list[int] = [0]

        def to_send() -> Any:
            for obj in objects():
                if deterministic_job_id(obj.uri, obj.etag, template) in done:
                    skipped[0] += 1
                else:
                    yield obj

        estimate = estimate_prefix(
            to_send(),
            template,
            read_head=lambda uri, size: stores.read_head(uri, max_bytes=size).data,
            prices=load_prices(settings.gvw_prices_file),
            model=str(template.get("model") or settings.gvw_model),
            fit_within_px=settings.gvw_fit_within_px,
            sample=max(1, args.sample),
        )
        estimate.already_done = skipped[0]
        _report_unusable(unusable)
        for line in estimate.lines():
            print(line)
        return EXIT_OK
    summary = enqueue_prefix(
        client,
        objects(),
        template,
        progress=Progress,
        sent=None if args.resubmit else _sent_log(settings, prefix, template),
    )
    _report_unusable(unusable)
    if args.wait and summary.submitted:
        wait_all(
            client,
            summary,
            output=template.get("output"),
            timeout_s=args.timeout,
            progress=Progress,
        )
    for line in summary.lines():
        print(line)
    if summary.failed_by_code or summary.pending:
        _fail(f"{sum(summary.failed_by_code.values())} failed, {summary.pending} pending")
        return EXIT_FAILED
    return EXIT_OK


def _report_unusable(unusable: list[str]) -> None:
    if unusable:
        print(
            f"gvw: left out {len(unusable)} objects whose keys no job may name (the worker "
            f"would refuse them), e.g. {unusable[0][:200]}",
            file=sys.stderr,
        )


def _suffixes(flag: str) -> tuple[str, ...]:
    """--suffix: the key endings to take (default: image types; ``*``: every key)."""
    if flag.strip() == "*":
        return ()
    chosen = tuple(s.strip().lower() for s in flag.split(",") if s.strip())
    return chosen or IMAGE_SUFFIXES


def _sent_log(settings: Any, prefix: str, template: dict[str, Any]) -> Any:
    """What earlier runs of this enqueue sent (in GVW_REDIS_URL), or None without Redis."""
    import redis

    from worker.producers.bulk import RedisSentLog, run_key

    client = redis.Redis.from_url(settings.gvw_redis_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError:
        print(
            "gvw: GVW_REDIS_URL unreachable: a rerun cannot tell what this one sent",
            file=sys.stderr,
        )
        return None
    return RedisSentLog(client, run_key(prefix, template), ttl_s=settings.gvw_job_id_ttl_s)


def _cmd_status(args: argparse.Namespace) -> int:
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
        _fail(f"no job {args.job_id}: {state.detail or 'not known to the fleet'}")
        return EXIT_UNKNOWN
    return EXIT_OK


def _cmd_result(args: argparse.Namespace) -> int:
    from worker.producers.client import VisionClient

    client = VisionClient()
    record = client.result(args.job_id, output=args.output)
    if record is None:
        state = client.status(args.job_id, output=args.output)
        if state.state == "failed" and state.error_code:
            # failed for good, its error.json unwritten: the fleet's dead letter says so
            _fail(f"{args.job_id}: failed: {state.error_code}: {state.detail or ''}".rstrip(": "))
            return EXIT_FAILED
        seen = state.detail or state.state
        _fail(f"no result for {args.job_id} yet: {state.state}; {seen}")
        return EXIT_FAILED
    return _print_record(record, as_json=args.json)


# --- worker / demo / emulator --------------------------------------------------------------


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.queue.app import QUEUE, app

    argv = [
        "worker",
        "-Q",
        QUEUE,
        "--pool",
        args.pool,
        "--concurrency",
        str(args.concurrency),
    ]
    if args.loglevel:
        argv += ["--loglevel", args.loglevel]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from worker.cli.demo import run_demo

    return run_demo(workdir=args.dir, images_dir=args.images, model=args.model)


def _cmd_emulator(args: argparse.Namespace) -> int:
    from worker.emulator.options import config_from
    from worker.emulator.server import serve

    serve(host=args.host, port=args.port, api_key=args.api_key, config=config_from(args))
    return EXIT_OK


def _cmd_files(args: argparse.Namespace) -> int:
    from worker.cli.files import cached_files, purge
    from worker.runtime import build_ports
    from worker.settings import get_settings

    settings = get_settings()
    ports = build_ports(settings)
    if args.files_command == "list":
        entries = cached_files(ports.files)
        now = time.time()
        for entry in entries:
            if args.json:
                print(json.dumps(entry.__dict__))
                continue
            left_h = (entry.expires_at - now) / 3600
            print(
                f"{entry.sha256[:16]}  {entry.size_bytes:>12,} B  expires in {left_h:5.1f} h  "
                f"{entry.uri}"
            )
        if not args.json:
            counters = ports.files.counters()
            summary = ", ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "none yet"
            print(f"{len(entries)} cached uploads; events: {summary}")
        return EXIT_OK
    report = purge(
        ports.gemini,
        ports.files,
        expired_only=args.expired_only,
        margin_s=settings.gvw_file_cache_margin_s,
    )
    print(f"deleted {len(report.deleted)} uploads, kept {report.kept}, failed {len(report.failed)}")
    if report.failed:
        _fail(f"could not delete {len(report.failed)} uploads: {', '.join(report.failed[:5])}")
        return EXIT_FAILED
    return EXIT_OK


def _cmd_batches(args: argparse.Namespace) -> int:
    from worker.runtime import build_ports
    from worker.settings import get_settings

    ports = build_ports(get_settings())
    if ports.batches is None:
        _fail("batch mode needs GVW_REDIS_URL")
        return EXIT_FAILED
    now = time.time()
    if args.batches_command == "list":
        records = list(ports.batches.all_batches())
        for listed in records:
            row = {
                "batch_id": listed.batch_id,
                "name": listed.name,
                "model": listed.model,
                "state": listed.state,
                "gemini_state": listed.gemini_state,
                "jobs": len(listed.job_ids),
                "source": listed.source,
                "age_s": round(now - listed.created_at, 1),
            }
            if args.json:
                print(json.dumps(row))
            else:
                print(
                    f"{listed.batch_id}  {listed.state:<10} {listed.gemini_state or '-':<20} "
                    f"{len(listed.job_ids):>6} jobs  {listed.model:<24} "
                    f"{(now - listed.created_at) / 60:7.1f} min  {listed.name or '(not submitted)'}"
                )
        if not args.json:
            by_model = {m: ports.batches.pending_count(m) for m in ports.batches.pending_models()}
            summary = ", ".join(f"{m}: {n}" for m, n in by_model.items() if n) or "none"
            print(f"{len(records)} batches; jobs waiting for a batch: {summary}")
        return EXIT_OK
    one = ports.batches.batch(args.batch_id)
    if one is None:
        _fail(f"no batch {args.batch_id!r} (gvw batches list)")
        return EXIT_FAILED
    record = one
    if args.batches_command == "cancel":
        if not record.name:
            _fail("the batch is not submitted yet: nothing to cancel at Gemini")
            return EXIT_FAILED
        ports.gemini.cancel_batch(record.name)
        print(f"cancelled {record.name}; its jobs go back when the follower sees it")
        return EXIT_OK
    remote = ports.gemini.get_batch(record.name) if record.name else None
    waiting = sum(1 for job_id in record.job_ids if ports.batches.is_waiting(job_id))
    print(f"batch {record.batch_id} ({record.display_name}), model {record.model}")
    print(f"  state: {record.state}; at Gemini: {remote.state if remote else 'not submitted'}")
    print(f"  name: {record.name or '-'}, source: {record.source or '-'}")
    print(
        f"  jobs: {len(record.job_ids)}, {len(record.job_ids) - waiting} answered or sent "
        f"back, {waiting} waiting"
    )
    print(f"  created {(now - record.created_at) / 60:.1f} min ago")
    return EXIT_OK


def _cmd_costs(args: argparse.Namespace) -> int:
    from worker.runtime import build_ports
    from worker.settings import get_settings

    ports = build_ports(get_settings())
    today = ports.budget.today()
    prices = ports.prices
    models = {
        name: {"input_usd_per_1m": p.input_usd, "output_usd_per_1m": p.output_usd}
        for name, p in sorted(prices.models.items())
    }
    report = {
        "budget_usd_per_day": today.budget_usd if today else None,
        "spent_usd": round(today.spent_usd, 6) if today else None,
        "reserved_usd": round(today.reserved_usd, 6) if today else None,
        "prices_taken_on": prices.taken_on,
        "prices_source": prices.source,
        "batch_discount": prices.batch_discount,
        "models": models,
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    if today is None:
        print("budget: off (GVW_BUDGET_USD_PER_DAY=0)")
    else:
        left = max(0.0, today.budget_usd - today.spent_usd - today.reserved_usd)
        print(
            f"budget: ${today.spent_usd:.4f} spent and ${today.reserved_usd:.4f} reserved of "
            f"${today.budget_usd:g} today (UTC); ${left:.4f} left"
        )
    print(f"prices (USD per 1M tokens, taken on {prices.taken_on}, {prices.source}):")
    for name, row in models.items():
        print(
            f"  {name:<28} input {row['input_usd_per_1m']:>6}  output {row['output_usd_per_1m']:>6}"
        )
    print(f"  batch requests: {prices.batch_discount:.0%} off")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from worker.cli.doctor import run_checks
    from worker.settings import get_settings

    checks = run_checks(get_settings())
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.level == "FAIL"]
    if failed:
        _fail(f"{len(failed)} of {len(checks)} checks failed")
        return EXIT_FAILED
    return EXIT_OK


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from worker.contract.layout import error_uri
    from worker.contract.records import is_summary
    from worker.producers.producer import send_job
    from worker.runtime import build_ports
    from worker.settings import get_settings

    settings = get_settings()
    ports = build_ports(settings)
    if args.dead_command == "list":
        rows = _dead_letter_rows(ports, args.limit)
        for row in rows:
            if args.json:
                print(json.dumps(row))
            else:
                note = "  (refused: its id belongs to another job)" if row["refused"] else ""
                unwritten = (
                    "  (error.json not written)"
                    if not row["recorded"] and not row["refused"]
                    else ""
                )
                print(
                    f"{row['when']}  {row['job_id']}  {row['code']}  "
                    f"attempts={row['attempts']}  {str(row['message'])[:120]}{note}{unwritten}"
                )
        if not args.json:
            refused = sum(1 for row in rows if row["refused"])
            print(
                f"{len(rows) - refused} dead letters"
                + (f", {refused} refused jobs (job id in use by another job)" if refused else "")
            )
        return EXIT_OK
    failures = 0
    for job_id in args.job_ids:
        found = ports.dead_letters.get(job_id)
        if found is None and ports.refusals.of_job(job_id):
            _fail(
                f"{job_id}: the refused job reused the id of another job; send it again "
                "under a new job id (replay would be refused the same way)"
            )
            failures += 1
            continue
        if found is None or found.job is None:
            _fail(f"{job_id}: no dead letter with a stored job to replay")
            failures += 1
            continue
        if is_summary(found.job):
            # a job over 16 KB is kept as a summary (worker.contract.records): not enough to rerun it
            _fail(f"{job_id}: the dead letter keeps only a summary of this large job; resubmit it")
            failures += 1
            continue
        output = found.job.get("output") if isinstance(found.job.get("output"), str) else None
        ports.stores.delete(error_uri(job_id, output, settings))
        ports.deliveries.forget(job_id)
        ports.dead_letters.remove(job_id)
        send_job({**found.job, "job_id": job_id})
        print(f"{job_id}: re-enqueued")
    return EXIT_FAILED if failures else EXIT_OK


def _dead_letter_rows(ports: Any, limit: int) -> list[dict[str, Any]]:
    """Dead letters and refused jobs (an id reused by another job), newest first."""
    from worker.contract.records import ErrorRecord

    rows: list[tuple[float, dict[str, Any]]] = []
    for letter in ports.dead_letters.dead_letters(limit=limit):
        rows.append(
            (
                letter.when,
                {
                    "job_id": letter.job_id,
                    "code": letter.code,
                    "message": letter.message,
                    "attempts": letter.attempts,
                    "recorded": letter.recorded,
                    "refused": False,
                },
            )
        )
    for refusal in ports.refusals.latest(limit=limit):
        record = ErrorRecord.model_validate_json(refusal.record)
        rows.append(
            (
                refusal.when,
                {
                    "job_id": refusal.job_id,
                    "code": record.error.code,
                    "message": record.error.message,
                    "attempts": record.attempts,
                    "recorded": False,
                    "refused": True,
                    "fingerprint": refusal.fingerprint,
                },
            )
        )
    rows.sort(key=lambda pair: -pair[0])
    return [
        {**row, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))}
        for when, row in rows[:limit]
    ]


_HANDLERS = {
    "submit": _cmd_submit,
    "batches": _cmd_batches,
    "costs": _cmd_costs,
    "status": _cmd_status,
    "result": _cmd_result,
    "worker": _cmd_worker,
    "demo": _cmd_demo,
    "emulator": _cmd_emulator,
    "files": _cmd_files,
    "dead-letters": _cmd_dead_letters,
    "doctor": _cmd_doctor,
    "enqueue-prefix": _cmd_enqueue_prefix,
    "bridge": run_bridge,
}


if __name__ == "__main__":
    sys.exit(main())
