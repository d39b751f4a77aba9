"""``aceg pretrain-anchors``: query pre-training of the anchor model's embedding."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from aceg.errors import AcegError
from aceg.io import check_output_path
from aceg.model.anchors import AnchorConfig, AnchorRegressor
from aceg.model.encoder import get_encoder
from aceg.model.map_file import load_regressor, save_regressor
from aceg.pretraining.anchor_embedding import RUN_KEY as EMBEDDING_RUN_KEY
from aceg.pretraining.anchor_embedding import EmbeddingConfig, cached_mapped_room, train_embedding
from aceg.pretraining.distributed import init_distributed, record_rank_identities
from aceg.pretraining.feature_store import find_scene_roots
from aceg.pretraining.run_state import CHECKPOINT_NAME, checkpoint_world_size

HELP = "pre-train the anchor model's embedding across many scenes (query pre-training)"
DESCRIPTION = """\
Query pre-training of the anchor model (aceg.model.anchors): its map code is a set of
anchors, 3-D points of the mapping images keyed by their features, and a query patch reads
the point of the anchor its embedding finds most similar. This trains that embedding (and
the softmax temperature) across many scenes, so that a patch of an image taken in other
light or from another viewpoint picks an anchor at its own surface point.

DATA are scene folders, or folders of scene folders, as written by `aceg synth` (mapping/
and query_*/ splits, ACE layout, with depth maps: the ground truth). The last --held-out
scenes (in the order of DATA, each folder's scenes sorted by name) are not trained on and
are scored at every evaluation: the share of their query patches, per split, whose most
similar anchor lies within 10 cm of their point.

Each scene is mapped once as `aceg map` maps it (track triangulation, the anchor budget)
and cached in OUT/rooms/; a step draws one scene and --queries of its query patches; every
anchor within --radius of a patch's point is a positive, every other anchor of the map a
negative; the loss is -log of the attention the positives get. The defaults made the
shipped embedding.

OUT receives log.csv, checkpoint.safetensors (re-running the same command resumes from it
exactly) and, at the end, regressor.safetensors: map with it through `aceg map
--regressor`, or ship it as the default. --init FILE continues from an anchor regressor file.

Several processes: `torchrun --nproc-per-node N -m aceg pretrain-anchors DATA... OUT`
(torch.distributed DDP over gloo: the embedding is small and trains on the CPU). The
training scenes are shared out among the processes, each maps its own and draws one a
step, and DDP averages the gradients; OUT/ranks.json records every process's weight hash
(identical). A checkpoint resumes only with the same number of processes, scenes,
encoder, start model, seed and settings (--steps and --eval-every may change).
"""

_HELPS = {
    "steps": "training steps (one scene each, per process)",
    "queries": "query patches per step",
    "radius": "metres within which an anchor is a positive",
    "lr": "peak learning rate (AdamW, cosine decay to a tenth)",
    "weight_decay": "AdamW weight decay",
    "eval_every": "steps between evaluations and checkpoints",
}


def add_arguments(parser) -> None:
    parser.add_argument("data", nargs="+", metavar="DATA", help="scene folders or folders of scenes")
    parser.add_argument("out", metavar="OUT", help="output folder (checkpoint, log, final model)")
    defaults = EmbeddingConfig()
    for name, text in _HELPS.items():
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"{text} (default: {value})")
    parser.add_argument("--held-out", type=int, default=4,
                        help="scenes kept out of training and scored (default: %(default)s)")
    parser.add_argument("--init", metavar="FILE", help="anchor regressor file to start from "
                        "(default: a fresh model, the identity embedding)")
    parser.add_argument("--encoder", default="xfeat", help="frozen encoder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice)")


def _config(args) -> EmbeddingConfig:
    """The run's settings from the flags given (the defaults for the others)."""
    given = {f.name: getattr(args, f.name) for f in fields(EmbeddingConfig)
             if getattr(args, f.name, None) is not None}
    try:
        return EmbeddingConfig(**given)
    except ValueError as exc:
        raise AcegError(str(exc)) from None


def _start_model(args, enc) -> AnchorRegressor:
    """The --init model, or a fresh one (seeded with --seed)."""
    if not args.init:
        torch.manual_seed(args.seed)
        return AnchorRegressor(AnchorConfig(feature_dim=enc.feature_dim))
    loaded = load_regressor(args.init)
    if not isinstance(loaded.model, AnchorRegressor):
        raise AcegError(f"{args.init}: not an anchor regressor (use aceg pretrain for the transformer)")
    if loaded.encoder != enc.name:
        raise AcegError(f"{args.init}: made for encoder {loaded.encoder!r}, not {enc.name!r}")
    model = AnchorRegressor(loaded.model.config)
    model.load_state_dict(loaded.model.state_dict())
    return model


def run(args) -> int:
    check_output_path(args.out, folder=True, what="pre-training output")
    config = _config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    roots = find_scene_roots(args.data)
    if args.held_out < 0 or args.held_out >= len(roots):
        raise AcegError(f"--held-out {args.held_out} leaves no scene to train on ({len(roots)} found)")
    # Mapping a rank's share of the scenes can take long before the first collective.
    rank, world = init_distributed(backend="gloo", timeout=timedelta(hours=6))
    split = len(roots) - args.held_out
    if world > split:
        raise AcegError(f"{world} processes and {split} training scene(s): each process needs one")
    out = Path(args.out)
    saved_world = checkpoint_world_size(out / CHECKPOINT_NAME, EMBEDDING_RUN_KEY)
    if saved_world not in (None, world):
        raise AcegError(f"{out / CHECKPOINT_NAME}: checkpoint made with {saved_world} process(es), "
                        f"this run has {world}: cannot resume")
    enc = get_encoder(args.encoder)
    model = _start_model(args, enc)
    cache = out / "rooms"
    cache.mkdir(parents=True, exist_ok=True)
    # Each rank maps its shard of the training scenes; rank 0 also the held-out ones.
    mine = [i for i in range(split) if i % world == rank] + (list(range(split, len(roots))) if rank == 0 else [])
    run_info = {"encoder": enc.name, "start": model.identity(), "seed": args.seed}
    rooms = {i: cached_mapped_room(roots[i], cache, enc, model.config)
             for i in tqdm(mine, desc="mapping scenes", unit="scene", disable=rank != 0)}
    rows = train_embedding(model, [rooms[i] for i in mine if i < split],
                           [rooms[i] for i in mine if i >= split], config, out, seed=args.seed,
                           scenes=[str(r.resolve()) for r in roots[:split]], run_info=run_info)
    record_rank_identities(out, rows[-1]["step"], model.identity())
    if rank == 0:
        extra = {"embedding": "query pre-trained by aceg pretrain-anchors",
                 "pretraining": {"scenes": [str(r) for r in roots[:split]],
                                 "held_out": [str(r) for r in roots[split:]], "config": asdict(config),
                                 "init": args.init, "seed": args.seed, "processes": world,
                                 "final": rows[-1]}}
        save_regressor(out / "regressor.safetensors", model, enc.name, extra=extra)
        print(f"wrote {out}/regressor.safetensors (identity {model.identity()}; {rows[-1]['step']} steps; "
              f"{world} process(es); held-out: {rows[-1]})")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0
