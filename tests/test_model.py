"""Encoder geometry, regressor structure, homogeneous output, map files and checkpoints."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from aceg.errors import AcegError
from aceg.model.ace_head import AceHead, AceHeadConfig
from aceg.model.anchors import AnchorConfig
from aceg.model.encoder import get_encoder, patch_centres
from aceg.model.homogeneous import dehomogenize
from aceg.model.map_file import (
    MapData,
    check_regressor_matches,
    default_regressor,
    load_map,
    load_regressor,
    save_map,
    save_regressor,
)
from aceg.model.regressor import RegressorConfig, SceneRegressor, random_regressor

TINY = RegressorConfig(width=32, depth=2, heads=2, code_tokens=8, mlp_ratio=2)
TINY_TOKENS = RegressorConfig(width=32, depth=2, heads=2, code_tokens=8, mlp_ratio=2,
                              code_form="tokens")


def test_patch_centres_are_cell_pixel_means():
    s = 8
    c = patch_centres(3, 4, s)
    assert c.shape == (12, 2)
    # Cell (i, j) = pixels [j*s, j*s+s-1] x [i*s, i*s+s-1]; centre = mean pixel coordinate.
    for i in range(3):
        for j in range(4):
            u = np.arange(j * s, j * s + s).mean()
            v = np.arange(i * s, i * s + s).mean()
            assert tuple(c[i * 4 + j]) == (u, v)
    assert tuple(patch_centres(1, 2, 4)[1]) == (5.5, 1.5)


def test_xfeat_encoder_shapes_and_alignment():
    enc = get_encoder("xfeat")
    assert (enc.name, enc.feature_dim, enc.stride) == ("xfeat", 64, 8)
    rng = np.random.default_rng(0)
    img = (rng.random((120, 200, 3)) * 255).astype(np.uint8)  # not multiples of 32
    import cv2

    img = cv2.GaussianBlur(img, (0, 0), 2)
    f = enc.encode(img)
    assert f.shape == (1, 64, 15, 25) and f.dtype == torch.float32
    assert torch.allclose(f.pow(2).mean(1), torch.ones(1, 15, 25), atol=1e-4)
    # Shifting the image by 32 px shifts the features by 4 cells (best match among
    # shifts of 2..6 cells): the cell grid is aligned with the pixels.
    shifted = np.zeros_like(img)
    shifted[:, 32:] = img[:, :-32]
    g = enc.encode(shifted)
    a = f[0][:, 4:11, 8:16]
    sims = [
        float(torch.nn.functional.cosine_similarity(a, g[0][:, 4:11, 8 + k: 16 + k], dim=0).mean())
        for k in range(2, 7)
    ]
    assert int(np.argmax(sims)) + 2 == 4 and max(sims) > 0.8
    assert enc.centres(15, 25).shape == (375, 2)
    with pytest.raises(ValueError, match="multiple of the stride"):
        enc.encode(img[:, :-3])


def test_xfeat_up2_encoder_is_stride_4():
    enc = get_encoder("xfeat-up2")
    f = enc.encode(np.zeros((64, 96, 3), np.uint8))
    assert enc.stride == 4 and f.shape == (1, 64, 16, 24)


def test_unknown_encoder_is_an_error():
    with pytest.raises(AcegError, match="unknown encoder"):
        get_encoder("nope")


def test_regressor_has_no_patch_patch_attention():
    reg = random_regressor(TINY, seed=1)
    code = reg.init_code(torch.Generator().manual_seed(0))
    f = torch.randn(50, TINY.feature_dim)
    with torch.no_grad():
        xyz, unc = reg(f, code)
        g = f.clone()
        g[7] = torch.randn(TINY.feature_dim) * 10
        xyz2, unc2 = reg(g, code)
        part, _ = reg(f[:10], code)
    others = torch.arange(50) != 7
    assert torch.equal(xyz[others], xyz2[others]) and torch.equal(unc[others], unc2[others])
    assert not torch.allclose(xyz[7], xyz2[7])
    assert torch.allclose(part, xyz[:10], atol=1e-6)  # batch composition does not matter
    assert xyz.shape == (50, 3) and unc.shape == (50,)


def test_cross_attention_is_multi_head_softmax_attention_over_the_code():
    """The fused-kernel layout of CrossBlock computes plain multi-head attention: each patch's
    output is softmax(q k^T / sqrt(dh)) v over the code tokens, head by head."""
    torch.manual_seed(0)
    block = SceneRegressor(TINY).blocks[0].eval()
    x, code = torch.randn(7, TINY.width), torch.randn(TINY.code_tokens, TINY.width)  # tokens
    h, dh = TINY.heads, TINY.width // TINY.heads
    q = block.q(block.norm_q(x))
    k, v = block.kv(block.norm_code(code)).chunk(2, dim=-1)
    heads = []
    for i in range(h):
        s = slice(i * dh, (i + 1) * dh)
        weights = torch.softmax(q[:, s] @ k[:, s].T / dh**0.5, dim=-1)
        heads.append(weights @ v[:, s])
    y = x + block.out(torch.cat(heads, dim=1))
    expected = y + block.mlp(block.norm_mlp(y))
    with torch.no_grad():
        torch.testing.assert_close(block(x, *block.project_code(code)), expected, rtol=1e-5, atol=1e-5)


def test_regressor_output_depends_on_code():
    reg = random_regressor(TINY, seed=1)
    f = torch.randn(20, TINY.feature_dim)
    with torch.no_grad():
        a, _ = reg(f, reg.init_code(torch.Generator().manual_seed(0)))
        b, _ = reg(f, reg.init_code(torch.Generator().manual_seed(1)) * 50)
    assert not torch.allclose(a, b)


def test_random_regressor_is_deterministic():
    assert random_regressor(TINY, 3).identity() == random_regressor(TINY, 3).identity()
    assert random_regressor(TINY, 3).identity() != random_regressor(TINY, 4).identity()


def test_dehomogenize_bounds():
    raw = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 1.0, -100.0], [1.0, 1.0, 1.0, 1e4]])
    out = dehomogenize(raw, 0.01, 4.0)
    assert torch.allclose(out[0], torch.tensor([1.0, 2.0, 3.0]), atol=1e-5)  # w = 1 at h = 0
    assert torch.allclose(out[1], torch.full((3,), 4.0), atol=1e-3)  # scale at most 4
    assert torch.allclose(out[2], torch.full((3,), 0.01), atol=1e-6)  # at least 0.01


def _aceg_map(reg: SceneRegressor) -> MapData:
    return MapData(method="aceg", encoder="xfeat", stride=8, short_side=480,
                   scene_centre=np.array([1.0, 2.0, 3.5]), code=reg.init_code(),
                   regressor=reg.identity(), regressor_config=reg.config, scene="s", frames=3,
                   stats={"loss": 1.5})


def test_map_file_round_trip_aceg(tmp_path):
    reg = random_regressor(TINY, 0)
    data = _aceg_map(reg)
    size = save_map(tmp_path / "a.map", data)
    assert size < 2_000_000
    back = load_map(tmp_path / "a.map")
    assert back.method == "aceg" and back.encoder == "xfeat" and back.short_side == 480
    # keys/values codes are stored in half precision, token codes in full precision
    assert back.code.dtype == torch.float32 and torch.equal(back.code, data.code.half().float())
    assert back.regressor == reg.identity()
    assert np.array_equal(back.scene_centre, data.scene_centre)
    assert back.stats == {"loss": 1.5} and back.regressor_config == TINY
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind
    tokens = random_regressor(TINY_TOKENS, 0)
    data = _aceg_map(tokens)
    save_map(tmp_path / "t.map", data)
    back = load_map(tmp_path / "t.map")
    assert back.code.shape == (8, 32) and torch.equal(back.code, data.code)


def test_map_code_of_the_wrong_shape_is_refused(tmp_path):
    reg = random_regressor(TINY, 0)
    data = _aceg_map(reg)
    data.code = random_regressor(TINY_TOKENS, 0).init_code()  # (N, D) for a keys/values model
    save_map(tmp_path / "a.map", data)
    with pytest.raises(AcegError, match="a.map.*shape"):
        load_map(tmp_path / "a.map")
    with pytest.raises(ValueError, match="shape"):
        reg(torch.randn(3, TINY.feature_dim), data.code)


def test_code_forms():
    """"tokens": (N, D), projected by each block; "keys_values": (depth, 2, N, D) read as
    each block's keys and values; a fresh one is the projection of random tokens."""
    assert TINY.code_shape == (2, 2, 8, 32) and TINY_TOKENS.code_shape == (8, 32)
    tok = random_regressor(TINY_TOKENS, 5)
    kv = SceneRegressor(TINY)
    kv.load_state_dict(tok.state_dict())  # same weights, other code form
    tokens = tok.init_code(torch.Generator().manual_seed(3))
    code = kv.init_code(torch.Generator().manual_seed(3))
    for i, block in enumerate(tok.blocks):
        k, v = block.project_code(tokens)
        assert torch.equal(code[i, 0], k) and torch.equal(code[i, 1], v)
    f = torch.randn(11, TINY.feature_dim)
    with torch.no_grad():
        torch.testing.assert_close(kv(f, code), tok(f, tokens))
        # keys and values are free: changing one block's values changes the output
        code2 = code.clone()
        code2[1, 1] += 1.0
        assert not torch.allclose(kv(f, code2)[0], kv(f, code)[0])
    # the projections are not read by the keys/values forward pass
    skipped = {id(p) for b in kv.blocks for p in [*b.kv.parameters(), *b.norm_code.parameters()]}
    used = {id(p) for p in kv.forward_parameters()}
    assert used and not used & skipped and len(tok.forward_parameters()) == len(list(tok.parameters()))
    # same weights, other form: another identity, so maps of one are refused by the other
    assert kv.identity() != tok.identity()


