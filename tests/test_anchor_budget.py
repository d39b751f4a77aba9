"""The anchor budget that follows the place."""

from __future__ import annotations

import pytest

from aceg.errors import AcegError
from aceg.mapping.anchor_budget import ANCHORS_PER_IMAGE, anchor_budget


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
