"""Homogeneous scene-coordinate output, as in ACE (Brachmann et al., CVPR 2023).

A head predicts four numbers ``(x, y, z, h)`` per patch; the scene coordinate is
``(x, y, z) / w`` with ``w = softplus(h, beta) + 1/max_scale``, clamped to at most
``1/min_scale``. ``beta = ln 2 / (1 - 1/max_scale)`` makes ``w = 1`` at ``h = 0``, so an
untrained head starts as a plain regression of xyz; the bounds let the network scale its
output by a factor between ``min_scale`` and ``max_scale`` (ACE: 0.01 and 4) to reach far
points without huge raw activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: ACE's bounds of the homogeneous scale factor 1 / w.
MIN_SCALE = 0.01
MAX_SCALE = 4.0


def dehomogenize(
    raw: torch.Tensor, min_scale: float = MIN_SCALE, max_scale: float = MAX_SCALE
) -> torch.Tensor:
    """(..., 4) raw head output -> (..., 3) coordinates (same units as the xyz outputs)."""
    max_inv = 1.0 / max_scale
    beta = math.log(2.0) / (1.0 - max_inv)
    w = F.softplus(raw[..., 3:4], beta=beta) + max_inv
    w = w.clamp(max=1.0 / min_scale)
    return raw[..., :3] / w