def test_anchored_code_puts_keys_on_the_scenes_own_patches():
    """Block 0's keys of an anchored code are the query vectors of distinct mapping patches;
    values, and token codes, are those of init_code; bad features are a clear error."""
    cfg = RegressorConfig(width=32, depth=2, heads=2, code_tokens=16)
    model = random_regressor(cfg, seed=3)
    feats = torch.randn(40, cfg.feature_dim)
    code = model.anchored_code(feats, torch.Generator().manual_seed(0))
    assert code.shape == cfg.code_shape
    with torch.no_grad():
        b0 = model.blocks[0]
        q = b0.q(b0.norm_q(model.embed(feats)))  # (40, D)
    dist = (code[0, 0][:, None] - q[None]).norm(dim=-1)  # (16, 40)
    best = dist.argmin(1)
    assert torch.allclose(dist.min(1).values, torch.zeros(16), atol=1e-5)
    assert len(set(best.tolist())) == 16  # 16 distinct patches
    fresh = model.init_code(torch.Generator().manual_seed(0))
    assert torch.equal(code[:, 1], fresh[:, 1])
    assert not torch.allclose(code[1, 0], fresh[1, 0])  # block 1 anchored as well
    # fewer patches than tokens: drawn with replacement
    assert model.anchored_code(feats[:5]).shape == cfg.code_shape
    with pytest.raises(ValueError, match="features"):
        model.anchored_code(torch.zeros(0, cfg.feature_dim))
    tokens = random_regressor(RegressorConfig(width=32, depth=2, heads=2, code_tokens=16,
                                              code_form="tokens"), seed=3)
    assert torch.equal(tokens.anchored_code(feats, torch.Generator().manual_seed(0)),
                       tokens.init_code(torch.Generator().manual_seed(0)))


