"""Optimizer and learning-rate schedule of mapping: AdamW with a one-cycle schedule
(cosine warm-up from ``lr_max / 25`` to ``lr_max`` over ``warmup`` of the steps, then
cosine annealing to ``lr_max / 25e4``), as ACE uses (torch's ``OneCycleLR``).
:func:`one_cycle_lr` gives the same rate as a plain function of the step, for optimisers
that are not ``torch.optim`` ones (the map codes of pre-training)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

#: OneCycleLR's defaults: start at lr_max / DIV, end at lr_max / (DIV * FINAL_DIV).
DIV, FINAL_DIV = 25.0, 1e4


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
        cycle_momentum=False, div_factor=DIV, final_div_factor=FINAL_DIV,
    )
    return opt, sched


def one_cycle_lr(step: int, total_steps: int, lr_max: float, warmup: float = 0.25) -> float:
    """Learning rate at ``step`` (0-based) of :func:`one_cycle_adamw`'s schedule; steps past
    the end keep the final rate."""
    total = max(total_steps, 2)
    start, end = lr_max / DIV, lr_max / (DIV * FINAL_DIV)
    peak = float(warmup * total) - 1
    last = total - 1
    step = min(step, last)
    if step <= peak:
        lo, hi, t = start, lr_max, step / peak if peak > 0 else 1.0
    else:
        lo, hi, t = lr_max, end, (step - peak) / (last - peak)
    return hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2
