"""Query time stage by stage on real maps, under several query settings, in one run.

Maps each data set with the default model (or reads the maps already made in ``--work``),
then localizes its queries once per setting of ``--settings`` and prints, side by side, the median
time of each stage (prepare, encode, anchor search, RANSAC, total), the accuracy
(10 cm / 10 deg) per split and the ratio of total times to the first setting's. Settings
alternate query by query, so a noisy machine slows them alike.

A setting is a named speed (:data:`aceg.localization.localizer.SPEEDS`: "accurate",
"fast") or words joined by "/": the patch cells read per query ("all", or the N the
encoder rates likeliest to hold keypoints, :data:`aceg.localization.localizer.QUERY_PATCHES`),
then optionally the encoder's runtime ("torch", "auto" or "onnxruntime",
:data:`aceg.localization.localizer.ENCODER_RUNTIME`) and "pN", the anchor lists each cell
searches (``AnchorConfig.lists_probed``). "2048/torch/p16" is the default before ONNX
Runtime.

    aceg synth /work/data/room-200 --scenes 1 --seed 424242 --frames-mapping 200 \\
        --frames-query 30 --size 480x640 --splits mapping,query_same,query_view
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/query_speed.py \\
        --synthetic /work/data/room-200 --real ../shared/data --settings 2048/torch/p16 accurate fast
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from _datasets import add_dataset_arguments, datasets

from aceg.data.images import load_image
from aceg.evaluation.metrics import accuracy_table, pose_errors
from aceg.localization.localizer import SPEEDS, Localizer, speed_settings
from aceg.mapping.mapper import map_scene
from aceg.model.onnx_network import RUNTIMES

STAGES = ("prepare", "encode", "regress", "ransac", "total")


def parse_setting(text: str) -> dict:
    """Keyword arguments of :func:`localizer` for a setting (module docstring)."""
    if text in SPEEDS:
        return speed_settings(text)
    words = text.split("/")
    setting = {"query_patches": None if words[0] == "all" else int(words[0])}
    for word in words[1:]:
        if word in RUNTIMES:
            setting["encoder_runtime"] = word
        elif word.startswith("p") and word[1:].isdigit():
            setting["lists_probed"] = int(word[1:])
        else:
            raise SystemExit(f"unknown word {word!r} in setting {text!r}")
    return setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(parser, ("query_same", "query_view"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/aceg-query-speed"),
                        help="where the maps are made (and reused from)")
    parser.add_argument("--settings", nargs="+", default=["accurate", "fast"],
                        help="settings to compare (module docstring): e.g. all, 2048/torch, 1024/auto/p8")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the queries (the first warms up)")
    args = parser.parse_args()

    sets = datasets(args)
    settings = {s: parse_setting(s) for s in args.settings}
    times = {s: {k: [] for k in STAGES} for s in settings}
    errors: dict[str, dict[str, list]] = {s: {} for s in settings}
    print("command: " + " ".join(sys.argv))
    print(f"threads: {torch.get_num_threads()}")
    for data in sets:
        map_path = args.work / f"{data.name}.map"
        if not map_path.exists():
            args.work.mkdir(parents=True, exist_ok=True)
            result = map_scene(data.mapping, map_path, model="anchors", progress=False)
            print(f"{data.name}: mapped {result.frames} images in {result.seconds['total']:.1f} s, "
                  f"map {result.file_size / 1e6:.2f} MB", flush=True)
        localizers = {s: Localizer(map_path, **kw) for s, kw in settings.items()}
        queries = [(split, f) for split, scene in data.queries.items() for f in scene.frames]
        for round_ in range(args.rounds):
            for split, frame in queries:
                rgb = load_image(frame.image_path)
                transform = data.transforms.get(split)
                if transform is not None:
                    rgb = transform(rgb)
                for s, loc in localizers.items():
                    r = loc.localize(rgb, frame.intrinsics, frame.name)
                    if round_ < args.rounds - 1:
                        continue
                    for k in STAGES:
                        times[s][k].append(r.timings.get(k, 0.0))
                    errors[s].setdefault(split, []).append(
                        pose_errors(r.cam_to_world, frame.cam_to_world)
                        if r.cam_to_world is not None else (float("inf"),) * 2)
    first = next(iter(settings))
    w = max(12, *(len(s) + 2 for s in settings))  # column width
    print(f"{'stage (median ms)':<26}" + "".join(f"{s:>{w}}" for s in settings))
    for k in STAGES:
        print(f"{k:<26}" + "".join(f"{1000 * statistics.median(times[s][k]):{w}.1f}" for s in settings))
    for split in errors[first]:
        line = f"{split + ' 10cm/10deg':<26}"
        for s in settings:
            e = errors[s][split]
            line += f"{accuracy_table([a for a, _ in e], [b for _, b in e]).within['10cm/10deg']:{w - 1}.1f}%"
        print(line + f"  ({len(errors[first][split])} queries)")
    base = statistics.median(times[first]["total"])
    print("total / " + first + ": " + ", ".join(
        f"{s} {statistics.median(times[s]['total']) / base:.2f}" for s in settings))


if __name__ == "__main__":
    main()
