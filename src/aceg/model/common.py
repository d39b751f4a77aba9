"""What the scene-coordinate models share: the range of the predicted log-uncertainty and
the content hash that names a model's weights (its identity, recorded in every map)."""

from __future__ import annotations

import hashlib

import torch

#: Clamp of the predicted log-uncertainty (log pixels): b in [exp(-2), exp(6)] ~ [0.14, 400] px.
#: The anchor model maps its margin-based ranking onto the same range.
LOG_UNC_MIN = -2.0
LOG_UNC_MAX = 6.0


def weights_hash(state: dict[str, torch.Tensor], config: dict | None = None) -> str:
    """sha256 over sorted parameter names, shapes, dtypes and bytes (+ config), 16 hex digits."""
    h = hashlib.sha256()
    if config is not None:
        h.update(repr(sorted(config.items())).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
