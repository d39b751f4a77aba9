"""Property-based fuzz of map files (:func:`aceg.model.map_file.load_map`): random byte
flips, truncations, metadata edits (values of any JSON type, deleted and added fields) and
tensor edits, on an anchor map, a map-code transformer map and an ACE map.

Properties: every failure is a one-line :class:`AcegError` naming the file (``aceg
localize`` then exits 2 with that one line, no traceback), and nothing damaged is read as
something else:

* a flipped byte or a truncation is refused, unless the file still reads as exactly the
  same map (e.g. a flip in the header's padding); a flip inside the tensor data is
  always refused, thanks to the content hash;
* an edit of the metadata or tensors that keeps the stored hash is refused unless it
  changes nothing the hash covers;
* an edit written with a recomputed hash (a writer's bug, or a deliberate edit), and the
  same edit in an older, unhashed map, is refused or read as exactly what the file says,
  every field within its documented type and range.

The number of inputs is ``ACEG_FUZZ_EXAMPLES`` (tests/fuzzing.py); the counts per target
go to ``ACEG_FUZZ_COUNT_FILE`` (benchmarks/fuzz_robustness.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from aceg.cli.main import main
from aceg.errors import AcegError, AcegWarning
from aceg.model.ace_head import AceHead, AceHeadConfig
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.model.encoder import encoder_names
from aceg.model.map_file import MapData, load_map, save_map
from aceg.model.map_verify import (
    HASH_KEY,
    METHODS,
    SHORT_SIDE_RANGE,
    STRIDE_RANGE,
    with_hash,
)
from aceg.model.regressor import RegressorConfig, random_regressor
from fuzzing import fuzz_settings, record
from test_fuzz import build_ace

# -- valid maps ---------------------------------------------------------------------------


def _maps() -> dict[str, MapData]:
    torch.manual_seed(0)
    common = dict(encoder="xfeat", stride=8, short_side=120, scene="s", frames=3,
                  scene_centre=np.array([1.25, -2.5, 3.0]), stats={"loss": 1.5, "in10": 0.75})
    anchors = AnchorRegressor(AnchorConfig(feature_dim=16, hidden=8))
    code = anchors.make_code(torch.randn(40, 16), torch.randn(40, 3))
    transformer = random_regressor(RegressorConfig(width=32, depth=2, heads=2, code_tokens=8,
                                                   mlp_ratio=2), 0)
    head = AceHead(AceHeadConfig(64, 16, 1))
    return {
        "anchors": MapData(method="aceg", code=code, regressor=anchors.identity(),
                           regressor_config=anchors.config, **common),
        "transformer": MapData(method="aceg", code=transformer.init_code(),
                               regressor=transformer.identity(),
                               regressor_config=transformer.config, **common),
        "ace": MapData(method="ace", head_state=head.state_dict(), head_config=head.config,
                       **common),
    }


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """kind -> (bytes of the valid map file, its tensors, its metadata, the map it reads as)."""
    folder = tmp_path_factory.mktemp("fuzz_maps")
    out = {}
    for kind, data in _maps().items():
        path = folder / f"{kind}.map"
        save_map(path, data)
        out[kind] = (path.read_bytes(), load_file(str(path)), _metadata(path), load_map(path))
    return out


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_map_queries") / "scene"
    build_ace(folder)
    return folder


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["aceg_map"])


def _data_start(content: bytes) -> int:
    return 8 + struct.unpack("<Q", content[:8])[0]


# -- outcome ------------------------------------------------------------------------------

FIELDS = ("method", "encoder", "stride", "short_side", "frames", "scene")


def _same_map(a: MapData, b: MapData) -> bool:
    tensors_a = [a.scene_centre, a.code, *(a.head_state or {}).values()]
    tensors_b = [b.scene_centre, b.code, *(b.head_state or {}).values()]
    return (all(getattr(a, f) == getattr(b, f) for f in (*FIELDS, "stats", "regressor",
                                                             "regressor_config", "head_config",
                                                             "anchor_points", "image_size"))
            and all((x is None and y is None) or (x is not None and y is not None
                                                 and np.array_equal(np.asarray(x), np.asarray(y)))
                    for x, y in zip(tensors_a, tensors_b, strict=True)))


def _as_written(data: MapData, meta: dict) -> bool:
    """Whether ``data`` holds exactly what metadata ``meta`` says, within the documented
    types and ranges, with finite tensors."""
    defaults = {"frames": 0, "scene": ""}
    exact = all(type(getattr(data, f)) is type(meta.get(f, defaults.get(f)))
                and getattr(data, f) == meta.get(f, defaults.get(f)) for f in FIELDS)
    ranges = (SHORT_SIDE_RANGE[0] <= data.short_side <= SHORT_SIDE_RANGE[1]
              and STRIDE_RANGE[0] <= data.stride <= STRIDE_RANGE[1] and data.frames >= 0
              and data.method in METHODS and data.encoder in encoder_names())
    tensors = [data.scene_centre, data.code, *(data.head_state or {}).values()]
    finite = all(x is None or np.isfinite(np.asarray(x, dtype=np.float64)).all() for x in tensors)
    return exact and ranges and finite and data.scene_centre.shape == (3,)


def judge(target: str, content: bytes, original: MapData, queries: Path,
          must_refuse: bool = False, meta: dict | None = None) -> str:
    """Load ``content`` as a map: "refused", "identical" (the original map) or "valid" (a
    different map, read as ``meta`` says; only when ``meta`` is given). Anything else, or
    an accepted map when ``must_refuse``, fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.map"
        path.write_bytes(content)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AcegWarning)
                data = load_map(path)
        except AcegError as exc:
            message = str(exc)
            ok = message.startswith(str(path)) and "\n" not in message
            outcome = "refused" if ok and _cli_refuses(path, queries, message) else "bad error"
        except Exception as exc:  # noqa: BLE001 - counted, then reported by the assert
            outcome, message = "traceback", f"{type(exc).__name__}: {exc}"
        else:
            message = "accepted"
            outcome = ("identical" if _same_map(data, original) else
                       "valid" if meta is not None and _as_written(data, meta) else "wrong")
            if must_refuse:
                outcome = "wrong"
    record(target, outcome)
    event(f"{outcome}: {message.split(': ', 1)[-1][:50]}")
    assert outcome in ("refused", "identical", "valid"), f"{outcome}: {message}"
    return outcome


