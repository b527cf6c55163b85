"""`gvw enqueue-prefix`: every image under a prefix as jobs, or a dry run of the cost."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.cli.common import EXIT_FAILED, EXIT_OK, UsageError, fail, job_options
from worker.producers.bulk import IMAGE_SUFFIXES


def cmd_enqueue_prefix(args: argparse.Namespace) -> int:
    from worker.producers.bulk import check_prefix, enqueue_prefix, job_objects, wait_all
    from worker.producers.client import VisionClient
    from worker.producers.progress import Progress
    from worker.settings import get_settings
    from worker.storage import StoreRouter

    settings = get_settings()
    template = {"task": args.task, **job_options(args)}
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
    run_notify = list(args.run_notify or [])
    if run_notify:
        from worker.contract.jobs import NOTIFY_MAX_DESTINATIONS
        from worker.events.destinations import check_notify

        if len(run_notify) > NOTIFY_MAX_DESTINATIONS:
            raise UsageError(f"--notify: at most {NOTIFY_MAX_DESTINATIONS} destinations")
        # the run's end goes only where the fleet's allow-list permits, checked now
        check_notify(run_notify, settings.notify_routes)
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
    sent = None if args.resubmit else _sent_log(settings, prefix, template)
    run = _run_for(settings, stores, sent, results_folder, template, prefix, suffixes, args)
    try:
        summary = enqueue_prefix(client, objects(), template, progress=Progress, sent=sent, run=run)
    except BaseException:
        # unsealed: the members sent so far are kept, and a rerun continues the run
        run.flush()
        raise
    run.seal()
    if sent is not None:
        sent.set_open_run(None)
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
        fail(f"{sum(summary.failed_by_code.values())} failed, {summary.pending} pending")
        return EXIT_FAILED
    return EXIT_OK


def _run_for(
    settings: Any,
    stores: Any,
    sent: Any,
    results: str,
    template: dict[str, Any],
    prefix: str,
    suffixes: tuple[str, ...],
    args: argparse.Namespace,
) -> Any:
    """The run this enqueue fills: the one an interrupted enqueue of the same listing
    left unsealed (unless --new-run), else a new one. Its id is printed first."""
    from worker.producers.runs import continue_run, fleet_ledger, start_run
    from worker.runs.records import RunSource

    ledger = fleet_ledger(settings.gvw_redis_url, ttl_s=settings.gvw_run_ttl_s)
    if ledger is None:
        print(
            "gvw: GVW_REDIS_URL unreachable: the run is kept in storage, without live counts",
            file=sys.stderr,
        )
    open_run = sent.open_run() if sent is not None and not args.new_run else None
    run = (
        continue_run(stores, ledger, results=results, run_id=open_run)
        if open_run is not None
        else None
    )
    continued = run is not None
    if run is None:
        run = start_run(
            stores,
            ledger,
            results=results,
            name=args.run_name,
            template=template,
            source=RunSource(kind="prefix", prefix=prefix, suffixes=list(suffixes)),
            max_usd=args.max_usd,
            notify=list(args.run_notify or []),
        )
        if sent is not None:
            sent.set_open_run(run.run_id)
    print(f"run {run.run_id}" + (" (continuing an interrupted enqueue)" if continued else ""))
    sys.stdout.flush()
    return run


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
