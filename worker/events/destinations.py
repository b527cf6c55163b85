"""Where an event may go: a destination's syntax, the allow-list, and a webhook's address.

A producer names destinations in its job (``notify``); the fleet calls only those its
operator allowed (GVW_NOTIFY_DESTINATIONS: prefixes), so a job cannot make the workers
call an arbitrary URL, queue or broker:

    https://host[:port]/path   a webhook (http:// only where a prefix allows it)
    sqs:QUEUE_NAME             an SQS queue, found by name (boto3's endpoint and region)
    sns:TOPIC_ARN              an SNS topic
    celery:QUEUE/TASK_NAME     a Celery task, on the fleet's own broker

A destination is checked twice: its text when the job is admitted (`route_for`: refused
as ``invalid_job`` naming ``notify.N``), and a webhook's address when it is delivered
(`pinned_addresses`): the host is resolved and every address checked, and the request
goes to the address that was checked (`worker.events.senders`), not to a second lookup.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from tasks.errors import InvalidJob
from worker.settings import FLEET_QUEUE, NotifyRoute

Kind = Literal["webhook", "sqs", "sns", "celery"]

_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$")
_SNS_ARN = re.compile(
    r"^arn:aws[a-z-]{0,20}:sns:(?P<region>[a-z0-9-]{1,30}):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"
)
_CELERY_QUEUE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_CELERY_TASK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,199}$")
# encoded dots, slashes and backslashes would let a URL read as under a prefix it leaves
_ENCODED_SEPARATORS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
# how long a destination is shown in logs and listings (its query string is left out)
SHOWN_MAX_CHARS: Final = 200


class DeliveryRefused(Exception):
    """This destination must not be called (its address, a bad entry): not retried."""


@dataclass(frozen=True)
class Destination:
    text: str
    kind: Kind
    # webhook
    scheme: str = ""
    host: str = ""
    port: int = 0
    target: str = ""  # path and query, as sent
    # sqs (queue name), sns (topic ARN and its region), celery (queue and task)
    name: str = ""
    region: str = ""
    task: str = ""


def parse_destination(text: str) -> Destination:
    """A destination's parts, or ``ValueError`` saying what is wrong with its text."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("spaces and control characters are not allowed")
    if text.startswith(("https://", "http://")):
        return _webhook(text)
    kind, _, rest = text.partition(":")
    if kind == "sqs":
        if not _SQS_NAME.match(rest):
            raise ValueError("sqs: takes a queue name (letters, digits, - and _; .fifo)")
        return Destination(text, "sqs", name=rest)
    if kind == "sns":
        match = _SNS_ARN.match(rest)
        if match is None:
            raise ValueError("sns: takes a topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC)")
        return Destination(text, "sns", name=rest, region=match["region"])
    if kind == "celery":
        queue, slash, task = rest.partition("/")
        if not slash or not _CELERY_QUEUE.match(queue) or not _CELERY_TASK.match(task):
            raise ValueError("celery: takes QUEUE/TASK_NAME")
        if queue == FLEET_QUEUE:
            raise ValueError("the fleet's own queue takes no events")
        return Destination(text, "celery", name=queue, task=task)
    raise ValueError("expected https://..., sqs:QUEUE, sns:TOPIC_ARN or celery:QUEUE/TASK")


def _webhook(text: str) -> Destination:
    if "\\" in text or _ENCODED_SEPARATORS.search(text):
        raise ValueError("backslashes and encoded separators (%2E, %2F, %5C) are not allowed")
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("a user name or password in the URL is not allowed")
    if parts.fragment or text.endswith("#"):
        raise ValueError("a fragment (#...) is not allowed")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("the URL names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the URL's port is not a number from 1 to 65535") from None
    path = parts.path or "/"
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("'.' and '..' path segments are not allowed")
    target = path + (f"?{parts.query}" if parts.query else "")
    return Destination(text, "webhook", scheme=parts.scheme, host=host, port=port, target=target)


def route_for(destination: str, routes: Sequence[NotifyRoute]) -> NotifyRoute | None:
    """The allow-list entry a destination falls under (the longest prefix), or None."""
    matching = [r for r in routes if destination.startswith(r.prefix)]
    return max(matching, key=lambda r: len(r.prefix)) if matching else None


def check_notify(notify: Sequence[str], routes: Sequence[NotifyRoute]) -> None:
    """Every destination of a job's ``notify`` well formed and allowed, or `InvalidJob`
    naming the first that is not (``notify.N``)."""
    for index, text in enumerate(notify):
        where = f"notify.{index}"
        try:
            parse_destination(text)
        except ValueError as exc:
            raise InvalidJob(f"invalid job: {where}: {exc}", field=where) from None
        if route_for(text, routes) is None:
            raise InvalidJob(
                f"invalid job: {where}: {shown(text)!r} is not a destination this fleet may "
                "call (GVW_NOTIFY_DESTINATIONS allows none of its prefixes)",
                field=where,
            )


def shown(text: str) -> str:
    """A destination as logs, listings and error messages show it: without a webhook's
    query string (a token may be in it), cut to `SHOWN_MAX_CHARS`."""
    if text.startswith(("https://", "http://")):
        text = text.split("?", 1)[0].split("#", 1)[0]
    return text if len(text) <= SHOWN_MAX_CHARS else text[:SHOWN_MAX_CHARS] + "…"


# --- a webhook's address ---------------------------------------------------------------

Resolver = Callable[..., list[tuple[Any, ...]]]


def special_use(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not one to call on a producer's word, or None (a global one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for why, test in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if test:
            return why
    return None if address.is_global else "not globally routable"


def pinned_addresses(
    destination: Destination, route: NotifyRoute, resolve: Resolver = socket.getaddrinfo
) -> list[str]:
    """The addresses a webhook may be sent to: its host resolved once, and every address
    checked. A loopback, private, link-local, reserved, multicast or unspecified address
    is refused (`DeliveryRefused`) unless the allow-list entry names that very address as
    its host (``http://127.0.0.1:8080/``), or says ``allow_private_addresses`` (a DNS name
    of an internal service). Every address must pass: a name that resolves to one public
    and one private address is refused, whichever the connection would pick.

    The caller connects to an address returned here (pinned: the URL's host goes in the
    Host header and TLS's SNI, the certificate is checked against it), so a second DNS
    answer (rebinding) cannot send the request elsewhere. (getaddrinfo has no timeout of
    its own: a resolver that hangs holds this delivery for the system resolver's timeout.)
    """
    try:
        infos = resolve(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConnectionError(f"cannot resolve {destination.host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise ConnectionError(f"{destination.host} resolves to no address")
    named = route.host is not None and _same_address(route.host, destination.host)
    for text in addresses:
        why = special_use(ipaddress.ip_address(text))
        if why is None or route.allow_private_addresses:
            continue
        if named and _same_address(route.host or "", text):
            continue  # the operator listed this address itself
        raise DeliveryRefused(
            f"refused: {destination.host} resolves to {text} ({why}); only an allow-list "
            "entry naming that address as its host (or allow_private_addresses) permits it"
        )
    return addresses


def _same_address(host: str, other: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(other)
    except ValueError:
        return False
