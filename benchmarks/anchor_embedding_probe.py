"""Query pre-training of the anchor model's embedding against the anchors a mapping run
really builds (MODEL_CARD.md 1.3, "what the next run changes").

Each training room is mapped as ``aceg map`` maps it (track triangulation, the mapper's
anchor subset, the identity embedding), and its query splits are encoded with
their rendered depth. A step draws one room and ``--queries`` of its query patches with a
ground-truth point; every anchor within ``--radius`` of that point is a positive, every
other anchor of the map a negative (the hard negatives come with the map: the other
anchors of the same room, many of them on similar texture). The loss is minus the log of
the softmax attention the positives get together, at the model's (learned) temperature,
over all the map's anchors. Only the residual MLP of the embedding and the temperature
learn, from the identity embedding (the model of MODEL_CARD.md 1.1's command, seed 0,
which also maps the rooms); the keys are the anchors' features (the identity model's keys,
i.e. the unit XFeat features up to 8-bit rounding) through the embedding being trained.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/anchor_embedding_probe.py /work/data/pretrain \
        /work/data/embedding-probe --train 0-15 --held-out 16-19 --steps 1500 --out emb.safetensors

Prints, every ``--every`` steps, the held-out rooms' share of query patches (per split)
whose most similar anchor lies within 10 cm of their own point, and writes the embedding as
an anchor regressor file (the shipped configuration, trained weights) for
``benchmarks/anchor_probe.py``, which scores poses on held-out scenes.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aceg.data.readers import read_scene
from aceg.io import atomic_path
from aceg.mapping.buffer import build_buffer
from aceg.mapping.mapper import anchor_code
from aceg.mapping.triangulation import TRIANGULATION_VERSION, triangulated_depth_maps
from aceg.model.anchors import AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import save_regressor
from aceg.pretraining.anchor_readout import QUERY_SPLITS


def span(text: str) -> list[int]:
    """"0-15" or "3" or "1,4,7" -> room indices."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def room_tensors(root: Path, cache: Path, index: int, model, encoder) -> dict[str, torch.Tensor]:
    """Anchors (``keys`` (N, C) float16 unit, ``points`` (N, 3)) of the room mapped as
    ``aceg map`` maps it, and its query patches (``q_features`` (P, C) float16,
    ``q_target`` (P, 3) metres in the map's centred frame, ``q_split`` (P,) index into
    QUERY_SPLITS), only patches with a rendered depth; cached per room."""
    path = cache / f"{index:04d}-{root.name}.safetensors"
    stamp = {"root": str(root.resolve()), "triangulation": TRIANGULATION_VERSION,
             "embedding": model.identity(), "short_side": "480",
             "max_anchors": str(model.config.max_anchors)}
    if path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}) == stamp:
                return load_file(str(path))
    mapping = read_scene(root / "mapping")
    short = mapping.working_short_side(480)
    depth_maps, _ = triangulated_depth_maps(mapping, short, encoder.stride, progress=False)
    buffer = build_buffer(mapping, encoder, short, 1, None, None, False, 0, depth_maps=depth_maps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="only .* mapping patches have a 3-D point")
        code, _ = anchor_code(model, buffer, torch.Generator().manual_seed(0))
    c = model.config.feature_dim
    feats, targets, splits = [], [], []
    for i, sp in enumerate(QUERY_SPLITS):
        if not (root / sp).is_dir():
            continue
        q = build_buffer(read_scene(root / sp), encoder, short, 1, None, None, True, 0, centre=buffer.centre)
        v = q.target_valid
        feats.append(q.features[v].half())
        targets.append(q.target[v].float())
        splits.append(torch.full((int(v.sum()),), i, dtype=torch.int64))
    tensors = {"keys": code[:, :c].half().contiguous(), "points": code[:, c:].float().contiguous(),
               "q_features": torch.cat(feats), "q_target": torch.cat(targets), "q_split": torch.cat(splits)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=stamp)
    return tensors


