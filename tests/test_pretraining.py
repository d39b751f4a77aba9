"""Query pre-training: exact resumption and 2-process DDP (tiny synthetic scenes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from aceg.data.synthetic import generate_scene
from aceg.pretraining.pretrain_config import PretrainConfig
from aceg.pretraining.trainer import Pretrainer
from torchrun_helper import agreed_weights, run_two_processes

TINY = {"width": 32, "depth": 1, "heads": 2, "code_tokens": 8}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain-scenes")
    for i in range(2):
        generate_scene(root / f"scene_{i}", 100 + i, frames_mapping=6, frames_query=3,
                       height=48, width=64, splits=("mapping", "query_light"),
                       contact_sheet=False)
    return root


def config(**kw) -> PretrainConfig:
    base = dict(steps=8, batch_patches=128, scenes_per_step=2, pool_size=2, code_lifetime=5,
                code_warmup=2, lr_warmup_steps=2, checkpoint_every=4, log_every=1, regressor=TINY)
    return PretrainConfig(**{**base, **kw})


def test_resumed_run_continues_exactly(scenes: Path, tmp_path: Path):
    torch.set_num_threads(1)
    full = Pretrainer([scenes], tmp_path / "full", config(), progress=False)
    full.run()
    part = Pretrainer([scenes], tmp_path / "part", config(), progress=False)
    part.run(stop_after=4)
    assert part.step == 4
    resumed = Pretrainer([scenes], tmp_path / "part", config(), progress=False)
    assert resumed.load_checkpoint() and resumed.step == 4
    resumed.run()
    keys = ("step", "mapping_loss", "query_loss")
    curve_full = [float(r[k]) for r in full.log_rows for k in keys]
    curve_resumed = [float(r[k]) for r in resumed.log_rows for k in keys]
    assert len(curve_full) == 8 * len(keys)
    assert curve_resumed == pytest.approx(curve_full, rel=1e-5)
    assert resumed.model.identity() == full.model.identity()
    assert (tmp_path / "part" / "regressor.safetensors").is_file()
    # the pool and the regressor moved away from their initial state
    assert int(resumed.pool.generation.sum()) > 2


def test_snapshot_of_a_stopped_run_is_a_usable_regressor(scenes: Path, tmp_path: Path):
    """export_regressor turns the checkpoint of a run stopped early into a regressor file
    holding exactly the weights trained so far; a missing checkpoint is a clear error."""
    from aceg.errors import AcegError
    from aceg.model.map_file import load_regressor
    from aceg.pretraining.pretrain_checkpoint import export_regressor

    run = Pretrainer([scenes], tmp_path / "run", config(), progress=False)
    run.run(stop_after=4)
    meta = export_regressor(tmp_path / "run", tmp_path / "snap.safetensors")
    assert meta["step"] == 4
    loaded = load_regressor(tmp_path / "snap.safetensors")
    assert loaded.model.identity() == run.model.identity() and loaded.encoder == "xfeat"
    with pytest.raises(AcegError, match="checkpoint not found"):
        export_regressor(tmp_path / "nothing", tmp_path / "x.safetensors")


def test_warm_start_from_a_regressor_file(scenes: Path, tmp_path: Path):
    """--init starts from an exported regressor (its weights and architecture), trains on
    from there, and refuses overrides that contradict the file's architecture."""
    from aceg.errors import AcegError
    from aceg.model.map_file import load_regressor
    from aceg.pretraining.pretrain_checkpoint import export_regressor

    torch.set_num_threads(1)
    first = Pretrainer([scenes], tmp_path / "first", config(), progress=False)
    first.run(stop_after=4)
    export_regressor(tmp_path / "first", tmp_path / "start.safetensors")
    start = load_regressor(tmp_path / "start.safetensors").model

    warm = Pretrainer([scenes], tmp_path / "warm",
                      config(regressor={}, init=str(tmp_path / "start.safetensors")), progress=False)
    assert warm.model.identity() == start.identity()  # not the seeded random init
    warm.run(stop_after=4)
    assert warm.model.identity() != start.identity()
    export_regressor(tmp_path / "warm", tmp_path / "warm.safetensors")
    assert load_regressor(tmp_path / "warm.safetensors").model.config == start.config

    with pytest.raises(AcegError, match="code_tokens"):
        Pretrainer([scenes], tmp_path / "clash", progress=False,
                   config=config(regressor={**TINY, "code_tokens": 4},
                                 init=str(tmp_path / "start.safetensors")))


