"""Side-by-side benchmark: ACE-G vs the ACE baseline vs feature matching, one run, same data.

Data sets (each: one mapping scene and named query splits):
    * held-out synthetic scenes (``aceg synth`` output; seeds disjoint from pre-training):
      map on ``mapping/``, query ``query_same``, ``query_light``, ``query_view`` (and
      ``query_moved`` when present);
    * the real sets in ``../shared/data``, split by index (:data:`REAL_SPLITS`):
      ``every3`` maps frames with index % 3 != 1 and queries index % 3 == 1, also with a
      photometric change applied to the query images (:func:`photometric_change`: gamma
      1.8, a warm colour cast and brightness x0.6, which approximates a lighting change on
      real photos); ``sparse4`` maps only index % 4 == 0 and queries all the others (wide
      baselines between the mapping views).

The ``aceg-identity`` method is the ablation of the anchor model's learned part: the same
pipeline with the untrained (identity) descriptor embedding, i.e. reading the point of the
nearest raw XFeat descriptor.

Per method and split: the accuracy table (:mod:`aceg.evaluation.metrics`, pooled over all
queries of that split across scenes), mapping time, median and p90 query time, map size,
peak memory (resident set size sampled every 20 ms during mapping, minus the size
before it), and for ACE-G methods how often a pose flagged confident is right. Times are measured in the same process and run, so ratios are meaningful.
"""

from __future__ import annotations

import json
import math
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aceg.data.images import load_image
from aceg.data.readers import read_scene
from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.evaluation.metrics import AccuracyTable, accuracy_table, pose_errors
from aceg.io import atomic_write_text

METHODS = ("aceg", "aceg-identity", "aceg-tri", "ace", "ace-tri", "feature-matching")
#: What ``aceg bench`` runs unless told otherwise.
DEFAULT_METHODS = ("aceg", "ace", "feature-matching")
METHOD_LABELS = {"aceg": "ACE-G", "aceg-identity": "ACE-G, identity embedding",
                 "aceg-tri": "ACE-G + triangulated depth", "ace": "ACE head on XFeat",
                 "ace-tri": "ACE head on XFeat + triangulated depth",
                 "feature-matching": "Feature matching"}
#: Methods that map with :func:`aceg.mapping.mapper.map_scene`: (its method, ``triangulate``).
SCR_METHODS = {"aceg": ("aceg", False), "aceg-identity": ("aceg", False),
               "aceg-tri": ("aceg", True), "ace": ("ace", False), "ace-tri": ("ace", True)}
#: Ablations: method -> weights file (in ``aceg.model.map_file.WEIGHTS_DIR``) replacing the
#: shipped regressor.
ABLATION_WEIGHTS = {"aceg-identity": "anchors-identity-xfeat.safetensors"}
SYNTHETIC_SPLITS = ("query_same", "query_light", "query_view", "query_moved")
REAL_SETS = ("strecha/fountain-P11", "strecha/castle-P30", "middlebury/templeRing")
#: Index splits of the real sets: name -> (k, r, mapping side) where the frames with
#: index % k == r are the queries ("rest" mapping side) or the mapping frames ("picked").
REAL_SPLITS = {"every3": (3, 1, "rest"), "sparse4": (4, 0, "picked")}
MARK_START = "<!-- aceg-bench:start -->"
MARK_END = "<!-- aceg-bench:end -->"


def photometric_change(rgb: np.ndarray) -> np.ndarray:
    """A strong lighting-like change: gamma 1.8, warm colour cast, brightness x0.6 (uint8)."""
    x = rgb.astype(np.float32) / 255.0
    x = x ** 1.8
    x = x * np.array([1.15, 1.0, 0.75], np.float32) * 0.6
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class Dataset:
    """One mapping scene and its query splits; ``transforms`` maps a split name to an image
    transform applied to that split's query images (None: as on disk)."""

    name: str
    kind: str  # "synthetic" or "real"
    mapping: Scene
    queries: dict[str, Scene]
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)


