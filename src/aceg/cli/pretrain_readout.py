"""``aceg pretrain-readout``: query pre-training of the anchor model's learned read-out."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from aceg.errors import AcegError
from aceg.io import check_output_path
from aceg.model.anchors import AnchorConfig, AnchorRegressor, CandidateReadout
from aceg.model.encoder import get_encoder
from aceg.model.map_file import WEIGHTS_DIR, load_regressor, save_regressor
from aceg.pretraining.anchor_readout import (
    Candidates,
    ReadoutConfig,
    cached_room_candidates,
    train_readout,
)
from aceg.pretraining.feature_store import find_scene_roots

HELP = "pre-train the anchor model's read-out across many scenes (query pre-training)"
DESCRIPTION = """\
Query pre-training of the anchor model's learned read-out (aceg.model.anchors.CandidateReadout).

An anchor map answers a query patch with its most similar anchor's point; on new images
that point is right for a fraction of the patches, but one of the 16 most similar anchors
is right for about twice as many. The read-out learns, across scenes, which of them to
trust, from their similarities and from how their 3-D points agree, and how sure to be
(the localizer keeps the most certain patches for RANSAC-PnP).

DATA are scene folders, or folders of scene folders, as written by `aceg synth`
(mapping/ and query_*/ splits; the query splits need depth maps, the ground truth). Each
scene is mapped once as `aceg map` maps it (triangulated anchors, the --init model's
embedding) and each query patch's candidates are cached in OUT/candidates/. The last
--held-out scenes (sorted by path) are not trained on and are scored at every evaluation:
"chosen" is the % of their patches whose chosen point lies within --radius of the truth,
"kept" the same among the 75 % most certain, "any" the % with a right candidate at all.

OUT receives log.csv, checkpoint.safetensors (re-running the same command resumes from it
exactly) and, at the end, regressor.safetensors: the --init model with this read-out;
map with it through `aceg map --regressor`, or ship it as the default.
"""


def add_arguments(parser) -> None:
    defaults = ReadoutConfig()
    parser.add_argument("data", nargs="+", metavar="DATA", help="scene folders or folders of scenes")
    parser.add_argument("out", metavar="OUT", help="output folder (candidates, checkpoint, log, model)")
    helps = {
        "steps": "training steps",
        "batch": "query patches per step, drawn from all training scenes",
        "lr": "peak learning rate (AdamW, cosine decay to a tenth)",
        "weight_decay": "AdamW weight decay",
        "radius": "metres within which a candidate's point counts as right",
        "eval_every": "steps between evaluations and checkpoints",
    }
    for f in fields(ReadoutConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"{helps[f.name]} (default: %(default)s)")
    parser.add_argument("--candidates", type=int, default=AnchorConfig.candidates,
                        help="most similar anchors the read-out chooses from (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=AnchorConfig.readout_hidden,
                        help="hidden width of the read-out's MLP (default: %(default)s)")
    parser.add_argument("--held-out", type=int, default=4,
                        help="scenes kept out of training and scored (default: %(default)s)")
    parser.add_argument("--init", metavar="FILE", default=str(WEIGHTS_DIR / "anchors-xfeat.safetensors"),
                        help="anchor regressor whose embedding maps the scenes and receives the "
                             "read-out (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def run(args) -> int:
    check_output_path(args.out, folder=True, what="pre-training output")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ReadoutConfig(**{f.name: getattr(args, f.name) for f in fields(ReadoutConfig)})
    roots = find_scene_roots(args.data)
    if args.held_out < 1 or args.held_out >= len(roots):
        raise AcegError(f"--held-out {args.held_out}: need at least one scene to score and one to "
                        f"train on ({len(roots)} found)")
    loaded = load_regressor(args.init)
    if not isinstance(loaded.model, AnchorRegressor):
        raise AcegError(f"{args.init}: not an anchor regressor (use aceg pretrain for the transformer)")
    base = loaded.model.eval()
    enc = get_encoder(loaded.encoder)
    cache = Path(args.out) / "candidates"
    cache.mkdir(parents=True, exist_ok=True)
    paths = [cached_room_candidates(r, cache, base, enc, args.candidates)
             for r in tqdm(roots, desc="mapping scenes", unit="scene")]
    split = len(roots) - args.held_out
    torch.manual_seed(args.seed)
    readout = CandidateReadout(args.hidden)
    rows = train_readout(readout, Candidates.load(paths[:split]), Candidates.load(paths[split:]), config,
                         Path(args.out), scenes=[str(r) for r in roots[:split]], seed=args.seed)
    model = AnchorRegressor(replace(base.config, readout="learned", candidates=args.candidates,
                                    readout_hidden=args.hidden))
    model.load_state_dict(base.state_dict(), strict=False)
    model.readout.load_state_dict(readout.state_dict())
    extra = {"readout_pretraining": {"scenes": [str(r) for r in roots[:split]],
                                     "held_out": [str(r) for r in roots[split:]],
                                     "config": config.__dict__, "init": str(args.init),
                                     "init_identity": base.identity(), "final": rows[-1]}}
    out = Path(args.out) / "regressor.safetensors"
    save_regressor(out, model.eval(), enc.name, extra=extra)
    print(f"wrote {out} ({config.steps} steps; held-out: {rows[-1]})")
    return 0
