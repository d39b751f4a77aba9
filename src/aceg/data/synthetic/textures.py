"""Surface textures: real photographs mixed with procedural patterns.

Photographs come from the images scikit-image ships in ``skimage.data`` (read straight from
its data folder, never downloaded) and, when present, from extra photo folders such as
``shared/data/textures`` (used only if the folder has a ``SOURCES.md`` stating where its
images come from). Procedural textures (noise, plaster, stripes, tiles, bricks, checkers,
gradients, wood, dots, plain colours) are drawn from the scene's random generator.

Every texture is a square ``(TEXTURE_SIZE, TEXTURE_SIZE, 3)`` uint8 RGB (sRGB) array; the
renderer stacks a scene's textures into one texture array (one layer each) and mirrors
them at their borders when they repeat, so no seams show.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

#: Side of every texture layer in texels.
TEXTURE_SIZE = 512

#: Photographs of ``skimage.data`` that look like materials (walls, floors, furniture).
SURFACE_PHOTOS = ("brick.png", "grass.png", "gravel.png", "moon.png", "coins.png",
                  "hubble_deep_field.jpg", "ihc.png", "text.png", "page.png")

#: Photographs of ``skimage.data`` of things, printed on boxes and clutter.
OBJECT_PHOTOS = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "camera.png",
                 "motorcycle_left.png", "color.png", "retina.jpg", "clock_motion.png")

#: Photographs of ``skimage.data`` used as posters and pictures (shown whole).
POSTER_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png",
                 "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
                 "coins.png", "moon.png", "clock_motion.png", "page.png", "text.png",
                 "color.png", "brick.png", "grass.png", "gravel.png")

#: Image suffixes read from extra texture folders.
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Texture:
    """One texture layer.

    Attributes:
        name: what it is (``photo:brick.png``, ``tiles``, ...), recorded in ``scene.json``.
        rgb: (TEXTURE_SIZE, TEXTURE_SIZE, 3) uint8, sRGB.
        plain: True for (nearly) uniform textures that give a camera nothing to see.
    """

    name: str
    rgb: np.ndarray
    plain: bool = False


@functools.lru_cache(maxsize=1)
def skimage_photo_dir() -> Path | None:
    """Folder of the photographs bundled with scikit-image, or None if unavailable."""
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        return None
    folder = Path(skimage.data.__file__).parent
    return folder if folder.is_dir() else None


def default_extra_photo_dirs() -> list[Path]:
    """``shared/data/textures`` beside the project, if it exists and has a SOURCES.md."""
    project_root = Path(__file__).resolve().parents[4]
    candidate = project_root.parent / "shared" / "data" / "textures"
    return [candidate] if (candidate / "SOURCES.md").is_file() else []


@functools.lru_cache(maxsize=256)
def _load_photo(path: str) -> np.ndarray | None:
    """RGB uint8 photo, or None if unreadable or tiny. Read with Pillow (a scikit-image
    dependency), which ignores the odd colour profiles libpng warns about."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return rgb if min(rgb.shape[:2]) >= 32 else None


