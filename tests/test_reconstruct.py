"""``aceg reconstruct``: structure from motion (pycolmap SIFT; XFeat + LighterGlue on photos)
on a video or a folder of a synthetic room, checked against the rendered ground truth
after a similarity alignment; scale from two frames; bad inputs; ``aceg map
--reconstruct`` then ``aceg localize``.

The room's scanning path is rendered with 90 frames (so neighbouring frames overlap, as
in a video) and only a stretch of 22 of them (240x320) is used."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aceg.cli.main import main
from aceg.data.readers import read_scene
from aceg.data.synthetic.generate import generate_scene
from aceg.data.writers import write_ace_scene
from aceg.evaluation.metrics import similarity_alignment
from aceg.evaluation.results import read_results

SEED = 4242
PATH_FRAMES = 90
#: Frames of the path used: the first 24 but two, which are held out as queries.
USED, HELD_OUT = 24, (5, 14)
#: Largest camera-centre error after alignment, as a fraction of the cameras' extent.
MAX_RELATIVE_CENTRE_ERROR = 0.03


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> dict:
    """The room's mapping frames, a video of the used ones, and the ground-truth scene."""
    root = tmp_path_factory.mktemp("room")
    generate_scene(root / "room", SEED, frames_mapping=PATH_FRAMES, frames_query=0,
                   height=240, width=320, texture_size=256, splits=("mapping",),
                   contact_sheet=False)
    gt = read_scene(root / "room" / "mapping")
    used = [i for i in range(USED) if i not in HELD_OUT]
    video = root / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in used:
        writer.write(cv2.imread(str(gt.frames[i].image_path)))
    writer.release()
    return {"root": root, "gt": gt, "used": used, "video": video}


def _aligned_errors(scene, gt_centres: np.ndarray, scale: bool = True):
    """Camera-centre errors (metres) of ``scene`` against ``gt_centres`` (same order)
    after the best similarity (or rigid) alignment, the alignment, and the extent."""
    s, rotation, t = similarity_alignment(scene.camera_centres(), gt_centres, scale)
    aligned = s * scene.camera_centres() @ rotation.T + t
    extent = float(np.linalg.norm(gt_centres.max(0) - gt_centres.min(0)))
    return np.linalg.norm(aligned - gt_centres, axis=1), (s, rotation, t), extent


@pytest.fixture(scope="module")
def video_reconstruction(room, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "scene"
    code = main(["reconstruct", str(room["video"]), str(out), "--quiet"])
    assert code == 0
    return out


def test_video_reconstruction_matches_ground_truth(room, video_reconstruction):
    """Every frame of the video is registered and the camera centres agree with the
    rendered ones up to a similarity, within 3 % of the cameras' extent; the output is
    in SfM units, says so, and holds a COLMAP model aceg reads."""
    scene = read_scene(video_reconstruction)
    assert len(scene) >= len(room["used"]) - 2
    video_index = [int(Path(f.name).stem.split("_")[1]) for f in scene.frames]
    gt_centres = room["gt"].camera_centres()[[room["used"][i] for i in video_index]]
    errors, _, extent = _aligned_errors(scene, gt_centres)
    assert errors.max() < MAX_RELATIVE_CENTRE_ERROR * extent, (errors, extent)
    summary = json.loads((video_reconstruction / "reconstruction.json").read_text())
    assert summary["units"] == "sfm" and summary["registered"] == len(scene)
    colmap = read_scene(video_reconstruction / "colmap")
    assert [f.name for f in colmap.frames] == [f.name for f in scene.frames]
    assert not [p for p in video_reconstruction.parent.iterdir() if p.name.startswith(".")]
    # The principal point is estimated (default), and lands near the rendered one.
    true_k, k = room["gt"].frames[0].intrinsics, colmap.frames[0].intrinsics
    assert (k.cx, k.cy) != (159.5, 119.5)
    assert abs(k.cx - true_k.cx) < 8 and abs(k.cy - true_k.cy) < 8, (k, true_k)


def test_principal_point_can_be_kept_at_the_centre():
    from aceg.cli.main import build_parser
    from aceg.cli.reconstruct import settings_of

    parse = build_parser().parse_args
    assert settings_of(parse(["reconstruct", "in", "out"])).refine_principal_point
    fixed = settings_of(parse(["reconstruct", "in", "out", "--fixed-principal-point"]))
    assert not fixed.refine_principal_point


def test_units_are_stated(room, tmp_path, capsys):
    """The command prints the registered count and that the scene is up to scale."""
    images = tmp_path / "photos"
    images.mkdir()
    for i in room["used"][:8]:
        (images / room["gt"].frames[i].image_path.name).write_bytes(
            room["gt"].frames[i].image_path.read_bytes())
    code, out, err = _run(capsys, "reconstruct", images, tmp_path / "out", "--quiet")
    assert code == 0, err
    assert "registered 8 of 8 images" in out and "SfM units" in out and "up to scale" in out
    first = room["gt"].frames[0].name
    code, out, err = _run(capsys, "reconstruct", images, tmp_path / "scaled", "--quiet",
                          "--scale", "1.5", "--scale-frames", first, "missing.png")
    assert code == 2 and "'missing.png' is not among the registered images" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "scaled").exists()
    code, out, err = _run(capsys, "reconstruct", images, images / "inside", "--quiet")
    assert code == 2 and "inside the input folder" in err


