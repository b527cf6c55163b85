"""A day's spending budget for the whole fleet (GVW_BUDGET_USD_PER_DAY), in Redis.

Every model call first reserves its estimated cost (`tasks.pricing`: the image and text
tokens it will send, the output and thinking it allows) and, once answered, settles it
with what the call really cost. One Lua script admits a reservation only when the day's
spent and reserved amounts plus it stay within the budget, so the fleet never commits
past the budget; a call that costs more than its estimate can pass it by that difference
only. A worker that dies holding a reservation leaves it counted as spent: the error is
on the side of spending less.

Days are UTC days on Redis's clock (`TIME` inside the script, like the rate limiter), so
workers' clocks never disagree about when the next day's budget opens. Amounts are kept
in micro-dollars (integers) so increments never round.

    gvw:budget:{project}:{day}   hash: spent, reserved (micro-USD); expires 3 days later

A job the budget has no room for waits (at most GVW_RATE_LIMIT_MAX_WAIT_S) and then goes
back to the queue (`BudgetExhausted`), to come back when a reservation settles below its
estimate or the next day opens; it never uses up the job's retries.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from tasks.errors import BudgetExhausted, QuotaExhausted

MICRO = 1_000_000
DAY_S = 86_400
# a refused job looks again this often while it waits inside GVW_RATE_LIMIT_MAX_WAIT_S
_POLL_S = 0.25
# room may come back before the next day (a reservation settled below its estimate):
# a job refused while others' calls are in flight comes back this soon
_IN_FLIGHT_RETRY_S = 5.0

# KEYS[1] = the key prefix (…:budget:{project}:); ARGV[1] = budget, ARGV[2] = estimate,
# ARGV[3] = the key's lifetime in s. Returns {admitted (0/1), day, s to the next day,
# spent, reserved}.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local day = math.floor(now / 86400)
local key = KEYS[1] .. day
local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
local estimate = tonumber(ARGV[2])
local to_next = (day + 1) * 86400 - now
if spent + reserved + estimate > tonumber(ARGV[1]) then
    return {0, day, to_next, spent, reserved}
end
redis.call('HINCRBY', key, 'reserved', estimate)
redis.call('EXPIRE', key, tonumber(ARGV[3]))
return {1, day, to_next, spent, reserved + estimate}
"""

# KEYS[1] = the day's key; ARGV[1] = the reservation, ARGV[2] = the real cost
_SETTLE_LUA = """
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
return 1
"""


@dataclass(frozen=True)
class Reservation:
    day: int
    estimate_micro: int


@dataclass(frozen=True)
class DaySpend:
    day: int
    spent_usd: float
    reserved_usd: float
    budget_usd: float


class Budget(Protocol):
    @property
    def enabled(self) -> bool: ...
    def reserve(self, estimate_usd: float, *, max_wait_s: float) -> Reservation | None: ...
    def ensure_open(self) -> None:
        """BudgetExhausted, without waiting, when the day has no room left at all."""
        ...

    def settle(self, reservation: Reservation | None, cost_usd: float) -> None: ...
    def today(self) -> DaySpend | None: ...


def _micro(usd: float) -> int:
    return max(0, round(usd * MICRO))


class NoBudget:
    """GVW_BUDGET_USD_PER_DAY=0: nothing is counted."""

    enabled = False

    def reserve(self, estimate_usd: float, *, max_wait_s: float) -> Reservation | None:
        return None

    def ensure_open(self) -> None:
        return None

    def settle(self, reservation: Reservation | None, cost_usd: float) -> None:
        return None

    def today(self) -> DaySpend | None:
        return None


