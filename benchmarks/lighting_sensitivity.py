"""How much does a change of light alone cost a map's correspondences, patch by patch?

    .venv/bin/python benchmarks/lighting_sensitivity.py /work/data/heldout 0 1 --model anchors
    .venv/bin/python benchmarks/lighting_sensitivity.py /work/data/heldout 0 1 --model ace
    .venv/bin/python benchmarks/lighting_sensitivity.py /work/data/heldout 0 1 \
        --regressor src/aceg/weights/transformer-xfeat.safetensors --regressor other.safetensors

``aceg synth`` renders ``query_light`` from exactly the poses of ``query_same`` (lighting B
instead of A), so every patch of a query_light image has a twin, the same pixel of the
same view under the mapping light. For each scene (indices in sorted order) the probe maps
``mapping/`` with the given model (and preset), predicts a scene coordinate for every patch
of both twins, and calls a patch *correct* when its prediction reprojects within 10 px of
the patch centre under the ground-truth pose (what RANSAC-PnP needs). Patches are grouped
by the cosine similarity of the encoder features of the two twins, and each group reports:

* ``share``: % of all patches in the group;
* ``same``: % correct under lighting A; ``light``: % correct under lighting B;
* ``kept``: % of the patches correct under A that stay correct under B.

``kept`` below 100 % where the features hardly change (cosine above 0.99) means the
regressor, not the encoder, loses the correspondence: a map that is robust to light keeps
nearly all of them there. The last line gives the same figures over all patches. The
ceiling of any lighting-invariance fix is ``light == same``: query_light then localizes
as query_same does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from aceg.data.camera import project
from aceg.data.images import prepare_image
from aceg.evaluation.benchmark import synthetic_datasets
from aceg.localization.localizer import Localizer
from aceg.mapping.mapper import MODELS, map_scene

#: Upper edges of the feature-cosine groups (the last group takes the rest).
COSINE_EDGES = (0.9, 0.95, 0.98, 0.99)
CORRECT_PX = 10.0


def twin_patches(loc: Localizer, frame_a, frame_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patch of a twin pair (same pose, lighting A / B): feature cosine (P,), and
    correct under A (P,) bool, correct under B (P,) bool."""
    feats, correct = [], []
    for frame in (frame_a, frame_b):
        prep = prepare_image(frame.image_path, frame.intrinsics, loc.data.short_side,
                             loc.encoder.stride)
        fmap = loc.encoder.encode(prep.rgb)[0]  # (C, h, w)
        world, _ = loc.predict(fmap)
        pixels = loc.encoder.centres(*fmap.shape[1:]).astype(np.float64)
        reproj = np.linalg.norm(project(world, prep.intrinsics.K, frame.cam_to_world) - pixels, axis=1)
        correct.append(np.nan_to_num(reproj, nan=np.inf) < CORRECT_PX)
        feats.append(F.normalize(fmap.reshape(fmap.shape[0], -1), dim=0))
    cosine = (feats[0] * feats[1]).sum(0).numpy()
    return cosine, correct[0], correct[1]


def group_table(cosine: np.ndarray, ok_a: np.ndarray, ok_b: np.ndarray) -> list[dict]:
    edges = (-1.0, *COSINE_EDGES, 1.01)
    rows = []
    for lo, hi in [*zip(edges[:-1], edges[1:], strict=True), (-1.0, 1.01)]:
        m = (cosine >= lo) & (cosine < hi)
        label = "all" if (lo, hi) == (-1.0, 1.01) else f"cos < {hi:g}" if lo == -1.0 else \
            f"cos >= {lo:g}" if hi > 1 else f"{lo:g} <= cos < {hi:g}"
        rows.append({"group": label, "share": round(100 * m.mean(), 1),
                     "same": round(100 * ok_a[m].mean(), 1) if m.any() else None,
                     "light": round(100 * ok_b[m].mean(), 1) if m.any() else None,
                     "kept": round(100 * ok_b[m & ok_a].mean(), 1) if (m & ok_a).any() else None})
    return rows


def probe_scene(data, model: str, preset: str, regressor: str | None) -> tuple[np.ndarray, ...]:
    """Map ``data.mapping`` and return (cosine, correct under A, correct under B) per patch twin."""
    same, light = data.queries["query_same"].frames, data.queries["query_light"].frames
    if [f.name for f in same] != [f.name for f in light]:
        raise SystemExit(f"{data.name}: query_same and query_light do not hold the same views")
    with tempfile.TemporaryDirectory() as tmp:
        settings = {} if model == "anchors" else {"preset": preset}
        if model != "ace":
            settings["regressor"] = regressor
        result = map_scene(data.mapping, Path(tmp) / "scene.map", model=model, progress=False,
                           **settings)
        loc = Localizer(result.path, regressor=regressor)
        pairs = [twin_patches(loc, a, b) for a, b in zip(same, light, strict=True)]
    return tuple(np.concatenate(x) for x in zip(*pairs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of synthetic scenes (aceg synth)")
    parser.add_argument("scenes", type=int, nargs="+", help="scene indices in sorted order")
    parser.add_argument("--model", choices=MODELS, default=MODELS[0])
    parser.add_argument("--preset", default="fast", help="transformer, ace: mapping preset")
    parser.add_argument("--regressor", action="append", default=None,
                        help="ACE-G regressor file (default: shipped); repeat it to compare "
                             "several regressors side by side on the same scenes")
    args = parser.parse_args()
    datasets = synthetic_datasets(args.root)
    regressors = (args.regressor or [None]) if args.model != "ace" else [None]
    labels = [Path(r).stem if r else ("shipped" if args.model != "ace" else "ace") for r in regressors]
    if len(set(labels)) < len(labels):  # files of the same name in other folders: number them
        labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]
    pooled: dict[str, list[tuple[np.ndarray, ...]]] = {label: [] for label in labels}
    for index in args.scenes:
        data = datasets[index]
        for label, regressor in zip(labels, regressors, strict=True):
            scene = probe_scene(data, args.model, args.preset, regressor)
            pooled[label].append(scene)
            print(f"{data.name} ({args.model} {label}, {args.preset}): "
                  + json.dumps(group_table(*scene)[-1]), flush=True)
    tables = {label: group_table(*(np.concatenate(x) for x in zip(*runs, strict=True)))
              for label, runs in pooled.items()}
    first = next(iter(tables.values()))
    twins = sum(len(s[0]) for s in next(iter(pooled.values())))
    print(f"\npooled over scenes {args.scenes}, {args.model}, {args.preset} preset, "
          f"{twins} patch twins; per regressor: correct under lighting A / under B / kept under B")
    print("| features A vs B | share | " + " | ".join(tables) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in tables) + " |")
    for i, row in enumerate(first):
        cells = [f"{t[i]['same']} / {t[i]['light']} / {t[i]['kept']} %" for t in tables.values()]
        print(f"| {row['group']} | {row['share']} % | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