def _cli_refuses(path: Path, queries: Path, message: str) -> bool:
    """``aceg localize`` on the map: exit 2 and the same one line, nothing else."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["localize", str(path), str(queries), "--out", str(path.with_suffix(".txt"))])
    return code == 2 and err.getvalue() == f"aceg: error: {message}\n"


# -- bytes --------------------------------------------------------------------------------

KINDS = ("anchors", "transformer", "ace")


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(30)
@given(data=st.data())
def test_flipped_bytes_are_refused(maps, queries, kind, data):
    content, _, _, original = maps[kind]
    start = _data_start(content)
    anywhere = st.integers(0, len(content) - 1)
    first = data.draw(st.integers(start, len(content) - 1) if data.draw(
        st.booleans(), label="first in the tensor data") else anywhere, label="first flip")
    flips = data.draw(st.lists(st.tuples(anywhere, st.integers(1, 255)), max_size=2,
                               unique_by=lambda f: f[0]).filter(
        lambda fs: all(p != first for p, _ in fs)), label="more flips")
    flips = [(first, data.draw(st.integers(1, 255), label="mask")), *flips]
    mutated = bytearray(content)
    for position, mask in flips:
        mutated[position] ^= mask
    in_data = any(p >= _data_start(content) for p, _ in flips)
    judge(f"map byte flips: {kind}", bytes(mutated), original, queries, must_refuse=in_data)


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(15)
@given(data=st.data())
def test_truncated_maps_are_refused(maps, queries, kind, data):
    content, _, _, original = maps[kind]
    cut = data.draw(st.integers(0, len(content) - 1), label="length")
    judge(f"map truncations: {kind}", content[:cut], original, queries, must_refuse=True)


# -- metadata and tensor edits ------------------------------------------------------------

SPECIAL = [None, True, False, 0, -1, 1, 7, 8, 4096, 4097, 20000, 10**30, 480.0, 480.5, 1e308,
           float("nan"), float("inf"), "", "480", "xfeat", "ace", "aceg", "keypoints", [], {},
           [1, 2], {"a": 1}, [[[[[[[[1]]]]]]]]]
json_values = st.recursive(
    st.one_of(st.sampled_from(SPECIAL), st.integers(-10**6, 10**6), st.floats(),
              st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=8)


@st.composite
def metadata_edit(draw, meta: dict) -> dict:
    """``meta`` with one field (top level or inside a config or stats) replaced, deleted or
    added."""
    meta = json.loads(json.dumps(meta))
    where = meta
    nested = [k for k in ("regressor_config", "head_config", "stats") if isinstance(meta.get(k), dict)]
    if nested and draw(st.booleans(), label="nested"):
        where = meta[draw(st.sampled_from(nested), label="object")]
    key = draw(st.sampled_from(sorted(where) + ["added"]), label="field")
    if key != HASH_KEY and draw(st.integers(0, 4), label="delete") == 0:
        where.pop(key, None)
    else:
        where[key] = draw(json_values, label="value")
    return meta


def _file(tensors: dict, meta: dict) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.map"
        save_file(tensors, str(path), metadata={"aceg_map": json.dumps(meta)})
        return path.read_bytes()


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(40)
@given(data=st.data())
def test_metadata_edits_under_the_old_hash_are_refused(maps, queries, kind, data):
    _, tensors, meta, original = maps[kind]
    edited = data.draw(metadata_edit(meta), label="metadata")
    judge(f"map metadata edits, hash kept: {kind}", _file(tensors, edited), original,
          queries, meta=None)


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(40)
@given(data=st.data())
def test_rehashed_or_legacy_metadata_edits_are_refused_or_read_as_written(maps, queries, kind,
                                                                          data):
    _, tensors, meta, original = maps[kind]
    edited = data.draw(metadata_edit(meta), label="metadata")
    if data.draw(st.booleans(), label="legacy (no hash)"):
        edited = {k: v for k, v in edited.items() if k != HASH_KEY}
        if edited.get("format_version") == 4:
            edited["format_version"] = 2 if kind == "anchors" else 1
        target = f"map metadata edits, legacy map: {kind}"
    else:
        edited = with_hash(tensors, edited, "map")
        target = f"map metadata edits, hash recomputed: {kind}"
    judge(target, _file(tensors, edited), original, queries, meta=edited)


@st.composite
def tensor_edit(draw, tensors: dict) -> dict:
    """``tensors`` with one changed: another dtype, shape, NaN or inf, removed, or an extra."""
    tensors = dict(tensors)
    name = draw(st.sampled_from(sorted(tensors)), label="tensor")
    change = draw(st.sampled_from(["dtype", "shape", "nan", "inf", "huge", "remove", "extra"]),
                  label="change")
    t = tensors[name]
    if change == "dtype":
        dtype = draw(st.sampled_from([torch.float16, torch.float32, torch.float64, torch.int8,
                                      torch.int32, torch.uint8, torch.bfloat16]))
        tensors[name] = t.to(dtype)
    elif change == "shape":
        tensors[name] = t.reshape(-1)[: max(t.numel() - draw(st.integers(0, 3)), 0)].contiguous()
    elif change in ("nan", "inf", "huge") and t.is_floating_point() and t.numel():
        t = t.clone()
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = {"nan": float("nan"), "inf": float("inf"),
                                                             "huge": 1e30}[change]
        tensors[name] = t
    elif change == "remove":
        del tensors[name]
    else:
        tensors[draw(st.sampled_from(["extra", "code", "head.x", "scene_centre2"]))] = torch.zeros(3)
    return tensors


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(25)
@given(data=st.data())
def test_rehashed_tensor_edits_are_refused_or_read_as_written(maps, queries, kind, data):
    _, tensors, meta, original = maps[kind]
    edited = data.draw(tensor_edit(tensors), label="tensors")
    judge(f"map tensor edits, hash recomputed: {kind}",
          _file(edited, with_hash(edited, meta, "map")), original, queries, meta=meta)
