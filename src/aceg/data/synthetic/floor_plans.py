"""A random multi-room place (:func:`random_place`): an apartment or an office floor, in the
world frame of :mod:`~aceg.data.synthetic.place` (metres, z up).

The plan: a corridor along x (from ``x = 0``, ``0 <= y <= width``), rooms side by side
along both of its long walls, each with a door onto it, and one larger room at its far end
(the living room of an apartment, the meeting room of an office). Rooms are furnished with
the furnishing steps of :mod:`~aceg.data.synthetic.rooms` in a frame of their own (centred,
door in the wall at +y), then turned and moved into place.

Look-alike places on purpose: one palette of wall, floor and ceiling materials for the
whole place, and one catalogue of furniture made once and drawn from in every room, so the
same cabinet or table (same parts, same texture layers) stands in several rooms. An office
also has room *templates*: offices of one template share size, materials and furniture
arrangement, and differ only by a few posters of their own.

Every step draws from one ``rng`` in a fixed order: the same seed gives the same place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from aceg.data.synthetic.furniture import random_material
from aceg.data.synthetic.layout import Layout, Material, Room, SceneObject
from aceg.data.synthetic.place import WALL_THICKNESS, Door, Opening, Place, Space
from aceg.data.synthetic.rooms import (
    FREE_STANDING_KINDS,
    FreePiece,
    WallPiece,
    WallSpans,
    add_free_standing,
    add_posters,
    add_rug,
    add_skirting,
    add_wall_furniture,
    free_standing_piece,
    wall_piece,
)
from aceg.data.synthetic.textures import TextureSet

#: Kinds of place.
PLACE_KINDS = ("apartment", "office")

#: Fewest and most rooms of a place (the corridor not counted).
MIN_ROOMS, MAX_ROOMS = 2, 16


@dataclass(frozen=True)
class PlanStyle:
    """Sizes (metres, (low, high) ranges) and furnishing of one kind of place.

    Attributes:
        corridor_width: width of the corridor.
        room_width, room_depth: a side room's extent along and across the corridor.
        end_room_width, end_room_depth: the far end room's extent across and along it.
        height: ceiling height.
        door_width: width of door openings.
        templates: room templates the side rooms cycle through (0: every room its own).
        room_kinds: kinds given to the side rooms in turn.
        end_room_kind: kind of the far end room.
        wall_pieces: pieces of wall furniture in the place's catalogue.
        free_pieces: free-standing pieces of each kind in the catalogue.
    """

    corridor_width: tuple[float, float]
    room_width: tuple[float, float]
    room_depth: tuple[float, float]
    end_room_width: tuple[float, float]
    end_room_depth: tuple[float, float]
    height: tuple[float, float]
    door_width: tuple[float, float]
    templates: int
    room_kinds: tuple[str, ...]
    end_room_kind: str
    wall_pieces: int
    free_pieces: int


STYLES = {
    "apartment": PlanStyle((1.3, 1.7), (2.8, 4.6), (3.2, 5.0), (4.5, 6.5), (4.0, 6.0),
                           (2.5, 2.8), (1.0, 1.2), 0,
                           ("kitchen", "bedroom", "bathroom", "bedroom", "study", "bedroom"),
                           "living_room", 7, 2),
    "office": PlanStyle((1.8, 2.4), (3.0, 4.2), (3.8, 5.0), (5.0, 7.0), (4.5, 6.5),
                        (2.7, 3.0), (1.0, 1.2), 2, ("office",), "meeting_room", 4, 1),
}


class Catalogue:
    """Furniture made once for a place and drawn from in every room (the repeats)."""

    def __init__(self, rng: np.random.Generator, textures: TextureSet, style: PlanStyle,
                 room_height: float):
        self.rng = rng
        self.wall = [wall_piece(rng, textures) for _ in range(style.wall_pieces)]
        self.free = {kind: [free_standing_piece(rng, textures, kind, room_height)
                            for _ in range(style.free_pieces)]
                     for kind in dict.fromkeys(FREE_STANDING_KINDS)}

    def wall_piece(self) -> WallPiece:
        return self.wall[int(self.rng.integers(len(self.wall)))]

    def free_piece(self, kind: str) -> FreePiece:
        pieces = self.free[kind]
        return pieces[int(self.rng.integers(len(pieces)))]


@dataclass
class Palette:
    """Surface materials shared by the spaces of a place: textured wall materials, one
    paint (possibly plain), floors (rooms, then wet rooms and corridor) and one ceiling."""

    walls: list[Material]
    paint: Material
    floors: list[Material]
    ceiling: Material

    @classmethod
    def draw(cls, rng: np.random.Generator, textures: TextureSet) -> Palette:
        walls = [random_material(rng, textures, "accent_wall", repeats=(0.4, 1.5))
                 for _ in range(3)]
        paint = random_material(rng, textures, "wall", repeats=(0.4, 1.5))
        floors = [random_material(rng, textures, "floor", repeats=(0.4, 1.5),
                                  specular=(0.0, 0.3)) for _ in range(3)]
        ceiling = random_material(rng, textures, "ceiling", repeats=(0.3, 1.0),
                                  specular=(0.0, 0.02))
        return cls(walls, paint, floors, ceiling)

    def room_walls(self, rng: np.random.Generator, count: int) -> list[Material]:
        """Wall materials of a room: one base for all walls, a third of them another of
        the palette; at least two textured walls when the base is a plain paint."""
        base = (self.walls + [self.paint])[int(rng.integers(len(self.walls) + 1))]
        materials = [self.walls[int(rng.integers(len(self.walls)))] if rng.random() < 0.33
                     else base for _ in range(count)]
        for index in range(count):
            if sum(not m.plain for m in materials) >= 2:
                break
            materials[index] = self.walls[index % len(self.walls)]
        return materials


def random_place(rng: np.random.Generator, textures: TextureSet, kind: str,
                 rooms: int) -> Place:
    """A furnished place of ``kind`` (:data:`PLACE_KINDS`) with ``rooms`` rooms besides its
    corridor (:data:`MIN_ROOMS` .. :data:`MAX_ROOMS`)."""
    style = STYLES[kind]
    height = float(rng.uniform(*style.height))
    palette = Palette.draw(rng, textures)
    catalogue = Catalogue(rng, textures, style, height)
    corridor_width = float(rng.uniform(*style.corridor_width))
    templates = [_room_template(rng, textures, style, palette, catalogue, height)
                 for _ in range(style.templates)]
    side_rooms = rooms - 1
    x_next = {"south": 0.0, "north": 0.0}
    placed = []  # (side, template index or None, canonical layout, door offset, door width)
    for index in range(side_rooms):
        side = "south" if index % 2 == 0 else "north"
        if templates:
            template = index % len(templates)
            layout, door_dx, door_width = _clone(rng, textures, templates[template])
        else:
            template = None
            layout, door_dx, door_width = _furnished_room(
                rng, textures, style, palette, catalogue, height,
                float(rng.uniform(*style.room_width)), float(rng.uniform(*style.room_depth)))
        placed.append((side, template, layout, door_dx, door_width, x_next[side]))
        width = float(np.ptp(layout.room.polygon[:, 0]))
        x_next[side] += width + WALL_THICKNESS
    length = max(max(x_next.values()) - WALL_THICKNESS, 3.0)
    corridor = _corridor(rng, textures, palette, length, corridor_width, height)
    spaces, doors = [corridor], []
    for number, (side, template, layout, door_dx, door_width, x0) in enumerate(placed):
        width, depth = np.ptp(layout.room.polygon, axis=0)
        name = f"room_{number + 1}"
        if side == "south":
            centre = np.array([x0 + width / 2, -WALL_THICKNESS - depth / 2])
            quarter_turns, door_x = 0, centre[0] + door_dx
            lo, hi = (door_x - door_width / 2, -WALL_THICKNESS), (door_x + door_width / 2, 0.0)
            corridor_wall, t = 0, door_x
        else:
            centre = np.array([x0 + width / 2, corridor_width + WALL_THICKNESS + depth / 2])
            quarter_turns, door_x = 2, centre[0] - door_dx
            lo = (door_x - door_width / 2, corridor_width)
            hi = (door_x + door_width / 2, corridor_width + WALL_THICKNESS)
            corridor_wall, t = 2, length - door_x
        kind_name = ("office" if templates else
                     style.room_kinds[number % len(style.room_kinds)])
        spaces.append(_space(name, kind_name, layout, quarter_turns, centre, door_dx, door_width,
                             template))
        corridor.openings.append(Opening(corridor_wall, t - door_width / 2, t + door_width / 2))
        doors.append(Door((0, len(spaces) - 1), lo, hi, 1))
    end_width = float(rng.uniform(*style.end_room_width))
    end_depth = float(rng.uniform(*style.end_room_depth))
    layout, door_dx, door_width = _furnished_room(rng, textures, style, palette, catalogue,
                                                  height, end_width, end_depth)
    centre = np.array([length + WALL_THICKNESS + end_depth / 2, corridor_width / 2 - door_dx])
    spaces.append(_space(f"room_{rooms}", style.end_room_kind, layout, 1, centre, door_dx,
                         door_width, None))
    t = corridor_width / 2
    corridor.openings.append(Opening(1, t - door_width / 2, t + door_width / 2))
    doors.append(Door((0, len(spaces) - 1), (length, t - door_width / 2),
                      (length + WALL_THICKNESS, t + door_width / 2), 0))
    _furnish_corridor(rng, textures, corridor)
    return Place(kind, spaces, doors, height)


# --------------------------------------------------------------------------------------
# Rooms in their own frame: centred, the door in wall 2 (at +y), ``door_dx`` along x


@dataclass
class _Template:
    layout: Layout
    wall_spans: WallSpans
    door_dx: float
    door_width: float


def _canonical_room(width: float, depth: float, height: float, walls: list[Material],
                    floor: Material, ceiling: Material) -> Layout:
    polygon = np.array([[-width / 2, -depth / 2], [width / 2, -depth / 2],
                        [width / 2, depth / 2], [-width / 2, depth / 2]])
    return Layout(Room(polygon, height, "rectangle"), walls, floor, ceiling)


def _furnish(rng, textures: TextureSet, layout: Layout, catalogue: Catalogue,
             door_dx: float, door_width: float) -> WallSpans:
    """Furniture from the catalogue, posters, a rug and skirting; the door's stretch of
    wall and the floor in front of it are kept clear. Returns the taken wall stretches."""
    width, depth = np.ptp(layout.room.polygon, axis=0)
    wall_spans: WallSpans = [[] for _ in layout.room.walls()]
    t = width / 2 - door_dx  # wall 2 runs from (+w/2, +d/2) towards -x
    wall_spans[2].append((t - door_width / 2 - 0.1, t + door_width / 2 + 0.1, layout.room.height))
    keep_clear = _keep_clear(door_dx, depth, door_width)
    layout.objects.append(keep_clear)
    add_wall_furniture(rng, textures, layout, wall_spans, piece=catalogue.wall_piece)
    add_posters(rng, textures, layout, wall_spans)
    add_rug(rng, textures, layout)
    add_skirting(rng, textures, layout)
    add_free_standing(rng, textures, layout, piece=catalogue.free_piece)
    layout.objects.remove(keep_clear)
    return wall_spans


def _keep_clear(door_dx: float, depth: float, door_width: float) -> SceneObject:
    """An invisible footprint in front of the door, so that no furniture blocks it."""
    return SceneObject("keep_clear", "keep_clear", (), door_dx, depth / 2 - 0.75, 0.0, 0.0,
                       (door_width / 2 + 0.25, 0.75), 0.0, False)


def _door(rng, style: PlanStyle, width: float) -> tuple[float, float]:
    """Door width and its offset along the wall from the wall's middle."""
    door_width = float(rng.uniform(*style.door_width))
    room = max(0.0, width / 2 - door_width / 2 - 0.35)
    return float(rng.uniform(-room, room)), door_width


