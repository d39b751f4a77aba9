"""Browser viewer of a map (``aceg view``): its 3-D points, the mapping cameras and
localized query cameras, served by viser and optionally captured by a headless browser.

What is shown (world frame of the scene, metres, OpenCV camera axes; see
:mod:`aceg.data.camera`):

- **map points**: an anchor map's anchor points (``code_points`` + ``scene_centre`` of the
  map file, :mod:`aceg.model.map_file`; the anchors of one keypoint track share a point
  and are drawn once). Transformer and ACE maps store no points: with the mapping scene
  they show the scene coordinates they predict for its images
  (:func:`aceg.visualization.map_cloud.map_point_cloud`). Colours: with the mapping scene,
  each anchor point takes the median colour of the mapping images it projects into
  (:func:`image_colours`); without, a colour ramp along the up direction (:func:`height_colours`).
- **mapping cameras** (a map file does not store its mapping poses): the posed frames of
  the mapping scene, as frusta (:func:`frustum_segments`).
- **query cameras** of a results file (:mod:`aceg.evaluation.results`): green when the
  localizer flagged the pose confident, orange when not (files without the flag, e.g.
  ACE's: at least :data:`aceg.localization.localizer.CONFIDENT_INLIERS` inliers or fewer),
  red for images not localized (drawn at their
  ground truth, when it is given); ground-truth query cameras in blue, each joined to its
  estimate by a line.

:func:`build_view` assembles a :class:`ViewerScene` (plain arrays, no browser), :func:`serve`
puts it on a viser server, :func:`capture` saves what a headless chromium shows of it.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aceg.data.readers._common import read_text
from aceg.data.scene import Frame, Scene
from aceg.errors import AcegError, file_error
from aceg.evaluation.results import PoseResult, match_frames, read_results

#: Colours (RGB) of what the viewer draws.
MAPPING_COLOR = (170, 170, 170)
CONFIDENT_COLOR = (40, 200, 70)
UNSURE_COLOR = (255, 150, 20)
FAILED_COLOR = (235, 40, 40)
GT_COLOR = (60, 120, 255)
LINK_COLOR = (255, 255, 255)

#: Mapping images sampled for the colours of anchor points (evenly spaced).
COLOUR_FRAMES = 40
#: Long side (pixels) the mapping images are read at for those colours.
COLOUR_LONG_SIDE = 800
#: Points of a predicted cloud (transformer and ACE maps) at most.
MAX_PREDICTED_POINTS = 200_000
#: Vertical field of view of the first view (radians).
VIEW_FOV = math.radians(50.0)
#: Height above the horizon (degrees) of the first view: behind cameras that look one
#: way, and over cameras that look around or none.
VIEW_ELEVATION_DEG = 25.0
VIEW_ELEVATION_AROUND_DEG = 50.0
#: Width over height of the part of the page :func:`default_view` fits the scene in (the
#: panel covers the right of a 1280x800 page).
VIEW_ASPECT = 1.2
#: Chromium executables looked for on the PATH, in order.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Flags for headless chromium: nothing fetched from the network, no GPU needed (WebGL
#: falls back to SwiftShader on the CPU).
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--enable-unsafe-swiftshader")


@dataclass
class CameraGroup:
    """Cameras drawn alike: ``segments`` (8 per camera, (8N, 2, 3) float64, world, metres)
    trace their frusta; ``centres`` (N, 3) and ``forwards`` (N, 3, unit +z axes in world)
    place the view; ``names`` the images drawn; ``count`` the images of the group (more
    than drawn for images not localized with no ground truth); ``label`` for the legend,
    ``short`` for one line of text."""

    key: str
    label: str
    short: str
    count: int
    color: tuple[int, int, int]
    names: list[str]
    centres: np.ndarray
    forwards: np.ndarray
    segments: np.ndarray


@dataclass
class ViewerScene:
    """Everything the viewer draws, in the scene's world frame (metres).

    points (N, 3) float64 and colors (N, 3) uint8 RGB: the map's points; ``cameras``: the
    camera groups; links (L, 2, 3): estimate-to-ground-truth lines; ``up`` (3,) unit vector;
    ``position`` and ``look_at`` (3,): the initial viewpoint; ``point_size`` in metres;
    ``legend``: markdown lines for the panel; ``title``: the map's file name.
    """

    title: str
    points: np.ndarray
    colors: np.ndarray
    cameras: list[CameraGroup] = field(default_factory=list)
    links: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    position: np.ndarray = field(default_factory=lambda: np.array([3.0, 3.0, 3.0]))
    look_at: np.ndarray = field(default_factory=lambda: np.zeros(3))
    point_size: float = 0.01
    legend: list[str] = field(default_factory=list)
    #: Mapping images the map records it was built from (0: not recorded).
    map_frames: int = 0

    def summary(self) -> str:
        """One line: how many points and cameras of each group."""
        return ", ".join([f"{len(self.points):,} map points"]
                         + [f"{g.count} {g.short}" for g in self.cameras])

    @property
    def origin(self) -> np.ndarray:
        """Where the drawn geometry is anchored (the view's target): coordinates are sent
        relative to it, so that 32-bit floats keep their precision far from the world's origin."""
        return self.look_at


@dataclass
class QueryPoses:
    """A results file: the localized images (``results``, :class:`PoseResult` with a pose)
    and the names of those written as not localized (``failed``), in file order."""

    path: Path
    results: list[PoseResult]
    failed: list[str]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.results] + self.failed


