"""Sparse depth triangulated between posed mapping images (RGB-only geometry for mapping)."""

from __future__ import annotations

import numpy as np
import pytest

from aceg.cli.main import main
from aceg.errors import AcegError
from aceg.mapping.buffer import build_buffer
from aceg.mapping.mapper import map_scene
from aceg.mapping.triangulation import keypoint_depth_map, triangulated_depth_maps
from aceg.model.ace_head import AceHeadConfig
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


def test_triangulated_depth_matches_the_true_depth(tmp_path):
    scene = corner_scene(tmp_path / "s", n=6)
    maps, stats = triangulated_depth_maps(scene, 120, 8, progress=False)
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
    with pytest.raises(ValueError, match="2 depth maps for 6 frames"):
        build_buffer(scene, get_encoder("xfeat"), 120, passes=1, depth_maps=maps[:2])
    result = map_scene(scene, tmp_path / "t.map", method="ace", preset="fast", triangulate=True,
                       short_side=120, iterations=40, batch_size=512,
                       head_config=AceHeadConfig(64, 64, 1), progress=False)
    tri = load_map(result.path).stats["triangulated"]
    assert tri["points"] > 100 and tri["cells"] > 5
    with pytest.raises(AcegError, match="choose one source of depth"):
        map_scene(scene, tmp_path / "x.map", method="ace", use_depth=True, triangulate=True)
    single = scene.subset([0])  # no second view: nothing to triangulate
    with pytest.raises(AcegError, match="no keypoint could be triangulated"):
        map_scene(single, tmp_path / "y.map", method="ace", triangulate=True, short_side=120,
                  progress=False)
    assert not (tmp_path / "x.map").exists() and not (tmp_path / "y.map").exists()


def test_cli_map_triangulate(tmp_path, capsys):
    """`aceg map --triangulate` reports what it triangulated; with --depth it is refused."""
    from aceg.data.synthetic import generate_scene

    generate_scene(tmp_path / "room", 7, frames_mapping=8, frames_query=0, height=96, width=128,
                   splits=("mapping",), contact_sheet=False)
    args = ["map", str(tmp_path / "room" / "mapping"), str(tmp_path / "m.map"), "--method", "ace",
            "--preset", "fast", "--iterations", "5", "--batch-size", "256", "--triangulate"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "triangulation:" in out and "keypoints with a 3-D point" in out
    assert main(args + ["--depth"]) != 0
    assert "choose one source of depth" in capsys.readouterr().err
