"""Query pre-training of the anchor model (:mod:`aceg.model.anchors`).

The anchor model's scene-agnostic weights decide which anchor a query patch attends to.
Pre-training teaches them, across many scenes, to attend to the anchors at the patch's own
surface point when the query was taken in other light or from another viewpoint than the
anchors. One step, per scene drawn:

- anchors: ``anchors`` random mapping patches with a depth target (frames of even index),
  their features and centred scene coordinates (the map code a mapping run would build,
  with rendered depth in place of triangulation);
- queries: ``queries`` random patches with a depth target, drawn in equal shares from the
  scene's query splits and from its mapping frames of odd index (other views, same light);
- target: each query's attention over the anchors should follow a Gaussian of the 3-D
  distance between the query's and the anchors' scene coordinates (``sigma`` metres), so
  the point the query reads lies on its own surface; queries with no anchor within
  ``3 sigma`` have no target and are left out;
- loss: cross-entropy of that target against the softmax of cosine similarity over the
  model's temperature (the temperature is learned too).

Scenes come from the pre-training feature store (:mod:`aceg.pretraining.feature_store`:
fp16 features and depth-derived targets, encoded once). :func:`evaluate` scores held-out
scenes the same way, plus the share of queries whose most similar anchor lies within
10 cm of the query's own point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from aceg.model.anchors import AnchorRegressor
from aceg.pretraining.feature_store import MAPPING_SPLIT, SceneFeatures, SplitFeatures
from aceg.pretraining.run_state import start_run

#: Metadata key of this loop's checkpoints.
RUN_KEY = "aceg_anchor_metric"


@dataclass(frozen=True)
class MetricConfig:
    """Settings of anchor-metric pre-training (module docstring). ``lr``: AdamW peak rate,
    cosine decay to a tenth over ``steps``. ``loss``: "gaussian" (the target of the module
    docstring) or "nce" (every anchor within ``sigma`` of the query's point is a positive
    and the loss is minus the log of the attention they get together: no preference among
    nearby anchors, only against far ones)."""

    def __post_init__(self) -> None:
        if self.loss not in ("gaussian", "nce"):
            raise ValueError(f"unknown metric loss {self.loss!r}: gaussian or nce")

    steps: int = 2000
    anchors: int = 4096
    queries: int = 1024
    sigma: float = 0.05
    loss: str = "gaussian"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 250


def _cells_with_target(split: SplitFeatures, count: int, generator: torch.Generator,
                       frame_parity: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random cells of ``split`` with a finite target (frames of the given parity
    only, when given): features (count, C) float32 and targets (count, 3)."""
    frames, rows, cols = split.features.shape[:3]
    valid = torch.isfinite(split.targets).all(-1)  # (F, h, w)
    if frame_parity is not None:
        keep = torch.zeros(frames, dtype=torch.bool)
        keep[frame_parity::2] = True
        valid &= keep[:, None, None]
    flat = torch.nonzero(valid.reshape(-1)).squeeze(1)
    if flat.numel() == 0:
        return split.features.new_zeros((0, split.features.shape[-1])).float(), torch.zeros(0, 3)
    pick = flat[torch.randint(flat.numel(), (count,), generator=generator)]
    f, rem = pick // (rows * cols), pick % (rows * cols)
    i, j = rem // cols, rem % cols
    return split.features[f, i, j].float(), split.targets[f, i, j]


