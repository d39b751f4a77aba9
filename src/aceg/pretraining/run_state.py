"""Exact-resume checkpoints and CSV logs of the single-process pre-training loops
(:mod:`aceg.pretraining.anchor_metric`, :mod:`aceg.pretraining.anchor_readout`).

A checkpoint is one safetensors file: the trained module's state (``model.*``), the
AdamW state (:func:`aceg.pretraining.trainer.optimizer_tensors`), the random generator's
state, and in the metadata (under a key naming the loop) the step, the evaluation rows
so far, the scheduler state, the run's settings and its list of scenes. A run resumes
only with the same settings (except the ones in ``free``) and the same scenes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.errors import file_error
from aceg.io import atomic_path
from aceg.pretraining.trainer import load_optimizer, optimizer_tensors

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.csv"


def save_run_state(path: Path, key: str, model: nn.Module, opt: torch.optim.Optimizer, sched,
                   gen: torch.Generator, step: int, rows: list[dict], settings: dict,
                   scenes: list[str]) -> None:
    """Write the checkpoint described in the module docstring to ``path`` atomically."""
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    opt_tensors, param_groups = optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors["generator"] = gen.get_state()
    meta = {"step": step, "rows": rows, "param_groups": param_groups,
            "scheduler": sched.state_dict(), "config": settings, "scenes": scenes}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={key: json.dumps(meta)})


def load_run_state(path: Path, key: str, model: nn.Module, opt: torch.optim.Optimizer, sched,
                   gen: torch.Generator, settings: dict, scenes: list[str],
                   free: tuple[str, ...] = ("steps", "eval_every")) -> tuple[int, list[dict]]:
    """Restore a :func:`save_run_state` checkpoint in place; returns (step, rows). Clear
    errors naming the file for an unreadable checkpoint, other settings or other scenes."""
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
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer(opt, tensors, meta["param_groups"])
    sched.load_state_dict(meta["scheduler"])
    gen.set_state(tensors["generator"])
    return int(meta["step"]), meta["rows"]


def write_log(path: Path, rows: list[dict]) -> None:
    """All ``rows`` as a CSV file (columns: every key seen, in first-seen order), atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
