"""``aceg pretrain-anchors``: query pre-training of the anchor model's embedding."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from aceg.errors import AcegError
from aceg.io import check_output_path
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_regressor, save_regressor
from aceg.pretraining.anchor_metric import MetricConfig, train_metric
from aceg.pretraining.feature_store import cached_scene_features, find_scene_roots

HELP = "pre-train the anchor model's embedding across many scenes (query pre-training)"
DESCRIPTION = """\
Query pre-training of the anchor model (aceg.model.anchors), the map code whose tokens are
3-D points of the mapping images read through attention.

DATA are scene folders, or folders of scene folders, as written by `aceg synth` (mapping/
and query_*/ splits, ACE layout with depth). Encoder features are computed once and cached
in OUT/features/ (fp16). Each step draws one scene: anchors from its mapping images, queries
from its query splits (other light, other viewpoints) and other mapping images; the
embedding learns to make a query's attention fall on the anchors at its own surface point
(cross-entropy against a Gaussian of the 3-D distance, from the rendered depth). The last
--held-out scenes (sorted by path) are not trained on and are scored at every evaluation.

OUT receives log.csv, checkpoint.safetensors (re-running the same command resumes from it
exactly) and, at the end, regressor.safetensors: map with it through `aceg map --regressor`,
or ship it as the default. --init FILE continues from an anchor regressor file.
"""


def add_arguments(parser) -> None:
    defaults = MetricConfig()
    parser.add_argument("data", nargs="+", metavar="DATA", help="scene folders or folders of scenes")
    parser.add_argument("out", metavar="OUT", help="output folder (checkpoint, log, final model)")
    helps = {
        "steps": "training steps (one scene each)",
        "anchors": "anchors drawn per step from the scene's mapping images",
        "queries": "query patches per step",
        "sigma": "metres: width of the Gaussian target over 3-D distance (nce: the radius "
                 "within which anchors are positives)",
        "loss": "gaussian (attention should follow a Gaussian of 3-D distance) or nce (all "
                "anchors within --sigma are positives)",
        "lr": "peak learning rate (AdamW, cosine decay to a tenth)",
        "weight_decay": "AdamW weight decay",
        "eval_every": "steps between evaluations and checkpoints",
    }
    for f in fields(MetricConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name),
                            choices=("gaussian", "nce") if f.name == "loss" else None,
                            help=f"{helps[f.name]} (default: %(default)s)")
    parser.add_argument("--held-out", type=int, default=4,
                        help="scenes kept out of training and scored (default: %(default)s)")
    parser.add_argument("--init", metavar="FILE", help="anchor regressor file to start from")
    parser.add_argument("--encoder", default="xfeat", help="frozen encoder (default: %(default)s)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="working short side in pixels (default: the images' own size)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice)")


def run(args) -> int:
    check_output_path(args.out, folder=True, what="pre-training output")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = MetricConfig(**{f.name: getattr(args, f.name) for f in fields(MetricConfig)})
    roots = find_scene_roots(args.data)
    if args.held_out < 0 or args.held_out >= len(roots):
        raise AcegError(f"--held-out {args.held_out} leaves no scene to train on ({len(roots)} found)")
    enc = get_encoder(args.encoder)
    if args.init:
        loaded = load_regressor(args.init)
        if not isinstance(loaded.model, AnchorRegressor):
            raise AcegError(f"{args.init}: not an anchor regressor (use aceg pretrain for the transformer)")
        if loaded.encoder != enc.name:
            raise AcegError(f"{args.init}: made for encoder {loaded.encoder!r}, not {enc.name!r}")
        model = AnchorRegressor(loaded.model.config)
        model.load_state_dict(loaded.model.state_dict())
    else:
        torch.manual_seed(args.seed)
        model = AnchorRegressor(AnchorConfig(feature_dim=enc.feature_dim))
    out = Path(args.out)
    cache = out / "features"
    cache.mkdir(parents=True, exist_ok=True)
    scenes = [cached_scene_features(r, cache, enc, args.short_side) for r in roots]
    split = len(scenes) - args.held_out
    rows = train_metric(model, scenes[:split], scenes[split:], config, out, seed=args.seed)
    extra = {"pretraining": {"scenes": [str(r) for r in roots[:split]],
                             "held_out": [str(r) for r in roots[split:]],
                             "config": config.__dict__, "final": rows[-1]}}
    save_regressor(out / "regressor.safetensors", model, enc.name, extra=extra)
    print(f"wrote {out}/regressor.safetensors ({config.steps} steps; held-out: {rows[-1]})")
    return 0
