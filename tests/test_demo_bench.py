"""The feature-matching baseline on a synthetic query, `aceg bench --quick` and `aceg demo`
end to end (tiny synthetic scenes, few iterations)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aceg.cli.main import main as aceg_main
from aceg.data.readers import read_scene
from aceg.data.synthetic import generate_scene
from aceg.evaluation.metrics import pose_errors

TINY_ROOM = dict(frames_mapping=16, frames_query=4, height=120, width=160, texture_size=128,
                 splits=("mapping", "query_same", "query_light"), contact_sheet=False)


@pytest.fixture(scope="module")
def tiny_room(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("room") / "room"
    generate_scene(out, 4242, **TINY_ROOM)
    return out


def test_feature_matching_localizes_a_synthetic_query(tmp_path):
    """Retrieval + LighterGlue + depth lifting + RANSAC-PnP recovers the held-out views of
    a synthetic room: a few centimetres, not the metres of a wrong pose. 240x320 images
    (the baseline never upsamples, and XFeat finds too few keypoints at 120x160)."""
    from aceg.baselines.feature_matching import FeatureMatchingLocalizer, build_feature_map

    room = tmp_path / "room"
    generate_scene(room, 4242, **{**TINY_ROOM, "height": 240, "width": 320, "splits": ("mapping", "query_same")})
    mapping = read_scene(room / "mapping")
    queries = read_scene(room / "query_same")
    localizer = FeatureMatchingLocalizer(build_feature_map(mapping, progress=False))
    errors = []
    for frame in queries.frames:
        result = localizer.localize(frame.image_path, frame.intrinsics)
        assert result.cam_to_world is not None, result
        errors.append(pose_errors(result.cam_to_world, frame.cam_to_world))
    rot, trans = np.array(errors).T
    assert np.median(trans) < 0.10 and np.median(rot) < 5.0, errors


@pytest.mark.slow
def test_bench_quick_runs_all_methods(tiny_room, tmp_path, shared_data, capsys):
    """`aceg bench --quick` maps and localizes with ACE-G (cell and keypoint anchors, each
    with its identity-embedding ablation), ACE and feature matching on a synthetic scene
    and a real set, and writes the markdown section and the JSON."""
    md, js = tmp_path / "B.md", tmp_path / "b.json"
    md.write_text("# Benchmarks\n\nkept text\n")
    code = aceg_main(["bench", "--quick", "--synthetic", str(tiny_room.parent), "--real",
                      str(shared_data), "--work", str(tmp_path / "work"), "--markdown", str(md),
                      "--json", str(js), "--real-split", "every3", "sparse4", "--ablation",
                      "--methods", "aceg", "aceg-kp", "ace", "feature-matching"])
    assert code == 0
    text = md.read_text()
    assert "kept text" in text and "<!-- aceg-bench:start -->" in text
    for label in ("ACE-G", "ACE-G, identity embedding", "ACE-G, keypoint anchors",
                  "ACE-G, keypoint anchors, identity embedding", "ACE head on XFeat",
                  "Feature matching"):
        assert f"| {label} |" in text
    assert "Confident flag" in text and "med. trans / feature matching" in text
    payload = json.loads(js.read_text())
    splits = {(s["kind"], s["split"]) for s in payload["summary"]}
    assert ("synthetic", "query_light") in splits and ("real", "query_photometric") in splits
    assert ("real", "query_sparse4") in splits
    methods = {r["method"] for r in payload["runs"]}
    assert methods == {"aceg", "aceg-identity", "aceg-kp", "aceg-kp-identity", "ace", "feature-matching"}
    assert "ACE-G, keypoint anchors compared with each baseline" in text
    for r in payload["runs"]:  # the confident flag is recorded for every ACE-G query
        flags = r["confident"]
        if r["method"].startswith("aceg"):
            assert {k: len(v) for k, v in flags.items()} == {k: len(v) for k, v in r["errors"].items()}
        else:
            assert flags == {}
    assert all(r["map_bytes"] > 0 and r["mapping_seconds"] > 0 for r in payload["runs"])


@pytest.mark.slow
def test_demo_on_a_user_scene(tiny_room, tmp_path, capsys):
    """`aceg demo --scene` writes the map, poses files, a PLY a standard reader opens and
    the figure, and prints the accuracy table."""
    import cv2
    import trimesh

    out = tmp_path / "demo"
    assert aceg_main(["demo", "--scene", str(tiny_room), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "query_same" in printed and "query_light" in printed and "10cm/10deg" in printed
    for name in ("map.map", "poses_query_same.txt", "poses_query_light.txt", "demo.png"):
        assert (out / name).is_file(), name
    lines = (out / "poses_query_same.txt").read_text().splitlines()
    assert len(lines) == TINY_ROOM["frames_query"]
    figure = cv2.imread(str(out / "demo.png"))
    assert figure is not None and figure.shape[1] > 1000
    if (out / "map_cloud.ply").is_file():
        cloud = trimesh.load(out / "map_cloud.ply")
        assert len(cloud.vertices) > 0
    assert not list(out.glob("*.tmp*"))


def test_bench_reads_only_the_synthetic_splits_asked_for(tmp_path):
    from aceg.evaluation.benchmark import synthetic_datasets

    generate_scene(tmp_path / "rooms" / "scene_0000", 5, frames_mapping=4, frames_query=2,
                   height=48, width=64, splits=("mapping", "query_same", "query_view"),
                   contact_sheet=False)
    (every,) = synthetic_datasets(tmp_path / "rooms")
    assert sorted(every.queries) == ["query_same", "query_view"]
    (some,) = synthetic_datasets(tmp_path / "rooms", ["query_view", "query_light"])
    assert list(some.queries) == ["query_view"] and len(some.queries["query_view"]) == 2