def test_warm_start_may_change_the_code_form(scenes: Path, tmp_path: Path):
    """A "tokens" model continues as a "keys_values" one: same weights to start from, codes
    of the new shape, only the weights the new form reads are trained."""
    from aceg.model.map_file import save_regressor
    from aceg.model.regressor import RegressorConfig, random_regressor

    torch.set_num_threads(1)
    tokens = random_regressor(RegressorConfig(**TINY, code_form="tokens"), 4)
    save_regressor(tmp_path / "tokens.safetensors", tokens, "xfeat")
    run = Pretrainer([scenes], tmp_path / "kv", progress=False,
                     config=config(regressor={"code_form": "keys_values"},
                                   init=str(tmp_path / "tokens.safetensors")))
    assert run.model.config.code_form == "keys_values"
    assert run.model.config.code_shape == (1, 2, 8, 32)
    start = {k: v.clone() for k, v in run.model.state_dict().items()}
    for k, v in tokens.state_dict().items():
        assert torch.equal(start[k], v)
    run.run(stop_after=3)
    assert run.pool.codes.shape == (2, 1, 2, 8, 32)
    after = run.model.state_dict()
    projections = [k for k in after if ".kv." in k or ".norm_code." in k]
    assert projections and all(torch.equal(after[k], start[k]) for k in projections)
    assert not torch.equal(after["head.weight"], start["head.weight"])


def test_resume_refuses_changed_settings(scenes: Path, tmp_path: Path):
    Pretrainer([scenes], tmp_path, config(steps=2, checkpoint_every=2), progress=False).run()
    other = Pretrainer([scenes], tmp_path, config(batch_patches=64), progress=False)
    from aceg.errors import AcegError

    with pytest.raises(AcegError, match="batch_patches"):
        other.load_checkpoint()


