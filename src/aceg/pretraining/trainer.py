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

import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from aceg.errors import AcegError, file_error
from aceg.mapping.losses import LossConfig, batch_loss
from aceg.mapping.schedule import one_cycle_lr
from aceg.model.encoder import get_encoder
from aceg.model.map_file import save_regressor
from aceg.model.regressor import CODE_LR_SCALE, SceneRegressor, random_regressor
from aceg.pretraining.code_pool import CodePool
from aceg.pretraining.distributed import dist_rank_world, record_rank_identities
from aceg.pretraining.feature_store import (
    MAPPING_SPLIT,
    SceneFeatures,
    cached_scene_features,
    cached_triangulated_targets,
    find_scene_roots,
    sample_patches,
)
from aceg.pretraining.pretrain_checkpoint import CheckpointedRun
from aceg.pretraining.pretrain_config import FINAL_NAME, PretrainConfig, learning_rate
from aceg.pretraining.query_loss import query_loss


class PoolForward(nn.Module):
    """Runs the regressor on several (features, code) pairs in one forward call, so that
    one DDP forward/backward covers all scenes of an iteration."""

    def __init__(self, regressor: SceneRegressor) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, features: list[torch.Tensor], codes: list[torch.Tensor]):
        return [self.regressor(f, c) for f, c in zip(features, codes, strict=True)]


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


class Pretrainer(CheckpointedRun):
    """Owns the model, optimizer, pool and data of one rank (see module docstring); saving
    and resuming: :class:`aceg.pretraining.pretrain_checkpoint.CheckpointedRun`."""

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
        """One step: refill expired codes, then a mapping and a query iteration over the
        step's scenes (module docstring). Returns the step's statistics."""
        cfg = self.cfg
        for slot in self.pool.expired():
            self._refill(slot, first=False)
        slots = self._choose_slots()
        per_scene = max(1, cfg.batch_patches // len(slots))
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mapping_loss, stats = self._mapping_iteration(slots, per_scene)
        query_total, query_scenes = self._query_iteration(slots, per_scene, stats)
        self.step += 1
        stats.update({"step": self.step, "lr": lr, "mapping_loss": float(mapping_loss.detach()),
                      "query_loss": float(query_total.detach()), "query_scenes": query_scenes})
        return stats

    def _mapping_iteration(self, slots: list[int], per_scene: int) -> tuple[torch.Tensor, dict]:
        """Fit the codes of ``slots`` to ``per_scene`` mapping patches each (and the
        transformer on every ``regressor_every``-th step); returns the mean mapping loss and
        the ``m_*`` statistics."""
        cfg, g = self.cfg, self.generator
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
        return mapping_loss, stats

    def _query_batches(self, slots: list[int], per_scene: int) -> tuple[list, list]:
        """Per slot, a batch of query patches of a random query split, and with
        ``query_mapping_share`` > 0 a batch of mapping patches (else None)."""
        cfg, g = self.cfg, self.generator
        triangulated = cfg.pool_depth == "triangulated"
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
        return q_batches, m_batches

    def _query_iteration(self, slots: list[int], per_scene: int, stats: dict) -> tuple[torch.Tensor, float]:
        """Train the transformer on query patches of the scenes of ``slots``, codes frozen;
        with ``query_mapping_share`` > 0, part of each scene's patches come from its mapping
        split, so the transformer learns to generalise without undoing the fit its codes
        have reached. Adds the query statistics to ``stats``; returns the query loss and
        the number of scenes out of warm-up that took part."""
        cfg = self.cfg
        q_batches, m_batches = self._query_batches(slots, per_scene)
        q_codes = [self.pool.codes[s].detach() for s in slots]
        weights = [float(self.pool.steps[s] >= cfg.code_warmup) for s in slots]
        if not self._warm_codes_anywhere(sum(weights)):
            # no rank has a code out of warm-up: no query iteration (an AdamW step on zero
            # gradients would still move the weights by momentum and decay)
            return torch.zeros(()), sum(weights)
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
        return query_total, sum(weights)

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
