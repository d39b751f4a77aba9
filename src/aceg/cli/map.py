"""``aceg map``: build a map of a scene from its posed images."""

from __future__ import annotations

import warnings

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.data.images import DEFAULT_SHORT_SIDE
from aceg.errors import AcegError
from aceg.io import check_output_path

HELP = "build a map (ACE-G map code or ACE head) from posed images"
DESCRIPTION = """\
Build a map of SCENE (posed images, any supported format) and write it to OUT (a
safetensors file, usually *.map).

--method aceg (default) builds the map code of the frozen scene-agnostic regressor (the
shipped one, or --regressor PATH; without trained weights a seeded random init is used,
with a warning). The shipped regressor is the anchor model: its code holds the mapping
patches whose 3-D points triangulate between the posed images (XFeat keypoints matched
with LighterGlue, chained into tracks across the images, each triangulated from all its
views, then denoised by local planes; with --depth, the depth maps give the points;
--keypoints sets how many keypoints per image), each with its embedded
descriptor; presets, --code-init and --triangulate do not apply to it. The map-code
transformer (--regressor src/aceg/weights/transformer-xfeat.safetensors) optimises its
code on the mapping patches instead (reprojection loss; presets apply). --method ace
trains the ACE baseline: a scene-specific MLP head from scratch. All use the same frozen
encoder features and write the same map format for `aceg localize`.

--split K:R leaves out the frames with index % K == R (to localize them later with
`aceg localize --split K:R`).
"""


def add_arguments(parser) -> None:
    from aceg.mapping.mapper import METHODS, PRESETS
    from aceg.model.anchors import AnchorConfig
    from aceg.model.regressor import CODE_INITS

    parser.add_argument("scene", metavar="SCENE", help="scene folder or file (posed images)")
    parser.add_argument("out", metavar="OUT", help="map file to write (e.g. scene.map)")
    parser.add_argument("--method", choices=METHODS, default="aceg",
                        help="aceg (map code, default) or ace (scene-specific MLP head)")
    parser.add_argument("--preset", choices=list(PRESETS["aceg"]), default="default",
                        help="speed/accuracy trade-off (default: default)")
    parser.add_argument("--depth", action="store_true",
                        help="add depth supervision (every frame needs a depth map)")
    parser.add_argument("--triangulate", action="store_true",
                        help="RGB only: add depth supervision from XFeat keypoints matched between "
                             "neighbouring mapping images and triangulated with their known poses "
                             "(fixes the depth along the rays that reprojection alone leaves loose; "
                             "adds about 0.3 s per image on 2 CPU cores)")
    parser.add_argument("--keypoints", type=int, default=None, metavar="N",
                        help="keypoints per image for the triangulation (the anchor model's points, "
                             "or --triangulate; default 2048 for scenes of up to 70 images, 1024 "
                             "above, which keeps mapping 200 images at 100 s on 2 CPU cores: with "
                             "2048 it took 243 s). Small scenes of large images need the anchors: "
                             "castle-P30 (20 images) localized 60 %% within 10 cm with 2048 "
                             "against 20 %% with 1024")
    parser.add_argument("--max-anchors", type=int, default=None, metavar="N",
                        help="anchor model: anchors the map keeps at most, a random subset of the "
                             "patch cells with a 3-D point (default: the regressor's, "
                             f"{AnchorConfig().max_anchors} for the shipped one: maps of at most "
                             "1.87 MB, 76 bytes an anchor). On held-out "
                             "synthetic rooms (identity embedding) 12288 localized 43.3 %% of far-viewpoint queries within "
                             "10 cm, 24576 45.8 %%")
    parser.add_argument("--regressor", metavar="PATH", default=None,
                        help="ACE-G regressor checkpoint (.safetensors); default: shipped weights")
    parser.add_argument("--encoder", default=None,
                        help="encoder name (ACE only; ACE-G uses the regressor's encoder)")
    parser.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE,
                        help=f"working image short side in pixels (default {DEFAULT_SHORT_SIDE}; "
                             "smaller images are not upsampled)")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override the preset's patches per step")
    parser.add_argument("--split", metavar="K:R", default=None,
                        help="leave out frames with index %% K == R")
    parser.add_argument("--code-init", choices=CODE_INITS, default=CODE_INITS[0],
                        help="ACE-G: how the map code starts; anchored puts each token's keys "
                             "on one of the scene's own patches (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
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


def run(args) -> int:
    from aceg.mapping.mapper import map_scene

    scene = read_scene_arg(args.scene, args.format)
    check_output_path(args.out, inputs=[*scene.files(), *filter(None, [args.regressor])],
                      what="map")
    split = parse_split(args.split)
    if split:
        scene, _ = scene.split_every(*split)
    if args.short_side < 16:
        raise AcegError(f"--short-side must be at least 16 pixels, got {args.short_side}")
    for flag, value in (("--iterations", args.iterations), ("--batch-size", args.batch_size),
                        ("--max-anchors", args.max_anchors)):
        if value is not None and value < 1:
            raise AcegError(f"{flag} must be positive, got {value}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = map_scene(
            scene, args.out, method=args.method, preset=args.preset, regressor=args.regressor,
            use_depth=args.depth, triangulate=args.triangulate, encoder=args.encoder,
            triangulation_keypoints=args.keypoints, max_anchors=args.max_anchors,
            short_side=args.short_side, iterations=args.iterations, batch_size=args.batch_size,
            seed=args.seed, code_init=args.code_init,
        )
    for w in caught:
        print(f"aceg: warning: {w.message}")
    s = result.stats
    if scene.has_depth and not args.depth:
        print("aceg: note: every image of this scene has a depth map and --depth was not given; "
              + ("with --depth the anchors take their points from it instead of triangulation"
                 if "anchors" in s else
                 "with --depth the map's geometry is far better (ACE-G on held-out synthetic "
                 "rooms: 3-D error 0.46 -> 0.10 m, MODEL_CARD.md 'Map geometry')"))
    print(f"wrote {result.path} ({result.file_size / 1024:.0f} KiB): {result.method} map of "
          f"{result.frames} images, encoder {result.encoder}, {result.patches} patches, "
          f"{result.iterations} iterations in {result.seconds['total']:.0f} s")
    if "anchors" in s:
        print(f"anchors: {s['anchors']} ({s['cells']:.0f}% of the patch cells had a 3-D point)")
    else:
        print(f"training: loss {s.get('loss', float('nan')):.3g}, "
              f"{100 * s.get('in10', 0):.0f}% of patches within 10 px, "
              f"median reprojection error {s.get('median_px', float('nan')):.1f} px")
    if "triangulated" in s:
        t = s["triangulated"]
        per_image = f" of {t['keypoints']} per image" if "keypoints" in t else ""
        print(f"triangulation: {t['points']} keypoints with a 3-D point{per_image}, depth for "
              f"{t['cells']:.0f}% of the patch cells ({t['seconds']:.0f} s)")
    return 0
