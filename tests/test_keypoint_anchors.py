"""Keypoint anchors (``anchor_points="keypoints"``): the anchor model's map of triangulated
mapping keypoints, read from the query's keypoints; its map metadata, refusals and bench
methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aceg.cli.main import main
from aceg.data.readers import read_scene
from aceg.errors import AcegError
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import QUERY_KEYPOINTS, Localizer
from aceg.mapping.anchor_map import AnchorMapConfig
from aceg.mapping.mapper import map_scene
from aceg.model.anchors import MARGIN_DEPTH, AnchorConfig, AnchorRegressor
from aceg.model.common import LOG_UNC_MAX, LOG_UNC_MIN
from aceg.model.map_file import load_map
from planar_scenes import corner_scene
from test_mapping import _held_out_errors


def _margin(log_unc: torch.Tensor) -> torch.Tensor:
    """The similarity margin a log-uncertainty encodes (inverse of the model's mapping)."""
    return (LOG_UNC_MAX - log_unc) / (LOG_UNC_MAX - LOG_UNC_MIN)


def test_margin_is_taken_to_another_point():
    """With ``distinct_points`` the margin skips anchors at the best anchor's own point (the
    other views of its track) and is taken to the best anchor elsewhere; -1 stands in when
    none of the searched anchors lies elsewhere. Without it, the runner-up anchor counts."""
    model = AnchorRegressor(AnchorConfig(feature_dim=4, hidden=8, search="exact"))
    keys = F.normalize(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0],
                                     [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]), dim=1)
    points = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    code = model.make_code(keys, points)
    query = torch.tensor([[1.0, 0.2, 0.0, 0.0]])
    sims = F.normalize(query, dim=1) @ code[:, :4].T
    with torch.no_grad():
        coords, plain = model(query, code)
        same, apart = model(query, code, distinct_points=True)
    assert torch.equal(coords, same) and torch.equal(coords[0], points[0])
    best, runner_up = sims[0, :2].max(), sims[0, :2].min()  # both at the first point
    expected_plain = (best - runner_up).clamp(0, 1)
    expected_apart = (best - sims[0, 2]).clamp(0, 1)
    assert expected_apart > expected_plain + 0.3
    assert torch.allclose(_margin(plain[0]), expected_plain, atol=1e-5)
    assert torch.allclose(_margin(apart[0]), expected_apart, atol=1e-5)
    one_track = model.make_code(keys[:2], points[:2])  # every anchor at the best one's point
    with torch.no_grad():
        _, alone = model(query, one_track, distinct_points=True)
    assert alone[0] == LOG_UNC_MIN  # margin sim + 1, clamped to 1
    assert MARGIN_DEPTH >= 2


def test_keypoint_map_localizes_and_records_its_anchor_kind(tmp_path):
    """A keypoint anchor map of a tiny room: anchors are the triangulated keypoints (the
    keypoints of one track share one point), the map records its kind and a format version
    older aceg refuses, the budget subset depends on the seed only, and held-out views
    localize from their keypoints as accurately as the cell map does."""
    scene = corner_scene(tmp_path / "s", n=14, seed=1)
    mapping, queries = scene.split_every(5, 2)
    kp = map_scene(mapping, tmp_path / "kp.map", short_side=120, progress=False,
                   anchor_points="keypoints")
    cells = map_scene(mapping, tmp_path / "cells.map", short_side=120, progress=False)
    data = load_map(kp.path)
    assert data.anchor_points == "keypoints" and data.model == "anchors"
    assert kp.stats["anchors"] == kp.stats["keypoints"] == len(data.code) > 300
    points = data.code[:, 64:]
    assert kp.stats["tracks"] == len(torch.unique(points, dim=0)) < len(points) / 2
    meta = json.loads(safe_open(str(kp.path), "pt").metadata()["aceg_map"])
    assert meta["anchor_points"] == "keypoints" and meta["format_version"] == 4
    assert meta["regressor"] == json.loads(safe_open(str(cells.path), "pt").metadata()["aceg_map"])["regressor"]
    cell_meta = json.loads(safe_open(str(cells.path), "pt").metadata()["aceg_map"])
    assert "anchor_points" not in cell_meta and cell_meta["format_version"] == 4  # as before
    assert load_map(cells.path).anchor_points == "cells"

    kp_errs = _held_out_errors(queries, kp.path)
    cell_errs = _held_out_errors(queries, cells.path)
    # cells: ~7 cm / 1.7 deg on these 160x120 views; keypoints: ~7 cm / 1.1 deg
    assert np.median(kp_errs[:, 1]) < 0.12 and np.median(kp_errs[:, 0]) < 2.5, kp_errs
    assert np.median(kp_errs[:, 0]) < 1.5 * np.median(cell_errs[:, 0]) + 0.2
    loc = Localizer(kp.path)
    assert loc.keypoints and not Localizer(cells.path).keypoints
    frame = queries.frames[0]
    result = loc.localize_frame(frame)
    assert 12 <= result.correspondences <= QUERY_KEYPOINTS and result.inliers > 0
    assert loc.sparse_features() is loc.sparse_features()  # one extractor per localizer

    budget = [map_scene(mapping, tmp_path / f"b{seed}{i}.map", short_side=120, progress=False,
                        anchor_points="keypoints", max_anchors=150, seed=seed)
              for seed, i in ((0, 0), (0, 1), (1, 0))]
    codes = [load_map(r.path).code for r in budget]
    assert all(len(c) == 150 for c in codes) and budget[0].stats["max_anchors"] == 150
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])


