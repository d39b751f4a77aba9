"""Map files and regressor checkpoints (safetensors only; never pickle).

Map file (``*.map``, a safetensors file)
    tensors:
        ``scene_centre``  (3,) float64, metres, world frame: added to every prediction.
        ACE-G: ``code``   the map code read by the regressor, ``RegressorConfig.code_shape``:
                          (N, D) float32 ("tokens" form) or (depth, 2, N, D) float16
                          ("keys_values" form: 4x the values, so half precision, as ACE
                          stores its heads; read back as float32).
        anchor model (:mod:`aceg.model.anchors`): ``code_keys`` (N, C) int8, N anchors' keys
                          (:func:`~aceg.model.anchors.quantize_keys`; float16 in format
                          version 1), and ``code_points`` (N, 3) float32, their points in
                          metres (full precision); read back as one (N, C + 3) float32 code.
        ACE:   ``head.<name>``: weights of the scene-specific :class:`AceHead`.
    metadata ``aceg_map``: JSON with ``format_version``, ``method`` ("aceg": the anchor
    model or the map-code transformer, told apart by ``regressor_config``; "ace": the ACE
    head; :attr:`MapData.model` names the model),
    ``encoder`` (registry name), ``stride``, ``short_side`` (working short side in pixels),
    ``regressor`` (content hash of the regressor weights, ACE-G only), ``regressor_config``
    or ``head_config``, ``scene`` (name), ``frames`` (number of mapping images) and
    ``stats`` (training statistics; non-finite values written as null); anchor maps of
    keypoints only: ``anchor_points`` ("keypoints", :data:`aceg.model.anchors.ANCHOR_POINTS`;
    absent means "cells", which every earlier map holds); ``sha256``, the content hash
    (format version 4 on; :mod:`aceg.model.map_verify` defines it and every check a map
    passes before it is read).

Regressor checkpoint (a safetensors file)
    tensors: the :class:`SceneRegressor` state dict, optionally ``code_init`` (N, D), the
    code a mapping run starts from (e.g. the mean code of pre-training); or the
    :class:`aceg.model.anchors.AnchorRegressor` state dict.
    metadata ``aceg_regressor``: JSON with ``format_version``, ``config`` (with ``"kind":
    "anchors"`` for the anchor model), ``encoder``, ``sha256`` (content hash; checked when
    present, absent in files written before it).

Files are written atomically (:func:`aceg.io.atomic_path`).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from aceg.errors import AcegError, AcegWarning, file_error
from aceg.io import atomic_path
from aceg.model.ace_head import AceHead, AceHeadConfig
from aceg.model.anchors import (
    ANCHOR_KIND,
    ANCHOR_POINTS,
    AnchorConfig,
    AnchorRegressor,
    dequantize_keys,
    quantize_keys,
)
from aceg.model.encoder import DEFAULT_ENCODER
from aceg.model.map_verify import (
    HASHED_MAP_FORMAT_VERSION,
    METHODS,
    check_hash,
    check_map_fields,
    check_map_tensors,
    finite_or_null,
    first_line,
    json_type,
    read_safetensors,
    with_hash,
)
from aceg.model.regressor import RegressorConfig, SceneRegressor, random_regressor

#: Any ACE-G regressor: the map-code transformer or the anchor model.
Regressor = SceneRegressor | AnchorRegressor
RegressorConfigs = RegressorConfig | AnchorConfig


def config_from_dict(d: dict) -> RegressorConfigs:
    """A stored regressor configuration: :class:`AnchorConfig` when ``kind`` says so, else
    :class:`RegressorConfig`."""
    if d.get("kind") == ANCHOR_KIND:
        return AnchorConfig.from_dict(d)
    return RegressorConfig.from_dict(d)


def build_regressor(config: RegressorConfigs) -> Regressor:
    """A freshly initialised model of ``config``'s kind."""
    return AnchorRegressor(config) if isinstance(config, AnchorConfig) else SceneRegressor(config)

#: Versions: 1 (the first), 2 (anchor maps: keys stored as int8, float16 in version 1),
#: 3 (keypoint anchor maps: stored as 2, read from the query's keypoints) and 4, written
#: for every map now: as 1-3 (anchor keys int8, ``anchor_points`` naming keypoint maps),
#: plus the content hash it must carry (:data:`~aceg.model.map_verify.HASHED_MAP_FORMAT_VERSION`).
#: All are read (1-3 unverified); an older aceg refuses a later version with a clear error.
MAP_FORMAT_VERSION = 1
ANCHOR_MAP_FORMAT_VERSION = 2
KEYPOINT_MAP_FORMAT_VERSION = 3
READABLE_MAP_VERSIONS = (MAP_FORMAT_VERSION, ANCHOR_MAP_FORMAT_VERSION, KEYPOINT_MAP_FORMAT_VERSION,
                         HASHED_MAP_FORMAT_VERSION)
