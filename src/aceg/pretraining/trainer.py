"""Query pre-training of the scene-agnostic regressor (ACE-G's alternating scheme).

Each step has two iterations over a few scenes of the active pool
(:mod:`aceg.pretraining.code_pool`):

1. **Mapping iteration**: patches of the scenes' ``mapping`` split; the loss is the
   mapping loss (Laplace NLL of the reprojection error, plus the depth term for codes
   drawn to use depth); it updates the scenes' map codes (Adam; by default with mapping's
   one-cycle rate stretched over each code's lifetime, so pool codes are fitted the way
   ``aceg map`` fits a map), and the transformer only on every ``regressor_every``-th step.
2. **Query iteration**: patches of the same scenes' ``query_*`` splits (other lighting,
   other viewpoints), codes frozen; the loss trains the transformer: Laplace NLL of the
   3D error against the depth-derived scene coordinate, with the Laplace scale in metres
   derived from the predicted pixel uncertainty (``b_m = b_px * z / f``), or, for patches
   without depth, the reprojection NLL. Codes younger than ``code_warmup`` mapping
   iterations take part with weight 0 (they are not yet a map worth generalising from)
   and get no query patches, so a long warm-up (codes fitted about as tightly as a map
   before the transformer learns from them) costs only the mapping iterations. With
   ``query_mapping_share`` > 0 part of the patches come from the mapping split, scored
   with the mapping loss or, ``query_mapping_loss="3d"``, with the 3-D query loss.

Codes expire after ``code_lifetime`` mapping iterations and their slot is refilled with a
fresh code of a random scene, anchored on that scene's mapping patches by default
(``code_init``, as ``aceg map`` starts a code). Everything random comes from one seeded
generator per rank, checkpointed with the model, optimizer and pool, so a resumed run
continues exactly.

Distributed: under ``torchrun`` each rank holds its own pool over a disjoint shard of the
scenes; the transformer is wrapped in DistributedDataParallel (gloo on CPU, nccl on
GPU), so its gradients are averaged across ranks and all ranks keep identical weights.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from aceg.errors import AcegError, file_error
from aceg.io import atomic_path, atomic_write_text
from aceg.mapping.losses import LossConfig, PatchBatch, batch_loss, reprojection_error, to_camera
from aceg.mapping.schedule import one_cycle_lr
from aceg.model.encoder import DEFAULT_ENCODER, get_encoder
from aceg.model.map_file import save_regressor
from aceg.model.regressor import (
    CODE_INITS,
    CODE_LR_SCALE,
    RegressorConfig,
    SceneRegressor,
    random_regressor,
)
from aceg.pretraining.code_pool import CodePool
from aceg.pretraining.feature_store import (
    MAPPING_SPLIT,
    SceneFeatures,
    cached_scene_features,
    cached_triangulated_targets,
    find_scene_roots,
    sample_patches,
)

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.csv"
CODE_LR_SCHEDULES = ("one_cycle", "constant")
#: How a query iteration scores its patches from the mapping split (``query_mapping_share``):
#: "mapping" (the mapping loss, reprojection NLL: keep the codes' fit) or "3d" (the query
#: loss, 3-D NLL against the depth-derived coordinate: teach the transformer to turn a code
#: fitted by reprojection alone into correct geometry along the rays).
QUERY_MAPPING_LOSSES = ("mapping", "3d")
#: Depth the mapping iterations of depth-using codes (``depth_fraction``) fit to:
#: "rendered" (the scene's depth maps, dense) or "triangulated" (sparse depth triangulated
#: between the mapping images with their poses, RGB only: what ``aceg map --triangulate``
#: gives a map, so pool codes are fitted the way mapping fits them).
POOL_DEPTHS = ("rendered", "triangulated")
FINAL_NAME = "regressor.safetensors"


@dataclass
class PretrainConfig:
    """Settings of a pre-training run (recorded in checkpoints and the final model)."""

    steps: int = 20_000
    batch_patches: int = 2048  # patches per iteration and rank, split over the step's scenes
    scenes_per_step: int = 4
    pool_size: int = 8
    code_lifetime: int = 1500  # mapping iterations a code lives before it is re-initialised
    code_warmup: int = 200  # mapping iterations before a code joins query iterations
    regressor_every: int = 4  # the transformer also learns from every k-th mapping iteration
    lr: float = 3e-4
    lr_warmup_steps: int = 500
    lr_final_fraction: float = 0.1
    code_lr: float = 0.1  # peak Adam rate of "keys_values" codes; other forms scale it (CODE_LR_SCALE)
    code_lr_schedule: str = "one_cycle"  # over each code's lifetime, as mapping; or "constant"
    code_init: str = CODE_INITS[0]  # how a fresh pool code starts (CODE_INITS), as aceg map does
    query_mapping_share: float = 0.0  # share of a query iteration's patches taken from the mapping split
    query_mapping_loss: str = "mapping"  # how those patches are scored (QUERY_MAPPING_LOSSES)
    weight_decay: float = 0.01
    depth_fraction: float = 0.5  # fraction of codes whose mapping iterations use depth
    pool_depth: str = POOL_DEPTHS[0]  # which depth those codes fit to (POOL_DEPTHS)
    short_side: int | None = None  # working short side; None keeps the images' size
    encoder: str = DEFAULT_ENCODER
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    regressor: dict = field(default_factory=dict)  # RegressorConfig overrides; a run records its full architecture here
    init: str | None = None  # regressor file to start from (warm start) instead of random weights

    def __post_init__(self) -> None:
        # checked here, before a run spends minutes encoding its scenes
        if self.code_lr_schedule not in CODE_LR_SCHEDULES:
            raise AcegError(f"unknown code_lr_schedule {self.code_lr_schedule!r}; choose one of "
                            f"{', '.join(CODE_LR_SCHEDULES)}")
        if not 0.0 <= self.query_mapping_share < 1.0:
            raise AcegError(f"query_mapping_share must be in [0, 1), got {self.query_mapping_share}")
        if self.query_mapping_loss not in QUERY_MAPPING_LOSSES:
            raise AcegError(f"unknown query_mapping_loss {self.query_mapping_loss!r}; choose one of "
                            f"{', '.join(QUERY_MAPPING_LOSSES)}")
        if self.pool_depth not in POOL_DEPTHS:
            raise AcegError(f"unknown pool_depth {self.pool_depth!r}; choose one of {', '.join(POOL_DEPTHS)}")
        if self.code_init not in CODE_INITS:
            raise AcegError(f"unknown code_init {self.code_init!r}; choose one of {', '.join(CODE_INITS)}")

    def regressor_config(self, feature_dim: int) -> RegressorConfig:
        return RegressorConfig(**{"feature_dim": feature_dim, **self.regressor})


def saved_regressor_config(saved: dict, feature_dim: int) -> RegressorConfig:
    """The architecture recorded in a checkpoint's config. Runs record it in full; runs from
    before ``code_form`` existed recorded only overrides and used token codes."""
    return RegressorConfig.from_dict({"feature_dim": feature_dim, **saved})


class PoolForward(nn.Module):
    """Runs the regressor on several (features, code) pairs in one forward call, so that
    one DDP forward/backward covers all scenes of an iteration."""

    def __init__(self, regressor: SceneRegressor) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, features: list[torch.Tensor], codes: list[torch.Tensor]):
        return [self.regressor(f, c) for f, c in zip(features, codes, strict=True)]


def laplace_nll_3d(error_m: torch.Tensor, log_b_m: torch.Tensor) -> torch.Tensor:
    """3-D radial Laplace NLL ``e / b + 3 log b`` (error and scale in metres)."""
    return error_m * torch.exp(-log_b_m) + 3.0 * log_b_m


def query_loss(coords: torch.Tensor, log_b_px: torch.Tensor, batch: PatchBatch,
               cfg: LossConfig) -> tuple[torch.Tensor, dict]:
    """Per-patch query loss (see module docstring) and statistics."""
    cam = to_camera(coords, batch.world_to_cam)
    err_px = reprojection_error(cam, batch.K, batch.pixels)
    valid_px = (cam[:, 2] > cfg.min_depth) & (err_px < cfg.max_error)
    repro = torch.where(valid_px, err_px * torch.exp(-log_b_px) + 2.0 * log_b_px,
                        torch.linalg.vector_norm(cam - _ray_point(batch, cfg.depth_target), dim=1))
    has_depth = batch.target_valid if batch.target_valid is not None else torch.zeros_like(valid_px)
    target_cam = to_camera(batch.target, batch.world_to_cam)
    focal = 0.5 * (batch.K[:, 0, 0] + batch.K[:, 1, 1])
    log_b_m = log_b_px + torch.log(target_cam[:, 2].clamp(min=1e-3)) - torch.log(focal)
    err_m = torch.linalg.vector_norm(coords - batch.target, dim=1)
    per_patch = torch.where(has_depth, laplace_nll_3d(err_m, log_b_m), repro)
    with torch.no_grad():
        stats = {"q_in10": float(((err_px < 10) & valid_px).float().mean()),
                 "q_median_px": float(err_px.median())}
        if bool(has_depth.any()):
            stats["q_median_cm"] = float(err_m[has_depth].median() * 100)
    return per_patch, stats


def _ray_point(batch: PatchBatch, depth: float) -> torch.Tensor:
    K = batch.K
    x = (batch.pixels[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (batch.pixels[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], 1) * depth


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr_final_fraction`` of ``lr`` at ``steps``."""
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    t = (step - cfg.lr_warmup_steps) / max(1, cfg.steps - cfg.lr_warmup_steps)
    t = min(max(t, 0.0), 1.0)
    final = cfg.lr * cfg.lr_final_fraction
    return final + 0.5 * (cfg.lr - final) * (1 + math.cos(math.pi * t))


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def record_rank_identities(out: Path, step: int, identity: str) -> None:
    """Write ``out/ranks.json``: every rank's weight hash at ``step`` (identical under
    correct DDP). Under torchrun every rank calls this (it gathers); rank 0 writes."""
    rank, world = dist_rank_world()
    idents = [identity]
    if world > 1:
        idents = [None] * world
        dist.all_gather_object(idents, identity)
    if rank == 0:
        atomic_write_text(Path(out) / "ranks.json", json.dumps({"step": step, "weights": idents}) + "\n")



