"""Training buffer, losses, schedule and mapping (ACE baseline and ACE-G machinery)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aceg.data.camera import make_pose
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import Localizer
from aceg.mapping.buffer import AugmentConfig, _augment, _depth_targets, build_buffer, relight
from aceg.mapping.losses import (
    LossConfig,
    PatchBatch,
    ace_threshold,
    batch_loss,
    invalid_pull,
    laplace_nll,
    reprojection_error,
    tanh_clamped,
)
from aceg.mapping.mapper import map_scene
from aceg.mapping.schedule import one_cycle_adamw
from aceg.model.ace_head import AceHeadConfig
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_map, save_regressor
from aceg.model.regressor import RegressorConfig, random_regressor
from planar_scenes import corner_scene

K = torch.tensor([[100.0, 0, 40.0], [0, 90.0, 30.0], [0, 0, 1]])


def _batch(points_cam: torch.Tensor, pixels: torch.Tensor) -> tuple[PatchBatch, torch.Tensor]:
    n = points_cam.shape[0]
    return PatchBatch(torch.zeros(n, 4), pixels, K.expand(n, 3, 3), torch.eye(4).expand(n, 4, 4)), points_cam


def test_reprojection_error_and_pull():
    pix = torch.tensor([[10.0, 20.0], [40.0, 30.0]])
    rays = torch.stack([(pix[:, 0] - 40) / 100, (pix[:, 1] - 30) / 90, torch.ones(2)], 1)
    cam = rays * torch.tensor([[2.0], [5.0]])
    err = reprojection_error(cam, K.expand(2, 3, 3), pix)
    assert torch.allclose(err, torch.zeros(2), atol=1e-3)
    shifted = cam + torch.tensor([[0.02, 0, 0], [0, 0, 0]])
    assert abs(float(reprojection_error(shifted, K.expand(2, 3, 3), pix)[0]) - 1.0) < 1e-3  # 100*0.02/2
    pull = invalid_pull(rays * 10.0, K.expand(2, 3, 3), pix, 10.0)
    assert torch.allclose(pull, torch.zeros(2), atol=1e-5)


def test_laplace_nll_minimum_at_half_error():
    e = torch.tensor(6.0)
    bs = torch.linspace(0.5, 20, 400)
    nll = laplace_nll(e.expand(400), torch.log(bs))
    assert abs(float(bs[nll.argmin()]) - 3.0) < 0.1  # d/db (e/b + 2 log b) = 0 at b = e/2


def test_ace_threshold_schedule_and_tanh():
    cfg = LossConfig()
    assert ace_threshold(0.0, cfg) == 51.0 and ace_threshold(1.0, cfg) == 1.0
    assert ace_threshold(0.5, cfg) > 40  # circular schedule: slow start
    x = torch.tensor([0.1, 1000.0])
    y = tanh_clamped(x, 5.0)
    assert abs(float(y[0]) - 0.1) < 1e-3 and abs(float(y[1]) - 5.0) < 1e-6


def test_batch_loss_invalid_predictions_are_pulled():
    pix = torch.tensor([[10.0, 20.0], [40.0, 30.0], [50.0, 30.0]])
    cam = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 5000.0], [0.0, 0.0, 4.0]])  # behind, far, ok
    batch, pts = _batch(cam, pix)
    out = batch_loss(lambda f: (pts, torch.zeros(3)), batch, "nll")
    assert out.valid.tolist() == [False, False, True]
    assert out.stats["valid"] == pytest.approx(1 / 3)
    out2 = batch_loss(lambda f: (pts, None), batch, "ace", progress=0.3)
    assert torch.isfinite(out2.loss)
    with pytest.raises(ValueError, match="uncertainty"):
        batch_loss(lambda f: (pts, None), batch, "nll")


def test_one_cycle_schedule_peaks_then_decays():
    p = torch.nn.Parameter(torch.zeros(2))
    opt, sched = one_cycle_adamw([p], 1e-2, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(1e-2, rel=1e-3) and lrs[0] < 1e-3 and lrs[-1] < 1e-4
    assert 20 <= int(np.argmax(lrs)) <= 30


def test_augment_affine_maps_pixels():
    img = np.zeros((60, 80, 3), np.uint8)
    img[20, 30] = 255
    out, A = _augment(img, np.random.default_rng(1), AugmentConfig(brightness=0, contrast=0, gamma=0))
    p = A @ np.array([30.0, 20.0, 1.0])
    grey = out.astype(float).sum(2)
    v, u = np.unravel_index(grey.argmax(), grey.shape)
    assert abs(u - p[0]) <= 1 and abs(v - p[1]) <= 1


def test_depth_targets_lie_on_rays():
    Kn = np.array([[100.0, 0, 40], [0, 90.0, 30], [0, 0, 1]])
    depth = np.full((60, 80), 3.0, np.float32)
    depth[0, 0] = 0
    c2w = make_pose(np.eye(3), [1.0, 2.0, 3.0])
    pix = np.array([[40.0, 30.0], [0.0, 0.0]])
    t, v = _depth_targets(depth, pix, Kn, c2w)
    assert v.tolist() == [True, False]
    assert np.allclose(t[0], [1.0, 2.0, 6.0])


def test_buffer_geometry(tmp_path):
    scene = corner_scene(tmp_path / "s", n=3)
    enc = get_encoder("xfeat")
    buf = build_buffer(scene, enc, 120, passes=3, patches_per_pass=None)
    per_image = 15 * 20
    plain = buf.frame == 0
    assert len(buf) > 3 * per_image  # 3 plain passes + augmented ones
    first = buf.pixels[:per_image].numpy()
    assert np.allclose(first, enc.centres(15, 20))  # pass 0: the plain patch centres
    assert torch.all(buf.pixels[:, 0] >= 0) and torch.all(buf.pixels[:, 0] <= 159)
    assert plain.sum() > per_image
    assert np.allclose(buf.centre, scene.camera_centres().mean(0))
    b = buf.batch(torch.arange(10))
    assert b.features.dtype == torch.float32 and b.K.shape == (10, 3, 3)


def test_depth_supervision(tmp_path):
    scene = corner_scene(tmp_path / "s", n=6, depth=True)
    buf = build_buffer(scene, get_encoder("xfeat"), 120, passes=2, use_depth=True)
    valid = buf.target_valid.numpy()
    assert valid.mean() > 0.95
    world = buf.target.numpy()[valid] + buf.centre  # back to the world frame
    on_wall = np.abs(world[:, 2]) < 0.02  # depth sampled at the nearest pixel
    on_floor = np.abs(world[:, 1] - 1.0) < 0.02
    assert np.all(on_wall | on_floor) and on_wall.any() and on_floor.any()
    result = map_scene(scene, tmp_path / "d.map", model="ace", preset="fast", use_depth=True,
                       short_side=120, iterations=60, batch_size=512,
                       head_config=AceHeadConfig(64, 64, 1), progress=False)
    assert np.isfinite(result.stats["loss"])


def test_mapping_needs_poses(tmp_path):
    scene = corner_scene(tmp_path / "s", n=2)
    no_pose = Scene("np", [scene[0], scene[1].with_pose(None)])
    with pytest.raises(AcegError, match="needs a pose for every image; 1 of 2"):
        map_scene(no_pose, tmp_path / "x.map", model="ace")
    with pytest.raises(AcegError, match="depth map"):
        map_scene(scene, tmp_path / "x.map", model="ace", use_depth=True)
    with pytest.raises(AcegError, match="unknown model 'nerf'"):
        map_scene(scene, tmp_path / "x.map", model="nerf")
    with pytest.raises(AcegError, match="method= is now model="):
        map_scene(scene, tmp_path / "x.map", method="ace")
    with pytest.raises(AcegError, match="unknown code_init"):
        map_scene(scene, tmp_path / "x.map", model="transformer", code_init="zeros")
    with pytest.raises(AcegError, match="unknown preset 'slow'"):
        map_scene(scene, tmp_path / "x.map", model="ace", preset="slow")
    assert not (tmp_path / "x.map").exists()


def test_mapping_unreadable_image_is_an_error(tmp_path):
    scene = corner_scene(tmp_path / "s", n=2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    f = scene[1]
    broken = Scene("b", [scene[0], Frame("bad.png", bad, f.width, f.height, f.intrinsics,
                                         f.cam_to_world)])
    with pytest.raises(AcegError, match="bad.png"):
        map_scene(broken, tmp_path / "x.map", model="ace", progress=False)


def _held_out_errors(scene: Scene, map_path, regressor=None):
    loc = Localizer(map_path, regressor=regressor)
    errs = []
    for f in scene:
        r = loc.localize_frame(f)
        assert r.localized, r.reason
        errs.append(pose_errors(r.cam_to_world, f.cam_to_world))
    return np.array(errs)  # (n, 2): degrees, metres


def test_ace_baseline_end_to_end(tmp_path):
    scene = corner_scene(tmp_path / "s", n=16, size=(160, 120))
    mapping, queries = scene.split_every(5, 2)
    result = map_scene(mapping, tmp_path / "c.map", model="ace", preset="fast", short_side=120,
                       iterations=400, batch_size=1024, head_config=AceHeadConfig(64, 128, 1),
                       progress=False)
    assert result.stats["in10"] > 0.8 and result.file_size < 2_000_000
    assert load_map(tmp_path / "c.map").method == "ace" and result.model == "ace"
    assert load_map(tmp_path / "c.map").model == "ace" and result.preset == "fast"
    errs = _held_out_errors(queries, tmp_path / "c.map")
    # The scene spans ~1 m of camera motion at 2.5 m; a 160x120 view has 300 patches.
    assert np.median(errs[:, 1]) < 0.25 and np.median(errs[:, 0]) < 6.0, errs
    assert errs[:, 1].max() < 0.5


def pretrain_tiny(scenes: list[Scene], config: RegressorConfig, steps: int, short_side: int,
                  batch: int = 512, lr: float = 5e-3, seed: int = 0):
    """Joint training of a regressor and one code per scene (a minimal query pre-training),
    with the same per-batch loss the mapper uses."""
    enc = get_encoder("xfeat")
    buffers = [build_buffer(s, enc, short_side, passes=2, seed=seed) for s in scenes]
    reg = random_regressor(config, seed).train()
    codes = [torch.nn.Parameter(reg.init_code(torch.Generator().manual_seed(i)))
             for i in range(len(scenes))]
    opt, sched = one_cycle_adamw([*reg.parameters(), *codes], lr, steps)
    gen = torch.Generator().manual_seed(seed)
    stats = {}
    for _ in range(steps):
        loss = 0.0
        for buf, code in zip(buffers, codes, strict=True):
            idx = torch.randint(len(buf), (batch,), generator=gen)
            out = batch_loss(lambda f, c=code: reg(f, c), buf.batch(idx), "nll")
            loss = loss + out.loss
            stats = out.stats
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return reg.eval(), stats


@pytest.mark.parametrize("code_form", ["keys_values", "tokens"])
def test_aceg_machinery_pretrain_map_localize(tmp_path, code_form):
    """Pre-train a tiny regressor (+ a code) on one tiny scene, then map it again with a
    fresh code (regressor frozen) and localize held-out views, for both code forms."""
    scene = corner_scene(tmp_path / "s", n=12, seed=0)
    mapping, queries = scene.split_every(4, 1)
    config = RegressorConfig(width=32, depth=2, heads=2, code_tokens=16, mlp_ratio=2,
                             code_form=code_form)
    reg, stats = pretrain_tiny([mapping], config, steps=1000, short_side=120, lr=1e-2)
    assert stats["in10"] > 0.7
    path = tmp_path / "tiny.safetensors"
    save_regressor(path, reg, "xfeat")
    result = map_scene(mapping, tmp_path / "g.map", "transformer", path, preset="fast",
                       short_side=120, iterations=300, batch_size=1024, progress=False)
    data = load_map(tmp_path / "g.map")
    assert data.model == "transformer" and data.code.shape == config.code_shape and result.file_size < 20_000
    assert result.stats["in10"] > 0.7
    errs = _held_out_errors(queries, tmp_path / "g.map", regressor=path)
    # A random regressor gives ~1.4 m / 27 deg here; the tiny pre-trained one ~0.2-0.4 m.
    assert np.median(errs[:, 1]) < 0.5 and np.median(errs[:, 0]) < 10.0, errs
    assert errs[:, 1].max() < 1.0 and errs[:, 0].max() < 20.0, errs
    # Without its weights (not among the shipped ones) the map is refused, saying what to run.
    with pytest.raises(AcegError, match=r"g.map: map was made with transformer regressor "
                                        r"[0-9a-f]+, which is not among the weights shipped in .*"
                                        r"aceg localize .*g.map QUERIES --regressor WEIGHTS"
                                        r".*aceg map SCENE .*g.map --model transformer"):
        Localizer(tmp_path / "g.map")
    with pytest.raises(AcegError, match="made with regressor"):
        Localizer(tmp_path / "g.map", regressor=random_regressor(config, 1))
    assert math.isfinite(result.seconds["total"])


def test_relight_changes_shading_smoothly():
    """Relighting multiplies linear light by a smooth gain field: the image keeps its
    structure (the gain between neighbouring pixels hardly changes), the gain varies across
    the image, and strength 0 leaves the image to the other augmentations."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.6, (48, 64, 3)).astype(np.float32)  # stays unclipped under the gains
    cfg = AugmentConfig(relight=0.4)
    y = relight(x, np.random.default_rng(1), cfg)
    assert y.shape == x.shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    gain = np.log(y[..., 0] ** 2.2 / x[..., 0] ** 2.2)  # per-pixel log gain of one channel
    assert np.abs(np.diff(gain, axis=1)).max() < 0.1  # smooth between neighbours
    assert gain.max() - gain.min() > 0.2  # but not uniform: shading changes across the image
    img = (x * 255).astype(np.uint8)
    plain = _augment(img, np.random.default_rng(2), AugmentConfig(rotation_deg=0, scale_min=1, scale_max=1,
                                                                  brightness=0, contrast=0, gamma=0))[0]
    assert np.abs(plain.astype(int) - img).max() <= 1  # no relighting unless asked for
