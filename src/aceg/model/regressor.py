"""Scene-agnostic scene-coordinate regressor of ACE-G: a map-code transformer.

Every patch feature (C channels from the frozen encoder) is projected to width D and
becomes one *query token*. ``depth`` blocks each apply pre-norm cross-attention from the
query tokens to the scene's map code (the only scene-specific parameters) followed by a
pre-norm MLP. There is **no attention between patches**: each patch's output depends only
on its own feature and the code, so patches can be processed in any batch size (and a map
is a small code, not a network).

The map code comes in one of two forms (:data:`CODE_FORMS`, ``RegressorConfig.code_form``):

- ``"tokens"``: N tokens x D; each block projects them (LayerNorm, then one linear layer)
  to its attention keys and values. A token's key and value are then tied to each other
  by frozen weights. The first two pre-trained models used this form.
- ``"keys_values"``: the code holds each block's keys and values directly, shape
  (depth, 2, N, D) (index 0: keys, 1: values). Mapping can then place a key (which patches
  attend to the token) and its value (what they read) independently and make attention as
  sharp as the scene needs. A random fresh code (:meth:`SceneRegressor.init_code`) is the
  projection of random tokens, so the frozen projection layers still set its starting
  statistics; an *anchored* one (:meth:`SceneRegressor.anchored_code`, what mapping and
  pre-training use) puts each token's keys on one of the scene's own patches.

The output head gives, per patch, a homogeneous scene coordinate (see
:mod:`aceg.model.homogeneous`) in metres **relative to the scene centre** (mean mapping
camera position, stored with the map) and a log-uncertainty ``log b`` of the reprojection
error in pixels (Laplace scale ``b``).

The keys and values of the code are computed once per block for a whole batch of
patches, so the cost per patch is that of ``depth`` x (query projection, attention over N
tokens, output projection, MLP). See :class:`RegressorConfig` for the defaults and their
cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from aceg.model.common import LOG_UNC_MAX, LOG_UNC_MIN, weights_hash
from aceg.model.homogeneous import MAX_SCALE, MIN_SCALE, dehomogenize

#: Forms of the map code (see the module docstring).
CODE_FORMS = ("tokens", "keys_values")

#: How a fresh map code starts: "anchored" (:meth:`SceneRegressor.anchored_code`, keys on
#: the scene's own patches; what ``aceg map`` and pre-training use by default) or "random"
#: (:meth:`SceneRegressor.init_code`).
CODE_INITS = ("anchored", "random")

#: Learning rate of a code form's optimisation relative to that of "keys_values" (mapping
#: presets and pre-training state the "keys_values" rate). Token codes pass a LayerNorm, so
#: Adam's fixed-size steps move them much further: they take a tenth of the rate.
CODE_LR_SCALE = {"tokens": 0.1, "keys_values": 1.0}


@dataclass(frozen=True)
class RegressorConfig:
    """Sizes of the map-code transformer.

    Defaults are those of the shipped transformer: 2 blocks at width 128 over a map code of
    1024 tokens in the "keys_values" form (2 x 2 x 1024 x 128 values, 1 MiB in a map file's
    float16). About 0.75 M multiply-adds per patch, most of them in the attention over the
    code (2 x N x D per block); 290k parameters. ``benchmarks/core_speed.py`` measures the
    query time.

    Attributes:
        feature_dim: channels C of the encoder features.
        width: token width D.
        depth: number L of cross-attention blocks.
        heads: attention heads (D must be divisible by it).
        mlp_ratio: hidden width of the MLP as a multiple of D.
        code_tokens: number N of map-code tokens per scene.
        min_scale, max_scale: bounds of the homogeneous scale (as ACE).
        code_form: "tokens" or "keys_values" (module docstring); files written before this
            field existed are "tokens".
    """

    feature_dim: int = 64
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    code_tokens: int = 1024
    min_scale: float = MIN_SCALE
    max_scale: float = MAX_SCALE
    code_form: str = "keys_values"

    def __post_init__(self) -> None:
        if self.code_form not in CODE_FORMS:
            raise ValueError(f"unknown code_form {self.code_form!r}; choose one of {', '.join(CODE_FORMS)}")

    @property
    def code_shape(self) -> tuple[int, ...]:
        """Shape of one map code: (N, D) for "tokens", (depth, 2, N, D) for "keys_values"."""
        if self.code_form == "tokens":
            return (self.code_tokens, self.width)
        return (self.depth, 2, self.code_tokens, self.width)

    def accepts_code(self, shape: tuple[int, ...]) -> bool:
        """Whether a map code of ``shape`` is one this configuration reads."""
        return tuple(shape) == self.code_shape

    def code_description(self) -> str:
        return str(self.code_shape)

    def to_dict(self) -> dict:
        return asdict(self)

    def identity_dict(self) -> dict:
        """The fields hashed into a model's identity. "tokens" models hash as they did before
        ``code_form`` existed, so maps made with them stay valid."""
        d = asdict(self)
        if d["code_form"] == "tokens":
            del d["code_form"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RegressorConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{"code_form": "tokens", **{k: v for k, v in d.items() if k in known}})


class CrossBlock(nn.Module):
    """Pre-norm cross-attention (queries = patches, keys/values = map code) + pre-norm MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(width)
        self.norm_code = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def project_code(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) code tokens -> this block's keys and values, each (N, D)."""
        k, v = self.kv(self.norm_code(tokens)).chunk(2, dim=-1)
        return k, v

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x: (P, D) patch tokens; keys, values: (N, D) from the map code. Returns (P, D)."""
        P, D = x.shape
        h, dh = self.heads, D // self.heads
        # 4-D (batch 1, heads, tokens, dh) so that CPU uses the fused (flash) kernel: with 3-D
        # inputs torch falls back to materialising the (h, P, N) attention matrix, several
        # times slower at the default code size.
        q = self.q(self.norm_q(x)).view(1, P, h, dh).transpose(1, 2)  # (1, h, P, dh)
        k = keys.reshape(1, -1, h, dh).transpose(1, 2)  # (1, h, N, dh)
        v = values.reshape(1, -1, h, dh).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v)  # (1, h, P, dh): patches never see each other
        x = x + self.out(att.transpose(1, 2).reshape(P, D))
        return x + self.mlp(self.norm_mlp(x))


class SceneRegressor(nn.Module):
    """Map-code transformer (see module docstring).

    ``forward(features (P, C), code (N, D)) -> (coords (P, 3), log_unc (P,))`` with coords
    in metres relative to the scene centre and ``log_unc`` the log of the Laplace scale of
    the reprojection error in pixels.
    """

    def __init__(self, config: RegressorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RegressorConfig()
        if config.width % config.heads:
            raise ValueError("width must be divisible by heads")
        self.embed = nn.Sequential(nn.Linear(config.feature_dim, config.width), nn.GELU(),
                                   nn.Linear(config.width, config.width))
        self.blocks = nn.ModuleList(
            CrossBlock(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm_out = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, 5)

    def init_code(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh map code (``config.code_shape``, seeded by ``generator``): small Gaussian
        tokens, for "keys_values" projected by each block to its keys and values."""
        c = self.config
        tokens = torch.randn(c.code_tokens, c.width, generator=generator) * 0.02
        if c.code_form == "tokens":
            return tokens
        with torch.no_grad():
            return torch.stack([torch.stack(b.project_code(tokens)) for b in self.blocks])

    def anchored_code(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh map code whose keys start on the scene's own appearance.

        ``features``: (M, C) encoder features of the scene's mapping patches (any dtype).
        ``code_tokens`` of them are drawn at random (with replacement when M is smaller);
        block ``i``'s key of token ``j`` is then the query vector that block computes for
        patch ``j`` (the patches passed through the blocks before it, over the code as built
        so far): each token's key starts where a real patch of the scene queries, not in a
        random direction. Values are those of :meth:`init_code`. Only for the
        "keys_values" form; "tokens" codes get :meth:`init_code` unchanged.

        Returns a code of ``config.code_shape`` (float32, on the model's device).
        """
        device = self.head.weight.device
        code = self.init_code(generator).to(device)
        if self.config.code_form == "tokens":
            return code
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] != self.config.feature_dim:
            raise ValueError(f"anchored_code needs (M > 0, {self.config.feature_dim}) features, "
                             f"got {tuple(features.shape)}")
        n, m = self.config.code_tokens, features.shape[0]
        if m >= n:
            pick = torch.randperm(m, generator=generator)[:n]
        else:
            pick = torch.randint(m, (n,), generator=generator)
        with torch.no_grad():
            x = self.embed(features[pick.to(features.device)].to(device).float())
            for i, block in enumerate(self.blocks):
                code[i, 0] = block.q(block.norm_q(x))
                x = block(x, code[i, 0], code[i, 1])
        return code

    def with_code_form(self, code_form: str) -> SceneRegressor:
        """A copy with the same weights that reads map codes in ``code_form``."""
        model = SceneRegressor(replace(self.config, code_form=code_form))
        model.load_state_dict(self.state_dict())
        return model.train(self.training)

    def forward_parameters(self) -> list[nn.Parameter]:
        """Parameters the forward pass reads: all but, in the "keys_values" form, the code
        projections (which only shape :meth:`init_code`, so training leaves them as they are)."""
        if self.config.code_form == "tokens":
            return list(self.parameters())
        skip = {id(p) for b in self.blocks for m in (b.norm_code, b.kv) for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def code_keys_values(self, code: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (keys, values) pair, each (N, D), that every block attends to."""
        if tuple(code.shape) != self.config.code_shape:
            raise ValueError(f"map code of shape {tuple(code.shape)}, this regressor reads "
                             f"{self.config.code_shape} ({self.config.code_form!r} form)")
        if self.config.code_form == "tokens":
            return [b.project_code(code) for b in self.blocks]
        return [(code[i, 0], code[i, 1]) for i in range(len(self.blocks))]

    def forward(self, features: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(features)
        for block, (keys, values) in zip(self.blocks, self.code_keys_values(code), strict=True):
            x = block(x, keys, values)
        out = self.head(self.norm_out(x))
        coords = dehomogenize(out[:, :4], self.config.min_scale, self.config.max_scale)
        log_unc = out[:, 4].clamp(LOG_UNC_MIN, LOG_UNC_MAX)
        return coords, log_unc

    def identity(self) -> str:
        """Content hash of the configuration and weights (16 hex digits)."""
        return weights_hash(self.state_dict(), self.config.identity_dict())


def random_regressor(config: RegressorConfig | None = None, seed: int = 0) -> SceneRegressor:
    """A regressor with a deterministic seeded random init (same weights on every machine)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = SceneRegressor(config)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()