def test_config_files_without_code_form_are_tokens_and_keep_their_identity():
    from aceg.model.common import weights_hash

    legacy = {k: v for k, v in TINY_TOKENS.to_dict().items() if k != "code_form"}
    assert RegressorConfig.from_dict(legacy) == TINY_TOKENS
    reg = random_regressor(TINY_TOKENS, 1)
    assert reg.identity() == weights_hash(reg.state_dict(), legacy)
    with pytest.raises(ValueError, match="code_form"):
        RegressorConfig(code_form="pixels")


def test_map_file_round_trip_ace(tmp_path):
    head = AceHead(AceHeadConfig(64, 32, 1))
    data = MapData(method="ace", encoder="xfeat", stride=8, short_side=240,
                   scene_centre=np.zeros(3), head_state=head.state_dict(),
                   head_config=head.config)
    save_map(tmp_path / "b.map", data)
    back = load_map(tmp_path / "b.map")
    f = torch.randn(5, 64)
    with torch.no_grad():
        a, _ = head(f)
        b, _ = back.build_head()(f)
    assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)  # stored in half precision


def test_map_regressor_mismatch_is_a_clear_error(tmp_path):
    reg = random_regressor(TINY, 0)
    save_map(tmp_path / "a.map", _aceg_map(reg))
    data = load_map(tmp_path / "a.map")
    other = default_regressor("transformer", "xfeat", TINY, warn=False)
    other_model = random_regressor(TINY, 5)
    from aceg.model.map_file import resolve_regressor

    check_regressor_matches(data, resolve_regressor(reg, "transformer"), tmp_path / "a.map")
    with pytest.raises(AcegError, match="made with regressor"):
        check_regressor_matches(data, resolve_regressor(other_model, None), tmp_path / "a.map")
    with pytest.raises(AcegError, match="holds the transformer model, not the anchors model"):
        resolve_regressor(reg, "anchors")
    assert other.identity != reg.identity or other.model.config == TINY


