"""Lighting distillation experiment (aceg.pretraining.distillation): can a short training of
the shipped transformer on pixel-aligned lighting twins make it robust to light?

    # 1. fit one map code per pre-training scene with the teacher (the shipped model), as
    #    aceg map fits one; two processes on disjoint scene ranges, codes saved as they finish
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lighting_distillation.py fit \
        /work/data/pretrain /work/data/distill/features 0 12 /work/data/distill/codes_a.safetensors
    # 2. train a student from the teacher with those codes fixed; prints, every --eval-every
    #    steps, the % of query_same / query_light patches within 10 px for teacher and student
    #    on held-out and on training scenes (teacher codes)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lighting_distillation.py train \
        /work/data/pretrain /work/data/distill/features student.safetensors \
        --codes /work/data/distill/codes_a.safetensors /work/data/distill/codes_b.safetensors
    # 3. map held-out scenes with the student and compare with the shipped model
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lighting_sensitivity.py /work/data/heldout 0 1 \
        --regressor src/aceg/weights/transformer-xfeat.safetensors --regressor student.safetensors

The student's loss per scene and step: anchor patches (mapping or query_same, light A)
agree with the teacher; twin patches (query_light) agree with the teacher's prediction for
the same pixel under light A; optionally (``--gt-weight``) query patches of all query
splits reproject onto their own pixel under the ground-truth pose (plus ``--depth-weight``
times the L1 distance in metres to the depth-derived coordinate). ``--clamp-px`` bounds
each pixel term softly (``tau * tanh(e / tau)``).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from aceg.io import atomic_path
from aceg.mapping.losses import DEFAULT_LOSS, reprojection_error, to_camera
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_regressor, save_regressor
from aceg.pretraining.distillation import agreement_loss, correct_mask, fit_code, sample_twins
from aceg.pretraining.feature_store import (
    MAPPING_SPLIT,
    cached_scene_features,
    find_scene_roots,
    sample_patches,
)

SHIPPED = "src/aceg/weights/transformer-xfeat.safetensors"


def load_scenes(data: str, cache: str, start: int = 0, end: int | None = None):
    encoder = get_encoder("xfeat")
    roots = find_scene_roots([data])[start:end]
    return [cached_scene_features(r, Path(cache), encoder) for r in roots]


def clamp(x: torch.Tensor, tau: float) -> torch.Tensor:
    return x if tau <= 0 else tau * torch.tanh(x / tau)


def cmd_fit(a: argparse.Namespace) -> None:
    teacher = load_regressor(a.teacher).model.eval()
    codes = load_file(a.codes) if Path(a.codes).is_file() else {}
    for sf in load_scenes(a.data, a.cache, a.start, a.end):
        if sf.name in codes:
            continue
        t0 = time.time()
        g = torch.Generator().manual_seed(zlib.crc32(sf.name.encode()))
        code, stats = fit_code(teacher, sf.splits[MAPPING_SPLIT], sf.stride, a.iterations, generator=g)
        codes[sf.name] = code.contiguous()
        with atomic_path(Path(a.codes)) as tmp:
            save_file(codes, str(tmp))
        print(f"{sf.name}: median {stats['median_px']:.1f} px, within 10 px {100 * stats['in10']:.0f} %, "
              f"{time.time() - t0:.0f} s", flush=True)


@torch.no_grad()
def twin_accuracy(models, scenes, codes, samples: int = 4096) -> list[float]:
    """Mean over ``scenes`` of the % of query_same and query_light patches within 10 px,
    for each model: [model 0 same, model 0 light, model 1 same, ...]."""
    g = torch.Generator().manual_seed(123)
    rows = []
    for sf in scenes:
        batch, light = sample_twins(sf.splits["query_same"], sf.splits["query_light"], samples, g, sf.stride)
        rows.append([100 * float(correct_mask(m(x, codes[sf.name])[0], batch).float().mean())
                     for m in models for x in (batch.features, light)])
    return [round(sum(c) / len(c), 1) for c in zip(*rows, strict=True)]


def gt_loss(student, sf, code, count: int, g: torch.Generator, a: argparse.Namespace) -> torch.Tensor:
    names = sf.query_splits
    batch = sample_patches(sf.splits[names[int(torch.randint(len(names), (1,), generator=g))]], count, g, sf.stride)
    xyz, _ = student(batch.features, code)
    cam = to_camera(xyz, batch.world_to_cam)
    px = clamp(reprojection_error(cam, batch.K, batch.pixels), a.clamp_px)
    metres = torch.linalg.vector_norm(xyz - batch.target, ord=1, dim=1)
    geo = torch.where(cam[:, 2] > DEFAULT_LOSS.min_depth, px, 10.0 * metres)
    return (geo + torch.where(batch.target_valid, a.depth_weight * metres, 0.0)).mean()


def cmd_train(a: argparse.Namespace) -> None:
    codes: dict[str, torch.Tensor] = {}
    for path in a.codes:
        codes.update(load_file(path))
    scenes = [sf for sf in load_scenes(a.data, a.cache) if sf.name in codes]
    train, held = scenes[: len(scenes) - a.holdout], scenes[len(scenes) - a.holdout:]
    loaded = load_regressor(a.teacher)
    teacher = loaded.model.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train()  # requires_grad off (copied), on for params below
    params = list(student.embed.parameters()) if a.part == "embed" else student.forward_parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed)
    per = a.batch // (2 * a.scenes_per_step)
    print(f"{len(train)} training scenes, {len(held)} held out; % within 10 px "
          "[teacher same, teacher light, student same, student light]", flush=True)

    def report(step: int) -> None:
        print(f"step {step}: held out {twin_accuracy((teacher, student), held, codes)}, "
              f"training {twin_accuracy((teacher, student), train[:4], codes)}", flush=True)

    report(0)
    t0 = time.time()
    for step in range(a.steps):
        for group in opt.param_groups:
            warm = min(1.0, (step + 1) / a.warmup) if a.warmup > 0 else 1.0
            group["lr"] = warm * a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        losses, anchor_sum, twin_sum = [], 0.0, 0.0
        for k in torch.randperm(len(train), generator=g)[: a.scenes_per_step].tolist():
            sf, code = train[k], codes[train[k].name]
            split = sf.splits[MAPPING_SPLIT if torch.rand(1, generator=g) < 0.75 else "query_same"]
            anchor = sample_patches(split, per, g, sf.stride)
            with torch.no_grad():
                target = teacher(anchor.features, code)
            la = clamp(agreement_loss(student(anchor.features, code), target, anchor), a.clamp_px).mean()
            twins, light = sample_twins(sf.splits["query_same"], sf.splits["query_light"], per, g, sf.stride)
            with torch.no_grad():
                target = teacher(twins.features, code)
                w = torch.where(correct_mask(target[0], twins), 1.0, a.wrong_weight)
            lt = (w * clamp(agreement_loss(student(light, code), target, twins), a.clamp_px)).sum() / w.sum().clamp(min=1)
            loss = a.anchor_weight * la + a.twin_weight * lt
            if a.gt_weight > 0:
                loss = loss + a.gt_weight * gt_loss(student, sf, code, per, g, a)
            losses.append(loss)
            anchor_sum += float(la.detach())
            twin_sum += float(lt.detach())
        opt.zero_grad(set_to_none=True)
        torch.stack(losses).mean().backward()
        opt.step()
        if (step + 1) % a.log_every == 0:
            n = min(a.scenes_per_step, len(train))
            print(f"step {step + 1}: anchor {anchor_sum / n:.2f}, twin {twin_sum / n:.2f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            report(step + 1)
            save_regressor(a.out, student.eval(), loaded.encoder,
                           extra={"distillation": {k: v for k, v in vars(a).items()} | {"step": step + 1}})
            student.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit one code per scene with the teacher")
    f.add_argument("data", help="folder of pre-training scenes (aceg synth)")
    f.add_argument("cache", help="feature cache folder")
    f.add_argument("start", type=int)
    f.add_argument("end", type=int)
    f.add_argument("codes", help="codes file (safetensors), extended as scenes finish")
    f.add_argument("--iterations", type=int, default=300)
    f.add_argument("--teacher", default=SHIPPED)
    t = sub.add_parser("train", help="train a student with the codes fixed")
    t.add_argument("data")
    t.add_argument("cache")
    t.add_argument("out", help="student regressor file")
    t.add_argument("--codes", nargs="+", required=True)
    t.add_argument("--teacher", default=SHIPPED)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    t.add_argument("--batch", type=int, default=2048)
    t.add_argument("--scenes-per-step", type=int, default=4)
    t.add_argument("--anchor-weight", type=float, default=1.0)
    t.add_argument("--twin-weight", type=float, default=1.0)
    t.add_argument("--wrong-weight", type=float, default=0.25,
                   help="weight of twins whose teacher prediction is not within 10 px")
    t.add_argument("--gt-weight", type=float, default=0.0)
    t.add_argument("--depth-weight", type=float, default=1.0)
    t.add_argument("--clamp-px", type=float, default=0.0)
    t.add_argument("--part", choices=("all", "embed"), default="all",
                   help="train every weight the forward pass reads, or only the patch embedding")
    t.add_argument("--holdout", type=int, default=4, help="last scenes kept for evaluation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=25)
    t.add_argument("--eval-every", type=int, default=250)
    a = parser.parse_args()
    cmd_fit(a) if a.cmd == "fit" else cmd_train(a)


if __name__ == "__main__":
    main()
