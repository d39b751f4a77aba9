"""ACE baseline head: a scene-specific MLP trained from scratch per scene.

ACE (Brachmann et al., CVPR 2023) maps each frozen encoder feature to a scene coordinate
with a per-scene MLP (1x1 convolutions, width 512, residual skips) and a homogeneous
output (:mod:`aceg.model.homogeneous`); the scene centre (mean mapping camera position) is
added to the output. Here the same structure as an MLP on (P, C) feature rows:

    x0 = relu(W_in f)                              (P, width)
    blocks: x = x + W2 relu(W1 relu(x))            ``blocks`` residual pairs
    out = W_out relu(x)  -> (P, 4) -> dehomogenize -> (P, 3) metres, relative to the centre

The output has no uncertainty; the localizer then keeps all patches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from aceg.model.homogeneous import MAX_SCALE, MIN_SCALE, dehomogenize


@dataclass(frozen=True)
class AceHeadConfig:
    """Sizes of the ACE head: ``feature_dim`` inputs, ``width`` hidden units, ``blocks``
    residual pairs (depth = 2 * blocks + 2 linear layers)."""

    feature_dim: int = 64
    width: int = 512
    blocks: int = 2
    min_scale: float = MIN_SCALE
    max_scale: float = MAX_SCALE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AceHeadConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class AceHead(nn.Module):
    """``forward(features (P, C)) -> (coords (P, 3), None)``, coords relative to the centre."""

    def __init__(self, config: AceHeadConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AceHeadConfig()
        self.inp = nn.Linear(c.feature_dim, c.width)
        self.res = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(c.width, c.width), nn.ReLU(),
                          nn.Linear(c.width, c.width))
            for _ in range(c.blocks)
        )
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(c.width, 4))

    def forward(self, features: torch.Tensor, code: torch.Tensor | None = None):
        x = self.inp(features)
        for block in self.res:
            x = x + block(x)
        raw = self.out(x)
        return dehomogenize(raw, self.config.min_scale, self.config.max_scale), None
