"""What the optimised models share (the map-code transformer and the ACE head): presets,
their settings, and the optimisation loop over the training buffer.

``iterations`` steps of AdamW with a one-cycle schedule (:mod:`aceg.mapping.schedule`) on
random batches of buffer patches, each batch's loss from :func:`aceg.mapping.losses.batch_loss`
(invalid predictions pulled toward a constant-depth target; depth supervision when the
buffer has depth targets).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from aceg.data.images import DEFAULT_SHORT_SIDE
from aceg.errors import AcegError
from aceg.mapping.buffer import DEFAULT_AUGMENT, AugmentConfig, TrainingBuffer
from aceg.mapping.common import BufferPlan, check_triangulation_keypoints
from aceg.mapping.losses import DEFAULT_LOSS, LossConfig, batch_loss
from aceg.mapping.schedule import one_cycle_adamw

#: Names of the presets of every optimised model, quickest first.
PRESET_NAMES = ("fast", "default", "thorough")


@dataclass(frozen=True)
class MappingPreset:
    """Settings of one optimised mapping run.

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


#: Settings of :class:`OptimisedMapConfig` that override the preset's field of that name.
PRESET_OVERRIDES = ("iterations", "batch_size", "lr_max", "passes", "patches_per_pass")


@dataclass(frozen=True)
class OptimisedMapConfig:
    """Settings of an optimised model's mapping (the subclasses name their presets).

    Attributes:
        preset: key of the model's presets (:data:`PRESET_NAMES`).
        iterations, batch_size, lr_max, passes, patches_per_pass: override the preset's
            field of that name when given.
        use_depth: depth supervision from the frames' depth maps (every frame needs one).
        triangulate: depth supervision from keypoints triangulated between the mapping
            images with their known poses (RGB only; not with ``use_depth``).
        triangulation_keypoints: keypoints per image of the triangulation (None:
            :func:`aceg.mapping.triangulation.default_keypoints` of the scene's size).
        short_side: working short side of the images in pixels, never above the smallest
            image's own short side (upsampling adds patches, not information); None: the
            images' own size.
        augment: augmentation of the passes after the first (None: one plain pass).
        loss_config: constants of the mapping losses.
    """

    PRESETS: ClassVar[dict[str, MappingPreset]] = {}

    preset: str = "default"
    iterations: int | None = None
    batch_size: int | None = None
    lr_max: float | None = None
    passes: int | None = None
    patches_per_pass: int | None = None
    use_depth: bool = False
    triangulate: bool = False
    triangulation_keypoints: int | None = None
    short_side: int | None = DEFAULT_SHORT_SIDE
    augment: AugmentConfig | None = DEFAULT_AUGMENT
    loss_config: LossConfig = DEFAULT_LOSS

    def __post_init__(self) -> None:
        if self.preset not in self.PRESETS:
            raise AcegError(f"unknown preset {self.preset!r}; choose one of {', '.join(self.PRESETS)}")
        for name in ("iterations", "batch_size", "passes", "patches_per_pass"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AcegError(f"{name} must be positive, got {value}")
        if self.use_depth and self.triangulate:
            raise AcegError("choose one source of depth: the depth maps (--depth) or "
                            "triangulation (--triangulate)")
        check_triangulation_keypoints(self.triangulation_keypoints, self.triangulate)

    def run_preset(self) -> MappingPreset:
        """The preset with the given overrides applied."""
        overrides = {k: getattr(self, k) for k in PRESET_OVERRIDES if getattr(self, k) is not None}
        return replace(self.PRESETS[self.preset], **overrides)

    def buffer_plan(self, p: MappingPreset) -> BufferPlan:
        """How the mapping images are encoded for the run preset ``p``."""
        return BufferPlan(p.passes, p.patches_per_pass, self.augment, self.use_depth,
                          self.triangulate, self.triangulation_keypoints)


def train_loop(predict, params, buffer: TrainingBuffer, p: MappingPreset, kind: str,
               loss_config: LossConfig, use_depth: bool, gen: torch.Generator, progress: bool,
               device: torch.device, desc: str = "mapping") -> dict:
    """Run ``p.iterations`` AdamW steps of ``params`` over random batches of ``buffer``
    (batch order drawn with ``gen``); ``predict`` maps (B, C) features to (coords (B, 3),
    log-uncertainty (B,) or None), ``kind`` names the loss ("nll" or "ace",
    :func:`aceg.mapping.losses.batch_loss`). Returns the statistics averaged over the last
    tenth of the steps."""
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
