"""Speed of the synthetic scene generator: frames per second, RGB + depth written.

Generates one scene per image size with only the mapping split (texture generation, path
vetting, rendering and PNG writing all included) and prints one line per size:

    .venv/bin/python benchmarks/synth_speed.py [--frames 200] [--seed 0]

Target: a 200-frame scene in under 20 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from aceg.data.synthetic.generate import SynthSettings, generate_scene
from aceg.data.synthetic.renderer import Renderer

SIZES = ((240, 320), (480, 640))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="mapping frames per scene")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    args = parser.parse_args()
    renderer = Renderer()
    gl = renderer.ctx.info["GL_RENDERER"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"synth_speed: {args.frames} frames, seed {args.seed}, {gl}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        for height, width in SIZES:
            settings = SynthSettings(frames_mapping=args.frames, frames_query=0, height=height,
                                     width=width, splits=("mapping",), contact_sheet=False)
            start, cpu_start = time.perf_counter(), time.process_time()
            generate_scene(Path(tmp) / f"{height}x{width}", args.seed, settings,
                           renderer=renderer)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start  # all threads, llvmpipe's too
            print(f"{height}x{width}: {args.frames} frames in {seconds:.1f} s = "
                  f"{args.frames / seconds:.1f} frames/s (RGB + depth, PNGs written; "
                  f"{cpu_seconds:.1f} CPU-s)")
    renderer.release()


if __name__ == "__main__":
    main()
