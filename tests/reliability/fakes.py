"""Loopback stand-ins the failure scenarios put in front of, or in place of, real services.

- `S3Proxy`: an HTTP proxy in front of moto's S3 server. It logs every request the workers
  make (moto keeps no request log) and can fail chosen writes: answer `503 SlowDown`
  without forwarding, or forward the write and then answer `500 InternalError`, so the
  object lands but the client never hears it did (the case a conditional create must
  recognise as its own write on the retry).
- `GeminiStub`: answers every `generateContent` with one fixed, Gemini-shaped body whose
  text the test chooses (hostile labels the emulator would never produce).

Both serve from a daemon thread on 127.0.0.1 and are started and stopped by the test.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        pieces: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(pieces)
            pieces.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _s3_error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>s3-proxy</RequestId></Error>"
    ).encode()


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any


class _Served:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._httpd: _LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> _Served:
        httpd = _LoopbackServer(("127.0.0.1", 0), self.handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"


# --- S3 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str  # raw request path, query included
    status: int
    action: str  # "forwarded" | "rejected" | "landed_then_failed" | "expired"
    body_bytes: int = 0  # what the answer carried back
    user_agent: str = ""

    @property
    def bucket(self) -> str:
        return urlsplit(self.path).path.lstrip("/").split("/", 1)[0]

    @property
    def key(self) -> str:
        parts = urlsplit(self.path).path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) > 1 else ""


# decides, per request, "forward", "reject" (503 SlowDown, not forwarded),
# "land_then_fail" (forwarded, then 500 InternalError to the client) or "expire" (403
# AccessDenied "Request has expired", what S3 answers a pre-signed URL past its lifetime)
S3Rule = Callable[[str, str], str]


class S3Proxy(_Served):
    """Forwards path-style S3 requests to `upstream` (set once moto is up), logging each one
    and applying `rule(method, path)`."""

    def __init__(self, rule: S3Rule | None = None) -> None:
        super().__init__()
        self.upstream: str | None = None
        self.rule: S3Rule = rule or (lambda method, path: "forward")
        self._lock = threading.Lock()
        self._log: list[S3Request] = []

    def log(self) -> list[S3Request]:
        with self._lock:
            return list(self._log)

    def _record(self, entry: S3Request) -> None:
        with self._lock:
            self._log.append(entry)


class _S3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        proxy: S3Proxy = self.server.owner
        body = _read_body(self)
        action = proxy.rule(self.command, self.path)
        agent = self.headers.get("User-Agent", "")
        if action == "reject":
            self._reply(503, _s3_error_xml("SlowDown", "Please reduce your request rate."))
            proxy._record(S3Request(self.command, self.path, 503, "rejected", user_agent=agent))
            return
        if action == "expire":
            self._reply(403, _s3_error_xml("AccessDenied", "Request has expired"))
            proxy._record(S3Request(self.command, self.path, 403, "expired", user_agent=agent))
            return
        assert proxy.upstream is not None, "S3Proxy.upstream is not set"
        upstream = urlsplit(proxy.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or "Content-Length" in self.headers:
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
            reply_headers = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            ]
            head_length = response.getheader("Content-Length")
        finally:
            conn.close()
        if action == "land_then_fail":
            self._reply(500, _s3_error_xml("InternalError", "We encountered an error."))
            proxy._record(
                S3Request(self.command, self.path, 500, "landed_then_failed", user_agent=agent)
            )
            return
        self.send_response(status)
        for name, value in reply_headers:
            self.send_header(name, value)
        if self.command == "HEAD":
            # a HEAD answer carries the object's length and no body
            self.send_header("Content-Length", head_length or "0")
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        sent = 0 if self.command == "HEAD" else len(data)
        proxy._record(S3Request(self.command, self.path, status, "forwarded", sent, agent))

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


S3Proxy.handler = _S3Handler


# --- Gemini -----------------------------------------------------------------------------------


class GeminiStub(_Served):
    """Answers every generateContent with `text` (finish reason STOP), whatever was asked."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self._lock = threading.Lock()
        self.calls = 0

    def body(self) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": self.text}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 300,
                "candidatesTokenCount": 100,
                "totalTokenCount": 400,
            },
            "modelVersion": "stub-001",
            "responseId": "stub",
        }


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        stub: GeminiStub = self.server.owner
        _read_body(self)
        path = urlsplit(self.path).path
        if path.endswith(":generateContent"):
            with stub._lock:
                stub.calls += 1
            status, payload = 200, stub.body()
        else:
            status = 404
            payload = {"error": {"code": 404, "message": "stub", "status": "NOT_FOUND"}}
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


GeminiStub.handler = _StubHandler
