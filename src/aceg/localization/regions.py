"""Place regions: a coarse vote before the fine read-out, for places with look-alike rooms.

In a floor of offices furnished alike, a query patch finds anchors of the same desk in
several rooms about equally similar; its best one lands in a random one of them, so the
RANSAC inliers split between the rooms and the pose is lost or wrong. Here the anchors of
a large map are grouped by their points into regions (k-means in 3-D, about
:data:`ANCHORS_PER_REGION` anchors each; about a room of a place's map), each patch's
:data:`CANDIDATES` best anchors are searched once, and the regions that most patches' best
anchors fall in are voted for. Then every patch reads its best anchor *within* a voted
region, so all of them tell one room's story, and RANSAC runs once per voted region
(:data:`HYPOTHESES` of them) beside the plain read-out; the localizer keeps the pose with
the most inliers. A map smaller than two regions has no regions (the plain read-out only).

Points are in the map's centred frame (metres), as the code stores them.
"""

from __future__ import annotations

import numpy as np

#: Anchors per region (about a room of a large place's map at 64 anchors an image); a map
#: of fewer than twice as many (a room's, at the default budget) has no regions.
ANCHORS_PER_REGION = 16000
#: Best anchors searched per query patch, among which each region's best is read.
CANDIDATES = 16
#: Voted regions tried (each one more RANSAC).
HYPOTHESES = 3


class PlaceRegions:
    """The region of every anchor of a map (module docstring).

    Attributes:
        labels: (N,) int64 region of each anchor.
        count: number of regions.
    """

    def __init__(self, labels: np.ndarray, count: int) -> None:
        self.labels = labels
        self.count = count

    @classmethod
    def of_points(cls, points: np.ndarray, anchors_per_region: int | None = None,
                  seed: int = 0) -> PlaceRegions | None:
        """Regions of anchors at (N, 3) ``points`` by k-means (faiss) into
        N // ``anchors_per_region`` groups (default :data:`ANCHORS_PER_REGION`); None when
        that is fewer than two."""
        count = len(points) // (anchors_per_region or ANCHORS_PER_REGION)
        if count < 2:
            return None
        import faiss

        data = np.ascontiguousarray(points, dtype=np.float32)
        kmeans = faiss.Kmeans(3, count, niter=20, seed=seed)
        kmeans.train(data)
        labels = kmeans.index.search(data, 1)[1][:, 0].astype(np.int64)
        return cls(labels, count)

    def voted(self, sims: np.ndarray, index: np.ndarray, hypotheses: int = HYPOTHESES) -> list[int]:
        """The ``hypotheses`` regions with most votes: each patch votes for the region of
        its best anchor, weighted by that anchor's (positive) similarity. ``sims``,
        ``index``: (P, K) similarities and anchor indices, best first."""
        votes = np.bincount(self.labels[index[:, 0]], weights=np.maximum(sims[:, 0], 0.0),
                            minlength=self.count)
        order = np.argsort(-votes, kind="stable")
        return [int(r) for r in order[:hypotheses] if votes[r] > 0]

    def best_in(self, region: int, sims: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each patch's best anchor within ``region``: (P,) anchor indices and (P,) their
        similarities, -1 and -inf for a patch none of whose candidates lies there."""
        inside = (self.labels[index] == region) & (sims > -1.0)
        column = np.argmax(inside, axis=1)
        rows = np.arange(len(index))
        found = inside[rows, column]
        return (np.where(found, index[rows, column], -1),
                np.where(found, sims[rows, column], -np.inf))
