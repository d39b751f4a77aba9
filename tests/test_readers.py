"""Scene readers: every real set in ../shared/data read and checked against its images
(SIFT matches on the epipolar lines of the read poses and intrinsics), nerfstudio and
COLMAP files built from a real set read back to the same cameras, and malformed inputs
refused with one-line errors naming the file (and line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from aceg.data.camera import (
    OPENGL_TO_OPENCV,
    Intrinsics,
    fundamental_matrix,
    invert_pose,
    project,
)
from aceg.data.readers import detect_format, format_names, read_scene
from aceg.data.readers._common import frame_key, image_size
from aceg.data.scene import Scene
from aceg.errors import AcegError
from epipolar_check import (
    assert_epipolar_consistent,
    symmetric_epipolar_distances,
)

STRECHA_SIZE = (1536, 1024)
STRECHA_K = Intrinsics(1379.74, 1382.08, 760.095, 503.155)


@pytest.fixture(scope="module")
def fountain(shared_data) -> Scene:
    return read_scene(shared_data / "strecha" / "fountain-P11")


@pytest.fixture(scope="module")
def castle(shared_data) -> Scene:
    return read_scene(shared_data / "strecha" / "castle-P30")


@pytest.fixture(scope="module")
def temple(shared_data) -> Scene:
    return read_scene(shared_data / "middlebury" / "templeRing")


# --------------------------------------------------------------------------- real sets


def test_formats_are_detected(shared_data):
    assert detect_format(shared_data / "strecha" / "fountain-P11") == "strecha"
    assert detect_format(shared_data / "middlebury" / "templeRing") == "middlebury"
    assert detect_format(shared_data / "middlebury" / "templeRing" / "templeR_par.txt") == (
        "middlebury"
    )
    assert set(format_names()) == {"ace", "nerfstudio", "colmap", "strecha", "middlebury",
                                   "7scenes", "12scenes", "cambridge", "indoor6"}


@pytest.mark.parametrize("name,count", [("fountain", 11), ("castle", 30)])
def test_strecha_sets_match_their_images(name, count, request):
    scene: Scene = request.getfixturevalue(name)
    assert scene.source_format == "strecha" and len(scene) == count
    assert [f.name for f in scene] == sorted(f.name for f in scene)
    for frame in scene:
        assert (frame.width, frame.height) == STRECHA_SIZE
        assert frame.intrinsics == STRECHA_K  # the radial terms are all zero
    assert assert_epipolar_consistent(scene) < 0.5


def test_strecha_pose_is_rotation_and_centre_as_written(fountain):
    # 0000.jpg.camera: R (camera-to-world) on lines 5-7, centre C on line 8.
    pose = fountain.by_name()["0000.jpg"].cam_to_world
    np.testing.assert_allclose(pose[0, :3], [0.450927, -0.0945642, -0.887537])
    np.testing.assert_allclose(pose[:3, 3], [-7.28137, -7.57667, 0.204446])


def test_strecha_radial_terms_become_opencv_distortion(tmp_path, fountain):
    folder = make_strecha_copy(tmp_path, fountain, 1)
    camera = next((folder / "gt_dense_cameras").iterdir())
    lines = camera.read_text().splitlines()
    lines[3] = "0.1 -0.02 0.003"
    camera.write_text("\n".join(lines) + "\n")
    frame = read_scene(folder)[0]
    assert frame.intrinsics.dist == (0.1, -0.02, 0.0, 0.0, 0.003)


def test_temple_all_frames_match_their_images(temple):
    """Every one of the 47 images agrees with templeR_par.txt (the shared copy's
    positive-latitude images were once stored rotated; see ../shared/data/README.md)."""
    assert temple.source_format == "middlebury" and len(temple) == 47
    for frame in temple:
        assert (frame.width, frame.height) == (640, 480)
        assert frame.intrinsics == Intrinsics(1520.4, 1525.9, 302.32, 246.87)
    assert assert_epipolar_consistent(temple) < 0.5


def test_temple_pose_is_inverse_of_world_to_camera(temple):
    # templeR0001: R row 1 and t as in templeR_par.txt line 2; the centre is -R^T t.
    R = np.array(
        [
            [0.02187598221295043, 0.98329680886213122, -0.18068986436368856],
            [0.99856708067455469, -0.012661146464239256, 0.051995007099799977],
            [0.048838783720684995, -0.18156839221560722, -0.98216479887691122],
        ]
    )
    t = np.array([-0.0292149526928, -0.0241923869131, 0.52269561933])
    pose = temple[0].cam_to_world
    np.testing.assert_allclose(pose[:3, :3], R.T, atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], -R.T @ t, atol=1e-12)


# --------------------------------------------------------------------------- nerfstudio


def write_transforms(folder: Path, scene: Scene, per_frame: bool = False, **extra) -> Path:
    """A transforms.json for ``scene`` (OpenGL axes, pixel centres at half-integers)."""
    frames, k = [], scene[0].intrinsics
    camera = {
        "fl_x": k.fx,
        "fl_y": k.fy,
        "cx": k.cx + 0.5,
        "cy": k.cy + 0.5,
        "w": scene[0].width,
        "h": scene[0].height,
    }
    for frame in scene:
        entry = {
            "file_path": str(frame.image_path),
            "transform_matrix": (frame.cam_to_world @ OPENGL_TO_OPENCV).tolist(),
        }
        if per_frame:
            entry.update(camera)
        frames.append(entry)
    data = {**({} if per_frame else camera), **extra, "frames": frames}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transforms.json").write_text(json.dumps(data, indent=2))
    return folder


def assert_same_cameras(read: Scene, original: Scene, atol: float = 1e-9) -> None:
    assert [f.image_path.resolve() for f in read] == [f.image_path.resolve() for f in original]
    for a, b in zip(read, original, strict=True):
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=atol)
        np.testing.assert_allclose(a.intrinsics.K, b.intrinsics.K, atol=atol)
        assert (a.width, a.height) == (b.width, b.height)
        assert a.intrinsics.dist == b.intrinsics.dist


@pytest.mark.parametrize("per_frame", [False, True])
def test_nerfstudio_built_from_fountain_reads_back(tmp_path, fountain, per_frame):
    folder = write_transforms(tmp_path / "ns", fountain, per_frame=per_frame)
    assert detect_format(folder) == "nerfstudio"
    scene = read_scene(folder)
    assert scene.source_format == "nerfstudio"
    assert_same_cameras(scene, fountain)
    assert assert_epipolar_consistent(scene) < 0.5


def test_nerfstudio_camera_angle_and_distortion(tmp_path):
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
    pose = np.eye(4)
    data = {
        "camera_angle_x": 2 * math.atan(0.5),
        "k1": 0.1,
        "k2": -0.01,
        "p1": 0.001,
        "p2": 0.002,
        "frames": [
            {
                "file_path": "images/a",
                "transform_matrix": pose.tolist(),
                "depth_file_path": "images/a.png",
            }
        ],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    frame = read_scene(tmp_path / "transforms.json")[0]
    # fl = w / (2 tan(angle / 2)) = 64; default principal point w/2, h/2 in nerfstudio's grid.
    k = frame.intrinsics
    assert (k.fx, k.fy) == (pytest.approx(64.0), pytest.approx(64.0))
    assert (k.cx, k.cy, k.dist) == (31.5, 23.5, (0.1, -0.01, 0.001, 0.002))
    # OpenGL identity = camera looking along world -z with y up: OpenCV axes y, z flipped.
    np.testing.assert_allclose(frame.cam_to_world, np.diag([1.0, -1.0, -1.0, 1.0]))
    assert frame.image_path == image and frame.depth_path == image


# --------------------------------------------------------------------------- COLMAP


def write_colmap_model(root: Path, scene: Scene, binary: bool, model: str = "PINHOLE") -> Path:
    """A COLMAP model of ``scene`` in ``root/sparse/0`` with ``root/images`` linked."""
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").symlink_to(scene[0].image_path.parent.resolve())
    reconstruction = pycolmap.Reconstruction()
    for image_id, frame in enumerate(scene, start=1):
        k = frame.intrinsics
        camera = pycolmap.Camera.create_from_model_name(
            image_id, model, k.fx, frame.width, frame.height
        )
        if model == "PINHOLE":
            camera.params = [k.fx, k.fy, k.cx + 0.5, k.cy + 0.5]
        reconstruction.add_camera_with_trivial_rig(camera)
        world_to_cam = invert_pose(frame.cam_to_world)
        image = pycolmap.Image(name=frame.name, camera_id=image_id, image_id=image_id)
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(world_to_cam[:3, :4]))
    model_folder = root / "sparse" / "0"
    if binary:
        reconstruction.write_binary(str(model_folder))
    else:
        reconstruction.write_text(str(model_folder))
    return model_folder


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_colmap_built_from_fountain_reads_back(tmp_path, fountain, binary):
    model_folder = write_colmap_model(tmp_path / "colmap", fountain, binary)
    suffix = ".bin" if binary else ".txt"
    assert (model_folder / f"images{suffix}").is_file()
    for path in (tmp_path / "colmap", model_folder):
        assert detect_format(path) == "colmap"
    scene = read_scene(tmp_path / "colmap")
    assert scene.source_format == "colmap"
    assert [f.name for f in scene] == [f.name for f in fountain]
    for a, b in zip(scene, fountain, strict=True):
        # COLMAP stores rotations as quaternions: the 6-digit Strecha rotations (orthonormal
        # to ~1e-6) come back as the nearest exact rotation.
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=2e-5)
        np.testing.assert_allclose(a.intrinsics.K, b.intrinsics.K, atol=1e-9)
    assert assert_epipolar_consistent(scene) < 0.5


@pytest.mark.parametrize(
    "model,params,expected",
    [
        ("SIMPLE_PINHOLE", [100.0, 32.0, 24.0], Intrinsics(100, 100, 31.5, 23.5)),
        ("PINHOLE", [100.0, 90.0, 32.0, 24.0], Intrinsics(100, 90, 31.5, 23.5)),
        (
            "SIMPLE_RADIAL",
            [100.0, 32.0, 24.0, 0.1],
            Intrinsics(100, 100, 31.5, 23.5, (0.1, 0.0, 0.0, 0.0)),
        ),
        (
            "RADIAL",
            [100.0, 32.0, 24.0, 0.1, 0.02],
            Intrinsics(100, 100, 31.5, 23.5, (0.1, 0.02, 0.0, 0.0)),
        ),
        (
            "OPENCV",
            [100.0, 90.0, 32.0, 24.0, 0.1, 0.02, 0.003, 0.004],
            Intrinsics(100, 90, 31.5, 23.5, (0.1, 0.02, 0.003, 0.004)),
        ),
    ],
)
def test_colmap_camera_models(tmp_path, model, params, expected):
    write_tiny_colmap(tmp_path, model, params)
    frame = read_scene(tmp_path)[0]
    assert frame.intrinsics == expected
    np.testing.assert_allclose(frame.camera_centre, [0.0, 0.0, -2.0], atol=1e-12)


def write_tiny_colmap(root: Path, model: str, params: list[float], binary: bool = True) -> Path:
    """One 64x48 image at world (0, 0, -2) looking along +z, in ``root`` (model and images/)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    reconstruction = pycolmap.Reconstruction()
    camera = pycolmap.Camera.create_from_model_name(1, model, 100.0, 64, 48)
    camera.params = params
    reconstruction.add_camera_with_trivial_rig(camera)
    image = pycolmap.Image(name="a.png", camera_id=1, image_id=1)
    world_to_cam = np.hstack([np.eye(3), [[0.0], [0.0], [2.0]]])
    reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(world_to_cam))
    (reconstruction.write_binary if binary else reconstruction.write_text)(str(root))
    return root


