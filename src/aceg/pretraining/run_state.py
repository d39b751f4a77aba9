"""Exact-resume checkpoints and CSV logs of the anchor model's pre-training loop
(:mod:`aceg.pretraining.anchor_embedding`, which also runs under torchrun).

A checkpoint is one safetensors file: the trained module's state (``model.*``), the
AdamW state (:func:`aceg.pretraining.optim_state.optimizer_tensors`), the random generator's
state (``generator``; under torchrun one per rank, ``generator.rank<r>`` for r > 0), and in
the metadata (under a key naming the loop) the step, the evaluation rows so far, the
scheduler state, the run's settings, its list of scenes and its number of processes. A
run resumes only with the same settings (except the ones in ``free``), the same scenes and
the same number of processes. Under torchrun rank 0 writes the checkpoint and the log.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.errors import file_error
from aceg.io import atomic_path
from aceg.pretraining.distributed import dist_rank_world
from aceg.pretraining.optim_state import load_optimizer, optimizer_tensors

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.csv"


def _generator_key(rank: int) -> str:
    return "generator" if rank == 0 else f"generator.rank{rank}"


def save_run_state(path: Path, key: str, model: nn.Module, opt: torch.optim.Optimizer, sched,
                   gen: torch.Generator | list[torch.Tensor], step: int, rows: list[dict],
                   settings: dict, scenes: list[str]) -> None:
    """Write the checkpoint described in the module docstring to ``path`` atomically;
    ``gen``: the generator, or every rank's generator state in rank order."""
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    opt_tensors, param_groups = optimizer_tensors(opt)
    tensors.update(opt_tensors)
    states = [gen.get_state()] if isinstance(gen, torch.Generator) else gen
    tensors.update({_generator_key(r): state for r, state in enumerate(states)})
    meta = {"step": step, "rows": rows, "param_groups": param_groups,
            "scheduler": sched.state_dict(), "config": settings, "scenes": scenes,
            "world_size": len(states)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={key: json.dumps(meta)})


def checkpoint_world_size(path: Path, key: str) -> int | None:
    """Processes the checkpoint at ``path`` was made with (None: no readable checkpoint of
    loop ``key`` there), to refuse a resume early, before any long preparation."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return int(json.loads((fh.metadata() or {})[key]).get("world_size", 1))
    except Exception:
        return None


def load_run_state(path: Path, key: str, model: nn.Module, opt: torch.optim.Optimizer, sched,
                   gen: torch.Generator, settings: dict, scenes: list[str],
                   free: tuple[str, ...] = ("steps", "eval_every"), rank: int = 0,
                   world: int = 1) -> tuple[int, list[dict]]:
    """Restore a :func:`save_run_state` checkpoint in place (``gen``: rank ``rank``'s of
    ``world`` processes); returns (step, rows). Clear errors naming the file for an
    unreadable checkpoint, other settings, other scenes or another number of processes."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[key])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise file_error(path, f"cannot read checkpoint ({exc.__class__.__name__}: {exc})") from None
    saved = meta["config"]
    for name, value in settings.items():
        if name not in free and saved.get(name) != value:
            raise file_error(path, f"checkpoint has {name}={saved.get(name)!r}, this run {value!r}: "
                                   "cannot resume")
    if meta["scenes"] != scenes:
        raise file_error(path, "checkpoint was made with another list of scenes: cannot resume")
    if meta.get("world_size", 1) != world:
        raise file_error(path, f"checkpoint made with {meta.get('world_size', 1)} process(es), this "
                               f"run has {world}: cannot resume")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer(opt, tensors, meta["param_groups"])
    sched.load_state_dict(meta["scheduler"])
    gen.set_state(tensors[_generator_key(rank)])
    return int(meta["step"]), meta["rows"]


def write_log(path: Path, rows: list[dict]) -> None:
    """All ``rows`` as a CSV file (columns: every key seen, in first-seen order), atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


@dataclass
class Run:
    """A training loop's optimiser (AdamW), cosine schedule (down to lr / 10; advance it with
    :meth:`step_schedule`), generator,
    evaluation rows and, with an output folder, its checkpoint and log; see :func:`start_run`."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    key: str
    settings: dict
    scenes: list[str]
    out_dir: Path | None
    first: int = 1
    rows: list[dict] = field(default_factory=list)
    t0: float = 0.0
    rank: int = 0
    world: int = 1

    def seconds(self) -> float:
        """Training time so far, across resumptions."""
        return round(time.perf_counter() - self.t0, 1)

    def step_schedule(self) -> None:
        """Advance the cosine schedule; past its length (a resumed run given more steps than
        it was started with) the rate stays at its floor, lr / 10."""
        if self.sched.last_epoch < self.sched.T_max:
            self.sched.step()

    def record(self, model: nn.Module, step: int, row: dict) -> None:
        """Append ``row``; with an output folder, rewrite the log and the checkpoint (rank 0;
        under torchrun every rank must call this, as it gathers the ranks' generators)."""
        self.rows.append(row)
        gens: torch.Generator | list[torch.Tensor] = self.gen
        if self.world > 1:
            gens = [None] * self.world
            dist.all_gather_object(gens, self.gen.get_state())
        if self.out_dir is not None and self.rank == 0:
            write_log(self.out_dir / LOG_NAME, self.rows)
            save_run_state(self.out_dir / CHECKPOINT_NAME, self.key, model, self.opt, self.sched,
                           gens, step, self.rows, self.settings, self.scenes)


def start_run(model: nn.Module, settings: dict, out_dir: Path | None, key: str, scenes: list[str],
              seed: int) -> Run:
    """Set up the optimisation of ``model`` with ``settings`` (which hold ``lr``,
    ``weight_decay`` and ``steps``); resume from ``out_dir``'s checkpoint when there is one
    (then ``first`` is the step after it and ``rows`` its evaluations). Under torchrun, rank
    r's generator is seeded with ``seed + 1000 r`` (rank 0's as a single process's)."""
    rank, world = dist_rank_world()
    gen = torch.Generator().manual_seed(seed + 1000 * rank)
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings["steps"], eta_min=settings["lr"] / 10)
    run = Run(opt, sched, gen, key, settings, list(scenes), None if out_dir is None else Path(out_dir),
              rank=rank, world=world)
    if run.out_dir is not None:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = run.out_dir / CHECKPOINT_NAME
        if checkpoint.is_file():
            step, run.rows = load_run_state(checkpoint, key, model, opt, sched, gen, settings, run.scenes,
                                            rank=rank, world=world)
            run.first = step + 1
    run.t0 = time.perf_counter() - (run.rows[-1]["seconds"] if run.rows else 0.0)
    return run
