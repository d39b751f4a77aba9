"""ACE-style training buffer: encoder features of mapping patches, computed once.

Each mapping image is prepared once (:func:`aceg.data.images.prepare_image` at the working
short side, cropped to the encoder stride), then encoded over ``passes`` passes: the first
unchanged, the others augmented (in-plane rotation and scale about the image centre,
brightness / contrast / gamma). Up to ``patches_per_pass`` patches are sampled per pass.

Augmentation is a 2-D affine warp ``A`` of the prepared image, so a patch centred at ``p'``
in the augmented image shows the original pixel ``p = A^-1 p'``. The buffer stores that
original pixel with the original camera (intrinsics, pose), so the reprojection loss is
exact for any principal point and focal lengths (no pose edit needed for the rotation).
Patches whose source pixel falls outside the image (or within half a cell of its edge)
are dropped.

Poses are stored relative to the scene centre (mean mapping camera position).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from aceg.data.camera import backproject
from aceg.data.images import prepare_image
from aceg.data.scene import Scene
from aceg.mapping.checkpoint import kept_chunks
from aceg.mapping.losses import PatchBatch
from aceg.model.encoder import Encoder, patch_centres


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of the passes after the first. Angles in degrees, factors unitless."""

    rotation_deg: float = 15.0
    scale_min: float = 2.0 / 3.0
    scale_max: float = 1.5
    brightness: float = 0.2
    contrast: float = 0.2
    gamma: float = 0.3
    #: Relighting (0 = off): standard deviation of a smooth random log-gain field applied
    #: in linear light (a coarse grid of ``relight_grid`` (rows, cols) Gaussian log gains,
    #: upsampled bicubically), times a global exposure gain drawn log-uniformly from
    #: ``relight_exposure``. It imitates moved, dimmed or re-coloured lights, which change
    #: shading smoothly across the image, where brightness / contrast / gamma change it
    #: uniformly.
    relight: float = 0.0
    relight_grid: tuple[int, int] = (3, 4)
    relight_exposure: tuple[float, float] = (0.5, 1.25)


#: Augmentation used unless told otherwise.
DEFAULT_AUGMENT = AugmentConfig()


@dataclass
class TrainingBuffer:
    """Patches for mapping (M patches, F frames).

    Attributes:
        features: (M, C) float16 encoder features.
        pixels: (M, 2) float32 patch centre in the prepared (unaugmented) image, pixels.
        frame: (M,) int64 index into the per-frame tables.
        K: (F, 3, 3) float32 intrinsics of the prepared images.
        world_to_cam: (F, 4, 4) float32, centred world frame -> camera.
        target: (M, 3) float32 depth-derived coordinates (centred frame) or None.
        target_valid: (M,) bool or None.
        centre: (3,) float64 scene centre (world frame, metres).
        image_size: (width, height) of the prepared images (of the first frame).
        dropped: patches encoded but not kept for lack of a target (``targets_only``).
    """

    features: torch.Tensor
    pixels: torch.Tensor
    frame: torch.Tensor
    K: torch.Tensor
    world_to_cam: torch.Tensor
    centre: np.ndarray
    image_size: tuple[int, int]
    target: torch.Tensor | None = None
    target_valid: torch.Tensor | None = None
    dropped: int = 0

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def batch(self, index: torch.Tensor) -> PatchBatch:
        """The patches at ``index`` (int64 tensor) as a :class:`PatchBatch` (float32)."""
        f = self.frame[index]
        return PatchBatch(
            features=self.features[index].float(),
            pixels=self.pixels[index],
            K=self.K[f],
            world_to_cam=self.world_to_cam[f],
            target=None if self.target is None else self.target[index],
            target_valid=None if self.target_valid is None else self.target_valid[index],
        )

    @property
    def nbytes(self) -> int:
        tensors = [self.features, self.pixels, self.frame, self.target, self.target_valid]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def scene_centre(scene: Scene) -> np.ndarray:
    """Mean camera position of the (posed) frames, (3,) metres, world frame."""
    return scene.camera_centres().mean(axis=0)


