"""A tiny ACE map of the textured wall + floor corner of :mod:`planar_scenes`, built once
per test session (shared by the service and export tests).

The map is deliberately small and quickly trained (a narrow ACE head, few steps on 160x120
images at short side 120): it localizes its own mapping images to within ~10 cm, which is
all the service and export tests need (they compare the service with the Python
localizer, not against ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aceg.data.scene import Scene
from aceg.data.writers import write_ace_scene
from aceg.mapping.mapper import map_scene
from aceg.model.ace_head import AceHeadConfig
from planar_scenes import corner_scene

SIZE = (160, 120)
SHORT_SIDE = 120


@dataclass
class TinyMap:
    """map_path: the map file in its own folder (the service's maps folder); scene: the
    posed frames it was built from (PNG files); ace_dir: the same scene in ACE layout."""

    map_path: Path
    scene: Scene
    ace_dir: Path

    @property
    def maps_dir(self) -> Path:
        return self.map_path.parent


_CACHE: dict[str, TinyMap] = {}


def tiny_map(tmp_path_factory, frames: int = 8) -> TinyMap:
    key = f"corner-{frames}"
    if key not in _CACHE:
        root = tmp_path_factory.mktemp("tiny_map")
        scene = corner_scene(root / "images", n=frames, size=SIZE, name="corner")
        ace_dir = root / "corner-ace"
        write_ace_scene(scene, ace_dir)
        map_path = root / "maps" / "corner.map"
        map_scene(scene, map_path, model="ace", preset="fast", short_side=SHORT_SIDE,
                  iterations=120, batch_size=1024, passes=1,
                  head_config=AceHeadConfig(width=128, blocks=1), progress=False)
        _CACHE[key] = TinyMap(map_path, scene, ace_dir)
    return _CACHE[key]
