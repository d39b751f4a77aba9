"""Lighting distillation: teach a pre-trained transformer to answer under other light as it
answers under the mapping light (experimental).

A *teacher* T (a pre-trained regressor, e.g. the shipped model) and a *student* S (a copy
of T being trained). For each pre-training scene a map code is fitted once with T on the
scene's mapping patches, the way ``aceg map`` fits one (:func:`fit_code`), and then kept
fixed. The student learns from two kinds of patches of those scenes:

* **anchor patches** (``mapping`` and ``query_same``, the mapping light A): S(x, code)
  should reproject where T(x, code) does in the patch's ground-truth camera, and predict
  the same uncertainty, so that S keeps the function fresh codes are fitted to;
* **twin patches**: ``aceg synth`` renders ``query_light`` from the poses of
  ``query_same``, so the same pixel of the same view exists under light A and B.
  S(x_B, code) should reproject where T(x_A, code) does; the caller weighs twins by
  whether the teacher is right (:func:`correct_mask`).

The training loop is ``benchmarks/lighting_distillation.py``; on 2 CPU cores it did not make
the shipped model more robust to light (MODEL_CARD.md, "Lighting distillation"), so
nothing in ``aceg`` calls this module yet.

The loss of a patch is the pixel distance between the two projections (both points in
front of the camera), else ``behind_weight`` times the L1 distance of the two scene
coordinates in metres, plus ``unc_weight`` times the absolute difference of the log
uncertainties. Geometry in the centred world frame of the feature store
(:mod:`aceg.pretraining.feature_store`), cameras world-to-camera, OpenCV axes.
"""

from __future__ import annotations

import torch

from aceg.mapping.losses import (
    DEFAULT_LOSS,
    PatchBatch,
    batch_loss,
    project_camera,
    reprojection_error,
    to_camera,
)
from aceg.mapping.schedule import one_cycle_adamw
from aceg.model.regressor import CODE_LR_SCALE, SceneRegressor
from aceg.pretraining.feature_store import SplitFeatures, random_cells, sample_patches


def fit_code(model: SceneRegressor, split: SplitFeatures, stride: int, iterations: int = 300,
             batch: int = 4096, lr_max: float = 0.1, generator: torch.Generator | None = None,
             ) -> tuple[torch.Tensor, dict]:
    """A map code for ``model`` fitted on ``split`` (a scene's mapping split), as ``aceg map``
    fits one: anchored start, Laplace NLL of the reprojection error, AdamW with the
    one-cycle rate (``lr_max`` for "keys_values" codes, scaled by ``CODE_LR_SCALE``).

    Returns the code (``model.config.code_shape``) and the statistics of the last batch.
    """
    g = generator or torch.Generator().manual_seed(0)
    anchor = sample_patches(split, 4096, g, stride).features
    code = torch.nn.Parameter(model.anchored_code(anchor, g).clone())
    needs = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        opt, sched = one_cycle_adamw([code], lr_max * CODE_LR_SCALE[model.config.code_form], iterations)
        stats: dict = {}
        for _ in range(iterations):
            b = sample_patches(split, batch, g, stride)
            out = batch_loss(lambda f: model(f, code), b, kind="nll")
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
            stats = out.stats
    finally:
        for p, n in zip(model.parameters(), needs, strict=True):
            p.requires_grad_(n)
    return code.detach(), stats


def sample_twins(same: SplitFeatures, light: SplitFeatures, count: int, generator: torch.Generator,
                 stride: int) -> tuple[PatchBatch, torch.Tensor]:
    """``count`` random twin patches: the batch of ``same`` (light A) and the features of the
    same frames and cells in ``light`` (B), (count, C) float32."""
    if same.features.shape[:3] != light.features.shape[:3]:
        raise ValueError("twin splits differ in frames or grid")
    f, i, j, pixels = random_cells(same, count, generator, stride)
    batch = PatchBatch(features=same.features[f, i, j].float(), pixels=pixels, K=same.K[f],
                       world_to_cam=same.world_to_cam[f])
    return batch, light.features[f, i, j].float()


def agreement_loss(student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor],
                   batch: PatchBatch, behind_weight: float = 10.0, unc_weight: float = 0.5,
                   min_depth: float = DEFAULT_LOSS.min_depth) -> torch.Tensor:
    """(B,) per-patch disagreement of the student's (coords, log_unc) with the teacher's
    in the batch's cameras (module docstring)."""
    s_xyz, s_unc = student
    t_xyz, t_unc = teacher
    s_cam = to_camera(s_xyz, batch.world_to_cam)
    t_cam = to_camera(t_xyz, batch.world_to_cam)
    in_front = (s_cam[:, 2] > min_depth) & (t_cam[:, 2] > min_depth)
    t_px = project_camera(t_cam, batch.K)
    px = reprojection_error(s_cam, batch.K, t_px)
    metres = torch.linalg.vector_norm(s_xyz - t_xyz, ord=1, dim=1)
    geo = torch.where(in_front, px, behind_weight * metres)
    return geo + unc_weight * (s_unc - t_unc).abs()


def correct_mask(coords: torch.Tensor, batch: PatchBatch, correct_px: float = 10.0) -> torch.Tensor:
    """(B,) bool: the prediction lies in front of the camera and reprojects within
    ``correct_px`` of the patch centre."""
    cam = to_camera(coords, batch.world_to_cam)
    return (cam[:, 2] > DEFAULT_LOSS.min_depth) & (reprojection_error(cam, batch.K, batch.pixels) < correct_px)
