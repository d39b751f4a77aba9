"""``aceg view``: what the viewer draws (points, frusta, view direction), bad input, and
the scene as a real headless chromium shows it (``--screenshot``)."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from aceg.cli.main import main
from aceg.data.camera import make_pose
from aceg.data.writers import write_ace_scene
from aceg.evaluation.results import PoseResult, write_results
from aceg.mapping.mapper import map_scene
from aceg.model.map_file import load_map
from aceg.visualization.viewer import (
    CONFIDENT_COLOR,
    build_view,
    find_chromium,
    frustum_segments,
    image_colours,
    read_query_poses,
)
from planar_scenes import corner_scene

SIZE = (160, 120)


@pytest.fixture(scope="module")
def anchors(tmp_path_factory):
    """A tiny anchor map of 6 corner views, the scene in ACE layout, and a results file of
    three queries (views 0-2 of the scene): one with many inliers, one with few (both
    estimates 5 cm off their truth), one not localized."""
    root = tmp_path_factory.mktemp("view")
    scene = corner_scene(root / "images", n=6, size=SIZE, name="corner")
    ace_dir = root / "corner-ace"
    write_ace_scene(scene, ace_dir)
    map_path = root / "corner.map"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # six tiny images: few anchors
        map_scene(scene, map_path, model="anchors", short_side=120, progress=False)
    results = []
    for i, inliers in ((0, 900), (1, 40)):
        pose = scene[i].cam_to_world.copy()
        pose[:3, 3] += [0.05, 0.0, 0.0]
        results.append(PoseResult(scene[i].name, pose, inliers, 1.0, 0.05))
    results.append(PoseResult(scene[2].name, None, reason="too few inliers"))
    poses = root / "poses.txt"
    write_results(poses, results)
    return map_path, scene, ace_dir, poses


def test_view_draws_the_anchor_points_and_the_cameras(anchors):
    map_path, scene, _, poses = anchors
    data = load_map(map_path)
    width = data.regressor_config.feature_dim
    expected = np.unique(data.code[:, width:].double().numpy(), axis=0) + data.scene_centre
    queries = read_query_poses(poses)
    assert [r.name for r in queries.results] == [scene[0].name, scene[1].name]
    assert queries.failed == [scene[2].name]
    mapping = scene.subset([3, 4, 5])
    view = build_view(map_path, mapping=mapping, queries=queries, gt=scene)
    np.testing.assert_allclose(view.points, expected)
    groups = {g.key: g for g in view.cameras}
    assert {k: g.count for k, g in groups.items()} == {
        "mapping": 3, "queries_confident": 1, "queries_unsure": 1, "queries_failed": 1,
        "ground_truth": 2}
    assert groups["queries_failed"].names == [scene[2].name]  # drawn at its ground truth
    np.testing.assert_allclose(groups["mapping"].centres, mapping.camera_centres())
    np.testing.assert_allclose(groups["queries_confident"].centres[0],
                               scene[0].camera_centre + [0.05, 0, 0])
    assert len(view.links) == 2
    # the corner scene's cameras are upright (y down): up is -y
    assert view.up @ np.array([0.0, -1.0, 0.0]) > 0.95
    # the first view looks at the points' median from behind the cameras (they look +z)
    np.testing.assert_allclose(view.look_at, np.median(view.points, axis=0))
    direction = view.look_at - view.position
    assert direction[2] > 0 and view.position[2] < scene.camera_centres()[:, 2].max()
    # colours come from the images: varied, not a fill
    assert len(np.unique(view.colors, axis=0)) > 20
    assert "coloured by the mapping images" in " ".join(view.legend)


def test_view_colours_queries_by_the_confident_flag_when_the_file_has_it(anchors, tmp_path):
    map_path, scene, _, _ = anchors
    pose = scene[0].cam_to_world
    path = tmp_path / "flagged.txt"
    # many inliers but not flagged, few inliers but flagged: the flag decides
    write_results(path, [PoseResult(scene[0].name, pose, 900, confident=False, centre_std_m=0.3),
                         PoseResult(scene[1].name, pose, 40, confident=True, centre_std_m=0.01)])
    view = build_view(map_path, queries=read_query_poses(path))
    groups = {g.key: g for g in view.cameras}
    assert groups["queries_confident"].names == [scene[1].name]
    assert groups["queries_unsure"].names == [scene[0].name]
    assert "flagged confident" in " ".join(view.legend)


def test_view_without_scene_colours_by_height(anchors):
    map_path, *_ = anchors
    view = build_view(map_path)
    assert view.cameras == []
    assert "coloured by height" in " ".join(view.legend)
    # the ramp runs along the up direction (world +z without cameras)
    order = np.argsort(view.points @ view.up)
    low, high = view.colors[order[:20]].astype(int), view.colors[order[-20:]].astype(int)
    assert low[:, 2].mean() > low[:, 0].mean() and high[:, 0].mean() > high[:, 2].mean()


def test_frustum_segments_reach_the_image_corners():
    K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
    pose = make_pose(np.eye(3), [1.0, 2.0, 3.0])
    segs = frustum_segments(pose, K, 160, 120, depth=0.5)
    assert segs.shape == (8, 2, 3)
    np.testing.assert_allclose(segs[:4, 0], np.tile([1.0, 2.0, 3.0], (4, 1)))  # apex
    np.testing.assert_allclose(segs[:4, 1, 2], 3.5)  # the base 0.5 m ahead (+z)
    np.testing.assert_allclose(segs[0, 1], [1 + 0.5 * -80 / 100, 2 + 0.5 * -60 / 100, 3.5])


def test_image_colours_take_the_pixel_a_point_projects_to(anchors):
    _, scene, _, _ = anchors
    frame = scene[0]
    from aceg.data.images import load_image

    rgb = load_image(frame.image_path)
    K, c2w = frame.intrinsics.K, frame.cam_to_world
    pixels = np.array([[20.0, 30.0], [100.0, 60.0]])
    rays = np.c_[pixels, np.ones(2)] @ np.linalg.inv(K).T * 2.0  # 2 m deep
    world = rays @ c2w[:3, :3].T + c2w[:3, 3]
    behind = c2w[:3, 3] - c2w[:3, 2]  # 1 m behind the camera
    colours, seen = image_colours(np.vstack([world, behind]), [frame])
    np.testing.assert_array_equal(colours[:2], rgb[[30, 60], [20, 100]])
    assert seen.tolist() == [True, True, False]


@pytest.mark.parametrize("what", ["missing", "corrupt"])
def test_bad_map_is_one_line_naming_it(tmp_path, capsys, what):
    path = tmp_path / "bad.map"
    if what == "corrupt":
        path.write_bytes(b"\x00" * 64)
    assert main(["view", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.map" in err[0] and err[0].startswith("aceg: error:")


@pytest.mark.parametrize("text, problem", [
    ("0000.png 1 0 0\n", "expected 8, 11 or 13 columns"),
    ("# only a comment\n", "holds no pose"),
    (None, "not found"),
])
def test_bad_results_file_is_one_line_naming_it(anchors, tmp_path, capsys, text, problem):
    map_path, *_ = anchors
    path = tmp_path / "results.txt"
    if text is not None:
        path.write_text(text)
    assert main(["view", str(map_path), "--poses", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.txt" in err[0] and problem in err[0]


def test_ace_map_shows_its_predictions_for_the_scene(capsys, tmp_path_factory):
    """An ACE map stores no points: without --scene a one-line error, with it the points it
    predicts for the mapping images, in their colours."""
    from tiny_map import tiny_map

    tiny = tiny_map(tmp_path_factory)
    assert main(["view", str(tiny.map_path)]) == 2
    err = capsys.readouterr().err
    assert "corner.map" in err and "stores no 3-D points" in err and "--scene" in err
    view = build_view(tiny.map_path, mapping=tiny.scene)
    assert len(view.points) > 0.8 * 8 * 15 * 20  # 8 images of 15 x 20 patches, a few dropped
    # on the wall (z = 0) or the floor (y = 1) of the corner scene
    near = np.minimum(np.abs(view.points[:, 2]), np.abs(view.points[:, 1] - 1.0))
    assert np.median(near) < 0.4
    assert len(np.unique(view.colors, axis=0)) > 100
    assert {g.key: g.count for g in view.cameras} == {"mapping": 8}


needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium on the PATH (./run test installs Debian's chromium package)")


def _green(image: np.ndarray) -> int:
    """Pixels (RGB) whose green clearly dominates, below the panel's title bar (its green
    "connected" icon): the confident query frusta."""
    rgb = image[60:].astype(int)
    return int(((rgb[..., 1] > rgb[..., 0] + 70) & (rgb[..., 1] > rgb[..., 2] + 70)).sum())


@needs_chromium
@pytest.mark.slow
def test_screenshot_in_headless_chromium_shows_the_scene(anchors, tmp_path, capsys):
    """Two screenshots by the real browser: the map with its mapping cameras, and the same
    with the query cameras; the map's points and the green query frusta must be in them."""
    map_path, _, ace_dir, poses = anchors
    plain, with_queries = tmp_path / "plain.png", tmp_path / "queries.png"
    assert main(["view", str(map_path), "--scene", str(ace_dir), "--split", "2:0",
                 "--screenshot", str(plain), "--size", "640x400"]) == 0
    assert main(["view", str(map_path), "--scene", str(ace_dir), "--split", "2:0",
                 "--poses", str(poses), "--gt", str(ace_dir),
                 "--screenshot", str(with_queries), "--size", "640x400"]) == 0
    assert f"wrote {with_queries}" in capsys.readouterr().out
    a = cv2.imread(str(plain))[..., ::-1]
    b = cv2.imread(str(with_queries))[..., ::-1]
    assert a.shape == b.shape == (400, 640, 3)
    # the scene is drawn: the page is not one colour, and the points bring the images'
    # many colours (the page's own chrome has a handful)
    left = a[:, : a.shape[1] // 2]  # the panel floats on the right
    assert a.std() > 10 and len(np.unique(left.reshape(-1, 3), axis=0)) > 200
    # the query cameras: green frusta appear only when the results are shown
    assert _green(a) < 20 and _green(b) > 150, (_green(a), _green(b))
    assert np.abs(a.astype(int) - b.astype(int)).sum(axis=2).astype(bool).sum() > 1000
    assert CONFIDENT_COLOR[1] > CONFIDENT_COLOR[0] + 70  # what _green looks for
