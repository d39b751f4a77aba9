"""Sparse depth triangulated between posed mapping images (RGB-only geometry for mapping)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from aceg.cli.main import main
from aceg.errors import AcegError
from aceg.mapping.anchor_map import anchor_code
from aceg.mapping.buffer import buffer_from_cells, build_buffer
from aceg.mapping.mapper import map_scene
from aceg.mapping.tracks import track_labels, triangulate_tracks
from aceg.mapping.triangulation import (
    LARGE_SCENE_IMAGES,
    LARGE_SCENE_KEYPOINTS,
    SMALL_SCENE_IMAGES,
    SMALL_SCENE_KEYPOINTS,
    TRIANGULATION_CONFIG,
    CellDepthMaps,
    default_keypoints,
    default_triangulation,
    depth_maps_of,
    keypoint_depth_map,
    refine_cell_depth,
    triangulate_mapping_keypoints,
    triangulated_depth_maps,
)
from aceg.model.ace_head import AceHeadConfig
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_map
from planar_scenes import corner_depth, corner_scene


def test_keypoint_depth_map_fills_cells_with_the_median():
    kp = np.array([[1.0, 1.0], [6.0, 2.0], [7.4, 7.4], [9.0, 3.0], [20.0, 12.0], [3.0, 3.0]])
    z = np.array([2.0, 4.0, 3.0, 5.0, np.nan, -1.0])
    depth = keypoint_depth_map(kp, z, 16, 24, 8)
    assert depth.shape == (16, 24)
    assert np.all(depth[:8, :8] == 3.0)  # median of 2, 4, 3 (the negative one is ignored)
    assert np.all(depth[:8, 8:16] == 5.0)
    assert np.all(depth[8:, :] == 0) and np.all(depth[:8, 16:] == 0)  # NaN keypoint: nothing
    assert keypoint_depth_map(np.zeros((0, 2)), np.zeros(0), 16, 24, 8).max() == 0


def test_cell_depth_maps_give_back_the_full_maps():
    """A map constant over each cell is stored as its grid of cells and comes back whole,
    also when the image size is not a multiple of the cell size."""
    rng = np.random.default_rng(1)
    maps = CellDepthMaps(8)
    made = []
    for h, w in ((60, 84), (64, 80)):
        kp = rng.uniform(0, [w - 1, h - 1], (300, 2))
        depth = refine_cell_depth(keypoint_depth_map(kp, rng.uniform(1, 3, 300), h, w, 8), 8)
        maps.append(depth)
        made.append(depth)
    assert len(maps) == 2 and maps._grids[0].shape == (8, 11)
    for i, depth in enumerate(made):
        assert maps[i].shape == depth.shape and np.array_equal(maps[i], depth)
    assert [m.shape for m in maps[:1]] == [(60, 84)]


def test_small_scenes_get_more_keypoints():
    assert default_keypoints(1) == default_keypoints(SMALL_SCENE_IMAGES) == SMALL_SCENE_KEYPOINTS == 2048
    assert default_keypoints(SMALL_SCENE_IMAGES + 1) == default_keypoints(LARGE_SCENE_IMAGES) == 1024
    assert default_keypoints(LARGE_SCENE_IMAGES + 1) == LARGE_SCENE_KEYPOINTS == 512
    # large places also stop LighterGlue early; the rest stays the shipped configuration
    assert default_triangulation(LARGE_SCENE_IMAGES).depth_confidence == -1
    large = default_triangulation(2000)
    assert large.depth_confidence == 0.95 and large.max_keypoints == 512
    assert default_triangulation(2000, 128).max_keypoints == 128
    assert replace(large, max_keypoints=1024, depth_confidence=-1) == TRIANGULATION_CONFIG


def test_track_labels_are_connected_components():
    links = np.array([[0, 3], [3, 5], [5, 7], [1, 2], [8, 6]])
    labels = track_labels(10, links)
    assert labels.tolist() == [0, 1, 1, 0, 4, 0, 6, 0, 6, 9]
    chain = np.c_[np.arange(99, 0, -1), np.arange(98, -1, -1)]  # one long chain, listed backwards
    assert np.all(track_labels(100, chain) == 0)
    assert track_labels(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenCV axes: x right, y down, z forward) at ``centre`` facing ``target``."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.c_[x, np.cross(z, x), z]
    c2w[:3, 3] = centre
    return c2w


def test_tracks_triangulate_from_all_views():
    """Matches chained over a row of cameras give each point from its widest views: more
    accurate than any neighbouring pair, bad views are dropped, ambiguous tracks refused."""
    rng = np.random.default_rng(0)
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    world = rng.uniform([-1, -1, 4], [1, 1, 5], (200, 3))
    c2ws = [_look_at(np.array([0.1 * i, 0, 0]), np.array([0.0, 0, 4.5])) for i in range(8)]
    projections = [K @ np.linalg.inv(c)[:3] for c in c2ws]
    keypoints = []
    for P in projections:
        h = np.c_[world, np.ones(len(world))] @ P.T
        keypoints.append(h[:, :2] / h[:, 2:] + rng.normal(0, 0.3, (len(world), 2)))
    keypoints[3][7] += [40.0, 0.0]  # point 7 is mismatched in image 3
    ids = np.arange(len(world))
    edges = [(i, i + 1, np.c_[ids, ids]) for i in range(7)]  # neighbouring images only
    edges.append((0, 5, np.array([[11, 12]])))  # a wrong match joins points 11 and 12: ambiguous
    centres = np.stack([c[:3, 3] for c in c2ws])
    points = triangulate_tracks(keypoints, edges, projections, centres, 2.0, 1.0)
    assert len(points) == 8 and all(p.shape == (200, 3) for p in points)
    assert all(np.isnan(points[i][k]).all() for i in range(8) for k in (11, 12))  # ambiguous
    good = np.setdiff1d(ids, [11, 12])
    error = np.linalg.norm(points[0][good] - world[good], axis=1)
    assert np.isfinite(error).all() and np.median(error) < 0.05
    assert np.allclose(points[4][good], points[0][good])  # one point per track, in every view
    assert np.isnan(points[3][7]).all() and np.linalg.norm(points[0][7] - world[7]) < 0.05
    # the same noise triangulated from one neighbouring pair alone is far worse
    pair = triangulate_tracks(keypoints[:2], [(0, 1, np.c_[good, good])], projections[:2],
                              centres[:2], 2.0, 0.1)
    assert np.median(np.linalg.norm(pair[0][good] - world[good], axis=1)) > 3 * np.median(error)
    # the cameras' rays meet at under 10 deg: every track is refused at 15 deg
    narrow = triangulate_tracks(keypoints, edges, projections, centres, 2.0, 15.0)
    assert all(np.isnan(p).all() for p in narrow)


def test_refine_fills_and_denoises_planes_not_edges():
    """Empty cells between cells on one plane get the plane's depth and noisy cells move
    towards it; cells between two surfaces at different depths, or beyond the known ones,
    stay as they were."""
    s, rows, cols = 8, 10, 12
    v, u = np.mgrid[0: rows * s, 0: cols * s] + 0.5
    plane = 1.0 / (0.25 + 0.0005 * u + 0.0003 * v)  # a 3-D plane: inverse depth affine in the image
    truth = plane[4::s, 4::s]
    sparse = np.zeros_like(plane, dtype=np.float32)
    for r in range(0, rows, 2):
        for c in range(0, cols, 2):
            sparse[r * s: (r + 1) * s, c * s: (c + 1) * s] = plane[r * s + 4, c * s + 4]
    filled = refine_cell_depth(sparse, s, radius=2, min_neighbours=3, max_residual=0.02, smooth=False,
                               fill=True)
    centre = filled[4::s, 4::s]
    assert (centre[:-1, :-1] > 0).all()  # every cell inside the known ones filled
    assert np.allclose(centre[:-1, :-1], truth[:-1, :-1], rtol=1e-3)
    known = sparse > 0
    assert np.array_equal(filled[known], sparse[known])  # not smoothed
    assert (centre[-1] == 0).all() and (centre[:, -1] == 0).all()  # last row, column: extrapolation
    step = sparse.copy()
    step[:, 6 * s:] *= 2.0  # a depth edge between columns 5 and 6
    centre = refine_cell_depth(step, s, radius=2, min_neighbours=3, max_residual=0.02, fill=True)[4::s, 4::s]
    assert (centre[1:-1, 5] == 0).all() and (centre[1:-1:2, 3] > 0).all()
    assert refine_cell_depth(np.zeros((16, 16), np.float32), s, fill=True).max() == 0
    # 3 % noise on a dense plane: smoothing (the default) takes most of it out; filling alone
    # leaves it be
    rng = np.random.default_rng(0)
    noisy = (plane * np.kron(1 + 0.03 * rng.standard_normal((rows, cols)), np.ones((s, s)))).astype(np.float32)
    before = np.abs(noisy[4::s, 4::s] / truth - 1)[2:-2, 2:-2]
    smoothed = refine_cell_depth(noisy, s, max_residual=0.1)[4::s, 4::s]
    assert np.mean(np.abs(smoothed / truth - 1)[2:-2, 2:-2]) < 0.5 * np.mean(before)
    assert np.array_equal(refine_cell_depth(noisy, s, smooth=False, fill=True), noisy)
    # without keep_unconfirmed a depth no plane confirms is dropped: a lone cell goes, the
    # cells of a plane stay
    lone = np.zeros_like(sparse)
    lone[:s, :s] = 3.0
    assert refine_cell_depth(lone, s, keep_unconfirmed=False).max() == 0
    assert refine_cell_depth(lone, s).max() == 3.0
    kept = refine_cell_depth(sparse, s, min_neighbours=3, smooth=False, keep_unconfirmed=False)
    assert np.array_equal(kept[kept > 0], sparse[kept > 0]) and (kept > 0).mean() > 0.5 * (sparse > 0).mean()


@pytest.mark.parametrize("depth_confidence", [-1.0, 0.95])  # every LighterGlue layer, early stop
def test_triangulated_depth_matches_the_true_depth(tmp_path, depth_confidence):
    scene = corner_scene(tmp_path / "s", n=6)
    config = replace(TRIANGULATION_CONFIG, max_keypoints=2048, depth_confidence=depth_confidence)
    maps, stats = triangulated_depth_maps(scene, 120, 8, config, progress=False)
    assert len(maps) == 6 and stats["points"] > 100 and stats["cells"] > 5
    errors = []
    for frame, depth in zip(scene.frames, maps, strict=True):
        assert depth.shape == (120, 160)
        truth = corner_depth(frame.intrinsics.K, frame.cam_to_world, (160, 120))
        centres = depth[4::8, 4::8]  # one pixel per patch cell (patch centres)
        known = centres > 0
        errors.append(np.abs(centres[known] / truth[4::8, 4::8][known] - 1))
    errors = np.concatenate(errors)
    # Tiny 160x120 views with short baselines: a few % (held-out synthetic rooms at 320x240:
    # median 3 %). A cell takes the depth of its keypoints, up to 4 px from the patch centre.
    assert np.median(errors) < 0.06 and np.mean(errors < 0.2) > 0.85


def test_mapping_with_triangulated_depth(tmp_path):
    scene = corner_scene(tmp_path / "s", n=6)
    maps, _ = triangulated_depth_maps(scene, 120, 8, progress=False)
    buf = build_buffer(scene, get_encoder("xfeat"), 120, passes=2, depth_maps=maps)
    assert buf.target is not None and 0.05 < buf.target_valid.float().mean() < 1
    # keeping only the patches with a target: the same anchors in a fraction of the memory
    full = build_buffer(scene, get_encoder("xfeat"), 120, passes=1, augment=None, depth_maps=maps)
    kept = build_buffer(scene, get_encoder("xfeat"), 120, passes=1, augment=None, depth_maps=maps,
                        targets_only=True)
    valid = full.target_valid
    assert kept.target_valid.all() and len(kept) == int(valid.sum()) and kept.dropped == int((~valid).sum())
    assert torch.equal(kept.features, full.features[valid]) and torch.equal(kept.target, full.target[valid])
    assert torch.equal(kept.frame, full.frame[valid]) and torch.equal(kept.pixels, full.pixels[valid])
    model = AnchorRegressor(AnchorConfig())
    code_full, stats_full = anchor_code(model, full, torch.Generator().manual_seed(0), 50)
    code_kept, stats_kept = anchor_code(model, kept, torch.Generator().manual_seed(0), 50)
    assert torch.equal(code_full, code_kept) and stats_full == stats_kept
    with pytest.raises(ValueError, match="targets_only needs targets"):
        build_buffer(scene, get_encoder("xfeat"), 120, passes=1, targets_only=True)
    with pytest.raises(ValueError, match="2 depth maps for 6 frames"):
        build_buffer(scene, get_encoder("xfeat"), 120, passes=1, depth_maps=maps[:2])
    result = map_scene(scene, tmp_path / "t.map", model="ace", preset="fast", triangulate=True,
                       short_side=120, iterations=40, batch_size=512,
                       head_config=AceHeadConfig(64, 64, 1), progress=False)
    tri = load_map(result.path).stats["triangulated"]
    assert tri["points"] > 100 and tri["cells"] > 5
    with pytest.raises(AcegError, match="choose one source of depth"):
        map_scene(scene, tmp_path / "x.map", model="ace", use_depth=True, triangulate=True)
    single = scene.subset([0])  # no second view: nothing to triangulate
    with pytest.raises(AcegError, match="no keypoint could be triangulated"):
        map_scene(single, tmp_path / "y.map", model="ace", triangulate=True, short_side=120,
                  progress=False)
    assert not (tmp_path / "x.map").exists() and not (tmp_path / "y.map").exists()


def test_cli_map_triangulate(tmp_path, capsys):
    """`aceg map --triangulate` reports what it triangulated; with --depth it is refused."""
    from aceg.data.synthetic import generate_scene

    generate_scene(tmp_path / "room", 7, frames_mapping=8, frames_query=0, height=96, width=128,
                   splits=("mapping",), contact_sheet=False)
    args = ["map", str(tmp_path / "room" / "mapping"), str(tmp_path / "m.map"), "--model", "ace",
            "--preset", "fast", "--iterations", "5", "--batch-size", "256", "--triangulate"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "triangulation:" in out and "keypoints with a 3-D point of 2048 per image" in out  # small scene
    points = int(re.search(r"(\d+) keypoints with a 3-D point", out).group(1))
    assert main(args + ["--keypoints", "64"]) == 0
    out = capsys.readouterr().out
    few = int(re.search(r"(\d+) keypoints with a 3-D point of 64 per image", out).group(1))
    assert 0 < few < points
    assert main(args + ["--keypoints", "3"]) != 0
    assert "triangulation keypoints must be at least 16, got 3" in capsys.readouterr().err
    assert main(args + ["--depth"]) != 0
    assert "choose one source of depth" in capsys.readouterr().err


def test_the_keypoint_pass_encodes_the_anchor_cells(tmp_path, monkeypatch):
    """Images in multiples of 32 pixels: the anchor map takes its cells' features from the
    triangulation's XFeat pass instead of encoding the images again, and is the same map."""
    import aceg.mapping.common as common
    from aceg.data.synthetic import generate_scene

    generate_scene(tmp_path / "room", 3, frames_mapping=8, frames_query=0, height=96, width=128,
                   splits=("mapping",), contact_sheet=False)
    from aceg.data.readers import read_scene

    scene = read_scene(tmp_path / "room" / "mapping")
    assert common.keypoint_pass_encodes(scene, get_encoder("xfeat"), 96)
    assert not common.keypoint_pass_encodes(scene, get_encoder("xfeat"), 72)  # 72 x 96: resized
    encoded = []
    monkeypatch.setattr(common, "build_buffer", lambda *a, **k: encoded.append(1) or build_buffer(*a, **k))
    fast = map_scene(scene, tmp_path / "fast.map", model="anchors", progress=False)
    assert not encoded  # no second pass over the images
    monkeypatch.setattr(common, "keypoint_pass_encodes", lambda *a: False)
    slow = map_scene(scene, tmp_path / "slow.map", model="anchors", progress=False)
    assert encoded == [1]
    assert fast.patches == slow.patches == 8 * 12 * 16  # every cell counted, kept or not
    for key in ("anchors", "cells"):
        assert fast.stats[key] == slow.stats[key]
    assert fast.stats["triangulated"]["points"] == slow.stats["triangulated"]["points"] > 0
    a, b = load_map(tmp_path / "fast.map"), load_map(tmp_path / "slow.map")
    assert a.code.shape[0] > 50 and torch.equal(a.code, b.code)
    # and the buffers themselves, patch for patch
    tri = triangulate_mapping_keypoints(scene, 96, progress=False, keep_cells=True)
    maps, _ = depth_maps_of(scene, tri, 8)
    cells = buffer_from_cells(scene, tri.keypoints, maps, 8)
    encoded = build_buffer(scene, get_encoder("xfeat"), 96, passes=1, augment=None, depth_maps=maps,
                           targets_only=True)
    for name in ("features", "pixels", "frame", "target", "K", "world_to_cam"):
        assert torch.equal(getattr(cells, name), getattr(encoded, name)), name
    assert cells.dropped == encoded.dropped > 0 and len(cells) > 50