def read_query_poses(path: str | Path) -> QueryPoses:
    """Read a results file (:func:`aceg.evaluation.results.read_results`) and its
    ``# not localized: NAME [reason]`` lines; :class:`AcegError` naming the file when it is
    missing, malformed or holds no image at all."""
    path = Path(path)
    results = read_results(path)
    failed = []
    for line in read_text(path).splitlines():
        text = line.strip()
        if text.startswith("#") and text[1:].strip().startswith("not localized:"):
            rest = text[1:].strip()[len("not localized:"):].split()
            if rest:
                failed.append(rest[0])
    if not results and not failed:
        raise file_error(path, "holds no pose and no 'not localized' line: not a results file "
                               "of aceg localize")
    return QueryPoses(path, results, failed)


def map_points(map_path: str | Path, data, mapping: Scene | None = None,
               regressor: str | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The points of the map at ``map_path`` (read as ``data``, a
    :class:`aceg.model.map_file.MapData`): ``(points (N, 3) float64 world metres,
    colours (N, 3) uint8 or None, description)``.

    Anchor maps: their distinct anchor points. Other maps store none: their predictions for
    the images of ``mapping`` (coloured by the images), :class:`AcegError` without it.
    """
    if data.model == "anchors":
        width = data.regressor_config.feature_dim
        stored = data.code[:, width:].double().numpy()
        points = np.unique(stored, axis=0) + data.scene_centre
        kind = "keypoint" if data.anchor_points == "keypoints" else "cell"
        return points, None, f"{len(points):,} anchor points ({kind} anchors)"
    if mapping is None:
        raise file_error(map_path, f"a {data.model} map stores no 3-D points: give --scene "
                                   "(its mapping images) to show the points it predicts for them")
    from aceg.localization.localizer import Localizer
    from aceg.visualization.map_cloud import map_point_cloud

    localizer = Localizer(map_path, regressor=regressor)
    cloud = map_point_cloud(localizer, mapping, max_points=MAX_PREDICTED_POINTS)
    if len(cloud.points) == 0:
        raise file_error(map_path, "no predicted point survived the filters")
    return cloud.points, cloud.colors, (f"{len(cloud.points):,} points predicted by the "
                                        f"{data.model} map for {len(mapping)} mapping images")


def image_colours(points: np.ndarray, frames: list[Frame], max_frames: int = COLOUR_FRAMES,
                  long_side: int = COLOUR_LONG_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Colour of each point (N, 3) from posed ``frames``: the per-channel median over the
    images (at most ``max_frames``, evenly spaced, read at ``long_side`` pixels) it projects
    into, in front of the camera. Returns ``(colours (N, 3) uint8, seen (N,) bool)``; a point
    no image sees gets grey. The median keeps a point's colour when a few of the images
    see something else in front of it (no depth test)."""
    import cv2

    from aceg.data.camera import project
    from aceg.data.images import load_image

    posed = [f for f in frames if f.cam_to_world is not None]
    if len(posed) > max_frames:
        posed = [posed[i] for i in np.linspace(0, len(posed) - 1, max_frames).round().astype(int)]
    samples = np.full((len(posed), len(points), 3), np.nan, np.float32)
    for j, frame in enumerate(posed):
        rgb = load_image(frame.image_path)
        h, w = rgb.shape[:2]
        scale = min(1.0, long_side / max(h, w))
        if scale < 1.0:
            rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
        sx, sy = rgb.shape[1] / frame.width, rgb.shape[0] / frame.height
        uv = project(points, frame.intrinsics.K, frame.cam_to_world)
        with np.errstate(invalid="ignore"):
            col = np.floor((uv[:, 0] + 0.5) * sx)
            row = np.floor((uv[:, 1] + 0.5) * sy)
            inside = (col >= 0) & (col < rgb.shape[1]) & (row >= 0) & (row < rgb.shape[0])
        samples[j, inside] = rgb[row[inside].astype(int), col[inside].astype(int)]
    seen = np.isfinite(samples[..., 0]).any(axis=0) if len(posed) else np.zeros(len(points), bool)
    colours = np.full((len(points), 3), 128, np.uint8)
    if seen.any():
        colours[seen] = np.nanmedian(samples[:, seen], axis=0).round().astype(np.uint8)
    return colours, seen


def height_colours(points: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Colours (N, 3) uint8 of a colour ramp (matplotlib's turbo) along ``up``: the 2nd
    to 98th percentile of the points' heights spans the ramp."""
    from matplotlib import colormaps

    height = points @ up
    if len(height) == 0:
        return np.zeros((0, 3), np.uint8)
    lo, hi = np.percentile(height, [2, 98])
    t = np.clip((height - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    return (colormaps["turbo"](t)[:, :3] * 255).round().astype(np.uint8)


def frustum_segments(cam_to_world: np.ndarray, K: np.ndarray, width: int, height: int,
                     depth: float) -> np.ndarray:
    """The 8 edges (8, 2, 3) of a camera's viewing pyramid in world coordinates: apex at
    the camera centre, base the image's corners (pixel edges of a ``width`` x ``height``
    image, calibration ``K``) at ``depth`` metres along the camera's +z; the base's top
    edge (image row 0) is the 5th segment."""
    corners_px = np.array([[-0.5, -0.5, 1.0], [width - 0.5, -0.5, 1.0],
                           [width - 0.5, height - 0.5, 1.0], [-0.5, height - 0.5, 1.0]])
    rays = corners_px @ np.linalg.inv(K).T
    local = rays / rays[:, 2:3] * depth
    world = local @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    apex = cam_to_world[:3, 3]
    edges = [(apex, c) for c in world] + [(world[i], world[(i + 1) % 4]) for i in range(4)]
    return np.array(edges, dtype=np.float64)


@dataclass
class _Camera:
    name: str
    cam_to_world: np.ndarray
    K: np.ndarray
    width: int
    height: int


def _group(key: str, label: str, short: str, color, cameras: list[_Camera], depth: float,
           count: int | None = None) -> CameraGroup:
    segs = [frustum_segments(c.cam_to_world, c.K, c.width, c.height, depth) for c in cameras]
    return CameraGroup(
        key, label, short, len(cameras) if count is None else count, color,
        [c.name for c in cameras],
        np.array([c.cam_to_world[:3, 3] for c in cameras]).reshape(-1, 3),
        np.array([c.cam_to_world[:3, 2] for c in cameras]).reshape(-1, 3),
        np.concatenate(segs) if segs else np.zeros((0, 2, 3)))


def estimate_up(rotations: list[np.ndarray]) -> np.ndarray | None:
    """The up direction (3,) of a set of cameras (camera-to-world rotations, OpenCV axes,
    y pointing down in the image): the normalised mean of their -y axes; None without
    cameras or when the mean vanishes."""
    if not rotations:
        return None
    mean = -np.mean([R[:, 1] for R in rotations], axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 1e-6 else None


def default_view(points: np.ndarray, centres: np.ndarray, forwards: np.ndarray,
                 up: np.ndarray, fov: float = VIEW_FOV,
                 aspect: float = VIEW_ASPECT) -> tuple[np.ndarray, np.ndarray, float]:
    """``(position, look_at, extent)`` of the first view (world, metres).

    When the cameras (centres ``centres`` (M, 3), viewing directions ``forwards`` (M, 3))
    look one way (their levelled directions average to at least half a unit), the view
    looks along that direction at the points' median, from :data:`VIEW_ELEVATION_DEG`
    above the horizon; when they look around (a courtyard, a room) or there are none, at
    the middle of the 2nd-98th percentile box of points and cameras from
    :data:`VIEW_ELEVATION_AROUND_DEG`. The distance is the smallest at which every camera
    and 90% of the points fit a view of vertical field of view ``fov`` (radians) and
    width/height ``aspect``. ``extent``: the diagonal of that percentile box.
    """
    both = np.concatenate([points.reshape(-1, 3), centres.reshape(-1, 3)])
    if len(both) == 0:
        return np.array([3.0, 3.0, 3.0]), np.zeros(3), 1.0
    lo, hi = np.percentile(both, [2, 98], axis=0)
    extent = max(float(np.linalg.norm(hi - lo)), 1e-3)
    forward = forwards.mean(axis=0) if len(forwards) else np.zeros(3)
    forward = forward - (forward @ up) * up  # level
    if np.linalg.norm(forward) >= 0.5:
        elevation = VIEW_ELEVATION_DEG
        target = np.median(points, axis=0) if len(points) else both.mean(axis=0)
    else:
        other = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        forward = other - (other @ up) * up
        elevation = VIEW_ELEVATION_AROUND_DEG
        target = (lo + hi) / 2
    forward /= np.linalg.norm(forward)
    el = math.radians(elevation)
    back = -math.cos(el) * forward + math.sin(el) * up  # from the target to the viewpoint
    right = np.cross(-back, up)
    right /= np.linalg.norm(right)
    view_up = np.cross(right, -back)
    tan_v = math.tan(fov / 2)

    def needed(p: np.ndarray) -> np.ndarray:
        rel = p.reshape(-1, 3) - target
        return rel @ back + np.maximum(np.abs(rel @ right) / (tan_v * aspect),
                                       np.abs(rel @ view_up) / tan_v)

    distance = float(np.percentile(needed(points), 90)) if len(points) else 0.0
    if len(centres):
        distance = max(distance, float(needed(centres).max()))
    distance = max(1.05 * distance, 0.05 * extent)
    return target + distance * back, target, extent


def point_size(points: np.ndarray, extent: float) -> float:
    """Point size (metres) for the viewer: 0.6 x the median distance between a point and
    its nearest neighbour (on at most 20,000 points), within [extent / 2000, extent / 200]."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return extent / 100
    sample = points
    if len(points) > 20_000:
        sample = points[np.random.default_rng(0).choice(len(points), 20_000, replace=False)]
    dist, _ = cKDTree(sample).query(sample, k=2)
    spacing = float(np.median(dist[:, 1])) * math.sqrt(len(sample) / len(points))
    return float(np.clip(0.6 * spacing, extent / 2000, extent / 200))


def _cameras_of(frames: list[Frame]) -> list[_Camera]:
    return [_Camera(f.name, f.cam_to_world, f.intrinsics.K, f.width, f.height)
            for f in frames if f.cam_to_world is not None]


def build_view(map_path: str | Path, *, mapping: Scene | None = None,
               queries: QueryPoses | None = None, gt: Scene | None = None,
               regressor: str | None = None) -> ViewerScene:
    """The :class:`ViewerScene` of the map at ``map_path``.

    Args:
        mapping: the posed mapping frames (None: no mapping cameras, height colours).
        queries: a results file's poses; their frusta use the intrinsics of their
            ground-truth frame, else of the first mapping frame, else a 4:3 image of 53
            degrees horizontal field of view.
        gt: the ground truth of the queries (frames matched by name,
            :func:`aceg.evaluation.results.match_frames`): drawn, linked to the estimates,
            and the place of the images not localized.
        regressor: the regressor of a transformer map (None: found by the map's identity).
    """
    from aceg.model.map_file import load_map

    map_path = Path(map_path)
    data = load_map(map_path)
    points, colours, description = map_points(map_path, data, mapping, regressor)
    legend = [f"**{map_path.name}**: {description}"]
    default_cam = _Camera("", np.eye(4), np.array([[1.0, 0, 2], [0, 1.0, 1.5], [0, 0, 1]]), 4, 3)
    if mapping is not None and len(mapping) and mapping.frames[0].cam_to_world is not None:
        f0 = mapping.frames[0]
        default_cam = _Camera("", np.eye(4), f0.intrinsics.K, f0.width, f0.height)
    mapping_cams = _cameras_of(mapping.frames) if mapping is not None else []
    estimated, unsure, failed_at_gt, gt_cams, links = [], [], [], [], []
    if queries is not None:
        from aceg.localization.poses import CONFIDENT_INLIERS

        gt_of: dict[str, Frame] = {}
        if gt is not None:
            try:
                indices = match_frames(queries.names, gt)
            except AcegError as exc:
                raise AcegError(f"--gt {gt.root or gt.name}: {exc}") from None
            gt_of = {name: gt.frames[i] for name, i in zip(queries.names, indices, strict=True)}
            missing = [n for n, f in gt_of.items() if f.cam_to_world is None]
            if missing:
                raise AcegError(f"--gt {gt.root or gt.name}: frame {gt_of[missing[0]].name} has "
                                "no pose")
        # Files written by aceg localize carry the confident flag; others only inliers.
        flagged = bool(queries.results) and all(r.confident is not None for r in queries.results)
        for r in queries.results:
            truth = gt_of.get(r.name)
            shape = truth if truth is not None else default_cam
            K = truth.intrinsics.K if truth is not None else default_cam.K
            cam = _Camera(r.name, r.cam_to_world, K, shape.width, shape.height)
            sure = r.confident if flagged else r.inliers >= CONFIDENT_INLIERS
            (estimated if sure else unsure).append(cam)
            if truth is not None:
                gt_cams.append(_cameras_of([truth])[0])
                links.append((r.cam_to_world[:3, 3], truth.cam_to_world[:3, 3]))
        for name in queries.failed:
            if name in gt_of:
                failed_at_gt.append(_cameras_of([gt_of[name]])[0])
    everything = mapping_cams + estimated + unsure + failed_at_gt + gt_cams
    up = estimate_up([c.cam_to_world[:3, :3] for c in everything])
    if up is None:
        up = np.array([0.0, 0.0, 1.0])
        legend.append("up: the world's +z (no camera to take it from)")
    centres = np.array([c.cam_to_world[:3, 3] for c in everything]).reshape(-1, 3)
    forwards = np.array([c.cam_to_world[:3, 2] for c in everything]).reshape(-1, 3)
    position, look_at, extent = default_view(points, centres, forwards, up)
    if colours is None and mapping_cams:
        colours, seen = image_colours(points, mapping.frames)
        legend.append(f"points coloured by the mapping images ({int(seen.sum()):,} seen)")
    elif colours is None:
        colours = height_colours(points, up)
        legend.append("points coloured by height (blue low, red high)")
    depth = 0.05 * extent
    groups = []
    if mapping_cams:
        groups.append(_group("mapping", f"grey: {len(mapping_cams)} mapping cameras",
                             "mapping cameras", MAPPING_COLOR, mapping_cams, depth))
    if queries is not None:
        sure_label = ("flagged confident" if flagged else f"with >= {CONFIDENT_INLIERS} inliers")
        unsure_label = ("not flagged confident" if flagged else "with fewer inliers")
        groups.append(_group("queries_confident", f"green: {len(estimated)} query cameras "
                             f"{sure_label}", f"queries {sure_label}", CONFIDENT_COLOR,
                             estimated, depth))
        groups.append(_group("queries_unsure", f"orange: {len(unsure)} {unsure_label}",
                             unsure_label, UNSURE_COLOR, unsure, depth))
        where = ("at their ground truth" if gt is not None else "not drawn: give --gt to see "
                 "them at their ground truth")
        groups.append(_group("queries_failed", f"red: {len(queries.failed)} not localized "
                             f"({where})", "not localized", FAILED_COLOR, failed_at_gt, depth,
                             count=len(queries.failed)))
        if gt is not None:
            groups.append(_group("ground_truth", f"blue: {len(gt_cams)} ground-truth poses of "
                                 "the localized (white lines join them to the estimates)",
                                 "ground-truth poses", GT_COLOR, gt_cams, depth))
    legend += [g.label for g in groups]
    return ViewerScene(
        title=map_path.name, points=points, colors=colours, cameras=groups,
        links=np.array(links, dtype=np.float64).reshape(-1, 2, 3), up=up, position=position,
        look_at=look_at, point_size=point_size(points, extent), legend=legend,
        map_frames=data.frames)


def serve(view: ViewerScene, host: str = "127.0.0.1", port: int = 8080):
    """A running viser server (``viser.ViserServer``) showing ``view``; ``port`` 0 takes a
    free port, and a busy port the next free one (``server.get_port()`` tells which).
    Stop it with :func:`stop`."""
    import viser

    with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner of its own
        server = viser.ViserServer(host=host, port=port, label=view.title, verbose=False)
    server.gui.configure_theme(dark_mode=True, show_logo=False, show_share_button=False,
                               control_layout="floating")
    server.gui.add_markdown("\n\n".join(view.legend))
    up = tuple(float(v) for v in view.up)
    server.scene.set_up_direction(up)
    origin = view.origin
    server.scene.add_frame("/world", position=tuple(origin), show_axes=False)
    server.scene.add_point_cloud("/world/map_points", points=(view.points - origin).astype(np.float32),
                                 colors=view.colors, point_size=view.point_size,
                                 point_shape="circle", precision="float32", point_shading="flat")
    for group in view.cameras:
        if len(group.segments):
            server.scene.add_line_segments(
                f"/world/{group.key}", points=(group.segments - origin).astype(np.float32),
                colors=group.color, thickness=2.0 if group.key == "mapping" else 3.0,
                thickness_units="screen")
    if len(view.links):
        server.scene.add_line_segments("/world/errors", points=(view.links - origin).astype(np.float32),
                                       colors=LINK_COLOR, thickness=1.5, thickness_units="screen")
    server.initial_camera.up = up
    server.initial_camera.position = tuple(float(v) for v in view.position)
    server.initial_camera.look_at = tuple(float(v) for v in view.look_at)
    server.initial_camera.fov = VIEW_FOV
    distance = float(np.linalg.norm(view.position - view.look_at))
    server.initial_camera.near = max(distance * 1e-3, 1e-4)
    server.initial_camera.far = max(distance * 100.0, 10.0)
    return server


def stop(server) -> None:
    """Stop a server of :func:`serve` (quietly: viser prints a line of its own)."""
    with contextlib.redirect_stdout(io.StringIO()):
        server.stop()


def find_chromium() -> str | None:
    """Path of a chromium executable on the PATH (:data:`CHROMIUM_NAMES`), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def capture(server, out: str | Path, size: tuple[int, int] = (1280, 800),
            timeout_s: float = 60.0, chromium: str | None = None) -> None:
    """Load the page of ``server`` (from :func:`serve`) in headless chromium (``chromium``,
    default :func:`find_chromium`) at ``size`` (width, height) pixels, wait until the scene
    is drawn and save the page as a PNG at ``out`` (written atomically).

    Drawn means: the browser has connected, has answered a render request sent after the
    scene (its messages arrive in order, so it has built the scene), and two screenshots
    0.3 s apart are identical. :class:`AcegError` when there is no chromium or playwright,
    or the page does not get there within ``timeout_s`` seconds.
    """
    from aceg.io import atomic_path

    chromium = chromium or find_chromium()
    if chromium is None:
        raise AcegError("--screenshot needs chromium, found none on the PATH (install it: "
                        "apt-get install chromium)")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise AcegError("--screenshot needs the Python package playwright (pip install "
                        "playwright; its browsers are not needed, chromium is used)") from None
    deadline = time.monotonic() + timeout_s
    host = server.get_host()
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{server.get_port()}/"

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AcegError(f"headless chromium did not draw the scene at {url} within "
                            f"{timeout_s:g} s")
        return remaining

    known = set(server.get_clients())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=list(CHROMIUM_FLAGS), timeout=left() * 1000)
            try:
                page = browser.new_page(viewport={"width": size[0], "height": size[1]})
                page.goto(url, timeout=left() * 1000)
                client = None
                while client is None:
                    left()
                    new = [c for i, c in server.get_clients().items() if i not in known]
                    client = new[0] if new else None
                    time.sleep(0.1)
                try:
                    client.get_render(height=60, width=80, transport_format="png", timeout=left())
                except TimeoutError:
                    left()
                    raise AcegError(f"headless chromium did not draw the scene at {url}") from None
                # the note viser shows about software WebGL would cover part of the view
                page.add_style_tag(content=".mantine-Notifications-root{display:none!important}")
                previous = None
                while True:
                    left()
                    shot = page.screenshot(timeout=left() * 1000)
                    if shot == previous:
                        break
                    previous = shot
                    time.sleep(0.3)
            finally:
                browser.close()
    except PlaywrightError as exc:
        raise AcegError(f"headless chromium ({chromium}) failed: "
                        f"{str(exc).strip().splitlines()[0]}") from None
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(shot)
