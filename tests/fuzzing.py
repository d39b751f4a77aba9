"""Shared by the property-based (hypothesis) fuzz tests: how many inputs to try, a count
of the inputs tried per target and outcome, and the COLMAP text models that they and the
reader hardening tests start from.

``ACEG_FUZZ_EXAMPLES=N`` sets every fuzz test's ``max_examples`` to N (default: each test's
own small figure, so that CI runs each in seconds). With ``ACEG_FUZZ_COUNT_FILE=PATH`` the
counts are added to the JSON file at PATH when the test process ends;
``benchmarks/fuzz_robustness.py`` runs the long form that way and prints them.
"""

from __future__ import annotations

import atexit
import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

from aceg.data.camera import rotation_to_quaternion

#: target -> outcome -> inputs tried
COUNTS: dict[str, Counter] = defaultdict(Counter)

#: Outcomes that a fuzz test accepts: refused with an AcegError, or read with the values
#: the input holds (identical to the unmutated file's, or a valid reading of an edit).
GOOD_OUTCOMES = ("refused", "identical", "valid")


def examples(default: int) -> int:
    """``max_examples`` of a fuzz test: ``ACEG_FUZZ_EXAMPLES`` when set, else ``default``."""
    return int(os.environ.get("ACEG_FUZZ_EXAMPLES") or default)


def fuzz_settings(default: int, **kwargs) -> settings:
    """Hypothesis settings of a fuzz test: :func:`examples` inputs, reproducible, no deadline."""
    return settings(max_examples=examples(default), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large],
                    **kwargs)


def record(target: str, outcome: str) -> None:
    """Count one input tried on ``target`` with ``outcome`` (one of :data:`GOOD_OUTCOMES`,
    or a failure such as "traceback" or "wrong")."""
    COUNTS[target][outcome] += 1


def colmap_image_line(image_id: int, cam_to_world: np.ndarray, camera_id: int, name: str) -> str:
    """An image's first line in COLMAP's ``images.txt``,
    ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``: the world-to-camera rotation of the
    4x4 camera-to-world pose as a quaternion and its translation, numbers as ``repr``."""
    world_to_camera = np.linalg.inv(cam_to_world)
    q = rotation_to_quaternion(world_to_camera[:3, :3])
    numbers = " ".join(repr(float(v)) for v in (*q, *world_to_camera[:3, 3]))
    return f"{image_id} {numbers} {camera_id} {name}"


def write_colmap_text_model(model: Path, cameras: Sequence[str], images: Sequence[str],
                            points3d: Sequence[str] = ("# points",)) -> Path:
    """Write a COLMAP text model into the folder ``model`` (created with its parents):
    ``cameras.txt``, ``images.txt`` (two lines per image: :func:`colmap_image_line`, then
    the POINTS2D line) and ``points3D.txt``, each from its lines, comments included, and
    ending in a newline. Returns ``model``."""
    model.mkdir(parents=True, exist_ok=True)
    for name, lines in (("cameras.txt", cameras), ("images.txt", images),
                        ("points3D.txt", points3d)):
        (model / name).write_text("\n".join(lines) + "\n")
    return model


@atexit.register
def _write_counts() -> None:
    path = os.environ.get("ACEG_FUZZ_COUNT_FILE")
    if not path or not COUNTS:
        return
    file = Path(path)
    merged: dict[str, dict[str, int]] = json.loads(file.read_text()) if file.is_file() else {}
    for target, counts in COUNTS.items():
        into = merged.setdefault(target, {})
        for outcome, n in counts.items():
            into[outcome] = into.get(outcome, 0) + n
    file.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
