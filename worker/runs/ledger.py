"""A run's live counts, kept by the workers in the fleet's Redis: one small write per move.

Each job of a run has one state, and each state a count. A move is one Lua script, so a
count changes exactly when a job's state does: a redelivery, a duplicate or a retry that
reports the state the job is already in moves nothing, and a job's end (its record is
written once) is never undone, except by `gvw runs retry`, which removes a failed job's
record and sends it again (`reopen`). Counts therefore stay right under at-least-once
delivery, whatever the number of workers.

    gvw:run:{run_id}:jobs     hash  job_id -> state (below)
    gvw:run:{run_id}:counts   hash  state -> jobs in it
    gvw:run:{run_id}:meta     hash  members, sealed, finished_at, spent_nano, folder, ...
    gvw:run:{run_id}:minutes  hash  UTC minute -> jobs that ended in it (the rate, the ETA)
    gvw:run:{run_id}:summary  string, the summary.json writer's turn (SET NX PX)

States: ``q`` queued, ``r`` running, ``w`` waiting (the day's budget, or a service the job
depends on), ``b`` batched, ``h`` held (the run's cost cap), ``s`` succeeded, ``f:{code}``
failed for good with that error code. Every key expires `ttl_s` after the run's last
move. A run is *sealed* once its membership is complete (`gvw enqueue-prefix` has listed
and sent everything); a sealed run whose members have all ended is *finished*
(`finished_at`). Until its final summary is written (`final_written`), every move and the
seal say so (`Move.finished`): the worker that writes it, and sends the run's event, may
die first, and the next end or redelivery then does it (the event's id is the run's and
its round's: it is sent once). A retry reopens a finished run in a new `round`.

The counts are a cache of what storage holds (the records under the run's folder and its
membership, `worker.runs.store`): a Redis that lost them is refilled by `gvw runs show
RUN --recount` (`rebuild`), for a run whose members storage keeps (`gvw enqueue-prefix`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

NANO = 1_000_000_000
# a job leaves an ended state (its record is written once) only when a retry reopens it
LIVE_STATES = ("q", "r", "w", "b", "h")
SUCCEEDED = "s"
FAILED_PREFIX = "f:"
STATE_NAMES = {
    "q": "queued",
    "r": "running",
    "w": "waiting",
    "b": "batched",
    "h": "held",
    "s": "succeeded",
}
# how many UTC minutes of ends the rate is read from
RATE_WINDOW_MIN = 5


def failed_state(code: str) -> str:
    return f"{FAILED_PREFIX}{code}"


def is_ended(state: str | None) -> bool:
    return state is not None and (state == SUCCEEDED or state.startswith(FAILED_PREFIX))


@dataclass(frozen=True)
class Move:
    """What a move did: ``moved`` when the job's state changed; ``finished`` when the
    run is finished and its final summary not yet written."""

    moved: bool
    finished: bool = False


@dataclass(frozen=True)
class RunCounts:
    """A run's counts as the fleet sees them now."""

    members: int
    by_state: Mapping[str, int]  # queued, running, waiting, batched, held, succeeded
    failed_by_code: Mapping[str, int]
    spent_usd: float
    sealed: bool
    finished_at: float | None
    ended_per_minute: Mapping[int, int] = field(default_factory=dict)  # UTC minute -> ends
    folder: str | None = None
    round: int = 0  # how often a retry reopened the finished run
    max_usd: float | None = None  # the cap
    paid_usd: float = 0.0  # what the run's calls cost, as they were answered
    reserved_usd: float = 0.0  # estimates of the calls under way

    @property
    def failed(self) -> int:
        return sum(self.failed_by_code.values())

    @property
    def ended(self) -> int:
        return self.by_state.get("succeeded", 0) + self.failed

    @property
    def live(self) -> int:
        return self.members - self.ended


