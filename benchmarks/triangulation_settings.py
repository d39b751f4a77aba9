"""Mapping's triangulation under other settings, side by side in one run.

Maps every data set with the default model (``aceg``) once per triangulation setting
(fields of :class:`aceg.mapping.tracks.TriangulationConfig` over the default
:data:`aceg.mapping.triangulation.TRIANGULATION_CONFIG`; "default" alone is the shipped
one) and prints mapping time and accuracy (10 cm / 10 deg) per split, with the ratio of
mapping times to the first setting's.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/triangulation_settings.py \
        --synthetic /work/benchrun/work/synthetic --real ../shared/data \
        --settings depth_confidence=-1 depth_confidence=0.95
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from _datasets import add_dataset_arguments, datasets

import aceg.mapping.triangulation as triangulation
from aceg.evaluation.benchmark import run_method
from aceg.evaluation.metrics import accuracy_table


def within(errors: list[tuple[float, float]]) -> float:
    return accuracy_table([e[0] for e in errors], [e[1] for e in errors]).within["10cm/10deg"]


def median_cm(errors: list[tuple[float, float]]) -> float:
    good = [e[1] for e in errors if math.isfinite(e[1])]
    return 100.0 * statistics.median(good) if good else math.inf


def settings(default, spec: str):
    """``default`` with the fields of ``spec`` ("depth_confidence=0.95,max_keypoints=512")."""
    changes = {}
    for item in spec.split(","):
        if item == "default":
            continue
        key, value = item.split("=")
        changes[key] = type(getattr(default, key))(value)
    return replace(default, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(parser)
    parser.add_argument("--settings", nargs="+", default=["default"],
                        help="triangulation settings to compare: 'default', or TriangulationConfig "
                             "fields over it, e.g. depth_confidence=0.95,max_keypoints=512")
    parser.add_argument("--work", type=Path, default=None, help="where the maps go (default: a temporary folder)")
    args = parser.parse_args()

    sets = datasets(args)
    default = triangulation.TRIANGULATION_CONFIG
    work = args.work or Path(tempfile.mkdtemp(prefix="settings-"))
    rows = []  # (set, split, setting, mapping s, % within, median cm)
    for data in sets:
        for setting in args.settings:
            triangulation.TRIANGULATION_CONFIG = settings(default, setting)
            run = run_method("aceg", data, work / setting.replace(",", "_"), {},
                             log=lambda *a: None)
            for split, errors in run.errors.items():
                rows.append((data.name, split, setting, run.mapping_seconds, within(errors),
                             median_cm(errors), len(errors)))
                print(f"{data.name:<22} {split:<18} {setting:<12} mapped {run.mapping_seconds:6.1f} s  "
                      f"{within(errors):5.1f} %  median {median_cm(errors):6.1f} cm", flush=True)
    triangulation.TRIANGULATION_CONFIG = default

    print("\nper split: queries within 10 cm / 10 deg; mean of the sets' median errors")
    for split in dict.fromkeys(r[1] for r in rows):
        line = f"{split:<18}"
        for setting in args.settings:
            sel = [r for r in rows if r[1] == split and r[2] == setting]
            hits = round(sum(r[4] * r[6] / 100 for r in sel))
            total = sum(r[6] for r in sel)
            medians = [r[5] for r in sel if math.isfinite(r[5])]
            med = statistics.mean(medians) if medians else math.nan
            line += f" | {setting}: {hits}/{total} ({100 * hits / max(total, 1):.1f} %), {med:.1f} cm"
        print(line)
    mapped = {m: sum(t for _, t in {(r[0], r[3]) for r in rows if r[2] == m}) for m in args.settings}
    first = args.settings[0]
    for setting in args.settings[1:]:
        print(f"mapping time of all sets, {setting} / {first}: {mapped[setting] / max(mapped[first], 1e-9):.2f} "
              f"({mapped[setting]:.0f} s against {mapped[first]:.0f} s)")

if __name__ == "__main__":
    main()
