"""Candidate dump for the anchor model's read-out: map each synthetic room as ``aceg map``
does (triangulated anchors, the given anchor regressor), then, for every patch of its
query splits, store the ``--k`` most similar anchors (cosine, point) with the patch's
ground-truth scene coordinate from the rendered depth.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anchor_candidates.py /work/data/pretrain \
        /work/data/candidates/pretrain 0 1 2 --k 16

One file per room, ``<OUT>/scene_NNNN.safetensors``, with per split (prefix ``<split>.``):
``sims`` (P, K) float32 cosine of the K best anchors, best first; ``points`` (P, K, 3)
float32 their scene coordinates (centred world frame, metres); ``target`` (P, 3) float32
and ``valid`` (P,) bool, the ground truth; ``pixels`` (P, 2) float32 patch centres and
``frame`` (P,) int64 index into ``K`` (F, 3, 3) / ``world_to_cam`` (F, 4, 4) (centred
world -> camera, OpenCV axes) of the prepared query images. It also prints how often the
best anchor, and any of the K best, lies within 10 cm of the ground truth: the headroom
of a learned read-out (:mod:`aceg.model.anchors`, ``readout``) over the nearest anchor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from aceg.data.readers import read_scene
from aceg.mapping.buffer import build_buffer
from aceg.mapping.mapper import anchor_code
from aceg.mapping.triangulation import triangulated_depth_maps
from aceg.model.anchors import AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_regressor

SPLITS = ("query_same", "query_light", "query_view")


def room_candidates(root: Path, model: AnchorRegressor, enc, k: int, splits=SPLITS) -> dict:
    """The tensors described in the module docstring for one room folder."""
    mapping = read_scene(root / "mapping")
    short = mapping.working_short_side(480)
    depth_maps, _ = triangulated_depth_maps(mapping, short, enc.stride, progress=False)
    buffer = build_buffer(mapping, enc, short, 1, None, None, False, 0, depth_maps=depth_maps)
    code, _ = anchor_code(model, buffer, torch.Generator().manual_seed(0))
    keys, points = code[:, : model.config.feature_dim], code[:, model.config.feature_dim:]
    out = {}
    for sp in splits:
        q = build_buffer(read_scene(root / sp), enc, short, 1, None, None, True, 0, centre=buffer.centre)
        with torch.no_grad():
            sims, index = model.attend(model.embed(q.features), keys, k)
        out |= {f"{sp}.sims": sims, f"{sp}.points": points[index].contiguous(),
                f"{sp}.target": q.target, f"{sp}.valid": q.target_valid, f"{sp}.pixels": q.pixels,
                f"{sp}.frame": q.frame, f"{sp}.K": q.K, f"{sp}.world_to_cam": q.world_to_cam}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="`aceg synth` output with depth in the query splits")
    ap.add_argument("out")
    ap.add_argument("scenes", nargs="+", type=int)
    ap.add_argument("--k", type=int, default=16, help="candidates per patch")
    ap.add_argument("--regressor", default="src/aceg/weights/regressor-xfeat.safetensors")
    args = ap.parse_args()
    model = load_regressor(args.regressor).model.eval()
    if not isinstance(model, AnchorRegressor):
        raise SystemExit(f"{args.regressor}: not an anchor regressor")
    enc = get_encoder("xfeat")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for s in args.scenes:
        path = out / f"scene_{s:04d}.safetensors"
        if path.exists():
            continue
        t0 = time.perf_counter()
        tensors = room_candidates(Path(args.root) / f"scene_{s:04d}", model, enc, args.k)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)
        line = [f"scene {s}: {time.perf_counter() - t0:.0f} s"]
        for sp in SPLITS:
            v = tensors[f"{sp}.valid"]
            d = (tensors[f"{sp}.points"][v] - tensors[f"{sp}.target"][v][:, None]).norm(dim=-1)
            line.append(f"{sp} best {100 * (d[:, 0] < 0.1).float().mean():.1f} % "
                        f"any-of-{args.k} {100 * (d < 0.1).any(1).float().mean():.1f} %")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
