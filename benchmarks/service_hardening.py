"""Attack measurements of the HTTP service (``aceg serve``) on loopback.

    .venv/bin/python benchmarks/service_hardening.py [--idle 200] [--clients 16]
        [--requests-per-client 2] [--workers 2] [--queue 16] [--map PATH --queries SCENE]

Starts ``aceg serve`` as a subprocess on a free 127.0.0.1 port (nothing leaves the
machine) and measures, from outside:

1. **uploads**: per crafted upload (thin strips of a few hundred bytes, a 1x1 image, a
   100:1 strip, a 5000x5000 16-bit PNG, random noise, a real query), the status, the answer, the wall
   time and the server's peak resident memory above its idle level (Linux: the peak is
   reset through ``/proc/<pid>/clear_refs`` before each request and read from ``VmHWM``);
2. **idle connections**: ``--idle`` sockets opened and left idle (half of them with a
   started, never finished request header), then a well-behaved client's ``GET /health``
   and pose request: statuses and latencies;
3. **overload**: ``--clients`` clients at once, each sending ``--requests-per-client``
   pose requests and honouring Retry-After on a 503: answers, refusals, latency p50/p99
   (from the first attempt to the answer, retries included) and throughput.

Default map and queries (built once into --work-dir and reused): the Middlebury
templeRing images (640x480, ../shared/data), frames with index % 4 != 0 mapped with the
default anchor model, the other 12 frames sent as queries with their intrinsics.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests
from _service_bench import (
    BENCH_MAP,
    TEMPLE,
    add_map_arguments,
    localize_fields,
    map_and_queries,
    serve_as_bench,
)

from aceg.data.camera import Intrinsics
from aceg.data.readers import read_scene
from aceg.service.server import free_loopback_socket


def build_default_map(work_dir: Path):
    """The anchors map of templeRing's frames with index % 4 != 0, and the other frames."""
    from aceg.mapping.mapper import map_scene

    scene = read_scene(TEMPLE, "middlebury")
    mapping, queries = scene.split_every(4, 0)
    map_path = work_dir / "maps" / "temple-anchors.map"
    if not map_path.is_file():
        print(f"building the map {map_path} ({len(mapping)} frames) ...", flush=True)
        map_scene(mapping, map_path, model="anchors", progress=False)
    return map_path, queries


def png(image: np.ndarray, level: int = 3) -> bytes:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, level])
    assert ok
    return buf.tobytes()


def fields(width: int, height: int) -> dict:
    """Form fields of plausible intrinsics of a ``width`` x ``height`` image (principal
    point centred)."""
    f = 0.8 * max(width, height)
    return localize_fields(Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2))


def attack_uploads(query: tuple[bytes, dict]) -> list[tuple[str, bytes, dict]]:
    """(label, file bytes, form fields) of each upload case."""
    rng = np.random.default_rng(0)
    cases = []
    for w, h in ((120, 1), (60, 1), (2000, 1), (1, 3000), (1, 1), (4000, 40)):
        cases.append((f"{w}x{h} PNG", png(rng.integers(0, 256, (h, w, 3), np.uint8)),
                      fields(w, h)))
    big = np.empty((5000, 5000, 3), np.uint16)
    ramp = (np.arange(5000, dtype=np.uint32) * 13 % 65536).astype(np.uint16)
    big[...] = ramp[None, :, None]
    big[:, :, 1] = ramp[:, None]
    cases.append(("5000x5000 16-bit PNG", png(big, level=9), fields(5000, 5000)))
    del big
    cases.append(("640x480 noise PNG", png(rng.integers(0, 256, (480, 640, 3), np.uint8)),
                  fields(640, 480)))
    cases.append(("640x480 query PNG", *query))
    return cases


