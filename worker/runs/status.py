"""A run's summary from its live counts: progress, spend, rate over the last minutes, ETA."""

from __future__ import annotations

from worker.runs.ledger import RATE_WINDOW_MIN, RunCounts
from worker.runs.records import RunDefinition, RunSummary, utc_iso

# a rate read from less than this much time is too noisy to give an ETA from
_MIN_RATE_WINDOW_S = 10.0


def rate_per_min(counts: RunCounts, now_s: float) -> float:
    """Jobs ended per minute over the last `RATE_WINDOW_MIN` minutes (the current one
    included, as far as it has gone), or since the run's first end when that is later."""
    minute = int(now_s // 60)
    window = {m: n for m, n in counts.ended_per_minute.items() if m > minute - RATE_WINDOW_MIN}
    if not window:
        return 0.0
    start_s = max(min(window) * 60, now_s - RATE_WINDOW_MIN * 60)
    span_s = max(now_s - start_s, _MIN_RATE_WINDOW_S)
    return sum(window.values()) * 60.0 / span_s


def summarize(
    run_id: str,
    counts: RunCounts,
    definition: RunDefinition | None,
    *,
    now_s: float,
    summary_uri: str | None = None,
) -> RunSummary:
    rate = rate_per_min(counts, now_s)
    finished = counts.finished_at is not None
    eta_s = 0.0 if finished else (counts.live / rate * 60.0 if counts.sealed and rate > 0 else None)
    return RunSummary(
        run_id=run_id,
        name=definition.name if definition else None,
        state="finished" if finished else "running",
        sealed=counts.sealed,
        members=counts.members,
        counts={**counts.by_state, "failed": counts.failed},
        failed_by_code=dict(counts.failed_by_code),
        spent_usd=round(counts.spent_usd, 6),
        max_usd=counts.max_usd
        if counts.max_usd is not None
        else (definition.max_usd if definition else None),
        reserved_usd=round(counts.reserved_usd, 6),
        rate_per_min=round(rate, 3),
        eta_s=round(eta_s, 1) if eta_s is not None else None,
        created_at=definition.created_at if definition else None,
        finished_at=utc_iso(counts.finished_at) if counts.finished_at is not None else None,
        updated_at=utc_iso(now_s),
        summary_uri=summary_uri,
        round=counts.round,
    )
