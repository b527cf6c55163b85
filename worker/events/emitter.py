"""THE port of completion events (`Ports.events`): what the job's end, and any later
event (``run.completed``), calls.

    events.check(job.notify)            at admission: InvalidJob naming notify.N
    events.emit(event, destinations)    keep the event for each allowed destination

`emit` only writes the outbox (a few Redis commands, bounded: at most
`worker.contract.jobs.NOTIFY_MAX_DESTINATIONS` a job) and asks for a delivery run
(`wake`, set by `worker.queue`): a destination that is down never holds or fails a job.
An error of the outbox is raised to the caller: `FleetUnavailable` (Redis away) makes the
job's end wait for Redis like any outage (`worker.pipeline.ended`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from worker.events.destinations import check_notify, parse_destination, route_for, shown
from worker.events.outbox import Outbox
from worker.events.records import Event
from worker.observability import EVENTS
from worker.settings import Settings

log = logging.getLogger(__name__)


class Events(Protocol):
    outbox: Outbox
    # asks for a delivery run soon (set by the Celery app; a no-op elsewhere)
    wake: Callable[[], None]

    def check(self, destinations: Sequence[str]) -> None:
        """Every destination well formed and allowed, or InvalidJob naming ``notify.N``."""
        ...

    def emit(self, event: Event, destinations: Sequence[str]) -> int:
        """Keep ``event`` for each destination the allow-list allows (others are logged
        and left out), once per (event id, destination); returns how many were new."""
        ...


def _no_wake() -> None:
    return None


class EventHub:
    def __init__(self, outbox: Outbox, settings: Settings) -> None:
        self.outbox = outbox
        self.wake: Callable[[], None] = _no_wake
        self._settings = settings

    def check(self, destinations: Sequence[str]) -> None:
        check_notify(destinations, self._settings.notify_routes)

    def emit(self, event: Event, destinations: Sequence[str]) -> int:
        routes = self._settings.notify_routes
        added = 0
        now = time.time()
        for destination in dict.fromkeys(destinations):  # named twice: kept once
            try:
                parse_destination(destination)
            except ValueError:
                allowed = False
            else:
                allowed = route_for(destination, routes) is not None
            if not allowed:
                # a job refused for its notify (invalid_job) still ends: told only
                # where the allow-list permits
                log.warning(
                    "event not sent to a destination the allow-list does not permit",
                    extra={"event_id": event.id, "destination": shown(destination)},
                )
                EVENTS.labels("refused").inc()
                continue
            kept = self.outbox.add(event, destination, now=now)
            if kept is None:
                log.error(
                    "event outbox full: event not kept",
                    extra={"event_id": event.id, "destination": shown(destination)},
                )
                EVENTS.labels("dropped").inc()
                continue
            EVENTS.labels("added" if kept else "duplicate").inc()
            added += int(kept)
        if added:
            try:
                self.wake()
            except Exception:  # kept in the outbox: the workers' watch starts a run
                log.warning("could not ask for an event delivery run", exc_info=True)
        return added