# --------------------------------------------------------------------------- helpers


def test_epipolar_distance_is_zero_for_true_projections_and_grows_with_offset(fountain):
    a, b = fountain[4], fountain[5]
    rng = np.random.default_rng(1)
    # Points 3-8 m in front of camera a, projected into both views.
    in_a = np.column_stack(
        [rng.uniform(-2, 2, 200), rng.uniform(-1, 1, 200), rng.uniform(3, 8, 200), np.ones(200)]
    )
    world = (a.cam_to_world @ in_a.T).T[:, :3]
    points_a = project(world, a.intrinsics.K, a.cam_to_world)
    points_b = project(world, b.intrinsics.K, b.cam_to_world)
    F = fundamental_matrix(a.intrinsics.K, a.cam_to_world, b.intrinsics.K, b.cam_to_world)
    # (not exactly 0: the 6-digit Strecha rotations are orthonormal only to ~1e-6)
    assert symmetric_epipolar_distances(F, points_a, points_b).max() < 1e-2
    # Moving every point in b by 2 px across its epipolar line moves it by 2 px from it.
    lines = np.column_stack([points_a, np.ones(200)]) @ F.T
    normals = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    d = symmetric_epipolar_distances(F, points_a, points_b + 2.0 * normals)
    assert np.median(d) == pytest.approx(2.0, rel=0.05)


