"""Place regions: the read-out within a voted region, for places with look-alike rooms."""

from __future__ import annotations

import numpy as np
import torch

import aceg.localization.localizer as localizer_module
import aceg.localization.regions as regions_module
from aceg.localization.localizer import Localizer
from aceg.localization.regions import PlaceRegions
from aceg.mapping.mapper import map_scene
from aceg.model.anchors import dequantize_keys, quantize_keys
from aceg.model.map_file import load_map, save_map
from planar_scenes import corner_scene


def test_regions_group_anchors_by_place_and_vote():
    rng = np.random.default_rng(0)
    rooms = np.array([[0.0, 0, 0], [10.0, 0, 0], [0.0, 10, 0]])
    points = np.concatenate([c + rng.normal(0, 1.0, (300, 3)) for c in rooms])
    assert PlaceRegions.of_points(points, anchors_per_region=600) is None  # under two: none
    regions = PlaceRegions.of_points(points, anchors_per_region=300)
    assert regions.count == 3
    for room in range(3):  # each room is one region
        assert len(np.unique(regions.labels[room * 300:(room + 1) * 300])) == 1
    room_of = {room: int(regions.labels[room * 300]) for room in range(3)}
    # 10 patches: 7 best in room 1, 3 best in room 2; every patch's second best in room 0
    index = np.stack([np.r_[np.full(7, 300), np.full(3, 600)], np.zeros(10, np.int64)], 1)
    sims = np.tile([0.9, 0.8], (10, 1))
    assert regions.voted(sims, index) == [room_of[1], room_of[2]]
    anchor, similarity = regions.best_in(room_of[0], sims, index)
    assert np.all(anchor == 0) and np.allclose(similarity, 0.8)
    anchor, similarity = regions.best_in(room_of[2], sims, index)
    assert np.all(anchor[:7] == -1) and np.all(anchor[7:] == 600) and np.all(np.isinf(similarity[:7]))


def test_look_alike_rooms_split_the_plain_read_out_but_not_a_region(tmp_path, monkeypatch):
    """A map holding every anchor twice, the copy 20 m away, each key a hair off in a
    random direction: each patch's best anchor is in one room or the other at random,
    which splits RANSAC's inliers; read within one voted room, they all agree."""
    scene = corner_scene(tmp_path / "s", n=8)
    mapping, query = scene.subset(range(0, 8, 2)), scene.subset([3])
    path = tmp_path / "twin.map"
    map_scene(mapping, path, model="anchors", short_side=120, progress=False)
    data = load_map(path)
    width = data.code.shape[1] - 3
    keys, points = data.code[:, :width], data.code[:, width:]
    gen = torch.Generator().manual_seed(0)
    def nudged():
        return dequantize_keys(quantize_keys(keys + 0.02 * torch.randn(keys.shape, generator=gen)))

    data.code = torch.cat([torch.cat([nudged(), points], 1),
                           torch.cat([nudged(), points + torch.tensor([20.0, 0, 0])], 1)])
    save_map(path, data)
    assert Localizer(path).regions is None  # a small map has no regions
    monkeypatch.setattr(regions_module, "ANCHORS_PER_REGION", len(points))  # two regions
    frame = query.frames[0]
    plain = Localizer(path, regions=False, confident_inliers=50).localize_frame(frame)
    loc = Localizer(path, confident_inliers=50)
    assert loc.regions is not None and loc.regions.count == 2
    assert len(np.unique(loc.regions.labels[: len(points)])) == 1  # one region a room
    voted = loc.localize_frame(frame)
    assert voted.stage == "region" and voted.inliers > 1.5 * plain.inliers
    offset = voted.cam_to_world[:3, 3] - frame.cam_to_world[:3, 3]
    assert min(np.linalg.norm(offset), np.linalg.norm(offset - [20.0, 0, 0])) < 0.1  # one room
    # the other room explains the image as well: a pose, but not a confident one (it would
    # be without that rule)
    assert not voted.confident
    monkeypatch.setattr(localizer_module, "AMBIGUOUS_INLIER_RATIO", 0.0)
    assert loc.localize_frame(frame).confident


def test_queries_read_the_cells_xfeat_rates_highest(tmp_path):
    """The encoder's cell ratings come from the same pass as its features, and a query
    reads the ``query_patches`` best-rated cells (all of them when there are fewer)."""
    from aceg.data.images import load_image, prepare_image
    from aceg.model.encoder import get_encoder

    scene = corner_scene(tmp_path / "s", n=6)
    path = tmp_path / "m.map"
    map_scene(scene.subset([0, 2, 4]), path, model="anchors", short_side=120, progress=False)
    frame = scene.frames[3]
    enc = get_encoder("xfeat")
    rgb = prepare_image(frame.image_path, frame.intrinsics, 120, enc.stride, rgb=load_image(frame.image_path)).rgb
    feats, scores = enc.encode_scored(rgb)
    assert torch.equal(feats, enc.encode(rgb)) and scores.shape == (1, 15, 20)
    assert 0.0 <= float(scores.min()) and float(scores.max()) <= 1.0 and float(scores.std()) > 0
    top = set(torch.topk(scores.reshape(-1), 60).indices.tolist())
    centres = enc.centres(15, 20)
    pixels = Localizer(path, query_patches=60).correspondences(rgb, {})[0]
    assert len(pixels) == 60
    assert {int(np.flatnonzero((centres == p).all(1))[0]) for p in pixels.astype(np.float32)} == top
    assert len(Localizer(path, query_patches=2048).correspondences(rgb, {})[0]) == 300  # all cells
