"""``aceg bench``: ACE-G vs ACE vs feature matching on the same data, in one run."""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

from aceg.data.readers.seven_scenes import DEFAULT_FOCAL as SEVEN_SCENES_FOCAL
from aceg.errors import AcegError
from aceg.evaluation import bench_report as report
from aceg.evaluation import benchmark as bm
from aceg.io import check_output_path

HELP = "benchmark ACE-G, the ACE baseline and feature matching side by side"
DESCRIPTION = f"""\
Run ACE-G (the anchor model with its shipped weights, or the model --regressor's weights
hold), the ACE baseline (ACE's scene-specific head and loss on
aceg's frozen XFeat encoder, not ACE's own encoder) and the feature-matching baseline on
the same data in one process and print/write the figures side by side.

Data: held-out synthetic scenes (generated with seeds disjoint from pre-training, or an
existing `aceg synth` folder via --synthetic) split into query_same / query_light /
query_view; and the real sets in --real (Strecha fountain-P11, castle-P30, Middlebury
templeRing), split by --real-split: every3 maps frames with index % 3 != 1 and queries
index % 3 == 1, with and without a photometric change of the query images; sparse4 maps
only index % 4 == 0 and queries all the others (wide baselines).

--dataset runs on the standard relocalization data sets in their native layouts, each
scene split as officially (7-Scenes: TrainSplit.txt / TestSplit.txt; 12-Scenes: the first
sequence queries, as ACE and DSAC* split it; Cambridge Landmarks: dataset_train.txt /
dataset_test.txt; Indoor-6: <scene>_train.txt / <scene>_test.txt). Give a scene folder or
a data set's root (its scenes are found up to three levels down). With --dataset, the
synthetic and the real sets run only when --synthetic or --real is given too.

--ablation adds the anchor model with its untrained (identity) embedding, i.e. the same
pipeline reading the point of the nearest raw XFeat descriptor: the learned part's share.

Figures per method and split: % within 5cm/5deg, 10cm/10deg, 20cm/20deg, median errors,
% localized, mapping time, median/p90 query time, map size, peak memory; for the real sets,
per set the median translation error over feature matching's; for ACE-G, how often a pose
flagged confident is within 10 cm / 10 deg. The markdown table
replaces the section between `{bm.MARK_START}` and `{bm.MARK_END}` of --markdown; raw
numbers go to --json.
"""

HELD_OUT_SEED = 900_001  # pre-training uses seeds below 900000
DEFAULT_REAL = "../shared/data"


def add_arguments(parser) -> None:
    parser.add_argument("--methods", nargs="+", choices=bm.METHODS, default=list(bm.DEFAULT_METHODS),
                        help="methods to compare (default: %(default)s); the '-tri' variants add "
                             "depth triangulated between the mapping images (aceg map --triangulate)")
    parser.add_argument("--synthetic", metavar="DIR", help="existing `aceg synth` output to use")
    parser.add_argument("--synthetic-splits", nargs="+", choices=bm.SYNTHETIC_SPLITS, default=None,
                        metavar="SPLIT", help="query splits of the synthetic scenes to run "
                        f"(default: all of {', '.join(bm.SYNTHETIC_SPLITS)} that exist)")
    parser.add_argument("--synthetic-scenes", type=int, default=8, help="held-out scenes to generate (default: %(default)s)")
    parser.add_argument("--synthetic-seed", type=int, default=HELD_OUT_SEED, help="seed of the held-out scenes (default: %(default)s)")
    parser.add_argument("--frames-mapping", type=int, default=60)
    parser.add_argument("--frames-query", type=int, default=15)
    parser.add_argument("--size", default="240x320", help="synthetic image size HxW (default: %(default)s)")
    parser.add_argument("--real", default=None, metavar="DIR",
                        help=f"folder of the real sets (default: {DEFAULT_REAL}, skipped if "
                             "missing; with --dataset: only when given)")
    parser.add_argument("--no-real", action="store_true", help="skip the real sets")
    parser.add_argument("--real-split", nargs="+", choices=list(bm.REAL_SPLITS), default=["every3"],
                        help="index splits of the real sets (default: %(default)s)")
    parser.add_argument("--dataset", nargs="+", metavar="PATH",
                        help="7-Scenes, 12-Scenes, Cambridge Landmarks or Indoor-6 scene folders "
                             "(or their data sets' roots), run with their official mapping / "
                             "query split")
    parser.add_argument("--seven-scenes-focal", type=float, metavar="PX",
                        help="focal length of the 7-Scenes colour images, whose files record none "
                             f"(default: {SEVEN_SCENES_FOCAL:g}, the value of ACE's and DSAC*'s "
                             "setup)")
    parser.add_argument("--ablation", action="store_true",
                        help="also run ACE-G with the identity embedding (aceg-identity, and "
                             "aceg-kp-identity when aceg-kp runs)")
    parser.add_argument("--preset", default="fast",
                        help="mapping preset of the optimised maps (the map-code transformer and the "
                             "ACE head; the anchor model has none) (default: %(default)s)")
    parser.add_argument("--iterations", type=int, help="override the preset's mapping iterations")
    parser.add_argument("--regressor", help="weights of the aceg methods: anchor model or map-code "
                             "transformer, the methods map with the model they hold (default: "
                             "the shipped anchor model)")
    parser.add_argument("--work", help="folder for generated data and maps (default: a temporary one)")
    parser.add_argument("--markdown", default="BENCHMARKS.md", help="markdown file to update (default: %(default)s)")
    parser.add_argument("--json", default="benchmarks/results/bench.json", help="raw results (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny version for tests: 1 small synthetic scene, 1 real set, few iterations")


