"""How many anchors a map keeps: a budget that follows the place.

``--max-anchors N`` sets it; ``--map-size MB`` sets it from the map file's size (each
anchor costs its int8 key and three float32 coordinates); by default it is the regressor's
``AnchorConfig.max_anchors`` or :data:`ANCHORS_PER_IMAGE` per mapping image, whichever is
larger, so that a large place is not squeezed into a small room's map. Beyond the budget
mapping keeps a random subset of the candidates: anchors where the mapping images dwelt,
as queries are likely to (a subset spread evenly over space localized fewer far views;
docs/experiments.md).
"""

from __future__ import annotations

import math

from aceg.errors import AcegError

#: Default budget per mapping image, above the regressor's own default budget.
ANCHORS_PER_IMAGE = 64
#: Bytes of a map file per anchor besides its key's C int8 values: three float32.
POINT_BYTES = 12


def check_budget_settings(max_anchors: int | None, map_size_mb: float | None) -> None:
    """:class:`AcegError` unless at most one of the two is given, and it is positive."""
    if max_anchors is not None and map_size_mb is not None:
        raise AcegError("give --max-anchors or --map-size, not both")
    if max_anchors is not None and max_anchors < 1:
        raise AcegError(f"max_anchors (--max-anchors) must be positive, got {max_anchors}")
    if map_size_mb is not None and not (math.isfinite(map_size_mb) and map_size_mb > 0):
        raise AcegError(f"--map-size must be a positive number of megabytes, got {map_size_mb}")


def anchor_budget(images: int, key_dim: int, regressor_budget: int,
                  max_anchors: int | None = None, map_size_mb: float | None = None) -> int:
    """Anchors a map of ``images`` mapping images keeps at most (module docstring):
    ``max_anchors`` if given, else the anchors ``map_size_mb`` megabytes (10^6 bytes) hold
    at ``key_dim`` + :data:`POINT_BYTES` bytes each, else
    ``max(regressor_budget, ANCHORS_PER_IMAGE * images)``."""
    check_budget_settings(max_anchors, map_size_mb)
    if max_anchors is not None:
        return int(max_anchors)
    if map_size_mb is not None:
        budget = int(map_size_mb * 1e6 // (key_dim + POINT_BYTES))
        if budget < 1:
            raise AcegError(f"--map-size {map_size_mb} MB holds no anchor ({key_dim + POINT_BYTES} "
                            "bytes each)")
        return budget
    return max(int(regressor_budget), ANCHORS_PER_IMAGE * int(images))
