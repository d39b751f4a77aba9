"""The anchor model's learned read-out (aceg.model.anchors.CandidateReadout) and its
query pre-training (aceg.pretraining.anchor_readout)."""

from __future__ import annotations

import pytest
import torch

from aceg.errors import AcegError
from aceg.model.anchors import AnchorConfig, AnchorRegressor, CandidateReadout
from aceg.model.map_file import load_regressor, save_regressor
from aceg.model.regressor import LOG_UNC_MAX, LOG_UNC_MIN
from aceg.pretraining.anchor_readout import Candidates, readout_loss, readout_metrics, train_readout


def _agreeing_candidates(n: int, k: int, gen: torch.Generator) -> Candidates:
    """Patches whose most similar candidate is usually wrong, and whose right answer is
    the pair of candidates (anywhere in the ranking) whose points agree; the other points
    are scattered over metres."""
    sims = torch.sort(0.7 + 0.3 * torch.rand(n, k, generator=gen), dim=1, descending=True).values
    points = torch.randn(n, k, 3, generator=gen) * 2.0
    target = torch.randn(n, 3, generator=gen)
    pair = torch.stack([torch.randperm(k, generator=gen)[:2] for _ in range(n)])
    rows = torch.arange(n)[:, None]
    points[rows, pair] = target[:, None] + 0.01 * torch.randn(n, 2, 3, generator=gen)
    return Candidates(sims, points, target)


def test_readout_learns_that_agreeing_candidates_are_right():
    """Trained on such patches, the read-out picks a correct candidate far more often than
    the most similar one, on patches it has not seen, and ranks its picks by confidence."""
    gen = torch.Generator().manual_seed(0)
    train, held = _agreeing_candidates(4000, 6, gen), _agreeing_candidates(1000, 6, gen)
    nearest = readout_metrics(None, held, 0.1)
    torch.manual_seed(0)
    readout = CandidateReadout(32)
    rows = train_readout(readout, train, held, steps=300, batch=256, lr=3e-3, radius=0.1,
                         eval_every=300, progress=False)
    assert rows[-1]["heldout_loss"] < rows[0]["heldout_loss"]
    learned = readout_metrics(readout, held, 0.1)
    assert nearest["chosen"] < 45 and learned["chosen"] > 90
    with torch.no_grad():
        assert float(readout_loss(readout, held, 0.1)) < 0.5


def test_learned_readout_returns_a_candidate_point_and_bounded_uncertainty(tmp_path):
    """The model with a learned read-out returns, per patch, the point of one of its K most
    similar anchors, a log-uncertainty in range; it survives a save/load round trip and
    works with fewer anchors than candidates."""
    torch.manual_seed(2)
    config = AnchorConfig(feature_dim=8, hidden=16, readout="learned", candidates=4, readout_hidden=8)
    model = AnchorRegressor(config)
    feats, points = torch.randn(40, 8), torch.randn(40, 3)
    code = model.make_code(feats, points)
    queries = feats[:10] + 0.1 * torch.randn(10, 8)
    with torch.no_grad():
        coords, log_unc = model(queries, code)
        _, index = model.attend(model.embed(queries), code[:, :8], 4)
    for p in range(10):
        assert any(torch.equal(coords[p], points[int(i)]) for i in index[p])
    assert LOG_UNC_MIN <= float(log_unc.min()) and float(log_unc.max()) <= LOG_UNC_MAX
    path = tmp_path / "readout.safetensors"
    save_regressor(path, model, "xfeat")
    loaded = load_regressor(path).model
    assert loaded.config.readout == "learned" and loaded.identity() == model.identity()
    with torch.no_grad():
        again, _ = loaded(queries, code)
        one, _ = loaded(queries, code[:1])
    assert torch.equal(again, coords)
    assert torch.equal(one, points[:1].expand(10, 3))
    assert AnchorRegressor(AnchorConfig(feature_dim=8, hidden=16)).identity() != model.identity()


def test_candidate_features_do_not_depend_on_the_frame():
    """Only differences of points enter the read-out: a shift of the world frame changes
    nothing."""
    gen = torch.Generator().manual_seed(3)
    c = _agreeing_candidates(50, 5, gen)
    a = CandidateReadout.candidate_features(c.sims, c.points)
    b = CandidateReadout.candidate_features(c.sims, c.points + torch.tensor([10.0, -3.0, 2.0]))
    assert a.shape == (50, 5, CandidateReadout.N_FEATURES)
    assert torch.allclose(a, b, atol=1e-4)


