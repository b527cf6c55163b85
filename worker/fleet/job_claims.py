"""A job id belongs to the first job that used it: its fingerprint is claimed in Redis.

A job id is an idempotency key, not a capability. Without this, a second job reusing an
id (other images, another output) would be handed the first job's paid answer or
records. The first use of an id stores the job's fingerprint (everything that decides
its answer and where it goes, `Job.fingerprint`) with its results folder; a later use
with the same fingerprint is the same job (a redelivery, a producer's retry) and goes on;
a different one is refused (`JobIdConflict`) and never touches the first job's records.

The claim also says whether the job already failed for good with its record still to be
written (storage was down when it failed): the dead-letter entry holds that record, and
the next delivery writes it instead of running the job again.

    gvw:claim:{job_id}       "{fingerprint}|{folder}", expires after GVW_JOB_ID_TTL_S
    gvw:taken_at             when a worker last took a job (Redis's clock, epoch s): a
                             producer whose job waits says whether any worker is taking
                             jobs at all (`worker.producers.client`); set by the same script, so
                             it costs no round trip

Records (result.json, error.json) carry the fingerprint too, so a reuse is recognised in
the same folder for as long as the records live, after the claim has expired.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from worker.fleet.dead_letters import dead_letter_key

_CLAIM_LUA = """
redis.call('set', KEYS[3], redis.call('time')[1])
local mine = ARGV[1] .. '|' .. ARGV[2]
local held = redis.call('get', KEYS[1])
if not held then
    redis.call('set', KEYS[1], mine, 'EX', ARGV[3])
elseif held ~= mine then
    return {0, held, 0}
else
    redis.call('expire', KEYS[1], ARGV[3])
end
local pending = 0
if redis.call('hget', KEYS[2], 'recorded') == '0'
        and redis.call('hget', KEYS[2], 'fingerprint') == ARGV[1] then
    pending = 1
end
return {1, '', pending}
"""


TAKEN_AT_KEY = "gvw:taken_at"


def claim_key(job_id: str) -> str:
    return f"gvw:claim:{job_id}"


@dataclass(frozen=True)
class Claim:
    ours: bool
    holder_folder: str | None = None
    """The results folder of the job that holds the id, when it is not ours."""
    pending_record: bool = False
    """This job already failed for good; its error record waits in the dead-letter index."""


class JobClaims(Protocol):
    def claim(self, job_id: str, fingerprint: str, folder: str) -> Claim: ...


class RedisJobClaims:
    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self._claim = client.register_script(_CLAIM_LUA)
        self._ttl_s = max(1, int(ttl_s))

    def claim(self, job_id: str, fingerprint: str, folder: str) -> Claim:
        ours, held, pending = self._claim(
            keys=[claim_key(job_id), dead_letter_key(job_id), TAKEN_AT_KEY],
            args=[fingerprint, folder, self._ttl_s],
        )
        if not ours:
            text = held.decode() if isinstance(held, bytes) else str(held)
            return Claim(ours=False, holder_folder=text.partition("|")[2])
        return Claim(ours=True, pending_record=bool(pending))


class LocalJobClaims:
    """In memory, for `gvw demo` and single processes without Redis (no pending records:
    a local run writes its records directly)."""

    def __init__(self, *, ttl_s: int) -> None:
        self._ttl_s = ttl_s
        self._held: dict[str, tuple[float, str, str]] = {}
        self._mutex = threading.Lock()

    def claim(self, job_id: str, fingerprint: str, folder: str) -> Claim:
        now = time.monotonic()
        with self._mutex:
            held = self._held.get(job_id)
            if held is not None and held[0] > now and (held[1], held[2]) != (fingerprint, folder):
                return Claim(ours=False, holder_folder=held[2])
            self._held[job_id] = (now + self._ttl_s, fingerprint, folder)
        return Claim(ours=True)
