"""``aceg export``: the map's point cloud as a PLY that a standard reader (trimesh) opens,
with points where the scene is, colours from the images, and optional frusta."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import trimesh

from aceg.cli.main import main
from aceg.data.images import prepare_image
from aceg.localization.localizer import Localizer
from aceg.mapping.mapper import map_scene
from aceg.visualization.map_cloud import FRUSTUM_COLOR, map_point_cloud, patch_colours
from tiny_map import tiny_map


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


def load_ply(path):
    cloud = trimesh.load(path)
    assert isinstance(cloud, trimesh.PointCloud)
    return np.asarray(cloud.vertices), np.asarray(cloud.colors)[:, :3]


def plane_distance(points: np.ndarray) -> np.ndarray:
    """Distance to the nearer of the corner scene's two planes (wall z = 0, floor y = 1)."""
    return np.minimum(np.abs(points[:, 2]), np.abs(points[:, 1] - 1.0))


def test_export_ply_opens_and_matches_the_scene(tiny, tmp_path, capsys):
    out = tmp_path / "cloud.ply"
    assert main(["export", str(tiny.map_path), str(tiny.ace_dir), "--ply", str(out)]) == 0
    printed = capsys.readouterr().out
    points, colors = load_ply(out)
    n = len(tiny.scene) * (120 // 8) * (160 // 8)  # 8 images of 15 x 20 patches
    assert 0.8 * n <= len(points) <= n
    assert f"wrote {out}: {len(points)} map points from 8 images ({n} patches" in printed
    # world frame, metres: the points lie on the wall / floor in front of the cameras
    assert np.median(plane_distance(points)) < 0.4
    assert np.all(points[:, 2] > -3.5) and np.all(np.abs(points[:, 0]) < 4)
    # colours come from the images: varied, not a constant fill
    assert len(np.unique(colors, axis=0)) > 100


def test_export_colours_are_patch_means(tiny):
    localizer = Localizer(tiny.map_path)
    one = tiny.scene.subset([0])
    cloud = map_point_cloud(localizer, one, max_reproj_px=None)
    prep = prepare_image(one[0].image_path, one[0].intrinsics, localizer.data.short_side, 8)
    expected = patch_colours(prep.rgb, 15, 20, 8)
    assert cloud.counts["patches"] == 300 == len(cloud.points)
    np.testing.assert_array_equal(cloud.colors, expected)
    block = prep.rgb[8:16, 16:24].reshape(-1, 3).mean(axis=0)  # patch (row 1, col 2)
    np.testing.assert_allclose(expected[1 * 20 + 2], block, atol=1)
    # the same points localization predicts
    feats = localizer.encoder.encode(prep.rgb)[0]
    world, _ = localizer.predict(feats)
    np.testing.assert_allclose(cloud.points, world)


def test_export_with_frusta(tiny, tmp_path):
    plain, with_frusta = tmp_path / "a.ply", tmp_path / "b.ply"
    assert main(["export", str(tiny.map_path), str(tiny.ace_dir), "--ply", str(plain)]) == 0
    assert main(["export", str(tiny.map_path), str(tiny.ace_dir), "--ply", str(with_frusta),
                 "--frusta", "--frustum-size", "0.2"]) == 0
    p0, _ = load_ply(plain)
    p1, c1 = load_ply(with_frusta)
    extra = p1[len(p0):]
    assert len(extra) > 0 and np.all(c1[len(p0):] == FRUSTUM_COLOR)
    # every camera centre (frustum apex) is in the file
    for frame in tiny.scene.frames:
        assert np.min(np.linalg.norm(extra - frame.camera_centre, axis=1)) < 1e-5


def test_export_reprojection_filter_and_subsample(tiny, tmp_path):
    loose, tight = tmp_path / "loose.ply", tmp_path / "tight.ply"
    assert main(["export", str(tiny.map_path), str(tiny.ace_dir), "--ply", str(loose),
                 "--max-reproj-px", "0"]) == 0
    assert main(["export", str(tiny.map_path), str(tiny.ace_dir), "--ply", str(tight),
                 "--max-reproj-px", "1", "--max-points", "500"]) == 0
    assert len(load_ply(loose)[0]) == 8 * 300  # filter off: every patch
    assert len(load_ply(tight)[0]) <= 500


@pytest.mark.parametrize("extra, message", [
    (["--keep-quantile", "0"], "--keep-quantile"),
    (["--keep-quantile", "1.5"], "--keep-quantile"),
    (["--max-points", "0"], "--max-points"),
    (["--frustum-size", "-1"], "--frustum-size"),
])
def test_export_bad_options(tiny, tmp_path, capsys, extra, message):
    out = tmp_path / "x.ply"
    assert main(["export", str(tiny.map_path), str(tiny.ace_dir), "--ply", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_export_not_a_map(tiny, tmp_path, capsys):
    bogus = tmp_path / "bogus.map"
    bogus.write_bytes(b"not a map")
    out = tmp_path / "x.ply"
    assert main(["export", str(bogus), str(tiny.ace_dir), "--ply", str(out)]) == 2
    assert "bogus.map" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bogus]


def test_export_aceg_map_uncertainty_filter(tiny, tmp_path):
    """ACE-G maps: --keep-quantile keeps that fraction of each image's patches (the least
    uncertain), before the reprojection filter."""
    path = tmp_path / "g.map"
    scene = tiny.scene.subset([0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # three tiny images: few anchors
        map_scene(scene, path, model="anchors", short_side=120, progress=False)
    localizer = Localizer(path)
    half = map_point_cloud(localizer, scene, keep_quantile=0.5, max_reproj_px=None)
    full = map_point_cloud(localizer, scene, keep_quantile=1.0, max_reproj_px=None)
    assert full.counts["uncertainty"] == full.counts["finite"] == 900
    assert abs(half.counts["uncertainty"] - 450) <= 3
    # the kept half is the least uncertain half of each image
    prep = prepare_image(scene[0].image_path, scene[0].intrinsics, 120, 8)
    feats = localizer.encoder.encode(prep.rgb)[0]
    world, log_unc = localizer.predict(feats)
    kept = log_unc <= np.quantile(log_unc, 0.5)
    np.testing.assert_allclose(half.points[: int(kept.sum())], world[kept])
    out = tmp_path / "g.ply"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", str(path), str(tiny.ace_dir), "--ply", str(out),
                     "--keep-quantile", "0.5", "--max-reproj-px", "0"]) == 0
    assert abs(len(load_ply(out)[0]) - 8 * 150) <= 8
