"""``aceg export``: the coloured point cloud of a map as a PLY file."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.errors import AcegError
from aceg.io import check_output_path

HELP = "export a map's predicted scene coordinates as a coloured point cloud (PLY)"
DESCRIPTION = """\
Write the point cloud a map predicts for its mapping images, as a binary PLY (float32
x y z in metres in the scene's world frame, uint8 red green blue) that any PLY viewer
(MeshLab, CloudCompare, Open3D, trimesh) opens.

Each mapping image of SCENE is encoded, one 3D point is predicted per patch by the map
(the same prediction localization uses), and coloured with the mean colour of the patch.
Points are filtered: ACE-G maps keep the --keep-quantile fraction of each image's patches
with the smallest predicted uncertainty; for posed images, points behind the camera or
reprojecting more than --max-reproj-px pixels from their patch are dropped. --frusta adds
the mapping cameras as red pyramids (apex at the camera centre, OpenCV axes: looking
along +z).

Example:
  aceg export office.map data/office/train --ply office.ply --frusta
"""


def add_arguments(parser) -> None:
    parser.add_argument("map", metavar="MAP", help="map file (from aceg map)")
    parser.add_argument("scene", metavar="SCENE", help="the scene the map was built from")
    add_format_argument(parser)
    parser.add_argument("--ply", required=True, metavar="OUT.ply", help="output PLY file")
    parser.add_argument("--frusta", action="store_true", help="add the mapping camera frusta")
    parser.add_argument("--frustum-size", type=float, default=None, metavar="M",
                        help="frustum depth in metres (default: 5%% of the scene extent)")
    parser.add_argument("--keep-quantile", type=float, default=None, metavar="Q",
                        help="ACE-G maps: keep this fraction (0-1] of each image's patches, "
                             "the least uncertain (default: as localization, 0.75)")
    parser.add_argument("--max-reproj-px", type=float, default=10.0, metavar="PX",
                        help="drop points reprojecting further than this from their patch in "
                             "the posed mapping image (default 10; 0 disables)")
    parser.add_argument("--max-points", type=int, default=None, metavar="N",
                        help="random subsample to at most N points")
    parser.add_argument("--regressor", default=None, metavar="PATH",
                        help="ACE-G maps: the regressor used for mapping (default: shipped)")


def run(args) -> int:
    from aceg.localization.localizer import Localizer
    from aceg.visualization.map_cloud import auto_frustum_size, frusta_cloud, map_point_cloud
    from aceg.visualization.pointcloud import write_ply

    if args.keep_quantile is not None and not 0.0 < args.keep_quantile <= 1.0:
        raise AcegError(f"--keep-quantile {args.keep_quantile}: must be in (0, 1]")
    if args.max_reproj_px < 0:
        raise AcegError(f"--max-reproj-px {args.max_reproj_px}: must be 0 or more")
    if args.max_points is not None and args.max_points < 1:
        raise AcegError(f"--max-points {args.max_points}: must be at least 1")
    if args.frustum_size is not None and not args.frustum_size > 0:
        raise AcegError(f"--frustum-size {args.frustum_size}: must be positive")
    localizer = Localizer(args.map, regressor=args.regressor)
    scene = read_scene_arg(args.scene, args.format)
    check_output_path(args.ply, inputs=[args.map, *scene.files(), *filter(None, [args.regressor])],
                      suffixes=(".ply",), what="point cloud")
    if localizer.data.scene and localizer.data.scene != scene.name:
        print(f"note: map {args.map} was built from scene {localizer.data.scene!r}, "
              f"exporting with scene {scene.name!r}")
    bar = tqdm(total=len(scene), desc="predicting", unit="img", leave=False)
    cloud = map_point_cloud(localizer, scene, args.keep_quantile,
                            args.max_reproj_px or None, args.max_points, progress=bar.update)
    bar.close()
    points, colors = cloud.points, cloud.colors
    n_frusta = 0
    if args.frusta:
        size = args.frustum_size or auto_frustum_size(scene, points)
        fp, fc = frusta_cloud(scene, size)
        n_frusta = sum(f.cam_to_world is not None for f in scene.frames)
        points, colors = np.concatenate([points, fp]), np.concatenate([colors, fc])
    if len(points) == 0:
        raise AcegError(f"{args.map}: no point survived the filters (try --keep-quantile 1 "
                        "--max-reproj-px 0)")
    write_ply(args.ply, points, colors)
    c = cloud.counts
    print(f"wrote {args.ply}: {c['written']} map points from {c['frames']} images "
          f"({c['patches']} patches, {c['finite']} finite, {c['uncertainty']} after the "
          f"uncertainty filter, {c['reprojection']} after the reprojection filter)"
          + (f" + {n_frusta} camera frusta" if args.frusta else ""))
    return 0
