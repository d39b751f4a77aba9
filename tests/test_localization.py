"""RANSAC-PnP on synthetic correspondences, the Localizer on bad input, the CLI."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

import aceg
from aceg.cli.main import main
from aceg.data.camera import Intrinsics, make_pose, project
from aceg.data.scene import Frame
from aceg.errors import AcegError
from aceg.evaluation.results import read_results
from aceg.localization.localizer import (
    CONFIDENT_INLIERS,
    MIN_CORRESPONDENCES,
    Localizer,
    solve_pnp,
)
from aceg.mapping.mapper import map_scene
from aceg.model.ace_head import AceHeadConfig
from planar_scenes import corner_scene


def _synthetic(n: int, outliers: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    intr = Intrinsics(520.0, 470.0, 301.7, 228.9)  # fx != fy, off-centre principal point
    R = cv2.Rodrigues(np.array([0.2, -0.35, 0.1]))[0]
    c2w = make_pose(R, [0.7, -1.2, 2.5])
    cam = rng.uniform([-3, -2, 2], [3, 2, 9], (n, 3))
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    pix = project(world, intr.K, c2w)
    bad = rng.random(n) < outliers
    world[bad] += rng.normal(0, 2.0, (bad.sum(), 3))
    return intr, c2w, pix, world


def test_pnp_recovers_exact_pose_with_outliers():
    intr, c2w, pix, world = _synthetic(800, 0.4)
    r = solve_pnp(pix, world, intr, 640, 480, "q")
    assert r.localized and r.confident and r.inliers >= 0.55 * 800
    assert np.abs(r.cam_to_world - c2w).max() < 1e-6
    assert r.inliers >= CONFIDENT_INLIERS


def test_pnp_too_few_correspondences_is_not_localized():
    intr, _, pix, world = _synthetic(MIN_CORRESPONDENCES - 1, 0.0)
    r = solve_pnp(pix, world, intr, 640, 480, "q")
    assert not r.localized and "too few" in r.reason and r.cam_to_world is None


def test_pnp_noise_only_is_not_confident():
    rng = np.random.default_rng(3)
    intr = Intrinsics(500, 500, 320, 240)
    r = solve_pnp(rng.uniform(0, 640, (300, 2)), rng.uniform(-5, 5, (300, 3)), intr, 640, 480)
    assert not r.confident


@pytest.fixture(scope="module")
def small_map(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("loc")
    scene = corner_scene(root / "scene", n=10, size=(160, 120))
    mapping, queries = scene.split_every(5, 2)
    path = root / "s.map"
    map_scene(mapping, path, model="ace", preset="fast", short_side=120, iterations=150,
              batch_size=1024, head_config=AceHeadConfig(64, 64, 1), progress=False)
    return path, queries


def test_localizer_unreadable_query_keeps_going(small_map, tmp_path):
    path, queries = small_map
    loc = aceg.Localizer(path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    f = queries[0]
    frames = [f, Frame("broken.png", bad, f.width, f.height, f.intrinsics, None), queries[1]]
    results = [loc.localize_frame(x) for x in frames]
    assert results[0].localized and results[2].localized
    assert not results[1].localized and "broken.png" in results[1].reason
    assert set(results[0].timings) >= {"encode", "regress", "ransac", "total"}


def test_localizer_accepts_arrays_and_checks_them(small_map):
    path, queries = small_map
    loc = Localizer(path)
    rgb = cv2.cvtColor(cv2.imread(str(queries[0].image_path)), cv2.COLOR_BGR2RGB)
    r = loc.localize(rgb, queries[0].intrinsics)
    assert r.localized and r.name == "array"
    with pytest.raises(AcegError, match="RGB uint8"):
        loc.localize(rgb.astype(np.float32), queries[0].intrinsics)


def test_aceg_map_with_other_regressor_is_refused(tmp_path):
    scene = corner_scene(tmp_path / "s", n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        map_scene(scene, tmp_path / "g.map", short_side=120, progress=False)
        Localizer(tmp_path / "g.map")  # same (default) regressor: fine
    from aceg.model.map_file import save_regressor
    from aceg.model.regressor import RegressorConfig, random_regressor

    other = tmp_path / "other.safetensors"
    save_regressor(other, random_regressor(RegressorConfig(), seed=9), "xfeat")
    with pytest.raises(AcegError, match="made with regressor"):
        Localizer(tmp_path / "g.map", regressor=other)


def _write_ace_scene(scene, folder):
    for sub in ("rgb", "poses", "calibration"):
        (folder / sub).mkdir(parents=True)
    for f in scene:
        stem = f.name.rsplit(".", 1)[0]
        (folder / "rgb" / f.name).write_bytes(f.image_path.read_bytes())
        np.savetxt(folder / "poses" / f"{stem}.txt", f.cam_to_world)
        np.savetxt(folder / "calibration" / f"{stem}.txt", f.intrinsics.K)


def test_cli_map_and_localize(tmp_path, capsys):
    scene = corner_scene(tmp_path / "raw", n=10, size=(160, 120))
    _write_ace_scene(scene, tmp_path / "ace")
    out_map = tmp_path / "m.map"
    assert main(["map", str(tmp_path / "ace"), str(out_map), "--model", "ace", "--preset",
                 "fast", "--short-side", "120", "--iterations", "40", "--batch-size", "512", "--split", "5:2"]) == 0
    assert "ace map of 8 images" in capsys.readouterr().out
    poses = tmp_path / "poses.txt"
    assert main(["localize", str(out_map), str(tmp_path / "ace"), "--out", str(poses),
                 "--split", "5:2", "--gt", str(tmp_path / "ace")]) == 0
    out = capsys.readouterr().out
    assert "of 2 images localized" in out and "10cm/10deg" in out
    lines = poses.read_text().splitlines()
    assert len(lines) == 2 and all("0002.png" in x or "0007.png" in x for x in lines)
    for r in read_results(poses):  # localized lines carry their errors against --gt
        assert np.isfinite(r.trans_err_m) and np.isfinite(r.rot_err_deg)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "junk.map").write_bytes(b"nope")
    code = main(["localize", str(tmp_path / "junk.map"), str(tmp_path), "--out",
                 str(tmp_path / "p.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "junk.map" in err and "Traceback" not in err
    code = main(["map", str(tmp_path / "nothing"), str(tmp_path / "x.map")])
    assert code == 2 and "nothing" in capsys.readouterr().err
    code = main(["map", str(tmp_path), str(tmp_path / "x.map"), "--split", "1:5"])
    assert code == 2


def test_localizer_missing_or_bad_intrinsics(small_map):
    path, queries = small_map
    loc = Localizer(path)
    with pytest.raises(AcegError, match="intrinsics missing"):
        loc.localize(queries[0].image_path, None)
    f = queries[0]
    bad = Frame(f.name, f.image_path, f.width, f.height, Intrinsics(-1.0, 100.0, 80.0, 60.0), None)
    r = loc.localize_frame(bad)
    assert not r.localized and "focal length" in r.reason


def test_cli_map_notes_unused_depth(tmp_path, capsys):
    """`aceg map` on a scene whose images all have depth points to --depth when it is not
    given (reprojection-only maps are far off along the rays), and says nothing when it is."""
    from aceg.data.synthetic import generate_scene

    generate_scene(tmp_path / "room", 7, frames_mapping=6, frames_query=0, height=48, width=64,
                   splits=("mapping",), contact_sheet=False)
    args = ["map", str(tmp_path / "room" / "mapping"), str(tmp_path / "m.map"), "--model", "ace",
            "--preset", "fast", "--iterations", "5", "--batch-size", "256"]
    assert main(args) == 0
    assert "--depth was not given" in capsys.readouterr().out
    assert main(args + ["--depth"]) == 0
    assert "--depth was not given" not in capsys.readouterr().out


def test_speeds_set_the_cells_read_and_the_lists_searched(tmp_path, monkeypatch, capsys):
    from aceg.localization.localizer import SPEEDS, speed_settings
    from aceg.model.anchors import AnchorLists
    from aceg.model.encoder import XFeatEncoder
    from aceg.service.app import ServiceConfig, localizer_factory

    assert speed_settings("fast") == {"query_patches": SPEEDS["fast"][0], "lists_probed": 8}
    with pytest.raises(AcegError, match="unknown speed"):
        speed_settings("ludicrous")
    scene = corner_scene(tmp_path / "raw", n=8, size=(320, 240))
    _write_ace_scene(scene, tmp_path / "ace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        map_scene(scene.subset(range(0, 8, 2)), tmp_path / "m.map", short_side=240, progress=False)
    probed = []
    search = AnchorLists.search
    monkeypatch.setattr(AnchorLists, "search",
                        lambda self, q, k, p: probed.append((q.shape[0], p)) or search(self, q, k, p))
    rated = []
    encode_scored = XFeatEncoder.encode_scored
    monkeypatch.setattr(XFeatEncoder, "encode_scored",
                        lambda self, images: rated.append(1) or encode_scored(self, images))
    plain = Localizer(tmp_path / "m.map")
    fast = localizer_factory(ServiceConfig(tmp_path, speed="fast"))(tmp_path / "m.map")  # as served
    assert fast.query_patches == SPEEDS["fast"][0]
    assert plain.localize_frame(scene[1]).localized
    assert not rated  # 1,200 cells, all read: no cell is rated
    assert fast.localize_frame(scene[1]).localized and rated == [1]
    default_probed = plain.regressor.model.config.lists_probed
    assert probed == [(1200, default_probed), (1024, 8)]  # 30 x 40 cells, all read by default
    with pytest.raises(AcegError, match="lists_probed"):
        Localizer(tmp_path / "m.map", lists_probed=0)
    with pytest.raises(AcegError, match="encoder runtime"):
        Localizer(tmp_path / "m.map", encoder_runtime="tensorrt")
    poses = tmp_path / "poses.txt"
    assert main(["localize", str(tmp_path / "m.map"), str(tmp_path / "ace"), "--out", str(poses),
                 "--split", "2:1", "--speed", "fast"]) == 0
    assert "of 4 images localized" in capsys.readouterr().out
    assert probed[2:] == [(1024, 8)] * 4
    assert main(["localize", str(tmp_path / "m.map"), str(tmp_path / "ace"), "--out", str(poses),
                 "--split", "2:1", "--encoder-runtime", "torch"]) == 0
