"""Mapping with the anchor model (the default; :mod:`aceg.model.anchors`).

The map code is built, not optimised: the mapping images are encoded once (one plain
pass), every patch cell whose 3-D point is known becomes an anchor (its embedded encoder
descriptor as the key, the point, relative to the scene centre, as the value), at most
:func:`aceg.mapping.anchor_budget.anchor_budget` of them (a random subset beyond that).
The points come
from keypoints triangulated between the posed mapping images
(:mod:`aceg.mapping.triangulation`), or from the frames' depth maps with ``use_depth``.

With ``anchor_points="keypoints"`` the anchors are the triangulated keypoints themselves
instead of patch cells: every mapping keypoint whose track has a 3-D point becomes an
anchor, keyed by its own XFeat descriptor (sampled at the sub-pixel keypoint, the same
64-d space as the cell features) and holding the track's point, so the keypoints of one
track share one point. The localizer then reads such a map from the query's keypoints
(:mod:`aceg.localization.localizer`): both ends of a correspondence are at keypoint
precision instead of the 8-pixel cell grid. No dense encoding is needed for it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from aceg.data.images import DEFAULT_SHORT_SIDE
from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.mapping.anchor_budget import anchor_budget, check_budget_settings
from aceg.mapping.buffer import TrainingBuffer, scene_centre
from aceg.mapping.checkpoint import MappingCheckpoint, fingerprint, partial_folder
from aceg.mapping.common import (
    BufferPlan,
    MapResult,
    check_mapping_scene,
    check_triangulation_keypoints,
    encode_mapping_images,
    map_data,
    regressor_encoder,
    write_map,
)
from aceg.mapping.triangulation import (
    TriangulatedKeypoints,
    default_triangulation,
    triangulate_mapping_keypoints,
)
from aceg.model.anchors import ANCHOR_POINTS, AnchorRegressor
from aceg.model.map_file import MapData, resolve_regressor

#: An anchor map with fewer anchors than this gets a warning: a query image's RANSAC
#: needs dozens of right correspondences among them.
FEW_ANCHORS = 100


@dataclass(frozen=True)
class AnchorMapConfig:
    """Settings of the anchor model's mapping.

    Attributes:
        use_depth: the anchors' points from the frames' depth maps (every frame needs one)
            instead of triangulation.
        triangulation_keypoints: keypoints per image of the triangulation (None:
            :func:`aceg.mapping.triangulation.default_keypoints` of the scene's size).
        max_anchors: anchors the map keeps at most; each costs the map file its int8 key
            and three float32 coordinates. None: ``map_size_mb``'s, or the default that
            follows the place (:func:`aceg.mapping.anchor_budget.anchor_budget`).
        map_size_mb: the budget as the map file's size in megabytes (not with
            ``max_anchors``).
        short_side: working short side of the images in pixels, never above the smallest
            image's own short side; None: the images' own size.
        anchor_points: what an anchor is (:data:`aceg.model.anchors.ANCHOR_POINTS`):
            "cells", a mapping patch cell with a 3-D point (its centre's ray at the cell's
            depth), or "keypoints", a triangulated mapping keypoint (its track's point);
            see the module docstring. "keypoints" needs triangulation (not ``use_depth``).
        resume: keep the finished work (keypoints, matches, encoded patches) beside the
            map while mapping and read back what an interrupted run with the same inputs
            left there (:mod:`aceg.mapping.checkpoint`); removed once the map is written.
    """

    use_depth: bool = False
    triangulation_keypoints: int | None = None
    max_anchors: int | None = None
    map_size_mb: float | None = None
    short_side: int | None = DEFAULT_SHORT_SIDE
    anchor_points: str = ANCHOR_POINTS[0]
    resume: bool = False

    def __post_init__(self) -> None:
        check_budget_settings(self.max_anchors, self.map_size_mb)
        if self.anchor_points not in ANCHOR_POINTS:
            raise AcegError(f"anchor_points (--anchor-points) must be one of {', '.join(ANCHOR_POINTS)}, "
                            f"got {self.anchor_points!r}")
        if self.anchor_points == "keypoints" and self.use_depth:
            raise AcegError("--anchor-points keypoints does not combine with --depth: keypoint "
                            "anchors are triangulated keypoints (leave out --depth, or use "
                            "--anchor-points cells)")
        check_triangulation_keypoints(self.triangulation_keypoints, not self.use_depth)


def map_anchors(scene: Scene, out_path: str | Path, config: AnchorMapConfig | None = None,
                regressor=None, seed: int = 0, progress: bool = True,
                device: torch.device | str = "cpu") -> MapResult:
    """Build the anchor map of ``scene`` (posed frames) and write it to ``out_path``.

    ``config``: None for the defaults. ``regressor``: None (the shipped anchor model), a
    checkpoint path, or a model. ``seed`` draws the anchor subset when there are more
    candidates than the budget.
    """
    config = config or AnchorMapConfig()
    check_mapping_scene(scene, config.use_depth)
    short_side = scene.working_short_side(config.short_side)
    device = torch.device(device)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    reg = resolve_regressor(regressor, "anchors")
    enc = regressor_encoder(reg, device)
    budget = anchor_budget(len(scene), reg.model.config.feature_dim, reg.model.config.max_anchors,
                           config.max_anchors, config.map_size_mb)
    config = replace(config, max_anchors=budget, map_size_mb=None)
    checkpoint = None
    if config.resume:
        checkpoint = MappingCheckpoint(partial_folder(out_path), fingerprint(
            scene, short_side=short_side, encoder=enc.name, use_depth=config.use_depth,
            anchor_points=config.anchor_points,
            triangulation=default_triangulation(len(scene), config.triangulation_keypoints)))
    if config.anchor_points == "keypoints":
        if enc.name != "xfeat":  # keys come from XFeat's sparse descriptors
            raise AcegError(f"--anchor-points keypoints needs an anchor regressor on the xfeat "
                            f"encoder; this one reads {enc.name!r} features")
        result = _map_keypoint_anchors(scene, out_path, config, reg, enc, short_side, gen,
                                       progress, device, t0, checkpoint)
        return _finish(result, checkpoint)
    plan = BufferPlan(passes=1, patches_per_pass=None, augment=None, use_depth=config.use_depth,
                      triangulate=not config.use_depth, keypoints=config.triangulation_keypoints,
                      targets_only=True)
    buffer, geometry = encode_mapping_images(
        scene, enc, short_side, plan, seed, progress,
        no_points_fix="the anchor model needs 3-D points: give depth maps (--depth) or map "
                      "with --model transformer", checkpoint=checkpoint)
    t_buffer = time.perf_counter() - t0

    code, stats = anchor_code(reg.model.to(device), buffer, gen, config.max_anchors)
    if geometry is not None:
        stats["triangulated"] = geometry
    t_build = time.perf_counter() - t0 - t_buffer

    patches = len(buffer) + buffer.dropped
    data = map_data(scene, buffer, enc, short_side, "aceg",
                    {**stats, "patches": patches, "seconds": round(t_buffer + t_build, 1)})
    data.code = code.detach().cpu()
    data.regressor = reg.identity
    # The budget this map was built with (cost only: not part of the identity).
    data.regressor_config = replace(reg.model.config, max_anchors=stats["max_anchors"])
    result = MapResult(Path(out_path), "anchors", enc.name, None, len(scene), patches, 0, 0,
                       {"buffer": t_buffer, "train": t_build}, stats, reg.identity, reg.source)
    return _finish(write_map(out_path, data, result, t0), checkpoint)


def _finish(result: MapResult, checkpoint: MappingCheckpoint | None) -> MapResult:
    """``result`` of a written map, with the number of chunks an earlier run left that were
    read back (``resumed_chunks``); the checkpoint folder is removed."""
    if checkpoint is not None:
        result.resumed_chunks = checkpoint.reused
        checkpoint.remove()
    return result


def anchor_code(model: AnchorRegressor, buffer: TrainingBuffer, gen: torch.Generator,
                max_anchors: int | None = None) -> tuple[torch.Tensor, dict]:
    """The anchor map code of a one-pass buffer with depth targets: every patch with a
    target and a non-zero feature becomes an anchor, at most ``max_anchors`` (default
    ``model.config.max_anchors``; a random subset drawn with ``gen``). Returns the code
    (N, C + 3) and statistics ("anchors": N, "max_anchors": the budget, "cells": % of the
    encoded patches, those the buffer dropped for lack of a target included, that had a
    3-D point)."""
    budget = model.config.max_anchors if max_anchors is None else max_anchors
    if budget < 1:
        raise AcegError(f"max_anchors must be positive, got {budget}")
    # A patch whose feature is all zeros has no direction to key it by: not an anchor.
    valid = torch.nonzero(buffer.target_valid).squeeze(1)
    valid = valid[(buffer.features[valid] != 0).any(dim=1)]
    if valid.numel() == 0:
        raise AcegError("no mapping patch has a 3-D point (no depth, nothing triangulated): "
                        "cannot build an anchor map")
    if valid.numel() < min(FEW_ANCHORS, budget):
        warnings.warn(f"only {valid.numel()} mapping patches have a 3-D point, so the map has "
                      "as few anchors: localization will mostly fail. The mapping images may "
                      "lack parallax (cameras too close together) or texture; give more images, "
                      "depth maps (--depth) or more keypoints (--keypoints)", stacklevel=2)
    if valid.numel() > budget:
        valid = valid[torch.randperm(valid.numel(), generator=gen)[:budget]].sort().values
    code = model.make_code(buffer.features[valid], buffer.target[valid])
    stats = {"anchors": int(valid.numel()), "max_anchors": budget,
             "cells": round(100.0 * float(buffer.target_valid.sum())
                            / (buffer.target_valid.numel() + buffer.dropped), 1)}
    return code, stats


def _map_keypoint_anchors(scene: Scene, out_path: str | Path, config: AnchorMapConfig, reg, enc,
                          short_side: int, gen: torch.Generator, progress: bool,
                          device: torch.device, t0: float,
                          checkpoint: MappingCheckpoint | None) -> MapResult:
    """:func:`map_anchors` with ``anchor_points="keypoints"`` (module docstring): the
    triangulation's keypoints are the anchors; the map records ``anchor_points``."""
    triangulation = default_triangulation(len(scene), config.triangulation_keypoints)
    tri = triangulate_mapping_keypoints(scene, short_side, triangulation, progress, checkpoint)
    t_points = time.perf_counter() - t0
    centre = scene_centre(scene)
    code, stats = keypoint_anchor_code(reg.model.to(device), tri, centre, gen, config.max_anchors)
    stats["triangulated"] = {"points": stats["keypoints"], "keypoints": tri.max_keypoints,
                             "seconds": round(tri.seconds, 1)}
    t_build = time.perf_counter() - t0 - t_points
    first = tri.keypoints.features[0]
    stats.update(patches=stats["keypoints"], seconds=round(t_points + t_build, 1))
    data = MapData(method="aceg", encoder=enc.name, stride=enc.stride, short_side=short_side,
                   scene_centre=centre, scene=scene.name, frames=len(scene),
                   image_size=(first.width, first.height), stats=stats, anchor_points="keypoints")
    data.code = code.detach().cpu()
    data.regressor = reg.identity
    data.regressor_config = replace(reg.model.config, max_anchors=stats["max_anchors"])
    result = MapResult(Path(out_path), "anchors", enc.name, None, len(scene), stats["keypoints"], 0, 0,
                       {"buffer": t_points, "train": t_build}, stats, reg.identity, reg.source)
    return write_map(out_path, data, result, t0)


def keypoint_anchor_code(model: AnchorRegressor, tri: TriangulatedKeypoints, centre: np.ndarray,
                         gen: torch.Generator, max_anchors: int | None = None) -> tuple[torch.Tensor, dict]:
    """The anchor map code of triangulated mapping keypoints: every keypoint with a 3-D
    point and a non-zero descriptor is an anchor, its point minus ``centre`` (3,) (world
    frame, metres), at most ``max_anchors`` (default ``model.config.max_anchors``; a random
    subset drawn with ``gen``, in frame then keypoint order). Returns the code (N, C + 3)
    and statistics ("anchors": N, "max_anchors": the budget, "keypoints": keypoints with a
    point, "tracks": distinct points among them, "anchor_points": "keypoints")."""
    budget = model.config.max_anchors if max_anchors is None else max_anchors
    desc = np.concatenate([f.descriptors for f in tri.keypoints.features]).astype(np.float32)
    world = np.concatenate(tri.world)
    valid = np.flatnonzero(np.isfinite(world).all(1) & (desc != 0).any(1))
    if len(valid) == 0:
        raise AcegError("no mapping keypoint has a 3-D point (nothing triangulated): cannot "
                        "build a keypoint anchor map; give more images with parallax and texture")
    if len(valid) < min(FEW_ANCHORS, budget):
        warnings.warn(f"only {len(valid)} mapping keypoints have a 3-D point, so the map has as "
                      "few anchors: localization will mostly fail. The mapping images may lack "
                      "parallax or texture; give more images or more keypoints (--keypoints)",
                      stacklevel=2)
    # rounded to float32 as a point is stored: the keypoints of one track keep one point
    points = (world[valid] - centre).astype(np.float32)
    stats = {"keypoints": int(len(valid)), "tracks": int(len(np.unique(points, axis=0)))}
    pick = np.arange(len(valid))
    if len(valid) > budget:
        pick = torch.randperm(len(valid), generator=gen)[:budget].sort().values.numpy()
    code = model.make_code(torch.from_numpy(desc[valid][pick]), torch.from_numpy(points[pick]))
    stats.update(anchors=int(len(pick)), max_anchors=budget, anchor_points="keypoints")
    return code, stats
