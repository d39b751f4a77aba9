"""How many anchors a map keeps, and which: a budget that follows the place, and a
selection spread evenly over the place's surfaces.

Budget: ``--max-anchors N`` sets it; ``--map-size MB`` sets it from the map file's size
(each anchor costs its int8 key and three float32 coordinates); by default it is the
regressor's ``AnchorConfig.max_anchors`` or :data:`ANCHORS_PER_IMAGE` per mapping image,
whichever is larger, so that a large place is not squeezed into a small room's map.

Selection (:func:`balanced_subset`): when there are more candidates than the budget, a
random subset keeps anchors where the mapping images dwelt (many views of one corner) and
thins out places seen briefly. Instead, the candidates' points are binned into cubic
voxels sized so that about ``budget`` voxels are occupied, and the voxels are taken in
rounds: a random candidate of every voxel, then a second of every voxel that has one left,
and so on until the budget is met.
"""

from __future__ import annotations

import math

import numpy as np

from aceg.errors import AcegError

#: Default budget per mapping image, above the regressor's own default budget.
ANCHORS_PER_IMAGE = 64
#: Bytes of a map file per anchor besides its key's C int8 values: three float32.
POINT_BYTES = 12
#: Bisection steps on the voxel size of :func:`balanced_subset`.
VOXEL_STEPS = 12


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


def balanced_subset(points: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``budget`` of the (N, 3) ``points`` (metres), spread over
    space in voxel rounds (module docstring); all N indices when N <= budget. Points that
    coincide (the keypoints of one track) share a voxel, so a track is not kept more often
    than its place deserves. Deterministic for a ``seed``."""
    n = len(points)
    if n <= budget:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    extent = float((hi - lo).max())
    if extent <= 0:
        return np.sort(rng.permutation(n)[:budget])

    def voxel_keys(size: float) -> np.ndarray:
        cells = np.floor((points - lo) / size).astype(np.int64)
        sides = cells.max(0) + 1
        return (cells[:, 0] * sides[1] + cells[:, 1]) * sides[2] + cells[:, 2]

    # The largest voxel that still gives at least `budget` occupied voxels (or the finest
    # tried): bisection on a log scale between the whole extent and 1e-5 of it (at most
    # 1e5 voxels a side, so a voxel's key fits in 64 bits).
    small, large = math.log(extent * 1e-5), math.log(extent)
    for _ in range(VOXEL_STEPS):
        middle = 0.5 * (small + large)
        keys = np.sort(voxel_keys(math.exp(middle)))
        if 1 + np.count_nonzero(keys[1:] != keys[:-1]) >= budget:
            small = middle
        else:
            large = middle
    label = voxel_keys(math.exp(small))
    # Rank of each point within its voxel, in a random order: round r takes every voxel's
    # r-th point. Ties within a round are broken at random too.
    order = rng.permutation(n)
    by_voxel = order[np.argsort(label[order], kind="stable")]
    sorted_labels = label[by_voxel]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    counts = np.diff(np.r_[starts, n])
    rank = np.empty(n, dtype=np.int64)
    rank[by_voxel] = np.arange(n) - np.repeat(starts, counts)
    tie = rng.random(n)
    keep = np.lexsort((tie, rank))[:budget]
    return np.sort(keep)
