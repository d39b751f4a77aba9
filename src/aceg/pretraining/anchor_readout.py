"""Query pre-training of the anchor model's learned read-out (:class:`CandidateReadout`).

A query patch's most similar anchor lies at its surface point for only a part of the
patches of new images (held-out synthetic rooms, 12,288 triangulated anchors, the budget
then: 26 % of query_same patches within 10 cm, 10 % of query_view), but one of its 16 most similar
anchors does for about twice as many (``benchmarks/anchor_candidates.py``). The read-out
learns, across rooms, which candidate to trust: from the similarities and from how the
candidates' 3-D points agree (several mapping views of one surface point give several
anchors at one place). The embedding and the maps are fixed; only the read-out learns.

Data: per room, the candidates of every patch of its query splits (other viewpoints,
other light) under a map built exactly as ``aceg map`` builds it
(:func:`room_candidates`), with the ground-truth scene coordinate from the rendered depth.

Loss (:func:`readout_loss`): with the K candidates plus "none" as the classes, the
negative log of the probability given to the candidates within ``radius`` of the ground
truth (all of them together), or to "none" when no candidate is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from aceg.errors import AcegError
from aceg.model.anchors import AnchorRegressor, CandidateReadout
from aceg.pretraining.mapped_rooms import QUERY_SPLITS, cached_room_file, map_room, query_buffers
from aceg.pretraining.run_state import start_run

#: Metadata key of this loop's checkpoints.
RUN_KEY = "aceg_anchor_readout"


def room_candidates(root: Path, model: AnchorRegressor, encoder, k: int,
                    splits=QUERY_SPLITS) -> dict[str, torch.Tensor]:
    """Map the room at ``root`` as ``aceg map`` does (triangulated anchors, ``model``'s
    embedding, the mapper's anchor subset) and return, per split (prefix ``<split>.``):
    ``sims`` (P, K) float32 cosines of each query patch's K most similar anchors, best
    first; ``points`` (P, K, 3) their scene coordinates (centred world frame, metres);
    ``target`` (P, 3) and ``valid`` (P,) the ground truth from the split's depth maps;
    ``pixels`` (P, 2), ``frame`` (P,), ``K`` (F, 3, 3) and ``world_to_cam`` (F, 4, 4)
    (centred world -> camera, OpenCV axes) of the prepared query images. Splits the room
    does not have are skipped; the ones it has need depth maps."""
    room = map_room(Path(root), model, encoder)
    keys, points = room.code[:, : model.config.feature_dim], room.code[:, model.config.feature_dim:]
    out: dict[str, torch.Tensor] = {}
    for sp, q in query_buffers(room, encoder, splits):
        with torch.no_grad():
            sims, index = model.attend(model.embed(q.features), keys, k)
        out |= {f"{sp}.sims": sims.contiguous(), f"{sp}.points": points[index].contiguous(),
                f"{sp}.target": q.target, f"{sp}.valid": q.target_valid, f"{sp}.pixels": q.pixels,
                f"{sp}.frame": q.frame, f"{sp}.K": q.K, f"{sp}.world_to_cam": q.world_to_cam}
    return out


@dataclass
class Candidates:
    """Query patches with ground truth: ``sims`` (P, K), ``points`` (P, K, 3), ``target``
    (P, 3), all float32, metres, one room's centred frame per patch."""

    sims: torch.Tensor
    points: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.sims.shape[0])

    @classmethod
    def load(cls, paths: list[Path], splits=QUERY_SPLITS) -> Candidates:
        """The valid patches of ``splits`` in the :func:`room_candidates` files ``paths``."""
        parts: list[tuple[torch.Tensor, ...]] = []
        for path in paths:
            t = load_file(str(path))
            for sp in [sp for sp in splits if f"{sp}.valid" in t]:
                v = t[f"{sp}.valid"]
                parts.append((t[f"{sp}.sims"][v].float(), t[f"{sp}.points"][v], t[f"{sp}.target"][v]))
        if not parts or not sum(len(p[0]) for p in parts):
            raise AcegError(f"no query patch with ground truth (depth) in {', '.join(map(str, paths))}")
        return cls(*(torch.cat(x) for x in zip(*parts, strict=True)))

    def subset(self, index: torch.Tensor) -> Candidates:
        return Candidates(self.sims[index], self.points[index], self.target[index])

    def correct(self, radius: float) -> torch.Tensor:
        """(P, K) bool: candidate point within ``radius`` metres of the ground truth."""
        return (self.points - self.target[:, None]).norm(dim=-1) < radius


def readout_loss(readout: CandidateReadout, batch: Candidates, radius: float) -> torch.Tensor:
    """Mean over the batch of -log P(a correct candidate), or -log P(none) if none is."""
    logp = torch.log_softmax(readout(batch.sims, batch.points), dim=1)  # (P, K + 1)
    pos = batch.correct(radius)
    labels = torch.cat([pos, ~pos.any(1, keepdim=True)], dim=1)
    return -torch.logsumexp(logp.masked_fill(~labels, float("-inf")), dim=1).mean()