class Server:
    """``aceg serve`` in a subprocess; ``url``, ``pid``."""

    def __init__(self, maps_dir: Path, workers: int, queue: int) -> None:
        sock = free_loopback_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "ACEG_API_KEY"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aceg", "serve", "--maps", str(maps_dir), "--port",
             str(self.port), "--workers", str(workers), "--queue", str(queue), "--preload",
             "--log-level", "error"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 300
        while True:
            try:
                requests.get(f"{self.url}/health", timeout=5)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("aceg serve did not start") from None
                time.sleep(0.3)

    def memory(self, field: str) -> float:
        """``VmRSS`` or ``VmHWM`` of the server, MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post(url: str, image: bytes, form: dict, timeout: float = 600) -> requests.Response:
    return requests.post(f"{url}/maps/{BENCH_MAP}/localize", data=form, timeout=timeout,
                         files={"image": ("q.png", image, "image/png")})


def answer_of(response: requests.Response) -> str:
    body = response.json()
    if response.status_code != 200:
        return body.get("error", "?")
    return "localized" if body["localized"] else "not localized"


def measure_uploads(server: Server, cases) -> list[tuple]:
    rows = []
    for label, image, form in cases:
        time.sleep(0.5)
        idle = server.memory("VmRSS")
        server.reset_peak()
        t = time.perf_counter()
        response = post(server.url, image, form)
        elapsed = time.perf_counter() - t
        peak = server.memory("VmHWM") - idle
        rows.append((label, len(image), response.status_code, answer_of(response), elapsed,
                     peak))
    return rows


def measure_idle(server: Server, n: int, query: tuple[bytes, dict]) -> dict:
    sockets = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if i % 2 == 0:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            except OSError:
                pass
        sockets.append(sock)
    try:
        t = time.perf_counter()
        health = requests.get(f"{server.url}/health", timeout=60)
        t_health = time.perf_counter() - t
        t = time.perf_counter()
        pose = post(server.url, *query, timeout=120)
        t_pose = time.perf_counter() - t
    finally:
        for sock in sockets:
            sock.close()
    return {"health": (health.status_code, t_health), "pose": (pose.status_code, t_pose,
                                                               answer_of(pose))}


def measure_overload(url: str, payloads, clients: int, per_client: int) -> dict:
    """Every client sends ``per_client`` requests, retrying after Retry-After on 503."""
    lock = threading.Lock()
    latencies, refusals, statuses = [], [0], {}
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        barrier.wait()
        for j in range(per_client):
            image, form = payloads[(k * per_client + j) % len(payloads)]
            start = time.perf_counter()
            while True:
                response = post(url, image, form)
                if response.status_code != 503:
                    break
                with lock:
                    refusals[0] += 1
                time.sleep(int(response.headers.get("Retry-After", "1")))
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "refusals": refusals[0], "statuses": statuses,
            "wall": wall, "sent": clients * per_client}


def report(rows, idle, overload, args, service_seconds: float) -> None:
    print(f"\nservice hardening: aceg serve --workers {args.workers} --queue {args.queue} "
          "(defaults otherwise), "
          f"loopback, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"\n{'upload':<22} {'bytes':>8} {'status':>6} {'answer':<20} {'time s':>7} "
          f"{'peak MB above idle':>18}")
    for label, size, status, answer, elapsed, peak in rows:
        print(f"{label:<22} {size:>8} {status:>6} {answer:<20} {elapsed:>7.2f} {peak:>18.0f}")
    (h_status, h_time), (p_status, p_time, p_answer) = idle["health"], idle["pose"]
    print(f"\n{args.idle} idle connections ({args.idle // 2} with a started header): "
          f"GET /health {h_status} in {1000 * h_time:.0f} ms, pose {p_status} ({p_answer}) "
          f"in {1000 * p_time:.0f} ms")
    lat = sorted(overload["latencies"])
    answered = sum(overload["statuses"].values())
    print(f"\n{args.clients} clients x {args.requests_per_client} requests at once (Retry-After "
          f"honoured): {answered}/{overload['sent']} answered "
          f"{dict(sorted(overload['statuses'].items()))}, {overload['refusals']} 503 refusals "
          f"on the way; latency p50 {np.percentile(lat, 50):.2f} s, p99 "
          f"{np.percentile(lat, 99):.2f} s, max {lat[-1]:.2f} s; "
          f"{answered / overload['wall']:.2f} requests/s; "
          f"server's measured time per localization {service_seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=200, help="idle connections")
    parser.add_argument("--clients", type=int, default=16, help="simultaneous clients")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="service worker threads")
    parser.add_argument("--queue", type=int, default=16, help="service queue (aceg serve's default)")
    add_map_arguments(parser)
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "aceg_service_hardening")
    args = parser.parse_args()
    map_path, queries = map_and_queries(parser, args, lambda: build_default_map(args.work_dir))
    maps_dir = serve_as_bench(map_path, args.work_dir / "maps-bench")

    payloads = [(png(cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)),
                 localize_fields(frame.intrinsics, distortion=False)) for frame in queries.frames]
    cases = attack_uploads(payloads[0])
    server = Server(maps_dir, args.workers, args.queue)
    try:
        post(server.url, *payloads[0])  # warm-up
        rows = measure_uploads(server, cases)
        idle = measure_idle(server, args.idle, payloads[1 % len(payloads)])
        time.sleep(1)
        overload = measure_overload(server.url, payloads, args.clients, args.requests_per_client)
        service_seconds = requests.get(f"{server.url}/health", timeout=30).json()[
            "service_seconds"]
    finally:
        server.stop()
    report(rows, idle, overload, args, service_seconds)


if __name__ == "__main__":
    main()
