"""The HTTP face of the emulator: routes Gemini REST paths to `EmulatorService`.

Endpoints (any API version prefix `v1`, `v1beta`, `v1alpha`: google-genai 3.x sends `v1`
unless told otherwise, older clients `v1beta`):
- `POST /{version}/models/{model}:generateContent` (also `:streamGenerateContent`, one
  chunk, and `:countTokens`)
- `POST /upload/{version}/files` (resumable start), `POST <upload url>` (chunks)
- `GET /{version}/files`, `GET|DELETE /{version}/files/{id}`
- `/_emulator/...` control endpoints, no API key: `GET health`, `GET stats`,
  `GET|POST config`, `GET|POST|DELETE faults`, `POST files/expire`, `POST files/activate`,
  `POST reset`.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from worker.emulator import errors
from worker.emulator.config import EmulatorConfig
from worker.emulator.errors import ApiError
from worker.emulator.faults import Fault
from worker.emulator.protocol import Reply, json_reply
from worker.emulator.service import EmulatorService

DEFAULT_PORT = 8765
_log = logging.getLogger("worker.emulator")

_MODEL_CALL_RE = re.compile(
    r"^/(v1|v1beta|v1alpha)/models/([^/:]+):"
    r"(generateContent|streamGenerateContent|countTokens|batchGenerateContent)$"
)
_BATCHES_RE = re.compile(r"^/(v1|v1beta|v1alpha)/batches$")
_BATCH_RE = re.compile(r"^/(v1|v1beta|v1alpha)/batches/([^/:]+)(:cancel)?$")
_FILE_DOWNLOAD_RE = re.compile(r"^/(?:download/)?(v1|v1beta|v1alpha)/files/([^/:]+):download$")
_MODEL_RE = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+)$")
_UPLOAD_RE = re.compile(r"^/upload/(v1|v1beta|v1alpha)/files$")
_FILES_RE = re.compile(r"^/(v1|v1beta|v1alpha)/files$")
_FILE_RE = re.compile(r"^/(v1|v1beta|v1alpha)/files/([^/:]+)$")


class EmulatorServer:
    """A Gemini REST emulator on a loopback port, served from a daemon thread.

    >>> with EmulatorServer(api_key="test-key") as server:
    ...     client = genai.Client(api_key="test-key",
    ...         http_options=types.HttpOptions(base_url=server.base_url))
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        *,
        config: EmulatorConfig | None = None,
        **settings: Any,
    ) -> None:
        base_config = config or EmulatorConfig()
        if settings:
            base_config = base_config.updated(settings)
        self.host = host
        self._requested_port = port
        self.service = EmulatorService(api_key=api_key, config=base_config)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        if self._httpd is not None:
            return self
        httpd = _HttpServer((self.host, self._requested_port), _Handler)
        httpd.service = self.service
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"gemini-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the emulator is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to give `HttpOptions(base_url=...)`."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    # ---- in-process control (the same as the /_emulator/ endpoints) -----------------

    @property
    def config(self) -> EmulatorConfig:
        return self.service.config

    def stats(self) -> dict[str, Any]:
        return _stats_snapshot(self.service)

    def configure(self, **settings: Any) -> EmulatorConfig:
        return self.service.configure(settings)

    def queue_fault(
        self,
        kind: str,
        *,
        retry_delay_s: float = 3.0,
        count: int = 1,
        model: str | None = None,
    ) -> None:
        self.service.queue_fault(Fault(kind, retry_delay_s=retry_delay_s, count=count, model=model))

    def pending_faults(self) -> list[dict[str, Any]]:
        return self.service.faults.pending()

    def expire_files(self, names: list[str] | None = None) -> list[str]:
        return self.service.files.expire(names)

    def activate_files(self, names: list[str] | None = None) -> list[str]:
        return self.service.files.activate(names)

    def reset(self) -> None:
        self.service.reset()


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    *,
    config: EmulatorConfig | None = None,
    out: TextIO | None = None,
) -> None:
    """Run the emulator in the foreground until SIGINT or SIGTERM. Prints one line with the
    base URL (useful with port 0) once it accepts connections."""
    stop_requested = threading.Event()
    server = EmulatorServer(host, port, api_key, config=config).start()
    previous: dict[signal.Signals, Any] = {}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # signal handlers can only be installed from the main thread
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
    stream = out or sys.stdout
    print(f"Gemini emulator listening on {server.base_url}", file=stream, flush=True)
    try:
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stats_snapshot(service: EmulatorService) -> dict[str, Any]:
    snapshot = service.stats.snapshot()
    snapshot["faults_pending"] = service.faults.pending()
    return snapshot


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once
    service: EmulatorService

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer (a worker SIGKILLed by a test) is normal here
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes; with Nagle's algorithm the second
        # waits for the client's delayed ACK, adding ~40 ms to every call
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - %s", self.address_string(), format % args)

    def _dispatch(self, method: str) -> None:
        service = self.server.service
        raw_body = self._read_body()
        service.stats.count("http_requests_total")
        service.stats.count("bytes_received_total", len(raw_body))
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self._route(service, method, url.path, query, headers, raw_body)
        except ApiError as exc:
            reply = exc.reply()
        except Exception:
            _log.exception("emulator failed on %s %s", method, self.path)
            reply = errors.internal().reply()
        self._write(reply)

    def _route(
        self,
        service: EmulatorService,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        raw_body: bytes,
    ) -> Reply:
        if path.startswith("/_emulator/"):
            return _control(service, method, path.removeprefix("/_emulator/"), raw_body)

        if method == "POST" and (match := _UPLOAD_RE.match(path)):
            upload_id = query.get("upload_id")
            if upload_id:
                # the upload id in the URL is the credential, as with Google's upload URLs
                return service.upload_command(upload_id, headers, raw_body)
            service.check_api_key(headers, query)
            protocol = headers.get("x-goog-upload-protocol", "").lower()
            command = headers.get("x-goog-upload-command", "").lower()
            if protocol != "resumable" or command != "start":
                raise errors.invalid_argument(
                    "Only resumable uploads are supported (X-Goog-Upload-Protocol: resumable, "
                    "X-Goog-Upload-Command: start)."
                )
            return service.upload_start(headers, raw_body, self._base_url())

        if method == "POST" and (match := _MODEL_CALL_RE.match(path)):
            api_version, model, call = match.groups()
            if call == "countTokens":
                service.check_api_key(headers, query)
                service.check_model(model, api_version)
                return service.count_tokens(model, raw_body)
            if call == "batchGenerateContent":
                service.check_api_key(headers, query)
                service.check_model(model, api_version)
                return service.batch_create(model, raw_body, self._base_url())
            body, status = service.generate(
                model, raw_body, api_version=api_version, headers=headers, query=query
            )
            if call == "streamGenerateContent" and status == 200:
                return _stream_reply(body, sse=query.get("alt") == "sse")
            return json_reply(body, status=status)

        if method == "GET" and (match := _MODEL_RE.match(path)):
            api_version, model = match.groups()
            service.check_api_key(headers, query)
            service.check_model(model, api_version)
            return json_reply(service.model_info(model))

        if method == "GET" and _FILES_RE.match(path):
            service.check_api_key(headers, query)
            return service.list_files(query)

        if method == "GET" and _BATCHES_RE.match(path):
            service.check_api_key(headers, query)
            return service.batch_list(query)

        if match := _BATCH_RE.match(path):
            service.check_api_key(headers, query)
            batch_id, cancel = match.group(2), match.group(3)
            if method == "POST" and cancel:
                return service.batch_cancel(batch_id)
            if method == "GET" and not cancel:
                return service.batch_get(batch_id)
            if method == "DELETE" and not cancel:
                return service.batch_delete(batch_id)

        if method == "GET" and (match := _FILE_DOWNLOAD_RE.match(path)):
            service.check_api_key(headers, query)
            return service.download_file(match.group(2))

        if method in ("GET", "DELETE") and (match := _FILE_RE.match(path)):
            service.check_api_key(headers, query)
            file_id = match.group(2)
            return service.get_file(file_id) if method == "GET" else service.delete_file(file_id)

        raise errors.route_not_found()

    def _base_url(self) -> str:
        # answer with the host the client used, so upload URLs work behind port forwards
        host = self.headers.get("Host")
        if not host:
            address_host = self.server.server_address[0]
            if isinstance(address_host, bytes):
                address_host = address_host.decode("ascii")
            host = f"{address_host}:{self.server.server_address[1]}"
        return f"http://{host}"

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)


