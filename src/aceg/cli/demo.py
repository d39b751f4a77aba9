"""``aceg demo``: the end-to-end demonstration (see :mod:`aceg.demo`)."""

from __future__ import annotations

from aceg.cli.common import add_format_argument
from aceg.io import check_output_path

HELP = "end-to-end demo: synthetic room (or your scene), map, localize, evaluate, plot"
DESCRIPTION = """\
Without arguments: generate a small synthetic room (mapping images under lighting A,
query viewpoints under lighting A and the same viewpoints under lighting B), map it with
the anchor model and its shipped weights (--model as in `aceg map`), localize the
queries, print the accuracy table and write to --out (default ./aceg-demo):

  map.map                the map (map code or ACE head, and the scene centre)
  poses_<split>.txt      estimated poses (ACE results format, world-to-camera)
  map_cloud.ply          the map's point cloud (predicted scene coordinates, coloured)
  demo.png               error CDFs and a top-down view of the point cloud with the
                         ground-truth and estimated query cameras

--scene PATH does the same on your posed scene: its
mapping/ and query*/ sub-folders if it has them, else every --query-every-th image
(index % K == 1) is a query and the rest is mapped.
"""


def add_arguments(parser) -> None:
    from aceg.mapping.mapper import MODELS
    from aceg.mapping.training import PRESET_NAMES

    parser.add_argument("--out", default="aceg-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--scene", metavar="PATH", default=None,
                        help="your posed scene instead of the synthetic room")
    parser.add_argument("--query-every", type=int, default=4, metavar="K",
                        help="with --scene without splits: every K-th image is a query "
                             "(default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default=MODELS[0],
                        help="what the map holds, as in `aceg map` (default: %(default)s)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default=None,
                        help="transformer, ace: mapping preset (default: default)")
    parser.add_argument("--regressor", metavar="PATH", default=None,
                        help="anchors, transformer: weights file of that model (default: the "
                             "shipped one)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="working image short side (default: 480, never upsampled)")
    add_format_argument(parser)


def run(args) -> int:
    from aceg.cli.map import check_model_flags
    from aceg.demo import run_demo

    check_model_flags(args, args.model)
    check_output_path(args.out, folder=True, what="demo output")
    settings = {} if args.preset is None else {"preset": args.preset}
    result = run_demo(args.out, scene=args.scene, query_every=args.query_every,
                      model=args.model, regressor=args.regressor,
                      short_side=args.short_side, fmt=args.format, **settings)
    print(f"\naceg demo finished in {result.seconds['total']:.0f} s; outputs in {result.out}/:")
    for label, path in result.files.items():
        print(f"  {label:<18} {path}")
    return 0
