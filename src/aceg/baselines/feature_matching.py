"""Feature-matching baseline in the spirit of hloc: sparse keypoints + a learned matcher.

Mapping (:func:`build_feature_map`):
    1. every mapping image is prepared (:func:`aceg.data.images.prepare_image`) at the
       working short side: ``config.short_side``, but never above the smallest mapping
       image's own short side (as ACE-G and ACE do, so all methods see the same pixels;
       the value used is stored in the map and queries are prepared alike); XFeat sparse
       keypoints and 64-d descriptors are extracted (:mod:`aceg.mapping.keypoints`);
    2. each keypoint is lifted to a 3D world point: by the mapping depth when the scene
       has depth, otherwise by triangulation (:func:`aceg.mapping.tracks.triangulate_scene`
       with :meth:`FeatureMatchingConfig.triangulation_config`: LighterGlue matches with
       the nearest mapping cameras, triangulated with the known poses and kept when in
       front of the cameras, reprojecting within ``triangulation_max_error_px`` and seen
       under at least ``min_triangulation_angle_deg``);
    3. the map stores, per image, the keypoints that have a 3D point, their descriptors
       (fp16), their world points and a global descriptor (the normalised mean of the
       image's keypoint descriptors) for retrieval.
Localization (:class:`FeatureMatchingLocalizer`): the query's keypoints are matched with
the ``retrieval_k`` most similar mapping images, the matched 3D points go to RANSAC-PnP
(:func:`aceg.localization.pnp.estimate_pose`).

Map file: safetensors, metadata ``method = "feature-matching"``. Poses camera-to-world,
OpenCV axes, metres (:mod:`aceg.data.camera`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.data.camera import Intrinsics
from aceg.data.images import prepare_image
from aceg.data.scene import Scene
from aceg.errors import AcegError, file_error
from aceg.io import atomic_path
from aceg.json_limits import parse_json
from aceg.localization.pnp import PnPResult, estimate_pose
from aceg.mapping.keypoints import ImageFeatures, SparseFeatures, extract_scene_keypoints
from aceg.mapping.tracks import TriangulationConfig, triangulate_scene

METHOD = "feature-matching"
FORMAT_VERSION = 1


@dataclass
class FeatureMatchingConfig:
    """Settings of the baseline, stored in its map files (flat, as written since the first
    format version). ``short_side``: working short side (px); ``retrieval_k``: mapping
    images a query is matched with; ``ransac_max_error_px``: PnP inlier threshold (tight:
    LighterGlue's matches are at keypoint precision, and the fit that ends RANSAC weighs
    every match within the threshold; docs/experiments.md); the
    others: keypoints, matching and triangulation (:meth:`triangulation_config`)."""

    short_side: int = 480
    max_keypoints: int = 2048
    retrieval_k: int = 5
    match_min_confidence: float = 0.1
    triangulation_neighbours: int = 3
    #: match each image with its nearest cameras of ranks 0, step, 2 step, ... (wider baselines)
    triangulation_neighbour_step: int = 1
    #: "pairs": each matched pair of images triangulates its own point and a keypoint takes
    #: the median of its pairs' points; "tracks": matches are chained into tracks across
    #: images and each track is triangulated from all its views at once (wider baselines).
    triangulation: str = "pairs"
    triangulation_max_error_px: float = 3.0
    min_triangulation_angle_deg: float = 1.0
    ransac_max_error_px: float = 2.0

    def triangulation_config(self) -> TriangulationConfig:
        """The keypoint, matching and triangulation settings of these, for
        :func:`aceg.mapping.tracks.triangulate_scene`."""
        return TriangulationConfig(
            max_keypoints=self.max_keypoints, match_min_confidence=self.match_min_confidence,
            neighbours=self.triangulation_neighbours, neighbour_step=self.triangulation_neighbour_step,
            method=self.triangulation, max_error_px=self.triangulation_max_error_px,
            min_angle_deg=self.min_triangulation_angle_deg)


@dataclass
class MapImage:
    name: str
    keypoints: np.ndarray  # (N, 2) float32, pixels of the prepared mapping image
    descriptors: np.ndarray  # (N, 64) float16, L2-normalised
    points3d: np.ndarray  # (N, 3) float32, world coordinates, metres
    global_descriptor: np.ndarray  # (64,) float32, L2-normalised
    width: int
    height: int


@dataclass
class FeatureMap:
    images: list[MapImage]
    config: FeatureMatchingConfig
    stats: dict = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(sum(len(im.points3d) for im in self.images))

    def save(self, path: str | Path) -> int:
        """Write the map atomically; returns its size in bytes."""
        tensors = {}
        for i, im in enumerate(self.images):
            tensors[f"{i}.keypoints"] = torch.from_numpy(im.keypoints.astype(np.float32))
            tensors[f"{i}.descriptors"] = torch.from_numpy(im.descriptors.astype(np.float16))
            tensors[f"{i}.points3d"] = torch.from_numpy(im.points3d.astype(np.float32))
            tensors[f"{i}.global"] = torch.from_numpy(im.global_descriptor.astype(np.float32))
        meta = {
            "format_version": str(FORMAT_VERSION),
            "method": METHOD,
            "config": json.dumps(asdict(self.config)),
            "images": json.dumps([[im.name, im.width, im.height] for im in self.images]),
            "stats": json.dumps(self.stats),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path).stat().st_size

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        path = Path(path)
        if not path.is_file():
            raise file_error(path, "map file not found")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("method") != METHOD:
                    raise file_error(path, f"not a feature-matching map (method {meta.get('method')!r})")
                config = FeatureMatchingConfig(**parse_json(meta["config"], path))
                images = []
                for i, (name, w, h) in enumerate(parse_json(meta["images"], path)):
                    images.append(MapImage(
                        name,
                        fh.get_tensor(f"{i}.keypoints").numpy(),
                        fh.get_tensor(f"{i}.descriptors").numpy(),
                        fh.get_tensor(f"{i}.points3d").numpy(),
                        fh.get_tensor(f"{i}.global").numpy(),
                        int(w), int(h),
                    ))
        except AcegError:
            raise
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise file_error(path, f"cannot read map ({exc.__class__.__name__}: {exc})") from None
        stats = parse_json(meta.get("stats", "{}"), path)
        return cls(images, config, stats if isinstance(stats, dict) else {})


def global_descriptor(descriptors: np.ndarray) -> np.ndarray:
    """(64,) float32 retrieval descriptor of an image: the L2-normalised mean of its (N, 64)
    keypoint descriptors."""
    g = descriptors.astype(np.float32).mean(0) if len(descriptors) else np.zeros(64, np.float32)
    return g / max(float(np.linalg.norm(g)), 1e-8)


def build_feature_map(
    scene: Scene,
    config: FeatureMatchingConfig | None = None,
    use_depth: bool | None = None,
    features: SparseFeatures | None = None,
    progress: bool = True,
) -> FeatureMap:
    """Build the feature-matching map of ``scene`` (see module docstring).

    ``use_depth`` None means: use depth when every frame has it, triangulate otherwise.
    """
    config = config or FeatureMatchingConfig()
    if not scene.has_poses:
        raise AcegError(f"scene {scene.name!r}: mapping needs a pose for every frame")
    config = replace(config, short_side=scene.working_short_side(config.short_side))
    use_depth = scene.has_depth if use_depth is None else use_depth
    if use_depth and not scene.has_depth:
        raise AcegError(f"scene {scene.name!r}: depth requested but not every frame has depth")
    triangulation = None if use_depth else config.triangulation_config()  # checked before any work
    features = features or SparseFeatures(config.max_keypoints)
    start = time.perf_counter()
    keypoints = extract_scene_keypoints(scene, config.short_side, features, use_depth, progress)
    extracted = keypoints.features
    if use_depth:
        points = [_depth_points(feats, k, depth, frame.cam_to_world) for feats, k, depth, frame
                  in zip(extracted, keypoints.intrinsics, keypoints.depths, scene.frames, strict=True)]
    else:
        points = triangulate_scene(scene, keypoints, features, triangulation, progress)

    images = []
    for frame, feats, world in zip(scene.frames, extracted, points, strict=True):
        keep = np.isfinite(world).all(1)
        images.append(MapImage(
            frame.name, feats.keypoints[keep], feats.descriptors[keep].astype(np.float16),
            world[keep].astype(np.float32), global_descriptor(feats.descriptors),
            feats.width, feats.height,
        ))
    fmap = FeatureMap(images, config, {
        "mapping_seconds": time.perf_counter() - start,
        "lifting": "depth" if use_depth else "triangulation",
        "frames": len(scene),
    })
    fmap.stats["points"] = fmap.num_points
    return fmap


def _depth_points(feats: ImageFeatures, k: Intrinsics, depth: np.ndarray,
                  cam_to_world: np.ndarray) -> np.ndarray:
    """(N, 3) world points of an image's keypoints from its (H, W) depth map in metres
    (nearest pixel), NaN where the depth is not positive."""
    uv = np.round(feats.keypoints).astype(int)
    uv[:, 0] = np.clip(uv[:, 0], 0, depth.shape[1] - 1)
    uv[:, 1] = np.clip(uv[:, 1], 0, depth.shape[0] - 1)
    z = depth[uv[:, 1], uv[:, 0]].astype(np.float64)
    rays = np.c_[(feats.keypoints - [k.cx, k.cy]) / [k.fx, k.fy], np.ones(len(z))]
    cam = rays * z[:, None]
    world = cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    world[z <= 0] = np.nan
    return world


@dataclass
class MatchingResult:
    cam_to_world: np.ndarray | None
    inliers: int
    correspondences: int
    seconds: float
    reason: str = ""


class FeatureMatchingLocalizer:
    """Localizes query images against a :class:`FeatureMap`."""

    def __init__(self, feature_map: FeatureMap | str | Path, features: SparseFeatures | None = None):
        self.map = feature_map if isinstance(feature_map, FeatureMap) else FeatureMap.load(feature_map)
        self.config = self.map.config
        self.features = features or SparseFeatures(self.config.max_keypoints)
        self._globals = np.stack([im.global_descriptor for im in self.map.images])
        self._map_features = [
            ImageFeatures(im.keypoints, im.descriptors.astype(np.float32), im.width, im.height)
            for im in self.map.images
        ]

    def localize(self, image_path: str | Path, intrinsics: Intrinsics,
                 rgb: np.ndarray | None = None) -> MatchingResult:
        start = time.perf_counter()
        prepared = prepare_image(image_path, intrinsics, self.config.short_side, rgb=rgb)
        query = self.features.extract(prepared.rgb)
        similarity = self._globals @ global_descriptor(query.descriptors)
        candidates = np.argsort(-similarity)[: self.config.retrieval_k]
        uv, xyz = [], []
        for c in candidates:
            matches = self.features.match(query, self._map_features[c], self.config.match_min_confidence)
            uv.append(query.keypoints[matches[:, 0]])
            xyz.append(self.map.images[c].points3d[matches[:, 1]])
        uv_all = np.concatenate(uv) if uv else np.zeros((0, 2))
        xyz_all = np.concatenate(xyz) if xyz else np.zeros((0, 3))
        pnp: PnPResult = estimate_pose(uv_all, xyz_all, prepared.intrinsics,
                                       self.config.ransac_max_error_px)
        return MatchingResult(pnp.cam_to_world, pnp.inliers, len(uv_all),
                              time.perf_counter() - start, pnp.reason)
