"""Pose errors and the standard relocalization accuracy table.

Errors compare camera-to-world poses (:mod:`aceg.data.camera`):
    * rotation error: angle of ``R_est^T R_gt`` in degrees;
    * translation error: distance between the estimated and true camera centres, metres.
A frame that was not localized counts as an infinite error: it fails every threshold and
enters the medians as +inf (so a median is inf when more than half the frames failed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: (centimetres, degrees) thresholds of the standard table.
THRESHOLDS = ((5, 5), (10, 10), (20, 20))


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle in degrees of the rotation taking ``R_est`` to ``R_gt``."""
    cos = (np.trace(np.asarray(R_est).T @ np.asarray(R_gt)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_errors(est_cam_to_world: np.ndarray, gt_cam_to_world: np.ndarray) -> tuple[float, float]:
    """``(rotation error in degrees, camera-centre error in metres)`` of two 4x4 poses."""
    rot = rotation_error_deg(est_cam_to_world[:3, :3], gt_cam_to_world[:3, :3])
    trans = float(np.linalg.norm(est_cam_to_world[:3, 3] - gt_cam_to_world[:3, 3]))
    return rot, trans


@dataclass
class AccuracyTable:
    """Summary of one set of query results.

    ``within`` maps ``"5cm/5deg"`` etc. to the percentage of *all* query frames within both
    thresholds; medians are over all frames (failed frames count as inf).
    """

    frames: int
    localized_pct: float
    within: dict[str, float]
    median_rot_deg: float
    median_trans_m: float

    def to_dict(self) -> dict:
        return asdict(self)


def similarity_alignment(src: np.ndarray, dst: np.ndarray, scale: bool = True
                         ) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimising ``sum |s R src_i + t - dst_i|^2`` over (N, 3) point pairs
    (Umeyama's closed form; ``scale=False``: rigid, s = 1). Aligns camera centres of a
    reconstruction in its own units to ground truth in metres."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, sigma, vt = np.linalg.svd((dst - mu_d).T @ (src - mu_s) / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ d @ vt
    s = float(np.trace(np.diag(sigma) @ d) / (src - mu_s).var(0).sum()) if scale else 1.0
    return s, rotation, mu_d - s * rotation @ mu_s


def accuracy_table(
    rot_errors_deg: Sequence[float], trans_errors_m: Sequence[float]
) -> AccuracyTable:
    """Accuracy table from per-frame errors; use ``math.inf`` for frames not localized."""
    rot = np.asarray(rot_errors_deg, dtype=np.float64)
    trans = np.asarray(trans_errors_m, dtype=np.float64)
    if rot.shape != trans.shape:
        raise ValueError("rotation and translation error lists differ in length")
    n = rot.size
    if n == 0:
        return AccuracyTable(0, 0.0, {_key(c, d): 0.0 for c, d in THRESHOLDS}, math.inf, math.inf)
    within = {
        _key(cm, deg): float(100.0 * np.mean((trans <= cm / 100.0) & (rot <= deg)))
        for cm, deg in THRESHOLDS
    }
    localized = float(100.0 * np.mean(np.isfinite(trans) & np.isfinite(rot)))
    return AccuracyTable(n, localized, within, float(np.median(rot)), float(np.median(trans)))


def _key(cm: int, deg: int) -> str:
    return f"{cm}cm/{deg}deg"


def format_tables(tables: dict[str, AccuracyTable]) -> str:
    """A fixed-width text table, one row per named result set."""
    keys = [_key(c, d) for c, d in THRESHOLDS]
    header = ["", "frames", *keys, "med. rot (deg)", "med. trans (m)", "localized"]
    rows = [header]
    for name, t in tables.items():
        rows.append(
            [
                name,
                str(t.frames),
                *(f"{t.within[k]:.1f}%" for k in keys),
                _num(t.median_rot_deg, 2),
                _num(t.median_trans_m, 3),
                f"{t.localized_pct:.1f}%",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)


def format_table(table: AccuracyTable, name: str = "result") -> str:
    return format_tables({name: table})


def _num(x: float, digits: int) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.{digits}f}"