@torch.no_grad()
def readout_metrics(readout: CandidateReadout | None, data: Candidates, radius: float,
                    keep: float = 0.75, chunk: int = 65536) -> dict[str, float]:
    """Share (%) of patches whose chosen point is within ``radius``: of all, and of the
    ``keep`` fraction the chooser is most confident of (as the localizer keeps them).
    ``readout`` None: the nearest anchor, confidence the best/second-best margin."""
    hit, conf = [], []
    for s in range(0, len(data), chunk):
        b = data.subset(torch.arange(s, min(s + chunk, len(data))))
        ok = b.correct(radius)
        if readout is None:
            hit.append(ok[:, 0])
            conf.append(b.sims[:, 0] - b.sims[:, 1])
        else:
            prob = torch.softmax(readout(b.sims, b.points), dim=1)[:, :-1]
            p, j = prob.max(dim=1)
            hit.append(ok.gather(1, j[:, None]).squeeze(1))
            conf.append(p)
    h, c = torch.cat(hit).float(), torch.cat(conf)
    top = c.argsort(descending=True)[: max(1, int(keep * len(c)))]
    return {"chosen": round(100 * float(h.mean()), 2), "kept": round(100 * float(h[top].mean()), 2),
            "any": round(100 * float(data.correct(radius).any(1).float().mean()), 2)}


@dataclass
class ReadoutConfig:
    """Settings of a read-out pre-training run.

    Attributes:
        steps: optimiser steps (cosine rate schedule down to lr / 10).
        batch: query patches per step, drawn at random from all training rooms' patches.
        lr, weight_decay: AdamW.
        radius: metres within which a candidate's point counts as the patch's point.
        eval_every: steps between evaluations (and checkpoints).
    """

    steps: int = 3000
    batch: int = 2048
    lr: float = 3e-3
    weight_decay: float = 1e-4
    radius: float = 0.10
    eval_every: int = 250


def train_readout(readout: CandidateReadout, train: Candidates, held_out: Candidates,
                  config: ReadoutConfig | None = None, out_dir: Path | None = None,
                  scenes: list[str] | None = None, seed: int = 0, progress: bool = True,
                  **overrides) -> list[dict]:
    """Pre-train ``readout`` in place on ``train`` patches; evaluate on ``held_out`` (loss
    and :func:`readout_metrics`) at step 0, every ``eval_every`` steps and at the end.
    Returns the evaluation rows. ``overrides`` replace fields of ``config``.

    With ``out_dir``, the rows go to ``out_dir/log.csv`` and a checkpoint to
    ``out_dir/checkpoint.safetensors`` at every evaluation (:mod:`aceg.pretraining.run_state`);
    a run finding one there resumes from it exactly (same settings and ``scenes``).
    """
    config = replace(config or ReadoutConfig(), **overrides)
    if len(train) == 0:
        raise ValueError("no training patches")
    run = start_run(readout, asdict(config), out_dir, RUN_KEY, list(scenes or []), seed)

    def record(step: int, train_loss: float | None) -> None:
        row: dict = {"step": step, "seconds": run.seconds()}
        if train_loss is not None:
            row["train_loss"] = round(train_loss, 4)
        with torch.no_grad():  # in blocks: the features of all held-out patches are large
            n, chunk = len(held_out), 65536
            total = sum(float(readout_loss(readout, held_out.subset(torch.arange(s, min(s + chunk, n))),
                                           config.radius)) * (min(s + chunk, n) - s)
                        for s in range(0, n, chunk))
            row["heldout_loss"] = round(total / n, 4)
        row |= {f"heldout_{k}": v for k, v in readout_metrics(readout, held_out, config.radius).items()}
        run.record(readout, step, row)
        if progress:
            tqdm.write(" ".join(f"{k}={v}" for k, v in row.items()))

    if not run.rows:
        record(0, None)
    window: list[float] = []
    for step in tqdm(range(run.first, config.steps + 1), desc="anchor read-out", disable=not progress,
                     initial=run.first - 1, total=config.steps):
        idx = torch.randint(len(train), (config.batch,), generator=run.gen)
        loss = readout_loss(readout, train.subset(idx), config.radius)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.step_schedule()
        window.append(float(loss.detach()))
        if step % config.eval_every == 0 or step == config.steps:
            record(step, sum(window) / len(window))
            window = []
    return run.rows


def cached_room_candidates(root: Path, cache_dir: Path, model: AnchorRegressor, encoder, k: int) -> Path:
    """:func:`room_candidates` of ``root``, kept in ``cache_dir`` by
    :func:`aceg.pretraining.mapped_rooms.cached_room_file` (reused for the same room files,
    embedding, K, budget and triangulation); returns the file's path."""
    def compute() -> dict[str, torch.Tensor]:
        tensors = room_candidates(Path(root), model, encoder, k)
        if not tensors:
            raise AcegError(f"{root}: no query split ({', '.join(QUERY_SPLITS)}) to pre-train on")
        return tensors

    settings = {"embedding": model.identity(), "k": str(k), "max_anchors": str(model.config.max_anchors)}
    return cached_room_file(cache_dir, root, settings, compute)