REGRESSOR_FORMAT_VERSION = 1
#: Models read through a scene-agnostic regressor, named as ``aceg map --model`` names them.
REGRESSOR_MODELS = ("anchors", "transformer")

#: Folder of shipped regressor weights: ``<model>-<encoder>.safetensors`` is the default of
#: that model (e.g. ``anchors-xfeat``, ``transformer-xfeat``); other files there (e.g.
#: ``anchors-identity-xfeat``) are found by identity when a map was made with them.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

#: Seed of the random regressor used when no trained checkpoint exists.
RANDOM_REGRESSOR_SEED = 0


@dataclass
class MapData:
    """Contents of a map file (see module docstring)."""

    method: str
    encoder: str
    stride: int
    short_side: int
    scene_centre: np.ndarray
    code: torch.Tensor | None = None
    head_state: dict[str, torch.Tensor] | None = None
    head_config: AceHeadConfig | None = None
    regressor: str | None = None
    regressor_config: RegressorConfigs | None = None
    scene: str = ""
    frames: int = 0
    image_size: tuple[int, int] | None = None
    stats: dict = field(default_factory=dict)
    anchor_points: str = ANCHOR_POINTS[0]
    #: Read from a file whose content hash matched (False: a map of version 1-3, unverified).
    verified: bool = True

    def metadata(self) -> dict:
        keypoints = self.anchor_points != ANCHOR_POINTS[0]
        meta = {
            "format_version": HASHED_MAP_FORMAT_VERSION,
            "method": self.method,
            "encoder": self.encoder,
            "stride": self.stride,
            "short_side": self.short_side,
            "image_size": list(self.image_size) if self.image_size else None,
            "scene": self.scene,
            "frames": self.frames,
            "stats": finite_or_null(self.stats),
        }
        if self.method == "aceg":
            meta["regressor"] = self.regressor
            meta["regressor_config"] = self.regressor_config.to_dict() if self.regressor_config else None
            if keypoints:  # cell maps keep the metadata they always had
                meta["anchor_points"] = self.anchor_points
        else:
            meta["head_config"] = self.head_config.to_dict() if self.head_config else None
        return meta

    @property
    def model(self) -> str:
        """The model the map was made with: "anchors", "transformer" or "ace"."""
        if self.method == "ace":
            return "ace"
        return "anchors" if isinstance(self.regressor_config, AnchorConfig) else "transformer"

    def build_head(self) -> AceHead:
        """The ACE head of an ``ace`` map, weights loaded, in eval mode."""
        head = AceHead(self.head_config)
        head.load_state_dict(self.head_state)
        return head.eval()


def save_map(path: str | Path, data: MapData) -> int:
    """Write ``data`` to ``path`` atomically; returns the file size in bytes."""
    if data.method not in METHODS:
        raise ValueError(f"unknown method {data.method!r}")
    if data.anchor_points not in ANCHOR_POINTS or (
            data.anchor_points != ANCHOR_POINTS[0] and not isinstance(data.regressor_config, AnchorConfig)):
        raise ValueError(f"anchor_points {data.anchor_points!r}: one of {ANCHOR_POINTS}, and only "
                         "'cells' unless the map is an anchor map")
    tensors = {"scene_centre": torch.as_tensor(np.asarray(data.scene_centre, dtype=np.float64))}
    if data.method == "aceg" and isinstance(data.regressor_config, AnchorConfig):
        code = data.code.detach().float().cpu()
        if not torch.isfinite(code).all():
            raise ValueError("anchor map code holds NaN or infinite values")
        width = data.regressor_config.feature_dim
        if not (code[:, :width] != 0).any(dim=1).all():
            raise ValueError("an anchor key is all zeros (a patch without a feature direction)")
        tensors["code_keys"] = quantize_keys(code[:, :width]).contiguous()
        tensors["code_points"] = code[:, width:].contiguous()
    elif data.method == "aceg":
        code = data.code.detach().float().cpu().contiguous()
        if code.dim() == 4:  # "keys_values" form
            code = code.half()
        tensors["code"] = code
    else:
        # Half precision, as ACE stores its heads: halves the file, no measurable accuracy loss.
        for k, v in data.head_state.items():
            tensors[f"head.{k}"] = v.detach().half().cpu().contiguous()
    meta = with_hash(tensors, data.metadata(), "map")
    check_map_fields(Path(path), meta)  # what load_map would refuse is never written
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"aceg_map": json.dumps(meta)})
    return Path(path).stat().st_size


