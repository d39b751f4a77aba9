"""PLY files open in a standard reader; plots are written as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from aceg.cli.main import main
from aceg.data.camera import make_pose
from aceg.evaluation.results import PoseResult, write_results
from aceg.visualization.plots import CameraSeries, ErrorSeries, results_figure, save_figure
from aceg.visualization.pointcloud import frustum_points, write_ply


def test_ply_opens_in_trimesh_with_colours(tmp_path: Path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)).astype(np.float32)
    colors = rng.integers(0, 255, (500, 3), dtype=np.uint8)
    path = tmp_path / "cloud.ply"
    write_ply(path, points, colors)
    cloud = trimesh.load(path)
    assert isinstance(cloud, trimesh.PointCloud)
    assert np.allclose(cloud.vertices, points, atol=1e-6)
    assert np.array_equal(np.asarray(cloud.colors)[:, :3], colors)


def test_frustum_apex_at_camera_centre_and_base_ahead():
    pose = make_pose(np.eye(3), [1.0, 2.0, 3.0])
    pts = frustum_points(pose, size=0.2)
    assert np.min(np.linalg.norm(pts - [1, 2, 3], axis=1)) == pytest.approx(0.0)
    assert pts[:, 2].max() == pytest.approx(3.2)  # base 0.2 m along camera +z


def test_results_figure_png(tmp_path: Path):
    rng = np.random.default_rng(1)
    gt = rng.uniform(-2, 2, (20, 3))
    est = gt + rng.normal(scale=0.05, size=gt.shape)
    errors = [ErrorSeries("a", rng.uniform(0, 5, 20), rng.uniform(0, 0.3, 20)),
              ErrorSeries("b", np.r_[rng.uniform(0, 5, 15), [np.inf] * 5],
                          np.r_[rng.uniform(0, 0.3, 15), [np.inf] * 5])]
    fig = results_figure(errors, gt, [CameraSeries("a", est, gt)], title="test",
                         cloud=rng.uniform(-3, 3, (1000, 3)))
    out = tmp_path / "fig.png"
    save_figure(fig, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_cli_from_error_columns(tmp_path: Path, capsys):
    results = [PoseResult(f"{i}.png", make_pose(np.eye(3), [i, 0, 0]), 100, i * 1.0, i * 0.02)
               for i in range(10)]
    path = tmp_path / "r.txt"
    write_results(path, results)
    out = tmp_path / "plot.png"
    assert main(["plot", str(path), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    # A file without error columns needs --gt: one-line error, exit 2.
    bare = tmp_path / "bare.txt"
    bare.write_text("a.png 1 0 0 0 0 0 0\n")
    assert main(["plot", str(bare), "--out", str(tmp_path / "x.png")]) == 2
    assert "pass --gt" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
