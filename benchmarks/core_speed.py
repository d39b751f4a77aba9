"""Speed and size of the core pipeline on 2 CPU threads.

    .venv/bin/python benchmarks/core_speed.py [--images 200] [--queries 20] [--skip-mapping] [--regressor F ...]
    .venv/bin/python benchmarks/core_speed.py --skip-query --images 200 --model transformer --triangulate

Prints:
* query time per 480x640 image: prepare, encoder, ACE-G regressor (default
  RegressorConfig, 4800 patches), ACE head, RANSAC-PnP (on real predictions of an ACE map
  of a synthetic scene, so RANSAC sees a realistic inlier ratio), and the ACE-G total
  (prepare + encode + regressor + RANSAC);
* mapping with ``--model`` (anchors by default; the transformer with its default preset) on
  an N-image synthetic scene at short side 480: wall time, peak memory (max RSS) and map
  file size (``--triangulate``, transformer: with depth triangulated between the mapping
  images, and the time that takes).

The synthetic scene is a textured wall + floor rendered with exact homographies
(``tests/planar_scenes.py``); the ACE-G regressor is the shipped default model (its cost
depends on its sizes, not on its weights).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from aceg.data.images import prepare_image  # noqa: E402
from aceg.localization.localizer import KEEP_QUANTILE, Localizer  # noqa: E402
from aceg.mapping.mapper import map_scene  # noqa: E402
from aceg.model.anchors import AnchorRegressor  # noqa: E402
from aceg.model.encoder import get_encoder  # noqa: E402
from aceg.model.map_file import default_regressor, load_regressor  # noqa: E402
from planar_scenes import corner_scene  # noqa: E402


def ms(values) -> str:
    return f"{1000 * float(np.median(values)):6.1f} ms"


def query_speed(root: Path, n_queries: int, others: list[str]) -> None:
    scene = corner_scene(root / "q", n=12 + n_queries, size=(640, 480), seed=5)
    mapping, queries = scene.subset(range(12)), scene.subset(range(12, 12 + n_queries))
    ace_map = root / "q.map"
    map_scene(mapping, ace_map, model="ace", preset="fast", progress=False)
    loc = Localizer(ace_map)
    enc = get_encoder("xfeat")
    reg = default_regressor("anchors", warn=False)
    gen = torch.Generator().manual_seed(0)
    def full_code(model):
        if isinstance(model, AnchorRegressor):  # a full code: max_anchors random anchors
            n = model.config.max_anchors
            return model.make_code(torch.randn(n, 64, generator=gen), torch.randn(n, 3, generator=gen))
        return model.init_code(gen)

    code = full_code(reg.model)
    extra = {p: load_regressor(p).model.eval() for p in others}
    if any(not isinstance(m, type(reg.model)) or m.config.code_width != reg.model.config.code_width
           for m in extra.values()):
        raise SystemExit("--regressor files must be of the shipped model's kind and code width")
    # The same code, unless another anchor budget asks for a code of its own size.
    extra_codes = {p: code if getattr(m.config, "max_anchors", None) == getattr(reg.model.config, "max_anchors", None)
                   else full_code(m) for p, m in extra.items()}
    t_extra: dict[str, list[float]] = {p: [] for p in others}
    t_prep, t_enc, t_reg, t_head, t_ransac, t_total, inl = [], [], [], [], [], [], []
    for i, f in enumerate(list(queries) * 2):
        t0 = time.perf_counter()
        prep = prepare_image(f.image_path, f.intrinsics, 480, enc.stride)
        t1 = time.perf_counter()
        feats = enc.encode(prep.rgb)[0]
        t2 = time.perf_counter()
        flat = feats.reshape(64, -1).T
        with torch.inference_mode():
            _, log_unc = reg.model(flat, code)
        t3 = time.perf_counter()
        world, _ = loc.predict(feats)
        t4 = time.perf_counter()
        # ACE-G keeps the KEEP_QUANTILE most certain patches: time RANSAC on that many.
        keep = np.argsort(log_unc.numpy())[: int(KEEP_QUANTILE * len(world))]
        pixels = enc.centres(*feats.shape[1:]).astype(np.float64)
        r = loc.solve_pnp(pixels[keep], world[keep], prep.intrinsics, 640, 480)
        t5 = time.perf_counter()
        for p, m in extra.items():
            t6 = time.perf_counter()
            with torch.inference_mode():
                m(flat, extra_codes[p])
            if i >= len(queries):
                t_extra[p].append(time.perf_counter() - t6)
        if i < len(queries):  # first round warms up
            continue
        t_prep.append(t1 - t0)
        t_enc.append(t2 - t1)
        t_reg.append(t3 - t2)
        t_head.append(t4 - t3)
        t_ransac.append(t5 - t4)
        t_total.append((t1 - t0) + (t2 - t1) + (t3 - t2) + (t5 - t4))
        inl.append(r.inliers)
    n_patches = feats.shape[1] * feats.shape[2]
    print(f"query, 480x640 ({n_patches} patches), median of {len(t_total)} images:")
    print(f"  prepare (read+resize)  {ms(t_prep)}")
    print(f"  encoder xfeat          {ms(t_enc)}")
    print(f"  ACE-G regressor        {ms(t_reg)}  (config {reg.model.config})")
    print(f"  ACE head (512 wide)    {ms(t_head)}")
    print(f"  RANSAC-PnP + refine    {ms(t_ransac)}  (median {np.median(inl):.0f} inliers)")
    print(f"  ACE-G total            {ms(t_total)}  (prepare + encoder + regressor + RANSAC)")
    for p, t in t_extra.items():
        total = [a - b + c for a, b, c in zip(t_total, t_reg, t, strict=True)]
        print(f"  with {p}: regressor {ms(t)}, total {ms(total)}  (config {extra[p].config})")


def mapping_speed(root: Path, n_images: int, model: str = "anchors", triangulate: bool = False) -> None:
    scene = corner_scene(root / "m", n=n_images, size=(640, 480), seed=7)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        settings = {} if model == "anchors" else {"preset": "default", "triangulate": triangulate}
        result = map_scene(scene, root / "m.map", model=model, progress=False, **settings)
        wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = ", triangulated depth" if triangulate else ""
    print(f"{model} mapping{how}, {n_images} images 640x480 at short side 480:")
    if "triangulated" in result.stats:  # asked for, or the anchor model
        t = result.stats["triangulated"]
        print(f"  triangulation {t['seconds']:.1f} s ({t['points']} points, {t['cells']:.0f}% of patch cells)")
    print(f"  wall {wall:.1f} s (buffer {result.seconds['buffer']:.1f} s, train "
          f"{result.seconds['train']:.1f} s, {result.iterations} it, {result.patches} patches)")
    print(f"  peak memory (max RSS of the process) {rss:.0f} MiB (before mapping {rss0:.0f} MiB)")
    print(f"  map file {result.file_size / 1024:.1f} KiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-mapping", action="store_true")
    ap.add_argument("--skip-query", action="store_true")
    ap.add_argument("--model", choices=("anchors", "transformer"), default="anchors")
    ap.add_argument("--triangulate", action="store_true",
                    help="transformer: map with aceg map --triangulate")
    ap.add_argument("--regressor", nargs="*", default=[], metavar="FILE",
                    help="also time these regressors (same kind as the shipped one) on the same "
                         "images and code (an anchor model with another max_anchors: a random "
                         "code of that many anchors), and the total with each")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_query:
            query_speed(Path(tmp), args.queries, args.regressor)
        if not args.skip_mapping:
            mapping_speed(Path(tmp), args.images, args.model, args.triangulate)


if __name__ == "__main__":
    main()
