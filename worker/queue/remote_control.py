"""Celery's remote control, cut down to what operations need.

Any client of the broker can broadcast control commands, and Celery's worker obeys them
all: one `app.control.shutdown()` from any producer stops every worker of the fleet,
`rate_limit` slows it to a crawl, `revoke` drops another producer's job without a record.
Producers share the broker, so a worker only answers the read-only commands that probes,
`celery inspect` and Flower use; every other command is refused with an error reply and
a log line. See docs/security.md.
"""

from __future__ import annotations

import logging
from typing import Any, Final

log = logging.getLogger(__name__)

ALLOWED_COMMANDS: Final = frozenset(
    {
        # liveness and the cluster's own handshakes
        "ping",
        "hello",
        "clock",
        "heartbeat",
        # read-only inspection (celery inspect, Flower)
        "stats",
        "report",
        "active",
        "reserved",
        "scheduled",
        "revoked",
        "registered",
        "active_queues",
        "query_task",
        "dump_active",
        "dump_reserved",
        "dump_revoked",
        "dump_schedule",
        "dump_tasks",
        # task events on and off (Flower asks for them)
        "enable_events",
        "disable_events",
    }
)


def restrict_remote_control() -> list[str]:
    """Replace every control command outside `ALLOWED_COMMANDS` with a refusal, in the
    registry the worker's mailbox dispatches from. Returns the names refused."""
    from celery.worker.control import Panel

    refused = sorted(name for name in Panel.data if name not in ALLOWED_COMMANDS)
    for name in refused:
        Panel.data[name] = _refusal(name)
    return refused


def _refusal(name: str) -> Any:
    def refuse(state: Any, **arguments: Any) -> dict[str, str]:
        log.warning("remote control command refused: %s", name, extra={"command": name})
        return {"error": f"remote control command {name!r} is disabled on gvw workers"}

    return refuse
