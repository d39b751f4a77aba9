"""Probe: a context-aware anchor embedding for keypoint maps (issue 29).

The per-descriptor embedding plateaus (docs/experiments.md: identity 43.0 / 38.7 / 13.3 %,
shipped 43.8 / 39.5 / 15.5 % of held-out query keypoints whose most similar anchor is within
10 cm, query_same / light / view). Here a keypoint's key also sees its image's other
keypoints:

    key_i = normalize(E(d_i) + A(d_i, {d_j, (p_j - p_i) / r_i : j in kNN_i}))

E is the anchor model's embedding (:meth:`aceg.model.anchors.AnchorRegressor.embed`, started
from the shipped weights), kNN_i the ``--k`` nearest keypoints of the same image in pixels,
r_i the distance to the k-th of them, A (output layer zero at the start, so step 0 reads as
E alone) one of

- ``attn``: one multi-head attention-pooling layer, query from d_i, keys and values from
  [d_j, encoding of the offset];
- ``attn-desc``: the same without the offsets (relative positions change with viewpoint);
- ``edge``: an edge MLP on [d_i, d_j - d_i, encoding of the offset], max-pooled
  (DGCNN-style);
- ``none``: A absent: E alone trained on the same data and steps (the control).

Anchors are the triangulated keypoints of each room's dense map, exactly as
``benchmarks/keypoint_embedding_probe.py`` builds them (an anchor = one observation of a
track in one mapping image, so it has that image's keypoints as neighbours); queries the
query-split keypoints with a flat rendered depth, their neighbours all keypoints of their
image. Loss, optimiser and schedule are those of
:func:`aceg.pretraining.anchor_embedding.train_embedding` (every anchor of the room within
``--radius`` of a query's point a positive, all other anchors negatives, -log of the softmax
mass on the positives at the learned temperature; AdamW, cosine decay to a tenth). Score:
:func:`aceg.pretraining.anchor_embedding.nearest_within`'s (up to 3,000 evenly spaced
queries per split and held-out room), plus the share of queries that have any anchor
within 10 cm (the ceiling of the score).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/context_embedding_probe.py \\
        /work/data/pretrain /work/data/ctx-emb --train-rooms 10 --variants none attn attn-desc edge
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keypoint_embedding_probe import frame_keypoints  # noqa: E402

from aceg.data.images import DEFAULT_SHORT_SIDE  # noqa: E402
from aceg.data.readers import read_scene  # noqa: E402
from aceg.mapping.buffer import scene_centre  # noqa: E402
from aceg.mapping.keypoints import SparseFeatures  # noqa: E402
from aceg.mapping.triangulation import triangulate_mapping_keypoints  # noqa: E402
from aceg.model.anchors import AnchorRegressor  # noqa: E402
from aceg.model.map_file import load_regressor  # noqa: E402
from aceg.pretraining.mapped_rooms import QUERY_SPLITS, cached_room_file  # noqa: E402

SHIPPED = "src/aceg/weights/anchors-xfeat.safetensors"
IDENTITY = "src/aceg/weights/anchors-identity-xfeat.safetensors"


# --------------------------------------------------------------------------- data


def context_room(root: Path, features: SparseFeatures) -> dict[str, torch.Tensor]:
    """A room's keypoints with their images: ``m_*`` every mapping keypoint (descriptor,
    pixel, image), ``a_idx`` the anchors among them (triangulated, as keypoint_room keeps
    them) with their centred ``points``; ``q_*`` every query-split keypoint, ``q_idx`` the
    flat-depth ones with ``q_target`` and ``q_split`` (same order as keypoint_room's)."""
    mapping = read_scene(root / "mapping")
    short = mapping.working_short_side(DEFAULT_SHORT_SIDE)
    tri = triangulate_mapping_keypoints(mapping, short, progress=False)
    centre = scene_centre(mapping)
    m_desc, m_xy, m_img, a_idx, points = [], [], [], [], []
    offset = 0
    for i, (f, world) in enumerate(zip(tri.keypoints.features, tri.world, strict=True)):
        valid = np.isfinite(world).all(1) & (f.descriptors != 0).any(1)
        m_desc.append(f.descriptors)
        m_xy.append(f.keypoints)
        m_img.append(np.full(len(f.keypoints), i))
        a_idx.append(np.flatnonzero(valid) + offset)
        points.append(world[valid] - centre)
        offset += len(f.keypoints)
    q_desc, q_xy, q_img, q_idx, q_target, q_split = [], [], [], [], [], []
    offset, image = 0, 0
    for s, sp in enumerate(QUERY_SPLITS):
        if not (root / sp).is_dir():
            continue
        for frame in read_scene(root / sp).frames:
            f, flat, world = frame_keypoints(frame, short, features, centre)
            q_desc.append(f.descriptors)
            q_xy.append(f.keypoints)
            q_img.append(np.full(len(f.keypoints), image))
            q_idx.append(np.flatnonzero(flat) + offset)
            q_target.append(world)
            q_split.append(np.full(int(flat.sum()), s))
            offset += len(f.keypoints)
            image += 1

    def cat(parts, dtype):
        return torch.from_numpy(np.concatenate(parts).astype(dtype))

    return {"m_desc": cat(m_desc, np.float16), "m_xy": cat(m_xy, np.float32), "m_img": cat(m_img, np.int64),
            "a_idx": cat(a_idx, np.int64), "points": cat(points, np.float32),
            "q_desc": cat(q_desc, np.float16), "q_xy": cat(q_xy, np.float32), "q_img": cat(q_img, np.int64),
            "q_idx": cat(q_idx, np.int64), "q_target": cat(q_target, np.float32),
            "q_split": cat(q_split, np.int64)}


def image_knn(xy: torch.Tensor, img: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For keypoints at pixels ``xy`` (M, 2) in images ``img`` (M,) (grouped, ascending):
    (M, k) global indices of the k nearest other keypoints of the same image (the nearest
    repeated when an image has fewer) and (M, k, 2) their offsets divided by the distance
    to the k-th (the kNN radius; at least 1 px)."""
    nbr = torch.empty(len(xy), k, dtype=torch.int64)
    starts = torch.cat([torch.tensor([0]), torch.nonzero(img[1:] != img[:-1]).squeeze(1) + 1,
                        torch.tensor([len(img)])])
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        p = xy[a:b]
        d = torch.cdist(p, p)
        d.fill_diagonal_(float("inf"))
        kk = min(k, b - a - 1)
        if kk < 1:
            nbr[a:b] = torch.arange(a, b)[:, None]
            continue
        idx = d.topk(kk, largest=False).indices
        if kk < k:
            idx = torch.cat([idx, idx[:, :1].expand(-1, k - kk)], 1)
        nbr[a:b] = idx + a
    off = xy[nbr] - xy[:, None]
    radius = off.norm(dim=-1).amax(1).clamp_min(1.0)
    return nbr, off / radius[:, None, None]


class Room:
    """One room's tensors for the probe, with each anchor's and query's neighbourhood."""

    def __init__(self, name: str, t: dict[str, torch.Tensor], k: int) -> None:
        self.name = name
        m_nbr, m_off = image_knn(t["m_xy"], t["m_img"], k)
        q_nbr, q_off = image_knn(t["q_xy"], t["q_img"], k)
        a, q = t["a_idx"], t["q_idx"]
        self.keys = t["m_desc"][a]
        self.key_nbr = t["m_desc"][m_nbr[a]]  # (N, k, 64) f16
        self.key_off = m_off[a]
        self.points = t["points"]
        self.q_desc = t["q_desc"][q]
        self.q_nbr = t["q_desc"][q_nbr[q]]
        self.q_off = q_off[q]
        self.q_target = t["q_target"]
        self.q_split = t["q_split"]


# --------------------------------------------------------------------------- model


class ContextEmbedding(nn.Module):
    """key = normalize(E(d) + A(d, neighbours)) (module docstring); ``mode`` picks A."""

    def __init__(self, base: AnchorRegressor, mode: str, hidden: int = 32, heads: int = 2,
                 pos: int = 16) -> None:
        super().__init__()
        self.base = base
        self.mode = mode
        c = base.config.feature_dim
        self.heads = heads
        offsets = mode in ("attn", "edge")
        if offsets:
            self.pos = nn.Sequential(nn.Linear(3, pos), nn.GELU(), nn.Linear(pos, pos))
        p = pos if offsets else 0
        if mode in ("attn", "attn-desc"):
            self.q = nn.Linear(c, hidden)
            self.kv = nn.Linear(c + p, 2 * hidden)
            self.out = nn.Linear(hidden, c)
        elif mode == "edge":
            self.edge = nn.Sequential(nn.Linear(2 * c + p, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            self.out = nn.Linear(hidden, c)
        elif mode != "none":
            raise ValueError(mode)
        if mode != "none":
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    @property
    def log_temperature(self) -> torch.Tensor:
        return self.base.log_temperature

    def forward(self, d: torch.Tensor, nd: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        x = F.normalize(d.float(), dim=-1)
        e = x + self.base.residual(x)
        if self.mode == "none":
            return F.normalize(e, dim=-1)
        n = F.normalize(nd.float(), dim=-1)  # (B, k, C)
        parts = [n]
        if self.mode in ("attn", "edge"):
            parts.append(self.pos(torch.cat([off, off.norm(dim=-1, keepdim=True)], -1)))
        if self.mode == "edge":
            h = self.edge(torch.cat([x[:, None].expand_as(n), n - x[:, None]] + parts[1:], -1)).amax(1)
        else:
            b, k, _ = n.shape
            kv = self.kv(torch.cat(parts, -1)).view(b, k, 2, self.heads, -1)
            q = self.q(x).view(b, self.heads, -1)
            att = torch.einsum("bhd,bkhd->bhk", q, kv[:, :, 0]) / math.sqrt(q.shape[-1])
            h = torch.einsum("bhk,bkhd->bhd", att.softmax(-1), kv[:, :, 1]).reshape(b, -1)
        return F.normalize(e + self.out(h), dim=-1)

    def anchors(self, room: Room, idx: torch.Tensor | None = None, chunk: int = 8192) -> torch.Tensor:
        idx = torch.arange(len(room.keys)) if idx is None else idx
        return torch.cat([self(room.keys[i], room.key_nbr[i], room.key_off[i]) for i in idx.split(chunk)])

    def queries(self, room: Room, idx: torch.Tensor) -> torch.Tensor:
        return self(room.q_desc[idx], room.q_nbr[idx], room.q_off[idx])


# --------------------------------------------------------------------------- score and train


@torch.no_grad()
def nearest_within(model: ContextEmbedding, room: Room, radius: float = 0.10,
                   limit: int = 3000) -> tuple[list[float], list[float]]:
    """As :func:`aceg.pretraining.anchor_embedding.nearest_within` (same queries), plus per
    split the % of those queries with any anchor within ``radius`` (the ceiling)."""
    keys = model.anchors(room)
    out, ceiling = [], []
    for i in range(len(QUERY_SPLITS)):
        idx = torch.nonzero(room.q_split == i).squeeze(1)
        if idx.numel() == 0:
            out.append(float("nan"))
            ceiling.append(float("nan"))
            continue
        idx = idx[torch.linspace(0, idx.numel() - 1, min(limit, idx.numel())).long()]
        best = (model.queries(room, idx) @ keys.T).argmax(1)
        out.append(100.0 * float(((room.points[best] - room.q_target[idx]).norm(dim=1) < radius).float().mean()))
        near = torch.cdist(room.q_target[idx], room.points).amin(1) < radius
        ceiling.append(100.0 * float(near.float().mean()))
    return out, ceiling


def evaluate(model: ContextEmbedding, rooms: list[Room]) -> tuple[dict[str, float], dict[str, float]]:
    res = [nearest_within(model, r) for r in rooms]
    score = torch.tensor([r[0] for r in res]).reshape(-1, len(QUERY_SPLITS)).nanmean(0)
    ceil = torch.tensor([r[1] for r in res]).reshape(-1, len(QUERY_SPLITS)).nanmean(0)
    return ({sp: round(float(s), 2) for sp, s in zip(QUERY_SPLITS, score.tolist(), strict=True)},
            {sp: round(float(s), 2) for sp, s in zip(QUERY_SPLITS, ceil.tolist(), strict=True)})


def train(model: ContextEmbedding, rooms: list[Room], held: list[Room], steps: int, lr: float,
          queries: int, radius: float, anchors: int, eval_every: int, ctx_lr: float | None = None,
          seed: int = 0) -> list[dict]:
    """train_embedding's loss, optimiser and schedule on the context model (``ctx_lr``: a
    peak rate of its own for A, default ``lr``). ``anchors`` > 0: a step embeds only the
    positives plus that many random other anchors of its room (negatives sampled to bound
    the step's cost); 0: all of them."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    base = [p for n, p in model.named_parameters() if n.startswith("base.")]
    ctx = [p for n, p in model.named_parameters() if not n.startswith("base.")]
    groups = [{"params": base, "lr": lr}] + ([{"params": ctx, "lr": ctx_lr or lr}] if ctx else [])
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    # CosineAnnealingLR's curve (down to a tenth), per group
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rows, window, start = [], [], time.perf_counter()

    def record(step):
        model.eval()
        score, _ = evaluate(model, held)
        row = {"step": step, "seconds": round(time.perf_counter() - start, 1),
               "temperature": round(float(model.log_temperature.detach().exp()), 4)}
        if window:
            row["train_loss"] = round(sum(window) / len(window), 4)
        row |= score
        rows.append(row)
        tqdm.write(" ".join(f"{k}={v}" for k, v in row.items()))
        model.train()
        window.clear()

    model.train()
    for step in tqdm(range(1, steps + 1), desc=model.mode, mininterval=30):
        room = rooms[int(torch.randint(len(rooms), (1,), generator=gen))]
        pick = torch.randint(len(room.q_target), (queries,), generator=gen)
        positive = torch.cdist(room.q_target[pick], room.points) < radius
        has = positive.any(1)
        pick, positive = pick[has], positive[has]
        if pick.numel() == 0:
            continue
        if anchors and len(room.points) > anchors:
            pos_cols = positive.any(0)
            others = torch.nonzero(~pos_cols).squeeze(1)
            others = others[torch.randperm(len(others), generator=gen)[:anchors]]
            cols = torch.cat([torch.nonzero(pos_cols).squeeze(1), others])
            positive = positive[:, cols]
        else:
            cols = None
        keys = model.anchors(room, cols)
        logits = model.queries(room, pick) @ keys.T / model.log_temperature.exp()
        loss = (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~positive, float("-inf")), 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            record(step)
    model.eval()
    return rows


@torch.no_grad()
def context_share(model: ContextEmbedding, room: Room) -> float:
    """Mean cosine between every 10th anchor's key and its key from E alone (1: A adds nothing)."""
    i = torch.arange(0, len(room.keys), 10)
    x = F.normalize(room.keys[i].float(), dim=-1)
    alone = F.normalize(x + model.base.residual(x), dim=-1)
    return float((model.anchors(room, i) * alone).sum(-1).mean())


@torch.no_grad()
def neighbourhood_check(model: ContextEmbedding, room: Room, limit: int = 1500) -> None:
    """Print, per split, for the queries whose most similar anchor is 10 cm or more off
    although an anchor lies within 5 cm: how similar the query's neighbourhood is to that
    wrong anchor's and to the most similar right anchor's (mean over the query's neighbours
    of the best cosine among the anchor's neighbours), and how far the wrong anchors are."""
    keys = model.anchors(room)
    for s, sp in enumerate(QUERY_SPLITS):
        idx = torch.nonzero(room.q_split == s).squeeze(1)
        if idx.numel() == 0:
            continue
        idx = idx[torch.linspace(0, idx.numel() - 1, min(limit, idx.numel())).long()]
        sim = model.queries(room, idx) @ keys.T
        dist = torch.cdist(room.q_target[idx], room.points)
        best = sim.argmax(1)
        off = dist.gather(1, best[:, None]).squeeze(1)
        right = sim.masked_fill(dist >= 0.05, -9).argmax(1)
        sel = torch.nonzero((off >= 0.10) & (dist < 0.05).any(1)).squeeze(1)
        qn = F.normalize(room.q_nbr[idx[sel]].float(), dim=-1)

        r, w = (torch.einsum("bkc,blc->bkl", qn, F.normalize(room.key_nbr[a[sel]].float(), dim=-1))
                .amax(2).mean(1) for a in (right, best))
        far = off[off >= 0.10].quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
        print(f"  {room.name} {sp:11s} wrong top-1 with a right anchor: {len(sel):4d} of {len(idx)}; "
              f"neighbourhood similarity right {r.mean():.3f} / wrong {w.mean():.3f}, right higher for "
              f"{100 * float((r > w).float().mean()):.1f} %; own similarity right "
              f"{float(sim[sel, right[sel]].mean()):.3f} / wrong {float(sim[sel, best[sel]].mean()):.3f}; "
              f"all wrong top-1 at {' / '.join(f'{x:.2f}' for x in far)} m (quartiles)", flush=True)


def base_model(path: str) -> AnchorRegressor:
    loaded = load_regressor(path).model
    model = AnchorRegressor(loaded.config)
    model.load_state_dict(loaded.state_dict())
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--held-out", type=int, default=4)
    ap.add_argument("--train-rooms", type=int, default=16, help="the first N of the non-held-out rooms")
    ap.add_argument("--variants", nargs="+", default=["none", "attn", "attn-desc", "edge"])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ctx-lr", type=float, default=None, help="peak rate of the context layer A (default --lr)")
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--radius", type=float, default=0.05)
    ap.add_argument("--anchors", type=int, default=4096, help="negatives a step samples (0: all)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=125)
    ap.add_argument("--tag", default="", help="suffix of the saved state files")
    ap.add_argument("--diagnose", action="store_true",
                    help="only the neighbourhood check of the shipped embedding on the held-out rooms")
    ap.add_argument("--data-only", action="store_true", help="build the room caches and stop")
    args = ap.parse_args()
    roots = sorted(p for p in Path(args.data).iterdir() if (p / "mapping").is_dir())
    split = len(roots) - args.held_out
    order = list(range(split, len(roots))) + list(range(min(args.train_rooms, split)))
    cache = Path(args.out) / "rooms"
    cache.mkdir(parents=True, exist_ok=True)
    features = SparseFeatures(2048)
    settings = {"kind": "context-keypoints", "format": "1"}
    t0 = time.perf_counter()
    files = {}
    for i in tqdm(order, desc="rooms"):
        files[i] = cached_room_file(cache, roots[i], settings, lambda i=i: context_room(roots[i], features))
    print(f"room data: {time.perf_counter() - t0:.0f} s", flush=True)
    if args.data_only:
        return

    def room(i: int) -> Room:
        return Room(roots[i].name, load_file(str(files[i])), args.k)

    held = [room(i) for i in range(split, len(roots))]
    if args.diagnose:
        for r in held:
            neighbourhood_check(ContextEmbedding(base_model(SHIPPED), "none").eval(), r)
        return
    rooms = [room(i) for i in range(min(args.train_rooms, split))]
    print(f"held-out rooms {[r.name for r in held]}, {sum(len(r.points) for r in held)} anchors; "
          f"train rooms {len(rooms)}, {sum(len(r.points) for r in rooms)} anchors, "
          f"{sum(len(r.q_target) for r in rooms)} queries; k={args.k}", flush=True)
    for name in (IDENTITY, SHIPPED):
        score, ceiling = evaluate(ContextEmbedding(base_model(name), "none").eval(), held)
        print(f"{Path(name).stem}: {score}", flush=True)
    print(f"ceiling (any anchor within 10 cm): {ceiling}", flush=True)
    summary = {}
    for mode in args.variants:
        model = ContextEmbedding(base_model(SHIPPED), mode, args.hidden, args.heads)
        extra = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("base."))
        print(f"--- {mode} (context parameters {extra})", flush=True)
        rows = train(model, rooms, held, args.steps, args.lr, args.queries, args.radius, args.anchors,
                     args.eval_every, args.ctx_lr)
        summary[mode] = rows[-1]
        torch.save(model.state_dict(), Path(args.out) / f"{mode}{args.tag}.pt")
        print(f"{mode}: context share of the key, mean cos(key, E alone) on a held-out room: "
              f"{context_share(model, held[0]):.4f}", flush=True)
    print("summary (held-out rooms, % within 10 cm, same / light / view):")
    for mode, row in summary.items():
        print(f"  {mode:10s} {row['query_same']:6.2f} {row['query_light']:6.2f} {row['query_view']:6.2f}"
              f"  (step {row['step']}, {row['seconds']} s)")


if __name__ == "__main__":
    main()
