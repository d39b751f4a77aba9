"""Side-by-side benchmark: ACE-G vs the ACE baseline vs feature matching, one run, same data.

Methods (:data:`METHODS`): ``aceg`` maps with the anchor model (or the model the bench's
regressor weights hold), ``ace`` with the ACE head baseline (:data:`SCR_METHODS`), and
``feature-matching`` with :mod:`aceg.baselines.feature_matching`.

Data sets (each: one mapping scene and named query splits):
    * held-out synthetic scenes (``aceg synth`` output; seeds disjoint from pre-training):
      map on ``mapping/``, query ``query_same``, ``query_light``, ``query_view`` (and
      ``query_moved`` when present);
    * the real sets in ``../shared/data``, split by index (:data:`REAL_SPLITS`):
      ``every3`` maps frames with index % 3 != 1 and queries index % 3 == 1, also with a
      photometric change applied to the query images (:func:`photometric_change`: gamma
      1.8, a warm colour cast and brightness x0.6, which approximates a lighting change on
      real photos); ``sparse4`` maps only index % 4 == 0 and queries all the others (wide
      baselines between the mapping views);
    * the standard relocalization data sets in their native layouts (7-Scenes, 12-Scenes,
      Cambridge Landmarks, Indoor-6), split as officially (:func:`official_datasets`).

The ``aceg-identity`` method is the ablation of the anchor model's learned part: the same
pipeline with the untrained (identity) descriptor embedding, i.e. reading the point of the
nearest raw XFeat descriptor. ``aceg-kp`` maps with the anchor model's keypoint anchors
(``anchor_points="keypoints"``: triangulated keypoints, read from the query's keypoints),
``aceg-kp-identity`` the same with the identity embedding.

Per method and split: the accuracy table (:mod:`aceg.evaluation.metrics`, pooled over all
queries of that split across scenes), mapping time, median and p90 query time, map size,
peak memory (resident set size sampled every :data:`PeakMemory.INTERVAL` seconds during
mapping, minus the size before it), and for ACE-G methods how often a pose flagged
confident is right. Times are measured in the same process and run, so ratios are
meaningful. :mod:`aceg.evaluation.bench_report` turns the runs into the report.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aceg.data.images import load_image
from aceg.data.readers import read_official_split, read_scene, split_scenes_below
from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.evaluation.metrics import accuracy_table, pose_errors

METHODS = ("aceg", "aceg-identity", "aceg-kp", "aceg-kp-identity", "aceg-tri", "ace", "ace-tri",
           "feature-matching")
#: What ``aceg bench`` runs unless told otherwise.
DEFAULT_METHODS = ("aceg", "ace", "feature-matching")
METHOD_LABELS = {"aceg": "ACE-G", "aceg-identity": "ACE-G, identity embedding",
                 "aceg-kp": "ACE-G, keypoint anchors",
                 "aceg-kp-identity": "ACE-G, keypoint anchors, identity embedding",
                 "aceg-tri": "ACE-G + triangulated depth", "ace": "ACE head on XFeat",
                 "ace-tri": "ACE head on XFeat + triangulated depth",
                 "feature-matching": "Feature matching"}
#: Methods that map with :func:`aceg.mapping.mapper.map_scene`: (its model, whether depth
#: triangulated between the mapping images supervises an optimised model). The ``aceg``
#: methods use the anchor model, or the model the bench's regressor weights hold (the
#: map-code transformer's, say); the anchor model always triangulates, so with it
#: ``aceg-tri`` maps as ``aceg`` does.
SCR_METHODS = {"aceg": ("anchors", False), "aceg-identity": ("anchors", False),
               "aceg-kp": ("anchors", False), "aceg-kp-identity": ("anchors", False),
               "aceg-tri": ("anchors", True), "ace": ("ace", False), "ace-tri": ("ace", True)}
#: The methods of aceg's own regressors, compared with the others.
ACEG_METHODS = ("aceg", "aceg-identity", "aceg-kp", "aceg-kp-identity", "aceg-tri")
#: Methods whose anchor maps hold keypoints (``anchor_points="keypoints"``).
KEYPOINT_METHODS = ("aceg-kp", "aceg-kp-identity")
#: Ablations: method -> weights file (in ``aceg.model.map_file.WEIGHTS_DIR``) replacing the
#: shipped regressor; ``aceg bench --ablation`` adds each after the method it ablates.
ABLATION_WEIGHTS = {"aceg-identity": "anchors-identity-xfeat.safetensors",
                    "aceg-kp-identity": "anchors-identity-xfeat.safetensors"}
ABLATES = {"aceg-identity": "aceg", "aceg-kp-identity": "aceg-kp"}
SYNTHETIC_SPLITS = ("query_same", "query_light", "query_view", "query_moved")
REAL_SETS = ("strecha/fountain-P11", "strecha/castle-P30", "middlebury/templeRing")
#: Index splits of the real sets: name -> (k, r, mapping side) where the frames with
#: index % k == r are the queries ("rest" mapping side) or the mapping frames ("picked").
REAL_SPLITS = {"every3": (3, 1, "rest"), "sparse4": (4, 0, "picked")}
MARK_START = "<!-- aceg-bench:start -->"
MARK_END = "<!-- aceg-bench:end -->"


def photometric_change(rgb: np.ndarray) -> np.ndarray:
    """A strong lighting-like change: gamma 1.8, warm colour cast, brightness x0.6 (uint8)."""
    x = rgb.astype(np.float32) / 255.0
    x = x ** 1.8
    x = x * np.array([1.15, 1.0, 0.75], np.float32) * 0.6
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class Dataset:
    """One mapping scene and its query splits; ``transforms`` maps a split name to an image
    transform applied to that split's query images (None: as on disk)."""

    name: str
    kind: str  # "synthetic" or "real"
    mapping: Scene
    queries: dict[str, Scene]
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)


