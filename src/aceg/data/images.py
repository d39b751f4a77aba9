"""Image and depth loading, and the one image-preparation function used by mapping and
localization.

Preparation = (1) undistort, if the frame has distortion coefficients, keeping the same
pinhole matrix K; (2) resize so that the short side equals the working size, with the
intrinsics rescaled by the exact per-axis factors using the pixel-centre convention of
:mod:`aceg.data.camera`; (3) optionally crop the bottom/right edge so that width and
height are multiples of the encoder stride (cropping there leaves cx, cy unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aceg.data.camera import Intrinsics
from aceg.data.image_headers import jpeg_size, png_size
from aceg.errors import AcegError, file_error

#: Default working short side in pixels (as ACE).
DEFAULT_SHORT_SIDE = 480

#: Largest image accepted by the loader, in pixels (guards against decompression bombs).
MAX_IMAGE_PIXELS = 100_000_000


def load_image(path: str | Path, grey: bool = False) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3), or grey uint8 (H, W) when ``grey``.

    Raises :class:`AcegError` naming the file when it is missing, unreadable or corrupt.
    Grey, RGBA and 16-bit images are converted.
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise file_error(path, "image file is empty")
    declared = declared_size(path, data[:24].tobytes())
    if declared is not None and declared[0] * declared[1] > MAX_IMAGE_PIXELS:
        raise file_error(path, f"image too large ({declared[0]}x{declared[1]} pixels declared)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        raise file_error(path, "cannot decode image (corrupt or unsupported format)")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise file_error(path, f"image too large ({image.shape[1]}x{image.shape[0]})")
    try:
        rgb = decoded_to_rgb(image)
    except ValueError as exc:
        raise file_error(path, str(exc)) from None
    if grey:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return rgb


def declared_size(path: str | Path, head: bytes | None = None) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG file's header declares, read without decoding (``head``:
    the file's first 24 bytes, if already read); None for other formats or no header."""
    path = Path(path)
    if head is None:
        with path.open("rb") as handle:
            head = handle.read(24)
    return png_size(head) or jpeg_size(path)


#: Samples converted at a time from 16 to 8 bit (bounds the uint32 scratch to 16 MiB).
_CONVERT_CHUNK = 1 << 22


