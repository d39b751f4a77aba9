"""Connection-level protection of the server: uvicorn's h11 protocol with read deadlines
and connection limits, so slow or idle clients cannot hold the server.

uvicorn only times out a connection that is idle *between* requests; one that never
finishes its first request header, or its body, is kept forever, and its
``limit_concurrency`` counts such connections, so a few dozen silent sockets lock every
client out. :class:`GuardedH11Protocol` adds:

* a **header deadline**: the request line and headers must be complete within
  ``header_timeout`` seconds of the connection opening (or of the previous response);
* a **body deadline**: the body must be complete within ``body_timeout`` seconds of the
  header;
* **connection limits** (:class:`ConnectionGuard`): at most ``max_connections`` open
  connections and ``max_client_connections`` per client address. A new connection over
  a limit closes the longest-idle connection (no request in progress) of that client, or
  of anyone for the global limit; when none is idle, the new connection is answered 503
  and closed.

A connection past a deadline is closed (after a 408 JSON answer when it had started a
request header; mid-body, the app sees a disconnect). Limits count the peer address as
seen by the socket: behind a reverse proxy, every client is the proxy.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ConnectionLimits:
    """Deadlines (seconds) and connection limits of :class:`GuardedH11Protocol`."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    max_client_connections: int = 64


def raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with the service's JSON error body, closing."""
    body = json.dumps({"error": code, "message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class ConnectionGuard:
    """The open connections of one server, by client address, idle ones in the order they
    became idle (the eviction order)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.per_client: dict[str, int] = {}
        self.total = 0
        self.idle: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.evicted = 0
        self.refused = 0

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Register a new connection, evicting idle ones to stay within the limits; False
        when it cannot be admitted (then it is not registered)."""
        ip = conn.client_ip
        if self.per_client.get(ip, 0) >= self.limits.max_client_connections:
            if not self._evict(ip):
                self.refused += 1
                return False
        if self.total >= self.limits.max_connections and not self._evict(None):
            self.refused += 1
            return False
        self.per_client[ip] = self.per_client.get(ip, 0) + 1
        self.total += 1
        return True

    def _evict(self, ip: str | None) -> bool:
        victim = next((c for c in self.idle if ip is None or c.client_ip == ip), None)
        if victim is None:
            return False
        self.evicted += 1
        victim.close_now()  # unregisters it
        return True

    def set_idle(self, conn: GuardedH11Protocol, idle: bool) -> None:
        if idle:
            self.idle[conn] = None
            self.idle.move_to_end(conn)
        else:
            self.idle.pop(conn, None)

    def remove(self, conn: GuardedH11Protocol) -> None:
        self.idle.pop(conn, None)
        left = self.per_client.get(conn.client_ip, 0) - 1
        if left > 0:
            self.per_client[conn.client_ip] = left
        else:
            self.per_client.pop(conn.client_ip, None)
        self.total -= 1


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and limits of the module docstring; built
    per connection by uvicorn with ``functools.partial(GuardedH11Protocol, guard=...)``."""

    def __init__(self, *args, guard: ConnectionGuard, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.client_ip = ""
        self._registered = False
        self._deadline = None  # asyncio.TimerHandle of the running deadline
        self._phase = "header"  # "header", "body" or "app" (request complete)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.client_ip = self.client[0] if self.client else ""
        if not self.guard.admit(self):
            transport.write(raw_response(503, "Service Unavailable", "too_many_connections",
                                         "too many open connections; retry later"))
            transport.close()
            return
        self._registered = True
        self._wait_for("header")

    def connection_lost(self, exc) -> None:
        self._cancel_deadline()
        if self._registered:
            self._registered = False
            self.guard.remove(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        """Move the deadline along with h11's view of the client's request."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._phase != "body":
            self._wait_for("body")
        elif state in (h11.DONE, h11.MUST_CLOSE) and self._phase != "app":
            self._cancel_deadline()
            self._phase = "app"
            self.guard.set_idle(self, False)
        elif state is h11.IDLE and self._phase != "header" and (
                self.cycle is None or self.cycle.response_complete):
            # a kept-alive connection waits for its next request, also when its answer
            # (an early 401, 400 or 413) went out before its body had arrived
            self._wait_for("header")

    def _wait_for(self, phase: str) -> None:
        self._cancel_deadline()
        self._phase = phase
        seconds = (self.guard.limits.header_timeout if phase == "header"
                   else self.guard.limits.body_timeout)
        self._deadline = self.loop.call_later(seconds, self._expired)
        self.guard.set_idle(self, phase == "header")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]
        if self._phase == "header" and started:
            self.transport.write(raw_response(
                408, "Request Timeout", "request_timeout",
                f"request header not complete within {self.guard.limits.header_timeout:g} s"))
        self.close_now()

    def close_now(self) -> None:
        """Close the connection at once and stop counting it."""
        self._cancel_deadline()
        if self._registered:
            self._registered = False
            self.guard.remove(self)
        self.transport.close()
