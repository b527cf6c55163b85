"""kombu's Redis transport, with the one window in which it loses a message closed.

kombu takes a message off its queue with BRPOP and records it as unacknowledged (the
`unacked` hash that its visibility timeout restores from) in a second command. When Redis
goes away between the two (a restart, a failover, a dropped connection) the message is in
neither place: BRPOP removed it and the record was never written, so no restore brings it
back, and the worker that received it drops it with the broken connection (kombu#305).

`Transport` keeps such a message in the process that received it and pushes it back
where BRPOP found it, as the next one out, as soon as Redis answers again (the reconnect's
new channel, or the next poll). The job never reached the task, so nothing runs twice; if
Redis did store the record and only its answer was lost, the job comes back twice, and a
job is idempotent (docs/reliability.md). What remains is a worker process killed between the two
commands, a window of microseconds without a broker outage.

Written here rather than taken from a library: no maintained transport closes this window
for Celery on Redis, and a move into a processing list (BLMOVE) takes one source key where
kombu waits on several (priorities, queues).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

# (queue key, message) pairs taken off Redis whose unacked record could not be written.
# Process-wide: the reconnect that returns them builds a new Transport.
_held: list[tuple[str, dict[str, Any]]] = []
# delivery tags of messages this process had received and not yet acknowledged when its
# broker connection broke: their unacked records (kept by a Redis with persistence) go
# back on the queue as soon as Redis answers, not after the visibility timeout
_held_tags: list[str] = []
_held_lock = threading.Lock()


def _forget_in_child() -> None:
    # a pool child forked while its parent held a message must not push it back too (a
    # child opens channels to publish); the parent is the one that returns it
    global _held_lock
    _held.clear()
    _held_tags.clear()
    _held_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        """kombu's: every message this channel received and did not acknowledge goes back
        on the queue (a reconnection, a shutdown). When Redis does not answer (the reason
        for a reconnection, often), kombu gives up and the messages wait in ``unacked``
        for the visibility timeout (15 minutes by default) while nobody runs them. Here
        what could not be put back is remembered and put back when Redis answers again
        (`Channel._return_held`)."""
        tags = list(self._delivered)
        self._delivered.clear()
        restored = 0
        try:
            with self.channel.conn_or_acquire(client) as conn:
                for tag in tags:
                    self.restore_by_tag(tag, client=conn)
                    restored += 1
        except self.channel.connection_errors:
            left = tags[restored:]
            with _held_lock:
                _held_tags.extend(left)
            log.warning(
                "the broker went away with %d job(s) received here and not finished; "
                "they go back on the queue when it answers again",
                len(left),
            )


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # raises unless Redis answered a PING
        self._return_held()

    def _brpop_start(self, timeout: Any = None) -> None:
        if _held or _held_tags:  # a bare read: the lock is for the hand-back itself
            self._return_held()
        super()._brpop_start(timeout)

    def _brpop_read(self, **options: Any) -> Any:
        # what `Transport._deliver` is handed from here was taken off a list by BRPOP
        self.connection.reading_channel = self
        try:
            return super()._brpop_read(**options)
        finally:
            self.connection.reading_channel = None

    def hold(self, message: dict[str, Any], queue: str) -> None:
        priority = self._get_message_priority(message, reverse=False)
        with _held_lock:
            _held.append((self._q_for_pri(queue, priority), message))

    def _return_held(self) -> None:
        self._return_held_tags()
        with _held_lock:
            held = list(_held)
            if not held:
                return
            try:
                with self.conn_or_acquire() as client, client.pipeline() as pipe:
                    for key, message in held:
                        # RPUSH: the right end is where BRPOP takes from, so it is next
                        pipe.rpush(key, dumps(message))
                    pipe.execute()
            except (*self.connection_errors, self.ResponseError):
                log.warning(
                    "could not yet put %d received message(s) back on the queue; will retry",
                    len(held),
                    exc_info=True,
                )
                return
            del _held[: len(held)]
        for _, message in held:
            headers = message.get("headers") or {}
            log.warning(
                "a job taken off the queue as the broker went away was put back on the queue",
                extra={"job_id": headers.get("id"), "task_name": headers.get("task")},
            )

    def _return_held_tags(self) -> None:
        """Put back on the queue, next out, the messages whose unacked records this
        process could not restore when the broker went away: from the record Redis kept
        (a job acknowledged meanwhile, or restored by another worker, has none left and
        is not put back twice)."""
        with _held_lock:
            tags = list(_held_tags)
            if not tags:
                return
            try:
                with self.conn_or_acquire() as client:
                    for tag in tags:
                        self.qos.restore_by_tag(tag, client=client)  # RPUSH: next out
            except (*self.connection_errors, self.ResponseError):
                return  # not yet: the next channel or poll tries again
            del _held_tags[: len(tags)]
        log.warning(
            "put %d job(s) that were in flight when the broker went away back on the queue",
            len(tags),
        )


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading_channel: Channel | None = None

    def _deliver(self, message: Any, queue: Any) -> None:
        channel = self.reading_channel
        try:
            super()._deliver(message, queue)
        except self.connection_errors:
            # the unacked record (or a later step) could not be written: the message
            # is now only here
            if channel is not None and isinstance(message, dict) and queue:
                channel.hold(message, queue)
            raise