def to_8bit(image: np.ndarray) -> np.ndarray:
    """uint16 array -> uint8 of the same shape, ``round(x / 257)`` exactly, in integer
    arithmetic (``(x + 128) // 257``; 257 is odd, so there are no ties), a band of rows at a
    time: the only full-size allocation is the uint8 result."""
    out = np.empty(image.shape, np.uint8)
    row = max(1, int(np.prod(image.shape[1:], dtype=np.int64)))
    step = max(1, _CONVERT_CHUNK // row)
    for start in range(0, image.shape[0], step):
        band = image[start:start + step].astype(np.uint32)
        band += 128
        band //= 257
        out[start:start + step] = band
    return out


def decoded_to_rgb(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) from what ``cv2.imdecode(..., IMREAD_UNCHANGED)`` returns: grey,
    BGR or BGRA; 8 bit, 16 bit (scaled by 1/257 in integers, :func:`to_8bit`) or float
    (stretched to 0-255). ValueError for any other channel count. Shared by the file loader
    and the service."""
    if image.dtype == np.uint16:
        image = to_8bit(image)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise ValueError(f"unsupported number of channels ({image.shape[2]})")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, decoding it (so corrupt files are caught)."""
    image = load_image(path)
    return image.shape[1], image.shape[0]


def load_depth(path: str | Path) -> np.ndarray:
    """Depth in metres (H, W) float32, 0 where invalid.

    Accepts 16-bit PNG in millimetres (ACE / DSAC* convention) or ``.npy`` in metres.
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "depth file not found")
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise file_error(path, f"cannot read depth array ({exc})") from None
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise file_error(path, "cannot decode depth image")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise file_error(path, "depth PNG must be single-channel 16-bit (millimetres)")
        depth = raw.astype(np.float32) / 1000.0
    if depth.ndim != 2 or depth.size == 0:
        raise file_error(path, f"depth map must be a non-empty 2-D array, got shape {depth.shape}")
    depth[~np.isfinite(depth)] = 0.0
    depth[depth < 0] = 0.0
    return depth


#: Largest relative difference between a depth map's aspect ratio and its image's: a
#: depth map at another resolution of the same view is resized, another shape is refused.
DEPTH_ASPECT_TOLERANCE = 0.02


def check_depth_aspect(depth_path: str | Path | None, depth_shape: tuple[int, ...],
                       image_shape: tuple[int, ...]) -> None:
    """:class:`AcegError` naming the depth file when its (H, W) is not the image's (H, W)
    scaled: resizing it would stretch the depth over the wrong pixels."""
    (dh, dw), (ih, iw) = depth_shape[:2], image_shape[:2]
    if abs((dw / dh) / (iw / ih) - 1.0) > DEPTH_ASPECT_TOLERANCE:
        raise file_error(depth_path, f"depth map is {dw}x{dh}, its image {iw}x{ih}: not the same "
                                     "aspect ratio, so the depth cannot be aligned with the image")


@dataclass
class PreparedImage:
    """An image ready for the encoder.

    Attributes:
        rgb: (H, W, 3) uint8, undistorted and resized.
        intrinsics: pinhole intrinsics of ``rgb`` (no distortion left).
        scale: (sx, sy) factors applied to the undistorted original.
        depth: (H, W) float32 metres aligned with ``rgb`` if requested, else None.
    """

    rgb: np.ndarray
    intrinsics: Intrinsics
    scale: tuple[float, float]
    depth: np.ndarray | None = None


def working_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling so the short side equals ``short_side``."""
    s = short_side / min(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


@dataclass(frozen=True)
class ImageLimits:
    """Shapes of query image a localizer accepts, checked from the file header before
    decoding: the work of one query grows with its size after scaling to the map's short
    side, so a thin strip of a few bytes would otherwise become a huge image.

    Attributes:
        min_side: smallest accepted width or height, pixels (smaller images carry too
            little to localize).
        max_aspect: largest long side / short side ratio.
        max_working_pixels: largest width x height after scaling to the working short side
            (:func:`working_size`), the size the encoder sees.
    """

    min_side: int = 32
    max_aspect: float = 4.0
    max_working_pixels: int = 2_000_000


class ImageSizeError(AcegError):
    """An image outside :class:`ImageLimits`; ``code`` is "image_too_small",
    "image_aspect_ratio" or "image_too_large"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_image_shape(width: int, height: int, short_side: int | None, limits: ImageLimits,
                      name: str = "image") -> None:
    """:class:`ImageSizeError` naming ``name``, its size and the limit it breaks, for a
    ``width`` x ``height`` image to be scaled to ``short_side`` (None: not known yet, the
    scaled size is not checked)."""
    short, long = min(width, height), max(width, height)
    if short < limits.min_side:
        raise ImageSizeError("image_too_small", f"{name}: image is {width}x{height}; both "
                             f"sides must be at least {limits.min_side} pixels")
    if long > limits.max_aspect * short:
        raise ImageSizeError("image_aspect_ratio", f"{name}: image is {width}x{height}, an "
                             f"aspect ratio of {long / short:.1f}:1; the limit is "
                             f"{limits.max_aspect:g}:1")
    if short_side is not None:
        w, h = working_size(width, height, short_side)
        if w * h > limits.max_working_pixels:
            raise ImageSizeError("image_too_large", f"{name}: image is {width}x{height}, "
                                 f"{w}x{h} = {w * h} pixels at the map's short side of "
                                 f"{short_side}; the limit is {limits.max_working_pixels}")


def prepare_image(
    image_path: str | Path,
    intrinsics: Intrinsics,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    multiple_of: int = 1,
    depth_path: str | Path | None = None,
    rgb: np.ndarray | None = None,
) -> PreparedImage:
    """Load, undistort, resize and crop an image (see module docstring).

    Args:
        image_path: image file (used for reading and in error messages).
        intrinsics: intrinsics of the image as stored on disk.
        short_side: working short side in pixels; ``None`` keeps the size.
        multiple_of: crop the bottom/right so both sides are multiples of this.
        depth_path: optional depth map, resized with nearest neighbour (never blended).
        rgb: the already decoded image, to skip reading ``image_path``.
    """
    if rgb is None:
        rgb = load_image(image_path)
    height, width = rgb.shape[:2]
    K = intrinsics.K
    depth = load_depth(depth_path) if depth_path is not None else None
    if depth is not None and depth.shape != (height, width):
        check_depth_aspect(depth_path, depth.shape, (height, width))
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    if intrinsics.has_distortion:
        dist = np.array(intrinsics.dist, dtype=np.float64)
        map1, map2 = cv2.initUndistortRectifyMap(K, dist, None, K, (width, height), cv2.CV_32FC1)
        rgb = cv2.remap(rgb, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if depth is not None:
            depth = cv2.remap(depth, map1, map2, cv2.INTER_NEAREST, borderValue=0)
    pinhole = intrinsics.without_distortion()
    sx = sy = 1.0
    if short_side is not None and min(width, height) != short_side:
        new_w, new_h = working_size(width, height, short_side)
        sx, sy = new_w / width, new_h / height
        interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
        if depth is not None:
            depth = cv2.resize(depth, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        pinhole = pinhole.scaled(sx, sy)
    if multiple_of > 1:
        h, w = rgb.shape[:2]
        h_c, w_c = h - h % multiple_of, w - w % multiple_of
        if h_c == 0 or w_c == 0:
            raise file_error(image_path, f"image too small ({w}x{h}) for stride {multiple_of}")
        rgb = rgb[:h_c, :w_c]
        if depth is not None:
            depth = depth[:h_c, :w_c]
    return PreparedImage(np.ascontiguousarray(rgb), pinhole, (sx, sy), depth)


def check_image_readable(path: str | Path) -> AcegError | None:
    """None if the image decodes, else the error that loading it would raise."""
    try:
        load_image(path)
    except AcegError as exc:
        return exc
    return None
