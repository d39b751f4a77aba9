"""Pre-computed encoder features of a pre-training scene, stored compactly.

Pre-training never re-runs the frozen encoder: each scene's splits are encoded once and
kept as one safetensors file (``<cache>/<scene>.safetensors``) holding, per split,

* ``<split>.features``  (F, h, w, C) float16: encoder features, one per patch;
* ``<split>.targets``   (F, h, w, 3) float32: depth-derived scene coordinate of the patch
  centre in the **centred** world frame (world minus the scene centre), metres; NaN where
  the depth is missing or not smooth across the patch centre;
* ``<split>.world_to_cam`` (F, 4, 4) float32: centred world frame -> camera (OpenCV axes);
* ``<split>.K`` (F, 3, 3) float32: intrinsics of the prepared image (pixels);
* ``scene_centre`` (3,) float64: mean mapping camera position, world frame.

With triangulated pool depth (``aceg pretrain --pool-depth triangulated``) a second file,
``<cache>/<scene>.triangulated.safetensors``, holds ``mapping.triangulated`` (F, h, w, 3)
float32: the same kind of targets as ``mapping.targets``, but from the sparse depth that
:func:`aceg.mapping.triangulation.triangulated_depth_maps` triangulates between the mapping
images with their poses (RGB only, as ``aceg map --triangulate`` sees a scene); NaN where no
keypoint triangulated in the patch cell.

Patch centres follow :func:`aceg.model.encoder.patch_centres` (pixel centres at integer
coordinates, :mod:`aceg.data.camera`).

A pre-training scene is a folder with a ``mapping/`` split and one or more ``query_*/``
splits (the layout ``aceg synth`` writes, ACE/DSAC* format with depth). A plain scene
folder without splits is split by index: every 4th frame becomes the ``query`` split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from aceg.data.camera import backproject, invert_pose
from aceg.data.images import prepare_image
from aceg.data.readers import read_scene
from aceg.data.scene import Scene
from aceg.errors import AcegError, file_error
from aceg.io import atomic_path
from aceg.mapping.losses import PatchBatch
from aceg.model.encoder import Encoder, patch_centres

STORE_VERSION = 1
MAPPING_SPLIT = "mapping"

#: A patch's depth target is kept only if its 2x2 central depths agree within this ratio.
DEPTH_SMOOTHNESS = 1.05


def scene_splits(root: Path) -> dict[str, Scene]:
    """The splits of a pre-training scene folder (see module docstring)."""
    root = Path(root)
    if (root / MAPPING_SPLIT).is_dir():
        splits = {MAPPING_SPLIT: read_scene(root / MAPPING_SPLIT)}
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and sub.name.startswith("query"):
                splits[sub.name] = read_scene(sub)
        if len(splits) == 1:
            raise AcegError(f"{root}: has a mapping/ split but no query_*/ split")
        return splits
    scene = read_scene(root)
    mapping, query = scene.split_every(4, 3)
    return {MAPPING_SPLIT: mapping, "query": query}


def find_scene_roots(paths: list[str | Path]) -> list[Path]:
    """Pre-training scene folders named by ``paths``: a folder with ``mapping/`` is a
    scene; otherwise every sub-folder with ``mapping/`` is; otherwise the folder itself."""
    roots: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise AcegError(f"{p}: not a folder")
        if (p / MAPPING_SPLIT).is_dir():
            roots.append(p)
            continue
        subs = sorted(s for s in p.iterdir() if (s / MAPPING_SPLIT).is_dir())
        roots.extend(subs if subs else [p])
    if not roots:
        raise AcegError("no pre-training scenes found")
    return roots


@dataclass
class SplitFeatures:
    """One split's tensors (see module docstring); ``features`` stays float16."""

    features: torch.Tensor
    targets: torch.Tensor
    world_to_cam: torch.Tensor
    K: torch.Tensor
    triangulated: torch.Tensor | None = None  # mapping split only, when loaded (module docstring)

    @property
    def frames(self) -> int:
        return self.features.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        return self.features.shape[1], self.features.shape[2]


@dataclass
class SceneFeatures:
    name: str
    scene_centre: np.ndarray
    splits: dict[str, SplitFeatures]
    stride: int

    @property
    def query_splits(self) -> list[str]:
        return [s for s in self.splits if s != MAPPING_SPLIT]


def _depth_targets(depth: np.ndarray, rows: int, cols: int, stride: int, K: np.ndarray,
                   cam_to_world_centred: np.ndarray) -> np.ndarray:
    """(rows, cols, 3) centred-world coordinates of patch centres from a depth map (metres)."""
    lo, hi = stride // 2 - 1, stride // 2 + 1
    blocks = depth[: rows * stride, : cols * stride].reshape(rows, stride, cols, stride)
    centre = blocks[:, lo:hi, :, lo:hi].reshape(rows, cols, -1)
    dmin, dmax = centre.min(-1), centre.max(-1)
    z = centre.mean(-1)
    ok = (dmin > 0) & (dmax <= dmin * DEPTH_SMOOTHNESS)
    uv = patch_centres(rows, cols, stride).reshape(-1, 2)
    world = backproject(uv, z.reshape(-1), K, cam_to_world_centred).reshape(rows, cols, 3)
    world[~ok] = np.nan
    return world.astype(np.float32)


