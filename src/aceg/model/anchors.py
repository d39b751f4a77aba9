"""Anchor map codes: ACE-G's cross-attention with 3-D points as the values.

The map-code transformer (:mod:`aceg.model.regressor`) fits its mapping views but carries
little of that fit to other viewpoints and light. This model keeps the same contract (each
patch is an independent query that cross-attends to a per-scene map code; output: a scene
coordinate and a log-uncertainty per patch) with a code whose tokens are *anchors*: one
per mapping patch whose 3-D point the mapping images' poses determine (triangulated
keypoints, or a depth map when the scene has one).

- A token is a row of the code, ``(N, C + 3)``: its attention key (C channels, unit
  length: the scene-agnostic embedding of the anchor patch's encoder feature) and its
  value, the anchor's scene coordinate (metres, **centred** world frame: world minus the
  scene centre stored with the map).
- A query patch embeds its feature the same way, attends to the ``top_k`` anchors of
  highest cosine similarity (softmax at the learned temperature) and returns the
  attention-weighted mean of their points. Patches never see each other.
- Uncertainty: ``log_unc`` grows as the margin between the best and the second-best
  cosine similarity shrinks (Lowe's ratio test in another guise: a patch that two anchors
  fit about equally well is an ambiguous correspondence). It is a ranking for the
  localizer's filter (:func:`aceg.localization.localizer.confident_mask`), on the log-pixel
  scale of the transformer's (:mod:`aceg.model.common`), not a calibrated one.

The scene-agnostic weights are the embedding: a residual MLP on the unit-length encoder
feature, whose last layer starts at zero (the identity: raw-descriptor attention), and the
temperature. Query pre-training (:mod:`aceg.pretraining.anchor_embedding`) trains the
embedding across scenes against the anchors a mapping run builds, with the map's other
anchors as negatives, so that a patch seen in other light or from another viewpoint
attends to the anchors at its own surface point; the shipped default weights are such an
embedding, and the identity embedding ships as ``anchors-identity-xfeat.safetensors``.
Mapping builds the code from the mapping images (:func:`aceg.mapping.mapper.map_scene`).

The code holds, per anchor, an embedded descriptor and a point: a sparse descriptor map,
like a structure-based method's, read through attention; its size grows with the number
of anchors (``max_anchors`` x (C int8 + 3 float32) bytes). Keys are kept at 8 bits
(:func:`quantize_keys`): :meth:`AnchorRegressor.make_code` rounds them, so a code in
memory reads as its map file does (bit for bit on the CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from aceg.model.common import LOG_UNC_MAX, LOG_UNC_MIN, weights_hash

#: Value of ``kind`` in a regressor checkpoint's configuration for this model.
ANCHOR_KIND = "anchors"
#: What an anchor map's anchors are (``MapData.anchor_points``): "cells", one per mapping
#: patch cell with a 3-D point, read by the query's patch cells; "keypoints", one per
#: triangulated mapping keypoint, read by the query's keypoints. The first is the default.
ANCHOR_POINTS = ("cells", "keypoints")
#: Anchors searched per patch for the margin to another point
#: (:meth:`AnchorRegressor.forward` with ``distinct_points``): a track seen in more mapping
#: images than this fills them all with its own point.
MARGIN_DEPTH = 8


@dataclass(frozen=True)
class AnchorConfig:
    """Sizes of the anchor model.

    Attributes:
        feature_dim: channels C of the encoder features (and of the anchor keys).
        hidden: hidden width of the embedding's residual MLP.
        top_k: anchors each patch attends to (1: its nearest anchor's point).
        temperature: initial softmax temperature over cosine similarities (learned).
        max_anchors: anchors a map keeps at most (a random subset beyond that): the
            mapping budget, not part of the identity (a map with fewer anchors reads the
            same way). The default keeps a map under 2 MB (8-bit keys, float32 points: 76
            bytes an anchor at C = 64).
        chunk: query patches per similarity block (chunk x N floats): small blocks stay in
            the CPU's cache between the product and the top-k. Cost only.
        max_queries: patches of one call that are read at most: beyond that, an evenly
            spaced subset (in the order given, i.e. raster order for an image) and NaN
            coordinates for the others, which the localizer drops. Bounds the query time:
            a 480x640 image has 4,800 patches, and each costs N x C multiply-adds; RANSAC
            needs far fewer correspondences.
        search: how a patch finds its most similar anchors: "exact" (against every anchor)
            or "lists" (an inverted file, faiss's ``IndexIVFFlat``: the anchors are grouped
            once per code by k-means into lists of about ``list_size``, and a patch
            searches only the ``lists_probed`` lists whose centroids are most similar to
            it; approximate, and used only when the code has more than 4 lists' worth of
            anchors). Cost only, like ``chunk``: maps stay valid.
        list_size, lists_probed: see ``search``.
    """

    feature_dim: int = 64
    hidden: int = 128
    top_k: int = 1
    temperature: float = 0.05
    max_anchors: int = 24576
    chunk: int = 256
    max_queries: int = 2048
    search: str = "lists"
    list_size: int = 128
    lists_probed: int = 16
    kind: str = ANCHOR_KIND

    def __post_init__(self) -> None:
        if self.kind != ANCHOR_KIND:
            raise ValueError(f"AnchorConfig kind must be {ANCHOR_KIND!r}")
        if min(self.top_k, self.max_anchors, self.chunk, self.max_queries) < 1:
            raise ValueError("top_k, max_anchors, chunk and max_queries must be positive")
        if self.search not in ("exact", "lists"):
            raise ValueError(f"AnchorConfig search must be 'exact' or 'lists', got {self.search!r}")
        if min(self.list_size, self.lists_probed) < 1:
            raise ValueError("AnchorConfig list_size and lists_probed must be positive")

    @property
    def code_width(self) -> int:
        """Columns of a code row: key (feature_dim) then point (3)."""
        return self.feature_dim + 3

    def accepts_code(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 2 and shape[0] >= 1 and shape[1] == self.code_width

    def code_description(self) -> str:
        return f"(N, {self.code_width})"

    def to_dict(self) -> dict:
        return asdict(self)

    def identity_dict(self) -> dict:
        """Fields hashed into the identity: the ones that change what a map means."""
        d = asdict(self)
        for cost_only in ("chunk", "max_queries", "search", "list_size", "lists_probed", "max_anchors"):
            del d[cost_only]  # maps stay valid
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AnchorConfig:
        """The configuration a regressor or map file records. Files written while an
        experimental learned read-out existed also record ``readout`` ("nearest" for every
        shipped model), ``candidates`` and ``readout_hidden``: ignored for "nearest", which
        reads and hashes as this model does; a learned read-out is refused (ValueError)."""
        if d.get("readout", "nearest") != "nearest":
            raise ValueError(f"anchor read-out {d['readout']!r} is not supported (only 'nearest')")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def quantize_keys(keys: torch.Tensor) -> torch.Tensor:
    """(N, C) float keys -> (N, C) int8: each row scaled so that its largest component is
    +-127, then rounded. A key's length is not kept (keys are unit length), so no scale is
    stored; :func:`dequantize_keys` undoes it up to rounding, and quantizing its output
    gives the same integers back. Cosines move by well under 0.01 (64 channels)."""
    keys = keys.detach().float()
    if not torch.isfinite(keys).all():
        raise ValueError("anchor keys hold NaN or infinite values")
    scale = keys.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(keys / scale).clamp(-127, 127).to(torch.int8)


def dequantize_keys(quantized: torch.Tensor) -> torch.Tensor:
    """(N, C) int8 keys -> (N, C) float32 unit-length keys."""
    return F.normalize(quantized.float(), dim=1)


class AnchorLists:
    """Inverted file over a code's anchor keys (``AnchorConfig.search = "lists"``): a faiss
    ``IndexIVFFlat`` on inner products, its lists made by faiss's k-means of the (N, C)
    unit keys (fixed seed, so the same code always gets the same lists). The search runs
    on the CPU whatever the keys' device, on as many threads as torch uses."""

    def __init__(self, index) -> None:
        self.index = index

    @classmethod
    def build(cls, keys: torch.Tensor, n_lists: int, iterations: int = 8, seed: int = 0) -> AnchorLists:
        """The inverted file of (N, C) unit ``keys`` in ``n_lists`` lists (``iterations``
        rounds of k-means, seeded with ``seed``)."""
        import faiss

        data = keys.detach().float().cpu().contiguous().numpy()
        dim = data.shape[1]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter, index.cp.seed = iterations, seed
        index.cp.min_points_per_centroid = 1  # small codes: no warning, lists as asked
        faiss.omp_set_num_threads(torch.get_num_threads())
        index.train(data)
        index.add(data)
        return cls(index)

    def search(self, queries: torch.Tensor, k: int, probed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities (P, k) and anchor indices (P, k) of each of the (P, C) ``queries``'
        k best anchors among its ``probed`` nearest lists, best first (similarity -1 and the
        best anchor's index where fewer than k anchors were searched)."""
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
        self.index.nprobe = min(probed, self.index.nlist)
        q = queries.detach().float().cpu().contiguous().numpy()
        sims, index = self.index.search(q, k)
        best_s = torch.from_numpy(sims).to(queries.device)
        best_i = torch.from_numpy(index).to(queries.device)
        missing = best_i < 0
        best_s = best_s.masked_fill(missing, -1.0)
        best_i = torch.where(missing, best_i[:, :1].clamp(min=0).expand(-1, k), best_i)
        return best_s, best_i


def runner_up_elsewhere(sims: torch.Tensor, index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(P,) the highest of each row of ``sims`` (P, k), best first, whose anchor (``index``
    (P, k) into ``points`` (N, 3)) lies at another point than the row's best anchor; -1
    where none of the k does."""
    found = points[index]  # (P, k, 3)
    elsewhere = (found != found[:, :1]).any(dim=2)
    return torch.where(elsewhere, sims, sims.new_full((), -1.0)).amax(dim=1)


class AnchorRegressor(nn.Module):
    """Anchor model (module docstring).

    ``forward(features (P, C), code (N, C + 3)) -> (coords (P, 3), log_unc (P,))``, coords
    in metres relative to the scene centre.
    """

    def __init__(self, config: AnchorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AnchorConfig()
        c = config.feature_dim
        self.residual = nn.Sequential(nn.Linear(c, config.hidden), nn.GELU(), nn.Linear(config.hidden, c))
        nn.init.zeros_(self.residual[2].weight)
        nn.init.zeros_(self.residual[2].bias)
        self.log_temperature = nn.Parameter(torch.tensor([math.log(config.temperature)]))  # (1,)
        self._lists_cache: list[tuple[torch.Tensor, int, AnchorLists]] = []  # see anchor_lists

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(P, C) encoder features (any dtype) -> (P, C) float32 unit-length keys/queries."""
        x = F.normalize(features.float(), dim=-1)
        return F.normalize(x + self.residual(x), dim=-1)

    def make_code(self, features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Code of anchors with encoder ``features`` (M, C) at centred ``points`` (M, 3); the
        keys rounded to 8 bits, as a map file stores them (:func:`quantize_keys`)."""
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(f"anchor features must be (M, {self.config.feature_dim}), got "
                             f"{tuple(features.shape)}")
        if points.shape != (features.shape[0], 3):
            raise ValueError(f"anchor points must be ({features.shape[0]}, 3), got {tuple(points.shape)}")
        if features.shape[0] == 0:
            raise ValueError("a map code needs at least one anchor")
        with torch.no_grad():
            keys = dequantize_keys(quantize_keys(self.embed(features.to(self.log_temperature.device))))
        return torch.cat([keys, points.float().to(keys.device)], dim=1)

    def attend(self, queries: torch.Tensor, keys: torch.Tensor, k: int | None = None,
               lists: AnchorLists | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities (P, k) and indices (P, k) of each query's k best anchors,
        best first, k = max(``top_k``, 2) by default (the second feeds the uncertainty) but
        at most N; computed ``chunk`` queries at a time, or searched in ``lists``."""
        k = min(k if k is not None else max(self.config.top_k, 2), keys.shape[0])
        if lists is not None:
            return lists.search(queries, k, self.config.lists_probed)
        sims, index = [], []
        for start in range(0, queries.shape[0], self.config.chunk):
            s, i = (queries[start: start + self.config.chunk] @ keys.T).topk(k, dim=1)
            sims.append(s)
            index.append(i)
        if not sims:
            return queries.new_zeros((0, k)), torch.zeros((0, k), dtype=torch.long, device=queries.device)
        return torch.cat(sims), torch.cat(index)

    def forward(self, features: torch.Tensor, code: torch.Tensor,
                distinct_points: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``distinct_points``: the margin is taken to the best anchor whose point differs
        from the best anchor's (among the :data:`MARGIN_DEPTH` most similar), not to the
        second-best anchor. A keypoint map (``anchor_points`` "keypoints") needs it: the
        anchors of one track share one point, so the runner-up is often the same point
        seen from another mapping image, which is no ambiguity. A patch whose
        :data:`MARGIN_DEPTH` most similar anchors all hold the best one's point gets the
        margin to a similarity of -1. False (cell maps) computes as before."""
        if not self.config.accepts_code(tuple(code.shape)):
            raise ValueError(f"map code of shape {tuple(code.shape)}, this anchor model reads "
                             f"{self.config.code_description()}")
        P = features.shape[0]
        if P > self.config.max_queries:
            pick = torch.linspace(0, P - 1, self.config.max_queries, device=features.device).round().long()
            some, unc = self(features[pick], code, distinct_points)
            coords = torch.full((P, 3), float("nan"), dtype=some.dtype, device=some.device)
            log_unc = torch.full((P,), LOG_UNC_MAX, dtype=unc.dtype, device=unc.device)
            coords[pick], log_unc[pick] = some, unc
            return coords, log_unc
        k = max(self.config.top_k, MARGIN_DEPTH) if distinct_points else None
        sims, index = self.search(features, code, k)
        return self.read_out(sims, index, code, distinct_points)

    def search(self, features: torch.Tensor, code: torch.Tensor,
               k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities (P, k) and indices (P, k) of the best anchors of ``code`` for each of
        the (P, C) encoder ``features``, best first (:meth:`attend`, in the code's lists)."""
        keys = code[:, : self.config.feature_dim]
        return self.attend(self.embed(features), keys, k=k, lists=self.anchor_lists(code))

    def read_out(self, sims: torch.Tensor, index: torch.Tensor, code: torch.Tensor,
                 distinct_points: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates (P, 3) and log-uncertainties (P,) from :meth:`search`'s (P, k) best
        anchors (``distinct_points``: see :meth:`forward`)."""
        points = code[:, self.config.feature_dim:]
        if distinct_points:
            margin = sims[:, 0] - runner_up_elsewhere(sims, index, points)
        else:
            margin = sims[:, 0] - sims[:, 1] if sims.shape[1] > 1 else torch.ones_like(sims[:, 0])
        k = min(self.config.top_k, sims.shape[1])
        weights = torch.softmax(sims[:, :k] / self.log_temperature.exp(), dim=1)
        coords = (weights[..., None] * points[index[:, :k]]).sum(1)
        log_unc = LOG_UNC_MAX - (LOG_UNC_MAX - LOG_UNC_MIN) * margin.clamp(0.0, 1.0)
        return coords, log_unc

    def anchor_lists(self, code: torch.Tensor) -> AnchorLists | None:
        """The inverted file of ``code`` with ``search`` "lists" (None with "exact" or when
        the code has at most 4 lists' worth of anchors), built on first use and kept for
        the last 8 codes seen (a localizer reads one code again and again; a service
        switches between a few maps). The cache holds the code itself and its version
        counter, so an edited or new code is never served stale lists."""
        n = code.shape[0]
        if self.config.search != "lists" or n <= 4 * self.config.list_size:
            return None
        for cached, version, lists in self._lists_cache:
            if cached is code and version == code._version:
                return lists
        keys = code[:, : self.config.feature_dim]
        lists = AnchorLists.build(keys, max(1, round(n / self.config.list_size)))
        self._lists_cache = [(code, code._version, lists)] + self._lists_cache[:7]
        return lists

    def identity(self) -> str:
        """Content hash of the configuration and weights (16 hex digits)."""
        return weights_hash(self.state_dict(), self.config.identity_dict())

    def identity_with_budget(self, max_anchors: int) -> str:
        """The identity as it was computed while the anchor budget was part of it: maps
        made then record this hash and their budget in their configuration, and read the
        same way with these weights, so they stay valid."""
        return weights_hash(self.state_dict(), {**self.config.identity_dict(), "max_anchors": max_anchors})