def test_bad_map_files(tmp_path):
    with pytest.raises(AcegError, match="not found"):
        load_map(tmp_path / "missing.map")
    (tmp_path / "junk.map").write_bytes(b"not a safetensors file at all")
    with pytest.raises(AcegError, match="junk.map"):
        load_map(tmp_path / "junk.map")
    reg = random_regressor(TINY, 0)
    save_regressor(tmp_path / "r.safetensors", reg, "xfeat")
    with pytest.raises(AcegError, match="not an aceg map file"):
        load_map(tmp_path / "r.safetensors")
    with pytest.raises(AcegError, match="not an aceg regressor"):
        save_map(tmp_path / "a.map", _aceg_map(reg))
        load_regressor(tmp_path / "a.map")


def test_regressor_checkpoint_round_trip(tmp_path):
    reg = random_regressor(TINY, 2)
    code = torch.randn(*TINY.code_shape)
    save_regressor(tmp_path / "r.safetensors", reg, "xfeat", code_init=code)
    back = load_regressor(tmp_path / "r.safetensors")
    assert back.identity == reg.identity() and back.encoder == "xfeat"
    assert torch.equal(back.code_init, code)
    assert not any(p.requires_grad for p in back.model.parameters())
    # a starting code of the other form's shape is refused when the file is read
    save_regressor(tmp_path / "bad.safetensors", reg, "xfeat",
                   code_init=torch.randn(TINY.code_tokens, TINY.width))
    with pytest.raises(AcegError, match="bad.safetensors.*code_init"):
        load_regressor(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("model", ["anchors", "transformer"])
def test_shipped_regressor_is_the_default(model):
    """The package ships pre-trained XFeat weights per regressor model (< 20 MB,
    safetensors, named <model>-xfeat) and the model's default regressor is that file,
    loaded without a warning."""
    from aceg.model import map_file

    shipped = map_file.WEIGHTS_DIR / f"{model}-xfeat.safetensors"
    assert shipped.is_file() and shipped.stat().st_size < 20 * 2**20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = default_regressor(model)
    assert reg.identity == load_regressor(shipped).identity and reg.encoder == "xfeat"
    assert reg.source == str(shipped) and map_file.regressor_model(reg) == model


#: The identity every map made with the shipped anchor model records; it was shipped as
#: regressor-xfeat.safetensors until that file was renamed anchors-xfeat.safetensors.
SHIPPED_ANCHORS_IDENTITY = "0d83cf9c425b07e2"


def test_maps_find_their_shipped_weights_by_identity(tmp_path):
    """A map records the identity of its regressor, not a file name: a map made while the
    anchor model was shipped as regressor-xfeat.safetensors resolves, with no regressor
    given, to anchors-xfeat.safetensors; a map of each shipped file to that file; a map of
    unknown weights is an error saying what to run."""
    from aceg.model import map_file

    anchors = load_regressor(map_file.WEIGHTS_DIR / "anchors-xfeat.safetensors")
    old = MapData(method="aceg", encoder="xfeat", stride=8, short_side=480, scene_centre=np.zeros(3),
                  regressor=SHIPPED_ANCHORS_IDENTITY, regressor_config=anchors.model.config)
    assert old.model == "anchors"
    assert map_file.regressor_for_map(old, tmp_path / "old.map").source == anchors.source
    for path in sorted(map_file.WEIGHTS_DIR.glob("*.safetensors")):
        reg = load_regressor(path)
        data = MapData(method="aceg", encoder="xfeat", stride=8, short_side=480,
                       scene_centre=np.zeros(3), regressor=reg.identity,
                       regressor_config=reg.model.config)
        assert map_file.regressor_for_map(data, tmp_path / "m.map").source == str(path)
    unknown = MapData(method="aceg", encoder="xfeat", stride=8, short_side=480,
                      scene_centre=np.zeros(3), regressor="0123456789abcdef",
                      regressor_config=TINY)
    with pytest.raises(AcegError, match=r"u.map: map was made with transformer regressor "
                                        r"0123456789abcdef, .*--regressor WEIGHTS.safetensors.*"
                                        r"aceg map SCENE .*u.map --model transformer"):
        map_file.regressor_for_map(unknown, tmp_path / "u.map")


@pytest.mark.parametrize("model, config_class", [("transformer", RegressorConfig),
                                                 ("anchors", AnchorConfig)])
def test_default_regressor_without_weights_warns_and_is_seeded(tmp_path, monkeypatch, model,
                                                               config_class):
    from aceg.model import map_file

    monkeypatch.setattr(map_file, "WEIGHTS_DIR", tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = default_regressor(model, "xfeat")
    assert any("random init" in str(w.message) for w in caught)
    b = default_regressor(model, "xfeat", warn=False)
    assert a.identity == b.identity and a.model.config == config_class()
    assert map_file.regressor_model(a) == model