def test_keypoint_anchor_refusals(tmp_path, capsys):
    """Keypoint anchors with depth maps, an unknown kind, the flag on another model, and a
    map file whose anchor kind and format version disagree are one-line errors."""
    scene = corner_scene(tmp_path / "s", n=6, seed=2, depth=True)
    with pytest.raises(AcegError, match="--anchor-points keypoints does not combine with --depth"):
        AnchorMapConfig(use_depth=True, anchor_points="keypoints")
    with pytest.raises(AcegError, match="must be one of cells, keypoints"):
        map_scene(scene, tmp_path / "x.map", anchor_points="patches", progress=False)
    from aceg.data.writers import write_ace_scene

    write_ace_scene(scene, tmp_path / "ace")
    capsys.readouterr()
    for extra, message in ((["--depth"], "--anchor-points keypoints does not combine with --depth"),
                           (["--model", "ace"], "--anchor-points does not apply to --model ace")):
        assert main(["map", str(tmp_path / "ace"), str(tmp_path / "x.map"),
                     "--anchor-points", "keypoints", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not (tmp_path / "x.map").exists()

    good = map_scene(scene, tmp_path / "c.map", short_side=120, progress=False)
    tensors = load_file(str(good.path))
    meta = json.loads(safe_open(str(good.path), "pt").metadata()["aceg_map"])
    meta.pop("sha256")  # as the maps of versions 2 and 3 were written
    for name, change in (("v3-cells", {"format_version": 3}),
                         ("v2-kp", {"format_version": 2, "anchor_points": "keypoints"}),
                         ("v3-odd", {"format_version": 3, "anchor_points": "corners"})):
        path = tmp_path / f"{name}.map"
        save_file(tensors, str(path), metadata={"aceg_map": json.dumps({**meta, **change})})
        with pytest.raises(AcegError, match=f"{name}.map.*anchor_points"):
            load_map(path)


def test_ablation_adds_each_identity_variant_after_its_method():
    from aceg.cli.bench import with_ablations
    from aceg.evaluation.benchmark import METHODS, scr_model_settings

    assert with_ablations(["aceg", "aceg-kp", "ace"]) == ["aceg", "aceg-identity", "aceg-kp",
                                                          "aceg-kp-identity", "ace"]
    assert with_ablations(["ace"]) == ["aceg-identity", "ace"]  # as before
    assert with_ablations(["aceg-kp"]) == ["aceg-identity", "aceg-kp", "aceg-kp-identity"]
    assert METHODS.index("aceg-kp") == METHODS.index("aceg-identity") + 1
    model, kwargs = scr_model_settings("aceg-kp-identity", {})
    assert model == "anchors" and kwargs["anchor_points"] == "keypoints"
    assert kwargs["regressor"].endswith("anchors-identity-xfeat.safetensors")
    assert "anchor_points" not in scr_model_settings("aceg", {})[1]


@pytest.mark.slow
def test_keypoint_anchors_localize_fountain(shared_data, tmp_path):
    """fountain-P11, every third image a query, at the default working size: keypoint
    anchors localize every query to about a centimetre or two."""
    scene = read_scene(shared_data / "strecha" / "fountain-P11")
    mapping, queries = scene.split_every(3, 1)
    result = map_scene(mapping, tmp_path / "f.map", progress=False, anchor_points="keypoints")
    assert result.stats["anchors"] > 3000
    errs = _held_out_errors(queries, result.path)
    # 1.3-1.8 cm and at most 0.12 deg on this 4-query split (cell anchors: 1.2-3.4 cm)
    assert np.median(errs[:, 1]) < 0.025 and errs[:, 1].max() < 0.04 and errs[:, 0].max() < 0.3, errs
    # the guided second stage (on by default) is what ran, and it is no worse than the
    # first stage alone
    first_only, guided = Localizer(result.path, guided=None), Localizer(result.path)
    one = [first_only.localize_frame(f) for f in queries.frames]
    two = [guided.localize_frame(f) for f in queries.frames]
    assert all("guided" in r.timings for r in two) and not any("guided" in r.timings for r in one)
    # the guided stage gave every pose, from many keypoints that agree with it (anchors
    # placed anywhere but at their points, the scene centre included, would give few),
    # and the confident flag is the first stage's
    assert all(r.stage == "guided" and r.inliers >= 100 for r in two), [(r.stage, r.inliers) for r in two]
    assert [r.confident for r in two] == [r.confident for r in one]
    assert np.linalg.norm(load_map(result.path).scene_centre) > 1.0  # a real offset to add back
    t_one = [pose_errors(r.cam_to_world, f.cam_to_world)[1] for r, f in zip(one, queries.frames, strict=True)]
    t_two = [pose_errors(r.cam_to_world, f.cam_to_world)[1] for r, f in zip(two, queries.frames, strict=True)]
    assert np.median(t_two) <= np.median(t_one) + 0.002, (t_one, t_two)
