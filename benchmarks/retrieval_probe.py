"""Probe: localize held-out queries by soft nearest-neighbour lookup of each query patch's
encoder descriptor among the mapping patches, whose 3-D points come from the rendered
depth (an upper bound: the geometry is exact). Throw-away experiment driver.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/retrieval_probe.py /work/data/heldout 0 1 2 3
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from aceg.evaluation.metrics import pose_errors
from aceg.localization.pnp import estimate_pose
from aceg.model.encoder import get_encoder, patch_centres
from aceg.pretraining.feature_store import cached_scene_features, cached_triangulated_targets


def lookup(q: torch.Tensor, keys: torch.Tensor, pts: torch.Tensor, k: int, temp: float):
    """q (P, C), keys (N, C) unit vectors; returns (P, 3) points and (P,) max cosine."""
    sims = q @ keys.T
    top, idx = sims.topk(max(k, 2), dim=1)
    second = top[:, 1]
    top, idx = top[:, :k], idx[:, :k]
    w = torch.softmax(top / temp, dim=1)
    return (w[..., None] * pts[idx]).sum(1), top[:, 0], top[:, 0] - second


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("scenes", nargs="+", type=int)
    ap.add_argument("--cache", default="/work/data/heldout_features")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--temp", type=float, default=0.05)
    ap.add_argument("--geometry", choices=["depth", "triangulated"], default="depth")
    ap.add_argument("--filter", choices=["none", "cos", "margin"], default="none")
    ap.add_argument("--keep", type=float, default=0.75)
    ap.add_argument("--anchor-stride", type=int, default=1, help="keep every n-th mapping patch")
    args = ap.parse_args()
    enc = get_encoder("xfeat")
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    hits = {}
    for s in args.scenes:
        sf = cached_scene_features(Path(args.root) / f"scene_{s:04d}", Path(args.cache), enc)
        m = sf.splits["mapping"]
        keys = m.features.float().reshape(-1, m.features.shape[-1])
        if args.geometry == "triangulated":
            cached_triangulated_targets(Path(args.root) / f"scene_{s:04d}", Path(args.cache), sf, enc.name)
            pts = m.triangulated.reshape(-1, 3)
        else:
            pts = m.targets.reshape(-1, 3)
        ok = torch.isfinite(pts).all(1)
        keys, pts = keys[ok][:: args.anchor_stride], pts[ok][:: args.anchor_stride]
        keys = torch.nn.functional.normalize(keys, dim=1)
        print(f"scene {s}: {len(keys)} anchors", flush=True)
        for split in ("query_same", "query_light", "query_view"):
            q = sf.splits[split]
            rows, cols = q.grid
            uv = patch_centres(rows, cols, sf.stride)
            for k in args.k:
                for f in range(q.frames):
                    feats = torch.nn.functional.normalize(q.features[f].float().reshape(-1, keys.shape[1]), dim=1)
                    world, best, margin = lookup(feats, keys, pts, k, args.temp)
                    keep = np.ones(len(uv), bool)
                    if args.filter != "none":
                        score = (best if args.filter == "cos" else margin).numpy()
                        keep = score >= np.quantile(score, 1 - args.keep)
                    K = q.K[f].numpy()
                    intr = SimpleNamespace(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2])
                    res = estimate_pose(uv[keep], world.numpy()[keep], intr, 10.0)
                    gt = np.linalg.inv(q.world_to_cam[f].numpy().astype(np.float64))
                    if res.cam_to_world is None:
                        good = False
                    else:
                        r, t = pose_errors(res.cam_to_world, gt)
                        good = t <= 0.10 and r <= 10
                    hits.setdefault((split, k), []).append(good)
            print(s, {f"{sp}/k{k}": f"{100 * np.mean(v):.1f}" for (sp, k), v in hits.items()}, flush=True)


if __name__ == "__main__":
    main()
