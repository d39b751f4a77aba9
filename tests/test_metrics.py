"""Pose errors, the accuracy table and the results file, against hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aceg.cli.main import main
from aceg.data.camera import Intrinsics, invert_pose, make_pose
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError
from aceg.evaluation.metrics import accuracy_table, format_table, pose_errors
from aceg.evaluation.results import (
    PoseResult,
    evaluate_results,
    read_results,
    write_results,
)


def rot_z(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_identical_poses_have_zero_error():
    pose = make_pose(rot_z(40), [1, 2, 3])
    assert pose_errors(pose, pose) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_known_rotation_and_translation_errors():
    gt = make_pose(np.eye(3), [0, 0, 0])
    est = make_pose(rot_z(30), [0.03, 0.04, 0.0])
    rot, trans = pose_errors(est, gt)
    assert rot == pytest.approx(30.0)
    assert trans == pytest.approx(0.05)


def test_translation_error_is_between_camera_centres_not_world_to_camera_t():
    # Same rotation 90 deg, centres 1 m apart: world-to-camera translations differ by a
    # rotated vector of the same length, so use a case where they differ in direction.
    gt = make_pose(rot_z(90), [1, 0, 0])
    est = make_pose(rot_z(90), [0, 0, 0])
    assert pose_errors(est, gt)[1] == pytest.approx(1.0)


def test_accuracy_table_hand_computed():
    rot = [1.0, 3.0, 15.0, math.inf]
    trans = [0.01, 0.08, 0.15, math.inf]
    t = accuracy_table(rot, trans)
    assert t.frames == 4
    assert t.within == {"5cm/5deg": 25.0, "10cm/10deg": 50.0, "20cm/20deg": 75.0}
    assert t.localized_pct == 75.0
    assert t.median_rot_deg == pytest.approx(9.0)
    assert t.median_trans_m == pytest.approx(0.115)
    text = format_table(t, "x")
    assert "25.0%" in text and "75.0%" in text


def test_threshold_needs_both_rotation_and_translation():
    t = accuracy_table([6.0], [0.01])
    assert t.within["5cm/5deg"] == 0.0 and t.within["10cm/10deg"] == 100.0


def test_results_file_is_world_to_camera(tmp_path: Path):
    # Camera centre C = (1, 2, 3), axes aligned with the world: world-to-camera t = -C.
    pose = make_pose(np.eye(3), [1, 2, 3])
    path = tmp_path / "poses.txt"
    write_results(path, [PoseResult("a.png", pose, 42, 0.5, 0.01)])
    fields = path.read_text().split()
    assert fields[0] == "a.png"
    assert [float(v) for v in fields[1:8]] == pytest.approx([1, 0, 0, 0, -1, -2, -3])
    assert int(fields[10]) == 42
    back = read_results(path)[0]
    assert back.cam_to_world == pytest.approx(pose)


def test_results_rotation_direction(tmp_path: Path):
    # Camera rotated +90 deg about world z (camera-to-world). The file's quaternion is the
    # world-to-camera rotation, i.e. -90 deg about z: (cos 45, 0, 0, -sin 45).
    pose = make_pose(rot_z(90), [0, 0, 0])
    path = tmp_path / "p.txt"
    write_results(path, [PoseResult("b.png", pose)])
    q = [float(v) for v in path.read_text().split()[1:5]]
    s = math.sqrt(0.5)
    assert q == pytest.approx([s, 0, 0, -s])
    assert read_results(path)[0].cam_to_world == pytest.approx(pose)


def test_results_keep_the_confident_flag_and_centre_spread(tmp_path: Path):
    path = tmp_path / "p.txt"
    pose = make_pose(np.eye(3), [1, 2, 3])
    write_results(path, [PoseResult("a.png", pose, 300, confident=True, centre_std_m=0.012),
                         PoseResult("b.png", pose, 60, confident=False, centre_std_m=0.4),
                         PoseResult("c.png", pose, 70)])
    a, b, c = read_results(path)
    assert (a.confident, a.centre_std_m, a.inliers) == (True, pytest.approx(0.012), 300)
    assert (b.confident, b.centre_std_m) == (False, pytest.approx(0.4))
    assert c.confident is None and math.isnan(c.centre_std_m)  # ACE's 11 columns: unknown
    path.write_text("a.png 1 0 0 0 1 2 3 nan nan 300 2 0.01\n")
    with pytest.raises(AcegError, match="confident flag must be 0 or 1"):
        read_results(path)


def test_not_localized_written_as_comment(tmp_path: Path):
    path = tmp_path / "p.txt"
    write_results(path, [PoseResult("c.png", None, reason="too few correspondences")])
    assert path.read_text().startswith("# not localized: c.png")
    assert read_results(path) == []


@pytest.mark.parametrize(
    "line, message",
    [
        ("a.png 1 0 0 0 1 2", "expected 8, 11 or 13 columns"),
        ("a.png 1 0 0 0 x 2 3", "cannot parse"),
        ("a.png nan 0 0 0 1 2 3", "non-finite"),
        ("a.png 2 0 0 0 1 2 3", "not unit length"),
    ],
)
def test_malformed_results_lines(tmp_path: Path, line: str, message: str):
    path = tmp_path / "bad.txt"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(AcegError, match=message) as err:
        read_results(path)
    assert f"{path}:2" in str(err.value)


def _scene(poses: dict[str, np.ndarray]) -> Scene:
    k = Intrinsics(500, 500, 320, 240)
    return Scene("gt", [Frame(n, Path(n), 640, 480, k, p) for n, p in poses.items()])


def test_evaluate_results_counts_missing_as_not_localized():
    gt = _scene({"a.png": make_pose(np.eye(3), [0, 0, 0]), "b.png": make_pose(np.eye(3), [1, 0, 0])})
    est = [PoseResult("a.png", make_pose(np.eye(3), [0.02, 0, 0]))]
    evaluated, table = evaluate_results(gt, est)
    assert evaluated[0].trans_err_m == pytest.approx(0.02)
    assert not evaluated[1].localized
    assert table.within["5cm/5deg"] == 50.0 and table.localized_pct == 50.0


def test_evaluate_results_rejects_unknown_images():
    gt = _scene({"a.png": np.eye(4)})
    with pytest.raises(AcegError, match="not in the ground truth"):
        evaluate_results(gt, [PoseResult("zzz.png", np.eye(4))])


def test_eval_cli_bad_file_exits_2(tmp_path: Path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png 1 0 0\n")
    gt = tmp_path / "missing-scene"
    code = main(["eval", "--gt", str(gt), "--poses", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("aceg: error:") and err.count("\n") == 1


def test_world_to_camera_and_back_consistent():
    pose = make_pose(rot_z(17), [0.3, -2, 5])
    w2c = invert_pose(pose)
    point_world = np.array([1.0, 1.0, 1.0])
    point_cam = w2c[:3, :3] @ point_world + w2c[:3, 3]
    assert pose[:3, :3] @ point_cam + pose[:3, 3] == pytest.approx(point_world)
