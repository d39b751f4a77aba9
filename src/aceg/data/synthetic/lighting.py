"""Lightings of a scene: lighting A (mapping) and a changed lighting B (``query_light``).

Lights are points in the world frame (metres, z up) with a linear-RGB colour times
intensity; ``ambient`` adds a uniform term. Lighting B differs from A in every respect a
room's light can change: lights moved, re-coloured (warm / neutral / cool / tinted),
dimmed or brightened, some switched off, sometimes daylight from a window added, and a
different ambient level (see :func:`lighting_b`). The camera exposure follows the light
level only partly (a partial auto-exposure), so a darker lighting gives darker images.
"""

from __future__ import annotations

import numpy as np

from aceg.data.synthetic.layout import Layout
from aceg.data.synthetic.renderer import MAX_LIGHTS, Lighting

#: Linear-RGB colours of typical light sources (before intensity).
LIGHT_COLOURS = {
    "warm": (1.0, 0.74, 0.48),
    "neutral": (1.0, 0.94, 0.86),
    "cool": (0.78, 0.88, 1.0),
    "daylight": (0.85, 0.92, 1.0),
}

#: Average surface brightness (linear, before tone mapping) the exposure aims at.
TARGET_RADIANCE = 0.45

#: Typical linear albedo of the scene's textures, for the exposure estimate.
TYPICAL_ALBEDO = 0.3


def _light_colour(rng: np.random.Generator, kinds=("warm", "neutral", "cool")) -> np.ndarray:
    colour = np.array(LIGHT_COLOURS[str(rng.choice(kinds))])
    if rng.random() < 0.2:  # a coloured lamp
        colour = colour * rng.uniform(0.4, 1.0, 3)
    return colour / colour.max()


def _ceiling_positions(rng: np.random.Generator, layout: Layout, count: int) -> np.ndarray:
    """``count`` spread-out points just under the ceiling (farthest-point sampling)."""
    lo, hi = layout.room.bounds
    candidates = rng.uniform(lo, hi, (400, 2))
    candidates = candidates[layout.room.contains(candidates, margin=0.4)]
    chosen = [candidates[int(rng.integers(len(candidates)))]]
    while len(chosen) < count:
        distance = np.min(np.linalg.norm(candidates[:, None] - np.array(chosen)[None], axis=2), 1)
        chosen.append(candidates[int(np.argmax(distance * rng.uniform(0.7, 1.0, len(distance))))])
    z = layout.room.height - rng.uniform(0.05, 0.4, count)
    return np.column_stack([np.array(chosen), z])


def _exposure(layout: Layout, positions: np.ndarray, colours: np.ndarray, ambient: np.ndarray,
              radius: float, rng: np.random.Generator) -> float:
    """Exposure that brings the mean brightness of random room points to the target."""
    lo, hi = layout.room.bounds
    points = rng.uniform([*lo, 0.0], [*hi, layout.room.height], (300, 3))
    points = points[layout.room.contains(points[:, :2])]
    d2 = np.sum((points[:, None, :] - positions[None]) ** 2, axis=2)
    irradiance = (colours.mean(axis=1)[None] * 0.5 / (1.0 + d2 / radius**2)).sum(axis=1)
    mean = float(np.mean(irradiance) + ambient.mean())
    return TARGET_RADIANCE / (TYPICAL_ALBEDO * max(mean, 1e-3))


def lighting_a(rng: np.random.Generator, layout: Layout,
               count: int | None = None) -> tuple[Lighting, dict]:
    """The mapping lighting: ``count`` (default 2-4) ceiling lights spread over the room and
    sometimes a lamp, plus ambient."""
    if count is None:
        count = int(rng.integers(2, 5))
    positions = _ceiling_positions(rng, layout, count)
    if rng.random() < 0.5:  # a standing lamp near a wall
        lo, hi = layout.room.bounds
        for _ in range(50):
            xy = rng.uniform(lo, hi)
            if layout.room.contains(xy[None], 0.3)[0]:
                positions = np.vstack([positions, [*xy, rng.uniform(1.2, 1.8)]])
                break
    colours = np.stack([_light_colour(rng) for _ in positions])
    intensities = rng.uniform(0.6, 1.4, len(positions))
    ambient = rng.uniform(0.03, 0.1) * _light_colour(rng, ("neutral", "cool", "warm"))
    radius = float(rng.uniform(1.5, 3.0))
    lit = colours * intensities[:, None]
    exposure = _exposure(layout, positions, lit, ambient, radius, rng)
    lighting = Lighting(positions, lit, ambient, radius, exposure)
    return lighting, describe(lighting)


