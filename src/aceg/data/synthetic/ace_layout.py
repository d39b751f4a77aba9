"""Writing one split of a synthetic scene in the ACE / DSAC* layout.

``FOLDER/rgb/NAME.png`` (8-bit RGB), ``FOLDER/poses/NAME.txt`` (4x4 camera-to-world, OpenCV
axes, metres), ``FOLDER/calibration/NAME.txt`` (3x3 K, pixels) and ``FOLDER/depth/NAME.png``
(16-bit millimetres of camera z, 0 = invalid), as read by :mod:`aceg.data.readers.ace` and
:func:`aceg.data.images.load_depth`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from aceg.errors import AcegError

#: Largest depth a 16-bit millimetre PNG holds (metres); farther pixels are written as 0.
MAX_DEPTH_M = 65.535


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) float metres -> uint16 millimetres (rounded), 0 where invalid or too far."""
    depth_m = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth_m) & (depth_m > 0) & (depth_m <= MAX_DEPTH_M)
    millimetres = np.zeros(depth_m.shape, np.uint16)
    millimetres[valid] = np.rint(depth_m[valid] * 1000.0).astype(np.uint16)
    return millimetres


def format_matrix(matrix: np.ndarray) -> str:
    """Rows of a matrix as text, one row a line, each number the shortest text that reads
    back to the same float64."""
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in np.asarray(matrix))


class AceSplitWriter:
    """Writes frames into one split folder (created with its four sub-folders).

    PNG encoding runs on a background thread (OpenCV releases the GIL) so it overlaps
    with rendering; :meth:`close` (or leaving the ``with`` block) waits for it and raises
    the first write error.
    """

    #: Frames allowed to wait for writing before :meth:`add` blocks.
    MAX_PENDING = 8

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        for sub in ("rgb", "poses", "calibration", "depth"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future] = []

    def __enter__(self) -> AceSplitWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def add(self, name: str, rgb: np.ndarray, depth_m: np.ndarray, cam_to_world: np.ndarray,
            K: np.ndarray) -> None:
        """Write frame ``name``: rgb (H, W, 3) uint8, depth (H, W) metres, pose, K."""
        (self.folder / "poses" / f"{name}.txt").write_text(format_matrix(cam_to_world))
        (self.folder / "calibration" / f"{name}.txt").write_text(format_matrix(K))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        millimetres = depth_to_millimetres(depth_m)
        while len(self._pending) >= self.MAX_PENDING:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write_images, name, bgr, millimetres))

    def _write_images(self, name: str, bgr: np.ndarray, millimetres: np.ndarray) -> None:
        for path, image in ((self.folder / "rgb" / f"{name}.png", bgr),
                            (self.folder / "depth" / f"{name}.png", millimetres)):
            if not cv2.imwrite(str(path), image):
                raise AcegError(f"{path}: cannot write image")

    def close(self) -> None:
        """Wait for every pending write; raise the first error."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
