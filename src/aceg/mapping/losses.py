"""Losses of mapping (and pre-training), per patch.

All geometry is in the **centred world frame** (world minus the scene centre), metres;
pixels are those of the prepared (working-size) image of the patch's frame.

* Reprojection error ``e`` (pixels): distance between the patch centre and the projection
  of the predicted scene coordinate into the patch's mapping camera.
* Valid predictions: camera depth in ``[min_depth, max_depth]`` and ``e < max_error``
  (ACE: 0.1 m, 1000 m, 1000 px). Invalid ones (behind the camera, absurdly far, huge
  reprojection error) are pulled toward the point on the patch's viewing ray at a constant
  depth ``depth_target`` (ACE: 10 m), by the Euclidean distance in camera coordinates.
* ACE-G: Laplace negative log-likelihood of ``e`` with a predicted scale ``b`` (pixels):
  for the 2-D radial Laplace density ``p(e) ~ exp(-e/b) / b^2`` this is ``e/b + 2 log b``.
* ACE: tanh-clamped reprojection error ``tau * tanh(e / tau)`` with a threshold that
  shrinks from ``tau_max`` (50 px) to ``tau_min`` (1 px) over training on a circular
  schedule ``tau = (1 - (1 - sqrt(1 - t^2))) * tau_max + tau_min``, ``t`` = fraction done.
* Optional depth supervision: L1 distance (metres) to a depth-derived target coordinate,
  weighted by ``depth_weight`` pixels per metre.

:func:`batch_loss` combines them for a batch of patches and a predictor, and is what the
mapper and the pre-training loop call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossConfig:
    """Constants of the mapping losses (see module docstring); ACE's values by default."""

    min_depth: float = 0.1
    max_depth: float = 1000.0
    max_error: float = 1000.0
    depth_target: float = 10.0
    tau_max: float = 50.0
    tau_min: float = 1.0
    depth_weight: float = 10.0
    inlier_px: float = 10.0


#: ACE's constants.
DEFAULT_LOSS = LossConfig()


@dataclass
class PatchBatch:
    """A batch of B training patches (tensors on one device).

    Attributes:
        features: (B, C) float32 encoder features.
        pixels: (B, 2) float32 patch centres (u, v), pixels of the prepared image.
        K: (B, 3, 3) float32 intrinsics of the prepared image.
        world_to_cam: (B, 4, 4) float32, from the *centred* world frame to the camera.
        target: (B, 3) float32 depth-derived scene coordinate (centred frame) or None.
        target_valid: (B,) bool, where ``target`` is valid, or None.
    """

    features: torch.Tensor
    pixels: torch.Tensor
    K: torch.Tensor
    world_to_cam: torch.Tensor
    target: torch.Tensor | None = None
    target_valid: torch.Tensor | None = None


def to_camera(points: torch.Tensor, world_to_cam: torch.Tensor) -> torch.Tensor:
    """(B, 3) points in the (centred) world frame -> (B, 3) camera coordinates."""
    R = world_to_cam[:, :3, :3]
    t = world_to_cam[:, :3, 3]
    return torch.einsum("bij,bj->bi", R, points) + t


def reprojection_error(cam: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B,) pixel distance between ``pixels`` and the projection of camera points ``cam``.

    Depth is clamped to 0.1 mm to keep the division finite; such points are invalid anyway.
    """
    uv = project_camera(cam, K)
    return torch.sqrt((uv[:, 0] - pixels[:, 0]) ** 2 + (uv[:, 1] - pixels[:, 1]) ** 2 + 1e-12)


def project_camera(cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, 2) pixels (u, v) of (B, 3) camera points under (B, 3, 3) intrinsics; depth
    clamped to 0.1 mm (see :func:`reprojection_error`)."""
    z = cam[:, 2].clamp(min=1e-4)
    return torch.stack([K[:, 0, 0] * cam[:, 0] / z + K[:, 0, 2], K[:, 1, 1] * cam[:, 1] / z + K[:, 1, 2]], 1)


def valid_mask(cam: torch.Tensor, error: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """(B,) bool: depth in [min_depth, max_depth] and error below max_error."""
    z = cam[:, 2]
    return (z >= cfg.min_depth) & (z <= cfg.max_depth) & (error < cfg.max_error)


def invalid_pull(cam: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor, depth: float) -> torch.Tensor:
    """(B,) distance (metres) from ``cam`` to the point at depth ``depth`` on the pixel's ray."""
    x = (pixels[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (pixels[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    target = torch.stack([x, y, torch.ones_like(x)], dim=1) * depth
    return torch.linalg.vector_norm(cam - target, dim=1)


def laplace_nll(error: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """(B,) 2-D radial Laplace NLL ``e / b + 2 log b`` (error and b in pixels)."""
    return error * torch.exp(-log_b) + 2.0 * log_b


def ace_threshold(progress: float, cfg: LossConfig) -> float:
    """ACE's soft-clamp threshold (pixels) at ``progress`` in [0, 1] (circular schedule)."""
    t = min(max(progress, 0.0), 1.0)
    shrink = 1.0 - math.sqrt(1.0 - t * t)
    return (1.0 - shrink) * cfg.tau_max + cfg.tau_min


def tanh_clamped(error: torch.Tensor, tau: float) -> torch.Tensor:
    """(B,) ``tau * tanh(error / tau)``: linear for small errors, bounded by ``tau``."""
    return tau * torch.tanh(error / tau)


@dataclass
class LossOutput:
    """Mean loss over the batch and per-batch statistics (floats)."""

    loss: torch.Tensor
    error: torch.Tensor
    valid: torch.Tensor
    stats: dict


Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def batch_loss(
    predict: Predictor,
    batch: PatchBatch,
    kind: str = "nll",
    progress: float = 0.0,
    cfg: LossConfig = DEFAULT_LOSS,
    use_depth: bool = False,
) -> LossOutput:
    """Loss of one batch of patches.

    Args:
        predict: features (B, C) -> (coords (B, 3) centred frame, log-uncertainty (B,) or
            None), e.g. ``lambda f: regressor(f, code)`` or an :class:`AceHead`.
        kind: "nll" (ACE-G, Laplace NLL; needs the uncertainty) or "ace" (tanh-clamped
            reprojection error with the shrinking threshold at ``progress``).
        use_depth: add the depth term where ``batch.target_valid``.
    """
    coords, log_b = predict(batch.features)
    cam = to_camera(coords, batch.world_to_cam)
    error = reprojection_error(cam, batch.K, batch.pixels)
    valid = valid_mask(cam, error, cfg)
    pull = invalid_pull(cam, batch.K, batch.pixels, cfg.depth_target)
    if kind == "nll":
        if log_b is None:
            raise ValueError("the NLL loss needs a predicted uncertainty")
        repro = laplace_nll(error, log_b)
    elif kind == "ace":
        repro = tanh_clamped(error, ace_threshold(progress, cfg))
    else:
        raise ValueError(f"unknown loss kind {kind!r}")
    per_patch = torch.where(valid, repro, pull)
    if use_depth and batch.target is not None and batch.target_valid is not None:
        d = torch.linalg.vector_norm(coords - batch.target, ord=1, dim=1)
        per_patch = per_patch + cfg.depth_weight * torch.where(batch.target_valid, d, 0.0)
    loss = per_patch.mean()
    with torch.no_grad():
        stats = {
            "loss": float(loss),
            "valid": float(valid.float().mean()),
            "in10": float(((error < cfg.inlier_px) & valid).float().mean()),
            "median_px": float(error.median()),
        }
    return LossOutput(loss, error.detach(), valid, stats)
