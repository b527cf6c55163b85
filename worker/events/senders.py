"""How a delivery reaches its destination: webhooks (httpx2), SQS and SNS (boto3).

A sender sends one delivery's body, or raises: `DeliveryRefused` (never to be tried
again: an address the allow-list does not permit) or any other exception (a failed
attempt, tried again after a backoff). Every call is bounded by GVW_NOTIFY_TIMEOUT_S.
The Celery sender needs Celery, which this room does not import: `worker.queue` builds
it and hands it to the deliverer (`CelerySend`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import boto3
import httpx2
from botocore.config import Config

from worker.events.destinations import DeliveryRefused, Destination, pinned_addresses, shown
from worker.events.outbox import Delivery
from worker.events.signing import signed_headers
from worker.settings import NotifyRoute

# what is read of a webhook's answer (for the error message of a failed attempt)
RESPONSE_READ_MAX_BYTES: Final = 2048
USER_AGENT: Final = "gvw-events/1"


class DeliveryFailed(Exception):
    """One attempt failed (an answer other than 2xx, no connection, a timeout)."""


class Sender(Protocol):
    def send(self, delivery: Delivery, destination: Destination, route: NotifyRoute) -> None: ...


# (queue, task name, the event, the event's id): sends the task on the fleet's broker
CelerySend = Callable[[str, str, dict[str, Any], str], None]


class WebhookSender:
    """POSTs the body, signed (Standard Webhooks), to an address that was checked
    (`pinned_addresses`), never following a redirect (it could leave the allow-list)."""

    def __init__(
        self, *, timeout_s: float, resolve: Callable[..., list[tuple[Any, ...]]] | None = None
    ) -> None:
        self._resolve = resolve
        self._client = httpx2.Client(
            timeout=httpx2.Timeout(timeout_s),
            follow_redirects=False,
            # no proxy from the environment: a proxy would resolve the host again
            trust_env=False,
            limits=httpx2.Limits(max_connections=32, max_keepalive_connections=8),
        )

    def send(self, delivery: Delivery, destination: Destination, route: NotifyRoute) -> None:
        if route.secret is None:  # settings refuse a webhook prefix without one
            raise DeliveryRefused("refused: the allow-list entry has no secret")
        addresses = (
            pinned_addresses(destination, route, self._resolve)
            if self._resolve is not None
            else pinned_addresses(destination, route)
        )
        address = addresses[0]
        literal = f"[{address}]" if ":" in address else address
        url = f"{destination.scheme}://{literal}:{destination.port}{destination.target}"
        default_port = 443 if destination.scheme == "https" else 80
        host_header = (
            destination.host
            if destination.port == default_port
            else (f"{destination.host}:{destination.port}")
        )
        headers = {
            **signed_headers(route.secret, delivery.event_id, delivery.body, datetime.now(UTC)),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": host_header,
        }
        # TLS: the name sent (SNI) and checked against the certificate is the URL's host
        extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
        request = self._client.build_request(
            "POST", url, content=delivery.body.encode(), headers=headers, extensions=extensions
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
        try:
            if 200 <= response.status_code < 300:
                return
            answer = _first_bytes(response)
        finally:
            response.close()
        why = "a redirect, not followed" if 300 <= response.status_code < 400 else "an error"
        raise DeliveryFailed(
            f"{shown(destination.text)} answered HTTP {response.status_code} ({why}): {answer}"
        )

    def close(self) -> None:
        self._client.close()


def _first_bytes(response: httpx2.Response) -> str:
    read = b""
    try:
        for chunk in response.iter_bytes():
            read += chunk
            if len(read) >= RESPONSE_READ_MAX_BYTES:
                break
    except httpx2.HTTPError:
        pass
    return " ".join(read[:200].decode(errors="replace").split())


class _AwsClients:
    """boto3 clients, one per service and region, built once (boto3's own environment:
    AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL_SNS / AWS_ENDPOINT_URL, credentials)."""

    def __init__(self, timeout_s: float) -> None:
        self._config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 1, "mode": "standard"},  # the outbox retries
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._guard = threading.Lock()  # building a client is not thread-safe

    def client(self, service: str, region: str = "") -> Any:
        with self._guard:
            key = (service, region)
            if key not in self._clients:
                session = boto3.session.Session()
                self._clients[key] = session.client(
                    service,  # type: ignore[call-overload]
                    region_name=region or None,
                    config=self._config,
                )
            return self._clients[key]


def _attributes(delivery: Delivery) -> dict[str, dict[str, str]]:
    return {
        "event_id": {"DataType": "String", "StringValue": delivery.event_id},
        "event_type": {"DataType": "String", "StringValue": delivery.type},
    }


class SqsSender:
    """send_message to the queue named (its URL looked up once, by get_queue_url)."""

    def __init__(self, clients: _AwsClients) -> None:
        self._clients = clients
        self._urls: dict[str, str] = {}

    def send(self, delivery: Delivery, destination: Destination, route: NotifyRoute) -> None:
        sqs = self._clients.client("sqs")
        url = self._urls.get(destination.name)
        if url is None:
            url = str(sqs.get_queue_url(QueueName=destination.name)["QueueUrl"])
            self._urls[destination.name] = url
        extra = (
            {"MessageGroupId": delivery.event_id, "MessageDeduplicationId": delivery.event_id}
            if destination.name.endswith(".fifo")
            else {}
        )
        sqs.send_message(
            QueueUrl=url,
            MessageBody=delivery.body,
            MessageAttributes=_attributes(delivery),
            **extra,
        )


class SnsSender:
    def __init__(self, clients: _AwsClients) -> None:
        self._clients = clients

    def send(self, delivery: Delivery, destination: Destination, route: NotifyRoute) -> None:
        sns = self._clients.client("sns", destination.region)
        extra = (
            {"MessageGroupId": delivery.event_id, "MessageDeduplicationId": delivery.event_id}
            if destination.name.endswith(".fifo")
            else {}
        )
        sns.publish(
            TopicArn=destination.name,
            Message=delivery.body,
            MessageAttributes=_attributes(delivery),
            **extra,
        )


class CelerySender:
    """The event as the one positional argument of ``QUEUE/TASK_NAME``, sent by the
    function `worker.queue` gives (on the fleet's broker, never another)."""

    def __init__(self, send: CelerySend) -> None:
        self._send = send

    def send(self, delivery: Delivery, destination: Destination, route: NotifyRoute) -> None:
        self._send(destination.name, destination.task, json.loads(delivery.body), delivery.event_id)


def default_senders(timeout_s: float, celery: CelerySend | None = None) -> dict[str, Sender]:
    clients = _AwsClients(timeout_s)
    senders: dict[str, Sender] = {
        "webhook": WebhookSender(timeout_s=timeout_s),
        "sqs": SqsSender(clients),
        "sns": SnsSender(clients),
    }
    if celery is not None:
        senders["celery"] = CelerySender(celery)
    return senders