def load_map(path: str | Path) -> MapData:
    """Read and verify a map file (:mod:`aceg.model.map_verify`); :class:`AcegError` naming
    the file if it is not a valid map. A map of format version 1-3 (no content hash) is
    read with an :class:`~aceg.errors.AcegWarning` that it is unverified."""
    path = Path(path)
    tensors, meta = read_safetensors(path, "aceg_map", "map file")
    if not isinstance(meta, dict):
        raise file_error(path, f"map metadata is a JSON {json_type(meta)}, not a JSON object")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_MAP_VERSIONS:
        raise file_error(path, f"map format version {json.dumps(version)[:20]} not supported (this "
                               f"aceg reads versions {', '.join(map(str, READABLE_MAP_VERSIONS))})")
    verified = check_hash(path, tensors, meta, "map", version >= HASHED_MAP_FORMAT_VERSION)
    check_map_fields(path, meta)
    check_map_tensors(path, tensors, meta)
    try:
        data = _map_data(path, version, tensors, meta)
    except (KeyError, RuntimeError, TypeError, IndexError, ValueError) as exc:
        raise file_error(path, f"incomplete or inconsistent map file ({first_line(exc)})") from None
    data.verified = verified
    if not verified:
        warnings.warn(f"{path}: map of format version {version}, written before maps carried a "
                      "content hash: read unverified (map the scene again for a verified map)",
                      AcegWarning, stacklevel=2)
    return data


def _map_data(path: Path, version: int, tensors: dict[str, torch.Tensor], meta: dict) -> MapData:
    """The :class:`MapData` of a map file's checked tensors and metadata."""
    method = meta["method"]
    data = MapData(
        method=method,
        encoder=meta["encoder"],
        stride=meta["stride"],
        short_side=meta["short_side"],
        scene_centre=tensors["scene_centre"].double().numpy(),
        scene=meta.get("scene", ""),
        frames=meta.get("frames", 0),
        image_size=tuple(meta["image_size"]) if meta.get("image_size") else None,
        stats=meta.get("stats", {}),
        anchor_points=meta.get("anchor_points", ANCHOR_POINTS[0]),
    )
    if version < HASHED_MAP_FORMAT_VERSION and (
            (data.anchor_points == ANCHOR_POINTS[0]) != (version != KEYPOINT_MAP_FORMAT_VERSION)):
        raise ValueError(f"anchor_points {data.anchor_points!r} in a version {version} map")
    if method == "aceg":
        if "code_keys" in tensors:  # anchor model
            data.code = _anchor_code(path, version, tensors["code_keys"], tensors["code_points"])
        else:
            data.code = tensors["code"].float()
        data.regressor = meta["regressor"]
        if meta.get("regressor_config"):
            data.regressor_config = config_from_dict(meta["regressor_config"])
            if not data.regressor_config.accepts_code(tuple(data.code.shape)):
                raise file_error(path, f"map code of shape {tuple(data.code.shape)}, its regressor "
                                       f"configuration needs {data.regressor_config.code_description()}")
        if data.anchor_points != ANCHOR_POINTS[0] and (data.model != "anchors"
                                                       or data.encoder != "xfeat"):
            raise ValueError(f"anchor_points {data.anchor_points!r} in a {data.model} map "
                             f"on encoder {data.encoder!r}")
    else:
        data.head_state = {k[5:]: v.float() for k, v in tensors.items() if k.startswith("head.")}
        data.head_config = AceHeadConfig.from_dict(meta["head_config"])
        data.build_head()  # validates shapes
    return data


