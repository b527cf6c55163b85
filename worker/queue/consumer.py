"""The worker's Celery consumer: `GuardedConsumer`'s message checks, and a reconnect after
a broker outage that cannot stop the worker.

Celery 5.7.0, on losing the broker, collects the connection (which closes its channels and
detaches the transport) and then closes it again. When the first close could not finish
(Redis still down: the fanout clean-up of the remote-control queue fails first), the second
one reaches the channel's hand-back of its unacknowledged messages, finds the transport
gone, and raises ``AttributeError`` (``'NoneType' object has no attribute 'hostname'``),
which Celery treats as unrecoverable: a worker holding any delivered message, such as the
batch follower's scheduled run, exits on a Redis restart. `WorkerConsumer` forgets the
channel once collect() has run, as Celery 5.6 did: those messages stay in the broker's
unacked set and come back after the visibility timeout (kombu's restore of visible
messages), so nothing is lost, and the worker reconnects.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.queue.message_guard import GuardedConsumer

log = logging.getLogger(__name__)


class WorkerConsumer(GuardedConsumer):
    def on_connection_error_after_connected(self, exc: Any) -> None:
        connection = self.connection
        if connection is not None:
            collect = connection.collect

            def collect_then_forget_channel(*args: Any, **kwargs: Any) -> Any:
                try:
                    return collect(*args, **kwargs)
                finally:
                    # what collect() could not close is not closed again through a
                    # transport it took apart (see the module's docstring)
                    connection._default_channel = None

            connection.collect = collect_then_forget_channel
        super().on_connection_error_after_connected(exc)
