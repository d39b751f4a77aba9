"""Map and regressor files verified on reading (the checks :mod:`aceg.model.map_file`
runs before it trusts a file).

Content hash
    ``sha256`` in a file's aceg metadata: the SHA-256 of a domain tag (``aceg-map`` or
    ``aceg-regressor``), then for each tensor in name order its name, dtype and shape (JSON)
    and its raw bytes, then the canonical JSON of the metadata without ``sha256`` (keys
    sorted, no spaces, ASCII). Any change of a tensor value, shape or dtype or of a
    metadata value changes it, so a damaged or edited file is refused rather than read as
    another map (a flipped byte in ``scene_centre`` would move every pose by metres).
    Maps of format version :data:`HASHED_MAP_FORMAT_VERSION` and later must carry it;
    older maps have none and are read unverified. Regressor files carry it from now on and
    are checked when they do (the shipped weights do; older files still load).

Metadata
    A JSON object (nested at most :data:`aceg.json_limits.MAX_JSON_DEPTH` deep) whose fields
    have the documented types and ranges (:func:`check_map_fields`): integers that are
    integers (not ``480.5``, ``"480"`` or ``true``), the working short side within
    :data:`SHORT_SIDE_RANGE` (the localizer prepares every query at that size, so an absurd
    value would mean gigabytes per image), finite numbers in the configurations, and so on
    (``stats`` is informational: any JSON object). Every error names the file and the field.

Tensors
    The names, dtypes and shapes of each map kind (:func:`check_map_tensors`), finite values,
    and an ACE head whose weights have the shapes its ``head_config`` gives (checked before
    the head is built, so a config cannot make it allocate more than the file holds).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from aceg.errors import AcegError, file_error
from aceg.json_limits import parse_json
from aceg.model.anchors import ANCHOR_POINTS
from aceg.model.encoder import encoder_names

#: ``method`` of a map file: "aceg" (a regressor's map code) or "ace" (an ACE head).
METHODS = ("aceg", "ace")
#: First map format version written with a content hash (and needing one to be read).
HASHED_MAP_FORMAT_VERSION = 4
#: Metadata field holding the content hash (64 lower-case hex digits).
HASH_KEY = "sha256"
#: Working short side of a map, pixels (inclusive). Tiny test images give a few pixels.
SHORT_SIDE_RANGE = (8, 4096)
#: Encoder stride of a map, pixels (inclusive).
STRIDE_RANGE = (1, 64)
#: Largest side of a mapping image recorded in ``image_size``, pixels.
MAX_IMAGE_SIDE = 65536
#: Size fields of an ACE head configuration and their ranges (inclusive).
HEAD_SIZES = {"feature_dim": (1, 4096), "width": (1, 4096), "blocks": (0, 64)}

_HEX = re.compile(r"[0-9a-f]{64}")


def canonical_json(value) -> str:
    """The one JSON text of ``value`` that the content hash covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(tensors: dict[str, torch.Tensor], meta: dict, kind: str) -> str:
    """SHA-256 hex digest of ``tensors`` and ``meta`` (without its hash field) as the module
    docstring describes; ``kind``: "map" or "regressor"."""
    digest = hashlib.sha256(f"aceg-{kind}\0".encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode() + b"\0")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    digest.update(canonical_json({k: v for k, v in meta.items() if k != HASH_KEY}).encode())
    return digest.hexdigest()


def with_hash(tensors: dict[str, torch.Tensor], meta: dict, kind: str) -> dict:
    """``meta`` as it reads back from JSON, plus its content hash (for writing)."""
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != HASH_KEY}))
    return {**meta, HASH_KEY: content_hash(tensors, meta, kind)}


