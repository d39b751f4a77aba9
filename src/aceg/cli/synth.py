"""``aceg synth``: generate synthetic indoor scenes with lighting and viewpoint changes."""

from __future__ import annotations

import re
from pathlib import Path

from aceg.errors import AcegError
from aceg.io import check_output_path

HELP = "generate synthetic indoor scenes (mapping + query splits with light/view changes)"

DESCRIPTION = """\
Generate procedural indoor scenes rendered headless (moderngl on EGL), each written as
OUT/scene_XXXX/ with one folder per split in the ACE / DSAC* layout (rgb/, poses/,
calibration/, depth/ in 16-bit millimetres):

  mapping/      a handheld scanning path, lighting A
  query_same/   new viewpoints near the path, lighting A
  query_light/  the query_same poses under lighting B (lights moved, recoloured, switched)
  query_view/   viewpoints farther from the path (other heights, opposite directions)
  query_moved/  viewpoints like query_same with some objects displaced

plus scene.json (generator version, seed, settings) and contact_sheet.png. Scene i gets the
seed derived from (--seed, i); a held-out benchmark uses another --seed. Output is
deterministic for a given seed: depth byte-identical, images equal up to float rounding.
"""


def parse_size(text: str) -> tuple[int, int]:
    """``"240x320"`` -> (240, 320), height first."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise AcegError(f"--size must be HEIGHTxWIDTH in pixels (e.g. 240x320), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def add_arguments(parser) -> None:
    from aceg.data.synthetic.generate import SPLITS

    parser.add_argument("out", type=Path, help="output folder (scene_XXXX/ folders go inside)")
    parser.add_argument("--scenes", type=int, default=1, help="number of scenes (default: 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; scene i uses a seed derived from it and i (default: 0)")
    parser.add_argument("--first-index", type=int, default=0,
                        help="index of the first scene, to extend a run (default: 0)")
    parser.add_argument("--frames-mapping", type=int, default=200,
                        help="mapping frames per scene (default: 200)")
    parser.add_argument("--frames-query", type=int, default=50,
                        help="frames per query split (default: 50)")
    parser.add_argument("--size", default="240x320", help="image HEIGHTxWIDTH (default: 240x320)")
    parser.add_argument("--splits", default=",".join(SPLITS),
                        help="comma-separated splits to write (default: all)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default: min(2, scenes))")
    parser.add_argument("--texture-dir", action="append", type=Path, default=None,
                        help="extra folder of photos for textures (repeatable; default: "
                             "shared/data/textures if it has a SOURCES.md)")
    parser.add_argument("--overwrite", action="store_true",
                        help="regenerate scenes whose folder already has a scene.json")
    parser.add_argument("--no-contact-sheet", action="store_true",
                        help="do not write contact_sheet.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from aceg.data.synthetic.generate import SynthSettings, generate_scenes

    height, width = parse_size(args.size)
    if args.scenes < 1:
        raise AcegError(f"--scenes must be at least 1, got {args.scenes}")
    if args.seed < 0 or args.first_index < 0:
        raise AcegError("--seed and --first-index must be non-negative")
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if "mapping" not in splits:
        splits = ("mapping", *splits)
    workers = args.workers if args.workers is not None else min(2, args.scenes)
    if workers < 1:
        raise AcegError(f"--workers must be at least 1, got {workers}")
    check_output_path(args.out, folder=True, what="generated scenes")
    settings = SynthSettings(
        frames_mapping=args.frames_mapping,
        frames_query=args.frames_query,
        height=height,
        width=width,
        splits=splits,
        contact_sheet=not args.no_contact_sheet,
        texture_dirs=None if args.texture_dir is None else tuple(str(d) for d in args.texture_dir),
    )
    for folder in settings.texture_dirs or ():
        if not Path(folder).is_dir():
            raise AcegError(f"{folder}: texture folder not found")
    summaries = generate_scenes(args.out, args.seed, args.scenes, settings, workers=workers,
                                first_index=args.first_index, overwrite=args.overwrite,
                                progress=not args.quiet)
    skipped = sum(s["skipped"] for s in summaries)
    made = len(summaries) - skipped
    note = f" ({skipped} already there, kept; --overwrite regenerates)" if skipped else ""
    print(f"aceg synth: {made} scene(s) written to {args.out}{note}")
    return 0