def encode_split(scene: Scene, encoder: Encoder, centre: np.ndarray, short_side: int | None,
                 progress: bool = False) -> SplitFeatures:
    feats, targets, w2c, Ks = [], [], [], []
    for frame in tqdm(scene.frames, desc=f"encoding {scene.name}", disable=not progress, leave=False):
        if frame.cam_to_world is None:
            raise AcegError(f"{frame.image_path}: pre-training needs a pose for every frame")
        prepared = prepare_image(frame.image_path, frame.intrinsics, short_side,
                                 multiple_of=encoder.stride, depth_path=frame.depth_path)
        f = encoder.encode(prepared.rgb)[0].permute(1, 2, 0)  # (h, w, C)
        rows, cols = f.shape[:2]
        cam_to_world_centred = frame.cam_to_world.copy()
        cam_to_world_centred[:3, 3] -= centre
        K = prepared.intrinsics.K
        if prepared.depth is not None:
            t = _depth_targets(prepared.depth, rows, cols, encoder.stride, K, cam_to_world_centred)
        else:
            t = np.full((rows, cols, 3), np.nan, np.float32)
        feats.append(f.half())
        targets.append(torch.from_numpy(t))
        w2c.append(torch.from_numpy(invert_pose(cam_to_world_centred)).float())
        Ks.append(torch.from_numpy(K).float())
    return SplitFeatures(torch.stack(feats), torch.stack(targets), torch.stack(w2c), torch.stack(Ks))


def build_scene_features(root: Path, encoder: Encoder, short_side: int | None = None,
                         progress: bool = False) -> SceneFeatures:
    splits = scene_splits(root)
    centre = splits[MAPPING_SPLIT].camera_centres().mean(0)
    encoded = {name: encode_split(s, encoder, centre, short_side, progress) for name, s in splits.items()}
    return SceneFeatures(Path(root).name, centre, encoded, encoder.stride)


def save_scene_features(path: Path, sf: SceneFeatures, encoder_name: str) -> None:
    tensors = {"scene_centre": torch.from_numpy(np.asarray(sf.scene_centre, np.float64))}
    for name, s in sf.splits.items():
        tensors[f"{name}.features"] = s.features.contiguous()
        tensors[f"{name}.targets"] = s.targets.contiguous()
        tensors[f"{name}.world_to_cam"] = s.world_to_cam.contiguous()
        tensors[f"{name}.K"] = s.K.contiguous()
    meta = {"version": STORE_VERSION, "encoder": encoder_name, "scene": sf.name,
            "stride": sf.stride, "splits": list(sf.splits)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"aceg_features": json.dumps(meta)})


def load_scene_features(path: Path, encoder_name: str) -> SceneFeatures:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["aceg_features"])
            if meta.get("version") != STORE_VERSION:
                raise file_error(path, f"feature store version {meta.get('version')} not supported")
            if meta["encoder"] != encoder_name:
                raise file_error(path, f"features of encoder {meta['encoder']!r}, need {encoder_name!r}")
            splits = {
                name: SplitFeatures(*(fh.get_tensor(f"{name}.{k}") for k in ("features", "targets", "world_to_cam", "K")))
                for name in meta["splits"]
            }
            centre = fh.get_tensor("scene_centre").numpy()
    except AcegError:
        raise
    except Exception as exc:
        raise file_error(path, f"cannot read feature store ({exc.__class__.__name__}: {exc})") from None
    return SceneFeatures(meta["scene"], centre, splits, int(meta["stride"]))


def _cache_stem(root: Path) -> str:
    """File name stem of a scene's cache files: its folder and the parent's."""
    return "_".join(Path(root).resolve().parts[-2:]).replace("/", "_")


def cached_scene_features(root: Path, cache_dir: Path, encoder: Encoder,
                          short_side: int | None = None) -> SceneFeatures:
    """Features of the scene at ``root``, read from ``cache_dir`` or computed and stored."""
    path = Path(cache_dir) / f"{_cache_stem(root)}.safetensors"
    if path.is_file():
        return load_scene_features(path, encoder.name)
    sf = build_scene_features(Path(root), encoder, short_side)
    save_scene_features(path, sf, encoder.name)
    return sf


