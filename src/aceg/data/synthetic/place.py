"""A multi-room place: rooms and corridors joined by door openings (an apartment or an
office floor), the data a place is generated, rendered and walked through from.

World frame of :mod:`~aceg.data.synthetic.layout`: metres, **z up**, floor at ``z = 0``,
one ceiling height for the whole place. Every *space* (a room or a corridor) is a
:class:`~aceg.data.synthetic.layout.Layout` of its own: an axis-aligned rectangle with its
wall, floor and ceiling materials and its objects. Spaces are separated by walls
:data:`WALL_THICKNESS` thick (the gap between their rectangles) and joined by
:class:`Door` openings through those walls. :mod:`~aceg.data.synthetic.floor_plans` draws a
random place, :mod:`~aceg.data.synthetic.place_mesh` turns one into triangles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aceg.data.synthetic.layout import Layout, distance_to_segments

#: Thickness of the walls between spaces (metres).
WALL_THICKNESS = 0.12

#: Height of door openings (metres).
DOOR_HEIGHT = 2.1


@dataclass(frozen=True)
class Opening:
    """A door opening in one wall of a space: the wall's index (as in
    :meth:`~aceg.data.synthetic.layout.Room.walls`) and the stretch ``t0 .. t1`` (metres from
    the wall's start) that is open up to :data:`DOOR_HEIGHT`."""

    wall: int
    t0: float
    t1: float


@dataclass
class Space:
    """A room or a corridor.

    Attributes:
        name: unique in the place (``corridor``, ``room_3``).
        kind: what it is (``corridor``, ``living_room``, ``bedroom``, ``office``, ...).
        layout: its rectangle (corners counter-clockwise), materials and objects (object
            names start with ``name/``).
        openings: its door openings.
        template: rooms with the same template are furnished alike (same size, materials
            and furniture); None for a room of its own.
    """

    name: str
    kind: str
    layout: Layout
    openings: list[Opening] = field(default_factory=list)
    template: int | None = None

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Whether points (N, 2) lie inside the space's rectangle."""
        lo, hi = self.layout.room.bounds
        xy = np.atleast_2d(xy)
        return np.all((xy >= lo) & (xy <= hi), axis=1)

    def wall_segments(self, with_openings: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Starts and ends (S, 2) of the solid parts of the walls: every wall, less its
        door openings when ``with_openings``."""
        starts, ends = [], []
        for index, (a, b) in enumerate(self.layout.room.walls()):
            length = float(np.linalg.norm(b - a))
            direction = (b - a) / length
            cuts = sorted((o.t0, o.t1) for o in self.openings if o.wall == index)
            t = 0.0
            for t0, t1 in (cuts if with_openings else []):
                if t0 > t:
                    starts.append(a + direction * t)
                    ends.append(a + direction * t0)
                t = max(t, t1)
            if t < length:
                starts.append(a + direction * t)
                ends.append(b)
        return np.array(starts).reshape(-1, 2), np.array(ends).reshape(-1, 2)


@dataclass(frozen=True)
class Door:
    """An opening through the wall between two spaces.

    Attributes:
        spaces: indices of the two spaces it joins.
        lo, hi: (2,) opposite corners of the passage through the wall (its width times the
            wall's thickness), world metres.
        across: the axis (0 = x, 1 = y) along which one walks through it.
    """

    spaces: tuple[int, int]
    lo: tuple[float, float]
    hi: tuple[float, float]
    across: int

    @property
    def centre(self) -> np.ndarray:
        return (np.array(self.lo) + np.array(self.hi)) / 2

    @property
    def width(self) -> float:
        return float(self.hi[1 - self.across] - self.lo[1 - self.across])

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Whether points (N, 2) lie in the passage."""
        xy = np.atleast_2d(xy)
        return np.all((xy >= self.lo) & (xy <= self.hi), axis=1)

    def jambs(self) -> tuple[np.ndarray, np.ndarray]:
        """Starts and ends (2, 2) of the opening's two sides, across the wall."""
        lo, hi = np.array(self.lo), np.array(self.hi)
        if self.across == 1:  # walked through along y: the sides are at x = lo, x = hi
            return np.array([lo, [hi[0], lo[1]]]), np.array([[lo[0], hi[1]], hi])
        return np.array([lo, [lo[0], hi[1]]]), np.array([[hi[0], lo[1]], hi])


@dataclass
class Place:
    """Spaces joined by doors, under one ceiling.

    Attributes:
        kind: ``apartment`` or ``office``.
        spaces: the rooms and corridors; the first is the corridor the walk starts in.
        doors: the openings between them.
        height: ceiling height (metres).
    """

    kind: str
    spaces: list[Space]
    doors: list[Door]
    height: float

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest (x, y) corners of all spaces."""
        lows = np.stack([s.layout.room.bounds[0] for s in self.spaces])
        highs = np.stack([s.layout.room.bounds[1] for s in self.spaces])
        return lows.min(axis=0), highs.max(axis=0)

    def space_of(self, xy: np.ndarray) -> np.ndarray:
        """Index of the space holding each point (N, 2); the first space a door joins for
        points in its passage; -1 inside walls and outside."""
        xy = np.atleast_2d(xy)
        index = np.full(len(xy), -1)
        for i, space in enumerate(self.spaces):
            index[(index < 0) & space.contains(xy)] = i
        for door in self.doors:
            index[(index < 0) & door.contains(xy)] = door.spaces[0]
        return index

    def is_free(self, xy: np.ndarray, z: np.ndarray | float, clearance: float = 0.3) -> np.ndarray:
        """Whether camera centres at ``xy`` (N, 2) and heights ``z`` lie inside a space or
        a door's passage, at least ``clearance`` metres from every wall, door side,
        floor, ceiling and object. A door's opening counts as wall for a centre higher than
        :data:`DOOR_HEIGHT` less the clearance."""
        xy = np.atleast_2d(xy).astype(np.float64)
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), (len(xy),))
        free = np.zeros(len(xy), bool)
        below_lintel = z < DOOR_HEIGHT - clearance
        for space in self.spaces:
            inside = np.flatnonzero(space.contains(xy))
            if not len(inside):
                continue
            ok = np.ones(len(inside), bool)
            for low_enough, with_openings in ((True, True), (False, False)):
                which = below_lintel[inside] == low_enough
                starts, ends = space.wall_segments(with_openings)
                distance = distance_to_segments(xy[inside[which]], starts, ends)
                ok[which] = distance >= clearance
            ok &= space.layout.clear_of_objects(xy[inside], z[inside], clearance)
            free[inside] = ok
        for door in self.doors:
            inside = np.flatnonzero(door.contains(xy) & below_lintel)
            starts, ends = door.jambs()
            free[inside] = distance_to_segments(xy[inside], starts, ends) >= clearance
        return free & (z > clearance) & (z < self.height - clearance)

    def summary(self) -> dict:
        """JSON-ready description for ``scene.json``: spaces (rectangle, template,
        texture layers of their surfaces, objects) and doors."""
        spaces = []
        for space in self.spaces:
            layout = space.layout
            spaces.append({
                "name": space.name,
                "kind": space.kind,
                "template": space.template,
                "rectangle_m": np.round(np.concatenate(layout.room.bounds), 4).tolist(),
                "texture_layers": sorted(space_texture_layers(space)),
                "objects": layout.summary()["objects"],
            })
        doors = [{"spaces": [self.spaces[i].name for i in d.spaces],
                  "passage_m": np.round([*d.lo, *d.hi], 4).tolist()} for d in self.doors]
        return {"kind": self.kind, "ceiling_height_m": round(self.height, 4),
                "wall_thickness_m": WALL_THICKNESS, "door_height_m": DOOR_HEIGHT,
                "spaces": spaces, "doors": doors}


def space_texture_layers(space: Space) -> set[int]:
    """Texture layers of every surface of a space: walls, floor, ceiling, objects."""
    layout = space.layout
    layers = {m.layer for m in layout.wall_materials}
    layers |= {layout.floor_material.layer, layout.ceiling_material.layer}
    for obj in layout.objects:
        layers |= {part.material.layer for part in obj.parts}
    return layers
