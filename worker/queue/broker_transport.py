"""kombu's Redis transport, taking a message off the queue and recording it as
unacknowledged in one step, so that a message is always in Redis: on its queue, or in the
`unacked` hash that the visibility timeout restores from.

kombu takes a message with BRPOP and records it in a second command (kombu#305). Between
the two the message exists only in the reply on its way to the worker and then in the
worker's memory: a worker killed there (the OOM killer, a lost node), or a Redis restart or
dropped connection while the reply travels, loses the job for good. A busy worker spends
milliseconds there per message, and the run-at-scale test lost a job to a SIGKILL.

Here a worker waits for a message without taking it (``BLMOVE q q RIGHT RIGHT``, a no-op
that blocks until the list has an element and returns it in place) and then takes it with
one Lua script (`_TAKE_LUA`) that pops it from the first non-empty queue key, in kombu's
BRPOP order, and writes kombu's own `unacked` record in the same step. While messages keep
coming, it takes again at once without waiting. Each take also notes its number and
delivery tag in a key of the channel's own (`gvw:take:{channel}`, kept half the visibility
timeout): when a take's answer is lost with the connection, the worker reads that note once
Redis answers again and puts the message back on the queue at once, not after the
visibility timeout.

What it costs: a message that arrives while every queue is empty wakes every waiting worker
(one script each, one of them takes it); messages on a priority queue (kombu's
``queue\x06\x16N`` keys) or on a second queue of the same worker are seen within
``brpop_timeout`` (1 s) while the first is empty. Redis 6.2 or later (BLMOVE); on an older
Redis, or with ``global_keyprefix`` set, kombu's BRPOP is used and the process below covers
what it can.

kombu's two-command path remains for those cases and for a message the script could not
record (not a kombu envelope it can read): when Redis goes away between the two commands,
`Transport` keeps the message in the process that received it and pushes it back where
BRPOP found it, as the next one out, as soon as Redis answers again (the reconnect's new
channel, or the next poll). The job never reached the task, so nothing runs twice; if
Redis did store the record and only its answer was lost, the job comes back twice, and a
job is idempotent (docs/reliability.md).

Written here rather than taken from a library: no maintained transport closes this window
for Celery on Redis; a move into a processing list (BLMOVE to another list) takes one
source key where kombu waits on several (priorities, queues), and needs its own sweeper.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

# KEYS: unacked, unacked_index, the channel's take note, then the queue keys in BRPOP order.
# ARGV: now (s, the worker's clock, as kombu scores its records), the take's number, the
# note's lifetime (s), then for each queue key (at the key's own index) "1" when its
# consumer acknowledges, "0" when it does not (no_ack: Celery's control replies), whose
# messages are not recorded. Answers {index of the queue key, message, delivery tag or ""}
# or nil.
# The record is written before the pop: a write that fails (a key of the wrong type) stops
# the script with the message still on its queue, as a script's writes are not undone.
_TAKE_LUA = """
for i = 4, #KEYS do
  local raw = redis.call('LINDEX', KEYS[i], -1)
  if raw then
    local record = nil
    local tag = nil
    local decoded, envelope = pcall(cjson.decode, raw)
    if decoded and type(envelope) == 'table' then
      local props = envelope['properties']
      if type(props) == 'table' and type(props['delivery_tag']) == 'string'
          and type(props['delivery_info']) == 'table' then
        local info = props['delivery_info']
        local encoded, ex_rk = pcall(function()
          return cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key'])
        end)
        if encoded then
          tag = props['delivery_tag']
          -- kombu's record: dumps([message, exchange, routing_key]), the message verbatim
          record = '[' .. raw .. ',' .. ex_rk .. ']'
        end
      end
    end
    if record and ARGV[i] == '1' then
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[1], tag, record)
      redis.call('SET', KEYS[3], ARGV[2] .. ':' .. tag, 'EX', ARGV[3])
    end
    redis.call('RPOP', KEYS[i])
    if ARGV[i] ~= '1' then
      tag = nil
    end
    return {i - 4, raw, tag or ''}
  end
