"""HTTP localization service (``aceg serve``): FastAPI app, map registry, bounded work
queue and upload checks. Poses are camera-to-world, OpenCV camera axes, metres
(:mod:`aceg.data.camera`).

Importing this package does not import FastAPI; use :mod:`aceg.service.app` (the app,
with :mod:`aceg.service.middleware`), :mod:`aceg.service.server` (running it) and
:mod:`aceg.service.maps` (the maps).
"""
