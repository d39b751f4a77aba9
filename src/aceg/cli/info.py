"""``aceg info``: summary and sanity checks of a scene."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from tqdm import tqdm

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.data.images import load_image
from aceg.data.scene import Scene
from aceg.errors import AcegError

HELP = "summarise a scene: frames, image sizes, intrinsics, camera layout, warnings"
DESCRIPTION = """\
Summarise a posed image set and check it.

Reads SCENE (format detected, or --format), then prints the number of frames, the image
sizes, an intrinsics summary, the bounding box of the camera centres and their spacing
(median distance to the nearest other camera), and warnings for suspicious data:
duplicate poses, cameras all at one point, images that are missing or cannot be decoded,
image sizes that differ from what the calibration states, and images of different sizes
sharing one focal length (resized without their calibration). Problems that make the
scene unusable (non-orthonormal rotations, NaNs, count mismatches, unparsable files) stop
the reader with an error.
"""


def add_arguments(parser) -> None:
    parser.add_argument("scene", metavar="SCENE", help="scene folder or file")
    add_format_argument(parser)
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="do not decode every image (faster; only checks they exist)",
    )


def scene_warnings(scene: Scene, decode: bool = True) -> list[str]:
    """Human-readable warnings about suspicious data in ``scene``."""
    warnings = []
    frames = tqdm(scene.frames, desc="checking images", disable=not decode, leave=False)
    for frame in frames:
        if not frame.image_path.is_file():
            warnings.append(f"{frame.image_path}: image missing")
            continue
        if decode:
            try:
                image = load_image(frame.image_path)
            except AcegError as exc:
                warnings.append(str(exc))
                continue
            if image.shape[:2] != (frame.height, frame.width):
                warnings.append(
                    f"{frame.image_path}: image is {image.shape[1]}x{image.shape[0]}, "
                    f"calibration says {frame.width}x{frame.height}"
                )
        if frame.depth_path is not None and not frame.depth_path.is_file():
            warnings.append(f"{frame.depth_path}: depth missing")
    posed = [f for f in scene.frames if f.cam_to_world is not None]
    if len(posed) < len(scene.frames):
        warnings.append(f"{len(scene.frames) - len(posed)} frame(s) have no pose")
    keys = Counter(tuple(np.round(f.cam_to_world[:3, :4], 6).ravel()) for f in posed)
    duplicates = sum(c - 1 for c in keys.values() if c > 1)
    if duplicates:
        warnings.append(f"{duplicates} frame(s) duplicate another frame's pose exactly")
    if len(posed) > 1 and np.ptp(np.stack([f.camera_centre for f in posed]), axis=0).max() < 1e-6:
        warnings.append("all cameras sit at one point: nothing can be triangulated between "
                        "the images (aceg map needs parallax, or depth maps with --depth)")
    # A resized image keeps its aspect ratio; a stale calibration keeps its focal length.
    focal_sizes: dict[tuple[float, float, float], set] = {}
    for f in scene.frames:
        key = (f.intrinsics.fx, f.intrinsics.fy, round(f.width / f.height, 2))
        focal_sizes.setdefault(key, set()).add((f.width, f.height))
    for (fx, fy, _), sizes in focal_sizes.items():
        if len(sizes) > 1:
            listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
            warnings.append(f"images of different sizes ({listed}) share one focal length "
                            f"({fx:g}, {fy:g} px): was an image resized without its calibration?")
    return warnings


def _range(values) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return (
        f"{lo:.2f}" if math.isclose(lo, hi, rel_tol=1e-9, abs_tol=1e-9) else f"{lo:.2f} .. {hi:.2f}"
    )


def describe(scene: Scene) -> list[str]:
    frames = scene.frames
    lines = [
        f"scene      {scene.name} ({scene.source_format} format, {scene.root})",
        f"frames     {len(frames)}",
    ]
    sizes = Counter((f.width, f.height) for f in frames)
    lines.append("image size " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common()))
    fx = [f.intrinsics.fx for f in frames]
    fy = [f.intrinsics.fy for f in frames]
    cx = [f.intrinsics.cx for f in frames]
    cy = [f.intrinsics.cy for f in frames]
    lines.append(f"fx         {_range(fx)} px    fy {_range(fy)} px")
    lines.append(f"cx         {_range(cx)} px    cy {_range(cy)} px")
    distorted = sum(f.intrinsics.has_distortion for f in frames)
    lines.append(f"distortion {distorted} of {len(frames)} frames")
    lines.append(f"depth      {'yes' if scene.has_depth else 'no'}")
    posed = [f for f in frames if f.cam_to_world is not None]
    if posed:
        centres = np.stack([f.camera_centre for f in posed])
        lo, hi = centres.min(0), centres.max(0)
        lines.append(
            f"cameras    x {lo[0]:.3f} .. {hi[0]:.3f}  y {lo[1]:.3f} .. {hi[1]:.3f}  z {lo[2]:.3f} .. {hi[2]:.3f} m"
        )
        if len(posed) > 1:
            d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
            np.fill_diagonal(d, np.inf)
            nearest = d.min(1)
            lines.append(
                f"spacing    nearest other camera: median {np.median(nearest):.3f} m, "
                f"max {nearest.max():.3f} m"
            )
    return lines


def run(args) -> int:
    scene = read_scene_arg(args.scene, args.format)
    print("\n".join(describe(scene)))
    warnings = scene_warnings(scene, decode=not args.no_decode)
    if warnings:
        print(f"warnings   {len(warnings)}")
        for w in warnings:
            print(f"  warning: {w}")
    else:
        print("warnings   none")
    return 0
