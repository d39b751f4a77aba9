"""Query pre-training of the anchor model's embedding against the anchors mapping builds:
the objective of the shipped ``anchors-xfeat.safetensors``.

A query patch reads the point of its most similar anchor (:mod:`aceg.model.anchors`); the
embedding decides which anchor that is. Pre-training teaches it, across rooms, to pick an
anchor at the patch's own surface point when the query image was taken in other light or
from another viewpoint than the mapping images.

Data (:func:`mapped_room_tensors`, cached per room): each room is mapped as ``aceg map``
maps it (:mod:`aceg.pretraining.mapped_rooms`: track triangulation, the mapper's anchor
subset under the model's budget), with the identity embedding, so an anchor's feature is
its unit encoder feature rounded to 8 bits as an identity map stores it (training embeds
it from there; a map of the trained model rounds after embedding, an 8-bit difference);
every patch of the room's query splits with a rendered depth is a query, its ground truth
the depth-derived point.

Step (:class:`PositivesLoss`): one room and ``queries`` of its query patches at random;
every anchor within ``radius`` of a patch's point is a positive, every other anchor of the
map a negative (the hard negatives come with the map: the other anchors of the same room,
many on similar texture); the loss is minus the log of the softmax attention, at the
model's learned temperature over all the map's anchors, that the positives get together.
Patches without a positive are left out. Only the embedding's residual MLP and the
temperature learn.

Score (:func:`nearest_within`): per query split of the held-out rooms, the % of query
patches whose most similar anchor lies within 10 cm of their own point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from aceg.errors import AcegError
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.pretraining.mapped_rooms import (
    QUERY_SPLITS,
    ROOM_SHORT_SIDE,
    cached_room_file,
    map_room,
    query_buffers,
)
from aceg.pretraining.run_state import start_run

#: Metadata key of this loop's checkpoints.
RUN_KEY = "aceg_anchor_embedding"

#: Version of the cached room files (:func:`cached_mapped_room`): bump when their content changes.
ROOM_FORMAT = "1"


@dataclass(frozen=True)
class EmbeddingConfig:
    """Settings of a pre-training run (module docstring). ``lr``: AdamW peak rate, cosine
    decay to a tenth over ``steps``; ``radius`` in metres; ``eval_every`` steps between
    evaluations and checkpoints. The defaults made the shipped embedding."""

    steps: int = 1500
    queries: int = 1024
    radius: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 250

    def __post_init__(self) -> None:
        if min(self.steps, self.queries, self.eval_every) < 1:
            raise ValueError("steps, queries and eval_every must be positive")
        if not self.radius > 0 or not self.lr > 0:
            raise ValueError("radius and lr must be positive")


@dataclass
class RoomTensors:
    """One mapped room: ``keys`` (N, C) float16 anchor features (unit, 8-bit rounded),
    ``points`` (N, 3) float32 anchor points, ``q_features`` (P, C) float16 query patch
    features, ``q_target`` (P, 3) float32 their depth-derived points, ``q_split`` (P,) int64
    index into :data:`QUERY_SPLITS`. Points in metres, the map's centred world frame."""

    name: str
    keys: torch.Tensor
    points: torch.Tensor
    q_features: torch.Tensor
    q_target: torch.Tensor
    q_split: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in asdict(self).items() if k != "name"}


