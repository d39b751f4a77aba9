"""Anchor map codes: ACE-G's cross-attention with 3-D points as the values.

The map-code transformer (:mod:`aceg.model.regressor`) fits its mapping views but carries
little of that fit to other viewpoints and light (MODEL_CARD.md). This model keeps the
same contract (each patch is an independent query that cross-attends to a per-scene map
code; output: a scene coordinate and a log-uncertainty per patch) with a code whose
tokens are *anchors*: one per mapping patch whose 3-D point the mapping images'
poses determine (triangulated keypoints, or a depth map when the scene has one).

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
  scale of the transformer's, not a calibrated one. On held-out scenes 0-3 (triangulated
  anchors, ``benchmarks/retrieval_probe.py --geometry triangulated --k 1``) keeping the 75 % of largest margins gave
  61.7 / 63.3 % within 10 cm / 10 deg on query_same / query_light, the 75 % of highest
  similarity 56.7 / 60.0 %, no filter 60.0 / 58.3 % (60 images per split).

- Learned read-out (``AnchorConfig.readout = "learned"``): instead of the nearest anchor,
  a :class:`CandidateReadout` scores the patch's K most similar anchors (and "none of
  them") from their similarities and from how their points agree, and the patch takes the
  best-scored candidate's point; ``log_unc`` falls as that candidate's probability rises.
  It is trained across scenes on query patches (:mod:`aceg.pretraining.anchor_readout`).

The scene-agnostic weights are the embedding: a residual MLP on the unit-length encoder
feature, whose last layer starts at zero (the identity: raw-descriptor attention), the
temperature, and the learned read-out when there is one. Query pre-training trains the
embedding across scenes so that a patch seen in other light or from another viewpoint
attends to the anchors at its own surface point. Against anchors at random cells with
rendered depth (:mod:`aceg.pretraining.anchor_metric`) that made localization worse
(MODEL_CARD.md, section 1.3); against the anchors a mapping run builds, with the map's
other anchors as negatives (:mod:`aceg.pretraining.anchor_embedding`), it made it better,
and those are the shipped weights since 2026-12-06 (section 1.8; the identity embedding
ships as ``anchors-identity-xfeat.safetensors``). A pre-trained read-out did not improve
poses (section 1.4). Mapping builds the code from the mapping images (:func:`aceg.mapping.mapper.map_scene`).

The code holds, per anchor, an embedded descriptor and a point: a sparse descriptor map,
like a structure-based method's, read through attention; its size grows with the number
of anchors (``max_anchors`` x (C int8 + 3 float32), 1.87 MB at the defaults). Keys are kept
at 8 bits (:func:`quantize_keys`): :meth:`AnchorRegressor.make_code` rounds them, so a code
in memory reads as its map file does (bit for bit on the CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from aceg.model.regressor import LOG_UNC_MAX, LOG_UNC_MIN, weights_hash

#: Value of ``kind`` in a regressor checkpoint's configuration for this model.
ANCHOR_KIND = "anchors"


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
            same way). 24,576 keeps a map under 2 MB (8-bit keys, float32 points: 76 bytes
            an anchor). On the 8 held-out synthetic scenes (``benchmarks/anchor_probe.py``,
            track triangulation, MODEL_CARD.md 1.6) 24,576 anchors with 8-bit keys
            localized 45.8 % of query_view images within 10 cm / 10 deg against 43.3 % with
            12,288 float16 keys, and the same shares of query_same and query_light (98.3 /
            96.7 %).
        chunk: query patches per similarity block (chunk x N floats). Small blocks stay in
            the CPU's cache between the product and the top-k: 2,048 queries against 12,288
            anchors on one idle thread took 204-219 ms in blocks of 1,024, 119-134 ms in
            blocks of 256 and 123-138 ms in blocks of 128 (a throw-away timing, three
            repetitions; on two threads the blocks made no clear difference).
        max_queries: patches of one call that are read at most: beyond that, an evenly
            spaced subset (in the order given, i.e. raster order for an image) and NaN
            coordinates for the others, which the localizer drops. Bounds the query time:
            a 480x640 image has 4,800 patches, and each costs N x C multiply-adds; RANSAC
            needs far fewer correspondences.
        readout: how a patch's coordinate is read from its most similar anchors:
            "nearest" (the softmax over ``top_k``; with ``top_k`` 1 the best anchor's point,
            uncertainty from the best/second-best margin) or "learned" (a
            :class:`CandidateReadout` scores the ``candidates`` most similar anchors from
            their similarities and how their points agree, and the patch takes the point of
            the best-scored one, uncertainty from its probability).
        candidates: anchors the learned read-out considers per patch (K).
        readout_hidden: hidden width of the learned read-out's MLP.
        search: how a patch finds its most similar anchors: "exact" (against every anchor)
            or "lists" (an inverted file: the anchors are grouped once per code by
            spherical k-means into lists of about ``list_size``, and a patch searches only
            the ``lists_probed`` lists whose centroids are most similar to it; approximate,
            and used only when the code has more than 4 lists' worth of anchors). Cost
            only, like ``chunk``: maps stay valid. With 12,288 anchors (96 lists, 16
            probed: a sixth of the anchors) a 480x640 query's regressor time fell from
            76.6 to 51.4 ms on 2 threads, and held-out synthetic scenes 0-7 localized
            96.7 / 93.3 / 31.7 % of query_same / query_light / query_view against the exact
            search's 97.5 / 93.3 / 32.5 % (120 images each), the real sets 66.7 / 73.3 %
            against 70.0 / 73.3 % (30 each; the pipeline is deterministic, so this is the
            search's cost; BENCHMARKS.md). At the defaults (24,576 anchors: 192 lists, 16
            probed, a twelfth, so the same 2,048 anchors a patch as before) 98.3 / 96.7 /
            45.8 % against 98.3 / 97.5 / 47.5 % exact, and 46.7 % on query_view with 24 or
            32 lists probed (later track triangulation; MODEL_CARD.md 1.6).
        list_size, lists_probed: see ``search``.
    """

    feature_dim: int = 64
    hidden: int = 128
    top_k: int = 1
    temperature: float = 0.05
    max_anchors: int = 24576
    chunk: int = 256
    max_queries: int = 2048
    readout: str = "nearest"
    candidates: int = 16
    readout_hidden: int = 32
    search: str = "lists"
    list_size: int = 128
    lists_probed: int = 16
    kind: str = ANCHOR_KIND

    def __post_init__(self) -> None:
        if self.kind != ANCHOR_KIND:
            raise ValueError(f"AnchorConfig kind must be {ANCHOR_KIND!r}")
        if min(self.top_k, self.max_anchors, self.chunk, self.max_queries, self.readout_hidden) < 1:
            raise ValueError("top_k, max_anchors, chunk, max_queries and readout_hidden must be positive")
        if self.readout not in ("nearest", "learned"):
            raise ValueError(f"AnchorConfig readout must be 'nearest' or 'learned', got {self.readout!r}")
        if self.candidates < 2:
            raise ValueError("AnchorConfig candidates must be at least 2")
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
        if self.readout == "nearest":  # as before the learned read-out existed
            del d["readout"], d["candidates"], d["readout_hidden"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AnchorConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def quantize_keys(keys: torch.Tensor) -> torch.Tensor:
    """(N, C) float keys -> (N, C) int8: each row scaled so that its largest component is
    +-127, then rounded. A key's length is not kept (keys are unit length), so no scale is
    stored; :func:`dequantize_keys` undoes it up to rounding, and quantizing its output
    gives the same integers back. Cosines move by well under 0.01 (64 channels); 8-bit keys
    localized as float16 keys did on the 8 held-out synthetic scenes (MODEL_CARD.md 1.6)."""
    keys = keys.detach().float()
    if not torch.isfinite(keys).all():
        raise ValueError("anchor keys hold NaN or infinite values")
    scale = keys.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(keys / scale).clamp(-127, 127).to(torch.int8)


def dequantize_keys(quantized: torch.Tensor) -> torch.Tensor:
    """(N, C) int8 keys -> (N, C) float32 unit-length keys."""
    return F.normalize(quantized.float(), dim=1)


@dataclass
class AnchorLists:
    """Inverted file over a code's anchor keys (``AnchorConfig.search = "lists"``).

    ``centroids`` (L, C) unit-length list centres; ``order`` (N,) anchor indices grouped by
    list; ``bounds`` (L + 1,) offsets of each list in ``order``; ``keys`` (N, C) the keys in
    ``order``'s order (contiguous, so that a list's keys are one slice).
    """

    centroids: torch.Tensor
    order: torch.Tensor
    bounds: torch.Tensor
    keys: torch.Tensor

    @classmethod
    def build(cls, keys: torch.Tensor, n_lists: int, iterations: int = 8, seed: int = 0) -> AnchorLists:
        """Spherical k-means of the (N, C) unit ``keys`` into ``n_lists`` lists (seeded,
        so the same code always gets the same lists)."""
        keys = keys.float()
        gen = torch.Generator().manual_seed(seed)
        centroids = keys[torch.randperm(keys.shape[0], generator=gen)[:n_lists].to(keys.device)]
        for _ in range(iterations):
            assign = (keys @ centroids.T).argmax(dim=1)
            sums = torch.zeros_like(centroids).index_add_(0, assign, keys)
            filled = sums.norm(dim=1) > 0  # an empty list keeps its centre
            centroids = torch.where(filled[:, None], F.normalize(sums, dim=1), centroids)
        assign = (keys @ centroids.T).argmax(dim=1)
        order = torch.argsort(assign, stable=True)
        counts = torch.bincount(assign, minlength=n_lists)
        bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(centroids, order, bounds, keys[order].contiguous())

    def search(self, queries: torch.Tensor, k: int, probed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities (P, k) and anchor indices (P, k) of each of the (P, C) ``queries``'
        k best anchors among its ``probed`` nearest lists, best first (similarity -1 and the
        best anchor's index where fewer than k anchors were searched)."""
        P = queries.shape[0]
        probe = (queries @ self.centroids.T).topk(min(probed, self.centroids.shape[0]), dim=1).indices
        best_s = queries.new_full((P, k), float("-inf"))
        best_i = torch.zeros((P, k), dtype=torch.long, device=queries.device)
        flat = probe.reshape(-1)
        by_list = torch.argsort(flat, stable=True)
        query_of = by_list // probe.shape[1]  # queries grouped by the list they probe
        starts = torch.cat([flat.new_zeros(1), torch.bincount(flat, minlength=len(self.bounds) - 1).cumsum(0)])
        bounds, starts_l = self.bounds.tolist(), starts.tolist()
        for lst in range(len(bounds) - 1):
            lo, hi = bounds[lst], bounds[lst + 1]
            if hi == lo or starts_l[lst] == starts_l[lst + 1]:
                continue
            q = query_of[starts_l[lst]: starts_l[lst + 1]]
            s, i = (queries[q] @ self.keys[lo:hi].T).topk(min(k, hi - lo), dim=1)
            merged_s = torch.cat([best_s[q], s], dim=1)
            merged_i = torch.cat([best_i[q], self.order[lo + i]], dim=1)
            top_s, top = merged_s.topk(k, dim=1)
            best_s[q], best_i[q] = top_s, merged_i.gather(1, top)
        missing = torch.isinf(best_s)
        best_s = best_s.masked_fill(missing, -1.0)
        best_i = torch.where(missing, best_i[:, :1].expand(-1, k), best_i)
        return best_s, best_i


class CandidateReadout(nn.Module):
    """Learned read-out of a query patch's K most similar anchors.

    ``forward(sims (P, K), points (P, K, 3)) -> logits (P, K + 1)``: a score per candidate
    and, last, a "none of them" score; a softmax over the K + 1 is the probability that
    each candidate's point is the patch's surface point (within the radius it was trained
    with) or that none is. ``sims`` are cosine similarities, best first; ``points`` the
    candidates' scene coordinates in metres (any common frame: only their differences are
    used). Each candidate is described by :meth:`candidate_features` (its similarity, its
    gap to the best, its rank, and how many of the other candidates, weighted by
    similarity or not, put their point near its point at three radii), scored by a
    shared MLP; the "none" score reads the max-pooled hidden features. Scene-agnostic:
    trained across rooms on query patches (:mod:`aceg.pretraining.anchor_readout`).
    """

    #: Radii (metres) at which candidates' points count as agreeing.
    SUPPORT_SIGMAS = (0.05, 0.15, 0.5)
    #: Similarity scale of the weights of the weighted support.
    SUPPORT_SIM_SCALE = 0.02
    N_FEATURES = 6 + 2 * len(SUPPORT_SIGMAS)

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.N_FEATURES, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU())
        self.score = nn.Linear(hidden, 1)
        self.none = nn.Linear(hidden, 1)

    @classmethod
    def candidate_features(cls, sims: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(P, K) similarities (best first), (P, K, 3) points -> (P, K, N_FEATURES)."""
        P, K = sims.shape
        best = sims[:, :1]
        rank = torch.linspace(0.0, 1.0, K, device=sims.device).expand(P, K)
        margin = (sims[:, :1] - sims[:, 1:2]).expand(P, K) if K > 1 else torch.ones_like(sims)
        d2 = torch.cdist(points, points).square()  # (P, K, K)
        d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # a candidate does not support itself
        inv = torch.tensor([-0.5 / (sg * sg) for sg in cls.SUPPORT_SIGMAS], device=sims.device)
        g = torch.exp((d2[..., None] * inv).clamp_min(-30.0))  # (P, K, K, S); no denormals
        w = torch.exp((sims - best) / cls.SUPPORT_SIM_SCALE)  # (P, K)
        w_others = w.sum(1, keepdim=True) - w  # (P, K): total weight of the other candidates
        weighted = torch.einsum("pjis,pi->pjs", g, w) / w_others.clamp_min(1e-6)[..., None]
        count = g.sum(2) / max(K - 1, 1)  # (P, K, S)
        first = torch.stack([sims, best - sims, rank, margin, best.expand(P, K),
                             (d2[:, :, 0].clamp_max(1e4) * (rank > 0) + 1e-4).sqrt().log()], dim=-1)
        return torch.cat([first, weighted, count], dim=-1)

    def forward(self, sims: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        h = self.mlp(self.candidate_features(sims.float(), points.float()))  # (P, K, H)
        return torch.cat([self.score(h).squeeze(-1), self.none(h.amax(dim=1))], dim=1)


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
        self.readout = CandidateReadout(config.readout_hidden) if config.readout == "learned" else None
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

    def forward(self, features: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.config.accepts_code(tuple(code.shape)):
            raise ValueError(f"map code of shape {tuple(code.shape)}, this anchor model reads "
                             f"{self.config.code_description()}")
        P = features.shape[0]
        if P > self.config.max_queries:
            pick = torch.linspace(0, P - 1, self.config.max_queries, device=features.device).round().long()
            some, unc = self(features[pick], code)
            coords = torch.full((P, 3), float("nan"), dtype=some.dtype, device=some.device)
            log_unc = torch.full((P,), LOG_UNC_MAX, dtype=unc.dtype, device=unc.device)
            coords[pick], log_unc[pick] = some, unc
            return coords, log_unc
        keys, points = code[:, : self.config.feature_dim], code[:, self.config.feature_dim:]
        lists = self.anchor_lists(code)
        if self.readout is not None:
            sims, index = self.attend(self.embed(features), keys, self.config.candidates, lists)
            cand = points[index]  # (P, K, 3)
            prob = torch.softmax(self.readout(sims, cand), dim=1)[:, :-1]  # (P, K)
            p_best, j = prob.max(dim=1)
            coords = cand.gather(1, j[:, None, None].expand(-1, 1, 3)).squeeze(1)
            log_unc = LOG_UNC_MAX - (LOG_UNC_MAX - LOG_UNC_MIN) * p_best
            return coords, log_unc
        sims, index = self.attend(self.embed(features), keys, lists=lists)
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
        """The identity as it was computed until 2026-12-03 night, with the anchor budget
        in it: maps made then record this hash and their budget in their configuration,
        and read the same way with these weights, so they stay valid."""
        return weights_hash(self.state_dict(), {**self.config.identity_dict(), "max_anchors": max_anchors})
