"""``aceg serve``: the HTTP localization service."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from aceg.cli.common import add_query_arguments
from aceg.data.images import ImageLimits
from aceg.errors import AcegError

HELP = "serve an HTTP API that localizes uploaded photos against a folder of maps"
DESCRIPTION = """\
Serve the maps (*.map files) of a folder over HTTP (FastAPI + uvicorn):

  GET  /health                 liveness and load (HEAD /health: the same, no body)
  GET  /maps                   name, size in bytes, frames, method of each map
  POST /maps/{{name}}/localize   multipart: image (JPEG/PNG) + fx, fy, cx, cy
                               [+ k1, k2, p1, p2, k3]; returns the camera-to-world pose
                               (4x4, and quaternion w,x,y,z + translation = camera centre,
                               OpenCV camera axes, metres), inliers, confident, timings
  GET  /docs                   interactive OpenAPI documentation

Maps are read once and shared by all requests. Localizations run on --workers threads
in arrival order; up to --queue more requests wait (no longer than --max-wait seconds at
the measured time per request), further ones get 503 with a Retry-After header saying
when to come back. A pose counts as localized only when it passes the localizer's sanity
check (enough inliers, spread over the image), as in `aceg localize`.

Uploads are limited in bytes and pixels, and by shape before decoding: both sides at
least {limits.min_side} pixels, aspect ratio at most {limits.max_aspect:g}:1, at most {limits.max_working_pixels:,} pixels once scaled
to the map's short side. Every rejection of a request the server could read is a 4xx with
a JSON body {{"error", "message"}}.

Connections must send their request header within --header-timeout seconds and their
body within --body-timeout; a client address may hold --max-client-connections open
connections (a new one closes its longest-idle one).

Security: with --api-key (or the ACEG_API_KEY environment variable) every request must
send the key in the X-API-Key header (or Authorization: Bearer); otherwise 401. An empty
key is an error. Listening beyond this machine (--host other than a loopback address)
needs a key, or --insecure to serve without one. Requests must name this server in their
Host header: localhost, 127.0.0.1, ::1, the --host address, or an --allowed-host name
(a guard against DNS rebinding).

Example:
  aceg serve --maps maps/ --port 8000
  curl -F image=@query.jpg -F fx=525 -F fy=525 -F cx=319.5 -F cy=239.5 \\
       http://127.0.0.1:8000/maps/office/localize
  ACEG_API_KEY=... aceg serve --maps maps/ --host 0.0.0.0 --allowed-host maps.example.org
""".format(limits=ImageLimits())

API_KEY_ENV = "ACEG_API_KEY"

#: Addresses that listen on every interface: not a name clients use in a Host header.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def add_arguments(parser) -> None:
    parser.add_argument("--maps", required=True, metavar="DIR", help="folder of *.map files")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"require this key on every request (default: ${API_KEY_ENV} if set; "
                             "prefer the variable, command lines are visible to other users)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback without an API key")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also accept this name in the Host header (repeatable; '*' accepts "
                             "any); localhost, 127.0.0.1, ::1 and --host are always accepted")
    parser.add_argument("--workers", type=int, default=2,
                        help="localizations run concurrently (default 2)")
    parser.add_argument("--queue", type=int, default=16,
                        help="requests that may wait for a worker before 503 (default 16)")
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="longest expected wait in the queue, seconds (default 30)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="largest accepted image file in MiB (default 20)")
    parser.add_argument("--max-pixels", type=int, default=25_000_000,
                        help="largest accepted image, width x height (default 25000000)")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a connection has to send its request header (default 10)")
    parser.add_argument("--body-timeout", type=float, default=60.0,
                        help="seconds a request has to send its body (default 60)")
    parser.add_argument("--max-client-connections", type=int, default=64,
                        help="open connections per client address (default 64)")
    add_query_arguments(parser)
    parser.add_argument("--preload", action="store_true",
                        help="load every map at start-up instead of on its first request")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the service on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_from(args) -> str | None:
    """The key of ``--api-key`` or ``$ACEG_API_KEY`` (None: no key); empty is an error."""
    if args.api_key is not None:
        if not args.api_key.strip():
            raise AcegError("--api-key is empty: give a key, or leave the option out")
        return args.api_key
    key = os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise AcegError(f"${API_KEY_ENV} is set but empty: set a key, or unset the variable "
                        "to serve without one")
    return key


def check_arguments(args) -> None:
    if not 0 <= args.port <= 65535:
        raise AcegError(f"--port {args.port}: must be between 0 and 65535")
    if args.workers < 1:
        raise AcegError(f"--workers {args.workers}: must be at least 1")
    if args.queue < 0:
        raise AcegError(f"--queue {args.queue}: must be 0 or more")
    if not args.max_upload_mb > 0 or args.max_pixels < 1:
        raise AcegError("--max-upload-mb and --max-pixels must be positive")
    if not (args.max_wait > 0 and args.header_timeout > 0 and args.body_timeout > 0):
        raise AcegError("--max-wait, --header-timeout and --body-timeout must be positive")
    if args.max_client_connections < 1:
        raise AcegError(f"--max-client-connections {args.max_client_connections}: must be at "
                        "least 1")


def run(args) -> int:
    from aceg.service.app import ServiceConfig, localizer_factory
    from aceg.service.maps import MapRegistry
    from aceg.service.protocol import ConnectionLimits
    from aceg.service.server import serve

    check_arguments(args)
    api_key = api_key_from(args)
    if api_key is None and not is_loopback(args.host) and not args.insecure:
        raise AcegError(f"--host {args.host} listens beyond this machine without an API key: "
                        f"set ${API_KEY_ENV} (or --api-key), or pass --insecure to serve "
                        "without one")
    bind = [] if args.host in WILDCARD_HOSTS else [args.host]
    config = ServiceConfig(
        maps_dir=Path(args.maps), api_key=api_key, workers=args.workers, queue=args.queue,
        max_wait=args.max_wait, allowed_hosts=tuple(bind + args.allowed_host),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
        connections=ConnectionLimits(header_timeout=args.header_timeout,
                                     body_timeout=args.body_timeout,
                                     max_client_connections=args.max_client_connections),
        speed=args.speed, encoder_runtime=args.encoder_runtime)
    registry = MapRegistry(config.maps_dir, localizer_factory=localizer_factory(config))
    if args.preload:
        registry.preload()  # a map whose localizer cannot be built becomes unavailable
    for problem in registry.problems:
        print(f"warning: {problem}")
    if not len(registry):
        raise AcegError(f"{config.maps_dir}: no usable *.map files")
    names = ", ".join(registry.entries)
    print(f"serving {len(registry)} map(s) from {config.maps_dir}: {names}")
    if api_key is None and not is_loopback(args.host):
        print(f"warning: listening on {args.host} without an API key (--insecure)")
    print(f"API docs: http://{args.host}:{args.port}/docs")
    serve(config, args.host, args.port, args.log_level, registry=registry)
    return 0