def run(args) -> int:
    start = time.perf_counter()
    if args.quick:
        args.synthetic_scenes, args.frames_mapping, args.frames_query = 1, 12, 3
        args.size, args.preset = "120x160", "fast"
        args.iterations = args.iterations or 150
    for path, what in ((args.markdown, "markdown file"), (args.json, "JSON file")):
        if path:
            check_output_path(path, what=what)
    if args.work:
        check_output_path(args.work, folder=True, what="work files")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aceg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    datasets = []
    if args.synthetic:
        datasets += bm.synthetic_datasets(Path(args.synthetic), args.synthetic_splits)
    elif args.synthetic_scenes > 0 and not args.dataset:
        datasets += bm.synthetic_datasets(_generate(args, work / "synthetic"), args.synthetic_splits)
    real = []
    if not args.no_real and (args.real is not None or not args.dataset):
        names = bm.REAL_SETS[:1] if args.quick else bm.REAL_SETS
        real += bm.real_datasets(Path(args.real or DEFAULT_REAL), names, args.real_split)
    if args.dataset:
        real += bm.official_datasets(args.dataset, args.seven_scenes_focal)
    if args.quick:
        for d in real:
            d.mapping = d.mapping.subset(range(min(4, len(d.mapping))))
            d.queries = {k: v.subset(range(min(2, len(v)))) for k, v in d.queries.items()}
    datasets += real
    if not datasets:
        raise AcegError("no data to benchmark on")
    settings = {"preset": args.preset, "regressor": args.regressor, "iterations": args.iterations}
    methods = list(args.methods)
    if args.ablation:
        methods = with_ablations(methods)
    runs = []
    for data in datasets:
        print(f"{data.name} ({data.kind}): {len(data.mapping)} mapping frames, "
              + ", ".join(f"{k} {len(v)}" for k, v in data.queries.items()))
        for note in data.mapping.notes:
            print(f"  note: {note}")
        for method in methods:
            runs.append(bm.run_method(method, data, work, settings))
    summaries = report.summarise(runs)
    seconds = time.perf_counter() - start
    command = "aceg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "aceg bench"
    section = report.markdown(summaries, command, report.machine_description(), seconds, runs)
    print(section)
    if args.markdown:
        report.update_markdown_file(Path(args.markdown), section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        report.write_json(Path(args.json), runs, summaries,
                      {"command": command, "machine": report.machine_description(), "seconds": seconds})
    print(f"wrote {args.markdown} and {args.json} ({seconds / 60:.1f} min)")
    return 0


def with_ablations(methods: list[str]) -> list[str]:
    """``methods`` with each ablation of :data:`aceg.evaluation.benchmark.ABLATES` right after
    the method it ablates (``aceg-identity`` first when ``aceg`` is not run; the others
    only with theirs)."""
    out = list(methods)
    for ablation, base in bm.ABLATES.items():
        if ablation in out or (base not in out and base != "aceg"):
            continue
        out.insert(out.index(base) + 1 if base in out else 0, ablation)
    return out


def _generate(args, out: Path) -> Path:
    from aceg.data.synthetic.generate import SynthSettings, generate_scenes

    h, w = (int(v) for v in args.size.lower().split("x"))
    settings = SynthSettings(frames_mapping=args.frames_mapping, frames_query=args.frames_query,
                             height=h, width=w, contact_sheet=False)
    generate_scenes(out, args.synthetic_seed, args.synthetic_scenes, settings, progress=False)
    return out
