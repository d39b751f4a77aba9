"""Mapping: posed images -> map file, by model.

One mapping function and one frozen settings class per model:

* ``"anchors"`` (the default): :func:`~aceg.mapping.anchor_map.map_anchors`,
  :class:`~aceg.mapping.anchor_map.AnchorMapConfig`. Builds the anchor model's code from
  the mapping patches whose 3-D point is known; nothing is optimised, no presets.
* ``"transformer"``: :func:`~aceg.mapping.transformer_map.map_transformer`,
  :class:`~aceg.mapping.transformer_map.TransformerMapConfig`. Optimises the map code of
  the frozen map-code transformer (the paper's form); presets apply.
* ``"ace"``: :func:`~aceg.mapping.ace_map.map_ace`, :class:`~aceg.mapping.ace_map.AceMapConfig`.
  Trains the ACE head baseline from scratch on the frozen encoder's features; presets apply.

Shared pieces: :mod:`aceg.mapping.common` (scene checks, encoding into the training
buffer, writing) and :mod:`aceg.mapping.training` (presets' settings, optimisation loop).
All write the same map format, which :class:`aceg.localization.localizer.Localizer` reads.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import torch

from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.mapping.ace_map import AceMapConfig, map_ace
from aceg.mapping.anchor_map import AnchorMapConfig, map_anchors
from aceg.mapping.common import MapResult
from aceg.mapping.transformer_map import TransformerMapConfig, map_transformer

#: Model name -> its settings class; the first is the default.
MAP_CONFIGS = {"anchors": AnchorMapConfig, "transformer": TransformerMapConfig, "ace": AceMapConfig}
MODELS = tuple(MAP_CONFIGS)
#: Models read through a scene-agnostic regressor (``regressor=`` applies to them).
REGRESSOR_MODELS = ("anchors", "transformer")


def settings_of(model: str) -> tuple[str, ...]:
    """Names of the settings ``model`` takes (the fields of its settings class)."""
    return tuple(f.name for f in fields(MAP_CONFIGS[model]))


def map_config(model: str, config=None, **settings):
    """``model``'s settings: ``config`` (None: the defaults) with ``settings`` replaced;
    :class:`AcegError` for an unknown model or a setting the model does not take."""
    if model not in MAP_CONFIGS:
        raise AcegError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    cls = MAP_CONFIGS[model]
    if config is not None and not isinstance(config, cls):
        raise AcegError(f"model {model!r} takes a {cls.__name__}, got a {type(config).__name__}")
    unknown = sorted(set(settings) - set(settings_of(model)))
    if unknown:
        raise AcegError(f"setting {unknown[0]!r} does not apply to the {model} model (its settings: "
                        f"{', '.join(settings_of(model))})")
    return replace(config or cls(), **settings)


def map_scene(scene: Scene, out_path: str | Path, model: str = MODELS[0], regressor=None, *,
              config=None, seed: int = 0, progress: bool = True,
              device: torch.device | str = "cpu", **settings) -> MapResult:
    """Map ``scene`` (posed frames) with ``model`` and write the map file to ``out_path``.

    Args:
        model: "anchors", "transformer" or "ace" (:data:`MODELS`).
        regressor: anchors and transformer only: None (the shipped weights of that model),
            a checkpoint path, or a model.
        config: the model's settings object (:data:`MAP_CONFIGS`); None for the defaults.
        settings: fields of the model's settings class, replacing those of ``config``
            (e.g. ``preset="fast"`` for transformer and ace, ``max_anchors=`` for anchors).
        seed: seeds every random choice of the run (same seed, same map).

    Example: ``map_scene(scene, "room.map")``, ``map_scene(scene, "room.map",
    model="transformer", preset="fast", triangulate=True)``.
    """
    if "method" in settings:
        raise AcegError("map_scene: method= is now model= ('anchors', 'transformer' or 'ace')")
    config = map_config(model, config, **settings)
    run = dict(seed=seed, progress=progress, device=device)
    if model == "ace":
        if regressor is not None:
            raise AcegError("a regressor does not apply to the ace model (it trains its own head)")
        return map_ace(scene, out_path, config, **run)
    if model == "anchors":
        return map_anchors(scene, out_path, config, regressor, **run)
    return map_transformer(scene, out_path, config, regressor, **run)
