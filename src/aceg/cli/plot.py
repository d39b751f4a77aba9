"""``aceg plot``: error CDFs of results files and a top-down view of the cameras."""

from __future__ import annotations

import numpy as np

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.errors import AcegError
from aceg.evaluation.results import evaluate_results, read_results
from aceg.io import check_output_path
from aceg.visualization.plots import (
    FIGURE_SUFFIXES,
    CameraSeries,
    ErrorSeries,
    results_figure,
    save_figure,
)

HELP = "plot error CDFs and a top-down camera view of one or more results files"
DESCRIPTION = """\
Plot one or several pose results files side by side.

With --gt, errors are computed against the ground-truth scene and a top-down view shows
ground-truth query cameras, the estimates, and a line from each estimate to its truth.
Without --gt, the error columns stored in the results files are used (written by
`aceg localize --gt`) and no top-down view is drawn.
"""


def add_arguments(parser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="pose results files")
    parser.add_argument("--gt", metavar="SCENE", help="ground-truth scene of the queries")
    parser.add_argument("--labels", nargs="+", help="legend labels (default: file names)")
    parser.add_argument("--out", required=True, metavar="FIG.png",
                        help="output figure: .png, .pdf, .svg or .jpg / .jpeg")
    parser.add_argument("--title", default="", help="figure title")
    add_format_argument(parser)


def run(args) -> int:
    labels = args.labels or [p for p in args.results]
    if len(labels) != len(args.results):
        raise AcegError(f"{len(labels)} labels given for {len(args.results)} results files")
    gt = read_scene_arg(args.gt, args.format) if args.gt else None
    check_output_path(args.out, inputs=[*args.results, *(gt.files() if gt else [])],
                      suffixes=FIGURE_SUFFIXES, what="figure")
    errors, runs = [], []
    for label, path in zip(labels, args.results, strict=True):
        results = read_results(path)
        if gt is not None:
            evaluated, _ = evaluate_results(gt, results)
            frames = gt.by_name()
            localized = [r for r in evaluated if r.localized]
            runs.append(CameraSeries(
                label,
                np.array([r.cam_to_world[:3, 3] for r in localized]).reshape(-1, 3),
                np.array([frames[r.name].camera_centre for r in localized]).reshape(-1, 3),
            ))
        else:
            evaluated = results
            if all(np.isnan(r.trans_err_m) for r in results):
                raise AcegError(f"{path}: holds no error columns; pass --gt SCENE")
        errors.append(ErrorSeries(label, np.array([r.rot_err_deg for r in evaluated]),
                                  np.array([r.trans_err_m for r in evaluated])))
    gt_centres = gt.camera_centres() if gt is not None else None
    fig = results_figure(errors, gt_centres, runs, title=args.title)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0
