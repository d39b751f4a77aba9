"""aceg: visual relocalization by scene coordinate regression (ACE-G)."""

__version__ = "0.1.0"

#: Lazily imported public API (``import aceg`` stays light): name -> module.
_LAZY = {
    "map_scene": "aceg.mapping.mapper",
    "Localizer": "aceg.localization.localizer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aceg' has no attribute {name!r}")
