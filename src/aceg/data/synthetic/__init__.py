"""Procedural indoor scenes rendered headless, for query pre-training and benchmarks.

One module per concern:

* :mod:`~aceg.data.synthetic.layout`: the room and its objects (world frame, metres,
  z up); moving objects.
* :mod:`~aceg.data.synthetic.rooms`: a random furnished room from a seed, its pieces from
  :mod:`~aceg.data.synthetic.furniture`.
* :mod:`~aceg.data.synthetic.mesh`: the triangle mesh built from a layout.
* :mod:`~aceg.data.synthetic.textures`: photographs (``skimage.data``, optionally
  ``shared/data/textures``) mixed with procedural textures.
* :mod:`~aceg.data.synthetic.lighting`: point lights + ambient; lighting A and a changed
  lighting B.
* :mod:`~aceg.data.synthetic.trajectories`: handheld scanning paths and query viewpoints.
* :mod:`~aceg.data.synthetic.renderer`: moderngl on EGL; RGB and metric z-depth.
* :mod:`~aceg.data.synthetic.ace_layout`: writing a split in the ACE / DSAC* layout.
* :mod:`~aceg.data.synthetic.contact_sheet`: a PNG to look at what each split changes.
* :mod:`~aceg.data.synthetic.generate`: :func:`generate_scene`, the whole pipeline.

Multi-room places (``aceg synth --place``), built from the pieces above:

* :mod:`~aceg.data.synthetic.place`: spaces (rooms, corridor) joined by doors; free space.
* :mod:`~aceg.data.synthetic.floor_plans`: a random apartment or office floor, furnished
  from one catalogue of furniture and one palette of materials (look-alike rooms).
* :mod:`~aceg.data.synthetic.place_mesh`: its triangle mesh, one lighting zone per space.
* :mod:`~aceg.data.synthetic.place_paths`: the continuous walk through every room.
* :mod:`~aceg.data.synthetic.place_picture`: the floor plan from above with the cameras.
* :mod:`~aceg.data.synthetic.place_generate`: the whole pipeline of a place
  (:func:`~aceg.data.synthetic.place_generate.generate_place`).
"""

from __future__ import annotations

__all__ = ["GENERATOR_VERSION", "SPLITS", "SynthSettings", "generate_scene", "scene_seed"]


def __getattr__(name: str):
    # lazy, so that importing a sub-module (e.g. the renderer) does not import the rest
    if name in __all__:
        from aceg.data.synthetic import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