def nearest_within(model, room: dict[str, torch.Tensor], radius: float = 0.10,
                   limit: int = 3000) -> list[float]:
    """% of (up to ``limit`` per split, evenly spaced) query patches of each split whose
    most similar anchor lies within ``radius`` metres of their own point."""
    with torch.no_grad():
        keys = model.embed(room["keys"])
        out = []
        for i in range(len(QUERY_SPLITS)):
            idx = torch.nonzero(room["q_split"] == i).squeeze(1)
            if idx.numel() == 0:
                out.append(float("nan"))
                continue
            idx = idx[torch.linspace(0, idx.numel() - 1, min(limit, idx.numel())).long()]
            best = (model.embed(room["q_features"][idx]) @ keys.T).argmax(1)
            d = (room["points"][best] - room["q_target"][idx]).norm(dim=1)
            out.append(100.0 * float((d < radius).float().mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="`aceg synth` rooms with depth in their query splits")
    ap.add_argument("cache", help="folder for the per-room anchors and query patches")
    ap.add_argument("--train", type=span, required=True, help='rooms to train on, e.g. "0-15"')
    ap.add_argument("--held-out", type=span, required=True, help='rooms to score on, e.g. "16-19"')
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--queries", type=int, default=1024, help="query patches a step")
    ap.add_argument("--radius", type=float, default=0.05, help="positive radius, metres")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW peak rate, cosine to a tenth")
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="anchor regressor file to write")
    args = ap.parse_args()
    # Start from the identity embedding (MODEL_CARD.md 1.1's command, seed 0): it maps the
    # training rooms too, as the shipped model did when this probe was first run.
    torch.manual_seed(0)
    model = AnchorRegressor()
    torch.manual_seed(args.seed)
    enc = get_encoder("xfeat")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rooms = {}
    for i in args.train + args.held_out:
        t0 = time.perf_counter()
        rooms[i] = room_tensors(Path(args.root) / f"scene_{i:04d}", cache, i, model, enc)
        print(f"room {i}: {len(rooms[i]['keys'])} anchors, {len(rooms[i]['q_target'])} query patches "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    def report(step: int, loss: float) -> None:
        scores = torch.tensor([nearest_within(model, rooms[i]) for i in args.held_out]).nanmean(0)
        print(f"step {step:5d}  loss {loss:.3f}  temperature {model.log_temperature.exp().item():.4f}  "
              "held-out nearest anchor within 10 cm: "
              + ", ".join(f"{sp} {s:.1f} %" for sp, s in zip(QUERY_SPLITS, scores.tolist(), strict=True)),
              flush=True)

    params = list(model.residual.parameters()) + [model.log_temperature]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr / 10)
    gen = torch.Generator().manual_seed(args.seed)
    report(0, float("nan"))
    running, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        room = rooms[args.train[int(torch.randint(len(args.train), (1,), generator=gen))]]
        pick = torch.randint(len(room["q_target"]), (args.queries,), generator=gen)
        target = room["q_target"][pick]
        positive = torch.cdist(target, room["points"]) < args.radius  # (Q, N)
        has = positive.any(1)
        if not has.any():
            continue
        keys = model.embed(room["keys"])
        queries = model.embed(room["q_features"][pick[has]])
        logits = queries @ keys.T / model.log_temperature.exp()
        pos = logits.masked_fill(~positive[has], float("-inf"))
        loss = (torch.logsumexp(logits, 1) - torch.logsumexp(pos, 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(float(loss.detach()))
        if step % args.every == 0 or step == args.steps:
            print(f"  ({time.perf_counter() - t0:.0f} s)", end="")
            report(step, sum(running) / len(running))
            running = []
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "cache", "every")}
    save_regressor(args.out, model, "xfeat",
                   extra={"embedding": "query pre-trained by benchmarks/anchor_embedding_probe.py",
                          "pretraining": settings})
    print(f"wrote {args.out} (identity {model.identity()})")


if __name__ == "__main__":
    main()