#: Kinds of change from lighting A to lighting B.
MOODS = ("evening", "daylight", "coloured", "dim", "rearranged")


def lighting_b(rng: np.random.Generator, layout: Layout, a: Lighting) -> tuple[Lighting, dict]:
    """A changed lighting. Always: lights moved, some switched off, other intensities and
    another ambient level. Then one mood: ``evening`` (few warm lamps, dark), ``daylight``
    (overhead lights off, strong cool light from a window, bright cool ambient),
    ``coloured`` (saturated lamps), ``dim`` (everything at a third) or ``rearranged``
    (new positions, and the colour temperature opposite to A's). The exposure adapts only partly."""
    mood = str(rng.choice(MOODS))
    count = len(a.positions)
    positions = _ceiling_positions(rng, layout, count)
    low = a.positions[:, 2] < layout.room.height - 0.5  # lamps stay lamps
    positions[:, 2] = np.where(low, rng.uniform(0.9, 1.9, count), positions[:, 2])
    colours = np.stack([_light_colour(rng) for _ in range(count)])
    intensities = rng.uniform(0.4, 1.6, count)
    on = rng.random(count) > 0.35
    ambient_colour = _light_colour(rng, ("neutral", "cool", "warm"))
    ambient_level = a.ambient.mean() * rng.uniform(0.4, 2.0)
    if mood == "evening":
        colours[:] = np.array([1.0, 0.55, 0.25])
        on = rng.random(count) > 0.6
        ambient_level = a.ambient.mean() * 0.3
        ambient_colour = np.array([1.0, 0.7, 0.45])
    elif mood == "daylight":
        on[:] = False
        ambient_level = a.ambient.mean() * rng.uniform(2.0, 4.0)
        ambient_colour = np.array(LIGHT_COLOURS["daylight"])
    elif mood == "coloured":
        hues = rng.uniform(0.15, 1.0, (count, 3))
        hues[np.arange(count), rng.integers(0, 3, count)] = 1.0
        colours = hues
    elif mood == "rearranged":  # the other colour temperature than A's
        warm_a = a.colours[:, 0].sum() >= a.colours[:, 2].sum()
        colours = np.stack([_light_colour(rng, ("cool",) if warm_a else ("warm",))
                            for _ in range(count)])
    elif mood == "dim":
        intensities *= 0.33
        ambient_level = a.ambient.mean() * 0.33
    if not on.any():
        on[int(rng.integers(count))] = mood != "daylight"
    lit = colours * (intensities * on)[:, None]
    if mood == "daylight" or (mood == "rearranged" and rng.random() < 0.5):
        walls = layout.room.walls()
        start, end = walls[int(rng.integers(len(walls)))]
        along = start + (end - start) * rng.uniform(0.2, 0.8)
        direction = (end - start) / np.linalg.norm(end - start)
        inward = np.array([-direction[1], direction[0]])
        window = np.array([*(along + 0.2 * inward), rng.uniform(1.3, 2.1)])
        positions = np.vstack([positions, window])[:MAX_LIGHTS]
        lit = np.vstack([lit, np.array(LIGHT_COLOURS["daylight"]) * rng.uniform(2.0, 4.0)])
        lit = lit[:MAX_LIGHTS]
    ambient = ambient_level * ambient_colour
    radius = float(a.radius * rng.uniform(0.8, 1.25))
    full_exposure = _exposure(layout, positions, lit, ambient, radius, rng)
    exposure = float(full_exposure**0.4 * a.exposure**0.6)
    lighting = Lighting(positions, lit, ambient, radius, exposure)
    info = describe(lighting)
    info["mood"] = mood
    return lighting, info


def describe(lighting: Lighting) -> dict:
    """JSON-ready description for ``scene.json``."""
    return {
        "lights": [
            {"position_m": np.round(p, 4).tolist(), "rgb_intensity": np.round(c, 4).tolist(),
             "on": bool(np.any(c > 0))}
            for p, c in zip(lighting.positions, lighting.colours, strict=True)
        ],
        "ambient_rgb": np.round(lighting.ambient, 4).tolist(),
        "falloff_radius_m": round(lighting.radius, 4),
        "exposure": round(lighting.exposure, 4),
    }
