"""Frames and scenes: what every reader produces and every pipeline consumes.

Conventions (axes, pose direction, pixel centres) are those of :mod:`aceg.data.camera`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from aceg.data.camera import Intrinsics


@dataclass(frozen=True)
class Frame:
    """One posed photograph.

    Attributes:
        name: identifier unique within the scene (usually the image file name).
        image_path: path to the image file (any format OpenCV reads).
        width, height: image size in pixels, as stored on disk.
        intrinsics: pinhole intrinsics for the image as stored on disk (pixels).
        cam_to_world: 4x4 float64 camera-to-world pose, OpenCV camera axes, metres.
            ``None`` for query images whose pose is unknown.
        depth_path: optional depth map aligned with the image: a 16-bit PNG in
            millimetres (ACE / DSAC* convention, 0 = invalid) or a float ``.npy`` in metres.
    """

    name: str
    image_path: Path
    width: int
    height: int
    intrinsics: Intrinsics
    cam_to_world: np.ndarray | None
    depth_path: Path | None = None

    @property
    def has_pose(self) -> bool:
        return self.cam_to_world is not None

    @property
    def camera_centre(self) -> np.ndarray:
        """Camera centre in world coordinates (3,), metres."""
        if self.cam_to_world is None:
            raise ValueError(f"frame {self.name} has no pose")
        return self.cam_to_world[:3, 3]

    def with_pose(self, cam_to_world: np.ndarray | None) -> Frame:
        return replace(self, cam_to_world=cam_to_world)


@dataclass
class Scene:
    """A named, ordered list of frames (sorted by name unless a reader states otherwise)."""

    name: str
    frames: list[Frame]
    root: Path | None = None
    source_format: str = ""
    notes: list[str] = field(default_factory=list)
    #: The other files the reader took poses and intrinsics from (pose, calibration,
    #: camera and model files), so that no output replaces them.
    sources: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    def __getitem__(self, index: int) -> Frame:
        return self.frames[index]

    @property
    def has_depth(self) -> bool:
        return bool(self.frames) and all(f.depth_path is not None for f in self.frames)

    @property
    def has_poses(self) -> bool:
        return bool(self.frames) and all(f.has_pose for f in self.frames)

    def working_short_side(self, requested: int | None) -> int:
        """Short side (px) to prepare this scene's images at: ``requested``, but never above
        the smallest frame's own short side (images are never upsampled); ``None`` means
        that native size."""
        native = min(min(f.width, f.height) for f in self.frames)
        return native if requested is None else min(requested, native)

    def subset(self, indices: Iterable[int], name: str | None = None) -> Scene:
        """A scene with the frames at ``indices`` (in that order)."""
        return Scene(
            name or self.name,
            [self.frames[i] for i in indices],
            self.root,
            self.source_format,
            list(self.notes),
            list(self.sources),
        )

    def split_every(self, k: int, remainder: int) -> tuple[Scene, Scene]:
        """``(rest, picked)`` where picked holds the frames with index % k == remainder."""
        picked = [i for i in range(len(self)) if i % k == remainder]
        rest = [i for i in range(len(self)) if i % k != remainder]
        return self.subset(rest, f"{self.name}-map"), self.subset(picked, f"{self.name}-query")

    def camera_centres(self) -> np.ndarray:
        """(N, 3) camera centres in world coordinates, metres."""
        return np.stack([f.camera_centre for f in self.frames]) if self.frames else np.zeros((0, 3))

    def by_name(self) -> dict[str, Frame]:
        return {f.name: f for f in self.frames}

    def files(self) -> list[Path]:
        """Every file this scene was read from: the frames' images and depth maps and the
        reader's :attr:`sources` (what an output must never replace)."""
        paths = [f.image_path for f in self.frames]
        paths += [f.depth_path for f in self.frames if f.depth_path is not None]
        return paths + list(self.sources)


def names_of(frames: Sequence[Frame]) -> list[str]:
    return [f.name for f in frames]
