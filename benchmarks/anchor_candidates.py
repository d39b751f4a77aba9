"""Candidate dump for the anchor model's read-out: map each synthetic room as ``aceg map``
does (triangulated anchors, the given anchor regressor), then, for every patch of its
query splits, store the ``--k`` most similar anchors (cosine, point) with the patch's
ground-truth scene coordinate from the rendered depth.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anchor_candidates.py /work/data/pretrain \
        /work/data/candidates/pretrain 0 1 2 --k 16 [--readout A.safetensors ...]

One file per room, ``<OUT>/NNNN-scene_NNNN.safetensors`` (the cache of ``aceg
pretrain-readout``: :func:`aceg.pretraining.anchor_readout.cached_room_candidates`). It also prints how often the
best anchor, and any of the K best, lies within 10 cm of the ground truth: the headroom
of a learned read-out (:mod:`aceg.model.anchors`, ``readout``) over the nearest anchor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from safetensors.torch import load_file

from aceg.model.anchors import AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_regressor
from aceg.pretraining.anchor_readout import Candidates, cached_room_candidates, readout_metrics
from aceg.pretraining.mapped_rooms import QUERY_SPLITS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="`aceg synth` output with depth in the query splits")
    ap.add_argument("out")
    ap.add_argument("scenes", nargs="+", type=int)
    ap.add_argument("--k", type=int, default=16, help="candidates per patch")
    ap.add_argument("--regressor", default="src/aceg/weights/anchors-xfeat.safetensors",
                    help="anchor regressor whose embedding maps the rooms")
    ap.add_argument("--radius", type=float, default=0.10, help="metres (default: %(default)s)")
    ap.add_argument("--readout", nargs="*", default=[], metavar="FILE",
                    help="anchor regressors with a learned read-out: print, per split over all "
                         "the rooms, the %% of patches whose chosen point is within --radius (all / "
                         "the 75 %% most certain) for the nearest anchor and for each read-out")
    args = ap.parse_args()
    model = load_regressor(args.regressor).model.eval()
    if not isinstance(model, AnchorRegressor):
        raise SystemExit(f"{args.regressor}: not an anchor regressor")
    enc = get_encoder("xfeat")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in args.scenes:
        t0 = time.perf_counter()
        path = cached_room_candidates(Path(args.root) / f"scene_{s:04d}", out, model, enc, args.k)
        tensors = load_file(str(path))
        line = [f"scene {s}: {time.perf_counter() - t0:.0f} s"]
        for sp in QUERY_SPLITS:
            v = tensors[f"{sp}.valid"]
            d = (tensors[f"{sp}.points"][v] - tensors[f"{sp}.target"][v][:, None]).norm(dim=-1)
            line.append(f"{sp} best {100 * (d[:, 0] < 0.1).float().mean():.1f} % "
                        f"any-of-{args.k} {100 * (d < 0.1).any(1).float().mean():.1f} %")
        print(" | ".join(line), flush=True)
        paths.append(path)
    if args.readout:
        readouts = {"nearest": None} | {f: load_regressor(f).model.readout for f in args.readout}
        print(f"read-out | split | chosen within {args.radius} m: all / 75 % most certain | any candidate")
        for sp in QUERY_SPLITS:
            data = Candidates.load(paths, [sp])
            for name, readout in readouts.items():
                m = readout_metrics(readout, data, args.radius)
                print(f"{name} | {sp} | {m['chosen']} / {m['kept']} % | {m['any']} %")


if __name__ == "__main__":
    main()
