"""Do the localizer's RANSAC threshold and uncertainty filter suit these images?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/localization_settings.py /work/data/heldout 0 1 2 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/localization_settings.py /work/data/heldout 0 1 --preset default

Maps each synthetic scene (``aceg synth`` layout; indices in sorted order) once per method
(ACE-G: ``--model`` anchors or transformer, with the shipped or given regressor; and ACE), predicts the scene coordinates of
every query image of ``query_same``, ``query_light`` and ``query_view`` once, then solves
RANSAC-PnP for every combination of the inlier threshold (``--ransac-px``, pixels of the
prepared image) and, for ACE-G, the share of patches the uncertainty filter keeps
(``--keep``; ACE predicts no uncertainty and keeps all). Prints the % of images within
10 cm / 10 deg per split, method and setting in one table; the localizer's defaults are
marked. The defaults were taken from ACE (10 px at short side 480); the synthetic images
here have short side 240.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np

from aceg.data.images import prepare_image
from aceg.evaluation.benchmark import synthetic_datasets
from aceg.evaluation.metrics import pose_errors
from aceg.localization.localizer import KEEP_QUANTILE, RANSAC_PX, Localizer, confident_mask
from aceg.mapping.mapper import map_scene

SPLITS = ("query_same", "query_light", "query_view")


def predictions(loc: Localizer, frame):
    """(pixels (P, 2), world (P, 3), log_unc (P,) or None, intrinsics, width, height)."""
    prep = prepare_image(frame.image_path, frame.intrinsics, loc.data.short_side, loc.encoder.stride)
    feats = loc.encoder.encode(prep.rgb)[0]
    world, log_unc = loc.predict(feats)
    pixels = loc.encoder.centres(*feats.shape[1:]).astype(np.float64)
    return pixels, world, log_unc, prep.intrinsics, prep.rgb.shape[1], prep.rgb.shape[0]


def within(loc: Localizer, pred, gt_cam_to_world: np.ndarray, ransac_px: float, keep: float) -> bool:
    pixels, world, log_unc, intrinsics, width, height = pred
    mask = confident_mask(world, log_unc, keep)
    loc.ransac_px = ransac_px
    result = loc.solve_pnp(pixels[mask], world[mask], intrinsics, width, height)
    if result.cam_to_world is None:
        return False
    rot_deg, trans_m = pose_errors(result.cam_to_world, gt_cam_to_world)
    return trans_m <= 0.10 and rot_deg <= 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of synthetic scenes (aceg synth)")
    parser.add_argument("scenes", type=int, nargs="+", help="scene indices in sorted order")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--regressor", default=None, help="ACE-G regressor file (default: shipped)")
    parser.add_argument("--model", choices=("anchors", "transformer"), default="anchors",
                        help="the ACE-G model (default: %(default)s)")
    parser.add_argument("--ransac-px", type=float, nargs="+", default=[5.0, RANSAC_PX, 20.0])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, KEEP_QUANTILE, 1.0])
    args = parser.parse_args()
    datasets = synthetic_datasets(args.root)
    settings = {"aceg": list(itertools.product(args.ransac_px, args.keep)),
                "ace": [(px, 1.0) for px in args.ransac_px]}
    hits = {(m, s, split): [] for m, ss in settings.items() for s in ss for split in SPLITS}
    for index in args.scenes:
        data = datasets[index]
        for method in ("aceg", "ace"):
            regressor = args.regressor if method == "aceg" else None
            model = args.model if method == "aceg" else "ace"
            preset = {} if model == "anchors" else {"preset": args.preset}
            with tempfile.TemporaryDirectory() as tmp:
                result = map_scene(data.mapping, Path(tmp) / "scene.map", model, regressor,
                                   progress=False, **preset)
                loc = Localizer(result.path, regressor=regressor)
                for split in SPLITS:
                    for frame in data.queries[split].frames:
                        pred = predictions(loc, frame)
                        for s in settings[method]:
                            hits[(method, s, split)].append(within(loc, pred, frame.cam_to_world, *s))
        print(f"{data.name}: done", flush=True)
    print(f"\nscenes {args.scenes}, {args.preset} preset: % of query images within 10 cm / 10 deg")
    print("| method | RANSAC threshold | uncertainty filter keeps | " + " | ".join(SPLITS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in SPLITS) + " |")
    for method, ss in settings.items():
        for px, keep in ss:
            default = px == RANSAC_PX and (keep == KEEP_QUANTILE or method == "ace")
            cells = [f"{100 * np.mean(hits[(method, (px, keep), split)]):.1f} %" for split in SPLITS]
            label = "ACE-G" if method == "aceg" else "ACE"
            keep_text = f"{keep:g}" if method == "aceg" else "all (no uncertainty)"
            print(f"| {label}{' (default)' if default else ''} | {px:g} px | {keep_text} | "
                  + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