class _Waiting:
    """`reserve`: try, wait a little, give the job back to the queue."""

    enabled = True
    budget_micro: int

    def _try(self, estimate_micro: int) -> tuple[bool, int, int, int, int]:
        raise NotImplementedError

    def ensure_open(self) -> None:
        self.reserve(0.0, max_wait_s=0.0)  # admitted while anything at all is left

    def reserve(self, estimate_usd: float, *, max_wait_s: float) -> Reservation | None:
        estimate = _micro(estimate_usd)
        if estimate > self.budget_micro:
            raise QuotaExhausted(
                f"this request's estimated cost (${estimate_usd:.6f}) is more than the whole "
                f"day's budget (GVW_BUDGET_USD_PER_DAY=${self.budget_micro / MICRO:g})"
            )
        deadline = time.monotonic() + max_wait_s
        while True:
            admitted, day, to_next_s, spent, reserved = self._try(estimate)
            if admitted:
                return Reservation(day, estimate)
            # only the next day helps when what is already spent leaves no room
            waits_for_day = spent + estimate > self.budget_micro
            retry_after_s = float(to_next_s) if waits_for_day else _IN_FLIGHT_RETRY_S
            if time.monotonic() + min(retry_after_s, _POLL_S) > deadline:
                until = (
                    f"the next UTC day opens in {to_next_s // 3600} h {to_next_s % 3600 // 60} min"
                    if waits_for_day
                    else "calls in flight may leave room"
                )
                raise BudgetExhausted(
                    f"the day's budget (${self.budget_micro / MICRO:g}) has no room for this "
                    f"request (${estimate_usd:.6f}): ${spent / MICRO:.6f} spent, "
                    f"${reserved / MICRO:.6f} reserved by calls in flight; {until}",
                    retry_after_s=retry_after_s,
                    waits_for_day=waits_for_day,
                    local=True,
                )
            time.sleep(_POLL_S)


class RedisBudget(_Waiting):
    def __init__(self, client: redis.Redis, *, project: str, budget_usd: float) -> None:
        self.budget_micro = _micro(budget_usd)
        self._prefix = f"gvw:budget:{project}:"
        self._redis = client
        self._reserve = client.register_script(_RESERVE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)

    def _try(self, estimate_micro: int) -> tuple[bool, int, int, int, int]:
        admitted, day, to_next, spent, reserved = self._reserve(
            keys=[self._prefix], args=[self.budget_micro, estimate_micro, 3 * DAY_S]
        )
        return bool(admitted), int(day), int(to_next), int(spent), int(reserved)

    def settle(self, reservation: Reservation | None, cost_usd: float) -> None:
        if reservation is not None:
            self._settle(
                keys=[f"{self._prefix}{reservation.day}"],
                args=[reservation.estimate_micro, _micro(cost_usd)],
            )

    def today(self) -> DaySpend | None:
        now_s, _ = self._redis.time()  # type: ignore[misc]
        day = int(now_s) // DAY_S
        raw = self._redis.hgetall(f"{self._prefix}{day}")
        values = {k.decode(): int(v) for k, v in raw.items()}  # type: ignore[union-attr]
        return DaySpend(
            day=day,
            spent_usd=values.get("spent", 0) / MICRO,
            reserved_usd=values.get("reserved", 0) / MICRO,
            budget_usd=self.budget_micro / MICRO,
        )


class LocalBudget(_Waiting):
    """In memory, for one process without Redis (tests of the pipeline, `gvw demo`)."""

    def __init__(self, *, budget_usd: float) -> None:
        self.budget_micro = _micro(budget_usd)
        self._days: dict[int, list[int]] = {}  # day -> [spent, reserved]
        self._mutex = threading.Lock()

    def _try(self, estimate_micro: int) -> tuple[bool, int, int, int, int]:
        now = time.time()
        day = int(now) // DAY_S
        to_next = (day + 1) * DAY_S - int(now)
        with self._mutex:
            spent, reserved = self._days.setdefault(day, [0, 0])
            if spent + reserved + estimate_micro > self.budget_micro:
                return False, day, to_next, spent, reserved
            self._days[day][1] += estimate_micro
            return True, day, to_next, spent, reserved + estimate_micro

    def settle(self, reservation: Reservation | None, cost_usd: float) -> None:
        if reservation is None:
            return
        with self._mutex:
            entry = self._days.setdefault(reservation.day, [0, 0])
            entry[1] -= reservation.estimate_micro
            entry[0] += _micro(cost_usd)

    def today(self) -> DaySpend | None:
        day = int(time.time()) // DAY_S
        with self._mutex:
            spent, reserved = self._days.get(day, [0, 0])
        return DaySpend(day, spent / MICRO, reserved / MICRO, self.budget_micro / MICRO)
