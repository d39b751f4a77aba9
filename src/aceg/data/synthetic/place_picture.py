"""A picture of a place from above: the floor plan with the mapping walk and the query
positions (``plan.png`` of a generated place).

Spaces are light grey with their names, walls black (doors are the gaps), furniture
footprints filled with one colour per piece of furniture, so that pieces repeated in
several rooms show in the same colour. The mapping walk is a line of camera centres
coloured from its first frame (dark blue) to its last (yellow), with a tick along the
viewing direction every few frames; query cameras are dots with a short line along
their viewing direction, one colour per split. World x runs to the right, y up.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from aceg.data.synthetic.contact_sheet import write_png
from aceg.data.synthetic.place import Place

#: Width of the picture's drawing area in pixels (the height follows the place's shape).
PICTURE_WIDTH = 1600

#: Margin around the plan, pixels.
MARGIN = 40

#: Colour (RGB) of each query split's cameras.
SPLIT_COLOURS = {"query_same": (0, 160, 0), "query_light": (0, 160, 160),
                 "query_view": (230, 120, 0), "query_moved": (200, 0, 200)}

_LEGEND_LINE = 22


class _Canvas:
    """World xy (metres) to picture pixels."""

    def __init__(self, place: Place):
        lo, hi = place.bounds
        self.lo = lo - 0.2
        extent = hi - lo + 0.4
        self.scale = (PICTURE_WIDTH - 2 * MARGIN) / extent[0]
        self.plan_height = int(extent[1] * self.scale) + 2 * MARGIN
        self.height = self.plan_height + _LEGEND_LINE * 3 + 10
        self.image = np.full((self.height, PICTURE_WIDTH, 3), 255, np.uint8)

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.atleast_2d(xy)
        x = MARGIN + (xy[:, 0] - self.lo[0]) * self.scale
        y = self.plan_height - MARGIN - (xy[:, 1] - self.lo[1]) * self.scale
        return np.round(np.column_stack([x, y])).astype(np.int32)


def _piece_colour(obj) -> tuple[int, int, int]:
    """A colour that is the same for identical pieces (same kind, parts and materials)."""
    key = repr((obj.kind, [(p.kind, p.size, p.material.layer) for p in obj.parts]))
    hue = zlib.crc32(key.encode()) % 180
    hsv = np.array([[[hue, 110, 215]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _draw_plan(canvas: _Canvas, place: Place) -> None:
    image = canvas.image
    for space in place.spaces:
        cv2.fillPoly(image, [canvas.px(space.layout.room.polygon)], (236, 236, 236))
        for obj in space.layout.objects:
            if obj.has_footprint:
                corners = canvas.px(obj.footprint_corners())
                cv2.fillPoly(image, [corners], _piece_colour(obj))
                cv2.polylines(image, [corners], True, (120, 120, 120), 1, cv2.LINE_AA)
    for space in place.spaces:
        starts, ends = space.wall_segments()
        for a, b in zip(canvas.px(starts), canvas.px(ends), strict=True):
            cv2.line(image, tuple(int(v) for v in a), tuple(int(v) for v in b), (0, 0, 0), 3)
        label = space.name if space.template is None else f"{space.name} (T{space.template})"
        lo, hi = space.layout.room.bounds
        anchor = canvas.px(np.array([lo[0] + 0.15, hi[1] - 0.15]))[0] + [0, 14]
        cv2.putText(image, label, tuple(int(v) for v in anchor), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(image, space.kind, tuple(int(v) for v in anchor + [0, 16]),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (110, 110, 110), 1, cv2.LINE_AA)


def _draw_walk(canvas: _Canvas, mapping: list[np.ndarray]) -> None:
    centres = np.stack([p[:3, 3] for p in mapping])
    pixels = canvas.px(centres[:, :2])
    ramp = np.linspace(0, 255, len(mapping)).astype(np.uint8)[:, None]
    colours = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    tick_every = max(1, len(mapping) // 150)
    for i in range(len(mapping)):
        colour = tuple(int(v) for v in colours[i, 0])
        if i > 0:
            cv2.line(canvas.image, tuple(map(int, pixels[i - 1])), tuple(map(int, pixels[i])),
                     colour, 2, cv2.LINE_AA)
        if i % tick_every == 0:
            _view_tick(canvas, mapping[i], colour, 0.35)


def _view_tick(canvas: _Canvas, pose: np.ndarray, colour, length: float) -> None:
    axis = pose[:2, 2]
    norm = float(np.linalg.norm(axis))
    if norm < 1e-6:
        return
    start = pose[:2, 3]
    a, b = canvas.px(np.stack([start, start + axis / norm * length]))
    cv2.line(canvas.image, tuple(map(int, a)), tuple(map(int, b)), colour, 1, cv2.LINE_AA)


def _draw_queries(canvas: _Canvas, split: str, poses: list[np.ndarray]) -> None:
    colour = SPLIT_COLOURS[split]
    for pose in poses:
        centre = canvas.px(pose[:2, 3])[0]
        cv2.circle(canvas.image, tuple(map(int, centre)), 4, colour, -1, cv2.LINE_AA)
        _view_tick(canvas, pose, colour, 0.5)


def _draw_legend(canvas: _Canvas, place: Place, poses: dict[str, list[np.ndarray]]) -> None:
    y = canvas.plan_height + 4
    font = cv2.FONT_HERSHEY_SIMPLEX
    mapping = poses["mapping"]
    text = (f"{place.kind}: {len(place.spaces) - 1} rooms + corridor; mapping walk of "
            f"{len(mapping)} frames, dark blue (first) to yellow (last), ticks = view "
            f"direction; furniture coloured by piece (same colour = same piece)")
    cv2.putText(canvas.image, text, (MARGIN, y + 15), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    x = MARGIN
    for split, split_poses in poses.items():
        if split == "mapping" or split == "query_light":
            continue  # query_light has the poses of query_same
        label = f"{split} ({len(split_poses)})" + (" = query_light poses"
                                                    if split == "query_same" else "")
        cv2.circle(canvas.image, (x + 5, y + _LEGEND_LINE + 10), 5, SPLIT_COLOURS[split], -1)
        cv2.putText(canvas.image, label, (x + 15, y + _LEGEND_LINE + 15), font, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        x += 20 + cv2.getTextSize(label, font, 0.45, 1)[0][0] + 20


def make_plan_picture(place: Place, poses: dict[str, list[np.ndarray]]) -> np.ndarray:
    """The picture (H, W, 3) uint8 RGB of ``place`` with the camera positions of each split
    of ``poses`` (camera-to-world 4x4; ``mapping`` required)."""
    canvas = _Canvas(place)
    _draw_plan(canvas, place)
    _draw_walk(canvas, poses["mapping"])
    for split, split_poses in poses.items():
        if split in SPLIT_COLOURS and split != "query_light":
            _draw_queries(canvas, split, split_poses)
    _draw_legend(canvas, place, poses)
    return canvas.image


def write_plan_picture(path: str | Path, place: Place,
                       poses: dict[str, list[np.ndarray]]) -> None:
    """Write :func:`make_plan_picture` as a PNG (atomically)."""
    write_png(path, make_plan_picture(place, poses))