@pytest.mark.slow
def test_two_process_ddp_keeps_identical_weights(scenes: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    run_two_processes(["pretrain", str(scenes / "scene_0"), str(scenes / "scene_1"), str(out),
                       "--steps", "4", "--batch-patches", "128", "--scenes-per-step", "1",
                       "--pool-size", "1", "--code-warmup", "1", "--checkpoint-every", "2",
                       "--regressor-config", json.dumps(TINY), "--threads", "1"], port=29517)
    agreed_weights(out, step=4)
    assert (out / "regressor.safetensors").is_file()


def test_pool_codes_follow_the_mapping_schedule(scenes: Path, tmp_path: Path):
    """Pool codes get mapping's one-cycle rate over their lifetime (the same numbers as the
    mapper's torch OneCycleLR), or a constant rate; an unknown schedule is an error."""
    from aceg.errors import AcegError
    from aceg.mapping.schedule import one_cycle_adamw, one_cycle_lr

    for total in (2, 5, 300):
        opt, sched = one_cycle_adamw([torch.nn.Parameter(torch.zeros(1))], 0.1, total)
        for step in range(total):
            assert one_cycle_lr(step, total, 0.1) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
            opt.step()
            sched.step()
    run = Pretrainer([scenes], tmp_path / "a", config(code_lr=0.2, code_lifetime=400), progress=False)
    run._fill_pool()
    life = int(run.pool.lifetime[0])
    assert run._code_lr(0) == pytest.approx(0.2 / 25)  # a fresh code starts low
    run.pool.steps[0] = life - 1
    assert run._code_lr(0) == pytest.approx(one_cycle_lr(life - 1, life, 0.2))
    const = Pretrainer([scenes], tmp_path / "b", config(code_lr=0.2, code_lr_schedule="constant"),
                       progress=False)
    const._fill_pool()
    assert const._code_lr(0) == pytest.approx(0.2)
    with pytest.raises(AcegError, match="code_lr_schedule"):
        Pretrainer([scenes], tmp_path / "c", config(code_lr_schedule="cosine"), progress=False)


def test_pool_codes_start_anchored_and_young_codes_cost_no_query_patches(scenes: Path, tmp_path: Path):
    """A fresh pool code's block-0 keys are query vectors of its scene's mapping patches (as
    aceg map starts a code); codes in warm-up add nothing to the query loss; code_init is
    checked, kept on resume, and is "random" for checkpoints written before it existed."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from aceg.errors import AcegError
    from aceg.pretraining.feature_store import MAPPING_SPLIT

    torch.set_num_threads(1)
    run = Pretrainer([scenes], tmp_path / "a", config(code_warmup=100, steps=2, checkpoint_every=2),
                     progress=False)
    run._fill_pool()
    m = run.model
    feats = run.scenes[int(run.pool.scene[0])].splits[MAPPING_SPLIT].features
    with torch.no_grad():
        b0 = m.blocks[0]
        q = b0.q(b0.norm_q(m.embed(feats.reshape(-1, feats.shape[-1]).float())))
    assert (run.pool.codes[0][0, 0][:, None] - q[None]).norm(dim=-1).min(1).values.max() < 1e-4
    run.cfg.regressor_every = 10**9  # the transformer learns only from step 0's mapping iteration
    run.train_step()
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    stats = run.train_step()
    assert stats["query_loss"] == 0.0 and stats["query_scenes"] == 0 and "q_in10" not in stats
    # no query iteration at all while every code is young: not even an AdamW step on zero gradients
    assert all(torch.equal(v, before[k]) for k, v in run.model.state_dict().items())
    # warm codes: the query iteration also scores mapping patches when asked to, and trains
    mixed = Pretrainer([scenes], tmp_path / "m", config(code_warmup=0, query_mapping_share=0.5),
                       progress=False)
    mixed.run(stop_after=3)
    assert mixed.log_rows[-1]["query_scenes"] == 2 and math.isfinite(mixed.log_rows[-1]["query_loss"])
    with pytest.raises(AcegError, match="query_mapping_share"):
        config(query_mapping_share=1.0)
    rand = Pretrainer([scenes], tmp_path / "b", config(code_init="random"), progress=False)
    rand._fill_pool()
    assert (rand.pool.codes[0][0, 0][:, None] - q[None]).norm(dim=-1).min(1).values.max() > 1e-2
    with pytest.raises(AcegError, match="code_init"):
        config(code_init="zeros")
    # resuming with another code_init is refused; an old checkpoint (no code_init) is "random"
    Pretrainer([scenes], tmp_path / "c", config(steps=2, checkpoint_every=2), progress=False).run()
    with pytest.raises(AcegError, match="code_init"):
        Pretrainer([scenes], tmp_path / "c", config(code_init="random"), progress=False).load_checkpoint()
    ckpt = tmp_path / "c" / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = json.loads(fh.metadata()["aceg_pretrain"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    del meta["config"]["code_init"]
    save_file(tensors, str(ckpt), metadata={"aceg_pretrain": json.dumps(meta)})
    assert Pretrainer([scenes], tmp_path / "c", config(code_init="random"), progress=False).load_checkpoint()


def test_checkpoints_record_the_code_form(scenes: Path, tmp_path: Path):
    """A run's checkpoint records its whole architecture; resuming it with another code form
    is refused; a checkpoint from before code_form existed is read as token codes."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from aceg.errors import AcegError
    from aceg.model.map_file import load_regressor
    from aceg.pretraining.pretrain_checkpoint import export_regressor

    torch.set_num_threads(1)
    tokens = {**TINY, "code_form": "tokens"}
    Pretrainer([scenes], tmp_path / "t", config(steps=2, checkpoint_every=2, regressor=tokens),
               progress=False).run()
    other = Pretrainer([scenes], tmp_path / "t", config(steps=2, checkpoint_every=2), progress=False)
    with pytest.raises(AcegError, match="code_form"):
        other.load_checkpoint()
    # the same checkpoint as a run from before code_form existed wrote it: overrides only
    ckpt = tmp_path / "t" / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = json.loads(fh.metadata()["aceg_pretrain"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta["config"]["regressor"] = dict(TINY)
    save_file(tensors, str(ckpt), metadata={"aceg_pretrain": json.dumps(meta)})
    export_regressor(tmp_path / "t", tmp_path / "legacy.safetensors")
    assert load_regressor(tmp_path / "legacy.safetensors").model.config.code_form == "tokens"
    resumed = Pretrainer([scenes], tmp_path / "t", config(steps=2, checkpoint_every=2, regressor=tokens),
                         progress=False)
    assert resumed.load_checkpoint() and resumed.step == 2


def test_query_mapping_loss_3d(scenes: Path, tmp_path: Path):
    """query_mapping_loss="3d" scores the query iteration's mapping patches with the 3-D
    query loss instead of the mapping loss: same run otherwise, another query loss; unknown
    values are refused before any work, and a checkpoint is resumed only with its own."""
    from aceg.errors import AcegError

    torch.set_num_threads(1)
    runs = {}
    for kind in ("mapping", "3d"):
        run = Pretrainer([scenes], tmp_path / kind, config(code_warmup=0, query_mapping_share=0.5,
                                                           query_mapping_loss=kind, steps=2,
                                                           checkpoint_every=2), progress=False)
        run.run()
        runs[kind] = run
    # the mapping iteration (before any query step) is the same; the query losses are not
    assert runs["3d"].log_rows[0]["mapping_loss"] == pytest.approx(runs["mapping"].log_rows[0]["mapping_loss"])
    assert all(math.isfinite(r["query_loss"]) for r in runs["3d"].log_rows)
    assert runs["3d"].log_rows[0]["query_loss"] != pytest.approx(runs["mapping"].log_rows[0]["query_loss"])
    with pytest.raises(AcegError, match="query_mapping_loss"):
        config(query_mapping_loss="depth")
    other = Pretrainer([scenes], tmp_path / "mapping",
                       config(code_warmup=0, query_mapping_share=0.5, query_mapping_loss="3d",
                              steps=2, checkpoint_every=2), progress=False)
    with pytest.raises(AcegError, match="query_mapping_loss"):
        other.load_checkpoint()


@pytest.fixture(scope="module")
def textured_scene(tmp_path_factory) -> Path:
    """One synthetic room large enough for keypoints to triangulate between its views."""
    root = tmp_path_factory.mktemp("pretrain-tri")
    generate_scene(root / "scene_0", 100, frames_mapping=8, frames_query=2, height=96, width=128,
                   splits=("mapping", "query_light"), contact_sheet=False)
    return root


def test_pool_codes_fit_triangulated_depth(textured_scene: Path, tmp_path: Path, monkeypatch):
    """pool_depth="triangulated": depth-using pool codes fit sparse depth triangulated
    between the mapping images (as aceg map --triangulate), computed once and cached beside
    the features; it agrees with the rendered depth where both exist."""
    from aceg.errors import AcegError
    from aceg.pretraining import feature_store
    from aceg.pretraining.feature_store import MAPPING_SPLIT, sample_patches

    torch.set_num_threads(1)
    settings = dict(steps=2, checkpoint_every=2, scenes_per_step=1, pool_size=1, code_warmup=0,
                    depth_fraction=1.0)
    cfg = config(**settings, pool_depth="triangulated")
    run = Pretrainer([textured_scene], tmp_path / "run", cfg, progress=False)
    split = run.scenes[0].splits[MAPPING_SPLIT]
    tri, rendered = split.triangulated, split.targets
    assert tri is not None and tri.shape == rendered.shape
    known = torch.isfinite(tri).all(-1)
    both = known & torch.isfinite(rendered).all(-1)
    assert int(both.sum()) >= 5
    assert float((tri - rendered).norm(dim=-1)[both].median()) < 0.25  # metres
    assert float(known.float().mean()) < float(torch.isfinite(rendered).all(-1).float().mean())
    g = torch.Generator().manual_seed(0)
    batch = sample_patches(split, 4096, g, run.stride, triangulated=True)
    assert 0 < float(batch.target_valid.float().mean()) < 0.5 * float(torch.isfinite(rendered).all(-1).float().mean())
    run.run()
    assert all(math.isfinite(r["mapping_loss"]) for r in run.log_rows)
    assert len(list((tmp_path / "run" / "features").glob("*.triangulated.safetensors"))) == 1

    # the second run reads the cache instead of triangulating again
    def fail(*args, **kwargs):
        raise AssertionError("triangulated again")

    monkeypatch.setattr(feature_store, "triangulated_targets", fail)
    again = Pretrainer([textured_scene], tmp_path / "run", cfg, progress=False)
    assert torch.equal(torch.nan_to_num(again.scenes[0].splits[MAPPING_SPLIT].triangulated),
                       torch.nan_to_num(tri))
    # ... unless the triangulation has changed since: then it triangulates again
    from aceg.mapping.triangulation import TRIANGULATION_VERSION

    monkeypatch.setattr("aceg.mapping.triangulation.TRIANGULATION_VERSION", TRIANGULATION_VERSION + 1)
    with pytest.raises(AssertionError, match="triangulated again"):
        Pretrainer([textured_scene], tmp_path / "run", cfg, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(feature_store, "triangulated_targets", fail)
    with pytest.raises(AcegError, match="pool_depth"):
        config(pool_depth="lidar")
    # a checkpoint is resumed only with its own pool depth
    rendered = Pretrainer([textured_scene], tmp_path / "run", config(**settings, pool_depth="rendered"),
                          progress=False)
    with pytest.raises(AcegError, match="pool_depth"):
        rendered.load_checkpoint()
    with pytest.raises(ValueError, match="no triangulated targets"):
        sample_patches(run.scenes[0].splits["query_light"], 8, g, run.stride, triangulated=True)