def counts_from(
    raw_counts: Mapping[str, int],
    meta: Mapping[str, str],
    minutes: Mapping[int, int],
) -> RunCounts:
    by_state = {STATE_NAMES[s]: raw_counts.get(s, 0) for s in (*LIVE_STATES, SUCCEEDED)}
    failed = {
        s.removeprefix(FAILED_PREFIX): n
        for s, n in raw_counts.items()
        if s.startswith(FAILED_PREFIX) and n > 0
    }
    finished = meta.get("finished_at")
    return RunCounts(
        members=int(meta.get("members", 0)),
        by_state=by_state,
        failed_by_code=dict(sorted(failed.items())),
        spent_usd=int(meta.get("spent_nano", 0)) / NANO,
        sealed=meta.get("sealed") == "1",
        finished_at=float(finished) if finished else None,
        ended_per_minute=dict(minutes),
        folder=meta.get("folder") or None,
        round=int(meta.get("round", 0)),
        max_usd=int(meta["cap_nano"]) / NANO if "cap_nano" in meta else None,
        paid_usd=int(meta.get("paid_nano", 0)) / NANO,
        reserved_usd=int(meta.get("reserved_nano", 0)) / NANO,
    )


class RunLedger(Protocol):
    def open(self, run_id: str, *, folder: str) -> None:
        """Make the run known (its results folder kept for readers that have only its id)."""
        ...

    def add_members(self, run_id: str, job_ids: Sequence[str], *, folder: str) -> int:
        """Count `job_ids` as queued members, before they are sent (a worker's first move
        then finds them). Jobs already in the run keep their state. Returns how many were
        new."""
        ...

    def add_ended(self, run_id: str, ended: Mapping[str, str], *, folder: str) -> int:
        """Count jobs that ended before the run sent them (a rerun's committed records)."""
        ...

    def move(
        self, run_id: str, job_id: str, state: str, *, folder: str, cost_usd: float = 0.0
    ) -> Move:
        """The job is now in `state`; a job not yet a member becomes one (a producer may
        name a run on any job). An ended job stays ended."""
        ...

    def reopen(self, run_id: str, job_ids: Sequence[str]) -> int:
        """Failed jobs sent again (`gvw runs retry`): queued once more, and a finished run
        running again, in a new round. Returns how many moved."""
        ...

    def seal(self, run_id: str) -> Move:
        """The run has all its members: from now on its last end finishes it."""
        ...

    def counts(self, run_id: str) -> RunCounts | None:
        """None when the fleet knows nothing of the run."""
        ...

    def states(self, run_id: str) -> dict[str, str]:
        """Every member's state (for `gvw runs retry`)."""
        ...

    def summary_turn(self, run_id: str, *, every_s: float) -> bool:
        """True for at most one caller per `every_s`: its turn to write summary.json."""
        ...

    def final_written(self, run_id: str) -> None:
        """The finished run's final summary is written (and its event sent): moves stop
        saying `finished`."""
        ...

    def touch(self, run_id: str) -> None:
        """Renew the lifetime of the run's keys (`ttl_s` from now)."""
        ...

    def rebuild(
        self, run_id: str, states: Mapping[str, str], *, folder: str, sealed: bool, spent_usd: float
    ) -> None:
        """Counts made again from what storage holds (`gvw runs show --recount`): every
        key of the run replaced by these states."""
        ...

    # --- the run's cost cap ---------------------------------------------------------------

    def set_cap(self, run_id: str, max_usd: float | None) -> None:
        """The most the run may commit (None: no cap)."""
        ...

    def reserve(self, run_id: str, job_id: str, estimate_usd: float) -> bool:
        """Reserve a call's estimate under the run's cap: False when the run's paid and
        reserved amounts plus it would pass the cap. A job has one reservation: a new one
        (a retry, a redelivery after a crash) replaces its last."""
        ...

    def settle(self, run_id: str, job_id: str, cost_usd: float) -> None:
        """The job's call is answered (or failed): its reservation goes, `cost_usd` is paid."""
        ...

    def hold(self, run_id: str, job_id: str, job: str, *, folder: str) -> None:
        """Keep a job the cap holds (its message as sent, JSON) until `release`."""
        ...

    def release(self, run_id: str) -> dict[str, str]:
        """Every held job (job id -> its JSON), no longer held: queued again."""
        ...


# One HMGET reads what decides whether the run is finished (a move runs it every time).
_FINISHED_LUA = """
local function finished_check(meta)
    local m = redis.call('HMGET', meta, 'sealed', 'ended', 'members', 'final')
    if m[1] ~= '1' or tonumber(m[2] or '0') < tonumber(m[3] or '0') then return 0 end
    if redis.call('HEXISTS', meta, 'finished_at') == 0 then
        local t = redis.call('TIME')
        redis.call('HSET', meta, 'finished_at', string.format('%d.%06d', t[1], t[2]))
    end
    if m[4] == '1' then return 0 end
    return 1
end
local function ended(s) return s == 's' or (s and string.sub(s, 1, 2) == 'f:') end
"""

