"""How well can the ACE-G architecture hold one scene when the transformer may adapt too?

    .venv/bin/python benchmarks/aceg_joint_fit.py /work/data/heldout/scene_0000 --steps 1000

Runs pre-training iterations on a single scene (``aceg synth`` layout) with its one map
code never re-initialised and the transformer updated on every mapping iteration, starting
from the shipped model (``--init``, default) or from random weights of a given size
(``--regressor-config JSON``). Prints every 100 steps the mapping patches' median
reprojection error (px) and fraction within 10 px. Compare with `aceg map`, which
optimises only the code against the frozen transformer (``aceg_fit_probe.py``): if the
joint fit is much tighter, the architecture can represent the scene and what is missing is
a transformer pre-trained well enough to be used frozen.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from aceg.model.map_file import WEIGHTS_DIR
from aceg.pretraining.pretrain_config import PretrainConfig
from aceg.pretraining.trainer import Pretrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", help="one scene folder with mapping/ and query_*/ splits")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--regressor-config", default=None, metavar="JSON",
                        help="start from random weights of these sizes instead of the shipped model")
    args = parser.parse_args()
    arch = {"regressor": json.loads(args.regressor_config)} if args.regressor_config else \
        {"init": str(WEIGHTS_DIR / "transformer-xfeat.safetensors")}
    cfg = PretrainConfig(steps=args.steps, batch_patches=2048, scenes_per_step=1, pool_size=1,
                         code_lifetime=10**9, code_warmup=0, regressor_every=1, lr=5e-4,
                         lr_warmup_steps=50, code_lr=1e-2, depth_fraction=0.0,
                         checkpoint_every=10**9, log_every=100, **arch)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Pretrainer([args.scene], tmp, cfg, progress=False)
        start = time.perf_counter()
        while trainer.step < args.steps:
            trainer.run(stop_after=100)
            stats = trainer.log_rows[-1]
            print(f"step {trainer.step:5d} ({time.perf_counter() - start:5.0f} s): mapping median "
                  f"{stats['m_median_px']:.1f} px, {100 * stats['m_in10']:.0f}% within 10 px",
                  flush=True)

if __name__ == "__main__":
    main()