def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """An optimizer's state as safetensors-ready tensors (``opt.<param index>.<name>``) and
    its JSON-ready ``param_groups`` (for a checkpoint's metadata)."""
    state = optimizer.state_dict()
    tensors = {f"opt.{idx}.{k}": torch.as_tensor(v).clone()
               for idx, st in state["state"].items() for k, v in st.items()}
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   param_groups: list) -> None:
    """Restore what :func:`optimizer_tensors` saved (other keys of ``tensors`` are ignored)."""
    state: dict = {"state": {}, "param_groups": param_groups}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state["state"].setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict(state)

def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> tuple[int, int]:
    """Join the process group when launched by torchrun: ``backend`` (default gloo on CPU,
    nccl on GPU), collectives timing out after ``timeout`` (default: torch's)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout else {}))
    return dist_rank_world()


def _warm_start(config: PretrainConfig, encoder: str) -> SceneRegressor:
    """The regressor of ``config.init`` as the starting point of a run. Its architecture
    wins (the trainer then records it in ``config.regressor``); explicit overrides that
    contradict it, or another encoder, are an error. The one exception is ``code_form``,
    which changes how codes are read but no weight: a "tokens" model can continue as a
    "keys_values" one."""
    from aceg.model.map_file import load_regressor

    loaded = load_regressor(config.init)
    if not isinstance(loaded.model, SceneRegressor):
        raise file_error(config.init, "an anchor regressor: aceg pretrain trains the map-code "
                                      "transformer (start from transformer-xfeat.safetensors), "
                                      "aceg pretrain-anchors the anchor model")
    if loaded.encoder != encoder:
        raise file_error(config.init, f"regressor made for encoder {loaded.encoder!r}, this run "
                                      f"uses {encoder!r}")
    arch = loaded.model.config.to_dict()
    clash = {k: v for k, v in config.regressor.items() if k != "code_form" and arch.get(k) != v}
    if clash:
        raise file_error(config.init, f"regressor has {', '.join(f'{k}={arch.get(k)!r}' for k in clash)}, "
                                      f"--regressor-config asks for {clash}: drop the overrides "
                                      "or start from random weights")
    return loaded.model.with_code_form(config.regressor.get("code_form", loaded.model.config.code_form))


def export_regressor(checkpoint: str | Path, out: str | Path) -> dict:
    """Write the transformer of a pre-training checkpoint (of a finished run, or a snapshot of
    one still running) as a regressor file for ``aceg map --regressor``; returns the
    checkpoint's metadata (step, config)."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise file_error(path, "pre-training checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["aceg_pretrain"])
            state = {k[6:]: fh.get_tensor(k) for k in fh.keys() if k.startswith("model.")}
    except Exception as exc:
        raise file_error(path, f"cannot read checkpoint ({exc.__class__.__name__})") from None
    cfg = PretrainConfig(**meta["config"])
    encoder = get_encoder(cfg.encoder)
    model = SceneRegressor(saved_regressor_config(cfg.regressor, encoder.feature_dim))
    model.load_state_dict(state)
    save_regressor(out, model, cfg.encoder,
                   extra={"pretraining": {"steps": int(meta["step"]), "config": meta["config"],
                                          "scenes": len(meta["scenes"])}})
    return meta