def test_separate_models_keep_the_largest(room, tmp_path, capsys):
    """Photos of two rooms: only the larger room's model is kept; when the other room's
    photos form a model of their own (SfM does not always start one from 11 photos), a
    note names the count."""
    other = tmp_path / "other"
    generate_scene(other, SEED + 1, frames_mapping=PATH_FRAMES, frames_query=0, height=240,
                   width=320, texture_size=256, splits=("mapping",), contact_sheet=False)
    images = tmp_path / "photos"
    images.mkdir()
    for i in room["used"][:14]:
        path = room["gt"].frames[i].image_path
        (images / f"a_{path.name}").write_bytes(path.read_bytes())
    for path in sorted((other / "mapping" / "rgb").iterdir())[:11]:
        (images / f"b_{path.name}").write_bytes(path.read_bytes())
    code, out, err = _run(capsys, "reconstruct", images, tmp_path / "out", "--quiet")
    assert code == 0, err
    if "separate models" in err:
        assert "aceg: note: the images formed 2 separate models; kept the largest (14 of 25" in err
    scene = read_scene(tmp_path / "out")
    assert len(scene) == 14 and all(f.name.startswith("a_") for f in scene.frames)


def test_scale_from_two_frames(room, tmp_path, capsys):
    """--scale METRES --scale-frames A B (a folder of photos): A and B end up METRES
    apart, and with METRES the true distance every camera lands on the ground truth
    after a rigid alignment (no scale), within 3 % of the extent."""
    images = tmp_path / "photos"
    images.mkdir()
    for i in room["used"]:
        path = room["gt"].frames[i].image_path
        (images / path.name).write_bytes(path.read_bytes())
    gt = room["gt"].by_name()
    a, b = room["gt"].frames[0].name, room["gt"].frames[USED - 1].name
    metres = float(np.linalg.norm(gt[a].camera_centre - gt[b].camera_centre))
    out = tmp_path / "scaled"
    code, stdout, err = _run(capsys, "reconstruct", images, out, "--quiet", "--matcher",
                             "sequential", "--scale", metres, "--scale-frames", a, b)
    assert code == 0, err
    assert "units: metres" in stdout
    scene = read_scene(out)
    by_name = {Path(f.name).stem: f for f in scene.frames}
    distance = np.linalg.norm(by_name[Path(a).stem].camera_centre
                              - by_name[Path(b).stem].camera_centre)
    assert distance == pytest.approx(metres, rel=1e-6)
    gt_centres = np.stack([gt[f.name].camera_centre for f in scene.frames])
    errors, _, extent = _aligned_errors(scene, gt_centres, scale=False)
    assert errors.max() < MAX_RELATIVE_CENTRE_ERROR * extent, (errors, extent)
    assert json.loads((out / "reconstruction.json").read_text())["units"] == "metres"


def _noise_images(folder: Path, count: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"noise_{i}.png"), rng.integers(0, 255, (240, 320, 3), np.uint8))


