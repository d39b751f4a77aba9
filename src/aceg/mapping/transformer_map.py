"""Mapping with the map-code transformer (the paper's form of ACE-G).

The scene-agnostic regressor (:class:`aceg.model.regressor.SceneRegressor`, shipped as
``weights/transformer-<encoder>.safetensors``) is frozen; only the scene's map code is
optimised, with the Laplace NLL of the reprojection error (:mod:`aceg.mapping.losses`), by
the shared loop of :mod:`aceg.mapping.training`. The code starts from the regressor file's
``code_init`` when it has one, else as :attr:`TransformerMapConfig.code_init` says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch

from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.mapping.common import (
    MapResult,
    check_mapping_scene,
    encode_mapping_images,
    map_data,
    regressor_encoder,
    write_map,
)
from aceg.mapping.training import MappingPreset, OptimisedMapConfig, train_loop
from aceg.model.map_file import resolve_regressor
from aceg.model.regressor import CODE_INITS, CODE_LR_SCALE

#: Presets of the transformer's mapping. ``lr_max`` is that of "keys_values" codes; other
#: code forms scale it by :data:`aceg.model.regressor.CODE_LR_SCALE` unless ``lr_max`` is
#: given explicitly.
TRANSFORMER_PRESETS = {
    "fast": MappingPreset(2, 1024, 300, 4096, 1e-1),
    "default": MappingPreset(3, 1536, 600, 4096, 1e-1),
    "thorough": MappingPreset(6, None, 2000, 5120, 1e-1),
}


@dataclass(frozen=True)
class TransformerMapConfig(OptimisedMapConfig):
    """Settings of the transformer's mapping: those of :class:`OptimisedMapConfig` and

    Attributes:
        code_init: how the map code starts (:data:`aceg.model.regressor.CODE_INITS`:
            "anchored" puts each token's keys on one of the scene's own patches); a
            regressor file's ``code_init`` tensor, when it has one, wins.
    """

    PRESETS: ClassVar[dict[str, MappingPreset]] = TRANSFORMER_PRESETS

    code_init: str = CODE_INITS[0]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.code_init not in CODE_INITS:
            raise AcegError(f"unknown code_init {self.code_init!r}; choose one of {', '.join(CODE_INITS)}")


def map_transformer(scene: Scene, out_path: str | Path,
                    config: TransformerMapConfig | None = None, regressor=None,
                    seed: int = 0, progress: bool = True,
                    device: torch.device | str = "cpu") -> MapResult:
    """Optimise the map code of ``scene`` (posed frames) and write the map to ``out_path``.

    ``config``: None for the defaults. ``regressor``: None (the shipped transformer weights, or a seeded random init with a
    warning when there are none), a checkpoint path, or a model. ``seed`` fixes the
    augmentation, the code's start and the batch order.
    """
    config = config or TransformerMapConfig()
    check_mapping_scene(scene, config.use_depth)
    short_side = scene.working_short_side(config.short_side)
    p = config.run_preset()
    device = torch.device(device)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    reg = resolve_regressor(regressor, "transformer")
    enc = regressor_encoder(reg, device)
    buffer, geometry = encode_mapping_images(scene, enc, short_side, config.buffer_plan(p), seed,
                                             progress, no_points_fix="map without --triangulate")
    t_buffer = time.perf_counter() - t0

    model = reg.model.to(device)
    if config.lr_max is None:
        p = replace(p, lr_max=p.lr_max * CODE_LR_SCALE[model.config.code_form])
    if reg.code_init is not None:
        code0 = reg.code_init
    elif config.code_init == "anchored":
        code0 = model.anchored_code(buffer.features, gen)
    else:
        code0 = model.init_code(gen)
    code = torch.nn.Parameter(code0.clone().to(device))
    stats = train_loop(lambda f: model(f, code), [code], buffer, p, "nll", config.loss_config,
                       config.use_depth or config.triangulate, gen, progress, device,
                       desc="mapping (transformer)")
    if geometry is not None:
        stats["triangulated"] = geometry
    t_train = time.perf_counter() - t0 - t_buffer

    data = map_data(scene, buffer, enc, short_side, "aceg",
                    {**stats, "patches": len(buffer), "iterations": p.iterations,
                     "preset": config.preset, "seconds": round(t_buffer + t_train, 1)})
    data.code = code.detach().cpu()
    data.regressor = reg.identity
    data.regressor_config = reg.model.config
    result = MapResult(Path(out_path), "transformer", enc.name, config.preset, len(scene),
                       len(buffer), p.iterations, 0, {"buffer": t_buffer, "train": t_train},
                       stats, reg.identity, reg.source)
    return write_map(out_path, data, result, t0)