def _furnished_room(rng, textures, style: PlanStyle, palette: Palette, catalogue: Catalogue,
                    height: float, width: float, depth: float) -> tuple[Layout, float, float]:
    floor = palette.floors[int(rng.integers(2))]
    layout = _canonical_room(width, depth, height, palette.room_walls(rng, 4), floor,
                             palette.ceiling)
    door_dx, door_width = _door(rng, style, width)
    _furnish(rng, textures, layout, catalogue, door_dx, door_width)
    return layout, door_dx, door_width


def _room_template(rng, textures, style: PlanStyle, palette: Palette, catalogue: Catalogue,
                   height: float) -> _Template:
    width, depth = float(rng.uniform(*style.room_width)), float(rng.uniform(*style.room_depth))
    floor = palette.floors[int(rng.integers(2))]
    layout = _canonical_room(width, depth, height, palette.room_walls(rng, 4), floor,
                             palette.ceiling)
    door_dx, door_width = _door(rng, style, width)
    spans = _furnish(rng, textures, layout, catalogue, door_dx, door_width)
    return _Template(layout, spans, door_dx, door_width)


def _clone(rng, textures, template: _Template) -> tuple[Layout, float, float]:
    """A room like ``template`` with 1-2 posters of its own."""
    source = template.layout
    layout = Layout(source.room, list(source.wall_materials), source.floor_material,
                    source.ceiling_material, list(source.objects))
    spans = [list(s) for s in template.wall_spans]
    add_posters(rng, textures, layout, spans, tries=int(rng.integers(2, 5)))
    return layout, template.door_dx, template.door_width