def synthetic_datasets(root: Path) -> list[Dataset]:
    """Every scene folder below ``root`` with a ``mapping/`` split (``aceg synth`` layout)."""
    scenes = sorted(p for p in Path(root).iterdir() if (p / "mapping").is_dir())
    if not scenes:
        raise AcegError(f"{root}: no synthetic scenes (folders with mapping/)")
    out = []
    for s in scenes:
        queries = {q: read_scene(s / q) for q in SYNTHETIC_SPLITS if (s / q).is_dir()}
        out.append(Dataset(s.name, "synthetic", read_scene(s / "mapping"), queries))
    return out


def real_datasets(shared_data: Path, names=REAL_SETS, splits=("every3",)) -> list[Dataset]:
    """The real sets found below ``shared_data``, once per split of :data:`REAL_SPLITS`
    (``every3``: queries ``query`` and ``query_photometric``; ``sparse4``: ``query_sparse4``,
    data set named ``<set>-sparse4``)."""
    out = []
    for name in names:
        path = Path(shared_data) / name
        if not path.exists():
            continue
        scene = read_scene(path)
        for split in splits:
            k, r, mapping_side = REAL_SPLITS[split]
            rest, picked = scene.split_every(k, r)
            if split == "every3":
                out.append(Dataset(Path(name).name, "real", rest,
                                   {"query": picked, "query_photometric": picked},
                                   {"query_photometric": photometric_change}))
            else:
                mapping, query = (picked, rest) if mapping_side == "picked" else (rest, picked)
                out.append(Dataset(f"{Path(name).name}-{split}", "real", mapping,
                                   {f"query_{split}": query}))
    return out


