"""Random materials and pieces of furniture, as parts in the object's own frame.

Each builder returns the :class:`~aceg.data.synthetic.layout.Part` list of one object of
the given size (metres): origin at the centre of its footprint on the floor, x along its
width, y towards its front, z up. Builders draw from ``rng`` in a fixed order, so a seed
gives the same furniture.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aceg.data.synthetic.layout import Material, Part
from aceg.data.synthetic.textures import TextureSet


def random_material(rng: np.random.Generator, textures: TextureSet, category: str,
                    repeats=(0.4, 1.5), specular=(0.0, 0.15)) -> Material:
    """A new texture layer of ``category`` with a random tint, shininess and scale;
    ``repeats`` and ``specular`` are (low, high) ranges."""
    layer = textures.new(category)
    tint = tuple(float(v) for v in rng.uniform(0.85, 1.1, 3))
    return Material(layer, textures.is_plain(layer), tint, float(rng.uniform(*specular)),
                    float(rng.choice([8.0, 16.0, 32.0, 64.0])), float(rng.uniform(*repeats)))


def cabinet(rng, textures, width, depth, height):
    """A box, often with door or drawer fronts on its +y face."""
    body = random_material(rng, textures, "furniture")
    parts = [Part("box", (0, 0, height / 2), (width, depth, height), body)]
    if rng.random() < 0.6:  # doors / drawer fronts
        front = random_material(rng, textures, "furniture")
        n = int(rng.integers(1, 4))
        for i in range(n):
            w = width / n
            parts.append(Part("quad", (-width / 2 + w * (i + 0.5), depth / 2 + 0.004, height / 2),
                              (w * 0.9, 0, height * 0.85), front))
    return parts


def table(rng, textures, width, depth, height):
    """A top on four legs."""
    top = random_material(rng, textures, "furniture")
    legs = random_material(rng, textures, "furniture")
    t = rng.uniform(0.03, 0.06)
    leg = rng.uniform(0.04, 0.07)
    parts = [Part("box", (0, 0, height - t / 2), (width, depth, t), top)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(Part("box", (sx * (width / 2 - leg), sy * (depth / 2 - leg),
                                      (height - t) / 2), (leg, leg, height - t), legs))
    return parts


def shelf(rng, textures, width, depth, height):
    """Open shelves (sides, back, 3-5 boards) with books and boxes on each board."""
    frame = random_material(rng, textures, "furniture")
    board = 0.025
    parts = [
        Part("box", (-width / 2 + board / 2, 0, height / 2), (board, depth, height), frame),
        Part("box", (width / 2 - board / 2, 0, height / 2), (board, depth, height), frame),
        Part("box", (0, -depth / 2 + 0.01, height / 2), (width - 2 * board, 0.02, height), frame),
    ]
    item_palette = [random_material(rng, textures, "clutter", repeats=(1.0, 4.0)) for _ in range(4)]
    levels = int(rng.integers(3, 6))
    for i in range(levels + 1):
        z = i * (height - board) / levels + board / 2
        parts.append(Part("box", (0, 0, z), (width - 2 * board, depth, board), frame))
        if i == levels:
            break
        x = -width / 2 + board + 0.02
        gap_height = (height - board) / levels - board
        while True:  # books and boxes on the board
            w = rng.uniform(0.03, 0.25)
            if x + w > width / 2 - board - 0.02:
                break
            if rng.random() < 0.75:
                h = rng.uniform(0.4, 0.95) * gap_height
                d = rng.uniform(0.5, 0.95) * depth
                item = replace(item_palette[int(rng.integers(len(item_palette)))],
                               tint=tuple(float(v) for v in rng.uniform(0.6, 1.15, 3)))
                parts.append(Part("box", (x + w / 2, -depth / 2 + 0.02 + d / 2, z + board / 2 + h / 2),
                                  (w, d, h), item))
            x += w + rng.uniform(0.0, 0.05)
    return parts


def cylinder_object(rng, textures, radius, height):
    """A stool or a column."""
    return [Part("cylinder", (0, 0, 0), (radius, radius, height),
                 random_material(rng, textures, "furniture", repeats=(0.8, 2.5)))]


def clutter_on_top(rng, textures, width, depth, height, count):
    """``count`` small boxes and cylinders standing at ``height`` on a width x depth top."""
    parts = []
    for _ in range(count):
        material = random_material(rng, textures, "clutter", repeats=(1.0, 5.0), specular=(0.0, 0.4))
        if rng.random() < 0.5:
            size = (rng.uniform(0.08, 0.4), rng.uniform(0.08, 0.3), rng.uniform(0.04, 0.35))
            x = rng.uniform(-width / 2 + size[0] / 2, width / 2 - size[0] / 2)
            y = rng.uniform(-depth / 2 + size[1] / 2, depth / 2 - size[1] / 2)
            parts.append(Part("box", (x, y, height + size[2] / 2), size, material))
        else:
            r = rng.uniform(0.03, 0.12)
            h = rng.uniform(0.05, 0.35)
            x = rng.uniform(-width / 2 + r, width / 2 - r)
            y = rng.uniform(-depth / 2 + r, depth / 2 - r)
            parts.append(Part("cylinder", (x, y, height), (r, r, h), material))
    return parts


def sofa(rng, textures, width, depth, height):
    """Seat, back (at -y) and two arms, one fabric."""
    fabric = random_material(rng, textures, "furniture", repeats=(1.0, 3.0))
    return [Part("box", (0, 0, 0.22), (width, depth, 0.44), fabric),
            Part("box", (0, -depth / 2 + 0.1, height / 2), (width, 0.2, height), fabric),
            Part("box", (-width / 2 + 0.1, 0, 0.3), (0.2, depth, 0.6), fabric),
            Part("box", (width / 2 - 0.1, 0, 0.3), (0.2, depth, 0.6), fabric)]
