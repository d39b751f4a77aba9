"""Multi-room synthetic places: output layout, cameras in free space, continuity of the
mapping walk, queries over several rooms, repeated furniture, determinism, CLI. A tiny
place (2 rooms and the corridor, 60x80 images)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aceg.cli.main import main as aceg_main
from aceg.data.camera import invert_pose
from aceg.data.images import load_depth
from aceg.data.readers import read_scene
from aceg.data.synthetic.generate import SPLITS
from aceg.data.synthetic.layout import distance_to_segments
from aceg.data.synthetic.place_generate import PlaceSettings, generate_place, place_layout

SEED = 5
HEIGHT, WIDTH = 60, 80
TINY = dict(kind="apartment", rooms=2, frames_mapping=120, frames_query=8, height=HEIGHT,
            width=WIDTH, texture_size=128)

#: Least share of a mapping frame's pixels seen again, at the same depth, in the next one.
MIN_CONSECUTIVE_OVERLAP = 0.2


@pytest.fixture(scope="module")
def place_dir(tmp_path_factory, renderer) -> Path:
    out = tmp_path_factory.mktemp("place") / "scene_0000"
    generate_place(out, SEED, renderer=renderer, progress=False, **TINY)
    return out


def _poses(split_dir: Path) -> list[np.ndarray]:
    return [np.loadtxt(p) for p in sorted((split_dir / "poses").glob("*.txt"))]


def _overlap(depth_a, pose_a, depth_b, pose_b, K) -> float:
    """Share of a's pixels whose 3-D point projects into b where b sees it at the same
    depth (within 5 %)."""
    h, w = depth_a.shape
    v, u = np.nonzero(depth_a > 0)
    points = (np.linalg.inv(K) @ np.stack([u, v, np.ones_like(u)])) * depth_a[v, u]
    a_to_b = invert_pose(pose_b) @ pose_a
    in_b = a_to_b[:3, :3] @ points + a_to_b[:3, 3:4]
    pixels = K @ in_b
    with np.errstate(divide="ignore", invalid="ignore"):
        ub, vb = np.rint(pixels[0] / pixels[2]), np.rint(pixels[1] / pixels[2])
    inside = (in_b[2] > 0) & (ub >= 0) & (ub < w) & (vb >= 0) & (vb < h)
    seen = depth_b[vb[inside].astype(int), ub[inside].astype(int)]
    same = np.abs(seen - in_b[2][inside]) < 0.05 * in_b[2][inside]
    return float(same.sum()) / (h * w)


def test_writes_a_scene_that_the_readers_take(place_dir):
    info = json.loads((place_dir / "scene.json").read_text())
    assert info["seed"] == SEED and info["place"]["kind"] == "apartment"
    assert len(info["place"]["spaces"]) == 3  # corridor + 2 rooms
    for name in ("contact_sheet.png", "plan.png"):
        image = cv2.imread(str(place_dir / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    for split in SPLITS:
        scene = read_scene(place_dir / split)
        assert scene.has_depth and scene.has_poses
        assert len(scene) == (TINY["frames_mapping"] if split == "mapping" else TINY["frames_query"])
        frame = scene.frames[0]
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
        assert load_depth(frame.depth_path).shape == (HEIGHT, WIDTH)


def test_cameras_are_in_the_plan_and_clear_of_walls(place_dir):
    """Every camera of every split (query_moved: against the unmoved objects, so walls
    only) lies in a space or a door's passage and 0.29 m or more from every wall of every
    space and from the door sides."""
    place, _ = place_layout(SEED, PlaceSettings(**TINY))
    starts, ends = zip(*(s.wall_segments() for s in place.spaces), strict=True)
    jambs = [d.jambs() for d in place.doors]
    starts = np.concatenate([*starts, *(j[0] for j in jambs)])
    ends = np.concatenate([*ends, *(j[1] for j in jambs)])
    for split in SPLITS:
        centres = np.stack([p[:3, 3] for p in _poses(place_dir / split)])
        inside = np.zeros(len(centres), bool)
        for region in [*place.spaces, *place.doors]:
            inside |= region.contains(centres[:, :2])
        assert inside.all(), split
        assert (distance_to_segments(centres[:, :2], starts, ends) >= 0.29).all(), split
        assert ((centres[:, 2] > 0.29) & (centres[:, 2] < place.height - 0.29)).all(), split
        if split != "query_moved":
            assert place.is_free(centres[:, :2], centres[:, 2], 0.29).all(), split


def test_the_walk_is_continuous_and_goes_through_every_room(place_dir):
    mapping = place_dir / "mapping"
    poses = _poses(mapping)
    K = np.loadtxt(mapping / "calibration" / "frame_00000.txt")
    depths = [load_depth(p) for p in sorted((mapping / "depth").glob("*.png"))]
    overlaps = [_overlap(depths[i], poses[i], depths[i + 1], poses[i + 1], K)
                for i in range(len(poses) - 1)]
    steps = [np.linalg.norm(b[:3, 3] - a[:3, 3]) for a, b in zip(poses[:-1], poses[1:], strict=True)]
    print(f"consecutive mapping frames: overlap min {min(overlaps):.2f}, median "
          f"{np.median(overlaps):.2f}; step median {np.median(steps):.2f} m, max {max(steps):.2f} m")
    assert min(overlaps) >= MIN_CONSECUTIVE_OVERLAP
    assert np.median(overlaps) >= 0.6
    place, _ = place_layout(SEED, PlaceSettings(**TINY))
    visited = place.space_of(np.stack([p[:2, 3] for p in poses]))
    assert set(visited) >= set(range(len(place.spaces)))


def test_queries_lie_in_several_rooms(place_dir):
    place, _ = place_layout(SEED, PlaceSettings(**TINY))
    for split in ("query_same", "query_view"):
        centres = np.stack([p[:2, 3] for p in _poses(place_dir / split)])
        assert len(set(place.space_of(centres)) - {-1}) >= 2, split


def test_rooms_repeat_furniture_and_textures():
    """An office's rooms of one template carry the same furniture (same parts, same
    texture layers); in an apartment, pieces of the shared catalogue stand in several
    rooms and rooms share texture layers."""
    office, _ = place_layout(SEED, PlaceSettings(kind="office", rooms=4, texture_size=64))
    rooms = {s.name: s for s in office.spaces}
    first, third = rooms["room_1"], rooms["room_3"]
    assert first.template == third.template == 0 and rooms["room_2"].template == 1

    def pieces(space):
        return {(o.kind, o.parts) for o in space.layout.objects if o.kind != "poster"}

    assert pieces(first) and pieces(first) == pieces(third)
    assert first.layout.wall_materials == third.layout.wall_materials
    apartment, _ = place_layout(SEED, PlaceSettings(kind="apartment", rooms=4, texture_size=64))
    furniture = [pieces(s) for s in apartment.spaces[1:]]
    repeated = [p for p in set().union(*furniture) if sum(p in f for f in furniture) >= 2]
    assert repeated, "no piece of furniture stands in two apartment rooms"
    summary = apartment.summary()["spaces"]
    shared = set(summary[1]["texture_layers"]) & set(summary[2]["texture_layers"])
    assert shared


def test_same_seed_same_poses(place_dir, renderer, tmp_path):
    again = tmp_path / "again"
    generate_place(again, SEED, renderer=renderer, progress=False,
                   **{**TINY, "frames_query": 0}, splits=("mapping",))
    for name in sorted(p.name for p in (place_dir / "mapping" / "poses").iterdir()):
        assert (again / "mapping" / "poses" / name).read_bytes() == \
            (place_dir / "mapping" / "poses" / name).read_bytes()
    depth = sorted((place_dir / "mapping" / "depth").glob("*.png"))[7]
    assert (again / "mapping" / "depth" / depth.name).read_bytes() == depth.read_bytes()
    other, _ = place_layout(SEED + 1, PlaceSettings(**TINY))
    place, _ = place_layout(SEED, PlaceSettings(**TINY))
    assert other.summary() != place.summary()


def test_cli_checks_place_options(tmp_path, capsys):
    out = tmp_path / "places"
    assert aceg_main(["synth", str(out), "--place", "office", "--rooms", "1"]) == 2
    assert "2-16 rooms" in capsys.readouterr().err
    assert aceg_main(["synth", str(out), "--rooms", "3"]) == 2
    assert "--place" in capsys.readouterr().err
    assert aceg_main(["synth", str(out), "--place", "office", "--workers", "2"]) == 2
    assert aceg_main(["synth", str(out), "--place", "office", "--size", "60by80"]) == 2
    assert not out.exists()
