"""Process-group helpers shared by the pre-training commands (``aceg pretrain``,
``aceg pretrain-anchors``) when they run under ``torchrun``.

Outside torchrun every helper behaves as a single process of rank 0: no process group is
created, and collectives are skipped.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from aceg.io import atomic_write_text


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None, timeout: timedelta | None = None) -> tuple[int, int]:
    """Join the process group when launched by torchrun: ``backend`` (default gloo on CPU,
    nccl on GPU), collectives timing out after ``timeout`` (default: torch's)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout else {}))
    return dist_rank_world()


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
