"""Is ACE-G limited by how well a map code fits the mapping views, or by generalisation?

    .venv/bin/python benchmarks/aceg_fit_probe.py /work/data/heldout 0 300:0.01 300:0.005 1200:0.01
    .venv/bin/python benchmarks/aceg_fit_probe.py /work/data/heldout 0 300:0.1 --code-form keys_values
    .venv/bin/python benchmarks/aceg_fit_probe.py /work/data/heldout 0 300:0.1 --code-init random

Maps one synthetic scene (``aceg synth`` layout; SCENE_INDEX in sorted order) with ACE-G
(fast preset otherwise) once per ITERATIONS:LR_MAX[:BATCH] setting and localizes three
sets: every 4th **mapping** frame (the views the code was fitted to), ``query_same`` and
``query_light``. Prints, per setting, the mapping time, the last training statistics
(median reprojection error in px, fraction of patches within 10 px) and per set the median
position error (m) and the % of images within 10 cm / 10 deg. If the mapping views are
themselves localized poorly, the bottleneck is the fit (code + transformer capacity or
optimisation), not generalisation to other lighting or viewpoints.

``--code-form`` reads the same weights with the other map-code form
(:data:`aceg.model.regressor.CODE_FORMS`): "tokens" (keys and values projected from code
tokens) against "keys_values" (free keys and values), which isolates what the code's form
costs in fit. ``--code-init`` compares how the code starts (anchored on the scene's own
patches, the default, or random).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from aceg.evaluation.benchmark import run_method, synthetic_datasets
from aceg.evaluation.metrics import accuracy_table
from aceg.model.map_file import load_map, resolve_regressor
from aceg.model.regressor import CODE_FORMS, CODE_INITS


def parse_setting(text: str) -> tuple[int, float, int | None]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ITERATIONS:LR_MAX[:BATCH]")
    return int(parts[0]), float(parts[1]), int(parts[2]) if len(parts) == 3 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of synthetic scenes (aceg synth)")
    parser.add_argument("scene", type=int, help="index of the scene in sorted order")
    parser.add_argument("settings", nargs="+", type=parse_setting, metavar="ITERATIONS:LR_MAX[:BATCH]")
    parser.add_argument("--regressor", default="src/aceg/weights/transformer-xfeat.safetensors",
                        help="map-code transformer file (default: the shipped transformer)")
    parser.add_argument("--code-form", choices=CODE_FORMS, default=None,
                        help="read the regressor's weights with this map-code form")
    parser.add_argument("--code-init", choices=CODE_INITS, default=CODE_INITS[0],
                        help="how the map code starts (aceg map --code-init)")
    args = parser.parse_args()
    regressor = args.regressor
    if args.code_form:  # the same weights, read with the other code form
        regressor = resolve_regressor(args.regressor, "transformer").model.with_code_form(args.code_form).eval()

    data = synthetic_datasets(args.root)[args.scene]
    mapping = data.mapping
    data.queries = {"mapping_views": mapping.subset(range(0, len(mapping), 4), name="mapping_views"),
                    "query_same": data.queries["query_same"], "query_light": data.queries["query_light"]}
    for iterations, lr_max, batch in args.settings:
        with tempfile.TemporaryDirectory() as tmp:
            run = run_method("aceg", data, Path(tmp), {
                "preset": "fast", "iterations": iterations, "lr_max": lr_max, "batch_size": batch,
                "regressor": regressor, "code_init": args.code_init}, log=lambda _line: None)
            fit = load_map(Path(tmp) / f"{data.name}-aceg.map").stats
        row = {"mapping_s": round(run.mapping_seconds, 1),
               "train": {k: round(float(fit[k]), 3) for k in ("loss", "valid", "in10", "median_px")}}
        for split, errors in run.errors.items():
            table = accuracy_table([e[0] for e in errors], [e[1] for e in errors])
            row[split] = {"median_m": round(table.median_trans_m, 3),
                          "within_10cm_10deg": round(table.within["10cm/10deg"], 1)}
        form = (f" code_form={args.code_form}" if args.code_form else "") + f" code_init={args.code_init}"
        print(f"{data.name}{form} iterations={iterations} lr_max={lr_max} batch={batch or 'preset'}: "
              + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
