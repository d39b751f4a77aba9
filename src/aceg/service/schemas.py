"""What the HTTP API documents: its description (conventions, errors, limits) and the
pydantic models of its answers, shown in the OpenAPI schema at ``/openapi.json``."""

from __future__ import annotations

from pydantic import BaseModel, Field

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

**Localized** means RANSAC found a pose *and* it passed the localizer's sanity check
(enough inliers, spread over the image); otherwise `localized` is false and `reason`
says why. Random noise or a photo of another place is not localized.

**Image limits**, checked from the file header before decoding: PNG or JPEG, at most the
server's byte and pixel limits; both sides at least the minimum size; long side / short
side at most the aspect-ratio limit; and at most a pixel limit once scaled to the map's
working short side (the size the model sees). Each refusal states the limit.

**Errors** are JSON: `{"error": "<code>", "message": "<one line>"}` with status 400 (bad
image or intrinsics, image too small or too elongated, or a Host header that does not name
this server), 401 (API key), 404 (unknown map or path), 405 (method), 408 (request header
not sent in time), 413 (upload or image too large), 415 (not a PNG/JPEG), 422 (missing or
malformed form field) or 503 (busy: the `Retry-After` header says in how many seconds to
retry; it is computed from the queue and the measured time per request). A body not sent
in time closes the connection without an answer; a request the HTTP parser cannot read
(malformed, or a header over its size limit) gets the server's plain-text 400.

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
    queue: int = Field(description="most requests waiting for a worker")
    in_flight: int = Field(description="localizations waiting or running now")
    service_seconds: float = Field(description="measured seconds a localization keeps a "
                                               "worker busy (moving average)")


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
    localized: bool = Field(description="a pose was found and passed the sanity check")
    confident: bool = Field(description="the pose has enough inliers (200 of the first "
                                        "search) and its camera centre is determined to 5 cm "
                                        "(one standard deviation)")
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
    rotation_std_deg: float | None = Field(
        description="standard deviation of the rotation predicted from the inliers, degrees; "
                    "null when not localized")
    centre_std_m: float | None = Field(
        description="standard deviation of the camera centre predicted from the inliers, "
                    "metres; null when not localized")
    correspondences: int = Field(description="2D-3D correspondences given to RANSAC")
    timings: dict[str, float] = Field(
        description="seconds: queue (waiting for a worker), decode, prepare, encode, regress, "
                    "ransac, localize (prepare..ransac) and total (from the upload being read)")


#: OpenAPI documentation of the error answers, by status.
ERROR_RESPONSES = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "bad image or intrinsics, image too small or too elongated, or "
                             "a Host header that does not name this server"),
                       (401, "missing or wrong API key"), (404, "unknown map"),
                       (413, "upload or image too large"), (415, "not a PNG or JPEG"),
                       (422, "missing or malformed field"),
                       (503, "busy: retry after the Retry-After header's seconds"))
}
ERROR_RESPONSES[503]["headers"] = {"Retry-After": {
    "description": "seconds after which a retry finds room", "schema": {"type": "integer"}}}
