"""`gvw bridge sqs | webhook`: the long-running bridge processes.

worker/cli/main.py mounts these with `add_bridge_parser(sub)` and dispatches `bridge` to
`run_bridge`; `python -m worker.bridge sqs ...` runs the same without the rest of `gvw`.
Only argparse is imported at module level, so `gvw --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # --once: a job could not be enqueued, or SQS could not be reached
EXIT_USAGE = 2  # bad rules, bad options

RULES_ENV = "GVW_BRIDGE_RULES"

DESCRIPTION = """\
Turn S3 object notifications into vision.analyze jobs. Rules (--rules FILE, or
GVW_BRIDGE_RULES: a path or inline JSON) map bucket, prefix and suffix to a job
template; without rules, every image gets a caption. Job ids are derived from the
object (bucket, key, version or ETag) and the rule: a notification delivered twice
yields one result. See docs/bridge.md.
"""

EPILOG = """\
examples:
  gvw bridge sqs --queue-url https://sqs.eu-west-1.amazonaws.com/123456789012/uploads
  gvw bridge sqs --queue-url URL --rules rules.json --once --wait-s 2    # drain, then exit
  GVW_BRIDGE_TOKEN=s3cret gvw bridge webhook --host 0.0.0.0 --port 8900  # MinIO webhook
"""


def add_bridge_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bridge` to `gvw`'s subcommands (the `sub` of worker.cli.build_parser)."""
    bridge = subparsers.add_parser(
        "bridge",
        help="turn S3 notifications (SQS, MinIO webhook) into jobs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_parsers(bridge)
    return bridge


def add_source_parsers(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="bridge_source", metavar="SOURCE", required=True)

    sqs = sources.add_parser(
        "sqs",
        help="long-poll an SQS queue of S3 notifications",
        description="Long-poll an SQS queue fed by S3 (directly, through SNS or through "
        "EventBridge). A message is deleted only after all its jobs are enqueued; others "
        "come back after the visibility timeout and end in the queue's dead-letter queue. "
        "SIGTERM / SIGINT stop after the current batch.",
    )
    sqs.add_argument("--queue-url", required=True, metavar="URL", help="the SQS queue S3 notifies")
    sqs.add_argument("--rules", metavar="FILE", help=f"rules file (default ${RULES_ENV})")
    sqs.add_argument(
        "--max-messages", type=int, default=10, metavar="N", help="per receive, 1-10 (default 10)"
    )
    sqs.add_argument(
        "--wait-s", type=int, default=20, metavar="S", help="long poll, 0-20 s (default 20)"
    )
    sqs.add_argument(
        "--once",
        action="store_true",
        help="handle what is in the queue, then exit (cron, tests); exit 1 if a job failed",
    )
    sqs.add_argument(
        "--max-batches", type=int, default=None, metavar="N", help="stop after N receives"
    )

    webhook = sources.add_parser(
        "webhook",
        help="receive POSTed notifications (MinIO's webhook target)",
        description="An HTTP server for MinIO and other S3-compatible stores. With "
        "GVW_BRIDGE_TOKEN set, requests must carry `Authorization: Bearer <token>` (MinIO's auth_token); without it the server "
        "only listens on loopback, for local use. Answers 200 once the jobs are enqueued.",
    )
    webhook.add_argument(
        "--port", type=int, required=True, metavar="N", help="port to listen on for events"
    )
    webhook.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    webhook.add_argument("--rules", metavar="FILE", help=f"rules file (default ${RULES_ENV})")


def run_bridge(args: argparse.Namespace) -> int:
    from worker.bridge.dispatch import CeleryJobSender, Dispatcher
    from worker.bridge.rules import DEFAULT_RULES, RulesError, load_rules
    from worker.settings import get_settings

    settings = get_settings()  # the bridge's composition root: the environment, once
    _configure_logging(settings.gvw_log_level, settings.gvw_log_format)
    source = args.rules or settings.gvw_bridge_rules
    try:
        rules = load_rules(source) if source else DEFAULT_RULES
    except RulesError as exc:
        return _fail(str(exc), EXIT_USAGE)
    # The workers write results to GVW_RESULTS_URI; the bridge must never analyse them.
    dispatcher = Dispatcher(
        rules,
        CeleryJobSender(settings.celery_broker_url),
        results_uri=settings.gvw_results_uri or None,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        if args.bridge_source == "sqs":
            return _run_sqs(args, dispatcher, stop)
        token = settings.gvw_bridge_token.get_secret_value() if settings.gvw_bridge_token else None
        return _run_webhook(args, dispatcher, stop, token or None)


def _run_sqs(args: argparse.Namespace, dispatcher: Any, stop: threading.Event) -> int:
    from worker.bridge.sqs_runner import SqsRunner, sqs_client

    try:
        runner = SqsRunner(
            # boto3's own variables (AWS_ENDPOINT_URL_SQS, AWS_REGION...), from this root
            sqs_client(args.queue_url, wait_s=args.wait_s, environ=os.environ),
            args.queue_url,
            dispatcher,
            max_messages=args.max_messages,
            wait_s=args.wait_s,
        )
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    report = runner.run(stop=stop, once=args.once, max_batches=args.max_batches)
    # one JSON line on stdout for cron logs and scripts; the details went to the log
    print(json.dumps({**dispatcher.tally.snapshot(), **report.as_dict()}), flush=True)
    if not report.ok:
        return _fail(
            f"{report.failed} message(s) kept with jobs not enqueued, "
            f"{report.receive_errors} receive error(s): see the log",
            EXIT_FAILED,
        )
    return EXIT_OK


def _run_webhook(
    args: argparse.Namespace, dispatcher: Any, stop: threading.Event, token: str | None
) -> int:
    from worker.bridge.webhook import serve_webhook

    try:
        serve_webhook(args.host, args.port, dispatcher, token=token, stop=stop)
    except (ValueError, OSError) as exc:  # exposure refused, port taken
        return _fail(str(exc), EXIT_USAGE)
    return EXIT_OK


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`; a second signal gets the default behaviour back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        signal.signal(signum, previous[signal.Signals(signum)] or signal.SIG_DFL)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler or signal.SIG_DFL)


def _configure_logging(level: str, fmt: str) -> None:
    from worker.observability import configure_logging

    configure_logging(level, fmt=fmt)


def _fail(reason: str, status: int) -> int:
    print(f"gvw bridge: {reason.splitlines()[0] if reason else 'error'}", file=sys.stderr)
    return status
