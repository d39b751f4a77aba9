"""The HTTP API (FastAPI): health, map listing and localization of one uploaded photo.

Frames and units are those of :mod:`aceg.data.camera` (camera-to-world poses, OpenCV
camera axes, metres in the map's world frame; intrinsics in pixels of the uploaded image,
pixel centres at integers), spelled out for clients in :data:`DESCRIPTION`.

Request flow of ``POST /maps/{name}/localize``:

1. API key (when configured) and a cap on the request body size, both checked by ASGI
   middleware (:mod:`aceg.service.middleware`) before the body is read;
2. multipart parsing and form validation (FastAPI, 422 on a missing/unparsable field);
3. the map name is looked up among the maps found at start-up (404 otherwise);
4. the upload's content type, byte size, magic bytes and header dimensions are checked
   (:func:`aceg.service.uploads.check_upload`);
5. a slot of the bounded :class:`~aceg.service.queue.WorkQueue` is taken (503 when full);
6. on a worker thread: decode, intrinsics sanity, then
   :meth:`aceg.localization.localizer.Localizer.localize` with the map's shared localizer.

Every rejection is a JSON body ``{"error": <code>, "message": <one line>}`` with a 4xx
status (503 when busy; 500 only for server-side faults: a map file that can no longer be
loaded, or a bug, logged).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Path, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from aceg import __version__
from aceg.data.camera import rotation_to_quaternion
from aceg.errors import AcegError
from aceg.service.maps import MapRegistry
from aceg.service.middleware import (
    API_KEY_HEADER,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    error_response,
)
from aceg.service.queue import WorkQueue
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
            ``Authorization: Bearer``), else 401.
        workers: worker threads running localizations concurrently.
        queue: requests allowed to wait for a worker; beyond that, 503.
        max_upload_bytes: largest accepted image file.
        max_pixels: largest accepted image (width x height, read from the file header
            before decoding).
        preload: build every map's localizer at start-up instead of on first use.
    """

    maps_dir: FsPath
    api_key: str | None = None
    workers: int = 2
    queue: int = 8
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    preload: bool = False


DESCRIPTION = """\
Visual relocalization by scene coordinate regression (ACE-G): send one photo and the
camera intrinsics, get the 6-DoF camera pose in the map's world frame.

**Conventions** (as everywhere in aceg, see `aceg.data.camera`):

* `cam_to_world` is the 4x4 **camera-to-world** transform, row-major: its rotation columns
  are the camera axes expressed in world coordinates and its last column is the camera
  centre in world coordinates. World-to-camera is its inverse.
* Camera axes are **OpenCV's**: x right, y down, z forward (the camera looks along +z).
* `rotation_wxyz` is the rotation of `cam_to_world` as a unit quaternion in **Hamilton
  convention, scalar first (w, x, y, z)**, with w >= 0. `translation` is the translation
  of `cam_to_world`, i.e. the **camera centre in world coordinates**, in **metres**.
* Intrinsics `fx, fy, cx, cy` are in pixels of the uploaded image as stored (before any
  resizing), with pixel centres at integer coordinates (OpenCV's convention: the top-left
  pixel's centre is (0, 0)). Optional distortion uses OpenCV's model and order
  `k1, k2, p1, p2[, k3]`.
* Timings are seconds.

**Errors** are JSON: `{"error": "<code>", "message": "<one line>"}` with status 400 (bad
image or intrinsics), 401 (API key), 404 (unknown map or path), 413 (upload or image too
large), 415 (not a PNG/JPEG), 422 (missing or malformed form field) or 503 (all workers
busy and the queue full: retry later).

When the server was started with an API key, every request (including this page) needs
the header `X-API-Key: <key>` (or `Authorization: Bearer <key>`).
"""


class ErrorBody(BaseModel):
    error: str = Field(description="short machine-readable code, e.g. 'invalid_intrinsics'")
    message: str = Field(description="one-line explanation")


class HealthBody(BaseModel):
    status: str = Field(description="'ok'")
    version: str
    maps: int = Field(description="maps offered")
    loaded: int = Field(description="maps whose localizer is built")
    workers: int
    queue: int = Field(description="waiting slots beyond the workers")
    in_flight: int = Field(description="localizations waiting or running now")


class MapInfo(BaseModel):
    name: str = Field(description="name to use in /maps/{name}/localize")
    size: int = Field(description="map file size in bytes")
    frames: int = Field(description="number of mapping images")
    method: str = Field(description="'aceg' (map code of an ACE-G regressor) or 'ace' (ACE head)")
    model: str = Field(description="'anchors' (anchor model), 'transformer' (map-code "
                                   "transformer) or 'ace' (ACE head)")
    encoder: str
    scene: str = Field(description="scene name stored in the map")


class UnavailableMap(BaseModel):
    name: str = Field(description="the map file's name without .map")
    reason: str = Field(description="why it is not served (one line)")


class MapList(BaseModel):
    maps: list[MapInfo]
    unavailable: list[UnavailableMap] = Field(
        default=[], description="map files of the folder that are not served, and why")


class ImageInfo(BaseModel):
    filename: str
    width: int = Field(description="pixels, as uploaded")
    height: int = Field(description="pixels, as uploaded")


