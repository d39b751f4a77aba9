"""``aceg synth``: generate synthetic indoor scenes with lighting and viewpoint changes."""

from __future__ import annotations

import re
from pathlib import Path

from aceg.errors import AcegError
from aceg.io import check_output_path

HELP = ("generate synthetic indoor scenes (mapping + query splits with light/view changes): "
        "single rooms, or multi-room places with --place")

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

With --place apartment|office each scene is a multi-room place instead: a corridor with
--rooms rooms along it and one at its far end, joined by door openings, furnished from one
catalogue of furniture and one palette of materials so that look-alike rooms exist (an
office's rooms also come in two templates furnished alike). Its mapping split is one
continuous walk through every room, its query splits have the meanings above, spread over
the whole place (query_moved: objects displaced in every room). Beside scene.json and
contact_sheet.png it writes plan.png, the floor plan from above with the mapping walk and
the query cameras. Frames are written as they are rendered, with progress bars (checking
views, rendering frames) and the time left.
"""


def parse_size(text: str) -> tuple[int, int]:
    """``"240x320"`` -> (240, 320), height first."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise AcegError(f"--size must be HEIGHTxWIDTH in pixels (e.g. 240x320), got {text!r}")
    return int(match.group(1)), int(match.group(2))


#: Defaults that differ between single rooms and places: (room, place).
MODE_DEFAULTS = {"frames_mapping": (200, 2000), "frames_query": (50, 100),
                 "size": ("240x320", "480x640")}


def add_arguments(parser) -> None:
    from aceg.data.synthetic.floor_plans import MAX_ROOMS, MIN_ROOMS, PLACE_KINDS
    from aceg.data.synthetic.generate import SPLITS
    from aceg.data.synthetic.place_generate import DEFAULT_ROOMS

    parser.add_argument("out", type=Path, help="output folder (scene_XXXX/ folders go inside)")
    parser.add_argument("--place", choices=PLACE_KINDS, default=None,
                        help="make multi-room places of this kind instead of single rooms "
                             "(a corridor with rooms on both sides and one at its end)")
    parser.add_argument("--rooms", type=int, default=None,
                        help=f"rooms per place, the corridor not counted ({MIN_ROOMS}-"
                             f"{MAX_ROOMS}; default: " + ", ".join(
                                 f"{n} for {k}" for k, n in DEFAULT_ROOMS.items()) + ")")
    parser.add_argument("--scenes", type=int, default=1, help="number of scenes (default: 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; scene i uses a seed derived from it and i (default: 0)")
    parser.add_argument("--first-index", type=int, default=0,
                        help="index of the first scene, to extend a run (default: 0)")
    parser.add_argument("--frames-mapping", type=int, default=None,
                        help="mapping frames per scene (default: 200 for a room, 2000 for a "
                             "place)")
    parser.add_argument("--frames-query", type=int, default=None,
                        help="frames per query split (default: 50 for a room, 100 for a place)")
    parser.add_argument("--size", default=None,
                        help="image HEIGHTxWIDTH in pixels (default: 240x320 for a room, "
                             "480x640 for a place)")
    parser.add_argument("--splits", default=",".join(SPLITS),
                        help="comma-separated splits to write (default: all)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes for rooms (default: min(2, scenes)); places "
                             "render one after another in this process")
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

    mode = 0 if args.place is None else 1
    for name, defaults in MODE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[mode])
    height, width = parse_size(args.size)
    if args.scenes < 1:
        raise AcegError(f"--scenes must be at least 1, got {args.scenes}")
    if args.seed < 0 or args.first_index < 0:
        raise AcegError("--seed and --first-index must be non-negative")
    if args.place is None and args.rooms is not None:
        raise AcegError("--rooms needs --place apartment|office")
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if "mapping" not in splits:
        splits = ("mapping", *splits)
    workers = args.workers if args.workers is not None else min(2, args.scenes)
    if workers < 1:
        raise AcegError(f"--workers must be at least 1, got {workers}")
    if args.place is not None and args.workers is not None and args.workers > 1:
        raise AcegError("--workers applies to single rooms; places render one after another")
    check_output_path(args.out, folder=True, what="generated scenes")
    common = dict(
        frames_mapping=args.frames_mapping,
        frames_query=args.frames_query,
        height=height,
        width=width,
        splits=splits,
        contact_sheet=not args.no_contact_sheet,
        texture_dirs=None if args.texture_dir is None else tuple(str(d) for d in args.texture_dir),
    )
    for folder in common["texture_dirs"] or ():
        if not Path(folder).is_dir():
            raise AcegError(f"{folder}: texture folder not found")
    if args.place is not None:
        from aceg.data.synthetic.place_generate import DEFAULT_ROOMS, PlaceSettings, generate_places

        rooms = args.rooms if args.rooms is not None else DEFAULT_ROOMS[args.place]
        settings = PlaceSettings(kind=args.place, rooms=rooms, **common)
        settings.check()
        summaries = generate_places(args.out, args.seed, args.scenes, settings,
                                    first_index=args.first_index, overwrite=args.overwrite,
                                    progress=not args.quiet)
        what = "place(s)"
    else:
        summaries = generate_scenes(args.out, args.seed, args.scenes, SynthSettings(**common),
                                    workers=workers, first_index=args.first_index,
                                    overwrite=args.overwrite, progress=not args.quiet)
        what = "scene(s)"
    skipped = sum(s["skipped"] for s in summaries)
    made = len(summaries) - skipped
    note = f" ({skipped} already there, kept; --overwrite regenerates)" if skipped else ""
    print(f"aceg synth: {made} {what} written to {args.out}{note}")
    return 0
