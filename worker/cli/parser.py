"""The `gvw` command line: every command, flag and help text (`gvw --help`)."""

from __future__ import annotations

import argparse

from worker.bridge.cli import add_bridge_parser
from worker.cli.common import bounded_int, non_negative_usd, positive_float, positive_int
from worker.emulator.options import add_emulator_arguments
from worker.producers.bulk import IMAGE_SUFFIXES


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
  gvw events list --failed ; gvw events redeliver --all-failed   # completion events
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


def _add_records_target(parser: argparse.ArgumentParser) -> None:
    """What `gvw export` and `gvw report` read: a run's records, or a results folder's."""
    parser.add_argument("target", metavar="RUN|PREFIX", help="a run's id, or a results folder URI")
    parser.add_argument("--output", metavar="URI", help="the run's results folder")


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
        "--notify",
        action="append",
        dest="notify",
        metavar="DEST",
        help="tell DEST when the job is done (repeat, up to 5): https://..., sqs:QUEUE, "
        "sns:TOPIC_ARN or celery:QUEUE/TASK, under GVW_NOTIFY_DESTINATIONS (docs/events.md)",
    )
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
        type=positive_float,
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
        "--run-name",
        metavar="NAME",
        help="the run's name (its id starts with it; default: run)",
    )
    bulk.add_argument(
        "--max-usd",
        type=non_negative_usd,
        metavar="USD",
        help="the run's cost cap: it never commits more (plus one request's error), across "
        "the fleet; jobs past it are held, not failed (gvw runs resume RUN --max-usd N)",
    )
    bulk.add_argument(
        "--notify",
        action="append",
        dest="run_notify",
        metavar="DEST",
        help="tell DEST when the run is done (run.completed; repeat, up to 5): https://..., "
        "sqs:QUEUE, sns:TOPIC_ARN or celery:QUEUE/TASK, under GVW_NOTIFY_DESTINATIONS",
    )
    bulk.add_argument(
        "--new-run",
        action="store_true",
        help="start a new run even when an interrupted enqueue of the same prefix and job "
        "left one unsealed (by default a rerun continues that run)",
    )
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
        type=positive_int,
        default=100,
        metavar="N",
        help="--dry-run: objects whose headers are read for their pixel sizes (default 100)",
    )
    bulk.add_argument(
        "--timeout",
        type=positive_float,
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
    show = sub.add_parser(
        "show",
        help="a job at a glance: status, answer, cost, warnings, artifacts; --open its overlay",
        description="The job's record as gvw result prints it; with --open, its overlay is "
        "downloaded to ./gvw-show/JOB_ID/ and opened where there is a display (its path "
        "printed otherwise).",
    )
    show.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    show.add_argument("--output", metavar="URI", help="the results folder the job named")
    show.add_argument("--json", action="store_true", help="print the record as stored")
    show.add_argument("--open", action="store_true", help="download and open the overlay")

    worker = sub.add_parser(
        "worker",
        help="run a worker with the project's defaults",
        description="Same as `celery -A worker worker -Q vision` with an "
        "I/O-bound thread pool by default.",
    )
    worker.add_argument(
        "--concurrency",
        type=positive_int,
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

    runs = sub.add_parser(
        "runs",
        help="runs (every gvw enqueue-prefix is one): list, show [--watch], retry",
        description="A run is the jobs of one gvw enqueue-prefix (or of jobs naming it): "
        "its definition and members in storage under {results}/_runs/RUN/, its live "
        "counts in GVW_REDIS_URL, its summary.json kept current by the workers.",
    )
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    runs_list = runs_sub.add_parser("list", help="the runs under the results folder, newest first")
    runs_show = runs_sub.add_parser(
        "show", help="a run's progress: counts by state and error code, spend, rate, ETA"
    )
    runs_show.add_argument("run_id", metavar="RUN", help="the run's id (as enqueue-prefix printed)")
    runs_show.add_argument(
        "--watch", action="store_true", help="refresh (in place on a terminal) until it ends"
    )
    runs_show.add_argument(
        "--recount",
        action="store_true",
        help="count the run again from storage first (its members and their records: a "
        "request a job), for a fleet Redis that lost its counts",
    )
    runs_show.add_argument(
        "--interval",
        type=positive_float,
        default=2.0,
        metavar="S",
        help="with --watch: look again every S seconds (default 2)",
    )
    runs_retry = runs_sub.add_parser(
        "retry",
        help="send again the run's failed jobs (optionally by --code) and jobs with no record",
    )
    runs_retry.add_argument("run_id", metavar="RUN", help="the run's id")
    runs_retry.add_argument(
        "--code",
        dest="codes",
        action="append",
        metavar="CODE",
        help="only failed jobs with this error code (repeatable); jobs with no record "
        "are then left alone",
    )
    runs_resume = runs_sub.add_parser(
        "resume",
        help="set the run's cost cap (--max-usd) and send again the jobs it held",
    )
    runs_resume.add_argument("run_id", metavar="RUN", help="the run's id")
    cap = runs_resume.add_mutually_exclusive_group()
    cap.add_argument(
        "--max-usd",
        type=non_negative_usd,
        metavar="USD",
        help="the run's new cap: it never commits more (plus one request's error)",
    )
    cap.add_argument("--no-cap", action="store_true", help="lift the run's cap")
    runs_seal = runs_sub.add_parser(
        "seal",
        help="say a run has all its jobs (a bridge rule's run once its period is over, a "
        "producer's own run): its last end then finishes it",
    )
    runs_seal.add_argument("run_id", metavar="RUN", help="the run's id")
    for one in (runs_list, runs_show, runs_retry, runs_resume, runs_seal):
        one.add_argument(
            "--output",
            metavar="URI",
            help="the results folder the run's jobs write to (default GVW_RESULTS_URI)",
        )
        one.add_argument("--json", action="store_true", help="print JSON")

    export = sub.add_parser(
        "export",
        help="a run's (or a results folder's) records as a Parquet dataset, incrementally",
        description="One row per job (docs/exports.md): written in parts beside the "
        "results ({results}/_exports/RUN/) or to --to; a second export adds only the "
        "records the dataset does not hold yet.",
    )
    _add_records_target(export)
    export.add_argument("--to", metavar="URI", help="the dataset's folder")
    export.add_argument("--json", action="store_true", help="print JSON")

    report = sub.add_parser(
        "report",
        help="a run's (or a results folder's) records as one HTML page: summary and gallery",
        description="A self-contained page (docs/exports.md): the counts by status, task, "
        "error and label, and a gallery of every job (its overlay, else its input) with "
        "filters by task, status, label and error. Written to ./gvw-report/NAME.html or --to.",
    )
    _add_records_target(report)
    report.add_argument("--to", metavar="PATH|URI", help="where the page is written")
    report.add_argument(
        "--images",
        choices=["embed", "link"],
        default="embed",
        help="embed: thumbnails inside the page (stands alone, never expires; the default); "
        "link: pre-signed links to the full pictures, valid --link-lifetime-s",
    )
    report.add_argument(
        "--link-lifetime-s",
        type=bounded_int(60, 7 * 86400),  # SigV4 signs for at most 7 days
        default=86400,
        metavar="S",
        help="how long the links of --images link load (default 1 day, at most 7)",
    )
    report.add_argument(
        "--limit",
        type=bounded_int(1, 100_000),
        default=2000,
        metavar="N",
        help="jobs in the gallery (default 2000); the summary counts all",
    )
    report.add_argument("--json", action="store_true", help="print JSON")

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
        type=positive_int,
        default=100,
        metavar="N",
        help="the newest N dead letters (default 100)",
    )
    dead_list.add_argument("--json", action="store_true", help="print JSON lines")
    dead_replay = dead_sub.add_parser("replay", help="re-enqueue jobs with their job ids")
    dead_replay.add_argument(
        "job_ids", metavar="JOB_ID", nargs="+", help="dead-lettered jobs to send again"
    )
    events = sub.add_parser(
        "events",
        help="completion events (a job's notify): list, redeliver",
        description="Deliveries of completion events kept in GVW_REDIS_URL (docs/events.md): "
        "each event to each destination, its state (pending, delivered, failed), attempts "
        "and last error. Redeliver puts failed (or delivered) deliveries back with no "
        "attempts used; the workers send them.",
    )
    events_sub = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    events_list = events_sub.add_parser("list", help="the newest deliveries, newest first")
    events_list.add_argument(
        "--failed", action="store_true", help="only those that used their attempts"
    )
    events_list.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="at most N (default 100)"
    )
    events_list.add_argument("--json", action="store_true", help="print JSON lines")
    redeliver = events_sub.add_parser("redeliver", help="deliver events again")
    redeliver.add_argument(
        "event_ids", metavar="EVENT_ID", nargs="*", help="events (evt_...) to deliver again"
    )
    redeliver.add_argument(
        "--all-failed", action="store_true", help="every delivery that used its attempts"
    )
    return parser
