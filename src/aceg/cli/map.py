"""``aceg map``: build a map of a scene from its posed images."""

from __future__ import annotations

import argparse
import warnings

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.data.images import DEFAULT_SHORT_SIDE
from aceg.errors import AcegError
from aceg.io import check_output_path, output_lock

HELP = "build a map of a scene (anchor model, map-code transformer or ACE head) from posed images"
DESCRIPTION = """\
Build a map of SCENE (posed images, any supported format) and write it to OUT (a
safetensors file, usually *.map) for `aceg localize` and `aceg serve`.

--model picks what the map holds:

  anchors      (default; use it unless you have a reason not to) the anchor model: every
               mapping patch whose 3-D point is known becomes an anchor, keyed by its
               XFeat descriptor through a small pre-trained embedding. The points are
               triangulated between the posed mapping images (XFeat keypoints matched with
               LighterGlue, chained into tracks, denoised by local planes), or read from
               depth maps with --depth. Nothing is optimised, so there are no presets.
  transformer  the map-code transformer, the form of the ACE-G paper: a frozen
               scene-agnostic transformer reads a map code that is optimised on the
               mapping images (reprojection loss; --preset, --iterations, --batch-size,
               --code-init). Slower to map than the anchor model.
  ace          the baseline: ACE's scene-specific MLP head and loss, trained from scratch
               on the frozen encoder's features (XFeat by default; not ACE's own encoder).
               --preset, --iterations, --batch-size and --encoder apply.

--anchor-points keypoints (anchors, without --depth) makes every triangulated mapping
keypoint an anchor, keyed by its own descriptor, instead of every patch cell with a 3-D
point; such a map is localized from the query's keypoints, at sub-pixel precision on
both ends instead of the 8-pixel cells (see MODEL_CARD.md for how the two compare).

--regressor PATH gives other weights for anchors or transformer (default: the shipped
src/aceg/weights/anchors-xfeat.safetensors or transformer-xfeat.safetensors). A flag that
does not apply to the chosen model is an error.

An anchor mapping run keeps its finished work (keypoints, matches, encoded patches, in
chunks) in .OUT.partial/ beside OUT until the map is written: run the same command again
after an interruption and it picks up where it stopped (with other images or settings it
starts afresh). --restart discards that work first.

--split K:R leaves out the frames with index % K == R (to localize them later with
`aceg localize --split K:R`).
"""

#: Flags that apply to some models only: argparse destination -> (flag, models). Their
#: argparse default is None (False for switches), so giving one is detectable.
MODEL_FLAGS = {
    "preset": ("--preset", ("transformer", "ace")),
    "iterations": ("--iterations", ("transformer", "ace")),
    "batch_size": ("--batch-size", ("transformer", "ace")),
    "code_init": ("--code-init", ("transformer",)),
    "triangulate": ("--triangulate", ("transformer", "ace")),
    "max_anchors": ("--max-anchors", ("anchors",)),
    "map_size": ("--map-size", ("anchors",)),
    "anchor_points": ("--anchor-points", ("anchors",)),
    "regressor": ("--regressor", ("anchors", "transformer")),
    "restart": ("--restart", ("anchors",)),
    "encoder": ("--encoder", ("ace",)),
}
#: Settings of :func:`aceg.mapping.mapper.map_scene` taken from flags of another name.
SETTING_NAMES = {"depth": "use_depth", "keypoints": "triangulation_keypoints",
                 "map_size": "map_size_mb"}


