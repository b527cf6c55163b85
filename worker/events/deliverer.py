"""One delivery run: claim what is due, send it, settle each delivery.

Run by the workers (`vision.events_tick` in `worker.queue.app`), one run at a time
across the fleet (the outbox's run lock); each run schedules the next while deliveries
wait (`Outbox.finish_run`). A run claims `CLAIM_BATCH` due deliveries at a time and
sends them on `SEND_THREADS` threads, for at most `RUN_MAX_S`; a destination that is
down costs its deliveries a failed attempt each, never a job.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from worker.events.destinations import DeliveryRefused, parse_destination, route_for, shown
from worker.events.outbox import Delivery, Outbox
from worker.events.senders import DeliveryFailed, Sender
from worker.observability import EVENT_DELIVERIES
from worker.settings import Settings

log = logging.getLogger(__name__)

CLAIM_BATCH: Final = 16
SEND_THREADS: Final = 8
# a run stops claiming after this long, and the next run goes on (a worker thread is not
# held for long by a backlog)
RUN_MAX_S: Final = 20.0


def backoff_s(
    attempts: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """The wait after a delivery's ``attempts``-th failed attempt: doubling from ``base_s``
    up to ``max_s``, with "equal jitter" (half fixed, half random): always within
    [d/2, d] of the doubled delay d, so destinations coming back are not hit by every
    delivery at once."""
    delay_s = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return delay_s / 2 + (rng or random).uniform(0, delay_s / 2)


@dataclass(frozen=True)
class RunReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    lost_leases: int = 0


class Deliverer:
    def __init__(self, outbox: Outbox, settings: Settings, senders: Mapping[str, Sender]) -> None:
        self._outbox = outbox
        self._settings = settings
        self._senders = senders

    @property
    def lease_s(self) -> float:
        # longer than any one send (each is bounded by the timeout): a live run always
        # settles before its lease ends; a killed one's deliveries are due again after it
        return 2 * self._settings.gvw_notify_timeout_s + 30

    def run_once(self) -> RunReport | None:
        """Deliver what is due; None when another run holds the lock (it schedules the
        next run itself)."""
        with self._outbox.run_lock() as holder:
            if holder is None:
                return None
            return self._deliver_due()

    def _deliver_due(self) -> RunReport:
        token = uuid.uuid4().hex
        counts = {"delivered": 0, "retried": 0, "failed": 0, "lost_leases": 0}
        deadline = time.monotonic() + RUN_MAX_S
        with ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="gvw-events") as pool:
            while time.monotonic() < deadline:
                claimed = self._outbox.claim(
                    now=time.time(), limit=CLAIM_BATCH, lease_s=self.lease_s, token=token
                )
                if not claimed:
                    break
                for outcome in pool.map(lambda d: self._deliver(d, token), claimed):
                    counts[outcome] += 1
        return RunReport(**counts)

    def _deliver(self, delivery: Delivery, token: str) -> str:
        settings = self._settings
        try:
            self._send(delivery)
        except DeliveryRefused as exc:
            return self._fail(delivery, token, str(exc))
        except Exception as exc:
            error = str(exc) if isinstance(exc, DeliveryFailed) else f"{type(exc).__name__}: {exc}"
            error = error[:500]
            if delivery.attempts >= settings.gvw_notify_max_attempts:
                return self._fail(
                    delivery, token, f"{delivery.attempts} attempts failed; last: {error}"
                )
            at = time.time() + backoff_s(
                delivery.attempts,
                base_s=settings.gvw_notify_backoff_base_s,
                max_s=settings.gvw_notify_backoff_max_s,
            )
            if not self._outbox.retry_at(
                delivery.delivery_id, token, error=error, at=at, now=time.time()
            ):
                return "lost_leases"
            log.info(
                "event delivery failed; trying again later",
                extra={
                    "event_id": delivery.event_id,
                    "destination": shown(delivery.destination),
                    "attempts": delivery.attempts,
                    "retry_in_s": round(at - time.time(), 1),
                    "error": error,
                },
            )
            EVENT_DELIVERIES.labels("retried").inc()
            return "retried"
        if not self._outbox.delivered(delivery.delivery_id, token, now=time.time()):
            return "lost_leases"  # delivered, and another run will deliver it again
        log.info(
            "event delivered",
            extra={
                "event_id": delivery.event_id,
                "destination": shown(delivery.destination),
                "attempts": delivery.attempts,
            },
        )
        EVENT_DELIVERIES.labels("delivered").inc()
        return "delivered"

    def _send(self, delivery: Delivery) -> None:
        try:
            destination = parse_destination(delivery.destination)
        except ValueError as exc:
            raise DeliveryRefused(f"refused: {exc}") from None
        # the allow-list of now: an entry removed since the event was kept is refused
        route = route_for(delivery.destination, self._settings.notify_routes)
        if route is None:
            raise DeliveryRefused(
                "refused: GVW_NOTIFY_DESTINATIONS no longer allows this destination"
            )
        sender = self._senders.get(destination.kind)
        if sender is None:
            raise DeliveryRefused(f"refused: no sender for {destination.kind} destinations here")
        sender.send(delivery, destination, route)

    def _fail(self, delivery: Delivery, token: str, error: str) -> str:
        if not self._outbox.failed(delivery.delivery_id, token, error=error, now=time.time()):
            return "lost_leases"
        log.warning(
            "event delivery failed for good; kept for gvw events redeliver",
            extra={
                "event_id": delivery.event_id,
                "destination": shown(delivery.destination),
                "attempts": delivery.attempts,
                "error": error,
            },
        )
        EVENT_DELIVERIES.labels("failed").inc()
        return "failed"