def scene_batch(sf: SceneFeatures, config: MetricConfig, generator: torch.Generator,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchors (features, points) and queries (features, points) of one scene."""
    mapping = sf.splits[MAPPING_SPLIT]
    a_feat, a_pts = _cells_with_target(mapping, config.anchors, generator, frame_parity=0)
    sources = [(mapping, 1)] + [(sf.splits[s], None) for s in sf.query_splits]
    share = config.queries // len(sources)
    q_feat, q_pts = zip(*(_cells_with_target(split, share, generator, parity)
                          for split, parity in sources), strict=True)
    return a_feat, a_pts, torch.cat(q_feat), torch.cat(q_pts)


def metric_loss(model: AnchorRegressor, a_feat: torch.Tensor, a_pts: torch.Tensor,
                q_feat: torch.Tensor, q_pts: torch.Tensor, sigma: float,
                loss: str = "gaussian") -> tuple[torch.Tensor, dict]:
    """The queries' attention over the anchors scored against the 3-D target
    (:class:`MetricConfig` ``loss``); statistics: ``ce`` (the loss), ``top1_10cm`` (share of
    queries whose most similar anchor is within 10 cm), ``with_target`` (share of queries
    kept)."""
    dist = torch.cdist(q_pts, a_pts)  # (Q, A) metres
    reach = 3 * sigma if loss == "gaussian" else sigma
    has_target = (dist < reach).any(1)
    logits = model.embed(q_feat) @ model.embed(a_feat).T / model.log_temperature.exp()
    logp = torch.log_softmax(logits[has_target], dim=1)
    near = dist[has_target] < reach
    if loss == "gaussian":
        target = torch.softmax(torch.where(near, -0.5 * (dist[has_target] / sigma) ** 2,
                                           torch.full_like(logp, -torch.inf)), dim=1)
        ce = -(target * torch.where(near, logp, torch.zeros_like(logp))).sum(1).mean()
    else:
        ce = -torch.logsumexp(torch.where(near, logp, torch.full_like(logp, -torch.inf)), dim=1).mean()
    with torch.no_grad():
        nearest = dist.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
        stats = {"ce": float(ce), "top1_10cm": float((nearest[has_target] < 0.10).float().mean()),
                 "with_target": float(has_target.float().mean())}
    return ce, stats


def evaluate(model: AnchorRegressor, scenes: list[SceneFeatures], config: MetricConfig,
             seed: int = 12345, repeats: int = 2) -> dict:
    """Mean statistics of :func:`metric_loss` over ``scenes`` (fixed draws: ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    acc: dict[str, list[float]] = {}
    with torch.no_grad():
        for sf in scenes:
            for _ in range(repeats):
                _, stats = metric_loss(model, *scene_batch(sf, config, gen), config.sigma, config.loss)
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def train_metric(model: AnchorRegressor, train: list[SceneFeatures], held_out: list[SceneFeatures],
                 config: MetricConfig, out_dir: Path | None = None, seed: int = 0,
                 progress: bool = True) -> list[dict]:
    """Pre-train ``model`` in place on ``train`` scenes (one scene per step); evaluate on
    ``held_out`` every ``eval_every`` steps and at the end. Returns the evaluation rows.

    With ``out_dir``, the rows go to ``out_dir/log.csv`` and a checkpoint (model,
    optimizer, schedule, random state, log) to ``out_dir/checkpoint.safetensors`` at every
    evaluation; a run finding a checkpoint there resumes from it exactly (same settings
    and scenes; a larger ``steps`` adds steps: the cosine schedule keeps its first length, and the rate
    then stays at its floor).
    """
    if not train:
        raise ValueError("no training scenes")
    run = start_run(model, asdict(config), out_dir, RUN_KEY, [sf.name for sf in train], seed)
    gen, opt = run.gen, run.opt

    def record(step: int, train_stats: dict) -> None:
        row = {"step": step, "seconds": run.seconds(),
               "temperature": round(float(model.log_temperature.detach().exp()), 4),
               **{f"train_{k}": round(v, 4) for k, v in train_stats.items()}}
        if held_out:
            row.update({f"heldout_{k}": round(v, 4) for k, v in evaluate(model, held_out, config).items()})
        run.record(model, step, row)
        if progress:
            tqdm.write(" ".join(f"{k}={v}" for k, v in row.items()))

    model.train()
    if not run.rows:
        record(0, {})
    window: dict[str, list[float]] = {}
    for step in tqdm(range(run.first, config.steps + 1), desc="anchor metric", disable=not progress,
                     initial=run.first - 1, total=config.steps):
        sf = train[int(torch.randint(len(train), (1,), generator=gen))]
        loss, stats = metric_loss(model, *scene_batch(sf, config, gen), config.sigma, config.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.step_schedule()
        for k, v in stats.items():
            window.setdefault(k, []).append(v)
        if step % config.eval_every == 0 or step == config.steps:
            record(step, {k: sum(v) / len(v) for k, v in window.items()})
            window = {}
    model.eval()
    return run.rows
