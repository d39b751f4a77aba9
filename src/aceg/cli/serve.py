"""``aceg serve``: the HTTP localization service."""

from __future__ import annotations

import os
from pathlib import Path

from aceg.errors import AcegError

HELP = "serve an HTTP API that localizes uploaded photos against a folder of maps"
DESCRIPTION = """\
Serve the maps (*.map files) of a folder over HTTP (FastAPI + uvicorn):

  GET  /health                 liveness and load
  GET  /maps                   name, size in bytes, frames, method of each map
  POST /maps/{name}/localize   multipart: image (JPEG/PNG) + fx, fy, cx, cy
                               [+ k1, k2, p1, p2, k3]; returns the camera-to-world pose
                               (4x4, and quaternion w,x,y,z + translation = camera centre,
                               OpenCV camera axes, metres), inliers, confident, timings
  GET  /docs                   interactive OpenAPI documentation

Maps are read once and shared by all requests. Localizations run on --workers threads;
up to --queue more requests wait, further ones get 503 at once. Uploads are limited in
bytes and pixels; every rejection is a 4xx with a JSON body {"error", "message"}.
With --api-key (or the ACEG_API_KEY environment variable) every request must send the
key in the X-API-Key header (or Authorization: Bearer); otherwise 401.

Example:
  aceg serve --maps maps/ --port 8000
  curl -F image=@query.jpg -F fx=525 -F fy=525 -F cx=319.5 -F cy=239.5 \\
       http://127.0.0.1:8000/maps/office/localize
"""

API_KEY_ENV = "ACEG_API_KEY"


def add_arguments(parser) -> None:
    parser.add_argument("--maps", required=True, metavar="DIR", help="folder of *.map files")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"require this key on every request (default: ${API_KEY_ENV} if set; "
                             "prefer the variable, command lines are visible to other users)")
    parser.add_argument("--workers", type=int, default=2,
                        help="localizations run concurrently (default 2)")
    parser.add_argument("--queue", type=int, default=8,
                        help="requests that may wait for a worker before 503 (default 8)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="largest accepted image file in MiB (default 20)")
    parser.add_argument("--max-pixels", type=int, default=25_000_000,
                        help="largest accepted image, width x height (default 25000000)")
    parser.add_argument("--preload", action="store_true",
                        help="load every map at start-up instead of on its first request")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))


def run(args) -> int:
    from aceg.service.app import ServiceConfig
    from aceg.service.maps import MapRegistry
    from aceg.service.server import serve

    if not 0 <= args.port <= 65535:
        raise AcegError(f"--port {args.port}: must be between 0 and 65535")
    if args.workers < 1:
        raise AcegError(f"--workers {args.workers}: must be at least 1")
    if args.queue < 0:
        raise AcegError(f"--queue {args.queue}: must be 0 or more")
    if not args.max_upload_mb > 0 or args.max_pixels < 1:
        raise AcegError("--max-upload-mb and --max-pixels must be positive")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and not api_key.strip():
        raise AcegError("--api-key is empty")
    config = ServiceConfig(
        maps_dir=Path(args.maps), api_key=api_key, workers=args.workers, queue=args.queue,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels)
    registry = MapRegistry(config.maps_dir)
    for problem in registry.problems:
        print(f"warning: {problem}")
    if not len(registry):
        raise AcegError(f"{config.maps_dir}: no usable *.map files")
    if args.preload:
        registry.preload()  # a map that cannot be used stops here with its error
    names = ", ".join(registry.entries)
    print(f"serving {len(registry)} map(s) from {config.maps_dir}: {names}")
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host} without an API key (--api-key or "
              f"${API_KEY_ENV})")
    print(f"API docs: http://{args.host}:{args.port}/docs")
    serve(config, args.host, args.port, args.log_level, registry=registry)
    return 0