def triangulated_targets(root: Path, sf: SceneFeatures, short_side: int | None = None,
                         progress: bool = False) -> torch.Tensor:
    """(F, h, w, 3) centred-world targets of the mapping split from triangulated depth.

    The mapping images of the scene at ``root`` are matched and triangulated with their poses
    (:func:`aceg.mapping.triangulation.triangulated_depth_maps`, as ``aceg map
    --triangulate``), at the working size the features were encoded at; a patch cell with
    triangulated keypoints gets their median depth along its own centre ray, others NaN.
    """
    from aceg.mapping.triangulation import triangulated_depth_maps  # matcher: only when asked

    scene = scene_splits(Path(root))[MAPPING_SPLIT]
    split = sf.splits[MAPPING_SPLIT]
    if len(scene.frames) != split.frames:
        raise AcegError(f"{root}: {len(scene.frames)} mapping images but {split.frames} frames "
                        "of features: delete the feature cache and run again")
    maps, _ = triangulated_depth_maps(scene, scene.working_short_side(short_side), sf.stride,
                                      progress=progress)
    rows, cols = split.grid
    out = []
    for index, (frame, depth) in enumerate(zip(scene.frames, maps, strict=True)):
        if depth.shape[0] < rows * sf.stride or depth.shape[1] < cols * sf.stride:
            raise AcegError(f"{frame.image_path}: image size differs from the other mapping "
                            "images; triangulated pool depth needs one size per scene")
        c2w = frame.cam_to_world.copy()
        c2w[:3, 3] -= sf.scene_centre
        K = split.K[index].double().numpy()
        out.append(torch.from_numpy(_depth_targets(depth, rows, cols, sf.stride, K, c2w)))
    return torch.stack(out)


def cached_triangulated_targets(root: Path, cache_dir: Path, sf: SceneFeatures, encoder_name: str,
                                short_side: int | None = None) -> None:
    """Attach triangulated mapping targets to ``sf`` (``splits["mapping"].triangulated``),
    read from ``cache_dir`` or computed (:func:`triangulated_targets`) and stored."""
    from aceg.mapping.triangulation import TRIANGULATION_VERSION

    path = Path(cache_dir) / f"{_cache_stem(root)}.triangulated.safetensors"
    split = sf.splits[MAPPING_SPLIT]
    meta: dict = {}
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["aceg_triangulated"])
                targets = fh.get_tensor(f"{MAPPING_SPLIT}.triangulated")
        except Exception as exc:
            raise file_error(path, f"cannot read triangulated targets ({exc.__class__.__name__}: "
                             f"{exc})") from None
        if meta.get("encoder") != encoder_name or tuple(targets.shape[:3]) != tuple(split.features.shape[:3]):
            raise file_error(path, "triangulated targets do not match the scene's features: delete "
                             "the file and run again")
    if meta.get("triangulation") != TRIANGULATION_VERSION:  # none yet, or an older triangulation's
        targets = triangulated_targets(root, sf, short_side)
        meta = {"version": STORE_VERSION, "encoder": encoder_name, "scene": sf.name,
                "triangulation": TRIANGULATION_VERSION}
        with atomic_path(path) as tmp:
            save_file({f"{MAPPING_SPLIT}.triangulated": targets.contiguous()}, str(tmp),
                      metadata={"aceg_triangulated": json.dumps(meta)})
    split.triangulated = targets


def random_cells(split: SplitFeatures, count: int, generator: torch.Generator, stride: int,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` random patch cells of ``split``, uniform over frames and positions: frame,
    row and column indices, each (count,) int64, and the patch centres (count, 2) float32
    (u, v) in pixels of the prepared image (:func:`aceg.model.encoder.patch_centres`)."""
    frames, rows, cols = split.features.shape[:3]
    f = torch.randint(frames, (count,), generator=generator)
    i = torch.randint(rows, (count,), generator=generator)
    j = torch.randint(cols, (count,), generator=generator)
    offset = (stride - 1) / 2.0
    pixels = torch.stack([j * stride + offset, i * stride + offset], 1).float()
    return f, i, j, pixels


def sample_patches(split: SplitFeatures, count: int, generator: torch.Generator,
                   stride: int, triangulated: bool = False) -> PatchBatch:
    """``count`` random patches (uniform over frames and positions) as a :class:`PatchBatch`.

    ``target``/``target_valid`` carry the depth-derived coordinates (centred frame); with
    ``triangulated``, those of the split's triangulated depth instead (mapping split only,
    :func:`cached_triangulated_targets` must have attached them).
    """
    if triangulated and split.triangulated is None:
        raise ValueError("this split has no triangulated targets")
    f, i, j, pixels = random_cells(split, count, generator, stride)
    target = (split.triangulated if triangulated else split.targets)[f, i, j]
    valid = torch.isfinite(target).all(1)
    return PatchBatch(
        features=split.features[f, i, j].float(),
        pixels=pixels,
        K=split.K[f],
        world_to_cam=split.world_to_cam[f],
        target=torch.nan_to_num(target),
        target_valid=valid,
    )
