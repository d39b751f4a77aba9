"""The anchor budget that follows the place, and the spatially balanced selection."""

from __future__ import annotations

import numpy as np
import pytest

from aceg.errors import AcegError
from aceg.mapping.anchor_budget import ANCHORS_PER_IMAGE, anchor_budget, balanced_subset


def _wall_with_a_dwelt_on_corner(rng) -> tuple[np.ndarray, np.ndarray]:
    """Points on a 10 m x 3 m wall: 20,000 in its first metre (where a mapping run dwelt)
    and 2,000 over the rest; and whether each lies in the first metre."""
    corner = np.c_[rng.uniform(0, 1, 20000), rng.uniform(0, 3, 20000), np.zeros(20000)]
    rest = np.c_[rng.uniform(1, 10, 2000), rng.uniform(0, 3, 2000), np.zeros(2000)]
    points = np.concatenate([corner, rest])
    return points, points[:, 0] < 1


def _covered(points: np.ndarray, size: float = 0.2) -> int:
    """Distinct size x size x size cells holding a point."""
    return len(np.unique(np.floor(points / size).astype(int), axis=0))


def test_balanced_subset_covers_the_whole_place():
    rng = np.random.default_rng(0)
    points, in_corner = _wall_with_a_dwelt_on_corner(rng)
    budget = 2000
    keep = balanced_subset(points, budget, seed=1)
    assert len(keep) == budget and len(np.unique(keep)) == budget
    assert np.all(np.diff(keep) > 0)  # sorted
    random = np.sort(rng.permutation(len(points))[:budget])
    # The wall's other 9 metres: a random subset keeps ~1/11 of the budget there (as the
    # images dwelt), the balanced one most of it (as the area is).
    assert (~in_corner[random]).mean() < 0.15
    assert (~in_corner[keep]).mean() > 0.6
    assert _covered(points[keep]) > 1.2 * _covered(points[random])
    np.testing.assert_array_equal(keep, balanced_subset(points, budget, seed=1))
    assert not np.array_equal(keep, balanced_subset(points, budget, seed=2))


def test_balanced_subset_keeps_a_track_once_before_any_twice():
    """The keypoints of one track share a point: 300 tracks of 10 to 100 keypoints; a
    budget of 300 keeps one keypoint of every track."""
    rng = np.random.default_rng(3)
    tracks = rng.uniform(-2, 2, (300, 3))
    points = np.repeat(tracks, rng.integers(10, 101, 300), axis=0)
    keep = balanced_subset(points, 300, seed=0)
    assert len(np.unique(points[keep], axis=0)) == 300
    random = rng.permutation(len(points))[:300]
    assert len(np.unique(points[random], axis=0)) < 270


def test_balanced_subset_small_or_degenerate_input():
    points = np.random.default_rng(0).normal(size=(50, 3))
    np.testing.assert_array_equal(balanced_subset(points, 50), np.arange(50))
    np.testing.assert_array_equal(balanced_subset(points, 80), np.arange(50))
    same = np.ones((40, 3))
    keep = balanced_subset(same, 10)
    assert len(keep) == 10 and len(np.unique(keep)) == 10


def test_anchor_budget_follows_the_place_or_the_size_given():
    assert anchor_budget(60, 64, 24576) == 24576  # a room: the regressor's budget
    assert anchor_budget(2000, 64, 24576) == 2000 * ANCHORS_PER_IMAGE  # a floor: per image
    assert anchor_budget(2000, 64, 24576, max_anchors=5000) == 5000
    assert anchor_budget(2000, 64, 24576, map_size_mb=2.0) == 2_000_000 // 76
    with pytest.raises(AcegError, match="not both"):
        anchor_budget(10, 64, 100, max_anchors=5, map_size_mb=1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(AcegError, match="--map-size must be a positive"):
            anchor_budget(10, 64, 100, map_size_mb=bad)
    with pytest.raises(AcegError, match="holds no anchor"):
        anchor_budget(10, 64, 100, map_size_mb=1e-5)
    with pytest.raises(AcegError, match="must be positive"):
        anchor_budget(10, 64, 100, max_anchors=0)


def test_map_size_sets_the_budget_of_a_map(tmp_path, capsys):
    """`aceg map --map-size MB` writes a map within that size; with --max-anchors, or for
    another model, it is a one-line error and nothing is written."""
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene
    from aceg.model.map_file import load_map

    generate_scene(tmp_path / "room", 310, frames_mapping=6, frames_query=0, height=96, width=128,
                   splits=("mapping",), contact_sheet=False)
    mapping = tmp_path / "room" / "mapping"
    capsys.readouterr()
    out = tmp_path / "small.map"
    assert main(["map", str(mapping), str(out), "--map-size", "0.02", "--short-side", "96"]) == 0
    data = load_map(out)
    assert len(data.code) <= 0.02e6 // 76 and data.regressor_config.max_anchors == 0.02e6 // 76
    assert out.stat().st_size < 0.02e6 + 4000  # the anchors, plus the metadata
    capsys.readouterr()
    assert main(["map", str(mapping), str(tmp_path / "x.map"), "--map-size", "1",
                 "--max-anchors", "100"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["map", str(mapping), str(tmp_path / "x.map"), "--map-size", "-2"]) == 2
    assert "--map-size must be a positive" in capsys.readouterr().err
    assert main(["map", str(mapping), str(tmp_path / "x.map"), "--model", "ace",
                 "--map-size", "1"]) == 2
    assert "--map-size does not apply to --model ace" in capsys.readouterr().err
    assert not (tmp_path / "x.map").exists()
