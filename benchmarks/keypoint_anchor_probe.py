"""Probe: anchors at keypoint precision. Instead of one anchor per patch cell (a cell
centre's ray at the cell's triangulated depth) the map holds every triangulated mapping
keypoint (its track's 3-D point) keyed by its own XFeat descriptor, and a query's XFeat
keypoints (sub-pixel positions, descriptors at those positions) read the point of their
most similar anchor through the anchor model's embedding; then RANSAC-PnP as the
localizer does. Prints, per data set and split, % within 5 cm / 10 cm (and 10 deg) and
median errors for each embedding given.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/keypoint_anchor_probe.py \
        --real ../shared/data --synthetic DIR [--scenes 0 1 2] \
        --weights src/aceg/weights/anchors-xfeat.safetensors \
                  src/aceg/weights/anchors-identity-xfeat.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from aceg.data.images import DEFAULT_SHORT_SIDE, load_image, prepare_image
from aceg.evaluation.benchmark import REAL_SETS, real_datasets, synthetic_datasets
from aceg.evaluation.metrics import accuracy_table, pose_errors
from aceg.localization.localizer import KEEP_QUANTILE, solve_pnp
from aceg.mapping.keypoints import SparseFeatures
from aceg.mapping.triangulation import triangulate_mapping_keypoints
from aceg.model.map_file import load_regressor


def keypoint_anchors(scene):
    """(descriptors (N, 64) float32, points (N, 3) float64, track id (N,)) of every mapping
    keypoint with a triangulated point, and the working short side."""
    tri = triangulate_mapping_keypoints(scene, DEFAULT_SHORT_SIDE, progress=False)
    desc, points = [], []
    for feats, world in zip(tri.keypoints.features, tri.world, strict=True):
        keep = np.isfinite(world).all(1)
        desc.append(feats.descriptors[keep].astype(np.float32))
        points.append(world[keep])
    desc, points = np.concatenate(desc), np.concatenate(points)
    _, track = np.unique(points, axis=0, return_inverse=True)
    return desc, points, track.ravel(), scene.working_short_side(DEFAULT_SHORT_SIDE)


def read_points(model, anchor_keys, points, track, query_desc, depth=8):
    """Per query descriptor: the nearest anchor's point and the margin to the nearest
    anchor of another track."""
    q = model.embed(torch.from_numpy(query_desc))
    sims, index = (q @ anchor_keys.T).topk(min(depth, anchor_keys.shape[0]), dim=1)
    sims, index = sims.numpy(), index.numpy()
    best_track = track[index[:, 0]]
    other = track[index] != best_track[:, None]
    second = np.where(other, sims, -1.0).max(1)
    return points[index[:, 0]], sims[:, 0] - second


def guided_points(query_keys, anchor_keys, points, track, keypoints, intrinsics, cam_to_world,
                  radius_px, min_margin):
    """Second stage: each query keypoint reads the most similar anchor among those whose
    points project within ``radius_px`` of it under the first pose; kept when it beats the
    best anchor of another track there by ``min_margin``. Returns (kept index, points)."""
    from scipy.spatial import cKDTree

    from aceg.data.camera import invert_pose

    w2c = invert_pose(cam_to_world)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    front = np.flatnonzero(cam[:, 2] > 1e-6)
    uv = (cam[front] @ intrinsics.K.T)[:, :2] / cam[front, 2:3]
    near = cKDTree(uv).query_ball_point(keypoints, radius_px)
    qi = np.repeat(np.arange(len(keypoints)), [len(n) for n in near])
    if len(qi) == 0:
        return np.zeros(0, int), np.zeros((0, 3))
    aj = front[np.concatenate([np.asarray(n, int) for n in near])]
    sims = (query_keys[qi] * anchor_keys[aj]).sum(1)
    order = np.lexsort((-sims, qi))
    qi, aj, sims = qi[order], aj[order], sims[order]
    first = np.r_[True, qi[1:] != qi[:-1]]
    best_q, best_a, best_s = qi[first], aj[first], sims[first]
    head = np.repeat(np.flatnonzero(first), np.diff(np.r_[np.flatnonzero(first), len(qi)]))
    other = track[aj] != track[aj[head]]
    second = np.full(len(keypoints), -1.0)
    np.maximum.at(second, qi[other], sims[other])
    keep = best_s - second[best_q] >= min_margin
    return best_q[keep], points[best_a[keep]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", default="../shared/data")
    ap.add_argument("--real-split", nargs="+", default=["every3", "sparse4"])
    ap.add_argument("--sets", nargs="+", default=list(REAL_SETS), help="real sets (default: all)")
    ap.add_argument("--synthetic", default=None)
    ap.add_argument("--scenes", type=int, nargs="*", default=None)
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--query-keypoints", type=int, default=2048)
    ap.add_argument("--keep", type=float, default=KEEP_QUANTILE)
    ap.add_argument("--guided", type=float, default=0.0, metavar="PX",
                    help="add a guided second stage with this search radius (0: none)")
    ap.add_argument("--guided-margin", type=float, default=0.02)
    ap.add_argument("--guided-ransac", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    features = SparseFeatures(args.query_keypoints)
    models = {Path(w).stem: load_regressor(w).model.eval() for w in args.weights}
    datasets = []
    if args.synthetic:
        datasets += synthetic_datasets(Path(args.synthetic))
        if args.scenes is not None:
            datasets = [datasets[i] for i in args.scenes]
    if args.real:
        datasets += real_datasets(Path(args.real), args.sets, args.real_split)
    pooled: dict[tuple[str, str, str], list] = {}
    for data in datasets:
        t = time.perf_counter()
        desc, points, track, short_side = keypoint_anchors(data.mapping)
        keys = {name: m.embed(torch.from_numpy(desc)) for name, m in models.items()}
        print(f"{data.name}: {len(desc)} anchors ({len(np.unique(track))} tracks), "
              f"mapped in {time.perf_counter() - t:.1f} s", flush=True)
        for split, scene in data.queries.items():
            transform = data.transforms.get(split)
            names = list(models) + [f"{n}+guided" for n in models if args.guided > 0]
            errs: dict[str, list] = {name: [] for name in names}
            for frame in scene.frames:
                rgb = load_image(frame.image_path)
                if transform is not None:
                    rgb = transform(rgb)
                prepared = prepare_image(frame.image_path, frame.intrinsics, short_side, rgb=rgb)
                query = features.extract(prepared.rgb)
                for name, model in models.items():
                    xyz, margin = read_points(model, keys[name], points, track, query.descriptors)
                    keep = margin >= np.quantile(margin, 1.0 - args.keep) if len(margin) else margin > 0
                    res = solve_pnp(query.keypoints[keep].astype(np.float64), xyz[keep],
                                    prepared.intrinsics, prepared.rgb.shape[1], prepared.rgb.shape[0])
                    e = pose_errors(res.cam_to_world, frame.cam_to_world) if res.cam_to_world is not None \
                        else (np.inf, np.inf)
                    errs[name].append(e)
                    pooled.setdefault((data.kind, split, name), []).append(e)
                    if args.guided > 0:
                        if res.cam_to_world is not None:
                            qk = model.embed(torch.from_numpy(query.descriptors)).numpy()
                            idx, xyz2 = guided_points(qk, keys[name].numpy(), points, track,
                                                      query.keypoints.astype(np.float64),
                                                      prepared.intrinsics, res.cam_to_world,
                                                      args.guided, args.guided_margin)
                            res2 = solve_pnp(query.keypoints[idx].astype(np.float64), xyz2,
                                             prepared.intrinsics, prepared.rgb.shape[1],
                                             prepared.rgb.shape[0], ransac_px=args.guided_ransac)
                            pose2 = res2.cam_to_world if res2.cam_to_world is not None else res.cam_to_world
                            e = pose_errors(pose2, frame.cam_to_world)
                        errs[f"{name}+guided"].append(e)
                        pooled.setdefault((data.kind, split, f"{name}+guided"), []).append(e)
            for name, e in errs.items():
                tab = accuracy_table([a for a, _ in e], [b for _, b in e])
                print(f"  {split:<18} {name:<28} 5cm {tab.within['5cm/5deg']:5.1f}%  "
                      f"10cm {tab.within['10cm/10deg']:5.1f}%  med {100 * tab.median_trans_m:.1f} cm "
                      f"{tab.median_rot_deg:.2f} deg", flush=True)
    print("\npooled:")
    for (kind, split, name), e in sorted(pooled.items()):
        tab = accuracy_table([a for a, _ in e], [b for _, b in e])
        print(f"  {kind:<9} {split:<18} {name:<28} n={len(e):3d} 5cm {tab.within['5cm/5deg']:5.1f}%  "
              f"10cm {tab.within['10cm/10deg']:5.1f}%  med {100 * tab.median_trans_m:.1f} cm")


if __name__ == "__main__":
    main()