def add_arguments(parser) -> None:
    from aceg.mapping.anchor_budget import ANCHORS_PER_IMAGE
    from aceg.mapping.mapper import MODELS
    from aceg.mapping.training import PRESET_NAMES
    from aceg.mapping.triangulation import (
        LARGE_SCENE_IMAGES,
        LARGE_SCENE_KEYPOINTS,
        SMALL_SCENE_IMAGES,
        SMALL_SCENE_KEYPOINTS,
        TRIANGULATION_CONFIG,
    )
    from aceg.model.anchors import ANCHOR_POINTS, AnchorConfig
    from aceg.model.regressor import CODE_INITS

    parser.add_argument("scene", metavar="SCENE", help="scene folder or file (posed images)")
    parser.add_argument("out", metavar="OUT", help="map file to write (e.g. scene.map)")
    parser.add_argument("--model", choices=MODELS, default=MODELS[0],
                        help="anchors (default), transformer or ace; see above")
    parser.add_argument("--preset", choices=PRESET_NAMES, default=None,
                        help="transformer, ace: speed/accuracy trade-off (default: default)")
    parser.add_argument("--depth", action="store_true",
                        help="3-D points (anchors) or depth supervision (transformer, ace) from "
                             "the frames' depth maps (every frame needs one)")
    parser.add_argument("--triangulate", action="store_true",
                        help="transformer, ace, RGB only: add depth supervision from XFeat "
                             "keypoints matched between neighbouring mapping images and "
                             "triangulated with their known poses (fixes the depth along the "
                             "rays that reprojection alone leaves loose); the anchor model "
                             "always triangulates unless --depth is given")
    parser.add_argument("--keypoints", type=int, default=None, metavar="N",
                        help="keypoints per image of the triangulation (anchors without --depth, "
                             f"or --triangulate); default {SMALL_SCENE_KEYPOINTS} for scenes of up "
                             f"to {SMALL_SCENE_IMAGES} images, {TRIANGULATION_CONFIG.max_keypoints} "
                             f"up to {LARGE_SCENE_IMAGES}, {LARGE_SCENE_KEYPOINTS} above (whose "
                             "anchor budget keeps few per image; their matching also stops "
                             "early). Small scenes of large images map better with more")
    parser.add_argument("--max-anchors", type=int, default=None, metavar="N",
                        help="anchors: anchors the map keeps at most (76 bytes each); beyond "
                             "that a random subset (default: the "
                             f"regressor's, {AnchorConfig().max_anchors} for the shipped one, or "
                             f"{ANCHORS_PER_IMAGE} per mapping image, whichever is larger)")
    parser.add_argument("--map-size", type=float, default=None, metavar="MB",
                        help="anchors: the budget as the map file's size in megabytes instead "
                             "of --max-anchors (e.g. 2 for about 26,000 anchors)")
    parser.add_argument("--restart", action="store_true",
                        help="anchors: discard the finished work an interrupted run of this "
                             "command left in .OUT.partial/ and map from the start (by default "
                             "it is read back when the images and settings are the same)")
    parser.add_argument("--anchor-points", choices=ANCHOR_POINTS, default=None,
                        help="anchors: what an anchor is: a patch cell with a 3-D point (cells, "
                             "the default) or a triangulated keypoint (keypoints; not with "
                             "--depth); see above")
    parser.add_argument("--regressor", metavar="PATH", default=None,
                        help="anchors, transformer: weights file (.safetensors) of that model; "
                             "default: the shipped one")
    parser.add_argument("--encoder", default=None,
                        help="ace: encoder name (default: xfeat); the other models use their "
                             "regressor's encoder")
    parser.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE,
                        help=f"working image short side in pixels (default {DEFAULT_SHORT_SIDE}; "
                             "smaller images are not upsampled)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="transformer, ace: override the preset's steps")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="transformer, ace: override the preset's patches per step")
    parser.add_argument("--split", metavar="K:R", default=None,
                        help="leave out frames with index %% K == R")
    parser.add_argument("--code-init", choices=CODE_INITS, default=None,
                        help="transformer: how the map code starts; anchored puts each token's "
                             f"keys on one of the scene's own patches (default: {CODE_INITS[0]})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reconstruct", action="store_true",
                        help="SCENE is a folder of unposed photos or a video: pose it first "
                             "with `aceg reconstruct` (defaults) into OUT's stem + '-sfm/' "
                             "beside OUT, then map that (SfM units: up to scale)")
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)  # replaced by --model
    add_format_argument(parser)


