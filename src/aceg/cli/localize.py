"""``aceg localize``: camera poses of query images against a map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aceg.cli.common import add_format_argument, add_query_arguments, query_settings, read_scene_arg
from aceg.cli.map import parse_split
from aceg.errors import AcegError
from aceg.io import check_output_path, output_lock

HELP = "localize query images against a map; write an ACE-format poses file"
DESCRIPTION = """\
Localize the images of QUERIES (a scene in any supported format: its intrinsics are used,
its poses ignored) against MAP, and write one line per image to --out in the ACE results
format (`name qw qx qy qz tx ty tz rot_err_deg tr_err_m inliers confident centre_std_m`,
world-to-camera; confident is 1 or 0, centre_std_m the camera centre's predicted standard
deviation; images that could not be localized become `# not localized: name reason` lines).

Each image: encoder + regressor (one scene coordinate per patch cell; for an anchor map
of keypoints, the image's XFeat keypoints read the anchors instead), uncertainty filter,
RANSAC-PnP (poselib, full pinhole fx fy cx cy) with non-linear refinement; keypoint maps
then refine the pose in a guided second stage. A pose is flagged confident with 200
inliers of the first stage and a camera centre determined to 5 cm (one standard
deviation predicted from its inliers).
--gt SCENE compares with ground-truth poses (matched by image name; checked before
localizing) and prints the accuracy table. --split K:R localizes only frames with index
% K == R. An image that cannot be read (corrupt, unusable intrinsics) does not stop the
others: their poses are written, then the command exits with code 2 naming it.
"""


def add_arguments(parser) -> None:
    parser.add_argument("map", metavar="MAP", help="map file written by `aceg map`")
    parser.add_argument("queries", metavar="QUERIES", help="scene with the query images")
    parser.add_argument("--out", required=True, metavar="FILE", help="poses file to write")
    parser.add_argument("--gt", metavar="SCENE", default=None,
                        help="ground-truth scene: print the accuracy table")
    add_query_arguments(parser)
    parser.add_argument("--regressor", metavar="PATH", default=None,
                        help="ACE-G regressor the map was made with (default: shipped weights)")
    parser.add_argument("--split", metavar="K:R", default=None,
                        help="only frames with index %% K == R")
    add_format_argument(parser)


def _ground_truth(path: str, queries):
    """``(scene, names)``: the frames of the ground-truth scene at ``path`` that
    ``queries`` names, and each query's ground-truth frame name; checked
    before any localization: every query needs its ground-truth frame
    (:func:`aceg.evaluation.results.match_frames`), and a warning is printed when a matched
    image file differs from the query's (the ground truth of another scene or split that
    reuses the names)."""
    from aceg.evaluation.results import match_frames

    gt_all = read_scene_arg(path, None)
    try:
        picked = match_frames([f.name for f in queries.frames], gt_all)
    except AcegError as exc:
        raise AcegError(f"--gt {path}: {exc}") from None
    differing = [q.name for q, i in zip(queries.frames, picked, strict=True)
                 if not _same_file_content(q.image_path, gt_all.frames[i].image_path)]
    if differing:
        print(f"aceg: warning: --gt {path}: {len(differing)} of {len(queries)} images differ "
              f"from the query images of the same name (first: {differing[0]}); is this the "
              "ground truth of these queries?")
    return gt_all.subset(sorted(picked)), [gt_all.frames[i].name for i in picked]


def _same_file_content(a, b) -> bool:
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def run(args) -> int:
    from aceg.localization.localizer import Localizer

    localizer = Localizer(args.map, regressor=args.regressor, **query_settings(args))
    queries = read_scene_arg(args.queries, args.format)
    check_output_path(args.out, inputs=[args.map, *queries.files(), *filter(None, [args.regressor])],
                      what="poses file")
    with output_lock(args.out, "aceg localize"):  # a second run to --out is refused, not raced
        return _localize_queries(args, localizer, queries)


def _localize_queries(args, localizer, queries) -> int:
    """Localize ``queries`` (the split of ``args``), write ``args.out``, print the summary
    (and the accuracy table with ``--gt``)."""
    from aceg.evaluation.metrics import format_table
    from aceg.evaluation.results import PoseResult, evaluate_results, write_results

    split = parse_split(args.split)
    if split:
        _, queries = queries.split_every(*split)
    gt, gt_names = _ground_truth(args.gt, queries) if args.gt else (None, [])
    results, times, unreadable = [], [], []
    bar = tqdm(queries.frames, desc="localizing", unit="img")
    for frame in bar:
        r = localizer.localize_frame(frame)
        if r.localized:
            times.append(r.timings["total"])
        else:
            tqdm.write(f"aceg: {frame.name}: not localized ({r.reason})")
        if r.bad_input:
            unreadable.append(r.reason)
        results.append(PoseResult(frame.name, r.cam_to_world, r.inliers, reason=r.reason,
                                  confident=r.confident if r.localized else None,
                                  centre_std_m=r.centre_std_m))
        bar.set_postfix(inliers=r.inliers)
    table = None
    if gt is not None:
        evaluated, table = evaluate_results(gt, results)
        errors = {e.name: e for e in evaluated}
        for r, gt_name in zip(results, gt_names, strict=True):
            e = errors[gt_name]
            if r.localized:
                r.rot_err_deg, r.trans_err_m = e.rot_err_deg, e.trans_err_m
    write_results(args.out, results)
    done = sum(r.localized for r in results)
    ms = 1000 * float(np.median(times)) if times else math.nan
    print(f"wrote {args.out}: {done} of {len(results)} images localized, "
          f"median {ms:.0f} ms per image")
    if table is not None:
        print(format_table(table, name=queries.name))
    if unreadable:
        raise AcegError(f"{len(unreadable)} of {len(results)} query images could not be used "
                        f"(first: {unreadable[0]}); {args.out} holds the others' poses")
    return 0
