"""The query iteration's loss of transformer pre-training (:mod:`aceg.pretraining.trainer`):
what a patch of a query image, seen in other light or from another viewpoint than the
mapping images, costs the transformer.

Patches with a depth-derived scene coordinate (``batch.target``, metres, centred world
frame) are scored by the 3-D Laplace NLL of their error, with the Laplace scale in metres
derived from the predicted pixel uncertainty (``b_m = b_px * z / f``); patches without
depth by the reprojection NLL (pixels), or, where the prediction lies behind the camera or
reprojects beyond ``max_error``, by the distance to a point on the patch's ray at
``depth_target`` metres.
"""

from __future__ import annotations

import torch

from aceg.mapping.losses import LossConfig, PatchBatch, reprojection_error, to_camera


def laplace_nll_3d(error_m: torch.Tensor, log_b_m: torch.Tensor) -> torch.Tensor:
    """3-D radial Laplace NLL ``e / b + 3 log b`` (error and scale in metres)."""
    return error_m * torch.exp(-log_b_m) + 3.0 * log_b_m


def query_loss(coords: torch.Tensor, log_b_px: torch.Tensor, batch: PatchBatch,
               cfg: LossConfig) -> tuple[torch.Tensor, dict]:
    """Per-patch query loss (see module docstring) and statistics."""
    cam = to_camera(coords, batch.world_to_cam)
    err_px = reprojection_error(cam, batch.K, batch.pixels)
    valid_px = (cam[:, 2] > cfg.min_depth) & (err_px < cfg.max_error)
    repro = torch.where(valid_px, err_px * torch.exp(-log_b_px) + 2.0 * log_b_px,
                        torch.linalg.vector_norm(cam - _ray_point(batch, cfg.depth_target), dim=1))
    has_depth = batch.target_valid if batch.target_valid is not None else torch.zeros_like(valid_px)
    target_cam = to_camera(batch.target, batch.world_to_cam)
    focal = 0.5 * (batch.K[:, 0, 0] + batch.K[:, 1, 1])
    log_b_m = log_b_px + torch.log(target_cam[:, 2].clamp(min=1e-3)) - torch.log(focal)
    err_m = torch.linalg.vector_norm(coords - batch.target, dim=1)
    per_patch = torch.where(has_depth, laplace_nll_3d(err_m, log_b_m), repro)
    with torch.no_grad():
        stats = {"q_in10": float(((err_px < 10) & valid_px).float().mean()),
                 "q_median_px": float(err_px.median())}
        if bool(has_depth.any()):
            stats["q_median_cm"] = float(err_m[has_depth].median() * 100)
    return per_patch, stats


def _ray_point(batch: PatchBatch, depth: float) -> torch.Tensor:
    K = batch.K
    x = (batch.pixels[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (batch.pixels[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], 1) * depth
