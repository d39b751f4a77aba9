"""Running the service with uvicorn: in the foreground (``aceg serve``) or in a background
thread on a loopback port (tests, benchmarks)."""

from __future__ import annotations

import resource
import socket
import threading
import time
from dataclasses import replace
from functools import partial

import uvicorn

from aceg.errors import AcegError
from aceg.service.app import ServiceConfig, create_app
from aceg.service.maps import MapRegistry
from aceg.service.protocol import ConnectionGuard, ConnectionLimits, GuardedH11Protocol

#: Seconds a kept-alive connection may stay idle between requests.
KEEP_ALIVE_SECONDS = 5
#: Largest request line + headers, bytes (h11 answers 400 beyond it).
MAX_HEADER_BYTES = 16 * 1024


#: File descriptors kept free for map files, logs and the listening socket.
SPARE_FILE_DESCRIPTORS = 64


def within_file_limit(limits: ConnectionLimits) -> ConnectionLimits:
    """``limits`` with ``max_connections`` lowered to what the process's open-file limit
    allows (a connection is a file descriptor; past the limit, accepting fails in a loop
    instead of the oldest idle connection making room)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits
    room = max(1, soft - SPARE_FILE_DESCRIPTORS)
    return replace(limits, max_connections=min(limits.max_connections, room))


def uvicorn_config(app, config: ServiceConfig, host: str, port: int,
                   log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings of a service: the h11 protocol with the deadlines and connection
    limits of ``config.connections`` (:mod:`aceg.service.protocol`, one
    :class:`ConnectionGuard` per server) in place of uvicorn's ``limit_concurrency``, which
    counts idle connections and would let them lock everyone out; overload of the
    localizations themselves is the work queue's (a JSON 503 with Retry-After)."""
    guard = ConnectionGuard(within_file_limit(config.connections))
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          http=partial(GuardedH11Protocol, guard=guard),
                          timeout_keep_alive=KEEP_ALIVE_SECONDS,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          server_header=False, access_log=log_level in ("info", "debug"))


def serve(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", registry: MapRegistry | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    app = create_app(config, registry)
    uvicorn.Server(uvicorn_config(app, config, host, port, log_level)).run()


def free_loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a port chosen by the OS, ready to listen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class BackgroundServer:
    """The service in a daemon thread on a free 127.0.0.1 port (loopback only).

    Use as a context manager::

        with BackgroundServer(ServiceConfig(maps_dir)) as server:
            requests.get(server.url + "/health")

    Attributes:
        url: ``http://127.0.0.1:<port>``; app: the FastAPI app (``app.state.work`` ...).
    """

    def __init__(self, config: ServiceConfig, registry: MapRegistry | None = None,
                 log_level: str = "warning", start_timeout: float = 30.0) -> None:
        self.config = config
        self.app = create_app(config, registry)
        self._sock = free_loopback_socket()
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn_config(self.app, config, "127.0.0.1", self.port, log_level))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="aceg-service", daemon=True)
        self._start_timeout = start_timeout

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise AcegError(f"service did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