def synthetic_datasets(root: Path, splits: Sequence[str] | None = None) -> list[Dataset]:
    """Every scene folder below ``root`` with a ``mapping/`` split (``aceg synth`` layout),
    with its query ``splits`` that exist (None: all of :data:`SYNTHETIC_SPLITS`)."""
    scenes = sorted(p for p in Path(root).iterdir() if (p / "mapping").is_dir())
    if not scenes:
        raise AcegError(f"{root}: no synthetic scenes (folders with mapping/)")
    out = []
    for s in scenes:
        queries = {q: read_scene(s / q) for q in (splits or SYNTHETIC_SPLITS) if (s / q).is_dir()}
        out.append(Dataset(s.name, "synthetic", read_scene(s / "mapping"), queries))
    return out


def real_datasets(shared_data: Path, names=REAL_SETS, splits=("every3",)) -> list[Dataset]:
    """The real sets found below ``shared_data``, once per split of :data:`REAL_SPLITS`
    (``every3``: queries ``query`` and ``query_photometric``; ``sparse4``: ``query_sparse4``,
    data set named ``<set>-sparse4``)."""
    out = []
    for name in names:
        path = Path(shared_data) / name
        if not path.exists():
            continue
        scene = read_scene(path)
        for split in splits:
            k, r, mapping_side = REAL_SPLITS[split]
            rest, picked = scene.split_every(k, r)
            if split == "every3":
                out.append(Dataset(Path(name).name, "real", rest,
                                   {"query": picked, "query_photometric": picked},
                                   {"query_photometric": photometric_change}))
            else:
                mapping, query = (picked, rest) if mapping_side == "picked" else (rest, picked)
                out.append(Dataset(f"{Path(name).name}-{split}", "real", mapping,
                                   {f"query_{split}": query}))
    return out


def official_datasets(paths, focal: float | None = None) -> list[Dataset]:
    """One data set per scene with an official split at or below each of ``paths``
    (:func:`aceg.data.readers.split_scenes_below`): it maps on the official mapping frames
    and queries the official query frames as split ``query_<format>``; named
    ``<format>-<scene>``. ``focal``: focal length (pixels) for 7-Scenes, whose files record
    none. A path holding no such scene is an error."""
    out = []
    for path in paths:
        found = split_scenes_below(Path(path))
        if not found:
            raise AcegError(f"{path}: no 7-Scenes, 12-Scenes, Cambridge Landmarks or Indoor-6 "
                            "scene here or in its sub-folders")
        for folder, fmt in found:
            mapping, query = read_official_split(folder, fmt, focal=focal)
            name = f"{fmt}-{mapping.name.removesuffix('-mapping')}"
            out.append(Dataset(name, "real", mapping, {f"query_{fmt}": query}))
    return out


class PeakMemory:
    """Peak resident set size (bytes) above the starting size, sampled every
    :attr:`INTERVAL` seconds."""

    INTERVAL = 0.02

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096
        except OSError:
            return 0

    def __enter__(self):
        self.start = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.INTERVAL):
            self.peak = max(self.peak, self.rss() - self.start)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.start)


@dataclass
class MethodRun:
    """Everything measured for one method on one data set."""

    method: str
    dataset: str
    kind: str
    mapping_seconds: float
    map_bytes: int
    peak_memory_bytes: int
    errors: dict[str, list[tuple[float, float]]]  # split -> [(rot_deg, trans_m)], inf = failed
    query_seconds: dict[str, list[float]]
    confident: dict[str, list[bool]] = field(default_factory=dict)  # ACE-G methods only


