"""The data-set flags the side-by-side benchmark scripts share: held-out synthetic scenes
and the real sets, as :class:`aceg.evaluation.benchmark.Dataset` objects."""

from __future__ import annotations

from pathlib import Path

from aceg.evaluation.benchmark import real_datasets, synthetic_datasets


def add_dataset_arguments(parser, synthetic_splits=("query_same", "query_light", "query_view")) -> None:
    """--synthetic DIR, --synthetic-splits, --real DATA, --real-splits."""
    parser.add_argument("--synthetic", type=Path, help="folder of aceg synth scenes")
    parser.add_argument("--synthetic-splits", nargs="+", default=list(synthetic_splits))
    parser.add_argument("--real", type=Path, help="the shared data folder (real sets)")
    parser.add_argument("--real-splits", nargs="+", default=["every3", "sparse4"])


def datasets(args) -> list:
    """The data sets the flags of :func:`add_dataset_arguments` name."""
    sets = []
    if args.synthetic:
        sets += synthetic_datasets(args.synthetic, args.synthetic_splits)
    if args.real:
        sets += real_datasets(args.real, splits=args.real_splits)
    return sets
