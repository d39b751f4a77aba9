"""Running an `aceg` command on 2 CPU processes under torchrun (gloo), for the DDP tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_two_processes(aceg_args: list[str], port: int) -> None:
    """`torchrun --nproc-per-node 2 -m aceg ARGS` on one thread each; fails the test with
    the end of stderr unless it exits 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(port), "-m", "aceg", *aceg_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def agreed_weights(out: Path, step: int) -> str:
    """The weight hash both ranks recorded in ``out/ranks.json`` at ``step`` (asserted equal)."""
    ranks = json.loads((Path(out) / "ranks.json").read_text())
    assert ranks["step"] == step and len(ranks["weights"]) == 2
    assert ranks["weights"][0] == ranks["weights"][1]
    return ranks["weights"][0]