# KEYS[1] jobs, KEYS[2] counts, KEYS[3] meta, KEYS[4] minutes
# ARGV[1] job, ARGV[2] new state, ARGV[3] cost (nano-USD), ARGV[4] ttl s, ARGV[5] folder,
# ARGV[6] the worker's UTC minute (the rate's bucket: a clock off by seconds does not
# matter there). Returns {moved, finished}. Lifetimes are set when keys are made (a run
# opened, members added, a job not yet a member) and renewed by `touch`: not per move.
_MOVE_LUA = (
    _FINISHED_LUA
    + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = ARGV[2]
if old == new or ended(old) then
    return {0, finished_check(KEYS[3])}
end
if old then
    redis.call('HINCRBY', KEYS[2], old, -1)
else
    redis.call('HINCRBY', KEYS[3], 'members', 1)
    redis.call('HSETNX', KEYS[3], 'folder', ARGV[5])
end
redis.call('HSET', KEYS[1], ARGV[1], new)
redis.call('HINCRBY', KEYS[2], new, 1)
if ended(new) then
    redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
    redis.call('HINCRBY', KEYS[3], 'spent_nano', tonumber(ARGV[3]))
    redis.call('HINCRBY', KEYS[3], 'ended', 1)
end
if not old then
    redis.call('HSETNX', KEYS[4], '0', 0)  -- the minutes exist now, to expire with the rest
    for i = 1, 4 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4])) end
end
return {1, finished_check(KEYS[3])}
"""
)

# KEYS as above; ARGV[1] ttl s, ARGV[2] folder, ARGV[3] 'q' (members) or 'e' (ended),
# ARGV[4..] job, state pairs (state ignored for 'q'). Returns how many were new.
_ADD_LUA = (
    _FINISHED_LUA
    + """
local added = 0
for i = 4, #ARGV, 2 do
    local state = ARGV[3] == 'q' and 'q' or ARGV[i + 1]
    if redis.call('HSETNX', KEYS[1], ARGV[i], state) == 1 then
        added = added + 1
        redis.call('HINCRBY', KEYS[2], state, 1)
        if ended(state) then redis.call('HINCRBY', KEYS[3], 'ended', 1) end
    end
end
redis.call('HINCRBY', KEYS[3], 'members', added)
redis.call('HSETNX', KEYS[3], 'folder', ARGV[2])
redis.call('HSETNX', KEYS[4], '0', 0)  -- the minutes exist now, to expire with the rest
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[1])) end
return added
"""
)

# KEYS as above; ARGV the jobs. Returns how many moved.
_REOPEN_LUA = """
local moved = 0
for i = 1, #ARGV do
    local old = redis.call('HGET', KEYS[1], ARGV[i])
    if old and string.sub(old, 1, 2) == 'f:' then
        redis.call('HINCRBY', KEYS[2], old, -1)
        redis.call('HINCRBY', KEYS[2], 'q', 1)
        redis.call('HSET', KEYS[1], ARGV[i], 'q')
        redis.call('HINCRBY', KEYS[3], 'ended', -1)
        moved = moved + 1
    end
end
if moved > 0 and redis.call('HDEL', KEYS[3], 'finished_at') == 1 then
    redis.call('HDEL', KEYS[3], 'final')
    redis.call('HINCRBY', KEYS[3], 'round', 1)
end
return moved
"""

# KEYS[1] meta; ARGV[1] ttl s. Returns {1, finished}.
_SEAL_LUA = (
    _FINISHED_LUA
    + """
redis.call('HSET', KEYS[1], 'sealed', '1')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return {1, finished_check(KEYS[1])}
"""
)


# The cap (nano-USD). KEYS[1] meta, KEYS[2] reservations (job -> nano-USD);
# ARGV[1] job, ARGV[2] estimate, ARGV[3] ttl s. Returns 1 when reserved (or no cap).
_RESERVE_LUA = """
local cap = redis.call('HGET', KEYS[1], 'cap_nano')
if not cap then return 1 end
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local paid = tonumber(redis.call('HGET', KEYS[1], 'paid_nano') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved_nano') or '0')
local estimate = tonumber(ARGV[2])
if paid + reserved - old + estimate > tonumber(cap) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], estimate)
redis.call('HINCRBY', KEYS[1], 'reserved_nano', estimate - old)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""

