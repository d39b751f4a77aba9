"""The report of :mod:`aceg.evaluation.benchmark`'s runs: per method and split the pooled
accuracy table and costs (:func:`summarise`), the markdown section ``aceg bench`` writes
between :data:`~aceg.evaluation.benchmark.MARK_START` and
:data:`~aceg.evaluation.benchmark.MARK_END` (:func:`markdown`), and the raw JSON
(:func:`write_json`).
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aceg.evaluation.benchmark import (
    ACEG_METHODS,
    MARK_END,
    MARK_START,
    METHOD_LABELS,
    METHODS,
    MethodRun,
)
from aceg.evaluation.metrics import AccuracyTable, accuracy_table
from aceg.io import atomic_write_text


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
        for reference in ("aceg", "aceg-kp", "aceg-tri"):
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
    others = [s for s in rows if s.method not in ACEG_METHODS and s.split in ref]
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
                   f"{_pct_or_dash(c['precision'])} | {c['good']} | {c['missed']} |")
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


def _pct_or_dash(x: float) -> str:
    """A percentage with one decimal, or "-" when undefined (nothing flagged)."""
    return "-" if math.isnan(x) else f"{x:.1f}%"