class PeakMemory:
    """Peak resident set size (bytes) above the starting size, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096
        except OSError:
            return 0

    def __enter__(self):
        self.start = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss() - self.start)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.start)


@dataclass
class MethodRun:
    """Everything measured for one method on one data set."""

    method: str
    dataset: str
    kind: str
    mapping_seconds: float
    map_bytes: int
    peak_memory_bytes: int
    errors: dict[str, list[tuple[float, float]]]  # split -> [(rot_deg, trans_m)], inf = failed
    query_seconds: dict[str, list[float]]
    confident: dict[str, list[bool]] = field(default_factory=dict)  # ACE-G methods only


def _mapper_and_localizer(method: str, settings: dict):
    """(map(scene, path) -> None, localizer(path) -> callable(rgb, frame) -> (pose or None,
    confident flag or None))."""
    if method == "feature-matching":
        from aceg.baselines.feature_matching import FeatureMatchingLocalizer, build_feature_map
        from aceg.mapping.keypoints import SparseFeatures

        features = SparseFeatures()

        def build(scene, path):
            build_feature_map(scene, features=features, progress=False).save(path)

        def open_map(path):
            loc = FeatureMatchingLocalizer(path, features=features)
            return lambda rgb, frame: (
                loc.localize(frame.image_path, frame.intrinsics, rgb=rgb).cam_to_world, None)

        return build, open_map

    from aceg.localization.localizer import Localizer
    from aceg.mapping.mapper import map_scene
    from aceg.model.regressor import CODE_INITS

    if method in ABLATION_WEIGHTS:
        from aceg.model.map_file import WEIGHTS_DIR

        settings = {**settings, "regressor": str(WEIGHTS_DIR / ABLATION_WEIGHTS[method])}
    method, triangulate = SCR_METHODS[method]

    def build(scene, path):
        map_scene(scene, path, method=method, triangulate=triangulate,
                  preset=settings.get("preset", "default"),
                  regressor=settings.get("regressor"), short_side=settings.get("short_side", 480),
                  progress=False, iterations=settings.get("iterations"),
                  lr_max=settings.get("lr_max"), batch_size=settings.get("batch_size"),
                  code_init=settings.get("code_init", CODE_INITS[0]))

    def open_map(path):
        loc = Localizer(path, regressor=settings.get("regressor") if method == "aceg" else None)
        def localize(rgb, frame):
            result = loc.localize(rgb, frame.intrinsics, name=frame.name)
            return result.cam_to_world, (result.confident if method == "aceg" else None)

        return localize

    return build, open_map


def run_method(method: str, data: Dataset, work: Path, settings: dict, log=print) -> MethodRun:
    build, open_map = _mapper_and_localizer(method, settings)
    map_path = work / f"{data.name}-{method}.map"
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        build(data.mapping, map_path)
    mapping_seconds = time.perf_counter() - t0
    localize = open_map(map_path)
    errors: dict[str, list[tuple[float, float]]] = {}
    times: dict[str, list[float]] = {}
    confident: dict[str, list[bool]] = {}
    for split, scene in data.queries.items():
        transform = data.transforms.get(split)
        errors[split], times[split] = [], []
        for frame in scene.frames:
            rgb = load_image(frame.image_path)
            if transform is not None:
                rgb = transform(rgb)
            t = time.perf_counter()
            pose, flag = localize(rgb, frame)
            times[split].append(time.perf_counter() - t)
            errors[split].append(pose_errors(pose, frame.cam_to_world) if pose is not None
                                 else (math.inf, math.inf))
            if flag is not None:
                confident.setdefault(split, []).append(bool(flag))
    run = MethodRun(method, data.name, data.kind, mapping_seconds, map_path.stat().st_size,
                    mem.peak, errors, times, confident)
    log(f"  {METHOD_LABELS[method]:<17} {data.name}: mapped in {mapping_seconds:.1f} s, "
        + ", ".join(f"{s} {_pct(e)}% <10cm/10deg" for s, e in errors.items()))
    return run


def _pct(errs: list[tuple[float, float]]) -> str:
    t = accuracy_table([e[0] for e in errs], [e[1] for e in errs])
    return f"{t.within['10cm/10deg']:.0f}"


@dataclass
class SplitSummary:
    method: str
    kind: str
    split: str
    table: AccuracyTable
    mapping_seconds_median: float
    query_ms_median: float
    query_ms_p90: float
    map_bytes_median: float
    peak_memory_mb_max: float


def summarise(runs: list[MethodRun]) -> list[SplitSummary]:
    out = []
    keys = sorted({(r.kind, r.method, s) for r in runs for s in r.errors},
                  key=lambda k: (k[0], k[2], METHODS.index(k[1])))
    for kind, method, split in keys:
        sel = [r for r in runs if r.kind == kind and r.method == method and split in r.errors]
        errs = [e for r in sel for e in r.errors[split]]
        times = [t for r in sel for t in r.query_seconds[split]]
        out.append(SplitSummary(
            method, kind, split,
            accuracy_table([e[0] for e in errs], [e[1] for e in errs]),
            float(np.median([r.mapping_seconds for r in sel])),
            float(np.median(times) * 1000), float(np.percentile(times, 90) * 1000),
            float(np.median([r.map_bytes for r in sel])),
            float(max(r.peak_memory_bytes for r in sel) / 2**20),
        ))
    return out


def markdown(summaries: list[SplitSummary], command: str, machine: str, seconds: float,
             runs: list[MethodRun] | None = None) -> str:
    """The markdown section: per kind of data, the pooled table, ACE-G against the baselines
    and, for the real sets (given ``runs``), a table per set."""
    lines = [MARK_START, "## Side-by-side benchmark: ACE-G vs the ACE head vs feature matching", "",
             f"Command: `{command}`  ", f"Machine: {machine}  ", f"Total wall time: {seconds / 60:.1f} min",
             ""]
    for kind in ("synthetic", "real"):
        rows = [s for s in summaries if s.kind == kind]
        if not rows:
            continue
        lines += [f"### {kind} data", "",
                  "| split | method | 5cm/5deg | 10cm/10deg | 20cm/20deg | med. rot (deg) | med. trans (m) "
                  "| localized | mapping (s, median) | query ms (median / p90) | map size | peak mem (MB) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in rows:
            t = s.table
            lines.append(
                f"| {s.split} | {METHOD_LABELS[s.method]} | {t.within['5cm/5deg']:.1f}% | "
                f"{t.within['10cm/10deg']:.1f}% | {t.within['20cm/20deg']:.1f}% | "
                f"{_f(t.median_rot_deg, 2)} | {_f(t.median_trans_m, 3)} | {t.localized_pct:.0f}% | "
                f"{s.mapping_seconds_median:.1f} | {s.query_ms_median:.0f} / {s.query_ms_p90:.0f} | "
                f"{_size(s.map_bytes_median)} | {s.peak_memory_mb_max:.0f} |")
        lines.append("")
        for reference in ("aceg", "aceg-tri"):
            lines += comparison_lines(rows, reference)
        if runs:
            lines += confidence_lines(runs, kind)
        if runs and kind == "real":
            lines += per_dataset_lines(runs, kind)
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def comparison_lines(rows: list[SplitSummary], reference: str = "aceg") -> list[str]:
    """An ACE-G variant (``reference``) against each method that is not ACE-G, in one split
    table: the difference in points of % within 10 cm / 10 deg (positive: ACE-G better) and
    the ratios of mapping time, median query time and map size (other method / ACE-G,
    measured in the same run)."""
    ref = {s.split: s for s in rows if s.method == reference}
    others = [s for s in rows if SCR_METHODS.get(s.method, ("",))[0] != "aceg" and s.split in ref]
    if not others:
        return []
    label = METHOD_LABELS[reference]
    out = [f"{label} compared with each baseline (points: {label} minus the baseline "
           f"at 10cm/10deg; ratios: the baseline divided by {label}):", "",
           "| split | baseline | points at 10cm/10deg | mapping time ratio | query time ratio | map size ratio |",
           "|---|---|---|---|---|---|"]
    for s in others:
        r = ref[s.split]
        points = r.table.within["10cm/10deg"] - s.table.within["10cm/10deg"]
        out.append(f"| {s.split} | {METHOD_LABELS[s.method]} | {points:+.1f} | "
                   f"{_ratio(s.mapping_seconds_median, r.mapping_seconds_median)} | "
                   f"{_ratio(s.query_ms_median, r.query_ms_median)} | "
                   f"{_ratio(s.map_bytes_median, r.map_bytes_median)} |")
    return out + [""]


def confidence_stats(errors: list[tuple[float, float]], confident: list[bool]) -> dict:
    """How the confident flag relates to being within 10 cm / 10 deg: ``flagged`` poses,
    ``precision`` (% of them that are good), ``good`` poses and ``missed`` (good, not
    flagged)."""
    good = [r <= 10.0 and t <= 0.10 for r, t in errors]
    flagged = sum(confident)
    right = sum(g and c for g, c in zip(good, confident, strict=True))
    return {"queries": len(good), "flagged": flagged, "good": sum(good),
            "precision": 100.0 * right / flagged if flagged else math.nan,
            "missed": sum(g and not c for g, c in zip(good, confident, strict=True))}


def confidence_lines(runs: list[MethodRun], kind: str) -> list[str]:
    """Per ACE-G method and split (pooled over the data sets of ``kind``): the confident
    flag's precision and the good poses it misses."""
    pooled: dict[tuple[str, str], tuple[list, list]] = {}
    for r in runs:
        if r.kind != kind:
            continue
        for split, flags in r.confident.items():
            errs, conf = pooled.setdefault((r.method, split), ([], []))
            errs += r.errors[split]
            conf += flags
    if not pooled:
        return []
    out = ["Confident flag (a pose is good within 10cm/10deg; precision: % of the flagged "
           "poses that are good; missed: good poses not flagged):", "",
           "| split | method | queries | flagged | precision | good | missed |",
           "|---|---|---|---|---|---|---|"]
    for (method, split), (errs, conf) in sorted(pooled.items(), key=lambda kv: (kv[0][1], METHODS.index(kv[0][0]))):
        c = confidence_stats(errs, conf)
        out.append(f"| {split} | {METHOD_LABELS[method]} | {c['queries']} | {c['flagged']} | "
                   f"{_f(c['precision'], 1)}% | {c['good']} | {c['missed']} |")
    return out + [""]