# KEYS as above; ARGV[1] job, ARGV[2] cost
_SETTLE_LUA = """
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('HDEL', KEYS[2], ARGV[1])
-- 0 - old, not -old: Lua writes -0 as "-0", which HINCRBY refuses (a call reserved
-- nothing when the run had no cap then)
redis.call('HINCRBY', KEYS[1], 'reserved_nano', 0 - old)
redis.call('HINCRBY', KEYS[1], 'paid_nano', tonumber(ARGV[2]))
return 1
"""

# KEYS[1] jobs, KEYS[2] counts, KEYS[3] held (job -> JSON); every held job back to
# queued. Returns the held jobs, flat (job, JSON, ...).
_RELEASE_LUA = """
local held = redis.call('HGETALL', KEYS[3])
for i = 1, #held, 2 do
    if redis.call('HGET', KEYS[1], held[i]) == 'h' then
        redis.call('HSET', KEYS[1], held[i], 'q')
        redis.call('HINCRBY', KEYS[2], 'h', -1)
        redis.call('HINCRBY', KEYS[2], 'q', 1)
    end
end
redis.call('DEL', KEYS[3])
return held
"""


def _keys(run_id: str) -> list[str]:
    base = f"gvw:run:{run_id}:"
    return [base + "jobs", base + "counts", base + "meta", base + "minutes"]


def _cap_keys(run_id: str) -> list[str]:
    base = f"gvw:run:{run_id}:"
    return [base + "meta", base + "reserved", base + "held"]


