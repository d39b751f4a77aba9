"""``aceg eval``: compare a pose results file with ground-truth poses."""

from __future__ import annotations

import json

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.evaluation.metrics import format_table
from aceg.evaluation.results import evaluate_results, read_results
from aceg.io import atomic_write_text, check_output_path

HELP = "evaluate a pose results file against ground truth (accuracy table)"
DESCRIPTION = """\
Evaluate estimated query poses against ground truth.

POSES is a results file as written by `aceg localize` (ACE format: one line per image,
`name qw qx qy qz tx ty tz [rot_err_deg tr_err_m inliers]`, world-to-camera). Every frame
of the ground-truth scene counts as a query; images with no line count as not localized.
Prints the % of queries within 5 cm/5 deg, 10 cm/10 deg and 20 cm/20 deg, the median
rotation and translation errors, and the % localized.
"""


def add_arguments(parser) -> None:
    parser.add_argument(
        "--gt", required=True, metavar="SCENE", help="ground-truth scene (any supported format)"
    )
    parser.add_argument("--poses", required=True, metavar="FILE", help="pose results file")
    parser.add_argument(
        "--json", metavar="OUT", help="also write the table and per-frame errors as JSON"
    )
    add_format_argument(parser)


def run(args) -> int:
    gt = read_scene_arg(args.gt, args.format)
    if args.json:
        check_output_path(args.json, inputs=[args.poses, *gt.files()], what="JSON file")
    results = read_results(args.poses)
    if not results:
        print(f"aceg: warning: {args.poses} holds no pose lines: every frame counts as not "
              "localized")
    evaluated, table = evaluate_results(gt, results)
    print(format_table(table, name=gt.name))
    if args.json:
        payload = {
            "gt": str(args.gt),
            "poses": str(args.poses),
            "table": table.to_dict(),
            "frames": [
                {
                    "name": r.name,
                    "localized": r.localized,
                    "rot_err_deg": r.rot_err_deg,
                    "trans_err_m": r.trans_err_m,
                    "inliers": r.inliers,
                }
                for r in evaluated
            ],
        }
        atomic_write_text(args.json, json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0
