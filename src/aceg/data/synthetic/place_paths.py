"""The walk through a place: one continuous handheld scanning path through every room.

World frame and pose conventions of :mod:`~aceg.data.synthetic.trajectories` (metres,
z up; camera-to-world poses, OpenCV axes; ``yaw`` heading about z, 0 along +x; positive
``pitch`` looks up). The path is what a person mapping a floor with a phone does: start at
one end of the corridor, walk along it, turn into each room through its door, tour the
room (waypoints spread over its free floor), walk back out and go on to the next door; the
far end room comes last. Between waypoints the walker takes the cheapest route over a grid
of the free floor (cells near walls and furniture cost more, so the route keeps to the
middle of corridors and doorways), smoothed and sampled evenly along its length.

The camera looks mostly ahead in corridors and doorways, at furniture and posters or
around the room inside rooms, turning by a bounded angle per metre walked, so that
neighbouring frames overlap; height and orientation carry the same slow handheld wobble as
a room's scanning path. The result is a
:class:`~aceg.data.synthetic.trajectories.ScanPath` that
:func:`~aceg.data.synthetic.trajectories.mapping_poses` and the query samplers of that
module take as they take a room's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from aceg.data.synthetic.place import Place
from aceg.data.synthetic.trajectories import (
    ScanPath,
    catmull_rom_open,
    short_tour,
    smooth_wobble,
)
from aceg.errors import AcegError

#: Side of a cell of the free-floor grid (metres).
GRID_CELL = 0.1

#: Clearance (metres) of the walker's route from walls and furniture; the cameras are
#: checked against the smaller :data:`~aceg.data.synthetic.trajectories.CAMERA_CLEARANCE`,
#: which leaves room for the smoothing to cut corners.
ROUTE_CLEARANCE = 0.45

#: Spacing (metres) of the dense samples of the path.
SAMPLE_SPACING = 0.02

#: Standard deviation (metres along the path) of the smoothing of the grid route.
SMOOTHING = 0.25

#: Spacing (metres along the path) of the gaze key points, and the largest turn of the
#: gaze between two of them (radians).
GAZE_SPACING = 1.0
MAX_TURN_PER_KEY = math.radians(60)

#: Distance (metres) from a door's centre within which the camera looks where it walks.
DOOR_REACH = 1.2


@dataclass
class FreeGrid:
    """Cells of the place's floor where a camera at ``height`` is free.

    Attributes:
        free: (rows, cols) bool; row i, column j is the cell centred at
            ``origin + (j, i) * cell`` (x along columns, y along rows).
        clearance: (rows, cols) distance (metres) from each cell to the nearest blocked
            cell of the floor at no clearance (walls, furniture).
        origin: (2,) world xy of cell (0, 0)'s centre.
        cell: cell side (metres).
    """

    free: np.ndarray
    clearance: np.ndarray
    origin: np.ndarray
    cell: float

    def index_of(self, xy: np.ndarray) -> tuple[int, int]:
        """(row, column) of the free cell nearest to the point ``xy`` (2,)."""
        rows, cols = np.nonzero(self.free)
        centres = self.origin + np.column_stack([cols, rows]) * self.cell
        nearest = int(np.argmin(np.sum((centres - xy) ** 2, axis=1)))
        return int(rows[nearest]), int(cols[nearest])

    def xy_of(self, cells: np.ndarray) -> np.ndarray:
        """World xy (N, 2) of cells (N, 2) given as (row, column)."""
        cells = np.asarray(cells, np.float64).reshape(-1, 2)
        return self.origin + cells[:, ::-1] * self.cell


def free_grid(place: Place, height: float, clearance: float = ROUTE_CLEARANCE) -> FreeGrid:
    """The grid of free cells of ``place`` for a camera at ``height`` (metres)."""
    lo, hi = place.bounds
    cols = np.arange(lo[0], hi[0] + GRID_CELL / 2, GRID_CELL)
    rows = np.arange(lo[1], hi[1] + GRID_CELL / 2, GRID_CELL)
    xs, ys = np.meshgrid(cols, rows)
    xy = np.column_stack([xs.ravel(), ys.ravel()])
    free = place.is_free(xy, height, clearance).reshape(xs.shape)
    walkable = place.is_free(xy, height, 0.0).reshape(xs.shape)
    distance = ndimage.distance_transform_edt(walkable) * GRID_CELL
    return FreeGrid(free, distance, np.array([cols[0], rows[0]]), GRID_CELL)


def _route(grid: FreeGrid, start: tuple[int, int], goal: tuple[int, int]) -> np.ndarray:
    """World xy (M, 2) of the cheapest 8-connected route over free cells: each cell costs
    more the nearer it is to walls and furniture (within 1 m)."""
    from skimage.graph import route_through_array

    cost = 1.0 + 4.0 * np.clip(1.0 - grid.clearance, 0.0, None) ** 2
    cost[~grid.free] = np.inf
    cells, _ = route_through_array(cost, start, goal, fully_connected=True, geometric=True)
    return grid.xy_of(np.array(cells))


def _room_tour(place: Place, grid: FreeGrid, space_index: int, entry: tuple[int, int],
               rng: np.random.Generator) -> list[tuple[int, int]]:
    """Cells to visit in a room, starting and ending at ``entry``: 2-6 (by floor area)
    spread over the free cells reachable from the entry, in a short closed tour."""
    labels, _ = ndimage.label(grid.free, structure=np.ones((3, 3)))
    reachable = labels == labels[entry]
    rows, cols = np.nonzero(reachable)
    xy = grid.xy_of(np.column_stack([rows, cols]))
    in_room = place.spaces[space_index].contains(xy)
    rows, cols, xy = rows[in_room], cols[in_room], xy[in_room]
    if len(xy) < 2:
        return [entry]
    area = float(np.prod(np.ptp(place.spaces[space_index].layout.room.polygon, axis=0)))
    count = int(np.clip(round(area / 4.0), 2, 6))
    entry_xy = grid.xy_of(np.array(entry))[0]
    chosen = [int(np.argmin(np.sum((xy - entry_xy) ** 2, axis=1)))]
    distance = np.linalg.norm(xy - xy[chosen[0]], axis=1)
    for _ in range(count):  # farthest-point sampling from the entry, a little random
        chosen.append(int(np.argmax(distance * rng.uniform(0.7, 1.0, len(xy)))))
        distance = np.minimum(distance, np.linalg.norm(xy - xy[chosen[-1]], axis=1))
    # pulled towards the middle of the free floor, so that the tour does not hug the walls
    centre = xy.mean(axis=0)
    pulled = centre + (xy[chosen[1:]] - centre) * rng.uniform(0.6, 0.85, (count, 1))
    chosen[1:] = [int(np.argmin(np.sum((xy - p) ** 2, axis=1))) for p in pulled]
    order = short_tour(xy[chosen])
    start = int(np.flatnonzero(order == 0)[0])
    order = np.roll(order, -start)
    cells = [(int(rows[chosen[k]]), int(cols[chosen[k]])) for k in order]
    return [entry, *cells[1:], entry]


def _waypoints(place: Place, grid: FreeGrid, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Grid cells the walk passes in order: corridor start, then for each door (side rooms
    by their position along the corridor, the end room last) the corridor in front of it,
    the room's tour, and back out (not out of the last room)."""
    corridor = place.spaces[0].layout.room
    lo, hi = corridor.bounds
    cells = [grid.index_of(np.array([lo[0] + 0.6, (lo[1] + hi[1]) / 2]))]
    doors = sorted(place.doors, key=lambda d: (d.across == 0, d.centre[0]))
    for number, door in enumerate(doors):
        room_index = door.spaces[1]
        room_centre = np.mean(place.spaces[room_index].layout.room.polygon, axis=0)
        inward = np.zeros(2)
        inward[door.across] = np.sign(room_centre[door.across] - door.centre[door.across])
        outside = grid.index_of(door.centre - 0.8 * inward)
        inside = grid.index_of(door.centre + 0.9 * inward)
        cells += [outside, *_room_tour(place, grid, room_index, inside, rng)]
        if number < len(doors) - 1:
            cells.append(outside)
    return cells


