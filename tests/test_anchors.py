"""The anchor model (aceg.model.anchors): attention with points as values, its map files,
mapping and localization."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.errors import AcegError
from aceg.localization.localizer import Localizer
from aceg.mapping.anchor_map import anchor_code
from aceg.mapping.mapper import map_scene
from aceg.model.anchors import AnchorConfig, AnchorRegressor, dequantize_keys, quantize_keys
from aceg.model.common import LOG_UNC_MAX, LOG_UNC_MIN
from aceg.model.map_file import MapData, load_map, load_regressor, save_map, save_regressor
from aceg.model.regressor import RegressorConfig
from planar_scenes import corner_scene
from test_mapping import _held_out_errors


def test_fresh_model_reads_the_nearest_anchor_point():
    """At initialisation the embedding is the identity on unit features: a query equal to an
    anchor's feature reads that anchor's point, and an ambiguous query (two anchors alike)
    ranks as less certain than an unambiguous one."""
    torch.manual_seed(0)
    model = AnchorRegressor(AnchorConfig(feature_dim=8, hidden=16))
    feats = F.normalize(torch.randn(50, 8), dim=1) * 3.0  # scale does not matter
    points = torch.randn(50, 3) * 2
    code = model.make_code(feats, points)
    assert code.shape == (50, 11)
    coords, log_unc = model(feats[[3, 7]], code)
    assert torch.allclose(coords, points[[3, 7]], atol=1e-5)
    twin = model.make_code(torch.cat([feats, feats[:1] * 1.001]), torch.cat([points, points[:1]]))
    _, unc = model(feats[:2], twin)  # patch 0 now matches two anchors equally well
    assert unc[0] > unc[1] and LOG_UNC_MIN <= unc.min() and unc.max() <= LOG_UNC_MAX
    with pytest.raises(ValueError, match="anchor model reads"):
        model(feats, torch.zeros(4, 9))
    with pytest.raises(ValueError, match="at least one anchor"):
        model.make_code(feats[:0], points[:0])


def test_queries_beyond_the_budget_are_not_read():
    """Past ``max_queries`` patches an evenly spaced subset is read (the same answers as
    alone) and the others come back NaN, which the localizer drops."""
    torch.manual_seed(1)
    model = AnchorRegressor(AnchorConfig(feature_dim=8, hidden=16, max_queries=10))
    code = model.make_code(torch.randn(30, 8), torch.randn(30, 3))
    feats = torch.randn(25, 8)
    coords, log_unc = model(feats, code)
    read = torch.isfinite(coords).all(1)
    assert int(read.sum()) == 10 and read[0] and read[-1]
    alone, alone_unc = model(feats[read], code)
    assert torch.equal(coords[read], alone) and torch.equal(log_unc[read], alone_unc)
    assert (log_unc[~read] == LOG_UNC_MAX).all()


def test_soft_top_k_interpolates_between_anchors():
    model = AnchorRegressor(AnchorConfig(feature_dim=4, hidden=8, top_k=2, temperature=1e3))
    feats = torch.eye(4)
    points = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [9.0, 9, 9], [9.0, 9, 9]])
    code = model.make_code(feats, points)
    query = F.normalize(torch.tensor([[1.0, 1.0, 0, 0]]), dim=1)  # equally like anchors 0 and 1
    coords, _ = model(query, code)
    assert torch.allclose(coords, torch.tensor([[1.0, 0, 0]]), atol=1e-3)


def test_anchor_regressor_file_and_map_round_trip(tmp_path):
    model = AnchorRegressor(AnchorConfig(hidden=16))
    with torch.no_grad():
        model.residual[2].weight.normal_()
    path = tmp_path / "anchors.safetensors"
    save_regressor(path, model, "xfeat")
    back = load_regressor(path)
    assert isinstance(back.model, AnchorRegressor) and back.identity == model.identity()
    assert back.model.config == model.config
    assert not any(p.requires_grad for p in back.model.parameters())
    other = AnchorRegressor(AnchorConfig(hidden=16, top_k=2))
    assert other.identity() != AnchorRegressor(AnchorConfig(hidden=16)).identity()


def test_anchor_keys_are_stored_in_8_bits_and_read_back_exactly(tmp_path):
    """A map stores anchor keys as int8 (format version 2 on; 4 adds the content hash);
    the code made in memory is already rounded, so the map reads back bit for bit and
    localizes as the code it was made from. Version 1 maps (float16 keys) still read;
    unknown versions are refused."""
    torch.manual_seed(3)
    model = AnchorRegressor(AnchorConfig(feature_dim=16, hidden=8))
    feats = torch.randn(500, 16)
    code = model.make_code(feats, torch.randn(500, 3))
    keys = code[:, :16]
    assert torch.allclose(keys.norm(dim=1), torch.ones(500), atol=1e-5)
    assert torch.equal(quantize_keys(dequantize_keys(quantize_keys(keys))), quantize_keys(keys))
    exact = F.normalize(model.embed(feats), dim=1)
    assert (keys * exact).sum(1).min() > 0.999  # rounding moves a cosine by < 0.001
    data = MapData(method="aceg", encoder="xfeat", stride=8, short_side=120,
                   scene_centre=np.zeros(3), code=code, regressor=model.identity(),
                   regressor_config=model.config)
    size = save_map(tmp_path / "m.map", data)
    with safe_open(str(tmp_path / "m.map"), framework="pt") as f:
        assert f.get_tensor("code_keys").dtype == torch.int8
        meta = json.loads(f.metadata()["aceg_map"])
    assert meta["format_version"] == 4 and size < 500 * (16 + 12) + 2000
    meta = {k: v for k, v in meta.items() if k != "sha256"}  # edited below: as older maps
    back = load_map(tmp_path / "m.map")
    assert torch.equal(back.code, code)
    assert torch.equal(model(feats[:50], back.code)[0], model(feats[:50], code)[0])
    tensors = {"scene_centre": torch.zeros(3, dtype=torch.float64),
               "code_keys": keys.half(), "code_points": code[:, 16:].contiguous()}
    for version in (1, 5):
        save_file(tensors, str(tmp_path / f"v{version}.map"),
                  metadata={"aceg_map": json.dumps(dict(meta, format_version=version))})
    assert torch.allclose(load_map(tmp_path / "v1.map").code, code, atol=1e-3)
    # A map made while the budget was part of the identity stays valid with the same weights.
    old_meta = dict(meta, format_version=1, regressor=model.identity_with_budget(12288),
                    regressor_config=dict(meta["regressor_config"], max_anchors=12288))
    save_file(tensors, str(tmp_path / "old.map"), metadata={"aceg_map": json.dumps(old_meta)})
    assert len(Localizer(tmp_path / "old.map", regressor=model).data.code) == 500
    other = AnchorRegressor(AnchorConfig(feature_dim=16, hidden=8, top_k=2))
    with pytest.raises(AcegError, match="made with regressor"):
        Localizer(tmp_path / "old.map", regressor=other)
    with pytest.raises(AcegError, match="v5.map.*format version 5 not supported"):
        load_map(tmp_path / "v5.map")
    # A recorded budget other than the one hashed into the old identity is another model.
    save_file(tensors, str(tmp_path / "old2.map"), metadata={"aceg_map": json.dumps(
        dict(old_meta, regressor_config=dict(meta["regressor_config"], max_anchors=4096)))})
    with pytest.raises(AcegError, match="made with regressor"):
        Localizer(tmp_path / "old2.map", regressor=model)
    zero = quantize_keys(keys)
    zero[7] = 0
    v1_meta = dict(meta, format_version=1)
    meta = dict(meta, format_version=2)
    broken = {  # name: (tensors, metadata, expected message)
        "flat": (dict(tensors, code_keys=quantize_keys(keys).flatten()), meta, "do not fit together"),
        "float": (dict(tensors, code_keys=keys.contiguous()), meta, "keys of type torch.float32"),
        "v1int8": (dict(tensors, code_keys=quantize_keys(keys)), v1_meta, "keys of type torch.int8"),
        "short": (dict(tensors, code_keys=quantize_keys(keys)[:10]), meta, "do not fit together"),
        "halfpoints": (dict(tensors, code_keys=quantize_keys(keys), code_points=code[:, 16:].half()),
                       meta, "points of type torch.float16"),
        "zero": (dict(tensors, code_keys=zero), meta, "all zeros"),
    }
    for name, (bad, bad_meta, message) in broken.items():
        save_file(bad, str(tmp_path / f"{name}.map"), metadata={"aceg_map": json.dumps(bad_meta)})
        with pytest.raises(AcegError, match=f"{name}.map: .*{message}"):
            load_map(tmp_path / f"{name}.map")
    with pytest.raises(ValueError, match="all zeros"):
        save_map(tmp_path / "zero-key.map", replace(data, code=torch.cat([code[:, :16] * 0, code[:, 16:]], 1)))
    with pytest.raises(ValueError, match="NaN"):
        save_map(tmp_path / "nan.map", replace(data, code=code.clone().fill_(float("nan"))))
    assert MapData(method="aceg", encoder="xfeat", stride=8, short_side=120, scene_centre=np.zeros(3),
                   regressor_config=RegressorConfig()).metadata()["format_version"] == 4


def test_map_localize_with_anchors_and_refusals(tmp_path):
    """Map a tiny scene with the anchor model (depth maps, then triangulation), localize
    held-out views accurately, and refuse the map with another regressor."""
    scene = corner_scene(tmp_path / "s", n=14, seed=1, depth=True)
    mapping, queries = scene.split_every(5, 2)
    path = tmp_path / "anchors.safetensors"
    save_regressor(path, AnchorRegressor(), "xfeat")
    for use_depth in (True, False):
        out = tmp_path / f"a{int(use_depth)}.map"
        result = map_scene(mapping, out, regressor=path, use_depth=use_depth, short_side=120,
                           progress=False)
        data = load_map(out)
        assert isinstance(data.regressor_config, AnchorConfig) and result.iterations == 0
        assert data.code.shape == (result.stats["anchors"], 67) and result.stats["anchors"] > 100
        assert torch.isfinite(data.code).all()
        errs = _held_out_errors(queries, out, regressor=path)
        # The transformer with a random regressor misses by ~1.4 m / 27 deg here
        # (test_mapping.py); anchors, with exact depth, by ~0.1 m / 2-4 deg on 160x120 views.
        assert np.median(errs[:, 1]) < 0.2 and np.median(errs[:, 0]) < 5.0, errs
    assert "triangulated" in load_map(tmp_path / "a0.map").stats
    with pytest.raises(AcegError, match="made with regressor"):
        Localizer(tmp_path / "a1.map", regressor=AnchorRegressor(AnchorConfig(top_k=2)))
    few = map_scene(mapping, tmp_path / "few.map", regressor=path, use_depth=True, short_side=120,
                    max_anchors=120, progress=False)
    assert few.stats["anchors"] == 120 and load_map(tmp_path / "few.map").code.shape == (120, 67)
    assert few.stats["max_anchors"] == 120
    assert load_map(tmp_path / "few.map").regressor_config.max_anchors == 120  # as built
    assert len(Localizer(tmp_path / "few.map", regressor=path).data.code) == 120
    assert few.file_size < 120 * 76 + 2000  # 64 int8 + 3 float32 an anchor, plus metadata
    with pytest.raises(AcegError, match="'max_anchors' does not apply to the ace model"):
        map_scene(mapping, tmp_path / "x.map", model="ace", max_anchors=120, progress=False)
    with pytest.raises(AcegError, match="'preset' does not apply to the anchors model"):
        map_scene(mapping, tmp_path / "x.map", preset="fast", progress=False)
    with pytest.raises(AcegError, match="holds the anchors model, not the transformer model"):
        map_scene(mapping, tmp_path / "x.map", "transformer", path, progress=False)


def test_anchor_code_skips_featureless_patches():
    """Patches without a 3-D point or with an all-zero feature (no key direction) are not
    anchors; a budget below 1 is refused rather than read as "no limit"."""
    model = AnchorRegressor(AnchorConfig(feature_dim=16, hidden=8))
    features = torch.randn(40, 16).half()
    features[5] = 0
    valid = torch.ones(40, dtype=torch.bool)
    valid[7] = False
    buffer = SimpleNamespace(features=features, target=torch.randn(40, 3), target_valid=valid,
                             dropped=0)
    with pytest.warns(UserWarning, match="only 38 mapping patches"):
        code, stats = anchor_code(model, buffer, torch.Generator().manual_seed(0))
    assert stats["anchors"] == 38 and torch.equal(code[:, 16:], buffer.target[valid & (torch.arange(40) != 5)])
    assert (code[:, :16] != 0).any(dim=1).all()
    with pytest.raises(AcegError, match="must be positive"):
        anchor_code(model, buffer, torch.Generator(), max_anchors=0)


class _Interrupted(list):
    """A scene list whose ``stop``-th read raises, as a killed run would stop."""

    def __init__(self, items, stop):
        super().__init__(items)
        self.reads, self.stop = 0, stop

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.stop:
            raise KeyboardInterrupt
        return super().__getitem__(i)


def test_cli_refuses_a_zero_anchor_budget_and_a_transformer_start(tmp_path, capsys):
    """`aceg map --max-anchors 0` stops before writing anything, and `aceg pretrain-anchors
    --init` refuses a map-code transformer file, each with a one-line error."""
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene
    from aceg.model.map_file import WEIGHTS_DIR

    for i in range(2):
        generate_scene(tmp_path / "data" / f"scene_{i}", 300 + i, frames_mapping=6, frames_query=3,
                       height=64, width=80, splits=("mapping", "query_light"), contact_sheet=False)
    capsys.readouterr()
    assert main(["map", str(tmp_path / "data" / "scene_0" / "mapping"), str(tmp_path / "t.map"),
                 "--max-anchors", "0"]) == 2
    assert "--max-anchors must be positive" in capsys.readouterr().err
    assert not (tmp_path / "t.map").exists()
    transformer = WEIGHTS_DIR / "transformer-xfeat.safetensors"
    assert main(["pretrain-anchors", str(tmp_path / "data"), str(tmp_path / "x"), "--held-out", "1",
                 "--init", str(transformer)]) == 2
    assert "not an anchor regressor" in capsys.readouterr().err


def test_learned_read_out_files_are_refused_and_nearest_ones_read(tmp_path):
    """A regressor file recording the removed learned read-out is a one-line error naming
    it; one recording the nearest read-out (every shipped file does) loads with the same
    identity as the model it was saved from."""
    model = AnchorRegressor(AnchorConfig(feature_dim=8, hidden=16))
    for readout, ok in (("nearest", True), ("learned", False)):
        path = tmp_path / f"{readout}.safetensors"
        config = {**model.config.to_dict(), "readout": readout, "candidates": 16, "readout_hidden": 32}
        meta = {"format_version": 1, "config": config, "encoder": "xfeat"}
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
                  metadata={"aceg_regressor": json.dumps(meta)})
        if ok:
            assert load_regressor(path).identity == model.identity()
        else:
            with pytest.raises(AcegError, match=f"{path.name}.*read-out 'learned' is not supported"):
                load_regressor(path)


def test_list_search_matches_exact_search_and_caches_per_code():
    """The inverted-file search ("lists") probing every list returns exactly the exact
    search's anchors; probing a few lists finds the same nearest anchor for most queries;
    the lists are built once per code and rebuilt when the code changes."""

    torch.manual_seed(5)
    centres = F.normalize(torch.randn(40, 16), dim=1)
    feats = F.normalize(centres.repeat(30, 1) + 0.3 * torch.randn(1200, 16), dim=1)
    exact = AnchorRegressor(AnchorConfig(feature_dim=16, hidden=8, search="exact"))
    code = exact.make_code(feats, torch.randn(1200, 3))
    queries = feats[:300] + 0.05 * torch.randn(300, 16)
    every = AnchorRegressor(replace(exact.config, search="lists", list_size=50, lists_probed=24))
    few = AnchorRegressor(replace(exact.config, search="lists", list_size=50, lists_probed=4))
    for m in (every, few):
        m.load_state_dict(exact.state_dict())
    assert every.identity() == exact.identity()  # cost only: maps stay valid
    with torch.no_grad():
        c0, u0 = exact(queries, code)
        c1, u1 = every(queries, code)
        c2, _ = few(queries, code)
    assert torch.equal(c0, c1) and torch.allclose(u0, u1)
    same = (c2 == c0).all(1).float().mean()
    assert same > 0.8
    lists = few.anchor_lists(code)
    assert lists is not None and few.anchor_lists(code) is lists
    assert lists.index.nlist == 24 and lists.index.ntotal == 1200
    code.mul_(1.0)  # edited in place: not served stale lists
    assert few.anchor_lists(code) is not lists
    assert few.anchor_lists(code[:150].clone()) is None  # small code: exact search


def test_map_of_the_identity_embedding_finds_its_shipped_file(tmp_path):
    """A map made with the shipped identity embedding (an earlier default) opens with no
    regressor given, its weights found by the identity the map records; given the default
    anchor weights instead, it is refused with an error naming the file that reads it."""
    from aceg.model.map_file import WEIGHTS_DIR

    identity = WEIGHTS_DIR / "anchors-identity-xfeat.safetensors"
    model = load_regressor(identity).model
    feats = F.normalize(torch.randn(300, 64), dim=1)
    data = MapData(method="aceg", encoder="xfeat", stride=8, short_side=120, scene_centre=np.zeros(3),
                   code=model.make_code(feats, torch.randn(300, 3)), regressor=model.identity(),
                   regressor_config=model.config)
    save_map(tmp_path / "old.map", data)
    default = WEIGHTS_DIR / "anchors-xfeat.safetensors"
    assert load_regressor(default).identity != model.identity()
    loc = Localizer(tmp_path / "old.map")
    assert loc.regressor.source == str(identity) and len(loc.data.code) == 300
    with pytest.raises(AcegError, match="old.map: .*shipped anchors-identity-xfeat.safetensors, "
                                        "found by identity: leave --regressor out"):
        Localizer(tmp_path / "old.map", regressor=default)
    assert len(Localizer(tmp_path / "old.map", regressor=identity).data.code) == 300