def check_hash(path: Path, tensors: dict[str, torch.Tensor], meta: dict, kind: str,
               required: bool) -> bool:
    """Whether the file at ``path`` was verified by its content hash: True when it matches,
    False when there is none and none is ``required``; otherwise :class:`AcegError`."""
    stored = meta.get(HASH_KEY)
    what = f"{kind} file" if kind == "map" else "regressor checkpoint"
    if stored is None:
        if required:
            raise file_error(path, f"{what} has no content hash, which its format version "
                                   f"{meta.get('format_version')} carries: damaged or edited file")
        return False
    if not isinstance(stored, str) or not _HEX.fullmatch(stored):
        raise file_error(path, f"{what} content hash is not a SHA-256 digest: damaged file")
    if content_hash(tensors, meta, kind) != stored:
        raise file_error(path, f"{what} does not match its content hash (sha256): it was changed "
                               "or damaged after it was written"
                         + ("; map the scene again" if kind == "map" else ""))
    return True


def finite_or_null(value):
    """``value`` (JSON-like) with NaN and infinite floats replaced by None."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_safetensors(path: Path, key: str, what: str) -> tuple[dict[str, torch.Tensor], object]:
    """Tensors and the JSON value of metadata ``key`` of the safetensors file at ``path`` (a
    ``what``, as messages name it); :class:`AcegError` naming the file if it cannot be read.
    Never unpickles; the JSON nesting is bounded (:func:`aceg.json_limits.parse_json`)."""
    if path.is_dir():
        raise file_error(path, f"is a folder, not a {what}")
    if not path.is_file():
        raise file_error(path, f"{what} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(key)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise file_error(path, f"not a readable {what} (safetensors: {first_line(exc)})") from None
    if raw_meta is None:
        raise file_error(path, f"not an aceg {what} (no '{key}' metadata)")
    try:
        meta = parse_json(raw_meta, path)
    except AcegError as exc:
        raise file_error(path, f"corrupt {what} metadata ({str(exc).split(': ', 1)[-1]})") from None
    return tensors, meta


def first_line(exc: Exception) -> str:
    """First non-empty line of an exception message (torch's state-dict errors run over
    many lines, one per mismatched key), or the exception's type name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else type(exc).__name__


def json_type(value) -> str:
    """JSON name of ``value``'s type, for messages."""
    for kind, name in ((dict, "object"), (list, "array"), (str, "string"), (bool, "boolean"),
                       (int, "number"), (float, "number")):
        if isinstance(value, kind):
            return name
    return "null"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_error(path: Path, name: str, problem: str, value):
    return file_error(path, f"map field '{name}' {problem}, got {json.dumps(value)[:80]}")


def _int_field(path: Path, meta: dict, name: str, low: int, high: int | None,
               default=None) -> None:
    value = meta.get(name, default)
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise _field_error(path, name, f"must be an integer {span}", value)


