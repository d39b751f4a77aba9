"""Slow and idle clients cannot hold the server (issue 30, "idle connections lock every
client out"), checked with real sockets against a real uvicorn server.

* 200 connections opened and left idle (half of them with a started, never finished
  request header) do not stop ``/health`` nor a pose request of a well-behaved client;
* a connection that does not finish its request header, or its body, within the
  configured time is closed by the server;
* over the per-client connection limit, the client's longest-idle connection makes room.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from aceg.service.app import ServiceConfig
from aceg.service.protocol import ConnectionLimits
from aceg.service.server import BackgroundServer
from service_client import ServeProcess, form, post
from tiny_map import tiny_map


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


def open_idle(port: int, n: int, partial_every: int = 2) -> list[socket.socket]:
    """``n`` connections to 127.0.0.1:``port``; every ``partial_every``-th one sends the
    start of a request header and never finishes it."""
    sockets = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if partial_every and i % partial_every == 0:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            except OSError:  # already closed by the server to make room for newer ones
                pass
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading and discarding any answer), or None
    if it was still open after ``within`` seconds."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < within:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None


@pytest.mark.slow
def test_200_idle_connections_do_not_lock_out(tiny):
    frame = tiny.scene.frames[0]
    image = frame.image_path.read_bytes()
    with ServeProcess(tiny.maps_dir, "--workers", "1", "--preload") as server:
        idle = open_idle(server.port, 200)
        try:
            t = time.monotonic()
            health = requests.get(f"{server.url}/health", timeout=10)
            assert health.status_code == 200, health.text
            pose = post(server.url, image, form(frame.intrinsics), timeout=30)
            assert pose.status_code == 200, pose.text
            assert pose.json()["localized"]
            assert time.monotonic() - t < 10
        finally:
            for sock in idle:
                sock.close()


def _server(tiny, **limits) -> BackgroundServer:
    return BackgroundServer(ServiceConfig(tiny.maps_dir, workers=1, queue=2,
                                          connections=ConnectionLimits(**limits)))


def test_unfinished_header_and_silent_connection_are_closed(tiny):
    with _server(tiny, header_timeout=1.0) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for sock in (silent, slow):
            waited = closed_by_server(sock, within=6.0)
            assert waited is not None and waited < 4.0
            sock.close()
        # a header dribbled out byte by byte is held to the same deadline
        drip = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        start = time.monotonic()
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: aaaaaaaaaaaaaaaa":
                drip.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - start < 4.0
        drip.close()
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_unfinished_body_is_cut_off(tiny):
    with _server(tiny, body_timeout=1.5) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /maps/corner/localize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 50000\r\n\r\n--x\r\n")
        waited = closed_by_server(sock, within=8.0)
        sock.close()
        assert waited is not None and waited < 5.0
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_connection_answered_before_its_body_waits_for_a_header_again(tiny):
    """A request refused from its header (here: a foreign Host) whose body arrives after the
    answer leaves a kept-alive connection that is held to the header deadline again, not
    to the earlier body deadline."""
    with _server(tiny, header_timeout=1.0, body_timeout=10.0) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /maps/corner/localize HTTP/1.1\r\nHost: evil.example\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 10\r\n\r\n")
        time.sleep(0.3)
        sock.sendall(b"0123456789")
        waited = closed_by_server(sock, within=9.0)
        sock.close()
        assert waited is not None and waited < 5.0


def test_per_client_limit_evicts_the_longest_idle_connection(tiny):
    with _server(tiny, max_client_connections=8) as server:
        idle = open_idle(server.port, 8, partial_every=0)
        time.sleep(0.2)
        try:
            for _ in range(3):  # each new connection pushes out one idle one, oldest first
                response = requests.get(f"{server.url}/health", timeout=10)
                assert response.status_code == 200
            assert closed_by_server(idle[0], within=2.0) is not None
            assert closed_by_server(idle[-1], within=0.5) is None
        finally:
            for sock in idle:
                sock.close()
