"""Load test of the HTTP service (``aceg serve``) on loopback.

    .venv/bin/python benchmarks/service_load.py [--requests 36] [--max-seconds 120]
        [--concurrency 1 2 4] [--workers 2] [--queue 8] [--map PATH --queries SCENE]

Starts the service in this process (uvicorn in a background thread on a free 127.0.0.1
port; nothing leaves the machine), then for each concurrency level C sends a fixed
number of localization requests from C client threads (each with its own keep-alive
session, requests taken in turn from the query images) and stops issuing new ones after
--max-seconds. Prints, per level: requests completed, HTTP statuses, throughput
(completed requests / wall time), client-side latency percentiles p50/p90/p99 (from
sending the upload to the parsed answer), and the mean server-side stage times.

Default map and queries (built once into --work-dir and reused): the Middlebury
templeRing images (640x480, ../shared/data), frames with index % 4 != 0 mapped with the
ACE baseline (default head, 512 wide; short side 480; --map-iterations steps), the other
12 frames sent as queries with their ground-truth intrinsics. Localization cost does not
depend on how long the map was trained except through RANSAC, so the median pose error
of the queries is printed to show the map is a working one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

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

from aceg.data.readers import read_scene
from aceg.data.scene import Scene
from aceg.service.app import ServiceConfig
from aceg.service.server import BackgroundServer


def build_default_map(work_dir: Path, iterations: int) -> tuple[Path, Scene]:
    from aceg.mapping.mapper import map_scene

    scene = read_scene(TEMPLE, "middlebury")
    mapping, queries = scene.split_every(4, 0)
    map_path = work_dir / "maps" / f"temple-ace-{iterations}.map"
    if not map_path.is_file():
        print(f"building the map {map_path} ({len(mapping)} frames, {iterations} steps) ...",
              flush=True)
        t = time.perf_counter()
        map_scene(mapping, map_path, model="ace", preset="fast", iterations=iterations,
                  batch_size=2048, passes=1, progress=False)
        print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    return map_path, queries


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_level(url: str, map_name: str, payloads: list[tuple[str, bytes, dict]],
              concurrency: int, total: int, max_seconds: float) -> dict:
    """Send ``total`` requests from ``concurrency`` threads; stop issuing after
    ``max_seconds``. Returns latencies, statuses, server timings and wall time."""
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    statuses: Counter = Counter()
    server_timings: dict[str, list[float]] = {}
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + max_seconds

    def client():
        session = requests.Session()
        while True:
            with lock:
                i = next_index[0]
                if i >= total or time.perf_counter() > deadline:
                    return
                next_index[0] += 1
            name, data, fields = payloads[i % len(payloads)]
            t = time.perf_counter()
            try:
                response = session.post(f"{url}/maps/{map_name}/localize",
                                        files={"image": (name, data, "image/png")}, data=fields,
                                        timeout=max_seconds + 60)
                body = response.json()
                status = response.status_code
            except (requests.RequestException, ValueError) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    statuses["client error"] += 1
                continue
            elapsed = time.perf_counter() - t
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(elapsed)
                    for k, v in body["timings"].items():
                        server_timings.setdefault(k, []).append(v)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "statuses": statuses, "wall": wall,
            "timings": {k: statistics.fmean(v) for k, v in server_timings.items()},
            "errors": errors, "sent": next_index[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=36, help="requests per level")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="stop issuing requests of a level after this long")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers", type=int, default=2, help="service worker threads")
    parser.add_argument("--queue", type=int, default=8, help="service queue slots")
    add_map_arguments(parser)
    parser.add_argument("--map-iterations", type=int, default=300,
                        help="training steps of the default map")
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "aceg_service_load")
    args = parser.parse_args()

    map_path, queries = map_and_queries(
        parser, args, lambda: build_default_map(args.work_dir, args.map_iterations))
    if args.map is not None:
        maps_dir, map_name = serve_as_bench(map_path, args.work_dir / "maps-given"), BENCH_MAP
    else:
        maps_dir, map_name = map_path.parent, map_path.stem

    payloads = [(frame.image_path.name, frame.image_path.read_bytes(),
                 localize_fields(frame.intrinsics)) for frame in queries.frames]
    ctype_note = {p.suffix.lower() for p in (f.image_path for f in queries.frames)}
    if not ctype_note <= {".png"}:
        raise SystemExit(f"query images must be PNG for this script, got {ctype_note}")

    config = ServiceConfig(maps_dir, workers=args.workers, queue=args.queue)
    load_before = os.getloadavg()
    with BackgroundServer(config) as server:
        # warm-up (loads the map, first inference) and accuracy check, one request per query
        errors_m = []
        session = requests.Session()
        for frame, (name, data, fields) in zip(queries.frames, payloads, strict=True):
            body = session.post(f"{server.url}/maps/{map_name}/localize",
                                files={"image": (name, data, "image/png")}, data=fields,
                                timeout=300).json()
            if body.get("localized") and frame.cam_to_world is not None:
                errors_m.append(float(np.linalg.norm(np.array(body["translation"])
                                                     - frame.camera_centre)))
        results = {c: run_level(server.url, map_name, payloads, c, args.requests,
                                args.max_seconds) for c in args.concurrency}
    load_after = os.getloadavg()

    first = queries.frames[0]
    print(f"\nservice load test: map {map_path.name} ({map_path.stat().st_size / 1e6:.1f} MB), "
          f"{len(queries)} query images {first.width}x{first.height} PNG, "
          f"workers={args.workers} queue={args.queue}, {args.requests} requests per level "
          f"(max {args.max_seconds:.0f} s), loopback")
    if errors_m:
        print(f"queries localized in warm-up: {len(errors_m)}/{len(queries)}, median position "
              f"error {100 * float(np.median(errors_m)):.1f} cm")
    print(f"load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    header = (f"{'clients':>7} {'done':>5} {'statuses':>16} {'req/s':>6} {'p50 ms':>7} "
              f"{'p90 ms':>7} {'p99 ms':>7} | {'queue':>6} {'encode':>6} {'regress':>7} "
              f"{'ransac':>6} {'total':>6} (server ms, mean)")
    print(header)
    print("-" * len(header))
    for c, r in results.items():
        lat = [1000 * x for x in r["latencies"]]
        st = ",".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items(), key=str))
        t = {k: 1000 * v for k, v in r["timings"].items()}
        print(f"{c:>7} {len(lat):>5} {st:>16} {len(lat) / r['wall']:>6.2f} "
              f"{percentile(lat, 50):>7.0f} {percentile(lat, 90):>7.0f} "
              f"{percentile(lat, 99):>7.0f} | {t.get('queue', 0):>6.0f} "
              f"{t.get('encode', 0):>6.0f} {t.get('regress', 0):>7.0f} "
              f"{t.get('ransac', 0):>6.0f} {t.get('total', 0):>6.0f}")
        for e in r["errors"][:3]:
            print(f"        client error: {e}")


if __name__ == "__main__":
    main()