def _nano(usd: float) -> int:
    return max(0, round(usd * NANO))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRunLedger:
    def __init__(self, client: Any, *, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._move = client.register_script(_MOVE_LUA)
        self._add = client.register_script(_ADD_LUA)
        self._reopen = client.register_script(_REOPEN_LUA)
        self._seal = client.register_script(_SEAL_LUA)
        self._reserve = client.register_script(_RESERVE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def open(self, run_id: str, *, folder: str) -> None:
        self._add(keys=_keys(run_id), args=[self._ttl_s, folder, "q"])

    def add_members(self, run_id: str, job_ids: Sequence[str], *, folder: str) -> int:
        pairs = [v for job_id in job_ids for v in (job_id, "q")]
        return int(self._add(keys=_keys(run_id), args=[self._ttl_s, folder, "q", *pairs]))

    def add_ended(self, run_id: str, ended: Mapping[str, str], *, folder: str) -> int:
        pairs = [v for item in ended.items() for v in item]
        return int(self._add(keys=_keys(run_id), args=[self._ttl_s, folder, "e", *pairs]))

    def move(
        self, run_id: str, job_id: str, state: str, *, folder: str, cost_usd: float = 0.0
    ) -> Move:
        minute = int(time.time() // 60)
        moved, finished = self._move(
            keys=_keys(run_id),
            args=[job_id, state, _nano(cost_usd), self._ttl_s, folder, minute],
        )
        return Move(bool(moved), bool(finished))

    def reopen(self, run_id: str, job_ids: Sequence[str]) -> int:
        return int(self._reopen(keys=_keys(run_id), args=list(job_ids))) if job_ids else 0

    def seal(self, run_id: str) -> Move:
        _, finished = self._seal(keys=[_keys(run_id)[2]], args=[self._ttl_s])
        return Move(True, bool(finished))

    def counts(self, run_id: str) -> RunCounts | None:
        _, counts_key, meta_key, minutes_key = _keys(run_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(counts_key)
        pipe.hgetall(meta_key)
        pipe.hgetall(minutes_key)
        raw_counts, raw_meta, raw_minutes = pipe.execute()
        if not raw_meta:
            return None
        return counts_from(
            {_text(k): int(v) for k, v in raw_counts.items()},
            {_text(k): _text(v) for k, v in raw_meta.items()},
            {int(_text(k)): int(v) for k, v in raw_minutes.items()},
        )

    def states(self, run_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self._redis.hscan_iter(_keys(run_id)[0], count=1000)}

    def summary_turn(self, run_id: str, *, every_s: float) -> bool:
        key = f"gvw:run:{run_id}:summary"
        return bool(self._redis.set(key, "1", nx=True, px=max(1, int(every_s * 1000))))

    def final_written(self, run_id: str) -> None:
        self._redis.hset(_keys(run_id)[2], "final", "1")

    def touch(self, run_id: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key in (*_keys(run_id), *_cap_keys(run_id)[1:]):
            pipe.expire(key, self._ttl_s)
        pipe.execute()

    def rebuild(
        self, run_id: str, states: Mapping[str, str], *, folder: str, sealed: bool, spent_usd: float
    ) -> None:
        self._redis.delete(*_keys(run_id))
        self.add_ended(run_id, states, folder=folder)  # any state: ended ones are counted so
        self._redis.hset(_keys(run_id)[2], "spent_nano", _nano(spent_usd))
        if sealed:
            self.seal(run_id)

    def set_cap(self, run_id: str, max_usd: float | None) -> None:
        meta = _keys(run_id)[2]
        if max_usd is None:
            self._redis.hdel(meta, "cap_nano")
        else:
            self._redis.hset(meta, "cap_nano", _nano(max_usd))

    def reserve(self, run_id: str, job_id: str, estimate_usd: float) -> bool:
        meta, reserved, _ = _cap_keys(run_id)
        args = [job_id, _nano(estimate_usd), self._ttl_s]
        return bool(self._reserve(keys=[meta, reserved], args=args))

    def settle(self, run_id: str, job_id: str, cost_usd: float) -> None:
        meta, reserved, _ = _cap_keys(run_id)
        self._settle(keys=[meta, reserved], args=[job_id, _nano(cost_usd)])

    def hold(self, run_id: str, job_id: str, job: str, *, folder: str) -> None:
        held = _cap_keys(run_id)[2]
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(held, job_id, job)
        pipe.expire(held, self._ttl_s)
        pipe.execute()
        self.move(run_id, job_id, "h", folder=folder)

    def release(self, run_id: str) -> dict[str, str]:
        jobs, counts, _, _ = _keys(run_id)
        flat = self._release(keys=[jobs, counts, _cap_keys(run_id)[2]])
        return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class LocalRunLedger:
    """In memory, for one process without Redis (`gvw demo`, the pipeline's fast tests):
    the same moves as the Lua scripts, under one lock."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._jobs: dict[str, dict[str, str]] = {}
        self._meta: dict[str, dict[str, str]] = {}
        self._minutes: dict[str, Counter[int]] = {}
        self._turns: dict[str, float] = {}
        self._reservations: dict[str, dict[str, int]] = {}
        self._held: dict[str, dict[str, str]] = {}

    def _run(self, run_id: str, folder: str) -> tuple[dict[str, str], dict[str, str]]:
        meta = self._meta.setdefault(run_id, {"members": "0", "ended": "0"})
        if folder:
            meta.setdefault("folder", folder)
        self._minutes.setdefault(run_id, Counter())
        return self._jobs.setdefault(run_id, {}), meta

    @staticmethod
    def _bump(meta: dict[str, str], name: str, by: int) -> None:
        meta[name] = str(int(meta.get(name, "0")) + by)

    @staticmethod
    def _finish(meta: dict[str, str]) -> bool:
        """As `_FINISHED_LUA`."""
        if meta.get("sealed") != "1" or int(meta["ended"]) < int(meta["members"]):
            return False
        meta.setdefault("finished_at", f"{time.time():.6f}")
        return meta.get("final") != "1"

    def open(self, run_id: str, *, folder: str) -> None:
        with self._mutex:
            self._run(run_id, folder)

    def add_members(self, run_id: str, job_ids: Sequence[str], *, folder: str) -> int:
        return self._add(run_id, dict.fromkeys(job_ids, "q"), folder)

    def add_ended(self, run_id: str, ended: Mapping[str, str], *, folder: str) -> int:
        return self._add(run_id, dict(ended), folder)

    def _add(self, run_id: str, states: dict[str, str], folder: str) -> int:
        with self._mutex:
            jobs, meta = self._run(run_id, folder)
            added = 0
            for job_id, state in states.items():
                if job_id not in jobs:
                    jobs[job_id] = state
                    added += 1
                    if is_ended(state):
                        self._bump(meta, "ended", 1)
            self._bump(meta, "members", added)
            return added

    def move(
        self, run_id: str, job_id: str, state: str, *, folder: str, cost_usd: float = 0.0
    ) -> Move:
        with self._mutex:
            jobs, meta = self._run(run_id, folder)
            old = jobs.get(job_id)
            if old == state or is_ended(old):
                return Move(False, self._finish(meta))
            if old is None:
                self._bump(meta, "members", 1)
            jobs[job_id] = state
            if is_ended(state):
                self._minutes[run_id][int(time.time() // 60)] += 1
                self._bump(meta, "spent_nano", _nano(cost_usd))
                self._bump(meta, "ended", 1)
            return Move(True, self._finish(meta))

    def reopen(self, run_id: str, job_ids: Sequence[str]) -> int:
        with self._mutex:
            jobs, meta = self._run(run_id, "")
            moved = 0
            for job_id in job_ids:
                if jobs.get(job_id, "").startswith(FAILED_PREFIX):
                    jobs[job_id] = "q"
                    self._bump(meta, "ended", -1)
                    moved += 1
            if moved and meta.pop("finished_at", None) is not None:
                meta.pop("final", None)
                self._bump(meta, "round", 1)
            return moved

    def seal(self, run_id: str) -> Move:
        with self._mutex:
            _, meta = self._run(run_id, "")
            meta["sealed"] = "1"
            return Move(True, self._finish(meta))

    def counts(self, run_id: str) -> RunCounts | None:
        with self._mutex:
            if run_id not in self._meta:
                return None
            raw = Counter(self._jobs[run_id].values())
            return counts_from(raw, dict(self._meta[run_id]), dict(self._minutes[run_id]))

    def states(self, run_id: str) -> dict[str, str]:
        with self._mutex:
            return dict(self._jobs.get(run_id, {}))

    def summary_turn(self, run_id: str, *, every_s: float) -> bool:
        now = time.monotonic()
        with self._mutex:
            if now < self._turns.get(run_id, 0.0):
                return False
            self._turns[run_id] = now + every_s
            return True

    def final_written(self, run_id: str) -> None:
        with self._mutex:
            self._run(run_id, "")[1]["final"] = "1"

    def touch(self, run_id: str) -> None:
        return None  # one process's memory: nothing expires

    def rebuild(
        self, run_id: str, states: Mapping[str, str], *, folder: str, sealed: bool, spent_usd: float
    ) -> None:
        with self._mutex:
            for table in (self._jobs, self._meta, self._minutes):
                table.pop(run_id, None)
        self.add_ended(run_id, states, folder=folder)
        with self._mutex:
            self._meta[run_id]["spent_nano"] = str(_nano(spent_usd))
        if sealed:
            self.seal(run_id)

    def set_cap(self, run_id: str, max_usd: float | None) -> None:
        with self._mutex:
            meta = self._run(run_id, "")[1]
            if max_usd is None:
                meta.pop("cap_nano", None)
            else:
                meta["cap_nano"] = str(_nano(max_usd))

    def reserve(self, run_id: str, job_id: str, estimate_usd: float) -> bool:
        with self._mutex:
            meta = self._run(run_id, "")[1]
            if "cap_nano" not in meta:
                return True
            held = self._reservations.setdefault(run_id, {})
            old = held.get(job_id, 0)
            estimate = _nano(estimate_usd)
            paid, reserved = int(meta.get("paid_nano", 0)), int(meta.get("reserved_nano", 0))
            if paid + reserved - old + estimate > int(meta["cap_nano"]):
                return False
            held[job_id] = estimate
            self._bump(meta, "reserved_nano", estimate - old)
            return True

    def settle(self, run_id: str, job_id: str, cost_usd: float) -> None:
        with self._mutex:
            meta = self._run(run_id, "")[1]
            old = self._reservations.setdefault(run_id, {}).pop(job_id, 0)
            self._bump(meta, "reserved_nano", -old)
            self._bump(meta, "paid_nano", _nano(cost_usd))

    def hold(self, run_id: str, job_id: str, job: str, *, folder: str) -> None:
        with self._mutex:
            self._held.setdefault(run_id, {})[job_id] = job
        self.move(run_id, job_id, "h", folder=folder)

    def release(self, run_id: str) -> dict[str, str]:
        with self._mutex:
            held = self._held.pop(run_id, {})
            jobs = self._jobs.get(run_id, {})
            for job_id in held:
                if jobs.get(job_id) == "h":
                    jobs[job_id] = "q"
            return held