def _finite(path: Path, name: str, value) -> None:
    """Every number inside ``value`` (field ``name``) is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _field_error(path, name, "must hold finite numbers only", value)
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(path, f"{name}.{key}", item)
    elif isinstance(value, list):
        for item in value:
            _finite(path, name, item)


def check_map_fields(path: Path, meta: dict) -> None:
    """:class:`AcegError` naming ``path`` and the field unless the map metadata ``meta``
    (a dict) has the documented fields with their types and ranges."""
    method = meta.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise file_error(path, f"unknown map method {json.dumps(method)[:40]}")
    encoder = meta.get("encoder")
    if not isinstance(encoder, str) or encoder not in encoder_names():
        raise file_error(path, f"map made with encoder {json.dumps(encoder)[:40]}, which this aceg "
                               f"does not have (known: {', '.join(encoder_names())})")
    _int_field(path, meta, "stride", *STRIDE_RANGE)
    _int_field(path, meta, "short_side", *SHORT_SIDE_RANGE)
    _int_field(path, meta, "frames", 0, None, default=0)
    size = meta.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            _is_int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in size)):
        raise _field_error(path, "image_size", f"must be [width, height], 1 to {MAX_IMAGE_SIDE} "
                                               "pixels each, or null", size)
    for name, kind, kind_name in (("scene", str, "string"), ("stats", dict, "object"),
                                  ("anchor_points", str, "string")):
        if name in meta and not isinstance(meta[name], kind):
            raise _field_error(path, name, f"must be a JSON {kind_name}", meta[name])
    if meta.get("anchor_points", ANCHOR_POINTS[0]) not in ANCHOR_POINTS:
        raise _field_error(path, "anchor_points", f"must be one of {', '.join(ANCHOR_POINTS)}",
                           meta["anchor_points"])
    if method == "aceg":
        if not isinstance(meta.get("regressor"), str):
            raise _field_error(path, "regressor", "must be the regressor's identity (a string)",
                               meta.get("regressor"))
        config, name = meta.get("regressor_config"), "regressor_config"
        if config is not None and not isinstance(config, dict):
            raise _field_error(path, name, "must be a JSON object or null", config)
    else:
        config, name = meta.get("head_config"), "head_config"
        if not isinstance(config, dict):
            raise _field_error(path, name, "must be a JSON object", config)
        for key, (low, high) in HEAD_SIZES.items():
            if key in config:
                _int_field(path, config, key, low, high)
    _finite(path, name, config)


def _expected_head_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of an ACE head of ``config`` (sizes validated, defaults as
    :class:`~aceg.model.ace_head.AceHeadConfig`'s), without building it."""
    from aceg.model.ace_head import AceHeadConfig

    defaults = AceHeadConfig()
    c, w = config.get("feature_dim", defaults.feature_dim), config.get("width", defaults.width)
    shapes = {"inp.weight": (w, c), "inp.bias": (w,), "out.1.weight": (4, w), "out.1.bias": (4,)}
    for i in range(config.get("blocks", defaults.blocks)):
        for j in (1, 3):
            shapes[f"res.{i}.{j}.weight"] = (w, w)
            shapes[f"res.{i}.{j}.bias"] = (w,)
    return shapes


def check_map_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """:class:`AcegError` naming ``path`` unless the tensors are those of the map kind that
    ``meta`` (checked by :func:`check_map_fields`) names, with finite values; anchor keys and
    points are checked further as they are read (:mod:`aceg.model.map_file`)."""
    centre = tensors.get("scene_centre")
    if centre is None or centre.dtype != torch.float64 or tuple(centre.shape) != (3,):
        got = "none" if centre is None else f"{centre.dtype} {tuple(centre.shape)}"
        raise file_error(path, f"map tensor 'scene_centre' must be float64 (3,), got {got}")
    if meta["method"] == "aceg":
        names = {"code_keys", "code_points"} if "code_keys" in tensors else {"code"}
        code = tensors.get("code")
        if names == {"code"} and (code is None or not (
                (code.dtype == torch.float32 and code.ndim == 2)
                or (code.dtype == torch.float16 and code.ndim == 4))):
            got = "none" if code is None else f"{code.dtype} of {code.ndim} dimensions"
            raise file_error(path, "map tensor 'code' must be float32 (N, D) or float16 "
                                   f"(depth, 2, N, D), got {got}")
    else:
        want = _expected_head_shapes(meta["head_config"])  # sizes checked: bounded
        for key, shape in want.items():
            tensor = tensors.get(f"head.{key}")
            if tensor is not None and (tuple(tensor.shape) != shape
                                       or tensor.dtype not in (torch.float16, torch.float32)):
                raise file_error(path, f"map tensor 'head.{key}' ({tensor.dtype} "
                                       f"{tuple(tensor.shape)}) does not fit its head_config "
                                       f"(float16 {shape})")
        names = {f"head.{k}" for k in want}
    extra = sorted(set(tensors) - names - {"scene_centre"})
    missing = sorted(names - set(tensors))
    if extra or missing:
        raise file_error(path, f"map tensors do not fit a {meta['method']} map (unexpected: "
                               f"{', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise file_error(path, f"map holds NaN or infinite values (in '{name}')")
