"""Optimizer and learning-rate schedule of mapping: AdamW with a one-cycle schedule
(linear warm-up from ``lr_max / 25`` to ``lr_max`` over ``warmup`` of the steps, then
cosine annealing to ``lr_max / 25e4``), as ACE uses (torch's ``OneCycleLR``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def one_cycle_adamw(
    params: Iterable[torch.nn.Parameter] | Iterable[torch.Tensor],
    lr_max: float,
    total_steps: int,
    weight_decay: float = 0.0,
    warmup: float = 0.25,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over ``params`` and its one-cycle scheduler (step it once per iteration)."""
    opt = torch.optim.AdamW(list(params), lr=lr_max, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr_max, total_steps=max(total_steps, 2), pct_start=warmup,
        cycle_momentum=False,
    )
    return opt, sched
