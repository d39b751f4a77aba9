"""Localization: one image + intrinsics + a map -> camera pose.

Steps (:meth:`Localizer.localize`):

1. prepare the image exactly as mapping did (:func:`aceg.data.images.prepare_image` at the
   map's working short side, cropped to the encoder stride);
2. encode it, predict one scene coordinate per patch (regressor + map code for ACE-G,
   the map's MLP head for ACE), add the scene centre;
3. ACE-G: drop the most uncertain patches (keep the ``keep_quantile`` fraction with the
   smallest predicted uncertainty);
4. RANSAC-PnP with poselib (``estimate_absolute_pose``, pinhole camera "PINHOLE" with
   ``fx, fy, cx, cy`` of the prepared image; threshold ``ransac_px`` pixels), followed by
   poselib's non-linear refinement on the inliers;
5. the pose is *localized* when RANSAC found one that passes the sanity check of
   :class:`aceg.localization.poses.PoseCheck` (enough inliers, spread over the image: a
   pose from noise or from an image of another place gathers its few inliers in a
   corner), and *confident* when it has at least
   :data:`~aceg.localization.poses.CONFIDENT_INLIERS` inliers (a small share of the 4,800
   patches of a 480x640 query; ACE's practice of judging a pose by its inlier count) and
   its inliers determine the camera centre to
   :data:`~aceg.localization.poses.CONFIDENT_CENTRE_STD_M` (one standard deviation of the
   fit, :mod:`aceg.localization.uncertainty`; the result reports it with the rotation's,
   so a client can apply its own bound).

Before step 1 the image's size is checked against :class:`aceg.data.images.ImageLimits`
(read from the file header for a path, before decoding): the work of step 2 grows with
the size after scaling to the map's short side, so thin strips and tiny images are
refused (:class:`aceg.data.images.ImageSizeError`, an :class:`AcegError`).

An anchor map of keypoints (``MapData.anchor_points`` "keypoints",
:mod:`aceg.mapping.anchor_map`) is read from the query's XFeat keypoints instead of its
patch cells: step 2 extracts up to :data:`QUERY_KEYPOINTS` keypoints and their
descriptors (:class:`aceg.mapping.keypoints.SparseFeatures`) from the prepared image, each
reads its most similar anchor's point with the margin taken to another point (the anchors
of one track share theirs: :meth:`aceg.model.anchors.AnchorRegressor.forward`
``distinct_points``), and RANSAC-PnP takes the keypoints' sub-pixel positions. A guided
second stage (:mod:`aceg.localization.guided`, ``guided``) then re-reads each keypoint
among the anchors its first pose projects near it and solves the pose again; its
confident flag needs the first stage's inlier count (its correspondences were found
without the pose) and the second stage's centre deviation (the pose it returns).

Fewer than :data:`~aceg.localization.poses.MIN_CORRESPONDENCES` usable correspondences, or an image that cannot be
read, give a "not localized" :class:`~aceg.localization.poses.LocalizationResult` with a reason (never an exception
from :meth:`Localizer.localize_frame`; :meth:`Localizer.localize` raises only for an image
array of the wrong shape).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from aceg.data.camera import Intrinsics
from aceg.data.images import (
    ImageLimits,
    check_image_shape,
    declared_size,
    load_image,
    prepare_image,
)
from aceg.data.scene import Frame
from aceg.errors import AcegError
from aceg.localization.guided import DEFAULT_GUIDED, GuidedConfig, guided_correspondences, point_ids
from aceg.localization.poses import (
    CONFIDENT_CENTRE_STD_M,
    CONFIDENT_INLIERS,
    DEFAULT_POSE_CHECK,
    MIN_CORRESPONDENCES,
    RANSAC_PX,
    LocalizationResult,
    PoseCheck,
    confident_mask,
    solve_pnp,
)
from aceg.localization.regions import CANDIDATES, PlaceRegions
from aceg.model.anchors import AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import (
    check_regressor_matches,
    load_map,
    regressor_for_map,
    resolve_regressor,
)
from aceg.model.onnx_network import RUNTIMES

#: A large map's pose is not confident when a pose of another voted region, at least this
#: far away (metres), has at least 1 / this ratio of its inliers
#: (:meth:`Localizer.region_pose`).
AMBIGUOUS_DISTANCE_M = 0.5
AMBIGUOUS_INLIER_RATIO = 1.5
#: Fraction of patches kept by the uncertainty filter (ACE-G maps).
KEEP_QUANTILE = 0.75
#: Keypoints extracted per query image for an anchor map of keypoints.
QUERY_KEYPOINTS = 2048
#: What runs the query encoder's network (:data:`aceg.model.onnx_network.RUNTIMES`): "auto"
#: is ONNX Runtime on the CPU when installed, PyTorch otherwise; the same features up to
#: float rounding.
ENCODER_RUNTIME = "auto"
#: Patch cells of a query read from an anchor map of cells at most (the anchor model;
#: other models read every cell): those the encoder
#: rates likeliest to hold a repeatable keypoint (:meth:`aceg.model.encoder.Encoder.encode_scored`;
#: an evenly spaced subset when it rates none). The anchor search and RANSAC cost grow with
#: them; cells XFeat rates low are mostly wrong correspondences that RANSAC has to reject
#: (the rated subset localizes more far views than the evenly spaced one the regressor's
#: ``max_queries`` keeps; docs/experiments.md). None: every cell (up to ``max_queries``).
QUERY_PATCHES: int | None = 2048
#: Named trade-offs of a query's cost against its accuracy, for anchor maps of cells:
#: (patch cells read, anchor lists each cell searches; None: the regressor's
#: ``AnchorConfig.lists_probed``). "fast" halves both, for a live camera
#: (BENCHMARKS.md, query stages, has what each costs and gives).
SPEEDS = {"accurate": (QUERY_PATCHES, None), "fast": (QUERY_PATCHES // 2, 8)}
#: The speed used when none is named.
DEFAULT_SPEED = "accurate"


def speed_settings(speed: str) -> dict:
    """:class:`Localizer` keyword arguments of a named speed (:data:`SPEEDS`)."""
    if speed not in SPEEDS:
        raise AcegError(f"unknown speed {speed!r}; known: {', '.join(SPEEDS)}")
    patches, probed = SPEEDS[speed]
    return {"query_patches": patches, "lists_probed": probed}


DEFAULT_IMAGE_LIMITS = ImageLimits()


class Localizer:
    """Localize images against one map file.

    Args:
        map_path: map written by :func:`aceg.mapping.mapper.map_scene`.
        regressor: maps of the anchor model or the transformer only: the regressor used for
            mapping, a path or a model (a different one is an :class:`AcegError`); None finds
            it among the shipped weights by the identity the map records.
        keep_quantile, ransac_px, confident_inliers, confident_centre_std_m: see module
            constants.
        image_limits: query image shapes accepted (:class:`aceg.data.images.ImageLimits`).
        pose_check: when a pose counts as localized (:class:`PoseCheck`).
        query_patches: patch cells of a query read at most (:data:`QUERY_PATCHES`).
        regions: with a cell map of the anchor model large enough to hold regions, also try
            the read-out within the voted regions (:mod:`aceg.localization.regions`).
        encoder_runtime: what runs the encoder's network (:data:`ENCODER_RUNTIME`).
        lists_probed: anchor lists each query cell searches (None: the regressor's own,
            ``AnchorConfig.lists_probed``); anchor maps of cells only. See :data:`SPEEDS`.
    """

    def __init__(self, map_path: str | Path, regressor=None, device: torch.device | str = "cpu",
                 keep_quantile: float = KEEP_QUANTILE, ransac_px: float = RANSAC_PX,
                 confident_inliers: int = CONFIDENT_INLIERS, ransac_iterations: int = 10000,
                 guided: GuidedConfig | None = DEFAULT_GUIDED,
                 confident_centre_std_m: float = CONFIDENT_CENTRE_STD_M,
                 image_limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
                 pose_check: PoseCheck = DEFAULT_POSE_CHECK,
                 query_patches: int | None = QUERY_PATCHES, regions: bool = True,
                 encoder_runtime: str = ENCODER_RUNTIME, lists_probed: int | None = None) -> None:
        self.map_path = Path(map_path)
        if query_patches is not None and query_patches < MIN_CORRESPONDENCES:
            raise AcegError(f"query_patches must be at least {MIN_CORRESPONDENCES}, got {query_patches}")
        #: Patch cells read per query at most (:data:`QUERY_PATCHES`).
        self.query_patches = query_patches
        self.image_limits = image_limits
        self.pose_check = pose_check
        #: The guided second stage of keypoint maps (None: first stage only).
        self.guided = guided
        self.data = load_map(map_path)
        self.device = torch.device(device)
        if encoder_runtime not in RUNTIMES:
            raise AcegError(f"encoder runtime must be one of {', '.join(RUNTIMES)}, got "
                            f"{encoder_runtime!r}")
        if lists_probed is not None and lists_probed < 1:
            raise AcegError(f"lists_probed must be at least 1, got {lists_probed}")
        self.encoder_runtime = encoder_runtime
        try:
            self.encoder = get_encoder(self.data.encoder, self.device, encoder_runtime)
        except RuntimeError as exc:  # "onnxruntime" insisted on, and it cannot run
            raise AcegError(str(exc)) from None
        if self.encoder.stride != self.data.stride:
            raise AcegError(f"{map_path}: map stride {self.data.stride} does not match encoder "
                            f"{self.data.encoder!r} (stride {self.encoder.stride})")
        self.keep_quantile = keep_quantile
        self.ransac_px = ransac_px
        self.confident_inliers = confident_inliers
        self.confident_centre_std_m = confident_centre_std_m
        self.ransac_iterations = ransac_iterations
        self.centre = torch.as_tensor(self.data.scene_centre, dtype=torch.float64)
        #: Whether the map's anchors are keypoints, read from the query's keypoints.
        self.keypoints = self.data.anchor_points == "keypoints"
        self._sparse = None  # the keypoint extractor, made on first use (sparse_features)
        #: The anchors' regions of a large cell map (None: the plain read-out only).
        self.regions: PlaceRegions | None = None
        #: Whether queries read at most ``query_patches`` rated cells (anchor maps of cells).
        self._reads_rated_cells = False
        if self.data.method == "aceg":
            reg = (regressor_for_map(self.data, map_path) if regressor is None
                   else resolve_regressor(regressor, None, self.data.encoder))
            check_regressor_matches(self.data, reg, map_path)
            self.regressor = reg
            model = reg.model.to(self.device)
            if lists_probed is not None and isinstance(model, AnchorRegressor) and not self.keypoints:
                model = copy.copy(model)  # the caller's regressor keeps its setting
                model.config = replace(model.config, lists_probed=lists_probed)
            code = self.data.code.to(self.device)
            if self.keypoints:
                self._predict = lambda f: model(f, code, distinct_points=True)
                self._embed = model.embed
                width = model.config.feature_dim
                self._anchor_keys = code[:, :width].float().cpu().numpy()
                self._anchor_world = code[:, width:].double().cpu().numpy() + self.data.scene_centre
                self._anchor_ids = point_ids(self._anchor_world)
                self.sparse_features()  # made here, once: a service shares the localizer
            else:
                self._predict = lambda f: model(f, code)
                self._reads_rated_cells = isinstance(model, AnchorRegressor)
                if regions and isinstance(model, AnchorRegressor):
                    width = model.config.feature_dim
                    self.regions = PlaceRegions.of_points(code[:, width:].float().cpu().numpy())
                    self._model, self._code = model, code
                    self._anchor_world = code[:, width:].double().cpu().numpy() + self.data.scene_centre
        else:
            head = self.data.build_head().to(self.device)
            self._predict = head

    def predict(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(C, h, w) features -> (h*w, 3) world coordinates (float64), (h*w,) log-uncertainty."""
        C = features.shape[0]
        return self.predict_flat(features.reshape(C, -1).T)

    def predict_flat(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(P, C) features (patch cells or keypoint descriptors) -> (P, 3) world
        coordinates (float64), (P,) log-uncertainty."""
        with torch.inference_mode():
            coords, log_unc = self._predict(features.to(self.device))
        world = coords.double().cpu() + self.centre
        return world.numpy(), None if log_unc is None else log_unc.float().cpu().numpy()

    def sparse_features(self):
        """The query keypoint extractor (:class:`aceg.mapping.keypoints.SparseFeatures`,
        :data:`QUERY_KEYPOINTS` per image), made once per localizer."""
        if self._sparse is None:
            from aceg.mapping.keypoints import SparseFeatures

            try:
                self._sparse = SparseFeatures(QUERY_KEYPOINTS, self.device, runtime=self.encoder_runtime)
            except RuntimeError as exc:  # "onnxruntime" insisted on, and it cannot run
                raise AcegError(str(exc)) from None
        return self._sparse

    def correspondences(self, rgb: np.ndarray, timings: dict):
        """Pixels (M, 2) float64 of the prepared image ``rgb``, their world points (M, 3),
        log-uncertainties (M,) or None, the keypoints' descriptors (M, C) or None, and
        with :attr:`regions` each patch's best anchors ((M, K) similarities and indices,
        else None): the patch cells' centres, or the keypoints for an anchor map of
        keypoints. Adds "encode" and "regress" seconds to ``timings``."""
        t = time.perf_counter()
        descriptors, candidates = None, None
        if self.keypoints:
            sparse = self.sparse_features().extract(rgb)
            timings["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            descriptors = sparse.descriptors
            world, log_unc = self.predict_flat(torch.from_numpy(descriptors))
            pixels = sparse.keypoints.astype(np.float64)
        else:
            limit = self.query_patches
            cells = (rgb.shape[0] // self.encoder.stride) * (rgb.shape[1] // self.encoder.stride)
            selects = self._reads_rated_cells and limit is not None and cells > limit
            feats, scores = (self.encoder.encode_scored(rgb) if selects
                             else (self.encoder.encode(rgb), None))
            timings["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            C, rows, cols = feats.shape[1:]
            flat = feats[0].reshape(C, -1).T
            pixels = self.encoder.centres(rows, cols).astype(np.float64)
            if selects:
                if scores is not None:
                    pick = torch.topk(scores[0].reshape(-1), limit).indices.sort().values.cpu()
                else:
                    pick = torch.linspace(0, flat.shape[0] - 1, limit).round().long()
                flat, pixels = flat[pick.to(flat.device)], pixels[pick.numpy()]
            if self.regions is not None:
                world, log_unc, pixels, candidates = self._read_with_candidates(flat, pixels)
            else:
                world, log_unc = self.predict_flat(flat)
        timings["regress"] = time.perf_counter() - t
        return pixels, world, log_unc, descriptors, candidates

    def _read_with_candidates(self, features: torch.Tensor, pixels: np.ndarray):
        """:meth:`predict_flat` of (P, C) ``features`` at (P, 2) ``pixels`` that also keeps
        each patch's :data:`aceg.localization.regions.CANDIDATES` best anchors: world
        (P', 3), log-uncertainty (P',), pixels (P', 2) and ((P', K) similarities, (P', K)
        indices), P' at most the regressor's ``max_queries`` (an evenly spaced subset, as
        it reads)."""
        limit = self._model.config.max_queries
        if features.shape[0] > limit:
            pick = torch.linspace(0, features.shape[0] - 1, limit).round().long()
            features, pixels = features[pick], pixels[pick.numpy()]
        with torch.inference_mode():
            sims, index = self._model.search(features.to(self.device), self._code, CANDIDATES)
            coords, log_unc = self._model.read_out(sims, index, self._code)
        world = coords.double().cpu().numpy() + self.data.scene_centre
        return (world, log_unc.float().cpu().numpy(), pixels,
                (sims.float().cpu().numpy(), index.cpu().numpy()))

    def region_pose(self, pixels: np.ndarray, candidates, intrinsics: Intrinsics, width: int,
                    height: int, first: LocalizationResult, name: str) -> LocalizationResult:
        """The pose with the most inliers among ``first`` and one RANSAC per voted region
        (:mod:`aceg.localization.regions`), each patch reading its best anchor in that
        region (the ``keep_quantile`` most similar of those). It is not flagged confident
        when another of these poses, elsewhere (:data:`AMBIGUOUS_DISTANCE_M` away), has
        nearly as many inliers (:data:`AMBIGUOUS_INLIER_RATIO`): two look-alike rooms
        explain the image about equally well."""
        sims, index = candidates
        poses = [first] if first.cam_to_world is not None else []
        for region in self.regions.voted(sims, index):
            anchor, similarity = self.regions.best_in(region, sims, index)
            found = anchor >= 0
            if found.sum() < MIN_CORRESPONDENCES:
                continue
            keep = found & (similarity >= np.quantile(similarity[found], 1.0 - self.keep_quantile))
            result = self.solve_pnp(pixels[keep], self._anchor_world[anchor[keep]], intrinsics,
                                    width, height, name)
            if result.cam_to_world is not None:
                result.stage = "region"
                poses.append(result)
        if not poses:
            return first
        best = max(poses, key=lambda r: r.inliers)  # the first of equals: the plain read-out
        rivals = [r.inliers for r in poses
                  if np.linalg.norm(r.cam_to_world[:3, 3] - best.cam_to_world[:3, 3]) > AMBIGUOUS_DISTANCE_M]
        if rivals and best.inliers < AMBIGUOUS_INLIER_RATIO * max(rivals):
            best.confident = False
        return best

    def guided_pose(self, descriptors: np.ndarray, pixels: np.ndarray, intrinsics: Intrinsics,
                    width: int, height: int, first: LocalizationResult, name: str) -> LocalizationResult:
        """The guided second stage (:mod:`aceg.localization.guided`) from the first pose of a
        keypoint map's query; the first result when it finds no pose."""
        with torch.inference_mode():
            keys = self._embed(torch.from_numpy(descriptors).to(self.device)).float().cpu().numpy()
        px, world = guided_correspondences(keys, pixels, self._anchor_keys, self._anchor_world,
                                           self._anchor_ids, intrinsics, first.cam_to_world,
                                           self.guided)
        second = solve_pnp(px, world, intrinsics, width, height, name, self.guided.ransac_px,
                           self.confident_inliers, self.ransac_iterations, self.pose_check,
                           self.confident_centre_std_m)
        if second.cam_to_world is None:
            return first
        second.confident = (first.inliers >= self.confident_inliers
                            and second.centre_std_m <= self.confident_centre_std_m)
        second.stage = "guided"
        return second

    def localize(self, image, intrinsics: Intrinsics, name: str = "array") -> LocalizationResult:
        """Pose of an image (path, or RGB uint8 array (H, W, 3)) with intrinsics of that image."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if intrinsics is None:
            raise AcegError(f"{image if isinstance(image, str | Path) else name}: intrinsics "
                            "missing (fx, fy, cx, cy are needed to localize)")
        source = name
        if isinstance(image, str | Path):
            name, source = (Path(image).name if name == "array" else name), image
            if Path(image).is_file() and (declared := declared_size(image)) is not None:
                self.check_image_size(*declared, name=str(image))
            arr = load_image(image)
        else:
            arr = np.asarray(image)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise AcegError(f"{name}: expected an RGB uint8 image (H, W, 3), got "
                                f"{arr.dtype} {arr.shape}")
        self.check_image_size(arr.shape[1], arr.shape[0], name=str(source))
        prep = prepare_image(source, intrinsics, self.data.short_side, self.encoder.stride,
                             rgb=arr)
        timings["prepare"] = time.perf_counter() - t0
        pixels, world, log_unc, descriptors, candidates = self.correspondences(prep.rgb, timings)
        t = time.perf_counter()
        keep = confident_mask(world, log_unc, self.keep_quantile)
        timings["regress"] += time.perf_counter() - t
        width, height = prep.rgb.shape[1], prep.rgb.shape[0]
        result = self.solve_pnp(pixels[keep], world[keep], prep.intrinsics, width, height, name)
        timings["ransac"] = result.timings["ransac"]
        if candidates is not None:
            t = time.perf_counter()
            result = self.region_pose(pixels, candidates, prep.intrinsics, width, height, result, name)
            timings["regions"] = time.perf_counter() - t
        if descriptors is not None and self.guided is not None and result.cam_to_world is not None:
            t = time.perf_counter()
            result = self.guided_pose(descriptors, pixels, prep.intrinsics, width, height, result, name)
            timings["guided"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        result.timings = timings
        return result

    def check_image_size(self, width: int, height: int, name: str = "image") -> None:
        """:class:`aceg.data.images.ImageSizeError` when a ``width`` x ``height`` query is
        outside :attr:`image_limits` at this map's short side."""
        check_image_shape(width, height, self.data.short_side, self.image_limits, name)

    def solve_pnp(self, pixels: np.ndarray, world: np.ndarray, intrinsics: Intrinsics,
                  width: int, height: int, name: str = "") -> LocalizationResult:
        """RANSAC-PnP + refinement on (M, 2) pixels and (M, 3) world points (see module)."""
        return solve_pnp(pixels, world, intrinsics, width, height, name, self.ransac_px,
                         self.confident_inliers, self.ransac_iterations, self.pose_check,
                         self.confident_centre_std_m)

    def localize_frame(self, frame: Frame) -> LocalizationResult:
        """Localize a scene frame; unreadable images or unusable intrinsics give a "not
        localized" result naming the problem."""
        try:
            if frame.intrinsics is None:
                raise AcegError(f"{frame.image_path}: intrinsics missing")
            frame.intrinsics.check(str(frame.image_path), frame.width, frame.height)
            return self.localize(frame.image_path, frame.intrinsics, frame.name)
        except AcegError as exc:
            return LocalizationResult(frame.name, None, reason=str(exc), bad_input=True)
