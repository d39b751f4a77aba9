"""Client-side helpers of the service tests: form fields, uploads, error-body checks, crafted
PNG files and an ``aceg serve`` subprocess on a free loopback port."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import requests

from aceg.data.camera import Intrinsics
from aceg.service.server import free_loopback_socket

TIMEOUT = 60


def form(intr: Intrinsics) -> dict:
    """The intrinsics as the localize endpoint's form fields."""
    data = {"fx": repr(intr.fx), "fy": repr(intr.fy), "cx": repr(intr.cx), "cy": repr(intr.cy)}
    for key, value in zip(("k1", "k2", "p1", "p2", "k3"), intr.dist, strict=False):
        data[key] = repr(value)
    return data


def centred_form(width: int, height: int, focal: float | None = None) -> dict:
    """Plausible intrinsics of a ``width`` x ``height`` image (principal point centred)."""
    f = focal if focal is not None else 0.8 * max(width, height)
    return form(Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2))


def post(url: str, image: bytes, data: dict, name: str = "corner", ctype: str = "image/png",
         filename: str = "q.png", headers: dict | None = None,
         timeout: float = TIMEOUT) -> requests.Response:
    """POST /maps/{name}/localize on the server at ``url``."""
    return requests.post(f"{url}/maps/{name}/localize", files={
        "image": (filename, image, ctype)}, data=data, headers=headers or {}, timeout=timeout)


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict:
    """The response is the service's JSON error body with ``status`` (and ``code``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"] and "\n" not in body["message"]
    if code is not None:
        assert body["error"] == code, body
    return body


def png_bytes(image: np.ndarray) -> bytes:
    """PNG file of an RGB (H, W, 3) or grey (H, W) image, uint8 or uint16."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` followed by a tiny IDAT: decoding it
    would allocate the full image, so it must be refused from the header."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def free_port() -> int:
    sock = free_loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def serve_environment(env: dict | None = None) -> dict:
    """Environment of an ``aceg serve`` subprocess: this process's without ``ACEG_API_KEY``
    (a key set outside the tests must not reach the server), updated with ``env``."""
    base = {k: v for k, v in os.environ.items() if k != "ACEG_API_KEY"}
    return {**base, **(env or {})}


class ServeProcess:
    """``aceg serve`` in a subprocess on a free 127.0.0.1 port (context manager); ``url``,
    ``proc`` and, after exit, ``output`` (its stdout and stderr)."""

    def __init__(self, maps_dir: Path, *args: str, env: dict | None = None,
                 start_timeout: float = 90.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["serve", "--maps", str(maps_dir), "--port", str(self.port),
                     "--log-level", "warning", *args]
        self.env = serve_environment({"OMP_NUM_THREADS": "1", **(env or {})})
        self.start_timeout = start_timeout
        self.output = ""

    def __enter__(self) -> ServeProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "aceg", *self.args], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                requests.head(f"{self.url}/health", timeout=5)
                return self
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise AssertionError(f"aceg serve did not start:\n{self.output}") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.output, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.output, _ = self.proc.communicate()
