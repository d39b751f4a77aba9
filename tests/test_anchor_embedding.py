"""Query pre-training of the anchor embedding against mapped rooms
(aceg.pretraining.anchor_embedding, `aceg pretrain-anchors`)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from aceg.errors import AcegError
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.model.map_file import load_map, load_regressor
from aceg.pretraining.anchor_embedding import (
    EmbeddingConfig,
    RoomTensors,
    evaluate,
    nearest_within,
    positives_loss,
    train_embedding,
)
from test_anchors import _Interrupted
from torchrun_helper import agreed_weights, run_two_processes


def _room(seed: int) -> RoomTensors:
    """A toy mapped room: 150 surface points whose descriptors live in channels 0-7; every
    observation (anchor or query) adds a strong random "nuisance" in channels 8-15, the
    same kind in every room, so a learned embedding can suppress it and raw cosines cannot.
    Anchors: two observations of each point; queries: 600 observations, a third of them
    in each query split."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(150, 3, generator=g) * 4
    desc = F.normalize(torch.randn(150, 8, generator=g), dim=1)

    def observe(idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([desc[idx], 1.5 * torch.randn(len(idx), 8, generator=g)], dim=1)

    a_idx = torch.arange(150).repeat(2)
    q_idx = torch.randint(150, (600,), generator=g)
    return RoomTensors(f"room{seed}", F.normalize(observe(a_idx), dim=1).half(), points[a_idx],
                       observe(q_idx).half(), points[q_idx], torch.arange(600) % 3)


def _model() -> AnchorRegressor:
    torch.manual_seed(0)
    return AnchorRegressor(AnchorConfig(feature_dim=16, hidden=32))


def _cli_start_identity() -> str:
    """Identity of the model `aceg pretrain-anchors` starts from (fresh, --seed 0, XFeat)."""
    torch.manual_seed(0)
    return AnchorRegressor(AnchorConfig(feature_dim=64)).identity()


def test_embedding_pretraining_improves_held_out_rooms(tmp_path):
    """Trained on some rooms, the embedding makes queries of other rooms pick an anchor at
    their own point far more often (raw cosines mostly pick by nuisance); the loss falls;
    the log has one row per evaluation."""
    rooms = [_room(i) for i in range(6)]
    model = _model()
    before = evaluate(model, rooms[4:])
    config = EmbeddingConfig(steps=200, queries=128, radius=0.05, lr=1e-2, eval_every=50)
    rows = train_embedding(model, rooms[:4], rooms[4:], config, tmp_path / "run", progress=False)
    after = evaluate(model, rooms[4:])
    for split in ("query_same", "query_light", "query_view"):
        key = f"heldout_{split}"
        assert after[key] > before[key] + 20, (before, after)
    assert rows[-1]["train_loss"] < rows[1]["train_loss"]
    assert [r["step"] for r in rows] == [0, 50, 100, 150, 200]
    assert (tmp_path / "run/log.csv").read_text().count("\n") == len(rows) + 1


def test_positives_loss_counts_only_patches_with_a_positive():
    """Patches with no anchor within the radius leave the loss; none at all gives None; a
    query equal to its only positive's key, far from the others, costs almost nothing."""
    model = _model()
    keys = torch.eye(16)[:4].half()
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    room = RoomTensors("r", keys, points, keys.clone(), points + torch.tensor([0.01, 0, 0]),
                       torch.zeros(4, dtype=torch.long))
    with torch.no_grad():
        near = positives_loss(model, room, torch.arange(4), 0.05)
        assert near is not None and float(near) < 1e-3
        room.q_target = points + 10.0
        assert positives_loss(model, room, torch.arange(4), 0.05) is None
        room.q_target = torch.cat([points[:1] + 0.01, points[1:] + 10.0])
        one = positives_loss(model, room, torch.arange(4), 0.05)
        assert float(one) == pytest.approx(float(near), abs=1e-4)
    scores = nearest_within(model, room)
    assert scores[0] == 25.0 and all(v != v for v in scores[1:])  # splits the room lacks: NaN


def test_embedding_pretraining_resumes_exactly(tmp_path):
    rooms = [_room(i) for i in range(3)]
    config = EmbeddingConfig(steps=30, queries=64, lr=1e-2, eval_every=10)
    whole = _model()
    rows = train_embedding(whole, rooms[:2], rooms[2:], config, tmp_path / "a", progress=False)
    cut = _model()
    with pytest.raises(KeyboardInterrupt):
        train_embedding(cut, _Interrupted(rooms[:2], 17), rooms[2:], config, tmp_path / "b", progress=False)
    resumed = AnchorRegressor(AnchorConfig(feature_dim=16, hidden=32))  # other start: restored
    rows_b = train_embedding(resumed, rooms[:2], rooms[2:], config, tmp_path / "b", progress=False)
    assert resumed.identity() == whole.identity()
    assert [r["train_loss"] for r in rows_b[1:]] == [r["train_loss"] for r in rows[1:]]
    assert [r["heldout_query_view"] for r in rows_b] == [r["heldout_query_view"] for r in rows]
    more = train_embedding(resumed, rooms[:2], rooms[2:], EmbeddingConfig(steps=40, queries=64, lr=1e-2,
                                                                          eval_every=10),
                           tmp_path / "b", progress=False)  # 10 steps added at the floor rate
    assert [r["step"] for r in more] == [0, 10, 20, 30, 40] and resumed.identity() != whole.identity()
    checkpoint = tmp_path / "b" / "checkpoint.safetensors"
    with safe_open(str(checkpoint), framework="pt") as fh:
        meta = json.loads(fh.metadata()["aceg_anchor_embedding"])
    assert meta["scheduler"]["_last_lr"][0] == pytest.approx(1e-3) and meta["step"] == 40
    with pytest.raises(AcegError, match="cannot resume"):
        train_embedding(resumed, rooms[:2], rooms[2:], EmbeddingConfig(steps=30, queries=32),
                        tmp_path / "b", progress=False)
    with pytest.raises(AcegError, match="another list of scenes"):
        train_embedding(resumed, rooms[1:], rooms[:1], config, tmp_path / "b", progress=False)


def test_cli_pretrain_anchors_then_map(tmp_path, capsys):
    """`aceg pretrain-anchors` maps tiny synthetic scenes as `aceg map` does, caches them,
    trains, and writes a regressor `aceg map` takes; re-running resumes at the end and
    writes the same model; a cut cache file is made again; a setting out of range is
    refused with a clear message."""
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene

    for i in range(3):
        generate_scene(tmp_path / "data" / f"scene_{i}", 500 + i, frames_mapping=8, frames_query=2,
                       height=96, width=128, splits=("mapping", "query_light", "query_view"),
                       contact_sheet=False)
    out = tmp_path / "run"
    args = ["pretrain-anchors", str(tmp_path / "data"), str(out), "--steps", "4", "--queries", "64",
            "--eval-every", "2", "--held-out", "1", "--radius", "0.1"]
    assert main(args) == 0
    reg = load_regressor(out / "regressor.safetensors")
    assert isinstance(reg.model, AnchorRegressor)
    assert reg.identity != _cli_start_identity()  # trained
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 4 and "heldout_query_light" in log[0] and "heldout_query_view" in log[0]
    cached = sorted((out / "rooms").iterdir())
    assert [p.name.split("-")[0] for p in cached] == ["scene_0", "scene_1", "scene_2"]
    room = load_file(str(cached[0]))
    assert room["keys"].shape[1] == 64 and room["points"].shape == (room["keys"].shape[0], 3)
    assert set(room["q_split"].tolist()) == {1, 2}  # query_light, query_view
    rooms_before = [{k: v.clone() for k, v in load_file(str(p)).items()} for p in cached]  # not mmapped
    cached[1].write_bytes(cached[1].read_bytes()[:100])  # a cut file
    assert main(args) == 0
    assert load_regressor(out / "regressor.safetensors").identity == reg.identity
    assert torch.equal(load_file(str(cached[1]))["points"], rooms_before[1]["points"])
    assert main(["map", str(tmp_path / "data" / "scene_0" / "mapping"), str(tmp_path / "s.map"),
                 "--regressor", str(out / "regressor.safetensors")]) == 0
    assert load_map(tmp_path / "s.map").regressor == reg.identity
    capsys.readouterr()
    assert main(args + ["--seed", "1"]) == 2  # another seed, so another start: not this run's
    err = capsys.readouterr().err
    assert "checkpoint has start=" in err and "cannot resume" in err
    def stamp(path):
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata()["files"]

    before = stamp(cached[2])
    (tmp_path / "data" / "scene_2" / "mapping" / "notes.txt").write_text("x")
    assert main(args) == 0  # a scene's files changed: mapped again (same content here)
    assert stamp(cached[2]) != before
    assert torch.equal(load_file(str(cached[2]))["points"], rooms_before[2]["points"])
    assert main(["pretrain-anchors", str(tmp_path / "data"), str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_pretrain_anchors_keeps_identical_weights(tmp_path, capsys):
    """`aceg pretrain-anchors` under torchrun with 2 CPU processes (gloo): each maps its
    own training scene, the gradients are averaged, and both ranks end with the same
    weights, which differ from the start; re-running resumes at the end; a single-process
    run refuses the 2-process checkpoint."""
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene

    for i in range(3):
        generate_scene(tmp_path / "data" / f"scene_{i}", 500 + i, frames_mapping=8, frames_query=2,
                       height=96, width=128, splits=("mapping", "query_view"), contact_sheet=False)
    out = tmp_path / "ddp"
    args = [str(tmp_path / "data"), str(out), "--steps", "4", "--queries", "64", "--eval-every", "2",
            "--held-out", "1", "--radius", "0.1", "--threads", "1"]
    run_two_processes(["pretrain-anchors", *args], port=29519)
    reg = load_regressor(out / "regressor.safetensors")
    assert reg.identity == agreed_weights(out, step=4) != _cli_start_identity()  # trained
    assert sorted(p.name.split("-")[0] for p in (out / "rooms").iterdir()) == ["scene_0", "scene_1", "scene_2"]
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        assert {"generator", "generator.rank1"} <= set(fh.keys())
    assert len((out / "log.csv").read_text().splitlines()) == 4  # header + steps 0, 2, 4
    run_two_processes(["pretrain-anchors", *args], port=29519)  # finished: resumes at the end
    assert load_regressor(out / "regressor.safetensors").identity == reg.identity
    capsys.readouterr()
    assert main(["pretrain-anchors", *args]) == 2  # one process: another world size
    assert "checkpoint made with 2 process(es), this run has 1: cannot resume" in capsys.readouterr().err


def test_cli_pretrain_anchors_names_a_scene_it_cannot_map(tmp_path, capsys):
    """A training scene whose mapping images give no 3-D point (tiny, little parallax) is
    a one-line error naming that scene, not a traceback."""
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene

    for i in range(2):
        generate_scene(tmp_path / "data" / f"scene_{i}", 600 + i, frames_mapping=8, frames_query=2,
                       height=96, width=128, splits=("mapping", "query_view"), contact_sheet=False)
    capsys.readouterr()
    assert main(["pretrain-anchors", str(tmp_path / "data"), str(tmp_path / "run"), "--held-out", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'data' / 'scene_0'}: no mapping patch has a 3-D point" in err