def per_dataset_lines(runs: list[MethodRun], kind: str = "real") -> list[str]:
    """One row per data set, method and split: % within 10 cm / 10 deg, median errors and
    the median translation error over feature matching's in the same run (the pooled table
    mixes scenes of very different scale)."""
    sel = [r for r in runs if r.kind == kind]
    if not sel:
        return []
    reference = {(r.dataset, split): accuracy_table([e[0] for e in errs], [e[1] for e in errs])
                 for r in sel if r.method == "feature-matching" for split, errs in r.errors.items()}
    out = [f"### {kind} data per set", "",
           "| set | split | method | queries | 10cm/10deg | med. rot (deg) | med. trans (m) "
           "| med. trans / feature matching |",
           "|---|---|---|---|---|---|---|---|"]
    for r in sorted(sel, key=lambda r: (r.dataset, METHODS.index(r.method))):
        for split, errs in r.errors.items():
            t = accuracy_table([e[0] for e in errs], [e[1] for e in errs])
            ref = reference.get((r.dataset, split))
            ratio = _ratio(t.median_trans_m, ref.median_trans_m) if ref else "-"
            out.append(f"| {r.dataset} | {split} | {METHOD_LABELS[r.method]} | {len(errs)} | "
                       f"{t.within['10cm/10deg']:.1f}% | {_f(t.median_rot_deg, 2)} | "
                       f"{_f(t.median_trans_m, 3)} | {ratio} |")
    return out + [""]


