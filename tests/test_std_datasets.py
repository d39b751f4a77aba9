"""The standard relocalization data sets read in their native layouts (7-Scenes,
12-Scenes, Cambridge Landmarks, Indoor-6), on tiny fixtures written here in each layout:
poses converted to camera-to-world (a known centre and viewing direction), intrinsics,
depth maps, the official mapping / query split, lost poses skipped and counted, malformed
content refused naming file and line, and `aceg bench --dataset` running on the official
split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aceg.cli.main import main as aceg_main
from aceg.data.camera import Intrinsics, invert_pose, make_pose, rotation_to_quaternion
from aceg.data.readers import (
    detect_format,
    format_names,
    read_official_split,
    read_scene,
    split_formats,
)
from aceg.errors import AcegError
from aceg.evaluation import benchmark as bm

W, H = 32, 24


def _image(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb)


def _rotation(i: int) -> np.ndarray:
    """A rotation about an oblique axis by an angle that grows with ``i``."""
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    R, _ = cv2.Rodrigues(axis * (0.3 + 0.2 * i))
    return R


def _c2w(i: int) -> np.ndarray:
    """Camera-to-world pose of frame ``i``: centre (i, 2i, 0.5) metres."""
    return make_pose(_rotation(i), [float(i), 2.0 * i, 0.5])


def _matrix_text(m: np.ndarray) -> str:
    return "\n".join(" ".join(repr(float(v)) for v in row) for row in m) + "\n"


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(AcegError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- 7-Scenes


def make_7scenes(root: Path) -> Path:
    """``chess``: sequence 1 maps (2 frames), sequence 2 queries (2 frames)."""
    scene = root / "chess"
    scene.mkdir(parents=True)
    (scene / "TrainSplit.txt").write_text("sequence1\n")
    (scene / "TestSplit.txt").write_text("sequence2\n\n")
    for seq in (1, 2):
        for f in range(2):
            i = 2 * (seq - 1) + f
            base = scene / f"seq-{seq:02d}" / f"frame-{f:06d}"
            _image(Path(f"{base}.color.png"), i)
            Path(f"{base}.pose.txt").write_text(_matrix_text(_c2w(i)))
            depth = np.full((H, W), 65535, np.uint16)
            assert cv2.imwrite(f"{base}.depth.png", depth)
    return scene


def test_7scenes_frames_poses_intrinsics_and_split(tmp_path):
    scene_dir = make_7scenes(tmp_path)
    assert detect_format(scene_dir) == "7scenes"
    scene = read_scene(scene_dir)
    assert [f.name for f in scene] == [f"seq-0{s}/frame-00000{f}.color.png"
                                       for s in (1, 2) for f in (0, 1)]
    frame = scene.by_name()["seq-02/frame-000001.color.png"]
    np.testing.assert_allclose(frame.camera_centre, [3.0, 6.0, 0.5])
    np.testing.assert_allclose(frame.cam_to_world[:3, :3], _rotation(3))  # as written
    # 525 px (ACE's and DSAC*'s colour focal length), principal point at the centre
    assert frame.intrinsics == Intrinsics(525.0, 525.0, (W - 1) / 2, (H - 1) / 2)
    assert all(f.depth_path is None for f in scene)  # not registered to colour
    assert any("not registered" in note for note in scene.notes)
    mapping, query = read_official_split(scene_dir)
    assert [f.name for f in mapping] == ["seq-01/frame-000000.color.png",
                                         "seq-01/frame-000001.color.png"]
    assert [f.name for f in query] == ["seq-02/frame-000000.color.png",
                                       "seq-02/frame-000001.color.png"]
    assert (mapping.name, query.name) == ("chess-mapping", "chess-query")


def test_7scenes_focal_override_and_split_file_path(tmp_path):
    scene_dir = make_7scenes(tmp_path)
    mapping, _ = read_official_split(scene_dir, focal=585.0)
    assert mapping[0].intrinsics.fx == mapping[0].intrinsics.fy == 585.0
    test_only = read_scene(scene_dir / "TestSplit.txt")
    assert test_only.source_format == "7scenes"
    assert [f.name for f in test_only] == ["seq-02/frame-000000.color.png",
                                           "seq-02/frame-000001.color.png"]
    assert "must be a positive" in _error(read_official_split, scene_dir, focal=-1.0)


def test_7scenes_malformed(tmp_path):
    scene_dir = make_7scenes(tmp_path)
    split = scene_dir / "TrainSplit.txt"
    split.write_text("sequence1\nseq2\n")
    assert _error(read_scene, scene_dir).startswith(f"{split}:2: expected a sequence")
    split.write_text("sequence7\n")
    assert _error(read_scene, scene_dir).startswith(f"{split}:1: sequence7: sequence folder seq-07")
    split.write_text("sequence1\n")
    pose = scene_dir / "seq-01" / "frame-000001.pose.txt"
    pose.write_text("1 0 0 0\n0 1 0 x0\n0 0 1 0\n0 0 0 1\n")
    assert _error(read_scene, scene_dir).startswith(f"{pose}:2: cannot parse number 'x0'")
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    assert len(read_scene(scene_dir)) == 4  # the top 3 rows are enough
    pose.write_text("1 0 0 0\n0 1 0 0\n")
    assert "expected a 4x4 pose" in _error(read_scene, scene_dir)
    pose.unlink()
    assert _error(read_scene, scene_dir).startswith(f"{pose}: pose file not found")


# --------------------------------------------------------------------------- 12-Scenes

INFO_12 = """m_versionNumber = 4
m_sensorName = StructureSensor
m_colorWidth = 32
m_colorHeight = 24
m_depthWidth = 16
m_depthHeight = 12
m_depthShift = 1000
m_calibrationColorIntrinsic = 30 0 15.25 0 0 31 11.75 0 0 0 1 0 0 0 0 1
m_calibrationColorExtrinsic = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1
m_calibrationDepthIntrinsic = 15 0 7.5 0 0 15 5.5 0 0 0 1 0 0 0 0 1
m_frames.size = 5
"""


def make_12scenes(root: Path) -> Path:
    """``apt1/kitchen``: 5 frames, the first 2 form the first sequence (queries); frame 1
    ("-inf") and frame 3 (MSVC's "-1.#INF00") lost their tracking."""
    scene = root / "apt1" / "kitchen"
    data = scene / "data"
    data.mkdir(parents=True)
    (scene / "info.txt").write_text(INFO_12)
    (scene / "split.txt").write_text("sequence0 [frames=2]  [start=0 ; end=1]\n"
                                     "sequence1 [frames=3]  [start=2 ; end=4]\n")
    lost = {1: "-inf", 3: "-1.#INF00"}
    for i in range(5):
        _image(data / f"frame-{i:06d}.color.jpg", i)
        text = _matrix_text(_c2w(i))
        if i in lost:
            text = "\n".join([f"{lost[i]} " * 3 + lost[i]] * 4) + "\n"
        (data / f"frame-{i:06d}.pose.txt").write_text(text)
        assert cv2.imwrite(str(data / f"frame-{i:06d}.depth.png"),
                           np.full((12, 16), 1500, np.uint16))
    return scene


def test_12scenes_split_intrinsics_depth_and_lost_poses(tmp_path):
    scene_dir = make_12scenes(tmp_path)
    assert detect_format(scene_dir) == "12scenes"
    mapping, query = read_official_split(scene_dir)
    assert [f.name for f in query] == ["frame-000000.color.jpg"]
    assert [f.name for f in mapping] == ["frame-000002.color.jpg", "frame-000004.color.jpg"]
    assert (mapping.name, query.name) == ("apt1-kitchen-mapping", "apt1-kitchen-query")
    assert any(note.startswith("2 of 5 frames skipped") for note in mapping.notes)
    frame = mapping[1]
    assert frame.intrinsics == Intrinsics(30.0, 31.0, 15.25, 11.75)
    np.testing.assert_allclose(frame.cam_to_world, _c2w(4))
    np.testing.assert_allclose(frame.camera_centre, [4.0, 8.0, 0.5])
    assert frame.depth_path == scene_dir / "data" / "frame-000004.depth.png"
    scene = read_scene(scene_dir)
    assert scene.has_depth and len(scene) == 3 and scene.name == "apt1-kitchen"


def test_12scenes_malformed(tmp_path):
    scene_dir = make_12scenes(tmp_path)
    info, split = scene_dir / "info.txt", scene_dir / "split.txt"
    info.write_text(INFO_12.replace("15.25 0 0 31", "15.25 0 31"))
    assert _error(read_scene, scene_dir).startswith(
        f"{info}:8: m_calibrationColorIntrinsic must hold a 4x4 matrix")
    info.write_text(INFO_12.replace("m_colorWidth = 32", "m_colorWidth = 30"))
    assert f"{info}: states image size 30x24" in _error(read_scene, scene_dir)
    info.write_text(INFO_12.replace("m_colorHeight = 24\n", ""))
    assert _error(read_scene, scene_dir) == f"{info}: no m_colorHeight line (the colour camera needs it)"
    info.write_text(INFO_12)
    split.write_text("sequence0 frames 2\n")
    assert _error(read_official_split, scene_dir).startswith(f"{split}:1: first line must give")
    split.write_text("sequence0 [frames=2]\n")
    pose = scene_dir / "data" / "frame-000002.pose.txt"
    pose.write_text("1 0 0 2\n0 1 0 4\n0 0 1 0.5.1\n0 0 0 1\n")
    assert _error(read_scene, scene_dir).startswith(f"{pose}:3: cannot parse number '0.5.1'")


def test_12scenes_error_reaches_the_cli_as_one_line(tmp_path, capsys):
    scene_dir = make_12scenes(tmp_path)
    (scene_dir / "info.txt").write_text(INFO_12.replace("= 30 0", "= abc 0"))
    assert aceg_main(["info", str(scene_dir)]) == 2
    err = capsys.readouterr().err
    assert err == f"aceg: error: {scene_dir / 'info.txt'}:8: cannot parse number 'abc'\n"


# --------------------------------------------------------------------------- Cambridge

HEADER = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"


def _cambridge_line(name: str, i: int, centre=None) -> str:
    """``name X Y Z W P Q R``: the centre and the world-to-camera quaternion of frame i."""
    w2c = invert_pose(_c2w(i))
    q = rotation_to_quaternion(w2c[:3, :3])
    centre = _c2w(i)[:3, 3] if centre is None else centre
    return " ".join([name, *(f"{v:.9f}" for v in (*centre, *q))])


def make_cambridge(root: Path) -> Path:
    """``KingsCollege``: 2 training images, 2 test images of which one is not in the
    reconstruction; the nvm holds a third training image the lists do not."""
    scene = root / "KingsCollege"
    for i, name in enumerate(["seq1/frame00001", "seq1/frame00002", "seq2/frame00001",
                              "seq2/frame00002"]):
        _image(scene / f"{name}.png", i)
    (scene / "dataset_train.txt").write_text(
        HEADER + _cambridge_line("seq1/frame00001.png", 0) + "\n"
        + _cambridge_line("seq1/frame00002.png", 1) + "\n")
    (scene / "dataset_test.txt").write_text(
        HEADER + _cambridge_line("seq2/frame00001.png", 2) + "\n"
        + _cambridge_line("seq2/frame00002.png", 3) + "\n")
    cameras = [f"seq1/frame0000{k}.jpg {40.0 + k} 1 0 0 0 0 0 0 0.001 0" for k in (1, 2, 3)]
    cameras.append("seq2/frame00001.jpg 44.5 1 0 0 0 0 0 0 0 0")
    (scene / "reconstruction.nvm").write_text(
        "NVM_V3 \n\n" + f"{len(cameras)}\n" + "\n".join(cameras) + "\n\n1\n0 0 1 255 0 0 0\n")
    return scene


def test_cambridge_centre_quaternion_focal_and_split(tmp_path):
    scene_dir = make_cambridge(tmp_path)
    assert detect_format(scene_dir) == "cambridge"
    mapping, query = read_official_split(scene_dir)
    assert [f.name for f in mapping] == ["seq1/frame00001.png", "seq1/frame00002.png"]
    assert [f.name for f in query] == ["seq2/frame00001.png"]
    assert any(n.startswith("1 of 4 frames skipped: not in reconstruction.nvm")
               for n in mapping.notes)
    frame = query[0]
    np.testing.assert_allclose(frame.camera_centre, [2.0, 4.0, 0.5], atol=1e-8)
    # W P Q R is world-to-camera: its rotation's transpose holds the camera axes
    np.testing.assert_allclose(frame.cam_to_world[:3, :3], _rotation(2), atol=1e-8)
    point = np.array([1.0, -2.0, 7.0])  # in camera coordinates: R_w2c (X - C)
    w2c = invert_pose(frame.cam_to_world)
    np.testing.assert_allclose(w2c[:3, :3] @ point + w2c[:3, 3],
                               _rotation(2).T @ (point - [2.0, 4.0, 0.5]), atol=1e-8)
    assert frame.intrinsics == Intrinsics(44.5, 44.5, (W - 1) / 2, (H - 1) / 2)
    assert mapping[1].intrinsics.fx == 42.0  # per-image focal of the nvm
    assert [f.name for f in read_scene(scene_dir / "dataset_test.txt")] == ["seq2/frame00001.png"]
    assert len(read_scene(scene_dir)) == 3


def test_cambridge_skips_outliers(tmp_path):
    scene_dir = make_cambridge(tmp_path)
    train = scene_dir / "dataset_train.txt"
    train.write_text(HEADER + _cambridge_line("seq1/frame00001.png", 0) + "\n"
                     + _cambridge_line("seq1/frame00002.png", 1, [2e4, 0, 0]) + "\n")
    mapping, _ = read_official_split(scene_dir)
    assert [f.name for f in mapping] == ["seq1/frame00001.png"]
    assert any("above 10000 m" in n for n in mapping.notes)


def test_cambridge_malformed(tmp_path):
    scene_dir = make_cambridge(tmp_path)
    train, nvm = scene_dir / "dataset_train.txt", scene_dir / "reconstruction.nvm"
    good_train, good_nvm = train.read_text(), nvm.read_text()
    train.write_text(good_train + "seq1/frame00003.png 1 2 3 1 0 0\n")
    assert _error(read_scene, scene_dir).startswith(f"{train}:6: expected 'image X Y Z W P Q R'")
    train.write_text(good_train + "seq1/frame00003.png 1 2 3 2 0 0 0\n")
    assert _error(read_scene, scene_dir).startswith(f"{train}:6: quaternion W P Q R has length 2")
    train.write_text(good_train + "seq1/frame00003.png 1 2 z 1 0 0 0\n")
    assert _error(read_scene, scene_dir).startswith(f"{train}:6: cannot parse number 'z'")
    train.write_text(good_train)
    nvm.write_text(good_nvm.replace("seq1/frame00002.jpg 42.0 1 0 0 0", "seq1/frame00002.jpg 42"))
    assert _error(read_scene, scene_dir).startswith(f"{nvm}:5: expected a camera line")
    nvm.write_text(good_nvm.replace("NVM_V3", "NVM_V2"))
    assert _error(read_scene, scene_dir).startswith(f"{nvm}:1: not an NVM_V3 file")
    nvm.unlink()
    assert _error(read_scene, scene_dir).startswith(f"{nvm}: reconstruction file not found")


# --------------------------------------------------------------------------- Indoor-6


def make_indoor6(root: Path) -> Path:
    """``scene1``: frames 0-1 train, 2 val, 3-4 test; frame 4's pose is lost (nan)."""
    scene = root / "scene1"
    images = scene / "images"
    for i in range(5):
        stem = images / f"image-{i:06d}"
        _image(Path(f"{stem}.color.jpg"), i)
        w2c = invert_pose(_c2w(i))[:3]  # 3x4 world-to-camera, as Indoor-6 stores it
        text = _matrix_text(w2c) if i != 4 else "nan nan nan nan\n" * 3
        Path(f"{stem}.pose.txt").write_text(text)
        Path(f"{stem}.intrinsics.txt").write_text(
            f"{W} {H} 28.5 15.25 11.75 0.0125 {i}-orig/IMG_{i}.jpg\n")
    for split, frames in (("train", (0, 1)), ("val", (2,)), ("test", (3, 4))):
        (scene / f"scene1_{split}.txt").write_text(
            "".join(f"image-{i:06d}.color.jpg\n" for i in frames))
    return scene


def test_indoor6_world_to_camera_poses_intrinsics_and_split(tmp_path):
    scene_dir = make_indoor6(tmp_path)
    assert detect_format(scene_dir) == "indoor6"
    assert detect_format(scene_dir / "scene1_test.txt") == "indoor6"
    mapping, query = read_official_split(scene_dir)
    assert [f.name for f in mapping] == ["image-000000.color.jpg", "image-000001.color.jpg"]
    assert [f.name for f in query] == ["image-000003.color.jpg"]
    assert any(n.startswith("1 of 4 frames skipped: non-finite pose") for n in query.notes)
    frame = query[0]
    np.testing.assert_allclose(frame.camera_centre, [3.0, 6.0, 0.5], atol=1e-9)
    np.testing.assert_allclose(frame.cam_to_world[:3, :3], _rotation(3), atol=1e-9)
    assert frame.intrinsics == Intrinsics(28.5, 28.5, 15.25, 11.75)  # radial term ignored
    everything = read_scene(scene_dir)
    assert [f.name for f in everything] == [f"image-00000{i}.color.jpg" for i in range(4)]
    assert [f.name for f in read_scene(scene_dir / "scene1_val.txt")] == ["image-000002.color.jpg"]


def test_indoor6_malformed(tmp_path):
    scene_dir = make_indoor6(tmp_path)
    train = scene_dir / "scene1_train.txt"
    train.write_text("image-000000.color.jpg\nimage-000009.color.jpg\n")
    assert _error(read_scene, scene_dir).startswith(
        f"{train}:2: image 'image-000009.color.jpg' not found")
    train.write_text("image-000000.color.jpg\n")
    calibration = scene_dir / "images" / "image-000000.intrinsics.txt"
    calibration.write_text("32 24 f 15.5 11.5 0 x.jpg\n")
    assert _error(read_scene, scene_dir).startswith(f"{calibration}:1: cannot parse number 'f'")
    calibration.write_text("30 24 28 15.5 11.5 0 x.jpg\n")
    assert "states image size 30x24" in _error(read_scene, scene_dir)
    calibration.write_text("32 24 28\n")
    assert _error(read_scene, scene_dir).startswith(f"{calibration}:1: expected 'W H f cx cy")


# --------------------------------------------------------------------------- registry, bench


def test_registry_lists_and_detects_the_standard_sets(tmp_path):
    assert {"7scenes", "12scenes", "cambridge", "indoor6"} <= set(format_names())
    assert set(split_formats()) == {"7scenes", "12scenes", "cambridge", "indoor6"}
    ace = tmp_path / "ace"
    (ace / "rgb").mkdir(parents=True)
    (ace / "poses").mkdir()
    assert "no official mapping / query split" in _error(read_official_split, ace, "ace")


def test_bench_builds_datasets_from_the_official_split(tmp_path):
    root = tmp_path / "data"
    make_7scenes(root / "7scenes")
    make_12scenes(root / "12scenes")
    make_cambridge(root / "cambridge")
    make_indoor6(root / "indoor6")
    datasets = bm.official_datasets([root], focal=500.0)
    by_name = {d.name: d for d in datasets}
    assert sorted(by_name) == ["12scenes-apt1-kitchen", "7scenes-chess",
                               "cambridge-KingsCollege", "indoor6-scene1"]
    chess = by_name["7scenes-chess"]
    assert chess.kind == "real" and list(chess.queries) == ["query_7scenes"]
    assert [f.name for f in chess.mapping] == ["seq-01/frame-000000.color.png",
                                               "seq-01/frame-000001.color.png"]
    assert [f.name for f in chess.queries["query_7scenes"]] == [
        "seq-02/frame-000000.color.png", "seq-02/frame-000001.color.png"]
    assert chess.mapping[0].intrinsics.fx == 500.0
    kitchen = by_name["12scenes-apt1-kitchen"]
    assert [f.name for f in kitchen.queries["query_12scenes"]] == ["frame-000000.color.jpg"]
    assert kitchen.mapping[0].intrinsics.fx == 30.0  # the focal option is 7-Scenes' only
    assert "no 7-Scenes, 12-Scenes" in _error(bm.official_datasets, [tmp_path / "data" / "7scenes"
                                                                     / "chess" / "seq-01"])


def test_bench_cli_runs_only_the_given_dataset(tmp_path, monkeypatch, capsys):
    """`aceg bench --dataset SCENE` maps and queries that scene's official split, and
    neither generates synthetic rooms nor reads the default real sets."""
    scene_dir = make_7scenes(tmp_path)
    seen = []

    def fake_run(method, data, work, settings, log=print):
        seen.append((method, data.name, len(data.mapping),
                     {k: len(v) for k, v in data.queries.items()}))
        errors = {k: [(1.0, 0.01)] * len(v) for k, v in data.queries.items()}
        return bm.MethodRun(method, data.name, data.kind, 1.0, 1000, 0, errors,
                            {k: [0.01] * len(v) for k, v in errors.items()})

    monkeypatch.setattr(bm, "run_method", fake_run)
    md, js = tmp_path / "B.md", tmp_path / "b.json"
    code = aceg_main(["bench", "--dataset", str(scene_dir), "--methods", "feature-matching",
                      "--markdown", str(md), "--json", str(js), "--work", str(tmp_path / "w"),
                      "--seven-scenes-focal", "520"])
    assert code == 0
    assert seen == [("feature-matching", "7scenes-chess", 2, {"query_7scenes": 2})]
    out = capsys.readouterr().out
    assert "note: intrinsics: focal length 520 px" in out
    assert "| query_7scenes | Feature matching |" in md.read_text()
