"""Anchor search: the shipped inverted file (faiss IndexIVFFlat, ``AnchorLists``) against
exact search (torch, faiss) and faiss HNSW, in one run on one map's anchor keys.

Queries are anchors' keys with Gaussian noise (re-normalised), so that the nearest anchor
is known for most of them; each method finds the ``k`` most similar anchors of 2,048
queries (the localizer's per-image budget). Prints the median time of ``--repeat`` runs
and how often each method's best anchor is the exact search's.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/anchor_search.py MAP [--noise 0.3] [--k 8]

``--previous FILE`` adds the ``AnchorLists`` of another version of ``aceg.model.anchors``
to the same run, e.g. the hand-written inverted file it replaced:
``git show 8c3a3b1:src/aceg/model/anchors.py > /tmp/previous_anchors.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from aceg.model.anchors import AnchorConfig, AnchorLists
from aceg.model.map_file import load_map


def timed(fn, repeat: int):
    """(median milliseconds over ``repeat`` runs after one warm-up, the last result)."""
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("map")
    ap.add_argument("--queries", type=int, default=2048)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--previous", metavar="FILE", help="another anchors.py whose AnchorLists to time too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    data = load_map(args.map)
    width = data.regressor_config.feature_dim
    keys = data.code[:, :width].float().contiguous()
    gen = torch.Generator().manual_seed(0)
    pick = torch.randint(len(keys), (args.queries,), generator=gen)
    queries = F.normalize(keys[pick] + args.noise * torch.randn(args.queries, width, generator=gen), dim=1)
    k, config = args.k, AnchorConfig()
    rows = []
    ms, (_, exact) = timed(lambda: (queries @ keys.T).topk(k, dim=1), args.repeat)
    exact = exact[:, 0].numpy()
    rows.append(("exact, torch matmul + topk", ms, 1.0, 0.0))
    flat = faiss.IndexFlatIP(width)
    flat.add(keys.numpy())
    ms, (_, found) = timed(lambda: flat.search(queries.numpy(), k), args.repeat)
    rows.append(("exact, faiss IndexFlatIP", ms, float((found[:, 0] == exact).mean()), 0.0))
    t = time.perf_counter()
    lists = AnchorLists.build(keys, max(1, round(len(keys) / config.list_size)))
    build = time.perf_counter() - t
    ms, (_, found) = timed(lambda: lists.search(queries, k, config.lists_probed), args.repeat)
    rows.append((f"shipped: faiss IVF, {lists.index.nlist} lists, {config.lists_probed} probed", ms,
                 float((found[:, 0].numpy() == exact).mean()), build))
    if args.previous:
        spec = importlib.util.spec_from_file_location("previous_anchors", args.previous)
        previous = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = previous  # dataclasses look their module up there
        spec.loader.exec_module(previous)
        t = time.perf_counter()
        old = previous.AnchorLists.build(keys, max(1, round(len(keys) / config.list_size)))
        build = time.perf_counter() - t
        ms, (_, found) = timed(lambda: old.search(queries, k, config.lists_probed), args.repeat)
        rows.append((f"--previous AnchorLists, {config.lists_probed} probed", ms,
                     float((found[:, 0].numpy() == exact).mean()), build))
    hnsw = faiss.IndexHNSWFlat(width, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 64
    t = time.perf_counter()
    hnsw.add(keys.numpy())
    build = time.perf_counter() - t
    ms, (_, found) = timed(lambda: hnsw.search(queries.numpy(), k), args.repeat)
    rows.append(("faiss HNSW, M 32, efSearch 64", ms, float((found[:, 0] == exact).mean()), build))
    print(f"{len(keys)} anchors, {args.queries} queries, k {k}, {args.threads} threads")
    print(f"{'method':<44}{'search ms':>10}{'same best':>11}{'build ms':>10}")
    for name, ms, same, build in rows:
        print(f"{name:<44}{ms:10.1f}{same:11.3f}{1000 * build:10.0f}")


if __name__ == "__main__":
    main()
