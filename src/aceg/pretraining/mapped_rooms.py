"""Training rooms mapped exactly as ``aceg map`` maps a scene, for the anchor model's query
pre-training (:mod:`aceg.pretraining.anchor_embedding`).

A room is a folder written by ``aceg synth``: ``mapping/`` and query splits (other light,
other viewpoints) with rendered depth. Its anchors come from the mapping images through
the mapper's own steps (track triangulation, the one-pass buffer, :func:`anchor_code`:
the same subset under the same budget); its query splits are prepared at the same working
size, with their depth-derived scene coordinates in the map's centred frame as ground truth.
What a pre-training loop derives from a room is cached per room (:func:`cached_room_file`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aceg.data.images import DEFAULT_SHORT_SIDE
from aceg.data.readers import read_scene
from aceg.errors import AcegError
from aceg.io import atomic_path
from aceg.mapping.anchor_map import anchor_code
from aceg.mapping.buffer import TrainingBuffer, build_buffer
from aceg.mapping.triangulation import TRIANGULATION_VERSION, triangulated_depth_maps
from aceg.model.anchors import AnchorRegressor

#: Query splits of an ``aceg synth`` room that pre-training reads, in this order.
QUERY_SPLITS = ("query_same", "query_light", "query_view")

#: Working short side (px) the rooms are prepared at: ``aceg map``'s default.
ROOM_SHORT_SIDE = DEFAULT_SHORT_SIDE


@dataclass
class MappedRoom:
    """One room's map: ``code`` (N, C + 3) as :func:`anchor_code` builds it (keys in the
    model's embedding, rounded to 8 bits; points in metres, centred world frame), the
    ``centre`` (3,) subtracted from world coordinates, and the working ``short_side`` (px)."""

    root: Path
    code: torch.Tensor
    centre: np.ndarray
    short_side: int


def map_room(root: Path, model: AnchorRegressor, encoder, short_side: int = ROOM_SHORT_SIDE) -> MappedRoom:
    """Map ``root/mapping`` as ``aceg map`` does, with ``model``'s embedding and budget; a
    room that cannot be mapped is an :class:`AcegError` naming it."""
    mapping = read_scene(Path(root) / "mapping")
    short = mapping.working_short_side(short_side)
    depth_maps, _ = triangulated_depth_maps(mapping, short, encoder.stride, progress=False)
    buffer = build_buffer(mapping, encoder, short, 1, None, None, False, 0, depth_maps=depth_maps)
    with warnings.catch_warnings():  # the mapping CLI's advice; a training room just counts less
        warnings.filterwarnings("ignore", message="only .* mapping patches have a 3-D point")
        try:
            code, _ = anchor_code(model, buffer, torch.Generator().manual_seed(0))
        except AcegError as exc:
            raise AcegError(f"{root}: {exc}") from None
    return MappedRoom(Path(root), code, buffer.centre, short)


def query_buffers(room: MappedRoom, encoder, splits=QUERY_SPLITS) -> Iterator[tuple[str, TrainingBuffer]]:
    """(split, buffer) for each of ``splits`` the room has: every patch of its images
    (features, pixels, cameras) with the depth-derived scene coordinate as ``target``
    (``target_valid`` where depth exists), in the map's centred frame."""
    for sp in splits:
        if (room.root / sp).is_dir():
            yield sp, build_buffer(read_scene(room.root / sp), encoder, room.short_side, 1, None, None,
                                   True, 0, centre=room.centre)


def files_fingerprint(root: Path) -> str:
    """16 hex digits over the relative path, size and modification time of every file under
    ``root``: a room written again at the same place gets another fingerprint."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached_room_file(cache_dir: Path, root: Path, settings: dict[str, str],
                     compute: Callable[[], dict[str, torch.Tensor]]) -> Path:
    """The file of ``cache_dir`` holding ``compute()``'s tensors for the room at ``root``:
    ``<name>-<hash of the folder's path>.safetensors`` (so adding or removing rooms leaves
    the others' files valid), stamped with the folder, its :func:`files_fingerprint`,
    :data:`TRIANGULATION_VERSION` and ``settings``. Reused when the stamp matches;
    computed again and written atomically otherwise (also when the file is unreadable)."""
    where = str(Path(root).resolve())
    path = Path(cache_dir) / f"{Path(root).name}-{hashlib.sha256(where.encode()).hexdigest()[:8]}.safetensors"
    stamp = {"root": where, "files": files_fingerprint(Path(root)),
             "triangulation": str(TRIANGULATION_VERSION), **settings}
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as fh:
                if (fh.metadata() or {}) == stamp:
                    return path
        except Exception:  # unreadable (e.g. cut short): compute again
            pass
    tensors = compute()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=stamp)
    return path