def _resample(xy: np.ndarray, spacing: float) -> np.ndarray:
    """Points evenly ``spacing`` metres apart along the polyline ``xy`` (M, 2)."""
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    keep = np.concatenate([[True], steps > 1e-9])
    xy = xy[keep]
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    targets = np.linspace(0.0, along[-1], max(2, int(round(along[-1] / spacing)) + 1))
    return np.column_stack([np.interp(targets, along, xy[:, 0]),
                            np.interp(targets, along, xy[:, 1])])


def walk_route(place: Place, rng: np.random.Generator, height: float) -> np.ndarray:
    """The walker's smoothed route (N, 2) through every room, world xy, samples
    :data:`SAMPLE_SPACING` apart."""
    grid = free_grid(place, height)
    if not grid.free.any():
        raise AcegError("synthetic place: no free floor for a camera path")
    cells = _waypoints(place, grid, rng)
    pieces = [_route(grid, a, b) for a, b in zip(cells[:-1], cells[1:], strict=True) if a != b]
    if not pieces:
        raise AcegError("synthetic place: the camera path does not leave its start")
    dense = _resample(np.concatenate(pieces), SAMPLE_SPACING)
    smooth = ndimage.gaussian_filter1d(dense, SMOOTHING / SAMPLE_SPACING, axis=0, mode="nearest")
    return _resample(smooth, SAMPLE_SPACING)


