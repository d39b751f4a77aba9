"""Checkpoints of a transformer pre-training run (:mod:`aceg.pretraining.trainer`), and
their export as a regressor file.

A run's output folder holds ``checkpoint.safetensors`` (rank 0: the transformer
``model.*``, the AdamW state of :func:`aceg.pretraining.optim_state.optimizer_tensors`, and
in the metadata the step, the world size, the settings, the scenes and the optimizer's
``param_groups``), one ``pool-rank<r>-step<s>.safetensors`` per rank (its code pool and
random generator at that step) and ``log.csv``. Pool files are written first, the main
checkpoint naming their step last, so an interrupted save leaves the previous consistent
state; a resumed run continues exactly.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict
from pathlib import Path

import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.errors import file_error
from aceg.io import atomic_path, atomic_write_text
from aceg.model.encoder import get_encoder
from aceg.model.map_file import save_regressor
from aceg.model.regressor import SceneRegressor
from aceg.pretraining.code_pool import CodePool
from aceg.pretraining.optim_state import load_optimizer, optimizer_tensors
from aceg.pretraining.pretrain_config import (
    CHECKPOINT_NAME,
    LOG_NAME,
    PretrainConfig,
    saved_regressor_config,
)


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



class CheckpointedRun:
    """Saving and resuming of :class:`aceg.pretraining.trainer.Pretrainer` (module
    docstring). Reads and sets the trainer's ``cfg``, ``out``, ``rank``, ``world``,
    ``model``, ``optimizer``, ``pool``, ``generator``, ``step``, ``all_scenes`` and
    ``log_rows``."""

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
