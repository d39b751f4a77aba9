"""Lighting distillation (aceg.pretraining.distillation): its losses and samplers."""

from __future__ import annotations

import torch

from aceg.mapping.losses import PatchBatch, batch_loss
from aceg.model.regressor import RegressorConfig, random_regressor
from aceg.pretraining.distillation import agreement_loss, correct_mask, fit_code, sample_twins
from aceg.pretraining.feature_store import SplitFeatures, sample_patches

K = torch.tensor([[100.0, 0, 32], [0, 120.0, 24], [0, 0, 1]])


def _batch(n: int) -> PatchBatch:
    """n patches seen by the identity camera (world = camera frame)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(n, 2, generator=g) * torch.tensor([64.0, 48.0])
    return PatchBatch(features=torch.zeros(n, 8), pixels=pixels, K=K.expand(n, 3, 3),
                      world_to_cam=torch.eye(4).expand(n, 4, 4))


def _on_rays(batch: PatchBatch, depth: torch.Tensor) -> torch.Tensor:
    x = (batch.pixels[:, 0] - K[0, 2]) / K[0, 0]
    y = (batch.pixels[:, 1] - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], 1) * depth[:, None]


def test_agreement_loss_measures_pixels_in_front_and_metres_behind():
    b = _batch(6)
    teacher = _on_rays(b, torch.full((6,), 2.0))
    unc = torch.zeros(6)
    assert torch.allclose(agreement_loss((teacher, unc), (teacher, unc), b), torch.zeros(6), atol=1e-4)
    # along the ray, another depth projects to the same pixel: no pixel disagreement
    deeper = _on_rays(b, torch.full((6,), 5.0))
    assert torch.allclose(agreement_loss((deeper, unc), (teacher, unc), b), torch.zeros(6), atol=1e-3)
    # 0.02 m sideways at 2 m depth with fx = 100 px: 1 px
    shifted = teacher + torch.tensor([0.02, 0.0, 0.0])
    assert torch.allclose(agreement_loss((shifted, unc), (teacher, unc), b), torch.ones(6), atol=1e-3)
    # behind the camera: behind_weight x L1 metres
    behind = teacher * torch.tensor([1.0, 1.0, -1.0])
    loss = agreement_loss((behind, unc), (teacher, unc), b, behind_weight=10.0)
    assert torch.allclose(loss, 10.0 * 4.0 * torch.ones(6))
    # uncertainty disagreement adds unc_weight x |difference of log scales|
    loss = agreement_loss((teacher, unc + 2.0), (teacher, unc), b, unc_weight=0.5)
    assert torch.allclose(loss, torch.ones(6), atol=1e-3)


def test_correct_mask_follows_the_reprojection_threshold():
    b = _batch(4)
    pts = _on_rays(b, torch.full((4,), 2.0))
    off = pts + torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.3, 0, 0], [0.0, 0, 0]])  # 0, 5, 15 px
    off[3] *= -1  # behind the camera
    assert correct_mask(off, b, correct_px=10.0).tolist() == [True, True, False, False]


def _split(frames: int, rows: int, cols: int, seed: int) -> SplitFeatures:
    g = torch.Generator().manual_seed(seed)
    w2c = torch.eye(4).repeat(frames, 1, 1)
    w2c[:, :3, 3] = torch.randn(frames, 3, generator=g) * 0.1
    return SplitFeatures(torch.randn(frames, rows, cols, 8, generator=g).half(),
                         torch.full((frames, rows, cols, 3), float("nan")), w2c,
                         K.expand(frames, 3, 3).clone())


def test_twins_are_the_same_frame_and_cell_of_both_splits():
    same, light = _split(3, 4, 5, 1), _split(3, 4, 5, 2)
    light.world_to_cam = same.world_to_cam.clone()
    batch, light_features = sample_twins(same, light, 50, torch.Generator().manual_seed(0), stride=8)
    for k in range(50):
        # find the cell from the pixel, then the frame from the features
        j, i = int(batch.pixels[k, 0]) // 8, int(batch.pixels[k, 1]) // 8
        f = [n for n in range(3) if torch.equal(same.features[n, i, j].float(), batch.features[k])]
        assert f and torch.equal(light.features[f[0], i, j].float(), light_features[k])
        assert torch.equal(batch.world_to_cam[k], same.world_to_cam[f[0]])


def test_fit_code_fits_the_scene_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = random_regressor(RegressorConfig(feature_dim=8, width=32, depth=1, heads=2, code_tokens=8))
    split = _split(4, 6, 8, 3)
    before = model.identity()
    g = torch.Generator().manual_seed(5)
    probe = sample_patches(split, 512, torch.Generator().manual_seed(9), stride=8)
    start = model.anchored_code(sample_patches(split, 64, g, 8).features, torch.Generator().manual_seed(5))
    code, _ = fit_code(model, split, stride=8, iterations=60, batch=256,
                       generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        loss0 = float(batch_loss(lambda f: model(f, start), probe).loss)
        loss1 = float(batch_loss(lambda f: model(f, code), probe).loss)
    assert code.shape == model.config.code_shape
    assert loss1 < loss0 - 1.0
    assert model.identity() == before
    assert all(p.requires_grad for p in model.parameters())
