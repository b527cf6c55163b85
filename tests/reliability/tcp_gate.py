"""A TCP gate in front of a loopback server, to stop a worker at an exact point.

The workers talk to it instead of the real server (e.g. `AWS_ENDPOINT_URL_S3` pointed at
the gate, which forwards to moto). Bytes are forwarded unchanged, in both directions,
until a request whose bytes contain an armed pattern (an S3 path, such as
`/results/vision/{job}/result.json`) arrives: that request is *not* forwarded, its
connection stalls, and the gate calls the test back. The worker is then frozen at a known
point (waiting for the answer to that request) for the test to kill, stop or let go.
Armed with ``replies=True``, answers are watched too: the first bytes naming a job in either
direction (a Redis reply handing it over, a command recording it) are the ones held.

Boto3 addresses loopback endpoints path-style and sends a request's headers in one write,
so the request line (method and path) is in one received chunk; a short tail of the
previous chunk is kept anyway so a pattern split across two reads is still seen.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator


class TcpGate:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._mutex = threading.Lock()
        self._pattern: bytes | None = None
        self._on_match: Callable[[], None] | None = None
        self._replies = False
        self._skip = 0
        self._sockets: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self.matches = 0
        self.matched = threading.Event()
        self._closed = False
        self._down = False
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, "tcp-gate-accept")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control ------------------------------------------------------------------------

    def arm(
        self,
        pattern: str,
        on_match: Callable[[], None] | None = None,
        *,
        replies: bool = False,
        skip: int = 0,
    ) -> None:
        """Stall every request containing `pattern` (and call `on_match` for each); with
        `replies`, every answer containing it too. The first `skip` matches are forwarded."""
        with self._mutex:
            self._pattern = pattern.encode()
            self._on_match = on_match
            self._replies = replies
            self._skip = skip
            self.matched.clear()

    def disarm(self) -> None:
        with self._mutex:
            self._pattern = None
            self._on_match = None
            self._replies = False

    def release(self) -> None:
        """Disarm, and drop the stalled connections (their requests never reach upstream)."""
        self.disarm()
        with self._mutex:
            held, self._held = self._held, []
        for sock in held:
            self._close(sock)

    def cut(self) -> None:
        """An outage: every open connection is dropped, and every new one is closed as soon
        as it is accepted, until `mend`."""
        with self._mutex:
            self._down = True
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            self._close(sock)

    def mend(self) -> None:
        """The end of an outage: connections are forwarded again."""
        with self._mutex:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.release()
        self._close(self._listener)
        with self._mutex:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            self._close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- forwarding ---------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:  # unreachable: the connection ends before a byte is answered
                self._close(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self._mutex:
                self._sockets.update((client, upstream))
            self._spawn(self._pump, "tcp-gate-up", client, upstream, False)
            self._spawn(self._pump, "tcp-gate-down", upstream, client, True)

    def _holds(self, chunk: bytes, tail: bytes, reply: bool, pair: list[socket.socket]) -> bool:
        """Whether this chunk is held (a match not skipped), counting the match."""
        with self._mutex:
            pattern, on_match = self._pattern, self._on_match
            if pattern is None or (reply and not self._replies) or pattern not in tail + chunk:
                return False
            if self._skip > 0:
                self._skip -= 1
                return False
            self._held.extend(pair)
            self.matches += 1
        self.matched.set()
        if on_match is not None:
            on_match()
        return True

    def _pump(self, source: socket.socket, sink: socket.socket, reply: bool) -> None:
        tail = b""
        for chunk in _chunks(source):
            if self._holds(chunk, tail, reply, [source, sink]):
                # not forwarded: the client waits for an answer (or the server for the
                # rest of a request) that never comes
                return
            tail = chunk[-256:]
            try:
                sink.sendall(chunk)
            except OSError:
                break
        with self._mutex:
            held = sink in self._held
        if not held:
            self._close(sink)

    def _close(self, sock: socket.socket) -> None:
        with self._mutex:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        yield chunk
