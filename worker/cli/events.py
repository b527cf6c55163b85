"""`gvw events list | redeliver`: completion events the fleet keeps (docs/events.md)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Final

from worker.cli.common import EXIT_FAILED, EXIT_OK, UsageError, fail

# how many failed deliveries `redeliver --all-failed` puts back at once
REDELIVER_MAX: Final = 100_000


def cmd_events(args: argparse.Namespace) -> int:
    from worker.runtime import build_ports
    from worker.settings import get_settings

    ports = build_ports(get_settings())
    outbox = ports.events.outbox
    if args.events_command == "list":
        return _list(outbox, limit=args.limit, failed_only=args.failed, as_json=args.json)
    if bool(args.event_ids) == bool(args.all_failed):
        raise UsageError("gvw events redeliver: name EVENT_IDs, or --all-failed (not both)")
    if args.all_failed:
        ids = outbox.failed_ids(limit=REDELIVER_MAX)
    else:
        ids = []
        for event_id in args.event_ids:
            kept = [d.delivery_id for d in outbox.of_event(event_id) if d.state != "pending"]
            if not kept:
                fail(f"{event_id}: no failed or delivered delivery of this event is kept")
            ids.extend(kept)
    count = outbox.redeliver(ids, now=time.time()) if ids else 0
    if count:
        from worker.queue.app import schedule_events_run

        schedule_events_run()  # the workers deliver them (a run through the broker)
    print(f"{count} deliveries due again; the workers send them")
    missing = not args.all_failed and count < len(args.event_ids)
    return EXIT_FAILED if missing else EXIT_OK


def _list(outbox: Any, *, limit: int, failed_only: bool, as_json: bool) -> int:
    from worker.events.destinations import shown

    deliveries = outbox.listing(limit=limit, failed_only=failed_only)
    for delivery in deliveries:
        row = {
            "event_id": delivery.event_id,
            "type": delivery.type,
            "destination": shown(delivery.destination),
            "state": delivery.state,
            "attempts": delivery.attempts,
            "error": delivery.error,
            "created": _when(delivery.created),
            "next_attempt": _when(delivery.next_at) if delivery.next_at else None,
        }
        if as_json:
            print(json.dumps(row))
            continue
        line = (
            f"{row['created']}  {delivery.event_id}  {delivery.type}  {delivery.state:<9}  "
            f"attempts={delivery.attempts}  {row['destination']}"
        )
        print(line + (f"  {delivery.error[:160]}" if delivery.error else ""))
    if not as_json:
        what = "failed deliveries" if failed_only else "deliveries"
        print(f"{len(deliveries)} {what}; {outbox.pending_count()} waiting to be sent")
    return EXIT_OK


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))