def _anchor_code(path: Path, version: int, keys: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The (N, C + 3) float32 code of an anchor map's stored keys (int8 in version 2,
    float16 in version 1) and points (N, 3); :class:`AcegError` naming ``path`` if they do
    not fit together."""
    want = torch.int8 if version >= ANCHOR_MAP_FORMAT_VERSION else torch.float16
    if keys.dtype != want:
        raise file_error(path, f"anchor keys of type {keys.dtype}, format version {version} stores {want}")
    if keys.ndim != 2 or keys.shape[0] == 0 or points.shape != (keys.shape[0], 3):
        raise file_error(path, f"anchor keys {tuple(keys.shape)} and points {tuple(points.shape)} do not "
                               "fit together (want (N, C) and (N, 3), N >= 1)")
    if version >= ANCHOR_MAP_FORMAT_VERSION:
        if points.dtype != torch.float32:
            raise file_error(path, f"anchor points of type {points.dtype}, format version {version} "
                                   "stores torch.float32")
        if not (keys != 0).any(dim=1).all():
            raise file_error(path, "an anchor key is all zeros (corrupt map)")
    keys = dequantize_keys(keys) if keys.dtype == torch.int8 else keys.float()
    return torch.cat([keys, points.float()], 1)


def save_regressor(path: str | Path, model: Regressor, encoder: str,
                   code_init: torch.Tensor | None = None, extra: dict | None = None) -> None:
    """Write a regressor checkpoint atomically (see module docstring)."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if code_init is not None:
        tensors["code_init"] = code_init.detach().float().cpu().contiguous()
    meta = with_hash(tensors, {"format_version": REGRESSOR_FORMAT_VERSION,
                               "config": model.config.to_dict(), "encoder": encoder, **(extra or {})},
                     "regressor")
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"aceg_regressor": json.dumps(meta)})


@dataclass
class LoadedRegressor:
    """A regressor ready for mapping/localization: model (eval mode, frozen), the encoder it
    expects, its identity hash, the code to start mapping from and where it came from."""

    model: Regressor
    encoder: str
    identity: str
    code_init: torch.Tensor | None
    source: str


def load_regressor(path: str | Path) -> LoadedRegressor:
    """Read a regressor checkpoint; :class:`AcegError` naming the file if invalid."""
    path = Path(path)
    tensors, meta = read_safetensors(path, "aceg_regressor", "regressor checkpoint")
    if not isinstance(meta, dict):
        raise file_error(path, f"regressor metadata is a JSON {json_type(meta)}, not a JSON object")
    if meta.get("format_version") != REGRESSOR_FORMAT_VERSION:
        raise file_error(path, f"regressor format version {json.dumps(meta.get('format_version'))[:20]} "
                               "not supported")
    check_hash(path, tensors, meta, "regressor", required=False)
    try:
        config = config_from_dict(meta["config"])
        code_init = tensors.pop("code_init", None)
        model = build_regressor(config)
        model.load_state_dict(tensors)
        if code_init is not None and not isinstance(config, RegressorConfig):
            raise ValueError("code_init is only for map-code transformers")
        if code_init is not None and tuple(code_init.shape) != config.code_shape:
            raise ValueError(f"code_init of shape {tuple(code_init.shape)}, the {config.code_form!r} "
                             f"form needs {config.code_shape}")
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise file_error(path, f"inconsistent regressor checkpoint ({first_line(exc)})") from None
    _freeze(model)
    return LoadedRegressor(model, str(meta.get("encoder", "xfeat")), model.identity(), code_init,
                           str(path))


