"""Anchor-model probe: map held-out scenes once per scene (triangulation and one plain
encoding pass shared by every variant), then localize their query splits with each
anchor regressor and anchor budget, through the real map file and localizer.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/anchor_probe.py /work/data/heldout 0 1 \
        --regressor A.safetensors B.safetensors --max-anchors 8192 16384 [--max-queries 1024 2048] [--keep 0.5 0.75] \
        [--pixels centre keypoint] [--candidates 1 2 3]

Prints, per variant and split, the % of query images within 10 cm / 10 deg (and 5 cm /
5 deg) over all scenes, with the median anchors kept and the map size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from triangulation_probe import cached_triangulation

from aceg.data.images import prepare_image
from aceg.data.readers import read_scene
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import KEEP_QUANTILE, Localizer
from aceg.mapping.buffer import build_buffer
from aceg.mapping.mapper import anchor_code
from aceg.mapping.triangulation import refine_cell_depth
from aceg.model.anchors import AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import MapData, load_regressor, save_map

SPLITS = ("query_same", "query_light", "query_view")


class KeypointPixels:
    """The XFeat encoder, but the pixel of each feature cell (``centres``) is the most likely
    keypoint position of XFeat's keypoint head within the cell (argmax over its 64 sub-pixel
    positions) of the image encoded last, instead of the cell centre: the anchors' points
    are then back-projected there and the query patches enter PnP there. One image per
    ``encode`` call (as the buffer and the localizer call it)."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self._pixels: np.ndarray | None = None

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, images) -> torch.Tensor:
        from aceg.model.encoder import _as_batch

        feats = self.encoder.encode(images)
        batch = _as_batch(images)
        h, w = batch.shape[-2:]
        padded = torch.nn.functional.pad(batch, (0, (-w) % 32, 0, (-h) % 32), mode="replicate")
        with torch.inference_mode():
            _, logits, _ = self.encoder.net(padded)
        sub = logits[0, :64, : h // 8, : w // 8].argmax(0).numpy()  # (rows, cols): r * 8 + c
        rows, cols = np.mgrid[: h // 8, : w // 8]
        self._pixels = np.stack([(cols * 8 + sub % 8).ravel(), (rows * 8 + sub // 8).ravel()],
                                axis=1).astype(np.float32)
        return feats

    def centres(self, rows: int, cols: int) -> np.ndarray:
        assert self._pixels is not None and len(self._pixels) == rows * cols
        return self._pixels


def localize_candidates(loc: Localizer, model: AnchorRegressor, frame, k: int):
    """``loc.localize_frame`` with each kept query patch giving its ``k`` most similar
    anchors as ``k`` correspondences at the same pixel (RANSAC sorts them out); the patches
    kept are the same as the localizer's (read subset, best/second-best margin quantile)."""
    prep = prepare_image(frame.image_path, frame.intrinsics, loc.data.short_side, loc.encoder.stride)
    feats = loc.encoder.encode(prep.rgb)[0]
    rows, cols = feats.shape[1:]
    flat = feats.reshape(feats.shape[0], -1).T
    pixels = loc.encoder.centres(rows, cols).astype(np.float64)
    if len(flat) > model.config.max_queries:
        pick = torch.linspace(0, len(flat) - 1, model.config.max_queries).round().long()
        flat, pixels = flat[pick], pixels[pick.numpy()]
    code = loc.data.code
    c = model.config.feature_dim
    with torch.inference_mode():
        sims, index = model.attend(model.embed(flat), code[:, :c], max(k, 2), model.anchor_lists(code))
    margin = (sims[:, 0] - sims[:, 1]).numpy()
    keep = margin >= np.quantile(margin, 1 - loc.keep_quantile)
    world = (code[:, c:][index[:, :k]].double() + torch.as_tensor(loc.data.scene_centre)).numpy()
    world = world[keep].reshape(-1, 3)
    px = np.repeat(pixels[keep], k, axis=0)
    return loc.solve_pnp(px, world, prep.intrinsics, prep.rgb.shape[1], prep.rgb.shape[0], frame.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("scenes", nargs="+", type=int)
    ap.add_argument("--regressor", nargs="+", required=True, help="anchor regressor files")
    ap.add_argument("--max-anchors", nargs="+", type=int, default=[16384])
    ap.add_argument("--max-queries", nargs="+", type=int, default=[0],
                    help="patches read per image to compare (default: the regressor's own)")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS))
    ap.add_argument("--keypoints", type=int, default=0,
                    help="keypoints per image of the triangulation (default: TRIANGULATION_CONFIG's "
                         "1,024; aceg map uses 2,048 for scenes of up to 70 images)")
    ap.add_argument("--depth", action="store_true",
                    help="anchor points from the mapping frames' depth maps (aceg map --depth) "
                         "instead of triangulation (same as --points depth)")
    ap.add_argument("--points", default="triangulated",
                    choices=["triangulated", "raw", "depth", "depth-on-triangulated", "refined"],
                    help="anchor points: triangulated and refined as aceg map does, triangulated "
                         "without refinement (raw), the depth maps' (aceg map --depth), the depth "
                         "maps' at the raw triangulated cells only (coverage of triangulation, "
                         "accuracy of depth), or triangulated and refined with --refine's settings")
    ap.add_argument("--refine", type=json.loads, default={},
                    help="keyword arguments of refine_cell_depth, as JSON")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder caching each scene's triangulated depth maps (.npz)")
    ap.add_argument("--triangulation", type=json.loads, default={},
                    help="fields of the triangulation's configuration to change, as JSON")
    ap.add_argument("--keep", nargs="+", type=float, default=[KEEP_QUANTILE],
                    help="localizer keep quantiles to compare (default: the localizer's)")
    ap.add_argument("--pixels", nargs="+", default=["centre"], choices=["centre", "keypoint"],
                    help="a cell's pixel for mapping and PnP: its centre (as aceg does) or XFeat's "
                         "most likely keypoint in it (KeypointPixels)")
    ap.add_argument("--candidates", nargs="+", type=int, default=[0],
                    help="most similar anchors each kept patch gives RANSAC (localize_candidates; "
                         "default 0: the localizer's own single point)")
    args = ap.parse_args()
    plain = get_encoder("xfeat")
    variants = {}
    for path in args.regressor:
        base = load_regressor(path).model
        if not isinstance(base, AnchorRegressor):
            raise SystemExit(f"{path}: not an anchor regressor")
        for n in args.max_anchors:
            for q in args.max_queries:
                model = AnchorRegressor(replace(base.config, max_anchors=n,
                                                max_queries=q or base.config.max_queries))
                model.load_state_dict(base.state_dict())
                variants[(Path(path).stem, n, model.config.max_queries)] = model.eval()
    hits: dict = {}
    sizes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s, pixels in [(s, p) for s in args.scenes for p in args.pixels]:
            enc = KeypointPixels(plain) if pixels == "keypoint" else plain
            root = Path(args.root) / f"scene_{s:04d}"
            mapping = read_scene(root / "mapping")
            short = mapping.working_short_side(480)
            points = "depth" if args.depth else args.points
            if points == "depth":  # the mapping frames' own depth maps, as `aceg map --depth`
                buffer = build_buffer(mapping, enc, short, 1, None, None, True, 0)
            else:
                overrides = dict(args.triangulation, **({"max_keypoints": args.keypoints} if args.keypoints else {}))
                depth_maps = cached_triangulation(mapping, short, enc.stride, overrides,
                                                  args.cache / root.name if args.cache else None)
                if points == "depth-on-triangulated":
                    truth = [prepare_image(f.image_path, f.intrinsics, short, multiple_of=enc.stride,
                                           depth_path=f.depth_path).depth for f in mapping.frames]
                    depth_maps = [np.where(m > 0, t[: m.shape[0], : m.shape[1]], 0.0).astype(np.float32)
                                  for m, t in zip(depth_maps, truth, strict=True)]
                elif points in ("refined", "triangulated"):
                    kwargs = args.refine if points == "refined" else {}
                    depth_maps = [refine_cell_depth(m, enc.stride, **kwargs) for m in depth_maps]
                buffer = build_buffer(mapping, enc, short, 1, None, None, False, 0, depth_maps=depth_maps)
            queries = {sp: read_scene(root / sp) for sp in args.splits}
            for key, model in variants.items():
                code, stats = anchor_code(model, buffer, torch.Generator().manual_seed(0))
                data = MapData(method="aceg", encoder=enc.name, stride=enc.stride, short_side=short,
                               scene_centre=buffer.centre, scene=mapping.name, frames=len(mapping),
                               image_size=buffer.image_size, code=code, regressor=model.identity(),
                               regressor_config=model.config, stats=stats)
                map_path = Path(tmp) / "probe.map"
                sizes.setdefault(key, []).append(save_map(map_path, data))
                for keep in args.keep:
                    loc = Localizer(map_path, regressor=model, keep_quantile=keep)
                    loc.encoder = enc
                    for sp, scene in queries.items():
                        for frame, cand in [(f, k) for f in scene.frames for k in args.candidates]:
                            res = (localize_candidates(loc, model, frame, cand) if cand
                                   else loc.localize_frame(frame))
                            good5 = good10 = False
                            if res.cam_to_world is not None:
                                r, t = pose_errors(res.cam_to_world, frame.cam_to_world)
                                good5, good10 = t <= 0.05 and r <= 5, t <= 0.10 and r <= 10
                            hits.setdefault((key, keep, f"{pixels} k={cand}", sp), []).append((good5, good10))
                print(f"scene {s} {pixels} {key}: {stats['anchors']} anchors "
                      f"({stats['cells']} % of cells with a point)", flush=True)
    print("variant (regressor, max anchors, max queries, keep, pixels) | split | 10cm/10deg | 5cm/5deg | images | map MB")
    for (key, keep, pixels, sp), v in hits.items():
        a = np.asarray(v)
        print(f"{key[0]} {key[1]} {key[2]} {keep} {pixels} | {sp} | {100 * a[:, 1].mean():.1f} % | {100 * a[:, 0].mean():.1f} % | "
              f"{len(a)} | {np.median(sizes[key]) / 1e6:.2f}")


if __name__ == "__main__":
    main()
