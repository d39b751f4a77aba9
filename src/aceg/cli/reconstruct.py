"""``aceg reconstruct``: pose a folder of photos or a video by structure from motion
(COLMAP), into a scene ``aceg map`` reads."""

from __future__ import annotations

from pathlib import Path

from aceg.data.reconstruct import DEFAULT_BLUR_FRACTION, DEFAULT_VIDEO_FRAMES
from aceg.errors import AcegError

#: How the feature types are named in the report.
FEATURE_NAMES = {"sift": "SIFT", "xfeat": "XFeat + LighterGlue"}

HELP = "pose a folder of photos or a video by structure from motion (COLMAP), for aceg map"

DESCRIPTION = f"""\
Pose the images of INPUT (a folder of photos, or a video file) by structure from motion
with COLMAP (pycolmap, on the CPU) and write OUT_SCENE, which `aceg map` reads:

  OUT_SCENE/rgb/, poses/, calibration/   the registered images in the ACE layout
                                         (undistorted when the camera has distortion)
  OUT_SCENE/colmap/                      the COLMAP model (text) and its images
  OUT_SCENE/reconstruction.json          units, counts, the scale pair

A video is sampled (--fps N frames per second of video, or --frames N evenly spaced;
default: --frames {DEFAULT_VIDEO_FRAMES}) and its blurry frames are skipped: a frame whose
variance of the Laplacian is below --blur-fraction (default {DEFAULT_BLUR_FRACTION}) of
the median over the sampled frames. The images of a folder are all used; they must have
one size. All images share one camera (--camera-model SIMPLE_RADIAL or PINHOLE) whose
focal length is estimated, starting from the EXIF focal length when the photos carry one.
Photos are matched exhaustively, video frames with their neighbours (--matcher), with
COLMAP's SIFT features or XFeat + LighterGlue (--features). If the images form several
separate models the largest is kept, with a note.

Scale: structure from motion recovers a scene only up to scale, so OUT_SCENE is in SfM
units unless you give the known distance in metres between two cameras:
--scale METRES --scale-frames A B (image names: the photos' file names, or
frame_NNNNN.png for video frame NNNNN, as listed in OUT_SCENE/colmap/images).

Examples:
  aceg reconstruct my_photos/ my_scene
  aceg reconstruct walk.mp4 my_scene --fps 2
  aceg reconstruct my_photos/ my_scene --scale 1.5 --scale-frames IMG_01.jpg IMG_09.jpg
  aceg map my_scene my_scene.map
"""


def add_arguments(parser) -> None:
    from aceg.data.reconstruct import CAMERA_MODELS, FEATURES, MATCHERS

    parser.add_argument("input", metavar="INPUT", help="folder of photos, or a video file")
    parser.add_argument("out", metavar="OUT_SCENE", help="output folder (absent or empty)")
    parser.add_argument("--fps", type=float, default=None, metavar="N",
                        help="video: sample N frames per second of video")
    parser.add_argument("--frames", type=int, default=None, metavar="N",
                        help=f"video: sample N frames evenly spaced (default {DEFAULT_VIDEO_FRAMES})")
    parser.add_argument("--blur-fraction", type=float, default=DEFAULT_BLUR_FRACTION,
                        metavar="F", help="video: skip sampled frames whose variance of the "
                        "Laplacian is below F times the median (0 keeps every frame)")
    parser.add_argument("--camera-model", choices=CAMERA_MODELS, default=CAMERA_MODELS[0],
                        help="the one shared camera's model (default %(default)s)")
    parser.add_argument("--fixed-principal-point", action="store_true",
                        help="keep the principal point at the image centre instead of "
                             "estimating it in bundle adjustment (for few or nearly "
                             "parallel views, where it is poorly determined)")
    parser.add_argument("--matcher", choices=MATCHERS, default="auto",
                        help="pairs to match: auto (sequential for a video, exhaustive for "
                             "photos), exhaustive or sequential")
    parser.add_argument("--features", choices=FEATURES, default=FEATURES[0],
                        help="features and matches: sift (default), COLMAP's SIFT, with "
                             "sub-pixel keypoints: the most accurate poses; or xfeat, XFeat "
                             "keypoints matched by LighterGlue (the features aceg maps with): "
                             "keypoints on whole pixels, poses as good typically but with "
                             "larger worst cases, and LighterGlue's cost per pair on the CPU "
                             "makes it slower than SIFT when many pairs are matched")
    parser.add_argument("--scale", type=float, default=None, metavar="METRES",
                        help="known distance between the cameras of --scale-frames: puts the "
                             "scene in metres (default: SfM units)")
    parser.add_argument("--scale-frames", nargs=2, default=None, metavar=("A", "B"),
                        help="the two image names --scale refers to")
    parser.add_argument("--seed", type=int, default=0, help="COLMAP's random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def settings_of(args):
    from aceg.data.reconstruct import ReconstructSettings

    return ReconstructSettings(
        fps=args.fps, frames=args.frames, blur_fraction=args.blur_fraction,
        camera_model=args.camera_model, matcher=args.matcher, features=args.features,
        refine_principal_point=not args.fixed_principal_point,
        scale=args.scale,
        scale_frames=tuple(args.scale_frames) if args.scale_frames else None, seed=args.seed,
        progress=not args.quiet)


def report(result) -> None:
    """Print what ``result`` (a :class:`aceg.data.reconstruct.ReconstructResult`) holds."""
    blurry = f" ({result.blurry} blurry video frames skipped)" if result.blurry else ""
    print(f"registered {result.registered} of {result.inputs} images{blurry}: "
          f"{result.points} 3-D points, mean reprojection error {result.reprojection_px:.2f} px, "
          f"{result.camera_model} camera, focal {result.focal_px:.1f} px, "
          f"{FEATURE_NAMES.get(result.features, result.features)} features, "
          f"in {result.seconds:.0f} s")
    print(f"wrote {result.out_dir} (ACE layout; COLMAP text model in "
          f"{Path(result.out_dir) / 'colmap'})")
    if result.units == "metres":
        a, b = result.scale_frames
        print(f"units: metres ({a} and {b} set to the given distance; "
              f"{result.scale_factor:.4g} m per SfM unit)")
    else:
        print("units: SfM units: structure from motion is up to scale, so distances are not "
              "metres (give --scale METRES --scale-frames A B to fix them)")


def run(args) -> int:
    from aceg.data.reconstruct import reconstruct

    result = reconstruct(args.input, args.out, settings_of(args))
    report(result)
    print(f"next: aceg map {result.out_dir} {Path(result.out_dir).name}.map")
    return 0


def reconstruct_for_map(source: str, map_path: str) -> str:
    """For ``aceg map SOURCE OUT.map --reconstruct``: reconstruct ``source`` (photos or a
    video) into ``<OUT stem>-sfm/`` beside the map with the default settings, print a
    one-line note, and return that folder (the scene to map)."""
    from aceg.data.reconstruct import ReconstructSettings, reconstruct
    from aceg.io import check_output_path

    check_output_path(map_path, what="map")
    target = Path(map_path).with_name(f"{Path(map_path).stem}-sfm")
    if target.exists():
        raise AcegError(f"{target}: exists (from an earlier --reconstruct?); map it with "
                        f"`aceg map {target} {map_path}`, or remove it")
    print(f"aceg: note: --reconstruct: posing {source} by structure from motion into {target} "
          "(SfM units; `aceg reconstruct --help` for the options)")
    result = reconstruct(source, target, ReconstructSettings())
    report(result)
    return str(target)
