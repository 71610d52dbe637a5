"""The emulator's HTTP server: werkzeug's threaded WSGI server, with keep-alive connections.

werkzeug's own request handler closes every connection after one response. Clients of the Import
API keep their connections open (a ``requests.Session``), so the handler here keeps them open:
it reads or discards each request body completely before answering, so the next request starts
where it should, and closes the connection only when a body is too large to discard
(over :data:`DRAIN_LIMIT`), when the client asks, or to emulate a dropped connection. HTTP
parsing stays the standard library's and werkzeug's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Optional

from werkzeug.serving import (
    LISTEN_QUEUE,
    ThreadedWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    select_address_family,
)

from .app import DROP_CONNECTION

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

#: Bodies left unread by the application are discarded up to this size; beyond it the
#: connection is closed after the answer instead.
DRAIN_LIMIT = 64 * 1024 * 1024

#: How often the serving loop checks whether it was asked to stop, in seconds.
POLL_INTERVAL = 0.05

_CHUNK = 1 << 20
_logger = logging.getLogger("stitch_import.emulator")


class RequestBody:
    """A request's body as the application reads it (``wsgi.input``), never past its end."""

    def __init__(self, stream: Any, length: Optional[int]) -> None:
        self._stream = stream
        self._remaining = length  # None: a chunked body, read until its end

    def read(self, size: int = -1) -> bytes:
        if self._remaining is None:
            return bytes(self._stream.read(size))
        if size < 0 or size > self._remaining:
            size = self._remaining
        if size == 0:
            return b""
        data = bytes(self._stream.read(size))
        self._remaining = self._remaining - len(data) if len(data) == size else 0
        return data

    def discard_rest(self, limit: int) -> bool:
        """Read and drop what is left unread; ``False`` if more than ``limit`` bytes remain."""
        if self._remaining is not None and self._remaining > limit:
            return False
        discarded = 0
        try:
            while discarded <= limit:
                chunk = self.read(_CHUNK)
                if not chunk:
                    return True
                discarded += len(chunk)
        except OSError:
            return False
        return False


class KeepAliveHandler(WSGIRequestHandler):
    """Serve one connection, request after request, until either side closes it."""

    protocol_version = "HTTP/1.1"
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Stay quiet: the emulator keeps its own request log."""

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        self.environ = environ
        try:
            declared = environ.get("CONTENT_LENGTH")
            length = int(declared) if declared else (None if environ.get(
                "wsgi.input_terminated") else 0)
            if length is not None and length < 0:
                raise ValueError(declared)
        except ValueError:
            self.close_connection = True
            self.respond("400 Bad Request", [("Content-Type", "text/plain")],
                         b"Invalid Content-Length", environ)
            return
        body = RequestBody(environ["wsgi.input"], length)
        environ["wsgi.input"] = body
        status, headers, payload = self.call_application(environ)
        if environ.get(DROP_CONNECTION):
            body.discard_rest(DRAIN_LIMIT)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if not body.discard_rest(DRAIN_LIMIT):
            self.close_connection = True
        self.respond(status, headers, payload, environ)

    def call_application(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]],
                                                                   bytes]:
        """Run the WSGI application and collect its whole answer."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        try:
            chunks = self.server.app(environ, start_response)
            try:
                payload = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except Exception:
            _logger.exception("the emulator failed on %s %s", environ.get("REQUEST_METHOD"),
                              environ.get("PATH_INFO"))
            self.close_connection = True
            return ("500 Internal Server Error", [("Content-Type", "text/plain")],
                    b"Internal Server Error")
        return started[0], started[1], payload

    def respond(self, status: str, headers: list[tuple[str, str]], payload: bytes,
                environ: WSGIEnvironment) -> None:
        """Write the status line, the headers and the body in one go."""
        code, _, phrase = status.partition(" ")
        self.send_response(int(code), phrase)
        has_length = False
        for name, value in headers:
            has_length = has_length or name.lower() == "content-length"
            self.send_header(name, value)
        if not has_length:
            self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if environ["REQUEST_METHOD"] != "HEAD":
            self.wfile.write(payload)


class EmulatorServer(ThreadedWSGIServer):
    """werkzeug's threaded server (one thread per connection) that can close its connections."""

    def __init__(self, host: str, port: int, app: WSGIApplication) -> None:
        listener = _listening_socket(host, port)
        try:
            super().__init__(host, port, app, handler=KeepAliveHandler, fd=listener.fileno())
        finally:
            listener.close()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection, so idle keep-alive threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen here, so a busy port raises ``OSError`` (werkzeug would exit)."""
    family = select_address_family(host, port)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(get_sockaddr(host, port, family))
        listener.listen(LISTEN_QUEUE)
    except BaseException:
        listener.close()
        raise
    return listener