def _mapper_and_localizer(method: str, settings: dict):
    """(map(scene, path) -> None, localizer(path) -> callable(rgb, frame) -> (pose or None,
    confident flag or None))."""
    if method == "feature-matching":
        from aceg.baselines.feature_matching import FeatureMatchingLocalizer, build_feature_map
        from aceg.mapping.keypoints import SparseFeatures

        features = SparseFeatures()

        def build(scene, path):
            build_feature_map(scene, features=features, progress=False).save(path)

        def open_map(path):
            loc = FeatureMatchingLocalizer(path, features=features)
            return lambda rgb, frame: (
                loc.localize(frame.image_path, frame.intrinsics, rgb=rgb).cam_to_world, None)

        return build, open_map

    return _scr_mapper_and_localizer(method, settings)


def scr_model_settings(method: str, settings: dict) -> tuple[str, dict]:
    """The :func:`aceg.mapping.mapper.map_scene` model and keyword arguments of a method
    of :data:`SCR_METHODS` under the bench's ``settings`` ("regressor", "preset",
    "iterations", "lr_max", "batch_size", "code_init", "short_side")."""
    from aceg.model.map_file import WEIGHTS_DIR, regressor_model, resolve_regressor

    model, triangulate = SCR_METHODS[method]
    regressor = settings.get("regressor")
    if method in ABLATION_WEIGHTS:
        regressor = str(WEIGHTS_DIR / ABLATION_WEIGHTS[method])
    kwargs: dict = {"short_side": settings.get("short_side", 480)}
    if model != "ace":
        if regressor is not None:  # the model the given weights hold
            model = regressor_model(resolve_regressor(regressor, None))
        kwargs["regressor"] = regressor
    if method in KEYPOINT_METHODS:  # an error unless the weights are the anchor model's
        kwargs["anchor_points"] = "keypoints"
    if model == "anchors":  # built, not optimised; it always triangulates
        return model, kwargs
    names = ("preset", "iterations", "lr_max", "batch_size")
    names += ("code_init",) if model == "transformer" else ()
    kwargs.update({k: settings[k] for k in names if settings.get(k) is not None})
    return model, {**kwargs, "triangulate": triangulate}


def _scr_mapper_and_localizer(method: str, settings: dict):
    """:func:`_mapper_and_localizer` of a method of :data:`SCR_METHODS`."""
    from aceg.localization.localizer import Localizer
    from aceg.mapping.mapper import map_scene

    model, kwargs = scr_model_settings(method, settings)

    def build(scene, path):
        map_scene(scene, path, model=model, progress=False, **kwargs)

    def open_map(path):
        loc = Localizer(path, regressor=kwargs.get("regressor"))

        def localize(rgb, frame):
            result = loc.localize(rgb, frame.intrinsics, name=frame.name)
            return result.cam_to_world, (result.confident if model != "ace" else None)

        return localize

    return build, open_map


def run_method(method: str, data: Dataset, work: Path, settings: dict, log=print) -> MethodRun:
    build, open_map = _mapper_and_localizer(method, settings)
    map_path = work / f"{data.name}-{method}.map"
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        build(data.mapping, map_path)
    mapping_seconds = time.perf_counter() - t0
    localize = open_map(map_path)
    errors: dict[str, list[tuple[float, float]]] = {}
    times: dict[str, list[float]] = {}
    confident: dict[str, list[bool]] = {}
    for split, scene in data.queries.items():
        transform = data.transforms.get(split)
        errors[split], times[split] = [], []
        for frame in scene.frames:
            rgb = load_image(frame.image_path)
            if transform is not None:
                rgb = transform(rgb)
            t = time.perf_counter()
            pose, flag = localize(rgb, frame)
            times[split].append(time.perf_counter() - t)
            errors[split].append(pose_errors(pose, frame.cam_to_world) if pose is not None
                                 else (math.inf, math.inf))
            if flag is not None:
                confident.setdefault(split, []).append(bool(flag))
    run = MethodRun(method, data.name, data.kind, mapping_seconds, map_path.stat().st_size,
                    mem.peak, errors, times, confident)
    log(f"  {METHOD_LABELS[method]:<17} {data.name}: mapped in {mapping_seconds:.1f} s, "
        + ", ".join(f"{s} {_pct(e)}% <10cm/10deg" for s, e in errors.items()))
    return run


def _pct(errs: list[tuple[float, float]]) -> str:
    t = accuracy_table([e[0] for e in errs], [e[1] for e in errs])
    return f"{t.within['10cm/10deg']:.0f}"
