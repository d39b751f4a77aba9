"""Resumable mapping: the finished work of a mapping run, kept beside its map file.

Mapping a place of thousands of images takes many minutes; a run that is interrupted (a
killed process, a full disk, a reboot) should not start from zero. The anchor model's
mapping (:func:`aceg.mapping.anchor_map.map_anchors` with ``resume``) keeps its work in the
folder ``.<map name>.partial/`` beside the map file, chunk by chunk as each is done:

* ``keypoints-NNNNN``: the XFeat keypoints of :data:`CHUNK` mapping images;
* ``matches-NNNNN``: the LighterGlue matches of :data:`CHUNK` neighbouring image pairs;
* ``patches-NNNNN``: the encoded patch cells (with a 3-D point) of :data:`CHUNK` images.

Each is a safetensors file written atomically, so a chunk is either whole or absent. A
run with the same inputs and settings (the :func:`fingerprint`: images, poses,
intrinsics, working size, triangulation settings, encoder, aceg's version) reads the
chunks back instead of computing them again; a folder of other inputs is emptied first.
The folder is removed once the map is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from aceg import __version__
from aceg.data.scene import Scene
from aceg.io import atomic_path

#: Images (or image pairs) per chunk: what an interruption can lose at most.
CHUNK = 256
#: Raised whenever what a chunk holds changes meaning.
CHECKPOINT_VERSION = 1


def partial_folder(map_path: str | Path) -> Path:
    """The folder that holds the finished work of mapping to ``map_path``."""
    map_path = Path(map_path)
    return map_path.parent / f".{map_path.name}.partial"


def discard_partial(map_path: str | Path) -> None:
    """Remove the finished work an earlier run to ``map_path`` left (``--restart``)."""
    shutil.rmtree(partial_folder(map_path), ignore_errors=True)


def _file_stamp(path) -> list | None:
    """[path, size, modification time] of a file, None for no file."""
    if path is None:
        return None
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def fingerprint(scene: Scene, **settings) -> str:
    """A digest of everything the checkpointed work depends on: each frame's image and
    depth map (path, size and modification time), pose and intrinsics, the chunk size, the
    triangulation's version and ``settings`` (values, or dataclasses, made JSON)."""
    from aceg.mapping.triangulation import TRIANGULATION_VERSION

    frames = []
    for f in scene.frames:
        pose = None if f.cam_to_world is None else np.round(f.cam_to_world, 9).tolist()
        frames.append([_file_stamp(f.image_path), _file_stamp(f.depth_path), pose,
                       asdict(f.intrinsics) if f.intrinsics is not None else None])
    plain = {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in settings.items()}
    text = json.dumps({"version": CHECKPOINT_VERSION, "aceg": __version__, "chunk": CHUNK,
                       "triangulation": TRIANGULATION_VERSION, "frames": frames,
                       "settings": plain}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class MappingCheckpoint:
    """The chunks of one mapping run in ``folder`` (module docstring), for the inputs whose
    :func:`fingerprint` is ``digest``. ``reused`` counts the chunks read back."""

    def __init__(self, folder: str | Path, digest: str) -> None:
        self.folder = Path(folder)
        self.digest = digest
        self.reused = 0
        stamp = self.folder / "fingerprint.json"
        same = False
        if stamp.is_file():
            try:
                same = json.loads(stamp.read_text()).get("digest") == digest
            except (OSError, ValueError):
                same = False
        if self.folder.exists() and not same:
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not same:
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps({"digest": digest}))
        #: Chunks already in the folder when the run started.
        self.found = len(list(self.folder.glob("*.safetensors")))

    def load(self, name: str, items: int, count: str) -> dict[str, np.ndarray] | None:
        """The arrays of chunk ``name``, or None when it is not (or not readably) there or
        its array ``count`` does not hold ``items`` rows (the images or pairs it covers)."""
        path = self.folder / f"{name}.safetensors"
        if not path.is_file():
            return None
        try:
            arrays = load_file(path)
        except Exception:  # a damaged chunk is computed again
            return None
        if count not in arrays or len(arrays[count]) != items:
            return None
        self.reused += 1
        return arrays

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Write chunk ``name`` atomically."""
        with atomic_path(self.folder / f"{name}.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))

    def remove(self) -> None:
        """Delete the folder (the map is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def chunks(count: int) -> list[tuple[int, range]]:
    """(chunk number, the indices of that chunk) covering ``range(count)`` by :data:`CHUNK`."""
    return [(c, range(start, min(start + CHUNK, count)))
            for c, start in enumerate(range(0, count, CHUNK))]


def kept_chunks(checkpoint: MappingCheckpoint | None, prefix: str, count: int, count_key: str,
                compute: Callable[[range], dict[str, np.ndarray]],
                ) -> Iterator[tuple[range, dict[str, np.ndarray], bool]]:
    """(indices, arrays, read back) for each chunk of ``range(count)`` (:func:`chunks`): the
    arrays ``checkpoint`` kept as chunk ``prefix-NNNNN`` (their ``count_key`` array holding
    one row per index), else those of ``compute(indices)``, which are then kept. Without a
    checkpoint every chunk is computed. Callers read both kinds the same way, so the path
    of a resumed run is the path of every run."""
    for number, indices in chunks(count):
        name = f"{prefix}-{number:05d}"
        stored = None if checkpoint is None else checkpoint.load(name, len(indices), count_key)
        if stored is not None:
            yield indices, stored, True
            continue
        arrays = compute(indices)
        if checkpoint is not None:
            checkpoint.save(name, arrays)
        yield indices, arrays, False
