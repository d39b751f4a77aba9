"""Bad output paths and inputs that used to pass silently: each fails before the work with a
one-line error naming the file, never overwrites an input, and loses no finished result."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.cli.main import main
from aceg.data.camera import Intrinsics
from aceg.data.images import prepare_image
from aceg.data.readers import read_scene
from aceg.errors import AcegError
from aceg.io import atomic_write_text, check_output_path
from tiny_map import tiny_map


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def test_check_output_path_refuses_what_cannot_or_must_not_be_written(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    source = tmp_path / "image.png"
    source.write_bytes(b"png")
    cases = [
        (dict(target=tmp_path / "afile" / "x.map"), "is a file, not a folder"),
        (dict(target=tmp_path / "adir"), "is a folder"),
        (dict(target=tmp_path / "afile", folder=True), "is a file"),
        (dict(target=source, inputs=[source]), "would overwrite it"),
        (dict(target=tmp_path / "fig.gif", suffixes=(".png",)), "must end in .png"),
    ]
    for kwargs, message in cases:
        target = kwargs.pop("target")
        with pytest.raises(AcegError, match=message) as info:
            check_output_path(target, **kwargs)
        assert str(target) in str(info.value)
    assert check_output_path(tmp_path / "new" / "deeper" / "x.map") == tmp_path / "new/deeper/x.map"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "hello")
        assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_localize_refuses_bad_outputs_before_localizing(tiny, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    before = tiny.map_path.read_bytes()
    for out, message in ((tiny.map_path, "would overwrite it"),
                         (tmp_path / "afile" / "p.txt", "is a file, not a folder"),
                         (tmp_path, "is a folder")):
        code, stdout, err = _run(capsys, "localize", tiny.map_path, tiny.ace_dir, "--out", out)
        assert code == 2 and message in err and str(out) in err
        assert "localized" not in stdout  # refused up front, not after the work
    assert tiny.map_path.read_bytes() == before


def test_localize_keeps_the_others_when_a_query_is_corrupt(tiny, tmp_path, capsys):
    scene_dir = tmp_path / "queries"
    shutil.copytree(tiny.ace_dir, scene_dir)
    images = sorted((scene_dir / "rgb").iterdir())
    for extra in images[3:]:  # keep 3 frames: the test is about the corrupt one
        extra.unlink()
        for sub in ("poses", "calibration"):
            (scene_dir / sub / f"{extra.stem}.txt").unlink()
    data = images[1].read_bytes()
    images[1].write_bytes(data[: len(data) // 2])  # valid header, truncated pixels
    poses = tmp_path / "p.txt"
    code, stdout, err = _run(capsys, "localize", tiny.map_path, scene_dir, "--out", poses)
    assert code == 2 and images[1].name in err and "holds the others' poses" in err
    lines = poses.read_text().splitlines()
    assert len(lines) == 3 and sum(line.startswith("# not localized") for line in lines) == 1


def test_localize_checks_the_ground_truth_before_localizing(tiny, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny.ace_dir, other)
    for f in (other / "rgb").iterdir():
        f.rename(f.with_name("x" + f.name))
    for sub in ("poses", "calibration"):
        for f in (other / sub).iterdir():
            f.rename(f.with_name("x" + f.name))
    poses = tmp_path / "p.txt"
    code, stdout, err = _run(capsys, "localize", tiny.map_path, tiny.ace_dir, "--out", poses,
                             "--gt", other)
    assert code == 2 and str(other) in err and "not in the ground truth" in err
    assert "localized" not in stdout and not poses.exists()
    # The same names with other images (another split's ground truth): a warning.
    same_names = tmp_path / "same-names"
    shutil.copytree(tiny.ace_dir, same_names)
    for f in (same_names / "rgb").iterdir():
        f.write_bytes((tiny.ace_dir / "rgb" / sorted(os.listdir(tiny.ace_dir / "rgb"))[0])
                      .read_bytes())
    code, stdout, err = _run(capsys, "localize", tiny.map_path, tiny.ace_dir, "--out", poses,
                             "--gt", same_names)
    assert code == 0 and "differ from the query images" in stdout


def test_map_never_overwrites_its_own_images(tiny, tmp_path, capsys):
    image = next((tiny.ace_dir / "rgb").iterdir())
    before = image.read_bytes()
    code, _, err = _run(capsys, "map", tiny.ace_dir, image, "--model", "ace")
    assert code == 2 and "would overwrite it" in err
    assert image.read_bytes() == before


@pytest.mark.parametrize("model, flags", [
    ("anchors", ["--preset", "fast"]), ("anchors", ["--iterations", "5"]),
    ("anchors", ["--batch-size", "64"]), ("anchors", ["--code-init", "random"]),
    ("anchors", ["--encoder", "xfeat"]), ("anchors", ["--triangulate"]),
    ("transformer", ["--max-anchors", "10"]), ("transformer", ["--encoder", "xfeat"]),
    ("ace", ["--max-anchors", "10"]), ("ace", ["--regressor", "w.safetensors"]),
    ("ace", ["--code-init", "random"]),
])
def test_map_refuses_flags_of_another_model(tiny, tmp_path, capsys, model, flags):
    """A flag that does not apply to the chosen model is a one-line error naming both,
    before anything is read or written."""
    out = tmp_path / "x.map"
    code, stdout, err = _run(capsys, "map", tiny.ace_dir, out, "--model", model, *flags)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"{flags[0]} does not apply to --model {model}" in err
    assert not out.exists()


def test_map_method_flag_points_to_model(tiny, tmp_path, capsys):
    code, _, err = _run(capsys, "map", tiny.ace_dir, tmp_path / "x.map", "--method", "ace")
    assert code == 2 and "--method is gone: choose --model" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:  # argparse's own error
        main(["map", str(tiny.ace_dir), str(tmp_path / "x.map"), "--model", "aceg"])
    assert exit_info.value.code == 2 and "invalid choice: 'aceg'" in capsys.readouterr().err


def _map_contents(path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _rehashed(tensors: dict, meta: dict) -> dict:
    """Metadata of a map file holding ``tensors``, its content hash made anew (as a writer
    with a bug would), so that the checks behind the hash are what refuses it."""
    from aceg.model.map_verify import with_hash

    return {"aceg_map": json.dumps(with_hash(tensors, meta, "map"))}


def test_map_with_a_non_finite_value_is_refused(tiny, tmp_path, capsys):
    tensors, metadata = _map_contents(tiny.map_path)
    tensors["scene_centre"] = torch.tensor([0.0, float("nan"), 0.0], dtype=torch.float64)
    bad = tmp_path / "nan.map"
    save_file(tensors, str(bad), metadata=_rehashed(tensors, json.loads(metadata["aceg_map"])))
    code, _, err = _run(capsys, "localize", bad, tiny.ace_dir, "--out", tmp_path / "p.txt")
    assert code == 2 and "nan.map" in err and "scene_centre" in err


def test_map_made_with_an_unknown_encoder_names_the_map(tiny, tmp_path, capsys):
    tensors, metadata = _map_contents(tiny.map_path)
    meta = json.loads(metadata["aceg_map"])
    meta["encoder"] = "dinov2"
    bad = tmp_path / "dino.map"
    save_file(tensors, str(bad), metadata=_rehashed(tensors, meta))
    code, _, err = _run(capsys, "localize", bad, tiny.ace_dir, "--out", tmp_path / "p.txt")
    assert code == 2 and "dino.map" in err and "dinov2" in err


def test_results_files_with_a_bom_or_binary_bytes(tiny, tmp_path, capsys):
    poses = tmp_path / "p.txt"
    assert _run(capsys, "localize", tiny.map_path, tiny.ace_dir, "--out", poses)[0] == 0
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + poses.read_bytes())
    code, stdout, _ = _run(capsys, "eval", "--gt", tiny.ace_dir, "--poses", bom)
    assert code == 0 and "10cm/10deg" in stdout
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xd4\xff\x00garbage")
    code, _, err = _run(capsys, "eval", "--gt", tiny.ace_dir, "--poses", binary)
    assert code == 2 and "binary.txt" in err and "UTF-8" in err
    code, _, err = _run(capsys, "eval", "--gt", tiny.ace_dir, "--poses", poses, "--json", poses)
    assert code == 2 and "would overwrite it" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing localized\n")
    code, stdout, _ = _run(capsys, "eval", "--gt", tiny.ace_dir, "--poses", empty)
    assert code == 0 and "holds no pose lines" in stdout


def test_plot_writes_the_format_its_name_says(tiny, tmp_path, capsys):
    poses = tmp_path / "p.txt"
    assert _run(capsys, "localize", tiny.map_path, tiny.ace_dir, "--out", poses)[0] == 0
    assert _run(capsys, "plot", poses, "--gt", tiny.ace_dir, "--out", tmp_path / "f.jpg")[0] == 0
    assert (tmp_path / "f.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG, not PNG bytes
    code, _, err = _run(capsys, "plot", poses, "--gt", tiny.ace_dir, "--out", tmp_path / "f.gif")
    assert code == 2 and "f.gif" in err


def test_depth_of_another_aspect_ratio_is_refused(tmp_path):
    import cv2

    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.zeros((120, 160, 3), np.uint8))
    intrinsics = Intrinsics(100.0, 100.0, 80.0, 60.0)
    np.save(tmp_path / "same.npy", np.ones((60, 80), np.float32))  # half size: resized
    prepared = prepare_image(image, intrinsics, short_side=None, depth_path=tmp_path / "same.npy")
    assert prepared.depth.shape == (120, 160)
    np.save(tmp_path / "square.npy", np.ones((50, 50), np.float32))
    with pytest.raises(AcegError, match="aspect ratio") as info:
        prepare_image(image, intrinsics, short_side=None, depth_path=tmp_path / "square.npy")
    assert "square.npy" in str(info.value)


def test_convert_refuses_corrupt_images_and_a_destination_inside_the_source(tiny, tmp_path,
                                                                            capsys):
    source = tmp_path / "src"
    shutil.copytree(tiny.ace_dir, source)
    code, _, err = _run(capsys, "convert", source, source / "rgb" / "sub")
    assert code == 2 and "holds files of the source scene" in err
    assert not (source / "rgb" / "sub").exists()
    image = sorted((source / "rgb").iterdir())[2]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    code, _, err = _run(capsys, "convert", source, tmp_path / "dst")
    assert code == 2 and image.name in err and not (tmp_path / "dst").exists()


def test_info_warns_about_resized_images_and_cameras_at_one_point(tiny, tmp_path, capsys):
    import cv2

    scene_dir = tmp_path / "scene"
    shutil.copytree(tiny.ace_dir, scene_dir)
    image = sorted((scene_dir / "rgb").iterdir())[0]
    cv2.imwrite(str(image), cv2.resize(cv2.imread(str(image)), (200, 150)))
    first_pose = sorted((scene_dir / "poses").iterdir())[0].read_text()
    for pose in (scene_dir / "poses").iterdir():
        pose.write_text(first_pose)
    code, stdout, _ = _run(capsys, "info", scene_dir)
    assert code == 0
    assert "share one focal length" in stdout and "160x120" in stdout and "200x150" in stdout
    assert "all cameras sit at one point" in stdout
    code, stdout, _ = _run(capsys, "info", tiny.ace_dir)
    assert "focal length" not in stdout and "one point" not in stdout


def test_an_anchor_map_with_few_anchors_warns():
    from aceg.mapping.anchor_map import FEW_ANCHORS, anchor_code
    from aceg.model.anchors import AnchorRegressor

    model = AnchorRegressor()
    n = FEW_ANCHORS + 10
    features = torch.randn(n, model.config.feature_dim)
    for valid_count, warns in ((FEW_ANCHORS - 1, True), (FEW_ANCHORS, False)):
        valid = torch.zeros(n, dtype=torch.bool)
        valid[:valid_count] = True
        buffer = SimpleNamespace(features=features, target=torch.randn(n, 3), target_valid=valid,
                                 dropped=0)
        with pytest.warns(UserWarning, match="anchors") if warns else _no_warning():
            code, stats = anchor_code(model, buffer, torch.Generator().manual_seed(0))
        assert stats["anchors"] == valid_count == len(code)


@contextlib.contextmanager
def _no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_scene_files_list_everything_read(tiny, tmp_path):
    from aceg.data.writers import write_ace_scene
    from planar_scenes import corner_scene

    scene = read_scene(tiny.ace_dir)  # images, poses, calibration
    files = {f.relative_to(tiny.ace_dir).parts[0] for f in scene.files()}
    assert files == {"rgb", "poses", "calibration"} and len(scene.files()) == 3 * len(scene)
    write_ace_scene(corner_scene(tmp_path / "raw", n=2, depth=True), tmp_path / "with-depth")
    scene = read_scene(tmp_path / "with-depth")
    folders = [f.relative_to(tmp_path / "with-depth").parts[0] for f in scene.files()]
    assert sorted(set(folders)) == ["calibration", "depth", "poses", "rgb"] and len(folders) == 8
    assert all(f.is_file() for f in scene.files())


def test_ground_truth_matching_by_name():
    from pathlib import Path

    from aceg.data.scene import Frame, Scene
    from aceg.evaluation.results import match_frames

    k = Intrinsics(100.0, 100.0, 80.0, 60.0)
    gt = Scene("rig", [Frame(n, Path(n), 160, 120, k, np.eye(4))
                       for n in ("cam0/0001.jpg", "cam1/0001.jpg", "cam0/0002.jpg")])
    assert match_frames(["cam1/0001.jpg", "0002.jpg", "cam0/0001.jpg"], gt) == [1, 2, 0]
    with pytest.raises(AcegError, match="several frames"):
        match_frames(["0001.jpg"], gt)
    with pytest.raises(AcegError, match="not in the ground truth"):
        match_frames(["0003.jpg"], gt)
    with pytest.raises(AcegError, match="both name"):
        match_frames(["cam0/0002.jpg", "0002.jpg"], gt)