class Pretrainer:
    """Owns the model, optimizer, pool and data of one rank (see module docstring)."""

    def __init__(self, data: list[str | Path], out_dir: str | Path, config: PretrainConfig,
                 progress: bool = True) -> None:
        self.cfg = config
        self.out = Path(out_dir)
        self.rank, self.world = dist_rank_world()
        self.progress = progress and self.rank == 0
        self.loss_cfg = LossConfig()
        roots = find_scene_roots(list(data))
        self.all_scenes = [str(r) for r in roots]
        mine = roots[self.rank :: self.world]
        if not mine:
            raise AcegError(f"{len(roots)} scene(s) for {self.world} processes: each needs at least one")
        encoder = get_encoder(config.encoder)
        self.stride = encoder.stride
        cache = self.out / "features"
        self.scenes: list[SceneFeatures] = [
            cached_scene_features(r, cache, encoder, config.short_side)
            for r in tqdm(mine, desc="encoding scenes", disable=not self.progress)
        ]
        if config.pool_depth == "triangulated" and config.depth_fraction > 0:
            for r, sf in zip(tqdm(mine, desc="triangulating scenes", disable=not self.progress),
                             self.scenes, strict=True):
                cached_triangulated_targets(r, cache, sf, encoder.name, config.short_side)
        if config.init:
            self.model = _warm_start(config, encoder.name)
        else:
            self.model = random_regressor(config.regressor_config(encoder.feature_dim), config.seed)
        config.regressor = self.model.config.to_dict()  # checkpoints record the whole architecture
        self.model.train()
        trained = self.model.forward_parameters()
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        self.forward = PoolForward(self.model)
        if self.world > 1:
            self.forward = nn.parallel.DistributedDataParallel(self.forward)
        self.optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
        rc = self.model.config
        self.pool = CodePool.empty(config.pool_size, rc.code_shape)
        self.code_lr_peak = config.code_lr * CODE_LR_SCALE[rc.code_form]
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + self.rank)
        self.step = 0
        self.log_rows: list[dict] = []

    # -- pool ---------------------------------------------------------------------------------
    def _refill(self, slot: int, first: bool) -> None:
        g = self.generator
        scene = int(torch.randint(len(self.scenes), (1,), generator=g))
        if self.cfg.code_init == "anchored":
            patches = sample_patches(self.scenes[scene].splits[MAPPING_SPLIT],
                                     self.model.config.code_tokens, g, self.stride)
            code = self.model.anchored_code(patches.features, g)
        else:
            code = self.model.init_code(g)
        life = self.cfg.code_lifetime
        if first:  # stagger the first generation so codes do not all expire together
            life = max(self.cfg.code_warmup + 1, life * (slot + 1) // self.cfg.pool_size)
        use_depth = bool(torch.rand((), generator=g) < self.cfg.depth_fraction)
        self.pool.reset(slot, scene, code, life, use_depth)

    def _fill_pool(self) -> None:
        for s in range(self.pool.size):
            self._refill(s, first=True)

    # -- one step -----------------------------------------------------------------------------
    def _choose_slots(self) -> list[int]:
        k = min(self.cfg.scenes_per_step, self.pool.size)
        return [int(s) for s in torch.randperm(self.pool.size, generator=self.generator)[:k]]

    def train_step(self) -> dict:
        cfg, g = self.cfg, self.generator
        for slot in self.pool.expired():
            self._refill(slot, first=False)
        slots = self._choose_slots()
        per_scene = max(1, cfg.batch_patches // len(slots))
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        # 1. mapping iteration
        triangulated = cfg.pool_depth == "triangulated"
        batches = [sample_patches(self.scenes[int(self.pool.scene[s])].splits[MAPPING_SPLIT],
                                  per_scene, g, self.stride,
                                  triangulated=triangulated and bool(self.pool.use_depth[s]))
                   for s in slots]
        codes = [self.pool.codes[s].clone().requires_grad_(True) for s in slots]
        update_regressor = self.step % cfg.regressor_every == 0
        net = self.forward if update_regressor else self._plain_forward
        outputs = net([b.features for b in batches], codes)
        losses, stats = [], {}
        for (coords, log_b), batch, s in zip(outputs, batches, slots, strict=True):
            out = batch_loss(lambda _f, c=coords, lb=log_b: (c, lb), batch, kind="nll",
                             cfg=self.loss_cfg, use_depth=bool(self.pool.use_depth[s]))
            losses.append(out.loss)
            for k, v in out.stats.items():
                stats[f"m_{k}"] = stats.get(f"m_{k}", 0.0) + v / len(slots)
        mapping_loss = torch.stack(losses).mean()
        if update_regressor:
            self.optimizer.zero_grad(set_to_none=True)
            mapping_loss.backward()
            grads = [c.grad for c in codes]
            self.optimizer.step()
        else:
            grads = torch.autograd.grad(mapping_loss, codes)
        for s, grad in zip(slots, grads, strict=True):
            # scale back: each scene's code sees its own loss, not the mean over scenes
            self.pool.adam_step(s, grad * len(slots), self._code_lr(s))

        # 2. query iteration (codes frozen); with query_mapping_share > 0, part of each
        # scene's patches come from its mapping split (mapping loss), so the transformer
        # learns to generalise without undoing the fit its codes have reached
        n_map = int(round(per_scene * cfg.query_mapping_share))
        q_batches, m_batches = [], []
        for s in slots:
            sf = self.scenes[int(self.pool.scene[s])]
            names = sf.query_splits
            name = names[int(torch.randint(len(names), (1,), generator=g))]
            q_batches.append(sample_patches(sf.splits[name], per_scene - n_map, g, self.stride))
            # scored with the mapping loss, they fit the same depth as the mapping iteration;
            # scored in 3-D ("3d"), the rendered depth is the ground truth
            fit_tri = triangulated and cfg.query_mapping_loss == "mapping" and bool(self.pool.use_depth[s])
            m_batches.append(sample_patches(sf.splits[MAPPING_SPLIT], n_map, g, self.stride,
                                            triangulated=fit_tri) if n_map else None)
        q_codes = [self.pool.codes[s].detach() for s in slots]
        weights = [float(self.pool.steps[s] >= cfg.code_warmup) for s in slots]
        if self._warm_codes_anywhere(sum(weights)):
            # Codes still in warm-up take part with weight 0: they get no patches (so cost
            # nothing), but still pass through the model, so this rank's DDP backward covers
            # every parameter (with zero gradient) even when all its own codes are young.
            feats = [torch.cat([q.features] + ([m.features] if m is not None else [])) if w
                     else q.features[:0] for q, m, w in zip(q_batches, m_batches, weights, strict=True)]
            outputs = self.forward(feats, q_codes)
            q_losses = []
            for (coords, log_b), batch, mbatch, s, w in zip(outputs, q_batches, m_batches, slots,
                                                            weights, strict=True):
                if not w:
                    q_losses.append(coords.sum() + log_b.sum())  # empty: 0, attached to the graph
                    continue
                nq = len(batch.features)
                per_patch, q_stats = query_loss(coords[:nq], log_b[:nq], batch, self.loss_cfg)
                loss = per_patch.mean()
                if mbatch is not None:
                    if cfg.query_mapping_loss == "3d":
                        m_loss = query_loss(coords[nq:], log_b[nq:], mbatch, self.loss_cfg)[0].mean()
                    else:
                        m_loss = batch_loss(lambda _f, c=coords[nq:], lb=log_b[nq:]: (c, lb), mbatch,
                                            kind="nll", cfg=self.loss_cfg,
                                            use_depth=bool(self.pool.use_depth[s])).loss
                    share = cfg.query_mapping_share
                    loss = (1.0 - share) * loss + share * m_loss
                q_losses.append(loss)
                for k, v in q_stats.items():
                    stats[k] = stats.get(k, 0.0) + v / sum(weights)
            query_total = torch.stack(q_losses).sum() / max(1.0, sum(weights))
            self.optimizer.zero_grad(set_to_none=True)
            query_total.backward()
            self.optimizer.step()
        else:  # no rank has a code out of warm-up: no query iteration (an AdamW step on zero
            # gradients would still move the weights by momentum and decay)
            query_total = torch.zeros(())
        self.step += 1
        stats.update({"step": self.step, "lr": lr, "mapping_loss": float(mapping_loss.detach()),
                      "query_loss": float(query_total.detach()), "query_scenes": sum(weights)})
        return stats

    def _warm_codes_anywhere(self, mine: float) -> bool:
        """Whether any rank has a code out of warm-up in this step (all ranks agree)."""
        if self.world == 1:
            return mine > 0
        total = torch.tensor([mine], device=self.model.head.weight.device)
        dist.all_reduce(total)
        return float(total) > 0

    def _code_lr(self, slot: int) -> float:
        """The code's rate at its age: mapping's one-cycle schedule stretched over the code's
        lifetime (so pool codes are optimised the way ``aceg map`` optimises a map), or constant."""
        if self.cfg.code_lr_schedule == "constant":
            return self.code_lr_peak
        return one_cycle_lr(int(self.pool.steps[slot]), int(self.pool.lifetime[slot]), self.code_lr_peak)

    def _plain_forward(self, features, codes):
        return [self.model(f, c) for f, c in zip(features, codes, strict=True)]

    # -- run, checkpoints, logs -------------------------------------------------------------
    def run(self, steps: int | None = None, stop_after: int | None = None) -> None:
        """Train up to ``steps`` (default: the config's); ``stop_after`` ends early after
        that many steps of this call (for tests of resumption)."""
        total = steps or self.cfg.steps
        if self.step == 0 and int(self.pool.generation.sum()) == 0:
            self._fill_pool()
        bar = tqdm(total=total, initial=self.step, desc="pre-training", disable=not self.progress,
                   dynamic_ncols=True)
        done_here = 0
        start = time.perf_counter()
        while self.step < total and (stop_after is None or done_here < stop_after):
            stats = self.train_step()
            done_here += 1
            stats["seconds"] = time.perf_counter() - start
            if self.step % self.cfg.log_every == 0 or self.step == total:
                self.log_rows.append(stats)
                bar.set_postfix(q_loss=f"{stats['query_loss']:.2f}",
                                q_in10=f"{stats.get('q_in10', 0):.2f}",
                                m_in10=f"{stats.get('m_in10', 0):.2f}")
            bar.update(1)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
        bar.close()
        record_rank_identities(self.out, self.step, self.model.identity())
        if self.step >= total:
            self.save_checkpoint()
            if self.rank == 0:
                save_regressor(self.out / FINAL_NAME, self.model, self.cfg.encoder,
                               extra={"pretraining": {"steps": self.step,
                                                      "config": asdict(self.cfg),
                                                      "scenes": len(self.all_scenes)}})

    def _pool_path(self, rank: int, step: int) -> Path:
        return self.out / f"pool-rank{rank}-step{step}.safetensors"

    def save_checkpoint(self) -> None:
        """Pool files (one per rank) first, then the main checkpoint naming their step."""
        self.out.mkdir(parents=True, exist_ok=True)
        pool = {f"pool.{k}": v for k, v in self.pool.state().items()}
        pool["generator"] = self.generator.get_state()
        with atomic_path(self._pool_path(self.rank, self.step)) as tmp:
            save_file(pool, str(tmp), metadata={"step": str(self.step)})
        if self.world > 1:
            dist.barrier()
        if self.rank == 0:
            tensors = {f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()}
            opt_tensors, param_groups = optimizer_tensors(self.optimizer)
            tensors.update(opt_tensors)
            meta = {
                "step": self.step, "world_size": self.world, "config": asdict(self.cfg),
                "param_groups": param_groups, "scenes": self.all_scenes,
                "python_random": repr(random.getstate()), "numpy_random": "unused",
            }
            with atomic_path(self.out / CHECKPOINT_NAME) as tmp:
                save_file(tensors, str(tmp), metadata={"aceg_pretrain": json.dumps(meta)})
            self._write_log()
        if self.world > 1:
            dist.barrier()
        for old in self.out.glob(f"pool-rank{self.rank}-step*.safetensors"):
            if old != self._pool_path(self.rank, self.step):
                old.unlink(missing_ok=True)

    def _write_log(self) -> None:
        rows = self.log_rows
        if not rows:
            return
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
        lines = [",".join(keys)]
        for r in rows:
            lines.append(",".join(f"{r[k]:.6g}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                                  for k in keys))
        atomic_write_text(self.out / LOG_NAME, "\n".join(lines) + "\n")

    def load_checkpoint(self) -> bool:
        """Resume from ``out_dir`` if it holds a checkpoint; returns whether it did."""
        path = self.out / CHECKPOINT_NAME
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["aceg_pretrain"])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:
            raise file_error(path, f"cannot read checkpoint ({exc.__class__.__name__}: {exc})") from None
        if meta["world_size"] != self.world:
            raise file_error(path, f"checkpoint made with {meta['world_size']} process(es); "
                                   f"resume with the same number (now {self.world})")
        saved_cfg = dict(meta["config"])
        mine = asdict(self.cfg)
        # runs from before these settings existed behaved as these values
        saved_cfg.setdefault("code_init", "random")
        saved_cfg.setdefault("query_mapping_share", 0.0)
        saved_cfg.setdefault("query_mapping_loss", "mapping")
        saved_cfg.setdefault("pool_depth", "rendered")
        for key in ("batch_patches", "scenes_per_step", "pool_size", "encoder", "seed", "code_init",
                    "query_mapping_share", "query_mapping_loss", "pool_depth"):
            if saved_cfg.get(key) != mine.get(key):
                raise file_error(path, f"checkpoint has {key}={saved_cfg.get(key)!r}, "
                                       f"this run {mine.get(key)!r}: cannot resume")
        arch = self.model.config
        saved_arch = saved_regressor_config(saved_cfg.get("regressor", {}), arch.feature_dim)
        if saved_arch != arch:
            diff = {k: v for k, v in saved_arch.to_dict().items() if arch.to_dict().get(k) != v}
            raise file_error(path, f"checkpoint's regressor has {diff}, this run's "
                                   f"{ {k: arch.to_dict()[k] for k in diff} }: cannot resume "
                                   "(give the same --regressor-config)")
        if meta["scenes"] != self.all_scenes:
            raise file_error(path, "checkpoint was made with another list of scenes")
        step = int(meta["step"])
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer(self.optimizer, tensors, meta["param_groups"])
        pool_path = self._pool_path(self.rank, step)
        if not pool_path.is_file():
            raise file_error(pool_path, f"pool state of step {step} missing: cannot resume")
        with safe_open(str(pool_path), framework="pt") as fh:
            pool = {k: fh.get_tensor(k) for k in fh.keys()}
        self.pool = CodePool.from_state({k[5:]: v for k, v in pool.items() if k.startswith("pool.")})
        self.generator.set_state(pool["generator"])
        self.step = step
        log = self.out / LOG_NAME
        if log.is_file():
            with open(log) as fh:
                self.log_rows = [
                    {k: _parse(v) for k, v in row.items()}
                    for row in csv.DictReader(fh) if int(float(row["step"])) <= step
                ]
        return True


def _parse(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def set_determinism(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
