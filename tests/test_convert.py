"""``aceg convert`` and the ACE writer: real sets converted and read back keep their
cameras and stay consistent with their images; distorted images are undistorted on
writing; the output is refused / replaced / cleaned up as documented; errors reach the
command line as one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aceg.cli.main import main
from aceg.data.camera import OPENGL_TO_OPENCV, Intrinsics
from aceg.data.images import load_depth
from aceg.data.readers import read_scene
from aceg.data.scene import Frame, Scene
from aceg.data.writers import write_ace_scene
from aceg.errors import AcegError
from epipolar_check import assert_epipolar_consistent, neighbour_medians
from test_readers import make_ace

REAL_SETS = {
    "fountain": "strecha/fountain-P11",
    "castle": "strecha/castle-P30",
    "temple": "middlebury/templeRing",
}


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory) -> dict[str, tuple[Scene, Scene]]:
    """Each real set converted with ``aceg convert`` and read back: {name: (source, ace)}."""
    out = tmp_path_factory.mktemp("converted")
    result = {}
    for name, relative in REAL_SETS.items():
        assert main(["convert", str(shared_data / relative), str(out / name)]) == 0
        result[name] = (read_scene(shared_data / relative), read_scene(out / name))
    return result


def assert_same_cameras(read: Scene, original: Scene) -> None:
    assert [Path(f.name).stem for f in read] == [Path(f.name).stem for f in original]
    for a, b in zip(read, original, strict=True):
        assert a.cam_to_world.tobytes() == b.cam_to_world.tobytes()  # exact round trip
        assert a.intrinsics == b.intrinsics
        assert (a.width, a.height) == (b.width, b.height)
        assert a.image_path.read_bytes() == b.image_path.read_bytes()


@pytest.mark.parametrize("name", list(REAL_SETS))
def test_converted_real_sets_keep_cameras_and_match_images(converted, name):
    source, ace = converted[name]
    assert ace.source_format == "ace" and len(ace) == len(source)
    assert_same_cameras(ace, source)
    assert ace[0].intrinsics.fx != ace[0].intrinsics.fy  # the full K survived
    assert assert_epipolar_consistent(ace) < 0.5


def test_calibration_files_hold_full_k(converted):
    _, ace = converted["fountain"]
    calibration = ace.root / "calibration" / "0000.txt"
    K = np.loadtxt(calibration)
    np.testing.assert_array_equal(K, Intrinsics(1379.74, 1382.08, 760.095, 503.155).K)
    np.testing.assert_array_equal(np.loadtxt(ace.root / "poses" / "0000.txt"), ace[0].cam_to_world)


# --------------------------------------------------------------------------- distortion


def distort(pinhole: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """The image a camera with distortion ``dist`` (OpenCV model, same K) would take."""
    height, width = pinhole.shape[:2]
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
    # dst and criteria positional: OpenCV 4 named the criteria keyword "arg1", OpenCV 5 "criteria"
    undistorted = cv2.undistortImagePoints(pixels, K, dist, None, criteria)
    undistorted = undistorted.reshape(height, width, 2)
    return cv2.remap(
        pinhole,
        undistorted[..., 0].astype(np.float32),
        undistorted[..., 1].astype(np.float32),
        cv2.INTER_LINEAR,
    )


def test_distorted_frames_are_undistorted_on_conversion(tmp_path, converted):
    """A fountain subset re-imaged through a distorting lens (k1 k2 p1 p2), described in a
    transforms.json: read as pinhole it is clearly off its epipolar lines; converted to the
    ACE layout (undistorted on writing, pinhole K) it is consistent again."""
    source, _ = converted["fountain"]
    scale = 0.5
    dist = np.array([-0.3, 0.1, 0.002, -0.002])
    folder = tmp_path / "distorted"
    (folder / "images").mkdir(parents=True)
    frames_json, depth_values = [], []
    for frame in source.frames[2:8]:
        small = cv2.resize(
            cv2.imread(str(frame.image_path)),
            None,
            fx=scale,
            fy=scale,
            interpolation=cv2.INTER_AREA,
        )
        k = frame.intrinsics.scaled(small.shape[1] / frame.width, small.shape[0] / frame.height)
        cv2.imwrite(
            str(folder / "images" / frame.name.replace(".jpg", ".png")), distort(small, k.K, dist)
        )
        depth = np.full(small.shape[:2], 1234, np.uint16)  # 1.234 m everywhere
        cv2.imwrite(str(folder / "images" / frame.name.replace(".jpg", "_depth.png")), depth)
        depth_values.append(1.234)
        frames_json.append(
            {
                "file_path": "images/" + frame.name.replace(".jpg", ".png"),
                "depth_file_path": "images/" + frame.name.replace(".jpg", "_depth.png"),
                "transform_matrix": (frame.cam_to_world @ OPENGL_TO_OPENCV).tolist(),
                "fl_x": k.fx,
                "fl_y": k.fy,
                "cx": k.cx + 0.5,
                "cy": k.cy + 0.5,
            }
        )
    data = {
        "camera_model": "OPENCV",
        "k1": dist[0],
        "k2": dist[1],
        "p1": dist[2],
        "p2": dist[3],
        "frames": frames_json,
    }
    (folder / "transforms.json").write_text(json.dumps(data))

    distorted = read_scene(folder)
    assert distorted[0].intrinsics.dist == tuple(dist)
    as_pinhole = Scene(
        "as-pinhole",
        [
            Frame(
                f.name,
                f.image_path,
                f.width,
                f.height,
                f.intrinsics.without_distortion(),
                f.cam_to_world,
            )
            for f in distorted
        ],
    )
    worst_as_pinhole = max(m for m, _ in neighbour_medians(as_pinhole).values())

    out = tmp_path / "ace"
    assert main(["convert", str(folder), str(out)]) == 0
    ace = read_scene(out)
    assert all(not f.intrinsics.has_distortion for f in ace)
    assert all(f.image_path.suffix == ".png" for f in ace)
    for a, b in zip(ace, distorted, strict=True):
        np.testing.assert_array_equal(a.intrinsics.K, b.intrinsics.K)
        np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    assert assert_epipolar_consistent(ace) < 0.5
    worst_converted = max(m for m, _ in neighbour_medians(ace).values())
    print(
        f"worst pair median: distorted read as pinhole {worst_as_pinhole:.3f} px, "
        f"converted {worst_converted:.3f} px"
    )
    assert worst_as_pinhole > 5 * worst_converted  # the check does see the distortion
    depth = load_depth(ace[0].depth_path)
    centre = depth[depth.shape[0] // 2, depth.shape[1] // 2]
    assert depth.shape == (ace[0].height, ace[0].width) and centre == pytest.approx(1.234)


# --------------------------------------------------------------------------- writer


def test_writer_copies_depth_and_links_images(tmp_path):
    source = make_ace(tmp_path / "src")
    (source / "depth").mkdir()
    for i in range(3):
        cv2.imwrite(
            str(source / "depth" / f"frame{i}.depth.png"), np.full((48, 64), 500, np.uint16)
        )
    scene = read_scene(source)
    assert scene.has_depth
    report = write_ace_scene(scene, tmp_path / "out", copy_images=False)
    assert (report.frames, report.with_depth, report.undistorted) == (3, 3, 0)
    back = read_scene(tmp_path / "out")
    assert back.has_depth and back[0].image_path.is_symlink()
    np.testing.assert_array_equal(
        load_depth(back[1].depth_path), np.full((48, 64), 0.5, np.float32)
    )
    # The focal-length-only source becomes a full K with the same principal point.
    assert back[0].intrinsics == scene[0].intrinsics == Intrinsics(50.0, 50.0, 31.5, 23.5)


def test_writer_refuses_non_empty_folder_and_overwrites_on_request(tmp_path):
    scene = read_scene(make_ace(tmp_path / "src"))
    out = tmp_path / "out"
    out.mkdir()
    write_ace_scene(scene, out)  # an empty folder is fine
    with pytest.raises(AcegError, match="not empty"):
        write_ace_scene(scene, out)
    (out / "stale.txt").write_text("old")
    write_ace_scene(scene.subset([0, 1]), out, overwrite=True)
    assert not (out / "stale.txt").exists() and len(read_scene(out)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temporaries
    with pytest.raises(AcegError, match="holds the source scene"):
        write_ace_scene(scene, tmp_path, overwrite=True)


def test_writer_leaves_nothing_behind_on_failure(tmp_path):
    scene = read_scene(make_ace(tmp_path / "src"))
    (tmp_path / "src" / "rgb" / "frame2.png").unlink()  # vanishes after reading
    with pytest.raises(AcegError, match="frame2.png"):
        write_ace_scene(scene, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# --------------------------------------------------------------------------- command line


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_errors_are_one_line(tmp_path, capsys):
    source = make_ace(tmp_path / "src")
    (source / "poses" / "frame1.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 oops\n0 0 0 1\n")
    code, _, err = run_cli(capsys, "convert", str(source), str(tmp_path / "out"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("aceg: error: ")
    assert "frame1.txt:3" in err and "'oops'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    code, _, err = run_cli(capsys, "convert", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert code == 2 and err.startswith("aceg: error: ") and "nowhere" in err

    code, _, err = run_cli(capsys, "convert", str(tmp_path), str(tmp_path / "out"))
    assert code == 2 and "cannot tell the scene format" in err


def test_cli_convert_with_format_and_overwrite(tmp_path, capsys):
    source = make_ace(tmp_path / "src")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "convert", str(source), str(out), "--format", "ace")
    assert code == 0 and "converted 3 frames from ace" in stdout
    code, _, err = run_cli(capsys, "convert", str(source), str(out))
    assert code == 2 and "--overwrite" in err
    code, _, _ = run_cli(capsys, "convert", str(source), str(out), "--overwrite")
    assert code == 0
    code, _, err = run_cli(
        capsys, "convert", str(source), str(out), "--format", "colmap", "--overwrite"
    )
    assert code == 2 and "no COLMAP model" in err


def test_cli_help_lists_formats(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in ("ace", "nerfstudio", "colmap", "strecha", "middlebury", "--overwrite"):
        assert name in text