def test_frame_key_matches_files_of_one_frame():
    assert frame_key("0004.jpg.camera") == "0004"
    assert frame_key("seq-01-frame-000000.color.png") == "seq-01-frame-000000"
    assert frame_key("seq-01-frame-000000.pose.txt") == "seq-01-frame-000000"
    assert frame_key("img_1.2.txt") == "img_1.2"


def test_image_size_from_headers(tmp_path, fountain, temple):
    assert image_size(fountain[0].image_path) == STRECHA_SIZE  # JPEG header
    assert image_size(temple[0].image_path) == (640, 480)  # PNG header
    cv2.imwrite(str(tmp_path / "a.bmp"), np.zeros((5, 7, 3), np.uint8))
    assert image_size(tmp_path / "a.bmp") == (7, 5)  # decoded


# --------------------------------------------------------------------------- malformed input


def tiny_image(path: Path, width: int = 64, height: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return path


def make_ace(root: Path, count: int = 3) -> Path:
    for i in range(count):
        tiny_image(root / "rgb" / f"frame{i}.png")
        (root / "poses").mkdir(exist_ok=True)
        pose = np.eye(4)
        pose[:3, 3] = [i, 0.0, 0.0]
        np.savetxt(root / "poses" / f"frame{i}.txt", pose)
        (root / "calibration").mkdir(exist_ok=True)
        (root / "calibration" / f"frame{i}.txt").write_text("50.0\n")
    return root


def make_strecha_copy(root: Path, scene: Scene, count: int) -> Path:
    """The first ``count`` frames of a Strecha scene, with tiny images of the stated size."""
    folder = root / "strecha"
    (folder / "gt_dense_cameras").mkdir(parents=True)
    source = scene.root / "gt_dense_cameras"
    for frame in scene.frames[:count]:
        camera = source / f"{frame.name}.camera"
        (folder / "gt_dense_cameras" / camera.name).write_text(camera.read_text())
        (folder / "images").mkdir(exist_ok=True)
        (folder / "images" / frame.name).symlink_to(frame.image_path.resolve())
    return folder


def make_middlebury(root: Path, count: int = 2) -> Path:
    lines = [str(count)]
    for i in range(count):
        tiny_image(root / f"view{i:02d}.png")
        lines.append(f"view{i:02d}.png 50 0 32 0 50 24 0 0 1 1 0 0 0 1 0 0 0 1 {i} 0 1")
    (root / "set_par.txt").write_text("\n".join(lines) + "\n")
    return root


def expect_error(path: Path, *fragments: str, fmt: str | None = None) -> str:
    with pytest.raises(AcegError) as info:
        read_scene(path, fmt)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_ace_reads_focal_length_with_centre_principal_point(tmp_path):
    scene = read_scene(make_ace(tmp_path / "s"))
    assert scene.source_format == "ace" and [f.name for f in scene] == [
        "frame0.png",
        "frame1.png",
        "frame2.png",
    ]
    # Centre of a 64x48 image with pixel centres at integers.
    assert scene[0].intrinsics == Intrinsics(50.0, 50.0, 31.5, 23.5)
    np.testing.assert_allclose(scene[2].camera_centre, [2.0, 0.0, 0.0])


def test_ace_malformed(tmp_path):
    root = make_ace(tmp_path / "count")
    (root / "poses" / "frame1.txt").unlink()
    expect_error(root, "poses", "2 files", "rgb", "3")

    root = make_ace(tmp_path / "nocal")
    for path in (root / "calibration").iterdir():
        path.unlink()
    (root / "calibration").rmdir()
    expect_error(root, "calibration", "not found")

    root = make_ace(tmp_path / "parse")
    (root / "poses" / "frame1.txt").write_text("1 0 0 0\n0 1 0 x\n0 0 1 0\n0 0 0 1\n")
    expect_error(root, "frame1.txt:2", "'x'")

    root = make_ace(tmp_path / "nan")
    (root / "poses" / "frame2.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 nan\n0 0 0 1\n")
    expect_error(root, "frame2.txt:3", "non-finite")

    root = make_ace(tmp_path / "rot")
    (root / "poses" / "frame0.txt").write_text("1 0 0 0\n0 1.1 0 0\n0 0 1 0\n0 0 0 1\n")
    expect_error(root, "frame0.txt", "not orthonormal")

    root = make_ace(tmp_path / "short")
    (root / "poses" / "frame0.txt").write_text("1 0 0 0\n0 1 0 0\n")
    expect_error(root, "frame0.txt", "16 numbers")

    root = make_ace(tmp_path / "cal")
    (root / "calibration" / "frame0.txt").write_text("50 60\n")
    expect_error(root, "calibration/frame0.txt", "found 2")

    root = make_ace(tmp_path / "corrupt")
    (root / "rgb" / "frame1.png").write_bytes(b"not an image at all")
    expect_error(root, "rgb/frame1.png", "cannot decode")

    root = make_ace(tmp_path / "unmatched")
    (root / "poses" / "frame2.txt").rename(root / "poses" / "other.txt")
    expect_error(root, "frame2", "no matching file")

    root = tmp_path / "splits"
    make_ace(root / "train")
    make_ace(root / "test")
    expect_error(root, "train/", fmt="ace")


def test_strecha_malformed(tmp_path, fountain):
    folder = make_strecha_copy(tmp_path / "a", fountain, 2)
    next((folder / "gt_dense_cameras").iterdir()).unlink()
    expect_error(folder, "gt_dense_cameras", "1 files", "images", "2")

    def broken(tag: str, line: int, text: str) -> Path:
        folder = make_strecha_copy(tmp_path / tag, fountain, 1)
        camera = next((folder / "gt_dense_cameras").iterdir())
        lines = camera.read_text().splitlines()
        lines[line - 1] = text
        camera.write_text("\n".join(lines) + "\n")
        return camera

    camera = broken("parse", 6, "-0.892535 -0.0401974 abc")
    expect_error(camera.parent.parent, f"{camera.name}:6", "'abc'")
    camera = broken("inf", 8, "-7.28137 inf 0.204446")
    expect_error(camera.parent.parent, f"{camera.name}:8", "non-finite")
    camera = broken("rot", 5, "0.9 -0.0945642 -0.887537")
    expect_error(camera.parent.parent, f"{camera.name}:5", "not orthonormal")
    camera = broken("count", 9, "1536")
    expect_error(camera.parent.parent, camera.name, "26 numbers", "found 25")
    camera = broken("size", 9, "3072 2048")
    expect_error(camera.parent.parent, camera.name, "3072x2048", "1536x1024")


def test_middlebury_malformed(tmp_path):
    root = make_middlebury(tmp_path / "ok")
    assert [f.name for f in read_scene(root)] == ["view00.png", "view01.png"]
    np.testing.assert_allclose(read_scene(root)[1].camera_centre, [-1.0, 0.0, -1.0])

    def edit(tag: str, line: int, old: str, new: str) -> Path:
        root = make_middlebury(tmp_path / tag)
        par = root / "set_par.txt"
        lines = par.read_text().splitlines()
        lines[line - 1] = lines[line - 1].replace(old, new, 1)
        par.write_text("\n".join(lines) + "\n")
        return root

    expect_error(edit("count", 1, "2", "3"), "set_par.txt:1", "declares 3 images but lists 2")
    expect_error(edit("parse", 3, " 50 ", " 5O "), "set_par.txt:3", "'5O'")
    expect_error(edit("nan", 2, " 1 0 0 0 1", " nan 0 0 0 1"), "set_par.txt:2", "non-finite")
    expect_error(edit("rot", 3, " 1 0 0 0 1", " 2 0 0 0 1"), "set_par.txt:3", "not orthonormal")
    expect_error(edit("fields", 2, "view00.png 50", "view00.png"), "set_par.txt:2", "found 21")
    root = make_middlebury(tmp_path / "corrupt")
    (root / "view00.png").write_bytes(b"")
    expect_error(root, "set_par.txt:2", "view00.png", "empty")
    root = make_middlebury(tmp_path / "missing")
    (root / "view01.png").unlink()
    expect_error(root, "set_par.txt:3", "view01.png", "not found")


def test_nerfstudio_malformed(tmp_path):
    def make(tag: str, **frame_changes) -> Path:
        folder = tmp_path / tag
        tiny_image(folder / "a.png")
        frame = {"file_path": "a.png", "transform_matrix": np.eye(4).tolist(), **frame_changes}
        data = {"fl_x": 50.0, "w": 64, "h": 48, "frames": [frame]}
        (folder / "transforms.json").write_text(json.dumps(data, indent=2))
        return folder

    folder = make("json")
    text = (folder / "transforms.json").read_text().splitlines()
    text[3] = text[3] + ","  # a trailing comma
    (folder / "transforms.json").write_text("\n".join(text))
    expect_error(folder, "transforms.json:", "invalid JSON")

    bad = np.eye(4)
    bad[0, 0] = 2.0
    expect_error(
        make("rot", transform_matrix=bad.tolist()), "transforms.json:", "a.png", "not orthonormal"
    )
    nan = np.eye(4).tolist()
    nan[1][3] = float("nan")
    expect_error(make("nan", transform_matrix=nan), "a.png", "non-finite")
    expect_error(make("fl", fl_x="fifty"), "transforms.json", "fl_x must be a number")
    expect_error(make("model", camera_model="OPENCV_FISHEYE"), "OPENCV_FISHEYE")
    expect_error(make("size", w=640), "640x48", "64x48")
    expect_error(make("missing", file_path="b.png"), "b.png", "not found")
    folder = make("nomatrix")
    data = json.loads((folder / "transforms.json").read_text())
    del data["frames"][0]["transform_matrix"]
    (folder / "transforms.json").write_text(json.dumps(data, indent=2))
    expect_error(folder, "transforms.json:", "transform_matrix")


def test_colmap_malformed(tmp_path):
    write_tiny_colmap(tmp_path / "fisheye", "FULL_OPENCV", [100, 100, 32, 24] + [0.0] * 8)
    expect_error(tmp_path / "fisheye", "cameras.bin", "FULL_OPENCV", "not supported")

    root = write_tiny_colmap(tmp_path / "nopoints", "PINHOLE", [100, 100, 32, 24])
    (root / "points3D.bin").unlink()
    expect_error(root, "points3D", "not found", fmt="colmap")

    root = write_tiny_colmap(tmp_path / "text", "PINHOLE", [100, 100, 32, 24], binary=False)
    images = root / "images.txt"
    lines = images.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("1 "))
    lines[number - 1] = lines[number - 1].replace(" 2 1 a.png", " 2.x 1 a.png")
    images.write_text("\n".join(lines) + "\n")
    expect_error(root, f"images.txt:{number}", "'2.x'")

    root = write_tiny_colmap(tmp_path / "camtext", "PINHOLE", [100, 100, 32, 24], binary=False)
    cameras = root / "cameras.txt"
    cameras.write_text(
        cameras.read_text().replace("PINHOLE 64 48 100 100", "PINHOLE 64 48 1e0x 100")
    )
    expect_error(root, "cameras.txt:", "'1e0x'")

    root = write_tiny_colmap(tmp_path / "size", "PINHOLE", [100, 100, 32, 24])
    tiny_image(root / "images" / "a.png", 32, 24)
    expect_error(root, "64x48", "32x24")

    root = write_tiny_colmap(tmp_path / "truncated", "PINHOLE", [100, 100, 32, 24])
    data = (root / "images.bin").read_bytes()
    (root / "images.bin").write_bytes(data[: len(data) // 2])
    expect_error(root, "images.bin", "truncated: the file ends inside record 1")

    root = write_tiny_colmap(tmp_path / "corrupt", "PINHOLE", [100, 100, 32, 24])
    (root / "images" / "a.png").write_bytes(b"\x89PNG but not really")
    expect_error(root, "images/a.png", "cannot decode")

    root = write_tiny_colmap(tmp_path / "noimages", "PINHOLE", [100, 100, 32, 24])
    (root / "images" / "a.png").unlink()
    (root / "images").rmdir()
    expect_error(root, "no images/ folder")


def test_working_short_side_never_upsamples():
    """Mapping (ACE-G, ACE) and the feature-matching baseline prepare a scene at the
    requested short side, capped at the smallest image's own: mixed sizes take the minimum."""
    from aceg.data.scene import Frame, Scene

    k = Intrinsics(500.0, 500.0, 320.0, 240.0)
    scene = Scene("mixed", [Frame("a.png", Path("a.png"), 640, 480, k, None),
                            Frame("b.png", Path("b.png"), 320, 240, k, None)])
    assert scene.working_short_side(480) == 240
    assert scene.working_short_side(120) == 120
    assert scene.working_short_side(None) == 240