def _augment(rgb: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Randomly warped / recoloured image and its 2x3 affine (original -> augmented pixels)."""
    h, w = rgb.shape[:2]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = math.exp(rng.uniform(math.log(cfg.scale_min), math.log(cfg.scale_max)))
    # Rotation/scale about the image centre (pixel centres at integer coordinates).
    A = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
    out = cv2.warpAffine(rgb, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    x = out.astype(np.float32) / 255.0
    if cfg.relight > 0:
        x = relight(x, rng, cfg)
    gamma = math.exp(rng.uniform(-cfg.gamma, cfg.gamma))
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness)
    x = np.clip(x, 0, 1) ** gamma
    x = (x - 0.5) * contrast + 0.5 + brightness
    return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8), A


def relight(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """``x`` (H, W, 3) float32 sRGB in [0, 1] under a random smooth change of lighting.

    Works in linear light (sRGB approximated by gamma 2.2): multiplies by a global exposure
    gain and by ``exp`` of a smooth log-gain field (see :class:`AugmentConfig`), each colour
    channel with a small extra tint (a tenth of the field's strength).
    """
    h, w = x.shape[:2]
    rows, cols = cfg.relight_grid
    coarse = rng.normal(0.0, cfg.relight, (rows, cols)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = cfg.relight_exposure
    log_gain = field + math.log(lo) + rng.uniform(0.0, math.log(hi / lo))
    tint = rng.normal(0.0, cfg.relight / 10.0, 3).astype(np.float32)
    linear = np.clip(x, 0.0, 1.0) ** 2.2
    linear = linear * np.exp(log_gain[..., None] + tint)
    return np.clip(linear, 0.0, 1.0) ** (1.0 / 2.2)


def build_buffer(
    scene: Scene,
    encoder: Encoder,
    short_side: int,
    passes: int = 4,
    patches_per_pass: int | None = None,
    augment: AugmentConfig | None = DEFAULT_AUGMENT,
    use_depth: bool = False,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    centre: np.ndarray | None = None,
    depth_maps: Sequence[np.ndarray] | None = None,
    targets_only: bool = False,
    checkpoint=None,
) -> TrainingBuffer:
    """Encode the posed frames of ``scene`` into a :class:`TrainingBuffer`.

    Args:
        passes: encodings per image; pass 0 is unaugmented, the others use ``augment``
            (``augment=None`` repeats nothing: one pass only).
        patches_per_pass: random subset of patches kept per pass (None = all).
        use_depth: also store depth-derived targets (frames must have depth).
        progress: called with 1 after each image.
        centre: scene centre to use (default: mean camera position).
        depth_maps: one (H, W) depth map (metres, 0 = unknown) per frame in the prepared
            image's pixels, used instead of the frames' depth files (e.g. the sparse maps
            of :func:`aceg.mapping.triangulation.triangulated_depth_maps`); implies targets.
        targets_only: keep only the patches with a target (a model built from them alone
            then holds a place's patches in a fraction of the memory); their count is
            :attr:`TrainingBuffer.dropped`.
        checkpoint: a :class:`aceg.mapping.checkpoint.MappingCheckpoint` that keeps the
            encoded patches chunk by chunk of images and gives back those an earlier run
            left (one plain pass only: with random draws nothing is kept).
    """
    if depth_maps is not None and len(depth_maps) != len(scene.frames):
        raise ValueError(f"{len(depth_maps)} depth maps for {len(scene.frames)} frames")
    with_targets = use_depth or depth_maps is not None
    if targets_only and not with_targets:
        raise ValueError("targets_only needs targets: depth maps or use_depth")
    dropped = 0
    rng = np.random.default_rng(seed)
    centre = scene_centre(scene) if centre is None else np.asarray(centre, dtype=np.float64)
    if augment is None:
        passes = 1
    feats, pix, frames, targets, tvalid = [], [], [], [], []
    Ks, w2cs, sizes = [], [], []
    s = encoder.stride
    # Resuming keeps chunks of whole images; with random draws (augmentation, patch
    # subsets) a chunk read back would leave the random stream elsewhere: not kept.
    keep_chunks = checkpoint is not None and passes == 1 and patches_per_pass is None

    def encode(indices: range) -> dict[str, np.ndarray]:
        """The arrays of a chunk of images, encoded (``passes`` passes each)."""
        c_feats, c_pix, c_frames, c_targets, c_valid, c_K, c_size = [], [], [], [], [], [], []
        c_dropped = 0
        for fi in indices:
            frame = scene.frames[fi]
            prep = prepare_image(frame.image_path, frame.intrinsics, short_side, multiple_of=s,
                                 depth_path=frame.depth_path if use_depth and depth_maps is None else None)
            depth = depth_maps[fi] if depth_maps is not None else prep.depth
            h, w = prep.rgb.shape[:2]
            c_size.append((w, h))
            K = prep.intrinsics.K
            c2w = _centred_cam_to_world(frame.cam_to_world, centre)
            c_K.append(K)
            for p in range(passes):
                if p == 0:
                    img, A = prep.rgb, np.array([[1.0, 0, 0], [0, 1.0, 0]])
                else:
                    img, A = _augment(prep.rgb, rng, augment)
                features, src = _pass_patches(encoder, img, A, (w, h), rng, patches_per_pass)
                if with_targets:
                    t, v = _depth_targets(depth, src, K, c2w)
                    if targets_only:
                        c_dropped += int((~v).sum())
                        features, src, t, v = features[torch.from_numpy(v)], src[v], t[v], v[v]
                    c_targets.append(t)
                    c_valid.append(v)
                c_feats.append(features)
                c_pix.append(src.astype(np.float32))
                c_frames.append(np.full(len(src), fi, dtype=np.int64))
            if progress is not None:
                progress(1)
        chunk = {"features": torch.cat(c_feats).cpu().numpy(), "pixels": np.concatenate(c_pix),
                 "frame": np.concatenate(c_frames), "dropped": np.array([c_dropped]),
                 "K": np.stack(c_K), "size": np.array(c_size)}
        if with_targets:
            chunk.update(target=np.concatenate(c_targets), target_valid=np.concatenate(c_valid))
        return chunk

    for indices, arrays, read_back in kept_chunks(checkpoint if keep_chunks else None, "patches",
                                                  len(scene.frames), "K", encode):
        feats.append(torch.from_numpy(arrays["features"]))
        pix.append(arrays["pixels"])
        frames.append(arrays["frame"])
        if with_targets:
            targets.append(arrays["target"])
            tvalid.append(arrays["target_valid"])
        dropped += int(arrays["dropped"][0])
        Ks += list(arrays["K"])
        sizes += [tuple(int(x) for x in wh) for wh in arrays["size"]]
        for fi in indices:
            w2cs.append(_centred_world_to_cam(scene.frames[fi].cam_to_world, centre))
            if read_back and progress is not None:
                progress(1)
    size = sizes[0] if sizes else (0, 0)
    return TrainingBuffer(
        features=torch.cat(feats) if feats else torch.zeros(0, encoder.feature_dim, dtype=torch.half),
        pixels=torch.from_numpy(np.concatenate(pix) if pix else np.zeros((0, 2), np.float32)),
        frame=torch.from_numpy(np.concatenate(frames) if frames else np.zeros(0, np.int64)),
        K=torch.from_numpy(np.stack(Ks)).float(),
        world_to_cam=torch.from_numpy(np.stack(w2cs)).float(),
        centre=centre,
        image_size=size,
        target=torch.from_numpy(np.concatenate(targets)) if with_targets else None,
        target_valid=torch.from_numpy(np.concatenate(tvalid)) if with_targets else None,
        dropped=dropped,
    )


def buffer_from_cells(scene: Scene, keypoints, depth_maps: Sequence[np.ndarray], stride: int,
                      centre: np.ndarray | None = None) -> TrainingBuffer:
    """The one-plain-pass buffer with ``targets_only`` (:func:`build_buffer`) of keypoints
    that carry their cells' encoder features (``keypoints``: a
    :class:`aceg.mapping.keypoints.SceneKeypoints` extracted with ``keep_cells``), without
    encoding the images again. A cell gets a depth only from keypoints inside it, so the
    cells holding keypoints are all the cells a target can come from; the buffer is the
    same, patch for patch."""
    centre = scene_centre(scene) if centre is None else np.asarray(centre, dtype=np.float64)
    feats, pix, frames, targets, Ks, w2cs = [], [], [], [], [], []
    dropped = 0
    for fi, (frame, image, intrinsics) in enumerate(zip(scene.frames, keypoints.features,
                                                        keypoints.intrinsics, strict=True)):
        if image.cells is None:
            raise ValueError(f"frame {frame.name}: keypoints extracted without their cells")
        rows, cols = image.height // stride, image.width // stride
        grid = np.asarray(depth_maps[fi])[stride // 2:: stride, stride // 2:: stride][:rows, :cols]
        if not np.isin(np.flatnonzero(grid.ravel() > 0), image.cells).all():
            raise ValueError(f"frame {frame.name}: a cell without keypoints has a depth (filled "
                             "depth maps need the encoder's own pass: build_buffer)")
        centres = patch_centres(rows, cols, stride)[image.cells].astype(np.float64)
        K = intrinsics.K
        target, valid = _depth_targets(depth_maps[fi], centres, K,
                                       _centred_cam_to_world(frame.cam_to_world, centre))
        dropped += rows * cols - int(valid.sum())
        feats.append(torch.from_numpy(image.cell_features[valid]))
        pix.append(centres[valid].astype(np.float32))
        frames.append(np.full(int(valid.sum()), fi, dtype=np.int64))
        targets.append(target[valid])
        Ks.append(K)
        w2cs.append(_centred_world_to_cam(frame.cam_to_world, centre))
    first = keypoints.features[0]
    return TrainingBuffer(
        features=torch.cat(feats), pixels=torch.from_numpy(np.concatenate(pix)),
        frame=torch.from_numpy(np.concatenate(frames)),
        K=torch.from_numpy(np.stack(Ks)).float(), world_to_cam=torch.from_numpy(np.stack(w2cs)).float(),
        centre=centre, image_size=(first.width, first.height),
        target=torch.from_numpy(np.concatenate(targets)),
        target_valid=torch.ones(sum(len(t) for t in targets), dtype=torch.bool), dropped=dropped)


def _centred_cam_to_world(cam_to_world: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world pose in the frame centred on ``centre`` (a copy)."""
    c2w = cam_to_world.copy()
    c2w[:3, 3] -= centre
    return c2w


def _centred_world_to_cam(cam_to_world: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 world-to-camera of a camera-to-world pose in the frame centred on ``centre``."""
    return np.linalg.inv(_centred_cam_to_world(cam_to_world, centre))


def _pass_patches(encoder: Encoder, img: np.ndarray, A: np.ndarray, size: tuple[int, int],
                  rng: np.random.Generator, patches_per_pass: int | None
                  ) -> tuple[torch.Tensor, np.ndarray]:
    """Encode one pass: ``img``, the prepared image warped by the 2x3 affine ``A``, of
    prepared size ``size`` (w, h). Returns the kept patches' (P, C) half-precision features
    and (P, 2) float64 source pixels in the prepared image (patch centres mapped back by
    ``A``^-1), dropping those within half a cell of its edge, at most ``patches_per_pass``
    of them (a random subset drawn with ``rng``)."""
    w, h = size
    fmap = encoder.encode(img)[0]  # (C, h', w')
    C, rows, cols = fmap.shape
    centres_aug = encoder.centres(rows, cols).astype(np.float64)  # (P, 2)
    Ainv = cv2.invertAffineTransform(A)
    src = centres_aug @ Ainv[:, :2].T + Ainv[:, 2]
    m = encoder.stride / 2.0
    ok = (src[:, 0] >= m - 0.5) & (src[:, 0] <= w - 0.5 - m) & \
         (src[:, 1] >= m - 0.5) & (src[:, 1] <= h - 0.5 - m)
    idx = np.flatnonzero(ok)
    if patches_per_pass is not None and idx.size > patches_per_pass:
        idx = rng.choice(idx, patches_per_pass, replace=False)
    flat = fmap.reshape(C, -1).T
    return flat[torch.from_numpy(idx)].half(), src[idx]


def _depth_targets(depth: np.ndarray | None, pixels: np.ndarray, K: np.ndarray,
                   c2w_centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates (centred frame) of ``pixels`` from a depth map (nearest pixel)."""
    n = pixels.shape[0]
    if depth is None:
        return np.zeros((n, 3), np.float32), np.zeros(n, bool)
    h, w = depth.shape
    ij = np.round(pixels).astype(int)
    ij[:, 0] = ij[:, 0].clip(0, w - 1)
    ij[:, 1] = ij[:, 1].clip(0, h - 1)
    d = depth[ij[:, 1], ij[:, 0]].astype(np.float64)
    world = backproject(pixels, d, K, c2w_centred)
    return world.astype(np.float32), d > 0
