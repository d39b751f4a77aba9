"""Error CDFs and a top-down camera view of localization results.

Top-down view: camera centres (and optionally a point cloud) are projected on the plane of
the two principal directions of the ground-truth camera centres (PCA), which for a person
scanning a room or walking around an object is the floor plane. Axis units are metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aceg.io import atomic_path  # noqa: E402


@dataclass
class ErrorSeries:
    """Per-query errors of one method/run; ``inf`` marks frames not localized."""

    label: str
    rot_err_deg: np.ndarray
    trans_err_m: np.ndarray


@dataclass
class CameraSeries:
    """Camera centres of one run for the top-down view, paired with their ground truth."""

    label: str
    est_centres: np.ndarray  # (N, 3) estimated centres of localized frames, metres
    gt_centres: np.ndarray  # (N, 3) ground-truth centres of the same frames


def _cdf(ax, values: np.ndarray, label: str, limit: float) -> None:
    values = np.sort(np.asarray(values, dtype=np.float64))
    n = len(values)
    if n == 0:
        return
    finite = values[np.isfinite(values)]
    xs = np.concatenate([[0.0], np.minimum(finite, limit), [limit]])
    ys = np.concatenate([[0.0], np.arange(1, len(finite) + 1) / n * 100, [len(finite[finite <= limit]) / n * 100]])
    ax.step(xs, ys, where="post", label=label)


def plot_error_cdfs(ax_trans, ax_rot, series: list[ErrorSeries], max_trans_m: float = 0.5,
                    max_rot_deg: float = 20.0) -> None:
    """Cumulative % of queries under a given error (failed frames never reach 100%)."""
    for s in series:
        _cdf(ax_trans, s.trans_err_m * 100, s.label, max_trans_m * 100)
        _cdf(ax_rot, s.rot_err_deg, s.label, max_rot_deg)
    for ax, unit, limit, marks in (
        (ax_trans, "translation error (cm)", max_trans_m * 100, (5, 10, 20)),
        (ax_rot, "rotation error (deg)", max_rot_deg, (5, 10, 20)),
    ):
        ax.set_xlim(0, limit)
        ax.set_ylim(0, 100)
        ax.set_xlabel(unit)
        ax.set_ylabel("% of queries")
        for m in marks:
            if m <= limit:
                ax.axvline(m, color="0.85", lw=0.8, zorder=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)


def floor_basis(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin, 2x3 basis) of the plane of largest spread of ``centres`` (N, 3)."""
    origin = centres.mean(0)
    if len(centres) < 3:
        return origin, np.eye(3)[:2]
    _, _, vt = np.linalg.svd(centres - origin, full_matrices=False)
    return origin, vt[:2]


def plot_top_down(ax, gt_all: np.ndarray, runs: list[CameraSeries], cloud: np.ndarray | None = None,
                  cloud_colors: np.ndarray | None = None, mapping_centres: np.ndarray | None = None) -> None:
    """Top-down view: ground-truth query cameras, estimates joined to their truth by a line."""
    basis_source = gt_all if mapping_centres is None else np.concatenate([gt_all, mapping_centres])
    origin, basis = floor_basis(basis_source)

    def flat(p):
        return (np.asarray(p).reshape(-1, 3) - origin) @ basis.T

    if cloud is not None and len(cloud):
        c = flat(cloud)
        colors = None if cloud_colors is None else np.asarray(cloud_colors) / 255.0
        ax.scatter(c[:, 0], c[:, 1], s=0.5, c=colors if colors is not None else "0.6", alpha=0.5,
                   linewidths=0, rasterized=True, label="map points")
    if mapping_centres is not None and len(mapping_centres):
        m = flat(mapping_centres)
        ax.scatter(m[:, 0], m[:, 1], marker="s", s=12, c="tab:gray", label="mapping cameras")
    g = flat(gt_all)
    ax.scatter(g[:, 0], g[:, 1], marker="o", s=28, facecolors="none", edgecolors="k",
               label="query ground truth")
    for i, run in enumerate(runs):
        color = f"C{i}"
        if len(run.est_centres) == 0:
            continue
        e, t = flat(run.est_centres), flat(run.gt_centres)
        ax.scatter(e[:, 0], e[:, 1], marker="x", s=24, c=color, label=f"{run.label} estimate")
        for a, b in zip(e, t, strict=True):
            ax.plot([a[0], b[0]], [a[1], b[1]], color=color, lw=0.7, alpha=0.7)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("m")
    ax.set_ylabel("m")
    ax.set_title("top-down view (plane of the cameras)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)


#: Figure formats :func:`save_figure` writes, chosen by the file's suffix.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Write ``fig`` atomically in the format of ``path``'s suffix (PNG when it has none
    of :data:`FIGURE_SUFFIXES`)."""
    suffix = Path(path).suffix.lower()
    fmt = {".jpg": "jpeg", ".jpeg": "jpeg"}.get(suffix, suffix[1:]) if suffix in FIGURE_SUFFIXES \
        else "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def results_figure(errors: list[ErrorSeries], gt_all: np.ndarray | None, runs: list[CameraSeries],
                   title: str = "", cloud: np.ndarray | None = None,
                   cloud_colors: np.ndarray | None = None,
                   mapping_centres: np.ndarray | None = None):
    """Figure with translation and rotation error CDFs and, with ground truth, a top-down view."""
    with_map = gt_all is not None and len(gt_all) > 0
    fig = plt.figure(figsize=(15 if with_map else 10, 5.2))
    cols = 3 if with_map else 2
    ax_t = fig.add_subplot(1, cols, 1)
    ax_r = fig.add_subplot(1, cols, 2)
    max_t = 0.5
    finite = [t for s in errors for t in s.trans_err_m if math.isfinite(t)]
    if finite and np.median(finite) > 0.25:
        max_t = float(min(10.0, np.ceil(np.percentile(finite, 90) * 2) / 2))
    plot_error_cdfs(ax_t, ax_r, errors, max_trans_m=max_t)
    if with_map:
        plot_top_down(fig.add_subplot(1, cols, 3), gt_all, runs, cloud, cloud_colors, mapping_centres)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