@dataclass
class PhotoSource:
    """The photographs available to a scene, in a fixed (sorted) order for determinism.

    Attributes:
        surface: paths of photos suitable as repeating surface materials.
        objects: paths of photos of things (printed on clutter).
        poster: paths of photos suitable as posters / pictures.
        extra_dirs: the extra photo folders used (beside ``skimage.data``).
    """

    surface: list[Path] = field(default_factory=list)
    objects: list[Path] = field(default_factory=list)
    poster: list[Path] = field(default_factory=list)
    extra_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def discover(cls, extra_dirs: Sequence[Path] | None = None) -> PhotoSource:
        """Photos of ``skimage.data`` plus every image in ``extra_dirs`` (default:
        :func:`default_extra_photo_dirs`). Missing files are skipped."""
        source = cls()
        folder = skimage_photo_dir()
        if folder is not None:
            source.surface = [folder / n for n in SURFACE_PHOTOS if (folder / n).is_file()]
            source.objects = [folder / n for n in OBJECT_PHOTOS if (folder / n).is_file()]
            source.poster = [folder / n for n in POSTER_PHOTOS if (folder / n).is_file()]
        dirs = default_extra_photo_dirs() if extra_dirs is None else list(extra_dirs)
        source.extra_dirs = [Path(d) for d in dirs]
        for extra in dirs:
            found = sorted(p for p in Path(extra).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
            source.surface.extend(found)
            source.objects.extend(found)
            source.poster.extend(found)
        return source


# --------------------------------------------------------------------------------------
# Colour helpers


def random_colour(rng: np.random.Generator, saturation=(0.05, 0.6), value=(0.3, 0.95)) -> np.ndarray:
    """An RGB colour in [0, 1] (3,) drawn in HSV space."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(*saturation) * 255
    val = rng.uniform(*value) * 255
    hsv = np.array([[[hue, sat, val]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _lerp_colours(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(S, S, 3) image blending colour a (t=0) to colour b (t=1)."""
    return a[None, None, :] * (1.0 - t[..., None]) + b[None, None, :] * t[..., None]


def fbm_noise(rng: np.random.Generator, size: int, base_cells: int = 4, octaves: int = 5,
              persistence: float = 0.5) -> np.ndarray:
    """Fractal value noise in [0, 1], shape (size, size), float64."""
    total = np.zeros((size, size), np.float64)
    weight_sum = 0.0
    weight = 1.0
    cells = base_cells
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        total += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight_sum += weight
        weight *= persistence
        cells = min(cells * 2, size // 2)
    total /= weight_sum
    lo, hi = np.percentile(total, [1, 99])
    return np.clip((total - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(coords, coords)  # x (columns), y (rows), both in (0, 1)


# --------------------------------------------------------------------------------------
# Procedural textures: each returns (rgb float [0, 1] (S, S, 3), plain flag)


def _noise_texture(rng, size):
    noise = fbm_noise(rng, size, base_cells=int(rng.integers(2, 9)))
    return _lerp_colours(noise, random_colour(rng), random_colour(rng)), False


def _plaster_texture(rng, size):
    colour = random_colour(rng, saturation=(0.0, 0.25), value=(0.6, 0.95))
    noise = fbm_noise(rng, size, base_cells=8, octaves=6) - 0.5
    return colour[None, None, :] * (1.0 + 0.06 * noise[..., None]), True


def _plain_texture(rng, size):
    colour = random_colour(rng, saturation=(0.0, 0.5), value=(0.35, 0.95))
    grain = rng.normal(0.0, 0.006, (size, size, 1))
    return colour[None, None, :] + grain, True


def _stripes_texture(rng, size):
    x, y = _grid(size)
    angle = rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
    along = x * np.cos(angle) + y * np.sin(angle)
    n_colours = int(rng.integers(2, 5))
    colours = [random_colour(rng) for _ in range(n_colours)]
    widths = rng.uniform(0.02, 0.12, n_colours)
    period = widths.sum()
    phase = np.mod(along, period)
    index = np.searchsorted(np.cumsum(widths), phase, side="right").clip(0, n_colours - 1)
    image = np.stack(colours)[index]
    image *= 1.0 + 0.05 * (fbm_noise(rng, size, 16)[..., None] - 0.5)
    return image, False


def _tiles_texture(rng, size, brick: bool = False):
    x, y = _grid(size)
    rows = int(rng.integers(3, 12))
    cols = rows if not brick else max(2, rows // 2)
    row = np.floor(y * rows)
    shift = 0.5 * (row % 2) if brick else 0.0
    col = np.floor(x * cols + shift)
    fx = np.mod(x * cols + shift, 1.0)
    fy = np.mod(y * rows, 1.0)
    base = random_colour(rng, value=(0.35, 0.9))
    jitter = rng.uniform(0.03, 0.2)
    cell_rng = np.random.default_rng(int(rng.integers(2**31)))
    cell_gain = 1.0 + jitter * (cell_rng.random((rows + 1, cols + 2, 3)) - 0.5) * 2
    image = base[None, None, :] * cell_gain[row.astype(int), col.astype(int) % (cols + 2)]
    image *= 1.0 + 0.12 * (fbm_noise(rng, size, 16)[..., None] - 0.5)
    grout_width = rng.uniform(0.03, 0.1)
    grout = (fx < grout_width) | (fy < grout_width * cols / rows if brick else fy < grout_width)
    image[grout] = random_colour(rng, saturation=(0.0, 0.1), value=(0.2, 0.9))
    return image, False


def _checker_texture(rng, size):
    x, y = _grid(size)
    n = int(rng.integers(2, 10))
    parity = (np.floor(x * n) + np.floor(y * n)) % 2
    image = _lerp_colours(parity, random_colour(rng), random_colour(rng))
    image *= 1.0 + 0.05 * (fbm_noise(rng, size, 8)[..., None] - 0.5)
    return image, False


def _gradient_texture(rng, size):
    x, y = _grid(size)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle) + 0.5
    else:
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = np.hypot(x - cx, y - cy) * 1.4
    t = np.clip(t, 0, 1) + 0.08 * (fbm_noise(rng, size, 6) - 0.5)
    return _lerp_colours(np.clip(t, 0, 1), random_colour(rng), random_colour(rng)), False


def _wood_texture(rng, size):
    x, y = _grid(size)
    warp = fbm_noise(rng, size, base_cells=3, octaves=4)
    frequency = rng.uniform(20, 60)
    rings = 0.5 + 0.5 * np.sin(frequency * (y + 0.15 * warp) + 3 * x)
    grain = fbm_noise(rng, size, base_cells=32, octaves=3)
    light = np.array([0.70, 0.50, 0.30]) * rng.uniform(0.7, 1.2)
    dark = light * rng.uniform(0.45, 0.7)
    return _lerp_colours(np.clip(0.75 * rings + 0.25 * grain, 0, 1), light, dark), False


def _dots_texture(rng, size):
    x, y = _grid(size)
    n = int(rng.integers(4, 14))
    radius = rng.uniform(0.15, 0.4)
    d = np.hypot(np.mod(x * n, 1.0) - 0.5, np.mod(y * n, 1.0) - 0.5)
    image = _lerp_colours((d < radius).astype(np.float64), random_colour(rng), random_colour(rng))
    return image, False


PROCEDURAL = {
    "noise": _noise_texture,
    "plaster": _plaster_texture,
    "plain": _plain_texture,
    "stripes": _stripes_texture,
    "tiles": _tiles_texture,
    "bricks": lambda rng, size: _tiles_texture(rng, size, brick=True),
    "checker": _checker_texture,
    "gradient": _gradient_texture,
    "wood": _wood_texture,
    "dots": _dots_texture,
}


def procedural_texture(rng: np.random.Generator, kind: str, size: int = TEXTURE_SIZE) -> Texture:
    """A procedural texture of ``kind`` (a key of :data:`PROCEDURAL`)."""
    image, plain = PROCEDURAL[kind](rng, size)
    return Texture(kind, _to_uint8(image), plain)


def photo_texture(rng: np.random.Generator, path: Path, size: int = TEXTURE_SIZE,
                  whole: bool = False, aspect: float = 1.0) -> Texture | None:
    """A texture cut from the photograph at ``path``.

    ``whole`` keeps most of the picture (posters; ``aspect`` = width / height of the poster
    so the picture is cropped, not squeezed); otherwise a random crop, rotation and colour
    change make each use look different. Grey photos are tinted. None if unreadable.
    """
    photo = _load_photo(str(path))
    if photo is None:
        return None
    h, w = photo.shape[:2]
    if whole:
        crop_h = h * rng.uniform(0.85, 1.0)
        crop_w = crop_h * aspect
        if crop_w > w:
            crop_w = w * rng.uniform(0.85, 1.0)
            crop_h = crop_w / aspect
    else:
        crop_h = crop_w = min(h, w) * rng.uniform(0.35, 1.0)
    top = rng.uniform(0, h - crop_h)
    left = rng.uniform(0, w - crop_w)
    crop = photo[int(top):int(top + crop_h), int(left):int(left + crop_w)]
    image = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    if not whole:
        image = np.rot90(image, int(rng.integers(4)))
        if rng.random() < 0.5:
            image = image[:, ::-1]
    is_grey = float(np.abs(image - image.mean(axis=2, keepdims=True)).mean()) < 0.01
    if is_grey and rng.random() < 0.8:
        image = image * (0.35 + 0.8 * random_colour(rng, saturation=(0.1, 0.6), value=(0.7, 1.0)))
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3)
    image = image * gain
    if whole:
        border = max(2, int(size * rng.uniform(0.02, 0.06)))
        frame_colour = random_colour(rng, saturation=(0.0, 0.3), value=(0.05, 0.95))
        image[:border], image[-border:] = frame_colour, frame_colour
        image[:, :border], image[:, -border:] = frame_colour, frame_colour
    return Texture(f"photo:{path.name}", _to_uint8(image), False)


# --------------------------------------------------------------------------------------
# A scene's set of textures

#: Procedural kinds preferred for each use, with weights; "photo" draws a photograph.
CATEGORY_CHOICES: dict[str, dict[str, float]] = {
    "wall": {"plaster": 1.5, "plain": 0.7, "photo": 2.5, "stripes": 1.5, "bricks": 1,
             "noise": 1, "tiles": 0.5, "gradient": 0.5, "dots": 0.3},
    "accent_wall": {"photo": 3, "stripes": 2, "bricks": 1.5, "noise": 1, "tiles": 1,
                    "gradient": 0.5, "dots": 0.5, "checker": 0.3},
    "floor": {"wood": 3, "tiles": 2, "photo": 2, "checker": 1, "noise": 1, "plain": 0.3},
    "ceiling": {"plaster": 3, "plain": 2, "tiles": 0.7, "noise": 0.3},
    "furniture": {"wood": 3, "photo": 2, "noise": 1.5, "plain": 1, "stripes": 1, "tiles": 0.5,
                  "gradient": 1, "checker": 0.5, "dots": 0.5},
    "clutter": {"photo": 4, "stripes": 1.5, "noise": 1, "checker": 1, "dots": 1, "gradient": 1,
                "plain": 0.5},
    "rug": {"photo": 2, "stripes": 2, "checker": 1, "dots": 1, "noise": 1, "tiles": 1},
}


class TextureSet:
    """The textures of one scene, drawn on demand; each gets a layer index.

    Args:
        rng: the scene's texture random generator.
        photos: photographs available (:meth:`PhotoSource.discover`).
        size: texture side in texels.
    """

    def __init__(self, rng: np.random.Generator, photos: PhotoSource, size: int = TEXTURE_SIZE):
        self.rng = rng
        self.photos = photos
        self.size = size
        self.textures: list[Texture] = []

    def _add(self, texture: Texture) -> int:
        self.textures.append(texture)
        return len(self.textures) - 1

    def new(self, category: str) -> int:
        """Layer index of a new texture suited to ``category`` (a key of
        :data:`CATEGORY_CHOICES`)."""
        choices = CATEGORY_CHOICES[category]
        kinds = list(choices)
        weights = np.array([choices[k] for k in kinds], dtype=np.float64)
        kind = kinds[int(self.rng.choice(len(kinds), p=weights / weights.sum()))]
        pool = self.photos.surface + (self.photos.objects if category == "clutter" else [])
        if kind == "photo" and pool:
            path = pool[int(self.rng.integers(len(pool)))]
            texture = photo_texture(self.rng, path, self.size)
            if texture is not None:
                return self._add(texture)
            kind = "noise"
        if kind == "photo":
            kind = "noise"
        return self._add(procedural_texture(self.rng, kind, self.size))

    def poster(self, aspect: float) -> int:
        """Layer index of a poster picture (a whole photograph, or procedural art)."""
        if self.photos.poster and self.rng.random() < 0.85:
            path = self.photos.poster[int(self.rng.integers(len(self.photos.poster)))]
            texture = photo_texture(self.rng, path, self.size, whole=True, aspect=aspect)
            if texture is not None:
                return self._add(texture)
        kind = str(self.rng.choice(["stripes", "gradient", "checker", "dots", "noise"]))
        return self._add(procedural_texture(self.rng, kind, self.size))

    def is_plain(self, layer: int) -> bool:
        return self.textures[layer].plain

    def stack(self) -> np.ndarray:
        """All layers as one (L, S, S, 3) uint8 array."""
        return np.stack([t.rgb for t in self.textures])

    def names(self) -> list[str]:
        return [t.name for t in self.textures]
