"""`gvw bridge webhook`: MinIO and other S3-compatible stores POST notifications here.

    POST /<any path>   a notification (MinIO's webhook target, or any shape of
                       notifications.py)   -> 200 once every job is on the broker
                                           -> 400 not a notification (do not retry)
                                           -> 401 wrong or missing token
                                           -> 503 the broker refused a job (retry later)
    GET  /healthz      200 and the counters

The shared secret is MinIO's `auth_token`, which it sends as `Authorization: Bearer
<token>`; the bridge reads it from GVW_BRIDGE_TOKEN. Without a token anyone who can reach
the port can make the fleet spend model calls, so the bridge refuses to listen beyond
loopback without one (`check_exposure`).

MinIO retries a delivery that got no 2xx (and keeps events in its queue_dir, if one is
configured, while the bridge is down): answering 200 only after the enqueue is what makes
the webhook as reliable as the SQS path.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.bridge.dispatch import Dispatcher
from worker.bridge.notifications import UndecodableNotification

log = logging.getLogger("worker.bridge.webhook")

TOKEN_ENV = "GVW_BRIDGE_TOKEN"
MAX_BODY_BYTES = 1_048_576  # MinIO sends one event per request: a few KiB
REQUEST_TIMEOUT_S = 30.0


def is_authorized(authorization: str | None, token: str | None) -> bool:
    """With no token configured, everyone is; otherwise only `Bearer <token>`."""
    if not token:
        return True
    if authorization is None:
        return False
    # compare_digest: the time taken does not tell how much of a guess was right
    return hmac.compare_digest(authorization.strip().encode(), f"Bearer {token}".encode())


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if token:
        return
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(
        f"refusing to listen on {host} without a token: set {TOKEN_ENV} (and MinIO's "
        "auth_token to the same value), or listen on 127.0.0.1 for local use"
    )


class WebhookServer(ThreadingHTTPServer):
    # Non-daemon request threads and block_on_close: server_close() waits for requests in
    # flight, so a stop never cuts an enqueue off between "sent" and "answered 200".
    daemon_threads = False
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], dispatcher: Dispatcher, *, token: str | None
    ) -> None:
        super().__init__(address, _Handler)
        self.dispatcher = dispatcher
        self.token = token or None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    # HTTP/1.0: one request per connection, so no idle keep-alive connection holds up a
    # stop; MinIO opens a new one per event anyway.
    protocol_version = "HTTP/1.0"
    timeout = REQUEST_TIMEOUT_S  # a client that stops sending does not keep a thread

    def do_POST(self) -> None:
        if not is_authorized(self.headers.get("Authorization"), self.server.token):
            self._answer(401, {"error": "missing or wrong bearer token"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(411, {"error": "Content-Length required"})
            return
        if int(length) > MAX_BODY_BYTES:
            self._answer(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        body = self.rfile.read(int(length))
        try:
            handled = self.server.dispatcher.handle(body)
        except UndecodableNotification as exc:
            self._answer(400, {"error": str(exc)})
            return
        except Exception as exc:  # a bug: the sender retries, the log says why
            log.exception("handling a webhook notification failed")
            self._answer(500, {"error": f"{type(exc).__name__}"})
            return
        if not handled.ok:
            self._answer(503, {"error": handled.failed, **handled.summary()})
            return
        self._answer(200, handled.summary())

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/healthz":
            self._answer(200, {"status": "ok", **self.server.dispatcher.tally.snapshot()})
        else:
            self._answer(404, {"error": "POST notifications; GET /healthz"})

    def do_HEAD(self) -> None:
        # some stores probe a webhook target with HEAD before enabling it
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # one access line per event at DEBUG; the dispatcher logs what matters at INFO
        log.debug("%s " + format, self.address_string(), *args)


def serve_webhook(
    host: str, port: int, dispatcher: Dispatcher, *, token: str | None, stop: threading.Event
) -> None:
    """Serve until `stop` is set; then finish the requests in flight and return."""
    check_exposure(host, token)
    server = WebhookServer((host, port), dispatcher, token=token)
    if not token:
        log.warning("no %s: accepting notifications without a token (local use only)", TOKEN_ENV)
    # serve_forever in a thread: a signal handler may then simply set `stop`, where calling
    # shutdown() from the serving thread itself would deadlock.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="bridge-webhook"
    )
    thread.start()
    log.info("webhook listening on %s", server.url)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=REQUEST_TIMEOUT_S + 5)