def _space(name: str, kind: str, layout: Layout, quarter_turns: int, centre: np.ndarray,
           door_dx: float, door_width: float, template: int | None) -> Space:
    """The space of a room furnished in its own frame, turned by ``quarter_turns`` x 90
    deg about z and moved to ``centre``."""
    rotation = np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), quarter_turns)
    angle = quarter_turns * math.pi / 2
    polygon = layout.room.polygon @ rotation.T + centre
    objects = []
    for obj in layout.objects:
        x, y = rotation @ [obj.x, obj.y] + centre
        objects.append(replace(obj, name=f"{name}/{obj.name}", x=float(x), y=float(y),
                               yaw=obj.yaw + angle))
    placed = Layout(Room(polygon, layout.room.height, layout.room.shape), layout.wall_materials,
                    layout.floor_material, layout.ceiling_material, objects)
    width = float(np.ptp(layout.room.polygon[:, 0]))
    t = width / 2 - door_dx
    return Space(name, kind, placed, [Opening(2, t - door_width / 2, t + door_width / 2)],
                 template)


def _corridor(rng, textures, palette: Palette, length: float, width: float,
              height: float) -> Space:
    polygon = np.array([[0.0, 0.0], [length, 0.0], [length, width], [0.0, width]])
    walls = [palette.walls[int(rng.integers(len(palette.walls)))]] * 4
    layout = Layout(Room(polygon, height, "rectangle"), walls, palette.floors[2],
                    palette.ceiling)
    return Space("corridor", "corridor", layout)


def _furnish_corridor(rng, textures, corridor: Space) -> None:
    """Posters (about one per 1.5 m of wall, never over a door) and skirting."""
    layout = corridor.layout
    spans: WallSpans = [[] for _ in layout.room.walls()]
    for opening in corridor.openings:
        spans[opening.wall].append((opening.t0 - 0.1, opening.t1 + 0.1, layout.room.height))
    length = float(np.ptp(layout.room.polygon[:, 0]))
    add_posters(rng, textures, layout, spans, tries=max(3, int(2 * length / 1.5)))
    add_skirting(rng, textures, layout)
    corridor.layout.objects = [replace(o, name=f"corridor/{o.name}") for o in layout.objects]
