"""``aceg view``: a map, its mapping cameras and localized query cameras in the browser."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from aceg.cli.common import add_format_argument, read_scene_arg
from aceg.errors import AcegError, AcegWarning

HELP = "show a map's points, mapping cameras and localized query cameras in the browser"
DESCRIPTION = """\
Serve a 3-D view of MAP in the browser (viser; its web page ships with the Python
package, nothing is fetched from the network): drag to orbit, scroll to zoom, and toggle
each group in the panel's scene tree. World frame of the scene, metres.

What is drawn:
  map points        an anchor map's anchor points. Transformer and ACE maps store no
                    points: give --scene and they show what they predict for its images.
                    Coloured by the mapping images with --scene (the median colour of
                    the images each point projects into), else by height.
  mapping cameras   grey frusta. A map file does not store its mapping poses: they are
                    read from --scene (any supported format). Its frames named in
                    --poses are taken as queries, not mapping cameras; --split K:R
                    takes the frames with index % K != R, as `aceg map --split` maps.
  query cameras     from --poses, a results file of `aceg localize`: green with the
                    inlier count of the localizer's confident flag (the legend gives
                    it), orange with fewer (the file keeps the inlier count, not the
                    spread of the pose, so this is the inlier part of the flag), red
                    for images not localized (drawn at their ground truth). --gt SCENE
                    draws the ground-truth poses in blue, each joined to its estimate by
                    a white line.
The up direction is the mean up axis (-y, OpenCV axes) of the cameras shown (without
cameras, the world's +z). The first
view looks along the cameras at the middle of the points when they look one way (a
facade, an object), and down from higher up when they look around (a courtyard, a room).

--screenshot OUT.png renders the view in headless chromium (found on the PATH; driven
by playwright, no browser download), waits until the scene is drawn, saves the PNG and
exits instead of serving. The server listens on --host (default 127.0.0.1: this machine
only; the page has no password, so other hosts see the map's points if you widen it).

Examples:
  aceg view office.map --scene data/office --poses poses.txt --gt data/office_queries
  aceg view office.map --port 8081          # then open http://127.0.0.1:8081
  aceg view office.map --scene data/office --screenshot office.png
"""


def add_arguments(parser) -> None:
    parser.add_argument("map", metavar="MAP", help="map file (from aceg map)")
    parser.add_argument("--poses", metavar="RESULTS", default=None,
                        help="results file of aceg localize: the query cameras")
    parser.add_argument("--gt", metavar="SCENE", default=None,
                        help="ground truth of the queries in --poses (matched by image name)")
    parser.add_argument("--scene", metavar="SCENE", default=None,
                        help="the mapping scene: mapping cameras, point colours, and the "
                             "points of transformer and ACE maps")
    parser.add_argument("--split", metavar="K:R", default=None,
                        help="mapping cameras: the frames of --scene with index %% K != R")
    add_format_argument(parser)
    parser.add_argument("--regressor", metavar="PATH", default=None,
                        help="transformer maps: the regressor used for mapping (default: "
                             "the shipped weights the map records)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port (default 8080; the next free one when it is taken)")
    parser.add_argument("--screenshot", metavar="OUT.png", default=None,
                        help="save what headless chromium shows as a PNG, then exit")
    parser.add_argument("--size", metavar="WxH", default="1280x800",
                        help="--screenshot: page size in pixels (default 1280x800)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="--screenshot: give up after S seconds (default 60)")


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (width, height), each 64-8192 pixels; :class:`AcegError` otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise AcegError(f"--size must be WxH in pixels, e.g. 1280x800, got {text!r}") from None
    if not (64 <= w <= 8192 and 64 <= h <= 8192):
        raise AcegError(f"--size {text}: width and height must be 64-8192 pixels")
    return w, h


def _mapping_scene(args, queries):
    """The posed mapping frames of ``--scene`` (see DESCRIPTION), or None."""
    from aceg.cli.map import parse_split

    if args.scene is None:
        return None
    scene = read_scene_arg(args.scene, args.format)
    split = parse_split(args.split)
    if split:
        scene, _ = scene.split_every(*split)
    elif queries is not None:
        asked = {Path(n).name for n in queries.names} | set(queries.names)
        keep = [i for i, f in enumerate(scene.frames)
                if f.name not in asked and Path(f.name).name not in asked]
        if len(keep) < len(scene):
            warnings.warn(f"{len(scene) - len(keep)} frames of {args.scene} are queries in "
                          f"{args.poses}: drawn as queries, not as mapping cameras", AcegWarning,
                          stacklevel=2)
            scene = scene.subset(keep)
    posed = [i for i, f in enumerate(scene.frames) if f.cam_to_world is not None]
    if not posed:
        raise AcegError(f"--scene {args.scene}: no posed frame to draw as a mapping camera")
    return scene.subset(posed)


def run(args) -> int:
    from aceg.io import check_output_path
    from aceg.visualization.viewer import build_view, capture, read_query_poses, serve, stop

    if not 0 <= args.port <= 65535:
        raise AcegError(f"--port {args.port}: must be 0-65535")
    if args.timeout <= 0:
        raise AcegError(f"--timeout {args.timeout}: must be positive")
    size = parse_size(args.size)
    if args.split and not args.scene:
        raise AcegError("--split selects the mapping cameras of --scene: give --scene")
    if args.gt and not args.poses:
        raise AcegError("--gt is the ground truth of the queries in --poses: give --poses")
    if not Path(args.map).is_file():
        raise AcegError(f"{args.map}: map file not found")
    if args.screenshot:
        check_output_path(args.screenshot, inputs=[args.map, *filter(None, [args.poses])],
                          suffixes=(".png",), what="screenshot")
    queries = read_query_poses(args.poses) if args.poses else None
    mapping = _mapping_scene(args, queries)
    gt = read_scene_arg(args.gt, None) if args.gt else None
    view = build_view(args.map, mapping=mapping, queries=queries, gt=gt, regressor=args.regressor)
    if mapping is not None and view.map_frames and view.map_frames != len(mapping):
        warnings.warn(f"{args.map} was built from {view.map_frames} images, --scene gives "
                      f"{len(mapping)} mapping cameras (--split K:R picks them as aceg map did)",
                      AcegWarning, stacklevel=2)
    try:
        server = serve(view, args.host, 0 if args.screenshot else args.port)
    except OSError as exc:
        raise AcegError(f"--host {args.host}: cannot listen ({exc.strerror or exc})") from None
    try:
        if args.screenshot:
            capture(server, args.screenshot, size, args.timeout)
            print(f"wrote {args.screenshot}: {view.summary()}")
            return 0
        host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        print(f"aceg view: http://{host}:{server.get_port()}/ ({view.summary()}); "
              "Ctrl+C stops")
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("aceg view: stopped")
        return 0
    finally:
        stop(server)

