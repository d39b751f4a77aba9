"""Probe (issue 29): where does keypoint maps' precision on the real sparse splits go?

Runs aceg-kp and feature matching on the real sets (bench's splits) with variants of the
keypoint extraction, all in one run, and prints per-set accuracy and median errors.

Variants: ``shipped``; ``subpixel``: XFeat keypoints moved to the peak of a quadratic fit
of the detection heatmap's 3x3 neighbourhood (mapping and queries).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from aceg.evaluation.benchmark import real_datasets, run_method, synthetic_datasets
from aceg.mapping import keypoints as kp_module

ORIGINAL_EXTRACT = kp_module.SparseFeatures.extract


def subpixel_extract(self, rgb, keep_cells=False, log=False):
    heat = []
    xf = self.xfeat
    original = xf.get_kpts_heatmap

    def capture(k, softmax_temp=1.0):
        h = original(k, softmax_temp)
        heat.append(h)
        return h

    xf.get_kpts_heatmap = capture
    try:
        feats = ORIGINAL_EXTRACT(self, rgb, keep_cells)
    finally:
        del xf.get_kpts_heatmap
    if not heat or len(feats.keypoints) == 0:
        return feats
    hm = heat[0][0, 0].float().cpu().numpy()  # (H1, W1) of the resized network input
    H1, W1 = hm.shape
    h, w = rgb.shape[:2]
    sx, sy = w / W1, h / H1
    k = feats.keypoints / np.array([sx, sy], np.float32)
    xi = np.clip(np.rint(k[:, 0]).astype(int), 1, W1 - 2)
    yi = np.clip(np.rint(k[:, 1]).astype(int), 1, H1 - 2)
    if log:
        hm = np.log(np.maximum(hm, 1e-12))
    c = hm[yi, xi]
    left, r = hm[yi, xi - 1], hm[yi, xi + 1]
    u, d = hm[yi - 1, xi], hm[yi + 1, xi]
    den_x = left - 2 * c + r
    den_y = u - 2 * c + d
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = np.where(den_x < -1e-9, -0.5 * (r - left) / den_x, 0.0)
        dy = np.where(den_y < -1e-9, -0.5 * (d - u) / den_y, 0.0)
    dx = np.clip(dx, -0.5, 0.5)
    dy = np.clip(dy, -0.5, 0.5)
    k = np.c_[xi + dx, yi + dy]
    feats.keypoints = (k * np.array([sx, sy])).astype(np.float32)
    return feats


def subpixel_log_extract(self, rgb, keep_cells=False):
    return subpixel_extract(self, rgb, keep_cells, log=True)


EXTRACTS = {"shipped": ORIGINAL_EXTRACT, "subpixel": subpixel_extract,
            "subpixel-log": subpixel_log_extract}

from dataclasses import replace  # noqa: E402

from aceg.localization import localizer as loc_module  # noqa: E402

ORIGINAL_GUIDED = loc_module.Localizer.guided_pose


def guided_twice(radius, ransac):
    def guided_pose(self, descriptors, pixels, intrinsics, width, height, first, name):
        second = ORIGINAL_GUIDED(self, descriptors, pixels, intrinsics, width, height, first, name)
        if second is first:
            return first
        saved = self.guided
        self.guided = replace(saved, radius_px=radius, ransac_px=ransac)
        try:
            third = ORIGINAL_GUIDED(self, descriptors, pixels, intrinsics, width, height, second, name)
        finally:
            self.guided = saved
        if third is second:
            return second
        third.confident = second.confident
        return third
    return guided_pose


def guided_tight(ransac):
    def guided_pose(self, *args):
        saved = self.guided
        self.guided = replace(saved, ransac_px=ransac)
        try:
            return ORIGINAL_GUIDED(self, *args)
        finally:
            self.guided = saved
    return guided_pose


GUIDES = {"": ORIGINAL_GUIDED, "g4": guided_twice(4.0, 3.0), "g3": guided_twice(3.0, 2.0),
          "g2": guided_twice(2.0, 1.5), "g8": guided_twice(8.0, 2.0), "r2": guided_tight(2.0)}
from aceg.baselines import feature_matching as fm_module  # noqa: E402

ORIGINAL_FM_INIT = fm_module.FeatureMatchingLocalizer.__init__


def fm_threshold(px):
    def init(self, *args, **kwargs):
        ORIGINAL_FM_INIT(self, *args, **kwargs)
        self.config = replace(self.config, ransac_max_error_px=px)
    return init


FM_INITS = {"fm2": fm_threshold(2.0), "fm4": fm_threshold(4.0)}
VARIANTS = [f"{e}+{g}" if g else e for e in EXTRACTS for g in GUIDES]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--work", required=True)
    p.add_argument("--splits", nargs="+", default=["sparse4"])
    p.add_argument("--methods", nargs="+", default=["aceg-kp", "feature-matching"])
    p.add_argument("--variants", nargs="+", default=["shipped", "subpixel"])
    p.add_argument("--sets", nargs="+", default=None)
    p.add_argument("--synthetic", default=None, help="held-out rooms instead of the real sets")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    datasets = (synthetic_datasets(Path(args.synthetic)) if args.synthetic
                else real_datasets(Path(args.data), splits=args.splits))
    if args.sets:
        datasets = [d for d in datasets if any(s in d.name for s in args.sets)]
    rows = []
    for data in datasets:
        for variant in args.variants:
            e, _, g = variant.partition("+")
            kp_module.SparseFeatures.extract = EXTRACTS[e]
            loc_module.Localizer.guided_pose = GUIDES.get(g, ORIGINAL_GUIDED)
            fm_module.FeatureMatchingLocalizer.__init__ = FM_INITS.get(g, ORIGINAL_FM_INIT)
            (work / variant).mkdir(exist_ok=True)
            for method in args.methods:
                t0 = time.perf_counter()
                run = run_method(method, data, work / variant, {}, log=lambda *_: None)
                for split, errs in run.errors.items():
                    e = np.array(errs)
                    ok = (e[:, 0] < 10) & (e[:, 1] < 0.10)
                    rows.append(dict(set=data.name, split=split, variant=variant, method=method,
                                     acc=100 * ok.mean(), med_r=float(np.median(e[:, 0])),
                                     med_t=float(np.median(e[:, 1])), errors=e.tolist()))
                    print(f"{data.name:<22} {variant:<9} {method:<17} {100 * ok.mean():5.1f}% "
                          f"med {np.median(e[:, 1]) * 100:5.1f} cm {np.median(e[:, 0]):.2f} deg "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    kp_module.SparseFeatures.extract = ORIGINAL_EXTRACT
    loc_module.Localizer.guided_pose = ORIGINAL_GUIDED
    if args.out:
        Path(args.out).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