def _ratio(x: float, ref: float) -> str:
    return f"{x / ref:.2f}x" if ref > 0 and math.isfinite(x) and math.isfinite(ref) else "-"


def _f(x: float, d: int) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.{d}f}"


def _size(b: float) -> str:
    return f"{b / 2**20:.2f} MB" if b >= 2**20 else f"{b / 2**10:.0f} KB"


def machine_description() -> str:
    import os

    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({'CUDA' if torch.cuda.is_available() else 'CPU'}), {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}")


def update_markdown_file(path: Path, section: str) -> None:
    """Replace the benchmark section of ``path`` (between the markers), or append it."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


def write_json(path: Path, runs: list[MethodRun], summaries: list[SplitSummary], meta: dict) -> None:
    def enc(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x

    payload = {
        **meta,
        "summary": [{"method": s.method, "kind": s.kind, "split": s.split, **s.table.to_dict(),
                     "mapping_seconds_median": s.mapping_seconds_median,
                     "query_ms_median": s.query_ms_median, "query_ms_p90": s.query_ms_p90,
                     "map_bytes_median": s.map_bytes_median, "peak_memory_mb_max": s.peak_memory_mb_max}
                    for s in summaries],
        "runs": [{"method": r.method, "dataset": r.dataset, "kind": r.kind,
                  "mapping_seconds": r.mapping_seconds, "map_bytes": r.map_bytes,
                  "peak_memory_bytes": r.peak_memory_bytes,
                  "errors": {k: [[enc(a), enc(b)] for a, b in v] for k, v in r.errors.items()},
                  "query_seconds": r.query_seconds, "confident": r.confident} for r in runs],
    }
    atomic_write_text(path, json.dumps(payload, indent=1, default=lambda o: None) + "\n")
