"""The HTTP API (FastAPI): health, map listing and localization of one uploaded photo.

Frames and units are those of :mod:`aceg.data.camera` (camera-to-world poses, OpenCV
camera axes, metres in the map's world frame; intrinsics in pixels of the uploaded image,
pixel centres at integers), spelled out for clients in :data:`DESCRIPTION`.

Request flow of ``POST /maps/{name}/localize``:

0. the connection itself is held to header and body deadlines and per-client connection
   limits (:mod:`aceg.service.protocol`, set up by :mod:`aceg.service.server`);
1. Host header, API key (when configured) and a cap on the request body size, checked by
   ASGI middleware (:mod:`aceg.service.middleware`) before the body is read;
2. multipart parsing and form validation (FastAPI, 422 on a missing/unparsable field);
3. the map name is looked up among the maps found at start-up (404 otherwise);
4. the upload's content type, byte size, magic bytes and header dimensions are checked
   (:func:`aceg.service.uploads.check_upload`), and the shape against the image limits
   (:func:`aceg.data.images.check_image_shape`; the scaled size too once the map's short
   side is known), all before decoding;
5. a slot of the FIFO :class:`~aceg.service.queue.WorkQueue` is taken (503 with an honest
   Retry-After when the wait would be too long);
6. on a worker thread: the scaled-size check, decode, intrinsics sanity, then
   :meth:`aceg.localization.localizer.Localizer.localize` with the map's shared localizer
   (whose pose sanity check decides ``localized``).

Every rejection is a JSON body ``{"error": <code>, "message": <one line>}`` with a 4xx
status (503 when busy; 500 only for server-side faults: a map file that can no longer be
loaded, or a bug, logged).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path as FsPath
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Path, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from aceg import __version__
from aceg.data.camera import rotation_to_quaternion
from aceg.data.images import ImageLimits, ImageSizeError, check_image_shape
from aceg.errors import AcegError
from aceg.service.maps import MapRegistry
from aceg.service.middleware import (
    API_KEY_HEADER,
    LOOPBACK_HOSTS,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HostCheckMiddleware,
    error_response,
)
from aceg.service.protocol import ConnectionLimits
from aceg.service.queue import QueueFull, WorkQueue
from aceg.service.schemas import (
    DESCRIPTION,
    ERROR_RESPONSES,
    HealthBody,
    ImageInfo,
    LocalizeBody,
    MapInfo,
    MapList,
    UnavailableMap,
)
from aceg.service.uploads import RequestRejected, check_upload, decode_image, make_intrinsics

log = logging.getLogger("aceg.service")

#: Room for the multipart framing and the form fields on top of the image bytes.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ServiceConfig:
    """Settings of a service.

    Attributes:
        maps_dir: folder of ``*.map`` files.
        api_key: when set, every request must send it (``X-API-Key`` header or
            ``Authorization: Bearer``), else 401. An empty key is an error.
        allowed_hosts: names accepted in the Host header besides :data:`LOOPBACK_HOSTS`
            (``"*"``: any).
        workers: worker threads running localizations concurrently.
        queue: most requests waiting for a worker; beyond that, or beyond ``max_wait``, 503.
        max_wait: longest expected wait in the queue, seconds (at the measured service time).
        max_upload_bytes: largest accepted image file.
        max_pixels: largest accepted image (width x height, read from the file header
            before decoding).
        image_limits: smallest side, aspect ratio and size at the map's short side
            (:class:`aceg.data.images.ImageLimits`), also checked before decoding.
        connections: header and body deadlines and connection limits
            (:class:`aceg.service.protocol.ConnectionLimits`).
        preload: build every map's localizer at start-up instead of on first use.
        speed: the localizers' trade-off of time against accuracy
            (:data:`aceg.localization.localizer.SPEEDS`).
        encoder_runtime: what runs the encoders' network
            (:data:`aceg.localization.localizer.ENCODER_RUNTIME`).
    """

    maps_dir: FsPath
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    workers: int = 2
    queue: int = 16
    max_wait: float = 30.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    preload: bool = False
    speed: str = "accurate"
    encoder_runtime: str = "auto"


def localizer_factory(config: ServiceConfig):
    """``path -> Localizer`` with the service's image limits, speed and encoder runtime
    (for :class:`MapRegistry`)."""
    from aceg.localization.localizer import Localizer, speed_settings

    return partial(Localizer, image_limits=config.image_limits, encoder_runtime=config.encoder_runtime,
                   **speed_settings(config.speed))


# Documents the header in OpenAPI (the "Authorize" button of /docs); the check itself is
# ApiKeyMiddleware, so it covers every path, including unknown ones and /docs.
api_key_doc = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                           description="needed only when the server has an API key")


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
                 422: "invalid_request"}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as :func:`~aceg.service.middleware.error_response` JSON."""

    @app.exception_handler(RequestRejected)
    async def _rejected(request: Request, exc: RequestRejected):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(QueueFull)
    async def _busy(request: Request, exc: QueueFull):
        return error_response(503, "busy", exc.message,
                              headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such path: {request.url.path}"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # pragma: no cover - a bug
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error (logged on the server)")


#: HTTP status of each :class:`~aceg.data.images.ImageSizeError` code.
_SHAPE_STATUS = {"image_too_small": 400, "image_aspect_ratio": 400, "image_too_large": 413}


def _check_shape(size: tuple[int, int], short_side: int | None, limits: ImageLimits,
                 filename: str) -> None:
    """:func:`aceg.data.images.check_image_shape` as a 4xx :class:`RequestRejected`."""
    try:
        check_image_shape(size[0], size[1], short_side, limits, filename)
    except ImageSizeError as exc:
        raise RequestRejected(_SHAPE_STATUS[exc.code], exc.code, str(exc)) from None


def _map_localizer(registry: MapRegistry, map_name: str):
    try:
        return registry.localizer(map_name)
    except AcegError as exc:  # the file changed or vanished since start-up
        log.error("map %s cannot be loaded: %s", map_name, exc)
        raise RequestRejected(500, "map_unavailable",
                              f"map {map_name!r} cannot be loaded on the server") from None


def _localize_job(waited: float, localizer, map_name: str, upload: dict,
                  limits: ImageLimits, intr: dict, started: float) -> LocalizeBody:
    """The worker-thread part of ``POST /maps/{name}/localize``: size at the map's short
    side, decode, check the intrinsics, localize with ``localizer`` (the map's, loaded by
    the queue's ``setup`` on the same worker). ``upload``: data, kind, filename and
    header size; ``waited`` (seconds in the queue) and ``started`` (``perf_counter`` when
    the request arrived) go into the timings."""
    filename = upload["filename"]
    _check_shape(upload["size"], localizer.data.short_side, limits, filename)
    t = time.perf_counter()
    image = decode_image(upload["data"], upload["kind"], filename)
    t_decode = time.perf_counter() - t
    intrinsics = make_intrinsics(intr["fx"], intr["fy"], intr["cx"], intr["cy"],
                                 intr["distortion"], image.width, image.height)
    t = time.perf_counter()
    try:
        result = localizer.localize(image.rgb, intrinsics, name=filename)
    except ImageSizeError as exc:
        raise RequestRejected(_SHAPE_STATUS[exc.code], exc.code, str(exc)) from None
    except AcegError as exc:
        raise RequestRejected(400, "unusable_image", str(exc)) from None
    t_localize = time.perf_counter() - t
    timings = {"queue": waited, "decode": t_decode,
               **{k: v for k, v in result.timings.items() if k != "total"},
               "localize": t_localize, "total": time.perf_counter() - started}
    pose = result.cam_to_world
    return LocalizeBody(
        map=map_name,
        image=ImageInfo(filename=filename, width=image.width, height=image.height),
        localized=pose is not None,
        confident=bool(result.confident),
        reason=result.reason,
        cam_to_world=None if pose is None else np.asarray(pose, dtype=float).tolist(),
        rotation_wxyz=None if pose is None else rotation_to_quaternion(pose[:3, :3]).tolist(),
        translation=None if pose is None else np.asarray(pose[:3, 3], dtype=float).tolist(),
        inliers=int(result.inliers), correspondences=int(result.correspondences),
        rotation_std_deg=_finite_or_none(result.rotation_std_deg),
        centre_std_m=_finite_or_none(result.centre_std_m),
        timings={k: round(float(v), 6) for k, v in timings.items()},
    )


def _finite_or_none(value: float) -> float | None:
    """``value`` rounded for JSON, or None when infinite or NaN (JSON has neither)."""
    return round(float(value), 6) if math.isfinite(value) else None


def _add_service_routes(app: FastAPI, registry: MapRegistry, work: WorkQueue) -> None:
    """``/health`` (GET and HEAD) and ``/maps``."""

    def health_body() -> HealthBody:
        return HealthBody(status="ok", version=__version__, maps=len(registry),
                          loaded=sum(e.loaded for e in registry.snapshot()[0]),
                          workers=work.workers, queue=work.queue, in_flight=work.in_flight,
                          service_seconds=round(work.service_time, 6))

    @app.get("/health", response_model=HealthBody, tags=["service"],
             responses={c: ERROR_RESPONSES[c] for c in (400, 401)})
    def health(_key: Annotated[str | None, Security(api_key_doc)] = None) -> HealthBody:
        """Liveness and load of the service."""
        return health_body()

    @app.head("/health", response_model=HealthBody, tags=["service"],
              responses={c: ERROR_RESPONSES[c] for c in (400, 401)})
    def health_head(_key: Annotated[str | None, Security(api_key_doc)] = None) -> HealthBody:
        """Liveness, headers only (the same status and headers as GET, no body)."""
        return health_body()

    @app.get("/maps", response_model=MapList, tags=["maps"],
             responses={c: ERROR_RESPONSES[c] for c in (400, 401)})
    def list_maps(_key: Annotated[str | None, Security(api_key_doc)] = None) -> MapList:
        """The maps this server localizes against."""
        entries, unavailable = registry.snapshot()
        return MapList(maps=[MapInfo(name=e.name, size=e.size, frames=e.frames, method=e.method,
                                     model=e.model, encoder=e.encoder, scene=e.scene)
                             for e in entries],
                       unavailable=[UnavailableMap(name=n, reason=r) for n, r in unavailable.items()])


#: OpenAPI: the content types the image part of the form may declare.
_UPLOAD_ENCODING = {"requestBody": {"content": {"multipart/form-data": {"encoding": {
    "image": {"contentType": "image/png, image/jpeg"}}}}}}


def _known_short_side(registry: MapRegistry, name: str) -> int | None:
    """The map's working short side if its localizer is built already (no loading here)."""
    entry = registry.get(name)
    return registry.localizer(name).data.short_side if entry is not None and entry.loaded \
        else None


def create_app(config: ServiceConfig, registry: MapRegistry | None = None) -> FastAPI:
    """The FastAPI application of a service (see module docstring).

    ``registry`` defaults to the maps of ``config.maps_dir`` (localizers with the
    service's image limits); it and the work queue are reachable as
    ``app.state.registry`` and ``app.state.work``.
    """
    if config.api_key is not None and not config.api_key.strip():
        raise AcegError("the API key is empty: give a key, or none to serve without one")
    if registry is None:
        registry = MapRegistry(config.maps_dir, localizer_factory=localizer_factory(config))
    work = WorkQueue(config.workers, config.queue, config.max_wait)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.preload:
            registry.preload()
        yield
        work.shutdown()

    app = FastAPI(title="aceg localization service", version=__version__,
                  description=DESCRIPTION, lifespan=lifespan)
    app.state.registry = registry
    app.state.work = work
    app.state.config = config
    _add_error_handlers(app)
    _add_service_routes(app, registry, work)

    @app.post("/maps/{name}/localize", response_model=LocalizeBody, tags=["localization"],
              responses={c: ERROR_RESPONSES[c] for c in (400, 401, 404, 413, 415, 422, 503)},
              openapi_extra=_UPLOAD_ENCODING)
    async def localize(
        name: Annotated[str, Path(description="map name, as listed by GET /maps")],
        image: Annotated[UploadFile, File(description="the photo, JPEG or PNG")],
        fx: Annotated[float, Form(description="focal length along x, pixels of the uploaded image")],
        fy: Annotated[float, Form(description="focal length along y, pixels")],
        cx: Annotated[float, Form(description="principal point x, pixels (pixel centres at integers)")],
        cy: Annotated[float, Form(description="principal point y, pixels (pixel centres at integers)")],
        k1: Annotated[float | None, Form(description="radial distortion k1 (OpenCV)")] = None,
        k2: Annotated[float | None, Form(description="radial distortion k2 (OpenCV)")] = None,
        p1: Annotated[float | None, Form(description="tangential distortion p1 (OpenCV)")] = None,
        p2: Annotated[float | None, Form(description="tangential distortion p2 (OpenCV)")] = None,
        k3: Annotated[float | None, Form(description="radial distortion k3 (OpenCV)")] = None,
        _key: Annotated[str | None, Security(api_key_doc)] = None,
    ) -> LocalizeBody:
        """Camera-to-world pose of one photo in map `name` (conventions: see the top of
        this page)."""
        started = time.perf_counter()
        if registry.get(name) is None:
            raise RequestRejected(404, "unknown_map",
                                  f"no map named {name[:200]!r}; GET /maps lists them")
        filename = FsPath(image.filename or "upload").name[:200] or "upload"
        data = await image.read(config.max_upload_bytes + 1)
        kind, size = check_upload(data, image.content_type, filename, config.max_upload_bytes,
                                  config.max_pixels)
        _check_shape(size, _known_short_side(registry, name), config.image_limits, filename)
        slot = work.reserve()  # QueueFull: 503 with Retry-After
        intr = {"fx": fx, "fy": fy, "cx": cx, "cy": cy,
                "distortion": {"k1": k1, "k2": k2, "p1": p1, "p2": p2, "k3": k3}}
        upload = {"data": data, "kind": kind, "filename": filename, "size": size}
        return await work.run(slot, _localize_job, name, upload, config.image_limits, intr, started,
                              setup=lambda: _map_localizer(registry, name))

    app.add_middleware(BodyLimitMiddleware,
                       limit=config.max_upload_bytes + FORM_OVERHEAD_BYTES)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(HostCheckMiddleware, allowed={*LOOPBACK_HOSTS, *config.allowed_hosts})
    return app


def openapi_json(config: ServiceConfig, registry: MapRegistry | None = None) -> str:
    """The OpenAPI document of the service, as JSON text."""
    return json.dumps(create_app(config, registry).openapi(), indent=2)