end
return false
"""

_TAKE, _PEEK = "take", "peek"

# Process-wide, as a reconnect builds a new Transport and channel:
# (queue key, message) pairs taken off Redis by BRPOP whose unacked record could not be written
_held: list[tuple[str, dict[str, Any]]] = []
# delivery tags of messages this process had received and not yet acknowledged when its
# broker connection broke: their unacked records (kept by a Redis with persistence) go
# back on the queue as soon as Redis answers, not after the visibility timeout
_held_tags: list[str] = []
# (take note key, take number) of takes whose answer was lost with the connection
_lost_takes: list[tuple[str, int]] = []
_held_lock = threading.Lock()


def _forget_in_child() -> None:
    # a pool child forked while its parent held a message must not push it back too (a
    # child opens channels to publish); the parent is the one that returns it
    global _held_lock
    _held.clear()
    _held_tags.clear()
    _lost_takes.clear()
    _held_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # delivery tags the take script has already recorded as unacknowledged
        self.recorded: set[str] = set()

    def append(self, message: Any, delivery_tag: Any) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # this process's own account
            return
        super().append(message, delivery_tag)

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
    _in_poll: Any  # kombu's: the connection whose poll command is outstanding

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._poll_kind: str | None = None  # what the outstanding poll command is
        self._peek_next = False  # the last take found nothing: wait before the next
        self._take_queues: list[str] = []  # the queue of each key of the outstanding take
        self._no_ack_queues: set[str] = set()  # consumed without acknowledgements
        self._take_note = f"gvw:take:{uuid.uuid4().hex}"
        self._take_numbers = itertools.count(1)
        self._take_number = 0
        super().__init__(*args, **kwargs)  # raises unless Redis answered a PING
        # kombu's BRPOP where the script's keys would not be the ones kombu uses
        self.atomic_take = not self.global_keyprefix
        self._return_held()

    # --- polling: wait without taking, then take and record in one script ---------------

    def _brpop_start(self, timeout: Any = None) -> None:
        if _held or _held_tags or _lost_takes:  # a bare read: the lock is for the hand-back
            self._return_held()
        if not self.atomic_take:
            self._poll_kind = None
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        pairs = [
            (queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues
        ]
        if self._peek_next:
            if timeout is None:
                timeout = self.brpop_timeout
            first = pairs[0][1]
            command: list[Any] = ["BLMOVE", first, first, "RIGHT", "RIGHT", timeout or 0]
            self._poll_kind = _PEEK
        else:
            self._take_number = next(self._take_numbers)
            self._take_queues = [queue for queue, _ in pairs]
            note_s = max(1, int(self.visibility_timeout) // 2)
            keys = [self.qos.unacked_key, self.qos.unacked_index_key, self._take_note]
            keys += [key for _, key in pairs]
            acks = ["0" if queue in self._no_ack_queues else "1" for queue, _ in pairs]
            command = ["EVAL", _TAKE_LUA, len(keys), *keys]
            command += [time.time(), self._take_number, note_s, *acks]
            self._poll_kind = _TAKE
        self._in_poll = self.client.connection
        # kombu's, for its check of a poll that never answers (kombu types it None)
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(*command)
        return None

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        # kombu's `no_ack`, positional (virtual.Channel) or by name (kombu.Consumer)
        no_ack = kwargs["no_ack"] if "no_ack" in kwargs else bool(args and args[0])
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def _brpop_read(self, **options: Any) -> Any:
        kind, self._poll_kind = self._poll_kind, None
        if kind is None:
            # kombu's BRPOP: what `Transport._deliver` is handed here was taken off a list
            self.connection.reading_channel = self
            try:
                return super()._brpop_read(**options)
            finally:
                self.connection.reading_channel = None
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVAL" if kind == _TAKE else "BLMOVE", **options
                )
            except self.connection_errors:
                if kind == _TAKE:  # it may have run: its note says which message it took
                    with _held_lock:
                        _lost_takes.append((self._take_note, self._take_number))
                self.client.connection.disconnect()
                raise
            except self.ResponseError:
                # a Redis without BLMOVE (before 6.2) or without scripts: kombu's BRPOP
                self.atomic_take = False
                log.warning(
                    "this Redis cannot take a message and record it in one step; using "
                    "BRPOP (a worker killed while taking a job can lose it)",
                    exc_info=True,
                )
                raise kombu_redis.Empty() from None
            if kind == _PEEK:  # a message came, or the wait ran out: take next
                self._peek_next = False
                raise kombu_redis.Empty()
            if not reply:
                self._peek_next = True
                raise kombu_redis.Empty()
            index, raw, tag = reply
            return self._deliver_taken(self._take_queues[int(index)], raw, bytes_to_str(tag))
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu 5.7's streaming re-auth
            if flush is not None:
                flush()

    def _on_connection_disconnect(self, connection: Any) -> None:
        if self._in_poll is connection and self._poll_kind == _TAKE:
            # a take cut off before its answer was read (kombu dropping a poll that never
            # answered): it may have run, and its note says which message it took
            self._poll_kind = None
            with _held_lock:
                _lost_takes.append((self._take_note, self._take_number))
        super()._on_connection_disconnect(connection)

    def _deliver_taken(self, queue: str, raw: bytes, tag: str) -> bool:
        self._queue_cycle.rotate(queue)
        try:
            message = loads(bytes_to_str(raw))
            properties = message["properties"]
            if "delivery_tag" not in properties or "routing_key" not in properties["delivery_info"]:
                raise KeyError("delivery_tag")
        except (ValueError, TypeError, KeyError, RecursionError):
            # not a kombu envelope: nothing can be acknowledged or restored, and kombu's
            # own reading would raise in the worker's event loop. Dropped, loudly.
            if tag:
                self.qos._remove_from_indices(tag).execute()
            log.error(
                "an unreadable message was taken off queue %s and dropped: %r",
                queue,
                raw[:200],
            )
            raise kombu_redis.Empty() from None
        if tag:
            self.qos.recorded.add(tag)
        # not recorded (an envelope the script could not read): kombu records it
        self.connection.reading_channel = self
        try:
            self.connection._deliver(message, queue)
        finally:
            self.connection.reading_channel = None
        return True

    # --- what a broken connection left in this process -----------------------------------

    def hold(self, message: dict[str, Any], queue: str) -> None:
        priority = self._get_message_priority(message, reverse=False)
        with _held_lock:
            _held.append((self._q_for_pri(queue, priority), message))

    def _return_held(self) -> None:
        self._return_lost_takes()
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

    def _return_lost_takes(self) -> None:
        """Put back on the queue, next out, what a take whose answer was lost took: the
        take's note names its message (a take that never ran left an older note, and
        its message is still on the queue)."""
        with _held_lock:
            lost = list(_lost_takes)
            if not lost:
                return
            returned = 0
            try:
                with self.conn_or_acquire() as client:
                    for note, number in lost:
                        found = bytes_to_str(client.get(note) or b"")
                        taken, _, tag = found.partition(":")
                        if tag and taken == str(number):
                            self.qos.restore_by_tag(tag, client=client)  # RPUSH: next out
                            returned += 1
            except (*self.connection_errors, self.ResponseError):
                return  # not yet: the next channel or poll tries again (restores are idempotent)
            del _lost_takes[: len(lost)]
        if returned:
            log.warning("put back on the queue %d job(s) taken as the broker went away", returned)

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
