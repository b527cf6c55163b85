"""worker.queue.broker_transport against a real redis-server, in this process: a message is
taken off its queue and recorded as unacknowledged in one step, with kombu's own record,
in kombu's order; and a take that cannot record leaves the message on its queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tests.harness import RedisServer, start_redis
from worker.queue.broker_transport import _TAKE_LUA, Transport

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)

VISIBILITY_S = 60
QUEUE = Queue("vision", Exchange("vision", type="direct"), routing_key="vision")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    started = start_redis(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def connect(server: RedisServer) -> Connection:
    return Connection(
        server.url + "/0",
        transport=Transport,
        transport_options={"visibility_timeout": VISIBILITY_S},
    )


def publish(server: RedisServer, body: dict[str, Any], *, priority: int = 0) -> None:
    with connect(server) as conn:
        Producer(conn).publish(
            body, exchange=QUEUE.exchange, routing_key="vision", declare=[QUEUE], priority=priority
        )


def take_one(conn: Connection, *, no_ack: bool = False) -> Any:
    taken: list[Any] = []
    callbacks = [lambda body, message: taken.append(message)]
    with Consumer(conn, [QUEUE], callbacks=callbacks, no_ack=no_ack):
        deadline = time.monotonic() + 10
        while not taken and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                continue
    assert taken, "nothing was taken off the queue"
    return taken[0]


def test_a_taken_message_is_recorded_as_kombu_records_it_and_acknowledged_away(
    server: RedisServer,
) -> None:
    publish(server, {"job": 1})
    broker = server.client()
    queued = json.loads(broker.lindex("vision", -1))
    with connect(server) as conn:
        message = take_one(conn)
        assert message.payload == {"job": 1}
        assert broker.llen("vision") == 0
        tag = message.delivery_tag
        # kombu's record, to the byte of its meaning: [message, exchange, routing key]
        assert json.loads(broker.hget("unacked", tag)) == [queued, "vision", "vision"]
        assert broker.zscore("unacked_index", tag) == pytest.approx(time.time(), abs=30)
        message.ack()
        assert broker.hlen("unacked") == 0 and broker.zcard("unacked_index") == 0
    # the take's note: one key per channel, gone within half the visibility timeout
    notes = list(broker.scan_iter("gvw:take:*"))
    assert len(notes) == 1
    assert broker.get(notes[0]).decode().endswith(":" + tag)
    assert 0 < broker.ttl(notes[0]) <= VISIBILITY_S // 2


def test_a_message_not_acknowledged_goes_back_on_the_queue_when_its_channel_closes(
    server: RedisServer,
) -> None:
    publish(server, {"job": 2})
    with connect(server) as conn:
        take_one(conn)
    broker = server.client()
    assert broker.llen("vision") == 1 and broker.hlen("unacked") == 0
    with connect(server) as conn:
        assert take_one(conn).payload == {"job": 2}


def test_messages_are_taken_in_kombus_priority_order(server: RedisServer) -> None:
    publish(server, {"job": "low"}, priority=6)
    publish(server, {"job": "high"}, priority=0)
    with connect(server) as conn:
        first = take_one(conn)
        second = take_one(conn)
        assert [first.payload["job"], second.payload["job"]] == ["high", "low"]


def test_a_take_that_cannot_record_leaves_the_message_on_its_queue(server: RedisServer) -> None:
    publish(server, {"job": 3})
    broker = server.client()
    broker.set("unacked", "not a hash")  # an operator's mistake: the record cannot be written
    keys = ["unacked", "unacked_index", "gvw:take:test", "vision"]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        broker.eval(_TAKE_LUA, len(keys), *keys, time.time(), 1, 30, "1")
    assert broker.llen("vision") == 1


def test_an_entry_that_is_no_envelope_is_taken_unrecorded(server: RedisServer) -> None:
    broker = server.client()
    broker.lpush("vision", b"{not json")
    keys = ["unacked", "unacked_index", "gvw:take:test", "vision"]
    assert broker.eval(_TAKE_LUA, len(keys), *keys, time.time(), 1, 30, "1") == [
        0,
        b"{not json",
        b"",
    ]
    assert broker.llen("vision") == 0 and broker.hlen("unacked") == 0


def test_a_consumer_that_does_not_acknowledge_leaves_no_record(server: RedisServer) -> None:
    # Celery's control replies (`celery inspect`) are consumed with no_ack: a record of
    # them would never be acknowledged, and would come back after the visibility timeout
    publish(server, {"reply": 1})
    with connect(server) as conn:
        assert take_one(conn, no_ack=True).payload == {"reply": 1}
    broker = server.client()
    assert broker.llen("vision") == 0
    assert broker.hlen("unacked") == 0 and broker.zcard("unacked_index") == 0
