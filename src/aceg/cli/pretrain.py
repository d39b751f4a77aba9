"""``aceg pretrain``: query pre-training of the scene-agnostic regressor."""

from __future__ import annotations

from dataclasses import fields

import torch

from aceg.errors import AcegError
from aceg.io import check_output_path
from aceg.json_limits import parse_json
from aceg.pretraining.distributed import init_distributed
from aceg.pretraining.pretrain_config import FINAL_NAME, PretrainConfig
from aceg.pretraining.trainer import Pretrainer

HELP = "pre-train the ACE-G transformer across many scenes (mapping + query iterations)"
DESCRIPTION = """\
Query pre-training of the scene-agnostic transformer.

DATA are scene folders, or folders of scene folders, as written by `aceg synth` (each with
a mapping/ split and query_*/ splits, ACE layout with depth). A scene folder without splits
is split by index (every 4th frame is a query). Encoder features are computed once and
cached in OUT/features/ (fp16). Training alternates mapping iterations (optimise the map
codes of a pool of scenes on mapping patches; the transformer learns from every k-th one)
and query iterations (train the transformer on the same scenes' query patches, codes
frozen); codes are re-initialised after --code-lifetime mapping iterations.

OUT receives checkpoint.safetensors (+ pool-rank*.safetensors), log.csv and, at the end,
regressor.safetensors (use it with `aceg map --regressor`, or ship it as the default).
Re-running the same command resumes from the checkpoint exactly; raise --steps to continue
a finished run. A snapshot of a run still going (or stopped early) becomes a regressor file
with `python -c "from aceg.pretraining.pretrain_checkpoint import export_regressor;
export_regressor('OUT', 'snapshot.safetensors')"`. --init FILE starts from a regressor
file (e.g. the shipped model) instead of random weights: fine-tuning on more or on real data.

Data-parallel on several processes or GPUs (gloo on CPU, nccl on GPU):
  torchrun --nproc-per-node 2 -m aceg pretrain DATA OUT ...
"""


def add_arguments(parser) -> None:
    defaults = PretrainConfig()
    parser.add_argument("data", nargs="+", metavar="DATA", help="scene folders or folders of scenes")
    parser.add_argument("out", metavar="OUT", help="output folder (checkpoints, logs, final model)")
    helps = {
        "steps": "total training steps",
        "batch_patches": "patches per iteration and process",
        "scenes_per_step": "scenes per iteration",
        "pool_size": "scenes with a live map code per process",
        "code_lifetime": "mapping iterations before a code is re-initialised",
        "code_warmup": "mapping iterations before a code joins query iterations",
        "regressor_every": "the transformer also learns from every k-th mapping iteration",
        "lr": "peak learning rate of the transformer (AdamW)",
        "code_lr": "peak learning rate of the map codes (Adam) in the keys_values form; "
                   "token codes use a tenth of it",
        "code_lr_schedule": "one_cycle (over each code's lifetime, as aceg map does) or constant",
        "code_init": "how a fresh pool code starts: anchored (keys on the scene's own mapping "
                     "patches, as aceg map does) or random",
        "query_mapping_share": "share of each query iteration's patches drawn from the scene's "
                               "mapping split (mapping loss), so the transformer keeps the fit "
                               "of its codes while learning to generalise",
        "query_mapping_loss": "how those mapping patches are scored: mapping (reprojection, as "
                              "at mapping time) or 3d (3-D error against depth: the transformer "
                              "learns to give codes fitted by reprojection correct geometry)",
        "depth_fraction": "fraction of codes mapped with depth supervision",
        "pool_depth": "the depth those codes fit to: rendered (the scenes' depth maps) or "
                      "triangulated (sparse depth triangulated between the mapping images with "
                      "their poses, RGB only, as aceg map --triangulate; computed once per scene "
                      "and cached beside the features)",
        "short_side": "working short side in pixels (default: the images' own size)",
        "seed": "random seed",
        "checkpoint_every": "steps between checkpoints",
        "encoder": "frozen encoder",
        "init": "regressor file to start from instead of random weights (fine-tuning, e.g. "
                "the shipped model on real RGB-D scenes); its architecture is kept",
    }
    for f in fields(PretrainConfig):
        if f.name not in helps:
            continue
        default = getattr(defaults, f.name)
        kind = int if f.name == "short_side" else str if f.name == "init" else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default,
                            metavar="FILE" if f.name == "init" else None,
                            help=f"{helps[f.name]} (default: %(default)s)")
    parser.add_argument("--regressor-config", default="{}", metavar="JSON",
                        help='transformer size overrides, e.g. \'{"width": 128, "depth": 3}\'')
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (default: torch's choice)")


def run(args) -> int:
    check_output_path(args.out, folder=True, what="pre-training output")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg_fields = {f.name for f in fields(PretrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in cfg_fields}
    overrides = parse_json(args.regressor_config, "--regressor-config")
    if not isinstance(overrides, dict):
        raise AcegError("--regressor-config must be a JSON object, e.g. '{\"width\": 128}'")
    cfg = PretrainConfig(**values, regressor=overrides)
    rank, world = init_distributed()
    trainer = Pretrainer(args.data, args.out, cfg)
    if trainer.load_checkpoint() and rank == 0:
        print(f"resumed from {args.out}/checkpoint.safetensors at step {trainer.step}")
    trainer.run()
    if rank == 0:
        print(f"wrote {args.out}/{FINAL_NAME} ({trainer.step} steps, {world} process(es))")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