def identity_embedding(config: AnchorConfig) -> AnchorRegressor:
    """A fresh model of ``config``: its embedding is the identity on unit features (the
    residual's last layer starts at zero). Leaves the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        return AnchorRegressor(config)


def mapped_room_tensors(root: Path, encoder, config: AnchorConfig) -> RoomTensors:
    """The :class:`RoomTensors` of the ``aceg synth`` room at ``root`` (module docstring);
    clear error if it has no query split with depth."""
    mapper = identity_embedding(config)
    room = map_room(Path(root), mapper, encoder)
    c = config.feature_dim
    feats, targets, splits = [], [], []
    for sp, q in query_buffers(room, encoder):
        if q.target is None:
            continue
        v = q.target_valid
        feats.append(q.features[v].half())
        targets.append(q.target[v].float())
        splits.append(torch.full((int(v.sum()),), QUERY_SPLITS.index(sp), dtype=torch.int64))
    if not feats or not sum(len(t) for t in targets):
        raise AcegError(f"{root}: no query split ({', '.join(QUERY_SPLITS)}) with depth maps to "
                        "pre-train on")
    return RoomTensors(Path(root).name, room.code[:, :c].half().contiguous(),
                       room.code[:, c:].float().contiguous(), torch.cat(feats), torch.cat(targets),
                       torch.cat(splits))


def cached_mapped_room(root: Path, cache_dir: Path, encoder, config: AnchorConfig) -> RoomTensors:
    """:func:`mapped_room_tensors`, kept in ``cache_dir`` by
    :func:`aceg.pretraining.mapped_rooms.cached_room_file` (reused for the same room files,
    encoder, budget, working size, triangulation and file format)."""
    settings = {"format": ROOM_FORMAT, "encoder": encoder.name, "feature_dim": str(config.feature_dim),
                "max_anchors": str(config.max_anchors), "short_side": str(ROOM_SHORT_SIDE)}
    path = cached_room_file(cache_dir, root, settings,
                            lambda: mapped_room_tensors(root, encoder, config).tensors())
    return RoomTensors(Path(root).name, **load_file(str(path)))


class PositivesLoss(nn.Module):
    """The step's loss as a module around the model, so that DDP can average its gradients
    across ranks: ``forward(keys (N, C), queries (Q, C), positive (Q, N) bool)`` -> scalar,
    the mean over the queries of -log(attention on their positives), each query having at
    least one positive; with Q = 0, a zero that still reaches every weight (a rank whose
    draw had no positive takes part in the gradient average with zeros)."""

    def __init__(self, model: AnchorRegressor) -> None:
        super().__init__()
        self.model = model

    def forward(self, keys: torch.Tensor, queries: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        model = self.model
        keys = model.embed(keys)
        if queries.shape[0] == 0:
            return (keys.sum() + model.log_temperature.sum()) * 0.0
        logits = model.embed(queries) @ keys.T / model.log_temperature.exp()
        on_positives = logits.masked_fill(~positive, float("-inf"))
        return (torch.logsumexp(logits, 1) - torch.logsumexp(on_positives, 1)).mean()


def step_queries(room: RoomTensors, pick: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the query patches ``pick`` (indices into ``room``'s queries), the features of the
    ones with an anchor within ``radius`` metres of their point (Q, C) and their positives
    (Q, N) bool over the room's anchors."""
    positive = torch.cdist(room.q_target[pick], room.points) < radius  # (len(pick), N)
    has = positive.any(1)
    return room.q_features[pick[has]], positive[has]


def positives_loss(model: AnchorRegressor, room: RoomTensors, pick: torch.Tensor,
                   radius: float) -> torch.Tensor | None:
    """:class:`PositivesLoss` of the query patches ``pick`` of ``room`` that have an anchor
    within ``radius`` metres; None when none has."""
    queries, positive = step_queries(room, pick, radius)
    if queries.shape[0] == 0:
        return None
    return PositivesLoss(model)(room.keys, queries, positive)


@torch.no_grad()
def nearest_within(model: AnchorRegressor, room: RoomTensors, radius: float = 0.10,
                   limit: int = 3000) -> list[float]:
    """Per split of :data:`QUERY_SPLITS` (NaN where the room has none), the % of its query
    patches (up to ``limit``, evenly spaced) whose most similar anchor lies within
    ``radius`` metres of their own point."""
    keys = model.embed(room.keys)
    out = []
    for i in range(len(QUERY_SPLITS)):
        idx = torch.nonzero(room.q_split == i).squeeze(1)
        if idx.numel() == 0:
            out.append(float("nan"))
            continue
        idx = idx[torch.linspace(0, idx.numel() - 1, min(limit, idx.numel())).long()]
        best = (model.embed(room.q_features[idx]) @ keys.T).argmax(1)
        out.append(100.0 * float(((room.points[best] - room.q_target[idx]).norm(dim=1) < radius).float().mean()))
    return out


