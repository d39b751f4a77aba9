"""Mapping with the ACE head baseline.

ACE's scene-specific MLP head (:class:`aceg.model.ace_head.AceHead`) trained from scratch
with ACE's tanh-clamped reprojection loss and its shrinking threshold
(:mod:`aceg.mapping.losses`), by the shared loop of :mod:`aceg.mapping.training`, on the
features of aceg's frozen encoder (XFeat by default), not ACE's own encoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from aceg.data.scene import Scene
from aceg.mapping.common import (
    MapResult,
    check_mapping_scene,
    encode_mapping_images,
    map_data,
    write_map,
)
from aceg.mapping.training import MappingPreset, OptimisedMapConfig, train_loop
from aceg.model.ace_head import AceHead, AceHeadConfig
from aceg.model.encoder import DEFAULT_ENCODER, get_encoder

#: Presets of the ACE head's mapping: a whole MLP is trained, so more steps than the
#: transformer's code needs.
ACE_PRESETS = {
    "fast": MappingPreset(2, 2048, 800, 4096, 5e-3),
    "default": MappingPreset(4, 2048, 2000, 5000, 5e-3),
    "thorough": MappingPreset(8, None, 5000, 5120, 5e-3),
}


@dataclass(frozen=True)
class AceMapConfig(OptimisedMapConfig):
    """Settings of the ACE head's mapping: those of :class:`OptimisedMapConfig` and

    Attributes:
        encoder: registry name of the frozen encoder (:func:`aceg.model.encoder.encoder_names`).
        head_config: sizes of the head (None: ACE's, for the encoder's feature width).
    """

    PRESETS: ClassVar[dict[str, MappingPreset]] = ACE_PRESETS

    encoder: str = DEFAULT_ENCODER
    head_config: AceHeadConfig | None = None


def map_ace(scene: Scene, out_path: str | Path, config: AceMapConfig | None = None,
            seed: int = 0, progress: bool = True, device: torch.device | str = "cpu") -> MapResult:
    """Train an ACE head on ``scene`` (posed frames) and write the map to ``out_path``.

    ``config``: None for the defaults. ``seed`` fixes the head's initial weights, the
    augmentation and the batch order.
    """
    config = config or AceMapConfig()
    check_mapping_scene(scene, config.use_depth)
    short_side = scene.working_short_side(config.short_side)
    p = config.run_preset()
    device = torch.device(device)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    enc = get_encoder(config.encoder, device)
    buffer, geometry = encode_mapping_images(scene, enc, short_side, config.buffer_plan(p), seed,
                                             progress, no_points_fix="map without --triangulate")
    t_buffer = time.perf_counter() - t0

    head_config = config.head_config or AceHeadConfig(feature_dim=enc.feature_dim)
    torch_state = torch.random.get_rng_state()  # seeded init without touching the global RNG
    torch.manual_seed(seed)
    head = AceHead(head_config).to(device).train()
    torch.random.set_rng_state(torch_state)
    stats = train_loop(head, list(head.parameters()), buffer, p, "ace", config.loss_config,
                       config.use_depth or config.triangulate, gen, progress, device,
                       desc="mapping (ace)")
    if geometry is not None:
        stats["triangulated"] = geometry
    t_train = time.perf_counter() - t0 - t_buffer

    data = map_data(scene, buffer, enc, short_side, "ace",
                    {**stats, "patches": len(buffer), "iterations": p.iterations,
                     "preset": config.preset, "seconds": round(t_buffer + t_train, 1)})
    data.head_state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    data.head_config = head_config
    result = MapResult(Path(out_path), "ace", enc.name, config.preset, len(scene), len(buffer),
                       p.iterations, 0, {"buffer": t_buffer, "train": t_train}, stats)
    return write_map(out_path, data, result, t0)