class LocalizeBody(BaseModel):
    map: str
    image: ImageInfo
    localized: bool = Field(description="a pose was found (RANSAC-PnP succeeded)")
    confident: bool = Field(description="the pose has enough inliers to be trusted")
    reason: str = Field(description="why the image was not localized ('' when localized)")
    cam_to_world: list[list[float]] | None = Field(
        description="4x4 camera-to-world pose, row-major (OpenCV camera axes, metres); "
                    "null when not localized")
    rotation_wxyz: list[float] | None = Field(
        description="rotation of cam_to_world as a unit quaternion (w, x, y, z), Hamilton "
                    "convention, w >= 0")
    translation: list[float] | None = Field(
        description="translation of cam_to_world = camera centre in world coordinates, metres")
    inliers: int = Field(description="RANSAC inliers after refinement")
    correspondences: int = Field(description="2D-3D correspondences given to RANSAC")
    timings: dict[str, float] = Field(
        description="seconds: queue (waiting for a worker), decode, prepare, encode, regress, "
                    "ransac, localize (prepare..ransac) and total (from the upload being read)")


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


#: OpenAPI documentation of the error answers, by status.
_ERROR_RESPONSES = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "bad image or intrinsics"), (401, "missing or wrong API key"),
                       (404, "unknown map"), (413, "upload or image too large"),
                       (415, "not a PNG or JPEG"), (422, "missing or malformed field"),
                       (503, "busy: all workers and queue slots taken"))
}


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as :func:`~aceg.service.middleware.error_response` JSON."""

    @app.exception_handler(RequestRejected)
    async def _rejected(request: Request, exc: RequestRejected):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return error_response(exc.status, exc.code, exc.message, headers=headers)

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


def _localize_job(waited: float, registry: MapRegistry, map_name: str, data: bytes, kind: str,
                  filename: str, intr: dict, started: float) -> LocalizeBody:
    """The worker-thread part of ``POST /maps/{name}/localize``: decode, check the
    intrinsics, localize. ``waited`` (seconds in the queue) and ``started``
    (``perf_counter`` when the request arrived) go into the timings."""
    t = time.perf_counter()
    image = decode_image(data, kind, filename)
    t_decode = time.perf_counter() - t
    intrinsics = make_intrinsics(intr["fx"], intr["fy"], intr["cx"], intr["cy"],
                                 intr["distortion"], image.width, image.height)
    try:
        localizer = registry.localizer(map_name)
    except AcegError as exc:  # the file changed or vanished since start-up
        log.error("map %s cannot be loaded: %s", map_name, exc)
        raise RequestRejected(500, "map_unavailable",
                              f"map {map_name!r} cannot be loaded on the server") from None
    t = time.perf_counter()
    try:
        result = localizer.localize(image.rgb, intrinsics, name=filename)
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
        timings={k: round(float(v), 6) for k, v in timings.items()},
    )


def create_app(config: ServiceConfig, registry: MapRegistry | None = None) -> FastAPI:
    """The FastAPI application of a service (see module docstring).

    ``registry`` defaults to the maps of ``config.maps_dir``; it and the work queue are
    reachable as ``app.state.registry`` and ``app.state.work``.
    """
    registry = registry if registry is not None else MapRegistry(config.maps_dir)
    work = WorkQueue(config.workers, config.queue)

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

    @app.get("/health", response_model=HealthBody, tags=["service"],
             responses={401: _ERROR_RESPONSES[401]})
    def health(_key: Annotated[str | None, Security(api_key_doc)] = None) -> HealthBody:
        """Liveness and load of the service."""
        return HealthBody(status="ok", version=__version__, maps=len(registry),
                          loaded=sum(e.loaded for e in registry.entries.values()),
                          workers=work.workers, queue=work.queue, in_flight=work.in_flight)

    @app.get("/maps", response_model=MapList, tags=["maps"],
             responses={401: _ERROR_RESPONSES[401]})
    def list_maps(_key: Annotated[str | None, Security(api_key_doc)] = None) -> MapList:
        """The maps this server localizes against."""
        return MapList(maps=[MapInfo(name=e.name, size=e.size, frames=e.frames, method=e.method,
                                     model=e.model, encoder=e.encoder, scene=e.scene)
                             for e in list(registry.entries.values())],
                       unavailable=[UnavailableMap(name=n, reason=r)
                                    for n, r in list(registry.unavailable.items())])

    @app.post("/maps/{name}/localize", response_model=LocalizeBody, tags=["localization"],
              responses={c: _ERROR_RESPONSES[c] for c in (400, 401, 404, 413, 415, 422, 503)})
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
        kind = check_upload(data, image.content_type, filename, config.max_upload_bytes,
                            config.max_pixels)
        if not work.try_reserve():
            raise RequestRejected(503, "busy", f"all {work.workers} workers busy and "
                                               f"{work.queue} queue slots taken; retry later")
        intr = {"fx": fx, "fy": fy, "cx": cx, "cy": cy,
                "distortion": {"k1": k1, "k2": k2, "p1": p1, "p2": p2, "k3": k3}}
        return await work.run(_localize_job, registry, name, data, kind, filename, intr, started)

    app.add_middleware(BodyLimitMiddleware,
                       limit=config.max_upload_bytes + FORM_OVERHEAD_BYTES)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    return app


def openapi_json(config: ServiceConfig, registry: MapRegistry | None = None) -> str:
    """The OpenAPI document of the service, as JSON text."""
    return json.dumps(create_app(config, registry).openapi(), indent=2)
