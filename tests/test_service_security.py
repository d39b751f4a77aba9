"""Exposure settings of the service (issue 30, "no authentication off loopback"):

* off loopback, ``aceg serve`` refuses to start without an API key unless ``--insecure``;
* an empty key (``ACEG_API_KEY=""``, ``--api-key ""``, ``ServiceConfig(api_key="")``) is
  a clear error, never "no authentication";
* the Host header must name an allowed host (DNS rebinding): by default the bind host,
  localhost, 127.0.0.1 and ::1, plus ``--allowed-host``;
* ``HEAD /health`` answers like ``GET /health`` without a body.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import requests

from aceg.cli.main import main
from aceg.errors import AcegError
from aceg.service.app import ServiceConfig, create_app
from aceg.service.server import BackgroundServer
from service_client import ServeProcess, assert_error, free_port, serve_environment
from tiny_map import tiny_map

TIMEOUT = 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tiny):
    with BackgroundServer(ServiceConfig(tiny.maps_dir, workers=1, queue=2)) as srv:
        yield srv


def run_serve(maps_dir, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``aceg serve`` expected to stop at once; a server that starts is a failure."""
    command = [sys.executable, "-m", "aceg", "serve", "--maps", str(maps_dir), "--port",
               str(free_port()), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env=serve_environment(env))
    except subprocess.TimeoutExpired:
        pytest.fail(f"aceg serve {' '.join(args)} started instead of refusing")


def test_off_loopback_without_key_refuses_to_start(tiny):
    out = run_serve(tiny.maps_dir, "--host", "0.0.0.0")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--insecure" in out.stderr and "API key" in out.stderr
    assert "Traceback" not in out.stderr


def test_insecure_flag_allows_off_loopback(tiny):
    with ServeProcess(tiny.maps_dir, "--host", "0.0.0.0", "--insecure", "--workers", "1") as srv:
        assert requests.get(f"{srv.url}/health", timeout=TIMEOUT).status_code == 200
    assert "without an API key" in srv.output


def test_empty_key_is_an_error(tiny, capsys):
    out = run_serve(tiny.maps_dir, env={"ACEG_API_KEY": ""})
    assert out.returncode == 2 and "ACEG_API_KEY" in out.stderr and "empty" in out.stderr
    assert "Traceback" not in out.stderr
    assert main(["serve", "--maps", str(tiny.maps_dir), "--api-key", " "]) == 2
    assert "empty" in capsys.readouterr().err
    with pytest.raises(AcegError, match="empty"):
        create_app(ServiceConfig(tiny.maps_dir, api_key=""))


def test_key_from_environment_required_off_loopback(tiny):
    with ServeProcess(tiny.maps_dir, "--host", "0.0.0.0", "--workers", "1",
                      env={"ACEG_API_KEY": "s3cret-key"}) as srv:
        assert_error(requests.get(f"{srv.url}/health", timeout=TIMEOUT), 401, "unauthorized")
        ok = requests.get(f"{srv.url}/health", headers={"X-API-Key": "s3cret-key"},
                          timeout=TIMEOUT)
        assert ok.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example",
                                  "localhost.", "[::2]:8000", "", "a b"])
def test_foreign_host_header_refused(server, host):
    response = requests.get(f"{server.url}/health", headers={"Host": host}, timeout=TIMEOUT)
    assert_error(response, 400, "host_not_allowed")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:1234", "[::1]:80",
                                  "[::1]"])
def test_loopback_host_headers_accepted(server, host):
    response = requests.get(f"{server.url}/health", headers={"Host": host}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def test_missing_host_header_refused(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"host_not_allowed" in answer


def test_allowed_host_flag(tiny):
    with ServeProcess(tiny.maps_dir, "--allowed-host", "maps.example.org", "--allowed-host",
                      "10.0.0.7", "--workers", "1") as srv:
        for host in ("maps.example.org", "maps.example.org:8443", "10.0.0.7", "127.0.0.1"):
            response = requests.get(f"{srv.url}/health", headers={"Host": host},
                                    timeout=TIMEOUT)
            assert response.status_code == 200, (host, response.text)
        assert_error(requests.get(f"{srv.url}/health", headers={"Host": "other.example.org"},
                                  timeout=TIMEOUT), 400, "host_not_allowed")


def test_head_health(server):
    head = requests.head(f"{server.url}/health", timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"].startswith("application/json")
    assert requests.get(f"{server.url}/health", timeout=TIMEOUT).json()["status"] == "ok"
