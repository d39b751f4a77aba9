"""Mapping: posed images -> map file.

``method="aceg"``: the scene-agnostic regressor is frozen; only the map code is optimised,
with the Laplace NLL of the reprojection error (:mod:`aceg.mapping.losses`). The code
starts anchored on the buffer's own patches (``code_init``). With the anchor model
(:mod:`aceg.model.anchors`) the code is built, not optimised: one anchor per patch cell of
the mapping images (one plain pass) whose 3-D point the poses determine, by
triangulation (always, unless ``use_depth`` gives depth maps), at most
``AnchorConfig.max_anchors`` of them (a random subset); presets do not apply.
``method="ace"``: the ACE baseline, a scene-specific :class:`AceHead` trained from scratch
with ACE's tanh-clamped reprojection loss and its shrinking threshold.

Both: features computed once into a :class:`TrainingBuffer` (augmented passes), then
``iterations`` steps of AdamW with a one-cycle schedule on random batches of patches;
invalid predictions are pulled toward a constant-depth target; ``use_depth`` adds depth
supervision from the frames' depth maps, ``triangulate`` from keypoints triangulated
between the posed mapping images (:mod:`aceg.mapping.triangulation`; RGB only).
Coordinates are relative to the scene centre (mean mapping camera position), which is
stored in the map.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aceg.data.images import DEFAULT_SHORT_SIDE
from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.mapping.buffer import DEFAULT_AUGMENT, AugmentConfig, TrainingBuffer, build_buffer
from aceg.mapping.losses import DEFAULT_LOSS, LossConfig, batch_loss
from aceg.mapping.schedule import one_cycle_adamw
from aceg.mapping.triangulation import TRIANGULATION_CONFIG, triangulated_depth_maps
from aceg.model.ace_head import AceHead, AceHeadConfig
from aceg.model.anchors import AnchorRegressor
from aceg.model.encoder import DEFAULT_ENCODER, get_encoder
from aceg.model.map_file import MapData, resolve_regressor, save_map
from aceg.model.regressor import CODE_INITS, CODE_LR_SCALE

METHODS = ("aceg", "ace")

#: An anchor map with fewer anchors than this gets a warning: a query image's RANSAC
#: needs dozens of right correspondences among them.
FEW_ANCHORS = 100


@dataclass(frozen=True)
class MappingPreset:
    """Settings of one mapping run.

    Attributes:
        passes: encodings per image (first plain, the rest augmented).
        patches_per_pass: patches kept per image and pass (None = all).
        iterations: optimisation steps.
        batch_size: patches per step.
        lr_max: peak learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
    """

    passes: int
    patches_per_pass: int | None
    iterations: int
    batch_size: int
    lr_max: float
    weight_decay: float = 0.0


#: Presets per method. ACE-G's default fits 200 images at short side 480 in < 3 min on
#: 2 CPU cores (benchmarks/core_speed.py); ACE trains a whole MLP and needs more steps.
#: ACE-G's ``lr_max`` is that of "keys_values" codes; other code forms scale it by
#: :data:`aceg.model.regressor.CODE_LR_SCALE` unless ``lr_max`` is given explicitly.
PRESETS: dict[str, dict[str, MappingPreset]] = {
    "aceg": {
        "fast": MappingPreset(2, 1024, 300, 4096, 1e-1),
        "default": MappingPreset(3, 1536, 600, 4096, 1e-1),
        "thorough": MappingPreset(6, None, 2000, 5120, 1e-1),
    },
    "ace": {
        "fast": MappingPreset(2, 2048, 800, 4096, 5e-3),
        "default": MappingPreset(4, 2048, 2000, 5000, 5e-3),
        "thorough": MappingPreset(8, None, 5000, 5120, 5e-3),
    },
}


@dataclass
class MapResult:
    """Outcome of :func:`map_scene`.

    Attributes:
        path: the map file written.
        method, encoder, preset: what was used.
        frames: mapping images; patches: buffer size; iterations: steps run.
        file_size: bytes of the map file.
        seconds: wall time per phase ("buffer", "train", "total").
        stats: final training statistics (loss, % valid, % within 10 px on the last batches;
            with ``triangulate``, "triangulated": points, % of patch cells with a depth, seconds).
        regressor: identity of the regressor (ACE-G), source describes where it came from.
    """

    path: Path
    method: str
    encoder: str
    preset: str
    frames: int
    patches: int
    iterations: int
    file_size: int
    seconds: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    regressor: str | None = None
    regressor_source: str | None = None


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


def map_scene(
    scene: Scene,
    out_path: str | Path,
    method: str = "aceg",
    preset: str = "default",
    regressor=None,
    use_depth: bool = False,
    triangulate: bool = False,
    triangulation_keypoints: int | None = None,
    max_anchors: int | None = None,
    encoder: str | None = None,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    iterations: int | None = None,
    batch_size: int | None = None,
    lr_max: float | None = None,
    passes: int | None = None,
    patches_per_pass: int | None = None,
    augment: AugmentConfig | None = DEFAULT_AUGMENT,
    code_init: str = CODE_INITS[0],
    head_config: AceHeadConfig | None = None,
    loss_config: LossConfig = DEFAULT_LOSS,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> MapResult:
    """Build a map of ``scene`` (posed frames) and write it to ``out_path``.

    Args:
        method: "aceg" (optimise the map code of a frozen regressor) or "ace" (train an
            :class:`AceHead` from scratch).
        preset: key of :data:`PRESETS`; ``iterations``, ``batch_size``, ``lr_max``,
            ``passes``, ``patches_per_pass`` override its fields.
        regressor: ACE-G regressor: None (shipped weights or a seeded random init, with a
            warning), a checkpoint path, or a model.
        use_depth: add depth supervision (every frame needs a depth map).
        triangulate: add depth supervision from keypoints triangulated between the mapping
            images with their known poses (RGB only; not with ``use_depth``).
        triangulation_keypoints: keypoints per image of the triangulation (default:
            :func:`aceg.mapping.triangulation.default_keypoints` of the scene's size).
        max_anchors: anchor model only: anchors the map keeps at most (default: the
            regressor's ``AnchorConfig.max_anchors``, 24,576; 76 bytes an anchor).
        encoder: encoder name (default: the regressor's for ACE-G, "xfeat" for ACE).
        short_side: working short side of the images in pixels, never above the smallest
            image's own short side (upsampling adds patches, not information); None: the
            images' own size.
        augment: augmentation of passes after the first (None: one plain pass).
        code_init: how the ACE-G map code starts
            (:data:`aceg.model.regressor.CODE_INITS`); a regressor file's ``code_init``
            tensor, when it has one, wins.
    """
    if method not in METHODS:
        raise AcegError(f"unknown mapping method {method!r}; choose one of {', '.join(METHODS)}")
    if code_init not in CODE_INITS:
        raise AcegError(f"unknown code_init {code_init!r}; choose one of {', '.join(CODE_INITS)}")
    if preset not in PRESETS[method]:
        raise AcegError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS[method])}")
    if use_depth and triangulate:
        raise AcegError("choose one source of depth: the depth maps (--depth) or triangulation (--triangulate)")
    if max_anchors is not None and max_anchors < 1:
        raise AcegError(f"--max-anchors must be positive, got {max_anchors}")
    check_mapping_scene(scene, use_depth)
    short_side = scene.working_short_side(short_side)
    p = PRESETS[method][preset]
    overrides = {k: v for k, v in dict(iterations=iterations, batch_size=batch_size, lr_max=lr_max,
                                        passes=passes, patches_per_pass=patches_per_pass).items()
                 if v is not None}
    p = replace(p, **overrides)
    device = torch.device(device)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)

    reg = None
    if method == "aceg":
        reg = resolve_regressor(regressor, encoder or DEFAULT_ENCODER)
        if encoder is not None and encoder != reg.encoder:
            raise AcegError(f"encoder {encoder!r} does not match the regressor's ({reg.encoder!r})")
        encoder = reg.encoder
    enc = get_encoder(encoder or DEFAULT_ENCODER, device)
    if reg is not None and reg.model.config.feature_dim != enc.feature_dim:
        raise AcegError(f"regressor ({reg.source}) expects {reg.model.config.feature_dim}-d "
                        f"features but encoder {enc.name!r} gives {enc.feature_dim}")

    anchors = reg is not None and isinstance(reg.model, AnchorRegressor)
    if max_anchors is not None and not anchors:
        raise AcegError("--max-anchors applies to the anchor model (the shipped ACE-G regressor) only")
    if anchors:
        triangulate = not use_depth  # anchors need a 3-D point: depth maps, else triangulation
        p = replace(p, passes=1, patches_per_pass=None, iterations=0)
        augment = None
    depth_maps, geometry = None, {}
    if triangulate:
        config = None  # the triangulation's default for the scene's size
        if triangulation_keypoints is not None:
            if triangulation_keypoints < 16:
                raise AcegError(f"triangulation keypoints must be at least 16, got {triangulation_keypoints}")
            config = replace(TRIANGULATION_CONFIG, max_keypoints=triangulation_keypoints)
        depth_maps, geometry = triangulated_depth_maps(scene, short_side, enc.stride, config, progress=progress)
        if geometry["points"] == 0:
            fix = ("the anchor model needs 3-D points: give depth maps (--depth) or map with the "
                   "transformer regressor" if anchors else "map without --triangulate")
            raise AcegError(f"scene {scene.name!r}: no keypoint could be triangulated between the "
                            f"mapping images (too few, too little texture or parallax); {fix}")
    bar = tqdm(total=len(scene), desc="encoding", unit="img", disable=not progress, leave=False)
    buffer = build_buffer(scene, enc, short_side, p.passes, p.patches_per_pass, augment,
                          use_depth, seed, progress=bar.update, depth_maps=depth_maps)
    bar.close()
    use_depth = use_depth or triangulate
    if len(buffer) == 0:
        raise AcegError(f"scene {scene.name!r}: no usable patches (images too small?)")
    t_buffer = time.perf_counter() - t0

    if anchors:
        code, stats = anchor_code(reg.model.to(device), buffer, gen, max_anchors)
    elif method == "aceg":
        model = reg.model.to(device)
        if lr_max is None:
            p = replace(p, lr_max=p.lr_max * CODE_LR_SCALE[model.config.code_form])
        if reg.code_init is not None:
            code0 = reg.code_init
        elif code_init == "anchored":
            code0 = model.anchored_code(buffer.features, gen)
        else:
            code0 = model.init_code(gen)
        code = torch.nn.Parameter(code0.clone().to(device))
        params = [code]

        def predict(f):
            return model(f, code)

        kind = "nll"
    else:
        head_config = head_config or AceHeadConfig(feature_dim=enc.feature_dim)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        head = AceHead(head_config).to(device).train()
        torch.random.set_rng_state(torch_state)
        params = list(head.parameters())
        predict = head
        kind = "ace"

    if not anchors:
        stats = train_loop(predict, params, buffer, p, kind, loss_config, use_depth, gen, progress,
                           device, desc=f"mapping ({method})")
    if triangulate:
        stats["triangulated"] = geometry
    t_train = time.perf_counter() - t0 - t_buffer

    data = MapData(
        method=method, encoder=enc.name, stride=enc.stride, short_side=short_side,
        scene_centre=buffer.centre, scene=scene.name, frames=len(scene),
        image_size=buffer.image_size,
        stats={**stats, "patches": len(buffer), "iterations": p.iterations,
               "preset": preset, "seconds": round(t_buffer + t_train, 1)},
    )
    if method == "aceg":
        data.code = code.detach().cpu()
        data.regressor = reg.identity
        data.regressor_config = reg.model.config
        if anchors:  # the budget this map was built with (cost only: not in the identity)
            data.regressor_config = replace(reg.model.config, max_anchors=stats["max_anchors"])
    else:
        data.head_state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
        data.head_config = head_config
    size = save_map(out_path, data)
    total = time.perf_counter() - t0
    return MapResult(
        path=Path(out_path), method=method, encoder=enc.name, preset=preset, frames=len(scene),
        patches=len(buffer), iterations=p.iterations, file_size=size,
        seconds={"buffer": t_buffer, "train": t_train, "total": total}, stats=stats,
        regressor=reg.identity if reg else None, regressor_source=reg.source if reg else None,
    )


def anchor_code(model: AnchorRegressor, buffer: TrainingBuffer, gen: torch.Generator,
                max_anchors: int | None = None) -> tuple[torch.Tensor, dict]:
    """The anchor map code of a one-pass buffer with depth targets: every patch with a
    target and a non-zero feature becomes an anchor, at most ``max_anchors`` (default ``model.config.max_anchors``;
    a random subset drawn with ``gen``). Returns the code (N, C + 3) and statistics
    ("anchors": N, "max_anchors": the budget, "cells": % of the buffer's patches that had a
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
             "cells": round(100.0 * float(buffer.target_valid.float().mean()), 1)}
    return code, stats


def train_loop(predict, params, buffer: TrainingBuffer, p: MappingPreset, kind: str,
               loss_config: LossConfig, use_depth: bool, gen: torch.Generator, progress: bool,
               device: torch.device, desc: str = "mapping") -> dict:
    """Run ``p.iterations`` AdamW steps over random buffer batches; returns final stats
    (averaged over the last 10% of steps)."""
    opt, sched = one_cycle_adamw(params, p.lr_max, p.iterations, p.weight_decay)
    n = len(buffer)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    tail = max(1, p.iterations // 10)
    acc: dict[str, list[float]] = {}
    bar = tqdm(range(p.iterations), desc=desc, unit="it", disable=not progress, leave=False,
               mininterval=0.5)
    for it in bar:
        if pos + p.batch_size > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        idx = perm[pos: pos + p.batch_size]
        pos += p.batch_size
        batch = buffer.batch(idx)
        if device.type != "cpu":
            batch = type(batch)(**{k: (v.to(device) if v is not None else None)
                                   for k, v in batch.__dict__.items()})
        out = batch_loss(predict, batch, kind, it / max(p.iterations - 1, 1), loss_config,
                         use_depth)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        if not np.isfinite(out.stats["loss"]):
            raise AcegError("mapping diverged (loss is not finite); try a lower learning rate")
        if it >= p.iterations - tail:
            for k, v in out.stats.items():
                acc.setdefault(k, []).append(v)
        if it % 10 == 0:
            bar.set_postfix(loss=f"{out.stats['loss']:.3g}", valid=f"{100 * out.stats['valid']:.0f}%",
                            in10=f"{100 * out.stats['in10']:.0f}%")
    bar.close()
    return {k: round(float(np.mean(v)), 4) for k, v in acc.items()}
