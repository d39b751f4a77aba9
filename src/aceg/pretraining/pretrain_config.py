"""Settings of a query pre-training run of the map-code transformer (``aceg pretrain``;
:mod:`aceg.pretraining.trainer`), the names of its output files and its learning-rate
schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aceg.errors import AcegError
from aceg.model.encoder import DEFAULT_ENCODER
from aceg.model.regressor import CODE_INITS, RegressorConfig

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.csv"
CODE_LR_SCHEDULES = ("one_cycle", "constant")
#: How a query iteration scores its patches from the mapping split (``query_mapping_share``):
#: "mapping" (the mapping loss, reprojection NLL: keep the codes' fit) or "3d" (the query
#: loss, 3-D NLL against the depth-derived coordinate: teach the transformer to turn a code
#: fitted by reprojection alone into correct geometry along the rays).
QUERY_MAPPING_LOSSES = ("mapping", "3d")
#: Depth the mapping iterations of depth-using codes (``depth_fraction``) fit to:
#: "rendered" (the scene's depth maps, dense) or "triangulated" (sparse depth triangulated
#: between the mapping images with their poses, RGB only: what ``aceg map --triangulate``
#: gives a map, so pool codes are fitted the way mapping fits them).
POOL_DEPTHS = ("rendered", "triangulated")
FINAL_NAME = "regressor.safetensors"


@dataclass
class PretrainConfig:
    """Settings of a pre-training run (recorded in checkpoints and the final model)."""

    steps: int = 20_000
    batch_patches: int = 2048  # patches per iteration and rank, split over the step's scenes
    scenes_per_step: int = 4
    pool_size: int = 8
    code_lifetime: int = 1500  # mapping iterations a code lives before it is re-initialised
    code_warmup: int = 200  # mapping iterations before a code joins query iterations
    regressor_every: int = 4  # the transformer also learns from every k-th mapping iteration
    lr: float = 3e-4
    lr_warmup_steps: int = 500
    lr_final_fraction: float = 0.1
    code_lr: float = 0.1  # peak Adam rate of "keys_values" codes; other forms scale it (CODE_LR_SCALE)
    code_lr_schedule: str = "one_cycle"  # over each code's lifetime, as mapping; or "constant"
    code_init: str = CODE_INITS[0]  # how a fresh pool code starts (CODE_INITS), as aceg map does
    query_mapping_share: float = 0.0  # share of a query iteration's patches taken from the mapping split
    query_mapping_loss: str = "mapping"  # how those patches are scored (QUERY_MAPPING_LOSSES)
    weight_decay: float = 0.01
    depth_fraction: float = 0.5  # fraction of codes whose mapping iterations use depth
    pool_depth: str = POOL_DEPTHS[0]  # which depth those codes fit to (POOL_DEPTHS)
    short_side: int | None = None  # working short side; None keeps the images' size
    encoder: str = DEFAULT_ENCODER
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    regressor: dict = field(default_factory=dict)  # RegressorConfig overrides; a run records its full architecture here
    init: str | None = None  # regressor file to start from (warm start) instead of random weights

    def __post_init__(self) -> None:
        # checked here, before a run spends minutes encoding its scenes
        if self.code_lr_schedule not in CODE_LR_SCHEDULES:
            raise AcegError(f"unknown code_lr_schedule {self.code_lr_schedule!r}; choose one of "
                            f"{', '.join(CODE_LR_SCHEDULES)}")
        if not 0.0 <= self.query_mapping_share < 1.0:
            raise AcegError(f"query_mapping_share must be in [0, 1), got {self.query_mapping_share}")
        if self.query_mapping_loss not in QUERY_MAPPING_LOSSES:
            raise AcegError(f"unknown query_mapping_loss {self.query_mapping_loss!r}; choose one of "
                            f"{', '.join(QUERY_MAPPING_LOSSES)}")
        if self.pool_depth not in POOL_DEPTHS:
            raise AcegError(f"unknown pool_depth {self.pool_depth!r}; choose one of {', '.join(POOL_DEPTHS)}")
        if self.code_init not in CODE_INITS:
            raise AcegError(f"unknown code_init {self.code_init!r}; choose one of {', '.join(CODE_INITS)}")

    def regressor_config(self, feature_dim: int) -> RegressorConfig:
        return RegressorConfig(**{"feature_dim": feature_dim, **self.regressor})


def saved_regressor_config(saved: dict, feature_dim: int) -> RegressorConfig:
    """The architecture recorded in a checkpoint's config. Runs record it in full; runs from
    before ``code_form`` existed recorded only overrides and used token codes."""
    return RegressorConfig.from_dict({"feature_dim": feature_dim, **saved})


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr_final_fraction`` of ``lr`` at ``steps``."""
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    t = (step - cfg.lr_warmup_steps) / max(1, cfg.steps - cfg.lr_warmup_steps)
    t = min(max(t, 0.0), 1.0)
    final = cfg.lr * cfg.lr_final_fraction
    return final + 0.5 * (cfg.lr - final) * (1 + math.cos(math.pi * t))