class _Interrupted(Candidates):
    """Training patches whose ``subset`` raises KeyboardInterrupt on its n-th call (as a
    killed run would stop)."""

    def __init__(self, base: Candidates, after: int) -> None:
        super().__init__(base.sims, base.points, base.target)
        self.calls, self.after = 0, after

    def subset(self, index):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super().subset(index)


def test_readout_pretraining_resumes_exactly(tmp_path):
    gen = torch.Generator().manual_seed(4)
    train, held = _agreeing_candidates(500, 5, gen), _agreeing_candidates(100, 5, gen)
    settings = dict(steps=30, batch=64, lr=1e-2, eval_every=10, progress=False, scenes=["a", "b"])
    torch.manual_seed(0)
    whole = CandidateReadout(8)
    rows = train_readout(whole, train, held, out_dir=tmp_path / "a", **settings)
    torch.manual_seed(0)
    cut = CandidateReadout(8)
    with pytest.raises(KeyboardInterrupt):
        train_readout(cut, _Interrupted(train, 17), held, out_dir=tmp_path / "b", **settings)
    resumed = CandidateReadout(8)
    rows_b = train_readout(resumed, train, held, out_dir=tmp_path / "b", **settings)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                 resumed.state_dict().values(), strict=True))
    assert [r["heldout_loss"] for r in rows_b] == [r["heldout_loss"] for r in rows]
    assert (tmp_path / "b" / "log.csv").read_text().count("\n") == 5  # header + 0, 10, 20, 30
    with pytest.raises(AcegError, match="cannot resume"):
        train_readout(resumed, train, held, out_dir=tmp_path / "b", **(settings | {"batch": 32}))


def test_cli_pretrain_readout_then_map_and_localize(tmp_path):
    """`aceg pretrain-readout` over tiny synthetic scenes writes an anchor regressor with a
    learned read-out that `aceg map` and `aceg localize` take; re-running it resumes at the
    end and writes the same model; a transformer file is refused as --init."""
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene
    from aceg.model.map_file import WEIGHTS_DIR

    for i in range(3):
        generate_scene(tmp_path / "data" / f"scene_{i}", 400 + i, frames_mapping=8, frames_query=2,
                       height=96, width=128, splits=("mapping", "query_light"), contact_sheet=False)
    out = tmp_path / "run"
    args = ["pretrain-readout", str(tmp_path / "data"), str(out), "--steps", "4", "--batch", "64",
            "--eval-every", "2", "--held-out", "1", "--candidates", "4", "--hidden", "8"]
    assert main(args) == 0
    reg = load_regressor(out / "regressor.safetensors")
    assert reg.model.config.readout == "learned" and reg.model.config.candidates == 4
    assert (out / "log.csv").read_text().count("\n") == 4  # header + steps 0, 2, 4
    assert main(args) == 0
    assert load_regressor(out / "regressor.safetensors").identity == reg.identity
    scene = tmp_path / "data" / "scene_0"
    assert main(["map", str(scene / "mapping"), str(tmp_path / "s.map"),
                 "--regressor", str(out / "regressor.safetensors")]) == 0
    assert main(["localize", str(tmp_path / "s.map"), str(scene / "query_light"),
                 "--out", str(tmp_path / "poses.txt"), "--regressor", str(out / "regressor.safetensors")]) == 0
    lines = (tmp_path / "poses.txt").read_text().strip().splitlines()
    assert len([ln for ln in lines if not ln.startswith("#") or "not localized" in ln]) == 2
    assert main(["pretrain-readout", str(tmp_path / "data"), str(tmp_path / "x"), "--held-out", "1",
                 "--init", str(WEIGHTS_DIR / "transformer-xfeat.safetensors")]) != 0


def test_identity_of_models_without_readout_is_unchanged():
    """Adding the learned read-out's settings must not change the identity of models
    without it, so that maps made before stay valid: the identity-embedding model made by
    MODEL_CARD.md's command (seed 0) keeps the identity named there (since the anchor
    budget left the identity, 2026-12-03: 260ec8b694722b01 before), whatever the budget."""
    torch.manual_seed(0)
    nearest = AnchorRegressor()
    assert nearest.identity() == "4e236fd806c97d1f"
    budget = AnchorRegressor(AnchorConfig(max_anchors=100))
    budget.load_state_dict(nearest.state_dict())
    assert budget.identity() == nearest.identity()
    assert nearest.identity_with_budget(12288) == "260ec8b694722b01"  # the maps made before
    assert "readout" not in nearest.config.identity_dict()
    assert "readout" in AnchorConfig(readout="learned").identity_dict()
