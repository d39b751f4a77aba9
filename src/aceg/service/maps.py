"""The maps a service offers: found once at start-up, each loaded at most once.

A map is a ``*.map`` file directly inside the maps folder; its name is the file name
without ``.map`` and must match :data:`NAME_PATTERN` (letters, digits, ``.``, ``_``,
``-``; no separators), so a request can only ever name one of these files: names are
looked up in a dictionary built at start-up, never joined onto a path.

Every map file is read and verified when the registry is built (:func:`aceg.model.map_file.load_map`:
content hash, metadata, tensors), which gives the listing (method, frames, ...). A map that
fails is never served and never stops the service: it is listed in
:attr:`MapRegistry.unavailable` with the reason (one line, without the server's folders),
as is a map whose localizer cannot be built (at :meth:`MapRegistry.preload` or on its first
request). The :class:`~aceg.localization.localizer.Localizer` of a map (encoder, regressor
or head) is built on first use, under a per-map lock, and then shared by all requests: the
localizer only runs forward passes in ``torch.inference_mode`` and poselib calls without
shared mutable state, so concurrent use from the worker threads is safe.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from aceg.errors import AcegError, AcegWarning
from aceg.model.map_file import load_map

log = logging.getLogger("aceg.service")

#: Allowed map names (the file name without ``.map``).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

MAP_SUFFIX = ".map"


@dataclass
class MapEntry:
    """One map file of the service.

    Attributes:
        name: public name (file name without ``.map``).
        path: the file.
        size: file size in bytes.
        method: "aceg" or "ace" (the map file's field); model: "anchors", "transformer"
            or "ace" (:attr:`aceg.model.map_file.MapData.model`); encoder: encoder name;
            frames: mapping images;
        scene: scene name stored in the map.
        verified: the map's content hash matched (False: a map written before maps carried
            one, served unverified).
    """

    name: str
    path: Path
    size: int
    method: str
    model: str
    encoder: str
    frames: int
    scene: str
    verified: bool = True
    _localizer: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def loaded(self) -> bool:
        return self._localizer is not None

    def localizer(self, factory):
        """The shared localizer, built with ``factory(path)`` on first call."""
        loc = self._localizer
        if loc is None:
            with self._lock:
                if self._localizer is None:
                    self._localizer = factory(self.path)
                loc = self._localizer
        return loc


class MapRegistry:
    """Map files of a folder (see module docstring).

    Args:
        folder: where the ``*.map`` files are.
        localizer_factory: ``path -> Localizer`` (default: ``Localizer(path)``).

    Attributes:
        entries: name -> :class:`MapEntry`, sorted by name: the maps served.
        unavailable: name -> why that map is not served (one line, folders left out).
        problems: one line per ``*.map`` file that was skipped or is served unverified, and
            why (for the server's log).
    """

    def __init__(self, folder: str | Path, localizer_factory=None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise AcegError(f"{self.folder}: maps folder not found")
        if localizer_factory is None:
            from aceg.localization.localizer import Localizer

            localizer_factory = Localizer
        self._factory = localizer_factory
        self.entries: dict[str, MapEntry] = {}
        self.unavailable: dict[str, str] = {}
        self.problems: list[str] = []
        self._guard = threading.Lock()
        for path in sorted(self.folder.glob(f"*{MAP_SUFFIX}")):
            if not path.is_file():
                continue
            name = path.name[: -len(MAP_SUFFIX)]
            if not NAME_PATTERN.match(name):
                self.problems.append(f"{path}: skipped (map names may only use letters, digits, "
                                     "'.', '_' and '-')")
                continue
            self._add(name, path)

    def _add(self, name: str, path: Path) -> None:
        """Read and verify map ``name`` at ``path``: an entry, or an unavailable map."""
        try:
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", AcegWarning)
                data = load_map(path)
        except AcegError as exc:
            self._set_unavailable(name, exc)
            return
        self.problems += [str(n.message) for n in notes if issubclass(n.category, AcegWarning)]
        self.entries[name] = MapEntry(name, path, path.stat().st_size, data.method, data.model,
                                      data.encoder, data.frames, data.scene, data.verified)

    def _set_unavailable(self, name: str, exc: AcegError) -> None:
        """Stop serving map ``name`` (if it was) and record why."""
        with self._guard:
            self.entries.pop(name, None)
            self.unavailable[name] = _without_folders(str(exc))
        self.problems.append(f"not served: {exc}")
        log.warning("map %s not served: %s", name, exc)

    def __len__(self) -> int:
        return len(self.entries)

    def snapshot(self) -> tuple[list[MapEntry], dict[str, str]]:
        """The served entries and the unavailable maps (name -> reason) as one consistent
        copy: a worker thread may move a map to unavailable while a request lists them."""
        with self._guard:
            return list(self.entries.values()), dict(self.unavailable)

    def get(self, name: str) -> MapEntry | None:
        """The entry called ``name`` (exact match), or None."""
        return self.entries.get(name) if isinstance(name, str) else None

    def localizer(self, name: str):
        """The shared localizer of map ``name`` (built on first use); :class:`AcegError` if
        the map is unavailable or its localizer cannot be built (the map is then listed as
        unavailable)."""
        entry = self.entries.get(name)
        if entry is None:
            raise AcegError(f"map {name!r} is not served: {self.unavailable.get(name, 'unknown')}")
        try:
            return entry.localizer(self._factory)
        except AcegError as exc:
            self._set_unavailable(name, exc)
            raise

    def preload(self) -> None:
        """Build every map's localizer now rather than on its first request; a map whose
        localizer cannot be built becomes unavailable, the others are served."""
        for name in list(self.entries):
            try:
                self.localizer(name)
            except AcegError:
                pass  # listed in unavailable, logged


def _without_folders(message: str) -> str:
    """``message`` with the folders of absolute paths left out (file names kept), so that
    a reason shown to clients does not expose the server's file system."""
    return re.sub(r"(?<![\w.~:/])/(?:[^\s/:]+/)+", "", message)