def walking_path(place: Place, rng: np.random.Generator, frames: int = 0) -> ScanPath:
    """The handheld scanning path through the whole place (see the module docstring),
    sampled at least 3 times as densely as ``frames`` frames along it need."""
    base_height = float(rng.uniform(1.2, 1.75))
    xy = walk_route(place, rng, base_height)
    length = float(np.sum(np.linalg.norm(np.diff(xy, axis=0), axis=1)))
    if 3 * frames * SAMPLE_SPACING > length:
        xy = _resample(xy, length / (3 * frames))
    samples = len(xy)
    keys = max(2, int(math.ceil(length / GAZE_SPACING)) + 1)
    key_index = np.round(np.linspace(0, samples - 1, keys)).astype(int)
    yaw_keys, pitch_keys = _gaze_keys(place, xy, key_index, base_height, rng)
    yaw = catmull_rom_open(yaw_keys[:, None], samples)[:, 0]
    pitch = catmull_rom_open(pitch_keys[:, None], samples)[:, 0]
    heights = base_height + rng.uniform(-0.15, 0.15, keys)
    z = catmull_rom_open(heights[:, None], samples)[:, 0]
    positions = np.column_stack([xy, z])

    def cycles(per_metre_low: float, per_metre_high: float) -> tuple[int, int]:
        low = max(1, int(per_metre_low * length))
        return low, max(low + 1, int(per_metre_high * length))

    positions += np.column_stack([smooth_wobble(rng, samples, 0.02, cycles(0.7, 2.0))
                                  for _ in range(3)])
    yaw = yaw + smooth_wobble(rng, samples, math.radians(2.0), cycles(0.5, 1.7))
    pitch = pitch + smooth_wobble(rng, samples, math.radians(1.5), cycles(0.5, 1.7))
    roll = smooth_wobble(rng, samples, math.radians(3.0), cycles(0.1, 0.7))
    return ScanPath(positions, yaw, pitch, roll, base_height)


def _gaze_keys(place: Place, xy: np.ndarray, key_index: np.ndarray, height: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (radians) at the key samples ``key_index``: ahead near doors and in
    the corridor, at a thing 1-4 m away or around the room in rooms; the yaw unwrapped
    and turning at most :data:`MAX_TURN_PER_KEY` from one key to the next."""
    spacing = float(np.linalg.norm(xy[1] - xy[0]))
    reach = max(1, int(round(0.3 / max(spacing, 1e-6))))  # 0.3 m along the path
    ahead = np.clip(key_index + reach, 0, len(xy) - 1)
    behind = np.clip(key_index - reach, 0, len(xy) - 1)
    heading = np.arctan2(xy[ahead, 1] - xy[behind, 1], xy[ahead, 0] - xy[behind, 0])
    spaces = place.space_of(xy[key_index])
    door_centres = np.stack([d.centre for d in place.doors])
    yaw, pitch = np.empty(len(key_index)), np.empty(len(key_index))
    for k, index in enumerate(key_index):
        point = xy[index]
        near_door = np.min(np.linalg.norm(door_centres - point, axis=1)) < DOOR_REACH
        space = place.spaces[spaces[k]] if spaces[k] >= 0 else place.spaces[0]
        target = heading[k] + rng.normal(0.0, 0.45)
        pitch[k] = rng.uniform(-0.3, 0.05)
        things = [o for o in space.layout.objects if o.kind not in ("skirting", "rug")]
        if near_door:
            target = heading[k] + rng.normal(0.0, 0.15)
        elif space.kind != "corridor":
            target = heading[k] + rng.uniform(-1.4, 1.4)
            pitch[k] = rng.uniform(-0.5, 0.08)
            if things and rng.random() < 0.55:
                centres = np.array([[o.x, o.y, o.z_base + 0.5 * o.top] for o in things])
                offsets = centres[:, :2] - point
                distance = np.linalg.norm(offsets, axis=1)
                candidates = np.flatnonzero((distance > 1.0) & (distance < 4.0))
                if len(candidates):
                    pick = int(rng.choice(candidates))
                    target = math.atan2(offsets[pick, 1], offsets[pick, 0])
                    drop = centres[pick, 2] - height
                    pitch[k] = np.clip(math.atan2(drop, distance[pick]), -0.7, 0.15)
        if k == 0:
            yaw[k] = target
        else:
            turn = (target - yaw[k - 1] + math.pi) % (2 * math.pi) - math.pi
            yaw[k] = yaw[k - 1] + float(np.clip(turn, -MAX_TURN_PER_KEY, MAX_TURN_PER_KEY))
    return yaw, pitch