def _freeze(model: torch.nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def regressor_model(reg: LoadedRegressor) -> str:
    """The model ``reg`` is: "anchors" or "transformer"."""
    return "anchors" if isinstance(reg.model, AnchorRegressor) else "transformer"


def default_weights(model: str, encoder: str = DEFAULT_ENCODER) -> Path:
    """Where the shipped weights of ``model`` for ``encoder`` are (they may not exist)."""
    if model not in REGRESSOR_MODELS:
        raise AcegError(f"model {model!r} has no regressor weights; models with weights: "
                        f"{', '.join(REGRESSOR_MODELS)}")
    return WEIGHTS_DIR / f"{model}-{encoder}.safetensors"


def default_regressor(model: str, encoder: str = DEFAULT_ENCODER, config=None,
                      warn: bool = True) -> LoadedRegressor:
    """The shipped regressor of ``model`` for ``encoder`` (:func:`default_weights`); without
    one, a deterministic seeded init of ``config`` (default: the model's default sizes for
    the encoder's feature width; the same on every machine) and a warning. The anchor
    model's init is its untrained identity embedding (the nearest raw descriptor)."""
    shipped = default_weights(model, encoder)
    if shipped.is_file():
        return load_regressor(shipped)
    if warn:
        warnings.warn(
            f"no pre-trained {model} regressor for encoder {encoder!r} ({shipped} missing): using a "
            f"seeded random init (seed {RANDOM_REGRESSOR_SEED}); its maps will be poor until "
            "pre-trained weights exist (give --regressor PATH, or map with --model ace)",
            stacklevel=2,
        )
    from aceg.model.encoder import get_encoder

    if config is None:
        config_class = AnchorConfig if model == "anchors" else RegressorConfig
        try:
            config = config_class(feature_dim=get_encoder(encoder).feature_dim)
        except AcegError:
            config = config_class()
    if isinstance(config, AnchorConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_REGRESSOR_SEED)
            reg_model = AnchorRegressor(config)
    else:
        reg_model = random_regressor(config, RANDOM_REGRESSOR_SEED)
    _freeze(reg_model)
    return LoadedRegressor(reg_model, encoder, reg_model.identity(), None,
                           f"random init (seed {RANDOM_REGRESSOR_SEED})")


def resolve_regressor(regressor, model: str | None, encoder: str = DEFAULT_ENCODER) -> LoadedRegressor:
    """``regressor`` given as None (``model``'s shipped weights), a path, a
    :class:`SceneRegressor` or :class:`AnchorRegressor`, or a :class:`LoadedRegressor` ->
    :class:`LoadedRegressor`; :class:`AcegError` if it is not a ``model`` (None: any)."""
    if regressor is None:
        if model is None:
            raise ValueError("resolve_regressor: give a regressor or a model")
        return default_regressor(model, encoder)
    if isinstance(regressor, LoadedRegressor):
        reg = regressor
    elif isinstance(regressor, SceneRegressor | AnchorRegressor):
        _freeze(regressor)
        reg = LoadedRegressor(regressor, encoder, regressor.identity(), None, "in-memory model")
    else:
        reg = load_regressor(regressor)
    if model is not None and regressor_model(reg) != model:
        raise AcegError(f"{reg.source}: holds the {regressor_model(reg)} model, not the {model} "
                        f"model; map with --model {regressor_model(reg)}, or give {model} weights")
    return reg


def regressor_for_map(data: MapData, map_path: str | Path) -> LoadedRegressor:
    """The regressor an ACE-G map was made with, found by the identity the map records: the
    default of its model (:func:`default_regressor`), else any shipped weights file;
    :class:`AcegError` saying what to run when none is."""
    reg = default_regressor(data.model, data.encoder, warn=False)
    found = reg if _made_with(data, reg) else _shipped_regressor_of(data)
    if found is not None:
        return found
    raise file_error(
        map_path,
        f"map was made with {data.model} regressor {data.regressor}, which is not among the "
        f"weights shipped in {WEIGHTS_DIR}; localize with the weights it was made with "
        f"(aceg localize {map_path} QUERIES --regressor WEIGHTS.safetensors), or map the scene "
        f"again (aceg map SCENE {map_path} --model {data.model})",
    )


def check_regressor_matches(data: MapData, reg: LoadedRegressor, map_path: str | Path) -> None:
    """:class:`AcegError` unless ``reg`` is the regressor the ACE-G map was made with."""
    if data.method != "aceg":
        return
    if not _made_with(data, reg):
        shipped = _shipped_regressor_of(data)
        hint = (f"it was made with the shipped {Path(shipped.source).name}, found by identity: leave "
                "--regressor out" if shipped else "pass the --regressor the map was made with")
        raise file_error(
            map_path,
            f"map was made with regressor {data.regressor}, but the regressor in use is "
            f"{reg.identity} ({reg.source}); {hint}",
        )
    if reg.encoder != data.encoder:
        raise file_error(map_path, f"map uses encoder {data.encoder!r} but the regressor expects "
                                   f"{reg.encoder!r}")


def _shipped_regressor_of(data: MapData) -> LoadedRegressor | None:
    """The shipped weights (a file in :data:`WEIGHTS_DIR`) an ACE-G map was made with, if
    any is (e.g. an anchor map made before the default embedding was pre-trained)."""
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        with contextlib.suppress(AcegError):
            if _made_with(data, reg := load_regressor(path)):
                return reg
    return None


def _made_with(data: MapData, reg: LoadedRegressor) -> bool:
    """Whether the ACE-G map ``data`` was made with ``reg``: its recorded identity, or for
    an anchor map made while the anchor budget was part of the identity
    (:meth:`AnchorRegressor.identity_with_budget`), that identity with the map's budget."""
    return reg.identity == data.regressor or (
        isinstance(reg.model, AnchorRegressor) and isinstance(data.regressor_config, AnchorConfig)
        and data.regressor == reg.model.identity_with_budget(data.regressor_config.max_anchors))
