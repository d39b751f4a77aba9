"""Probe: query pre-training of the anchor embedding on keypoint anchors, with sparse
mapping episodes (issue 29).

The shipped embedding was trained on cell anchors (the encoder's 1/8 feature map at cell
centres) of densely mapped rooms; keypoint maps key their anchors by XFeat's descriptors
sampled at the keypoints, and the hard case is a query far from every mapping view. Here
each training room gives two episodes: its map from all mapping frames, and its map from
every ``--sparse``-th mapping frame (the left-out mapping frames then join the queries).
Anchors are the triangulated mapping keypoints as ``aceg map --anchor-points keypoints``
builds them (descriptor, track point); queries are the XFeat keypoints of the query images
with a rendered depth that is flat around them (no depth edge within one pixel), their
ground truth the depth-derived point. The loss, optimiser and schedule are
:func:`aceg.pretraining.anchor_embedding.train_embedding`'s. Held-out rooms are scored on
their dense maps and true query splits (% of query keypoints whose most similar anchor is
within 10 cm). Writes ``OUT/regressor.safetensors`` for
``benchmarks/keypoint_anchor_probe.py --weights``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/keypoint_embedding_probe.py \
        /work/data/pretrain /work/data/kp-embedding [--init src/aceg/weights/anchors-xfeat.safetensors]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from aceg.data.images import DEFAULT_SHORT_SIDE, prepare_image
from aceg.data.readers import read_scene
from aceg.mapping.buffer import scene_centre
from aceg.mapping.keypoints import SparseFeatures
from aceg.mapping.triangulation import triangulate_mapping_keypoints
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.model.map_file import load_regressor, save_regressor
from aceg.pretraining.anchor_embedding import (
    EmbeddingConfig,
    RoomTensors,
    evaluate,
    train_embedding,
)
from aceg.pretraining.mapped_rooms import QUERY_SPLITS, cached_room_file


def frame_keypoints(frame, short_side, features, centre):
    """(features, flat, points) of one frame: its XFeat keypoints (all of them), the mask
    of those with a flat rendered depth (no depth edge within one pixel), and the
    depth-derived points of the flat ones minus ``centre`` (F, 3) float64."""
    prep = prepare_image(frame.image_path, frame.intrinsics, short_side, depth_path=frame.depth_path)
    f = features.extract(prep.rgb)
    d = prep.depth
    h, w = d.shape
    u = np.clip(np.round(f.keypoints[:, 0]).astype(int), 1, w - 2)
    v = np.clip(np.round(f.keypoints[:, 1]).astype(int), 1, h - 2)
    patch = np.stack([d[v + dv, u + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)], 1)
    z = d[v, u]
    flat = (patch.min(1) > 0) & (patch.max(1) - patch.min(1) < 0.02 * z)
    K = prep.intrinsics.K
    uv1 = np.c_[f.keypoints[flat], np.ones(int(flat.sum()))]
    cam = (np.linalg.inv(K) @ uv1.T).T * z[flat, None]
    world = cam @ frame.cam_to_world[:3, :3].T + frame.cam_to_world[:3, 3]
    return f, flat, world - centre


def keypoint_targets(scene, short_side, features, centre, splits_index):
    """(descriptors (P, 64) f16, points (P, 3) f32, split (P,)) of the XFeat keypoints of
    ``scene``'s frames with a flat rendered depth, points minus ``centre``."""
    descs, points = [], []
    for frame in scene.frames:
        f, flat, world = frame_keypoints(frame, short_side, features, centre)
        if not flat.any():
            continue
        descs.append(f.descriptors[flat])
        points.append(world)
    if not descs:
        return None
    desc = torch.from_numpy(np.concatenate(descs)).half()
    pts = torch.from_numpy(np.concatenate(points)).float()
    return desc, pts, torch.full((len(desc),), splits_index, dtype=torch.int64)


def keypoint_room(root: Path, step: int, features: SparseFeatures) -> dict[str, torch.Tensor]:
    """One episode's tensors (:class:`RoomTensors` fields): the room's map from every
    ``step``-th mapping frame, queries from its query splits (and, with step > 1, every
    third left-out mapping frame as a query_view-like split)."""
    mapping = read_scene(root / "mapping")
    used = list(range(0, len(mapping), step))
    sub = mapping.subset(used)
    short = sub.working_short_side(DEFAULT_SHORT_SIDE)
    tri = triangulate_mapping_keypoints(sub, short, progress=False)
    centre = scene_centre(sub)
    desc = np.concatenate([f.descriptors for f in tri.keypoints.features]).astype(np.float32)
    world = np.concatenate(tri.world)
    valid = np.isfinite(world).all(1) & (desc != 0).any(1)
    parts = []
    for i, sp in enumerate(QUERY_SPLITS):
        if (root / sp).is_dir():
            parts.append(keypoint_targets(read_scene(root / sp), short, features, centre, i))
    if step > 1:
        rest = [i for i in range(len(mapping)) if i % step][::3]
        parts.append(keypoint_targets(mapping.subset(rest), short, features, centre, len(QUERY_SPLITS)))
    parts = [p for p in parts if p is not None]
    return {"keys": torch.from_numpy(desc[valid]).half(),
            "points": torch.from_numpy((world[valid] - centre).astype(np.float32)),
            "q_features": torch.cat([p[0] for p in parts]), "q_target": torch.cat([p[1] for p in parts]),
            "q_split": torch.cat([p[2] for p in parts])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--held-out", type=int, default=4)
    ap.add_argument("--sparse", type=int, default=4, help="sparse episodes map every N-th frame (0: none)")
    ap.add_argument("--dense", type=int, default=1, help="1: also dense episodes; 0: sparse only")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--init", default=None)
    args = ap.parse_args()
    roots = sorted(p for p in Path(args.data).iterdir() if (p / "mapping").is_dir())
    out = Path(args.out)
    cache = out / "rooms"
    cache.mkdir(parents=True, exist_ok=True)
    features = SparseFeatures(2048)
    split = len(roots) - args.held_out

    def room(i: int, step: int) -> RoomTensors:
        settings = {"kind": "keypoint-episode", "step": str(step), "format": "1"}
        where = cache / f"step{step}"  # one file per room and episode kind
        where.mkdir(exist_ok=True)
        path = cached_room_file(where, roots[i], settings, lambda: keypoint_room(roots[i], step, features))
        return RoomTensors(f"{roots[i].name}-s{step}", **load_file(str(path)))

    steps = ([1] if args.dense else []) + ([args.sparse] if args.sparse > 1 else [])
    train = [room(i, s) for i in tqdm(range(split), desc="train rooms") for s in steps]
    held = [room(i, 1) for i in range(split, len(roots))]
    if args.init:
        loaded = load_regressor(args.init).model
        model = AnchorRegressor(loaded.config)
        model.load_state_dict(loaded.state_dict())
    else:
        torch.manual_seed(0)
        model = AnchorRegressor(AnchorConfig(feature_dim=64))
    for name in ("src/aceg/weights/anchors-xfeat.safetensors", "src/aceg/weights/anchors-identity-xfeat.safetensors"):
        print(name, evaluate(load_regressor(name).model.eval(), held))
    config = EmbeddingConfig(steps=args.steps, lr=args.lr)
    rows = train_embedding(model, train, held, config, out, seed=0)
    save_regressor(out / "regressor.safetensors", model, "xfeat",
                   extra={"embedding": "keypoint-episode probe", "final": rows[-1]})
    print("final", rows[-1])


if __name__ == "__main__":
    main()
