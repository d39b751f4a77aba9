"""``aceg convert``: read a posed image set in any supported format and write it in the
ACE / DSAC* layout (rgb/, poses/, calibration/ with a full 3x3 K, depth/)."""

from __future__ import annotations

from pathlib import Path

from aceg.cli.common import add_format_argument
from aceg.data.readers import FORMAT_SUMMARIES, detect_format, format_names, read_scene
from aceg.data.writers import write_ace_scene
from aceg.io import check_output_path

HELP = "convert a posed image set (COLMAP, nerfstudio, Strecha, Middlebury, ACE) to the ACE layout"

DESCRIPTION = """\
Convert a posed image set to the ACE / DSAC* layout that `aceg map` reads:

  DST/rgb/<name>           images (copied; distorted images are undistorted to PNG)
  DST/poses/<name>.txt     4x4 camera-to-world pose (OpenCV camera axes, metres)
  DST/calibration/<name>.txt  full 3x3 K in pixels (fx, fy and principal point kept)
  DST/depth/<name>         depth maps, when the source has them

The input format is detected from SRC unless --format is given. Every pose and
calibration is validated while reading; bad input stops with a one-line error naming
the file (and line). DST is written into a temporary folder and renamed into place.

Input formats (--format FMT; detected when omitted):
{formats}

Examples:
  aceg convert ../shared/data/strecha/fountain-P11 fountain-ace
  aceg convert my_capture/ my_capture-ace --format colmap
  aceg convert scene/transforms.json scene-ace --overwrite
""".format(formats="\n".join(f"  {name:<11} {FORMAT_SUMMARIES[name]}" for name in format_names()))


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="SRC", help="input scene folder (or its camera file)")
    parser.add_argument("dst", metavar="DST", help="output folder for the ACE layout")
    add_format_argument(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DST if it exists and is not empty"
    )
    parser.add_argument(
        "--link-images",
        action="store_true",
        help="symlink images and depth maps instead of copying them (undistorted images are "
        "always written)",
    )


def run(args) -> int:
    src = Path(args.src)
    fmt = args.format or detect_format(src)
    scene = read_scene(src, fmt)
    check_output_path(args.dst, folder=True, what="converted scene")
    report = write_ace_scene(
        scene, Path(args.dst), copy_images=not args.link_images, overwrite=args.overwrite
    )
    details = []
    if report.undistorted:
        details.append(f"{report.undistorted} undistorted")
    if report.with_depth:
        details.append(f"{report.with_depth} with depth")
    extra = f" ({', '.join(details)})" if details else ""
    print(f"converted {report.frames} frames from {fmt} ({src}) to {report.out_dir}{extra}")
    for note in scene.notes:
        print(f"note: {note}")
    return 0