def parse_split(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, r = (int(x) for x in text.split(":"))
    except ValueError:
        raise AcegError(f"--split must be K:R with integers, got {text!r}") from None
    if k < 2 or not 0 <= r < k:
        raise AcegError(f"--split K:R needs K >= 2 and 0 <= R < K, got {text!r}")
    return k, r


def check_model_flags(args, model: str) -> None:
    """:class:`AcegError` naming the first flag given that does not apply to ``model``."""
    for dest, (flag, models) in MODEL_FLAGS.items():
        value = getattr(args, dest, None)
        if value not in (None, False) and model not in models:
            raise AcegError(f"{flag} does not apply to --model {model} (it applies to "
                            f"{', '.join(models)})")


def mapping_settings(args) -> dict:
    """The :func:`aceg.mapping.mapper.map_scene` settings the flags give (the flags that
    apply to the model and were given, and the working short side)."""
    settings = {"short_side": args.short_side}
    if args.model == "anchors":
        settings["resume"] = True
    for dest in ("preset", "iterations", "batch_size", "code_init", "max_anchors", "map_size",
                 "encoder", "depth", "triangulate", "keypoints", "anchor_points"):
        value = getattr(args, dest)
        if value not in (None, False):
            settings[SETTING_NAMES.get(dest, dest)] = value
    return settings


def check_short_side(short_side: int, scene) -> None:
    """A clear error before any work when ``--short-side`` is out of the range maps may
    hold, or when queries shaped like the mapping images would be over the localizer's
    pixel limit at it (:class:`aceg.data.images.ImageLimits`): such a map could never be
    used."""
    from aceg.data.images import ImageLimits, working_size
    from aceg.model.map_verify import SHORT_SIDE_RANGE

    low, high = max(16, SHORT_SIDE_RANGE[0]), SHORT_SIDE_RANGE[1]
    if not low <= short_side <= high:
        raise AcegError(f"--short-side must be between {low} and {high} pixels, got {short_side}")
    first, limit = scene.frames[0], ImageLimits().max_working_pixels
    w, h = working_size(first.width, first.height, scene.working_short_side(short_side))
    if w * h > limit:
        raise AcegError(f"--short-side {short_side}: queries like the mapping images would be "
                        f"{w}x{h} at that size, over the localizer's limit of {limit:,} pixels; "
                        "choose a smaller --short-side")


def run(args) -> int:
    from aceg.mapping.anchor_budget import check_budget_settings
    from aceg.mapping.mapper import map_scene

    if args.method is not None:
        raise AcegError("--method is gone: choose --model anchors (the default), transformer or ace")
    check_model_flags(args, args.model)
    if args.reconstruct:
        from aceg.cli.reconstruct import reconstruct_for_map

        args.scene = reconstruct_for_map(args.scene, args.out)
    scene = read_scene_arg(args.scene, args.format)
    check_output_path(args.out, inputs=[*scene.files(), *filter(None, [args.regressor])],
                      what="map")
    split = parse_split(args.split)
    if split:
        scene, _ = scene.split_every(*split)
    check_short_side(args.short_side, scene)
    for flag, value in (("--iterations", args.iterations), ("--batch-size", args.batch_size),
                        ("--max-anchors", args.max_anchors)):
        if value is not None and value < 1:
            raise AcegError(f"{flag} must be positive, got {value}")
    check_budget_settings(args.max_anchors, args.map_size)
    # Held from here to the write: a second `aceg map` to OUT is refused, not raced.
    with output_lock(args.out, "aceg map"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.restart:
            from aceg.mapping.checkpoint import discard_partial

            discard_partial(args.out)
        result = map_scene(scene, args.out, model=args.model, regressor=args.regressor,
                           seed=args.seed, **mapping_settings(args))
    for w in caught:
        print(f"aceg: warning: {w.message}")
    report(result, scene.has_depth and not args.depth and args.anchor_points != "keypoints")
    return 0


def report(result, depth_unused: bool) -> None:
    """Print what ``result`` (a :class:`aceg.mapping.common.MapResult`) mapped."""
    s = result.stats
    if depth_unused:
        print("aceg: note: every image of this scene has a depth map and --depth was not given; "
              + ("with --depth the anchors take their points from it instead of triangulation"
                 if result.model == "anchors" else
                 "with --depth the map's points are supervised in 3-D, which fixes their depth "
                 "along the rays"))
    steps = "" if result.model == "anchors" else f", {result.iterations} iterations"
    unit = "keypoints" if s.get("anchor_points") == "keypoints" else "patches"
    print(f"wrote {result.path} ({result.file_size / 1024:.0f} KiB): {result.model} map of "
          f"{result.frames} images, encoder {result.encoder}, {result.patches} {unit}{steps} "
          f"in {result.seconds['total']:.0f} s")
    if result.model == "anchors" and s.get("anchor_points") == "keypoints":
        print(f"anchors: {s['anchors']} keypoints (of {s['keypoints']} with a 3-D point, "
              f"{s['tracks']} distinct points)")
    elif result.model == "anchors":
        print(f"anchors: {s['anchors']} ({s['cells']:.0f}% of the patch cells had a 3-D point)")
    else:
        print(f"training: loss {s.get('loss', float('nan')):.3g}, "
              f"{100 * s.get('in10', 0):.0f}% of patches within 10 px, "
              f"median reprojection error {s.get('median_px', float('nan')):.1f} px")
    if result.resumed_chunks:
        print(f"resumed: {result.resumed_chunks} chunks of finished work read back from an "
              "interrupted run")
    if "triangulated" in s:
        t = s["triangulated"]
        per_image = f" of {t['keypoints']} per image" if "keypoints" in t else ""
        cells = f", depth for {t['cells']:.0f}% of the patch cells" if "cells" in t else ""
        print(f"triangulation: {t['points']} keypoints with a 3-D point{per_image}{cells} "
              f"({t['seconds']:.0f} s)")
