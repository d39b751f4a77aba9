"""Probe: what should the confident flag of a keypoint map's pose be (issue 29)?

Localizes every query of the given data sets against existing keypoint maps (an
``aceg bench --work`` folder: ``<data set>-<method>.map``) as the localizer does (first
stage, guided stage), and records per query: the pose error, the first and second stage's
inlier counts, how far the guided stage moved the pose, the share of a 4x4 image grid the
final inliers cover, and the camera centre's standard deviation predicted from the final
inliers (first-order covariance of the reprojection fit: sigma^2 (J^T J)^-1 with sigma^2
the inliers' mean squared residual). Prints, per rule and threshold, the precision of the
flag (flagged poses within 10 cm / 10 deg) and its recall (good poses flagged), per kind
of split.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/confidence_probe.py \
        --work /work/benchrun2/work --method aceg-kp --synthetic /work/benchrun/work/synthetic \
        --real ../shared/data --out /work/data/confidence.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from aceg.data.images import load_image, prepare_image
from aceg.evaluation.benchmark import REAL_SETS, real_datasets, synthetic_datasets
from aceg.evaluation.metrics import pose_errors
from aceg.localization.guided import guided_correspondences
from aceg.localization.localizer import Localizer, confident_mask
from aceg.localization.pnp import estimate_pose


def _rodrigues(w: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(w)
    if th < 1e-12:
        return np.eye(3)
    k = w / th
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * Kx @ Kx


def centre_std(cam_to_world, px, world, K) -> tuple[float, float]:
    """(camera centre std in metres, rotation std in degrees) predicted from the fit."""
    R0 = cam_to_world[:3, :3].T
    C0 = cam_to_world[:3, 3]

    def residuals(p):
        R = _rodrigues(p[:3]) @ R0
        cam = (world - (C0 + p[3:])) @ R.T
        uv = (cam @ K.T)[:, :2] / cam[:, 2:3]
        return (uv - px).ravel()

    r0 = residuals(np.zeros(6))
    J = np.stack([(residuals(np.eye(6)[i] * 1e-6) - r0) / 1e-6 for i in range(6)], 1)
    dof = max(len(r0) - 6, 1)
    sigma2 = float(r0 @ r0) / dof
    try:
        cov = sigma2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return float("inf"), float("inf")
    return float(np.sqrt(np.trace(cov[3:, 3:]))), float(np.degrees(np.sqrt(np.trace(cov[:3, :3]))))


def grid_cover(px, w, h, n=4) -> float:
    cells = np.unique(np.clip((px[:, 0] / w * n).astype(int), 0, n - 1) * n
                      + np.clip((px[:, 1] / h * n).astype(int), 0, n - 1))
    return len(cells) / n / n


def one_query(loc: Localizer, rgb, frame) -> dict:
    prep = prepare_image(frame.image_path, frame.intrinsics, loc.data.short_side, loc.encoder.stride, rgb=rgb)
    timings: dict = {}
    pixels, world, log_unc, desc = loc.correspondences(prep.rgb, timings)
    keep = confident_mask(world, log_unc, loc.keep_quantile)
    first = estimate_pose(pixels[keep], world[keep], prep.intrinsics, loc.ransac_px, loc.ransac_iterations)
    row = {"n1": first.inliers, "corr": int(keep.sum())}
    if first.cam_to_world is None:
        return row | {"rot": float("inf"), "trans": float("inf")}
    px2, second = np.zeros((0, 2)), None
    if desc is not None:  # keypoint map: the guided stage
        with torch.inference_mode():
            keys = loc._embed(torch.from_numpy(desc)).float().numpy()
        px2, w2 = guided_correspondences(keys, pixels, loc._anchor_keys, loc._anchor_world, loc._anchor_ids,
                                         prep.intrinsics, first.cam_to_world, loc.guided)
        if len(px2) >= 12:
            second = estimate_pose(px2, w2, prep.intrinsics, loc.guided.ransac_px, loc.ransac_iterations)
    h, w = prep.rgb.shape[:2]
    if second is None or second.cam_to_world is None:
        pose, ipx, iw, n2 = first.cam_to_world, pixels[keep][first.inlier_mask], world[keep][first.inlier_mask], 0
    else:
        pose, ipx, iw, n2 = second.cam_to_world, px2[second.inlier_mask], w2[second.inlier_mask], second.inliers
    rot, trans = pose_errors(pose, frame.cam_to_world)
    shift_r, shift_t = pose_errors(pose, first.cam_to_world)
    cstd, rstd = centre_std(pose, ipx, iw, prep.intrinsics.K)
    depth = np.median((iw - pose[:3, 3]) @ pose[:3, 2])
    return row | {"n2": n2, "rot": rot, "trans": trans, "shift_t": shift_t, "shift_r": shift_r,
                  "cover": grid_cover(ipx, w, h), "cstd": cstd, "rstd": rstd, "depth": float(depth),
                  "n_guided": len(px2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--method", default="aceg-kp")
    ap.add_argument("--synthetic", default=None)
    ap.add_argument("--real", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    datasets = []
    if args.synthetic:
        datasets += synthetic_datasets(Path(args.synthetic))
    if args.real:
        datasets += real_datasets(Path(args.real), REAL_SETS, ("every3", "sparse4"))
    rows = []
    for data in datasets:
        loc = Localizer(Path(args.work) / f"{data.name}-{args.method}.map")
        for split, scene in data.queries.items():
            tf = data.transforms.get(split)
            for frame in scene.frames:
                rgb = load_image(frame.image_path)
                if tf is not None:
                    rgb = tf(rgb)
                row = one_query(loc, rgb, frame) | {"data": data.name, "kind": data.kind, "split": split}
                rows.append(row)
            print(data.name, split, len(rows), flush=True)
    Path(args.out).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