def _stream_reply(body: dict[str, Any], sse: bool) -> Reply:
    # the whole answer as a single chunk: as SSE events or as a JSON array of chunks
    if sse:
        event = b"data: " + json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\r\n\r\n"
        return Reply(200, event, content_type="text/event-stream")
    return json_reply([body])


def _control(service: EmulatorService, method: str, action: str, raw_body: bytes) -> Reply:
    try:
        payload = json.loads(raw_body) if raw_body.strip() else {}
    except ValueError as exc:
        raise errors.invalid_json(str(exc)) from exc
    try:
        return _control_action(service, method, action, payload)
    except (ValueError, TypeError) as exc:
        raise errors.invalid_argument(str(exc)) from exc


def _control_action(service: EmulatorService, method: str, action: str, payload: Any) -> Reply:
    if action == "health" and method == "GET":
        return json_reply({"status": "ok"})
    if action == "stats" and method == "GET":
        return json_reply(_stats_snapshot(service))
    if action == "config":
        if method == "POST":
            if not isinstance(payload, dict):
                raise ValueError("config takes a JSON object")
            return json_reply(service.configure(payload).as_json())
        if method == "GET":
            return json_reply(service.config.as_json())
    if action == "faults":
        if method == "POST":
            items = payload.get("faults", payload) if isinstance(payload, dict) else payload
            items = items if isinstance(items, list) else [items]
            faults = [Fault.from_json(item) for item in items]  # all valid before any queued
            for fault in faults:
                service.queue_fault(fault)
            return json_reply({"queued": len(faults), "pending": service.faults.pending()})
        if method == "GET":
            return json_reply({"pending": service.faults.pending()})
        if method == "DELETE":
            service.faults.clear()
            return json_reply({"pending": []})
    if action in ("files/expire", "files/activate") and method == "POST":
        names = payload.get("names") if isinstance(payload, dict) else None
        if names is not None and not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
        ):
            raise ValueError("names takes a list of file names")
        if action == "files/expire":
            return json_reply({"expired": service.files.expire(names)})
        return json_reply({"activated": service.files.activate(names)})
    if action == "reset" and method == "POST":
        service.reset()
        return json_reply({})
    raise errors.route_not_found()
