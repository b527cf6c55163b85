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
from worker.producer import BrokerUnavailable

EXIT_OK = 0
EXIT_FAILED = 1  # the job failed, or there is no record yet
EXIT_USAGE = 2
EXIT_UNKNOWN = 3  # `gvw status`: no record, not queued, not running

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
    submit.add_argument("--prompt", help="question, instruction, or what to find")
    submit.add_argument(
        "--label",
        action="append",
        dest="labels",
        metavar="L",
        help="a candidate label for classify (repeat the flag)",
    )
    submit.add_argument("--job-id", help="idempotency key; generated when absent")
    submit.add_argument("--output", metavar="URI", help="results base (default GVW_RESULTS_URI)")
    submit.add_argument("--model", metavar="M", help="Gemini model (default GVW_MODEL)")
    submit.add_argument(
        "--schema", metavar="JSON", help="custom only: a JSON Schema (inline JSON or @file.json)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for the result and print it")
    submit.add_argument(
        "--timeout",
        type=float,
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
    bulk.add_argument("--task", required=True, help="the task for every object")
    bulk.add_argument(
        "--suffix",
        default="",
        metavar=".jpg,.png",
        help="only keys ending with one of these (comma-separated, any case)",
    )
    bulk.add_argument("--prompt")
    bulk.add_argument("--label", action="append", dest="labels", metavar="L")
    bulk.add_argument("--output", metavar="URI")
    bulk.add_argument("--model", metavar="M")
    bulk.add_argument("--schema", metavar="JSON", help="custom only: inline JSON or @file.json")
    bulk.add_argument(
        "--options",
        dest="options_json",
        metavar="JSON",
        help='the jobs\' options, e.g. \'{"media_resolution": "low", "max_output_tokens": 200}\'',
    )
    bulk.add_argument(
        "--batch",
        action="store_true",
        help="answer through the Gemini Batch API: about half the price, within a day "
        "(options.mode batch; the workers group the requests into batch jobs)",
    )
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
        type=int,
        default=100,
        metavar="N",
        help="--dry-run: objects whose headers are read for their pixel sizes (default 100)",
    )
    bulk.add_argument("--timeout", type=float, default=3600.0, metavar="S")

    for name, helptext in (("status", "show a job's state"), ("result", "print a job's result")):
        cmd = sub.add_parser(name, help=helptext, description=helptext.capitalize() + ".")
        cmd.add_argument("job_id", metavar="JOB_ID")
        cmd.add_argument("--output", metavar="URI", help="results base the job used")
        cmd.add_argument("--json", action="store_true", help="print JSON")

    worker = sub.add_parser(
        "worker",
        help="run a worker with the project's defaults",
        description="Same as `celery -A worker worker -Q vision` with an "
        "I/O-bound thread pool by default.",
    )
    worker.add_argument("--concurrency", type=int, default=8, metavar="N")
    worker.add_argument("--pool", choices=("threads", "prefork", "solo"), default="threads")
    worker.add_argument(
        "--loglevel",
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default GVW_LOG_LEVEL, else INFO); wins over it",
    )
    worker.add_argument("--hostname", default=None, help="worker node name (celery -n)")

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
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--api-key", default=None, help="require this x-goog-api-key")
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
        one.add_argument("batch_id", metavar="BATCH_ID")
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
    dead_list.add_argument("--limit", type=int, default=100)
    dead_list.add_argument("--json", action="store_true", help="print JSON lines")
    dead_replay = dead_sub.add_parser("replay", help="re-enqueue jobs with their job ids")
    dead_replay.add_argument("job_ids", metavar="JOB_ID", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = _HANDLERS[args.command]
        return handler(args)
    except GvwError as err:
        _fail(f"{err.code}: {err.message}")
        return EXIT_FAILED
    except BrokerUnavailable as err:
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
    from worker.client import VisionClient
    from worker.jobs import new_job_id

    job: dict[str, Any] = {"task": args.task, "images": list(args.images), **_job_options(args)}
    job["job_id"] = args.job_id or new_job_id()
    client = VisionClient()
    job_id = client.submit(job)  # refused here, with the worker's own message, if invalid
    if not args.wait:
        print(json.dumps({"job_id": job_id}) if args.json else job_id)
        return EXIT_OK
    record = client.wait(job_id, args.timeout, output=args.output)
    return _print_record(record, as_json=args.json)


def _print_record(record: dict[str, Any], *, as_json: bool) -> int:
    from worker.records import ErrorRecord, read_record

    typed = read_record(json.dumps(record).encode())
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    elif isinstance(typed, ErrorRecord):
        print(f"{typed.job_id}: failed: {typed.error.code}: {typed.error.message}")
    else:
        print(f"{typed.job_id}: succeeded ({typed.task}, {typed.model})")
        print(json.dumps(typed.output, indent=2, ensure_ascii=False)[:4000])
    if isinstance(typed, ErrorRecord):
        _fail(f"job failed: {typed.error.code}: {typed.error.message}")
        return EXIT_FAILED
    return EXIT_OK


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("prompt", "output", "model"):
        if getattr(args, key, None):
            options[key] = getattr(args, key)
    if getattr(args, "labels", None):
        options["labels"] = args.labels
    if getattr(args, "schema", None):
        text = args.schema
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        options["response_schema"] = json.loads(text)
    if getattr(args, "options_json", None):
        options["options"] = json.loads(args.options_json)
    if getattr(args, "batch", False):
        options["options"] = {**options.get("options", {}), "mode": "batch"}
    return options


def _cmd_enqueue_prefix(args: argparse.Namespace) -> int:
    from worker.bulk import enqueue_prefix, wait_all
    from worker.client import VisionClient
    from worker.progress import Progress
    from worker.settings import get_settings
    from worker.storage import StoreRouter

    settings = get_settings()
    template = {"task": args.task, **_job_options(args)}
    suffixes = tuple(s.strip().lower() for s in args.suffix.split(",") if s.strip())
    stores = StoreRouter(
        connect_timeout_s=settings.gvw_s3_connect_timeout_s,
        read_timeout_s=settings.gvw_s3_read_timeout_s,
    )
    if args.dry_run:
        from worker.bulk import estimate_prefix
        from worker.prices import load_prices

        estimate = estimate_prefix(
            stores.list_objects(args.prefix),
            template,
            read_head=lambda uri, size: stores.read_head(uri, max_bytes=size).data,
            prices=load_prices(settings.gvw_prices_file),
            model=str(template.get("model") or settings.gvw_model),
            fit_within_px=settings.gvw_fit_within_px,
            suffixes=suffixes,
            sample=max(1, args.sample),
        )
        for line in estimate.lines():
            print(line)
        return EXIT_OK
    client = VisionClient(settings=settings, stores=stores)
    summary = enqueue_prefix(
        client,
        stores.list_objects(args.prefix),
        template,
        suffixes=suffixes,
        progress=Progress,
        sent=None if args.resubmit else _sent_log(settings, args.prefix, template),
    )
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


def _sent_log(settings: Any, prefix: str, template: dict[str, Any]) -> Any:
    """What earlier runs of this enqueue sent (in GVW_REDIS_URL), or None without Redis."""
    import redis

    from worker.bulk import RedisSentLog, run_key

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
    from worker.client import VisionClient

    state = VisionClient().status(args.job_id, output=args.output)
    if state.state == "unknown":
        if args.json:
            print(json.dumps({"job_id": state.job_id, "status": "unknown"}))
        _fail(
            f"no job {args.job_id}: no record under its results folder, and not on the "
            "broker's queue (never sent, or a different --output)"
        )
        return EXIT_UNKNOWN
    info: dict[str, Any] = {"job_id": state.job_id, "status": state.state}
    if state.uri:
        info["uri"] = state.uri
    if state.error_code:
        info["error"] = state.error_code
    if state.batch:
        info["batch"] = state.batch
    if args.json:
        print(json.dumps(info))
    else:
        print(" ".join(f"{k}={v}" for k, v in info.items()))
    return EXIT_OK


def _cmd_result(args: argparse.Namespace) -> int:
    from worker.client import VisionClient

    record = VisionClient().result(args.job_id, output=args.output)
    if record is None:
        _fail(f"no result for {args.job_id} yet (gvw status {args.job_id})")
        return EXIT_FAILED
    return _print_record(record, as_json=args.json)


# --- worker / demo / emulator --------------------------------------------------------------


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import QUEUE, app

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
    from worker.demo import run_demo

    return run_demo(workdir=args.dir, images_dir=args.images, model=args.model)


def _cmd_emulator(args: argparse.Namespace) -> int:
    from worker.emulator.server import serve

    serve(host=args.host, port=args.port, api_key=args.api_key)
    return EXIT_OK


def _cmd_files(args: argparse.Namespace) -> int:
    from worker.gemini.file_admin import cached_files, purge
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
    from worker.doctor import run_checks
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
    from worker.layout import error_uri
    from worker.producer import send_job
    from worker.records import is_summary
    from worker.runtime import build_ports
    from worker.settings import get_settings

    settings = get_settings()
    ports = build_ports(settings)
    if args.dead_command == "list":
        letters = list(ports.deliveries.dead_letters(limit=args.limit))
        for letter in letters:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.when))
            if args.json:
                print(
                    json.dumps(
                        {
                            "job_id": letter.job_id,
                            "code": letter.code,
                            "message": letter.message,
                            "attempts": letter.attempts,
                            "when": when,
                        }
                    )
                )
            else:
                print(
                    f"{when}  {letter.job_id}  {letter.code}  attempts={letter.attempts}  "
                    f"{letter.message[:120]}"
                )
        if not args.json:
            print(f"{len(letters)} dead letters")
        return EXIT_OK
    failures = 0
    for job_id in args.job_ids:
        found = ports.deliveries.get(job_id)
        if found is None or found.job is None:
            _fail(f"{job_id}: no dead letter with a stored job to replay")
            failures += 1
            continue
        if is_summary(found.job):
            # a job over 16 KB is kept as a summary (worker.records): not enough to rerun it
            _fail(f"{job_id}: the dead letter keeps only a summary of this large job; resubmit it")
            failures += 1
            continue
        output = found.job.get("output") if isinstance(found.job.get("output"), str) else None
        ports.stores.delete(error_uri(job_id, output, settings))
        ports.deliveries.forget(job_id)
        ports.deliveries.remove(job_id)
        send_job({**found.job, "job_id": job_id})
        print(f"{job_id}: re-enqueued")
    return EXIT_FAILED if failures else EXIT_OK


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