def evaluate(model: AnchorRegressor, rooms: list[RoomTensors]) -> dict[str, float]:
    """``heldout_<split>``: :func:`nearest_within` averaged over ``rooms`` (rounded to 0.01)."""
    scores = torch.tensor([nearest_within(model, r) for r in rooms]).nanmean(0)
    return {f"heldout_{sp}": round(float(s), 2) for sp, s in zip(QUERY_SPLITS, scores.tolist(), strict=True)}


def train_embedding(model: AnchorRegressor, train: list[RoomTensors], held_out: list[RoomTensors],
                    config: EmbeddingConfig, out_dir: Path | None = None, seed: int = 0,
                    progress: bool = True, scenes: list[str] | None = None,
                    run_info: dict | None = None) -> list[dict]:
    """Pre-train ``model``'s embedding and temperature in place on ``train`` rooms (one a
    step); score ``held_out`` rooms at step 0, every ``eval_every`` steps and at the end.
    Returns the evaluation rows (``train_loss``: mean over the steps since the last row).

    With ``out_dir``, the rows go to ``out_dir/log.csv`` and a checkpoint (model,
    optimizer, schedule, random state, rows) to ``out_dir/checkpoint.safetensors`` at every
    evaluation; a run finding a checkpoint there resumes from it exactly (same settings and
    rooms; a larger ``steps`` adds steps: the cosine schedule keeps its first length, and the rate
    then stays at its floor). ``run_info`` (JSON-ready, e.g. the encoder and the start
    model's identity) must match too: it is stored with the settings.

    Under torchrun (process group initialised), every rank calls this with its own shard
    of the training rooms as ``train`` and the names of all of them as ``scenes``; a step
    draws one room per rank and DDP averages the gradients, so all ranks keep identical
    weights. Rank 0 scores ``held_out`` (other ranks may pass none) and writes the log and
    checkpoint; its ``train_loss`` is over rank 0's own draws. A single process skips a step whose draw has no positive; under torchrun
    such a rank adds zeros to the average instead, as every rank must take part.
    """
    if not train:
        raise ValueError("no training rooms")
    run = start_run(model, asdict(config) | (run_info or {}), out_dir, RUN_KEY,
                    scenes or [r.name for r in train], seed)
    loss_fn: nn.Module = PositivesLoss(model)
    if run.world > 1:
        loss_fn = DistributedDataParallel(loss_fn)
    progress = progress and run.rank == 0

    def record(step: int, window: list[float]) -> None:
        row = {"step": step, "seconds": run.seconds(),
               "temperature": round(float(model.log_temperature.detach().exp()), 4)}
        if window:
            row["train_loss"] = round(sum(window) / len(window), 4)
        if held_out and run.rank == 0:
            row |= evaluate(model, held_out)
        run.record(model, step, row)
        if progress:
            tqdm.write(" ".join(f"{k}={v}" for k, v in row.items()))

    model.train()
    if not run.rows:
        record(0, [])
    window: list[float] = []
    for step in tqdm(range(run.first, config.steps + 1), desc="anchor embedding", disable=not progress,
                     initial=run.first - 1, total=config.steps):
        room = train[int(torch.randint(len(train), (1,), generator=run.gen))]
        pick = torch.randint(len(room.q_target), (config.queries,), generator=run.gen)
        queries, positive = step_queries(room, pick, config.radius)
        if queries.shape[0] or run.world > 1:
            loss = loss_fn(room.keys, queries, positive)
            run.opt.zero_grad()
            loss.backward()
            run.opt.step()
            run.step_schedule()
            if queries.shape[0]:
                window.append(float(loss.detach()))
        if step % config.eval_every == 0 or step == config.steps:
            record(step, window)
            window = []
    model.eval()
    return run.rows
