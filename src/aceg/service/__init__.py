"""HTTP localization service (``aceg serve``): FastAPI app, map registry, FIFO work queue
with a bounded wait, upload checks and connection limits. Poses are camera-to-world,
OpenCV camera axes, metres (:mod:`aceg.data.camera`).

Importing this package does not import FastAPI; use :mod:`aceg.service.app` (the app,
with :mod:`aceg.service.middleware` and :mod:`aceg.service.schemas`),
:mod:`aceg.service.server` (running it, with :mod:`aceg.service.protocol`),
:mod:`aceg.service.queue` and :mod:`aceg.service.maps` (the maps).
"""
