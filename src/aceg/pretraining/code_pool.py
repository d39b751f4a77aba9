"""The active pool of scenes in pre-training, each with its own map code.

A pool has P slots. Slot s holds a scene index, its map code (of the regressor's
``code_shape``: N x D tokens, or per-block keys and values), Adam moments for that
code, the number of mapping iterations the code has had (its *age*) and its *lifetime*:
when the age reaches the lifetime the slot is refilled with a (possibly other) scene and
a fresh code, so the transformer keeps learning to work with freshly optimised codes, as
at mapping time. Codes are optimised with Adam (bias-corrected per slot, since slots are
reset at different times); everything is plain tensors so the state checkpoints exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CodePool:
    codes: torch.Tensor  # (P, *code_shape) float32
    exp_avg: torch.Tensor  # (P, *code_shape)
    exp_avg_sq: torch.Tensor  # (P, *code_shape)
    steps: torch.Tensor  # (P,) int64: Adam steps of each slot's code
    scene: torch.Tensor  # (P,) int64: index of the slot's scene in the data set
    lifetime: torch.Tensor  # (P,) int64: mapping iterations before the slot is refilled
    use_depth: torch.Tensor  # (P,) bool: whether mapping iterations of this slot use depth
    generation: torch.Tensor  # (P,) int64: how many codes this slot has had

    @classmethod
    def empty(cls, slots: int, code_shape: tuple[int, ...]) -> CodePool:
        z = torch.zeros(slots, *code_shape)
        zi = torch.zeros(slots, dtype=torch.int64)
        return cls(z.clone(), z.clone(), z.clone(), zi.clone(), zi.clone(), zi.clone(),
                   torch.zeros(slots, dtype=torch.bool), zi.clone())

    @property
    def size(self) -> int:
        return self.codes.shape[0]

    def reset(self, slot: int, scene: int, code: torch.Tensor, lifetime: int, use_depth: bool) -> None:
        self.codes[slot] = code
        self.exp_avg[slot].zero_()
        self.exp_avg_sq[slot].zero_()
        self.steps[slot] = 0
        self.scene[slot] = scene
        self.lifetime[slot] = lifetime
        self.use_depth[slot] = use_depth
        self.generation[slot] += 1

    def expired(self) -> list[int]:
        return [int(s) for s in torch.nonzero(self.steps >= self.lifetime).flatten()]

    def adam_step(self, slot: int, grad: torch.Tensor, lr: float, betas=(0.9, 0.999),
                  eps: float = 1e-8) -> None:
        """One Adam update of the code in ``slot`` with gradient ``grad`` (code shape)."""
        b1, b2 = betas
        self.steps[slot] += 1
        t = int(self.steps[slot])
        m = self.exp_avg[slot].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.exp_avg_sq[slot].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        self.codes[slot] -= lr * m_hat / (v_hat.sqrt() + eps)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).clone() for k in self.__dataclass_fields__}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> CodePool:
        return cls(**{k: state[k].clone() for k in cls.__dataclass_fields__})