@pytest.mark.parametrize("case", ["empty", "bad-video", "two-images", "unrelated", "one-image"])
def test_bad_inputs_fail_in_one_line(tmp_path, capsys, case):
    """No images, a video OpenCV cannot read, too few images, images that do not register:
    exit 2, one line naming what to do, no traceback and nothing left behind."""
    source = tmp_path / "input"
    if case == "empty":
        source.mkdir()
    elif case == "bad-video":
        source = tmp_path / "clip.mp4"
        source.write_bytes(np.random.default_rng(1).bytes(4096))
    elif case in ("two-images", "unrelated"):
        _noise_images(source, 2 if case == "two-images" else 3)
    else:
        _noise_images(source, 1)
        source = source / "noise_0.png"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _run(capsys, "reconstruct", source, tmp_path / "out", "--quiet")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aceg: error: "), err
    assert "Traceback" not in err
    expected = {"empty": "no images", "bad-video": "cannot read this video",
                "two-images": "only 2 images", "unrelated": "overlap",
                "one-image": "is one image"}[case]
    assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_map_reconstruct_then_localize(room, tmp_path, capsys):
    """`aceg map VIDEO OUT.map --reconstruct` poses the video into OUT-sfm/ and maps it;
    `aceg localize` then places two held-out frames of the path where the ground truth
    has them (after the similarity that aligns the reconstruction with it)."""
    map_path = tmp_path / "walk.map"
    code, out, err = _run(capsys, "map", room["video"], map_path, "--reconstruct")
    assert code == 0, err
    assert "--reconstruct" in out and map_path.is_file()
    scene = read_scene(tmp_path / "walk-sfm")
    gt = room["gt"]
    video_index = [int(Path(f.name).stem.split("_")[1]) for f in scene.frames]
    _, (s, rotation, t), extent = _aligned_errors(
        scene, gt.camera_centres()[[room["used"][i] for i in video_index]])
    queries = tmp_path / "queries"
    write_ace_scene(gt.subset(HELD_OUT), queries)
    poses = tmp_path / "poses.txt"
    code, out, err = _run(capsys, "localize", map_path, queries, "--out", poses)
    assert code == 0, err
    results = read_results(poses)
    assert len(results) == len(HELD_OUT)
    for result in results:
        assert result.localized, result
        centre = s * rotation @ result.cam_to_world[:3, 3] + t
        truth = {Path(f.name).stem: f for f in gt.frames}[Path(result.name).stem].camera_centre
        assert np.linalg.norm(centre - truth) < MAX_RELATIVE_CENTRE_ERROR * extent


def test_video_sampling_skips_blurry_frames(room, tmp_path):
    """--fps and --frames pick the expected frame indices; blurred frames of a video are
    dropped by the variance-of-the-Laplacian rule."""
    from aceg.data.reconstruct import ReconstructSettings, sample_video, video_frame_indices

    assert video_frame_indices(100, 30.0, 3.0, None) == list(range(0, 100, 10))
    assert video_frame_indices(100, 30.0, None, 5) == [0, 25, 50, 74, 99]
    assert video_frame_indices(4, 30.0, None, 10) == [0, 1, 2, 3]
    video = tmp_path / "blur.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(10):
        image = cv2.imread(str(room["gt"].frames[i].image_path))
        writer.write(cv2.GaussianBlur(image, (0, 0), 4) if i in (3, 7) else image)
    writer.release()
    out = tmp_path / "frames"
    out.mkdir()
    names, blurry = sample_video(video, out, ReconstructSettings(progress=False))
    assert blurry == 2 and "frame_00003.png" not in names and "frame_00007.png" not in names
    assert sorted(p.name for p in out.iterdir()) == names and len(names) == 8


def test_xfeat_features_pose_the_photos(room, tmp_path):
    """features="xfeat" (XFeat keypoints, LighterGlue matches, COLMAP's verification and
    mapper) on photos of the path: every photo is registered and the camera centres agree
    with the rendered ones up to a similarity, within 3 % of the cameras' extent. (512
    keypoints per image keep the 45 exhaustive pairs quick; the CLI's --features reaches
    the same setting.)"""
    from aceg.cli.main import build_parser
    from aceg.cli.reconstruct import settings_of
    from aceg.data.reconstruct import ReconstructSettings, reconstruct

    args = build_parser().parse_args(["reconstruct", "in", "out", "--features", "xfeat"])
    assert settings_of(args).features == "xfeat"
    images = tmp_path / "photos"
    images.mkdir()
    for i in room["used"][:10]:
        path = room["gt"].frames[i].image_path
        (images / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    result = reconstruct(images, out, ReconstructSettings(features="xfeat", xfeat_keypoints=512,
                                                          progress=False))
    assert result.registered == 10 and result.features == "xfeat"
    scene = read_scene(out)
    gt = room["gt"].by_name()
    errors, _, extent = _aligned_errors(scene, np.stack([gt[f.name].camera_centre
                                                          for f in scene.frames]))
    assert errors.max() < MAX_RELATIVE_CENTRE_ERROR * extent, (errors, extent)
    assert json.loads((out / "reconstruction.json").read_text())["features"] == "xfeat"
