"""An optimizer's state in a safetensors checkpoint, so that a resumed pre-training run
continues exactly: the per-parameter tensors (Adam moments, step counts) as tensors, the
``param_groups`` (rates, betas, ...) as JSON for the checkpoint's metadata."""

from __future__ import annotations

import torch


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
