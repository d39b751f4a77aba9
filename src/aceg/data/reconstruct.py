"""Structure from motion: pose a folder of unposed photos, or frames of a video, with
COLMAP (pycolmap, on the CPU) and write a posed scene that ``aceg map`` reads.

Pipeline: the images (a video is sampled by :func:`sample_video`, its blurry frames
dropped), features and matches of image pairs (exhaustive for photos, sequential for a
video, whose neighbouring frames overlap), incremental mapping with **one shared camera**
(model ``SIMPLE_RADIAL`` or ``PINHOLE``; its focal length is estimated, starting from the
EXIF focal length when the images carry one, as COLMAP does). When the images split into
several models the largest one is kept, with a note.

Features (:data:`FEATURES`): ``sift`` (the default), COLMAP's own SIFT extraction and
matching; or ``xfeat``, XFeat keypoints and LighterGlue matches
(:class:`aceg.mapping.keypoints.SparseFeatures`, the features aceg maps with) written into
COLMAP's database (:func:`write_xfeat_features`, :func:`write_xfeat_matches`), then
COLMAP's geometric verification. Either way COLMAP's incremental mapper poses the images.
SIFT is the default: its keypoints are sub-pixel (XFeat's lie on whole pixels of the
working image), which gave the smaller worst-case pose errors, and on the CPU LighterGlue
takes longer per image pair than SIFT matching (docs/experiments.md, Strecha sets).

The output folder ``OUT`` holds, for the registered images only:

* ``rgb/``, ``poses/``, ``calibration/``: the ACE layout
  (:func:`aceg.data.writers.write_ace_scene`; images undistorted when the camera has
  radial distortion), camera-to-world poses, OpenCV axes;
* ``colmap/``: the COLMAP model as text (``cameras.txt``, ``images.txt``, ``points3D.txt``)
  and ``colmap/images/`` with the images it names (as sampled, not undistorted), so that
  ``aceg info OUT/colmap`` reads it too;
* ``reconstruction.json``: the units, the counts and the scale pair.

Units: structure from motion fixes a scene only up to a similarity (rotation, translation
and **scale**). Without a scale the poses are in SfM units (``"units": "sfm"``); given the
known distance between the centres of two registered cameras (:func:`apply_scale`) they
are in metres. Everything is built in a temporary folder beside ``OUT`` under its write
lock (:mod:`aceg.io`) and renamed into place: a failed run leaves no ``OUT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from aceg.data.camera import check_pose, invert_pose
from aceg.data.images import load_image
from aceg.data.readers._common import IMAGE_SUFFIXES, image_size, list_files
from aceg.data.readers.colmap import PIXEL_CENTRE_OFFSET, intrinsics_from_camera
from aceg.data.scene import Frame, Scene
from aceg.data.writers import write_ace_scene
from aceg.errors import AcegError, AcegWarning, file_error
from aceg.io import check_output_path, output_lock, remove_stale_temps, temp_path

#: Feature types: COLMAP's SIFT, or XFeat keypoints with LighterGlue matches.
FEATURES = ("sift", "xfeat")
#: XFeat: images are resized so that their long side is at most this many pixels (never
#: enlarged), each side rounded to a multiple of :data:`XFEAT_STRIDE`.
XFEAT_LONG_SIDE = 1536
#: XFeat's network works on sides that are multiples of this (pixels).
XFEAT_STRIDE = 32
#: XFeat keypoints per image at most (LighterGlue's time per pair grows about with its
#: square).
XFEAT_KEYPOINTS = 2048
#: LighterGlue's threshold on a match's confidence (0-1).
XFEAT_MIN_CONFIDENCE = 0.1
#: Camera models of the shared camera (COLMAP names).
CAMERA_MODELS = ("SIMPLE_RADIAL", "PINHOLE")
#: Matching strategies: ``auto`` is sequential for a video, exhaustive for photos.
MATCHERS = ("auto", "exhaustive", "sequential")
#: Frames taken from a video when neither a rate nor a count is given.
DEFAULT_VIDEO_FRAMES = 100
#: A sampled video frame is blurry, and dropped, when the variance of its Laplacian is
#: below this fraction of the median over the sampled frames.
DEFAULT_BLUR_FRACTION = 0.3
#: Fewest registered images of a usable reconstruction.
MIN_REGISTERED = 3
#: Name of the sub-folder holding the COLMAP model, and of the summary file.
COLMAP_FOLDER = "colmap"
SUMMARY_FILE = "reconstruction.json"


@dataclass(frozen=True)
class ReconstructSettings:
    """How to reconstruct.

    Attributes:
        fps: video frames sampled per second of video (None: see ``frames``).
        frames: video frames sampled, evenly spaced (default :data:`DEFAULT_VIDEO_FRAMES`).
        blur_fraction: drop sampled video frames sharper than less than this fraction of
            the median sharpness (variance of the Laplacian); 0 keeps them all.
        camera_model: the shared camera's COLMAP model (:data:`CAMERA_MODELS`).
        refine_principal_point: bundle adjustment also estimates the principal point
            (COLMAP keeps it at the image centre by default; a real lens's is off by a few
            pixels, which tilts every pose by a fraction of a degree).
        matcher: one of :data:`MATCHERS`.
        features: one of :data:`FEATURES` (module docstring).
        xfeat_keypoints: ``xfeat``: keypoints per image at most.
        xfeat_long_side: ``xfeat``: long side in pixels of the images XFeat sees (at most;
            see :func:`xfeat_working_size`).
        scale: known distance in metres between the centres of ``scale_frames``.
        scale_frames: the two image names (as in ``OUT/rgb`` before the suffix may
            change: the input file names, or ``frame_NNNNN.png`` for a video).
        seed: COLMAP's random seed.
        progress: show progress bars.
    """

    fps: float | None = None
    frames: int | None = None
    blur_fraction: float = DEFAULT_BLUR_FRACTION
    camera_model: str = CAMERA_MODELS[0]
    refine_principal_point: bool = True
    matcher: str = "auto"
    features: str = FEATURES[0]
    xfeat_keypoints: int = XFEAT_KEYPOINTS
    xfeat_long_side: int = XFEAT_LONG_SIDE
    scale: float | None = None
    scale_frames: tuple[str, str] | None = None
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        """:class:`AcegError` for unusable settings."""
        if self.fps is not None and self.frames is not None:
            raise AcegError("give --fps or --frames, not both")
        if self.fps is not None and not self.fps > 0:
            raise AcegError(f"--fps must be positive, got {self.fps}")
        if self.frames is not None and self.frames < MIN_REGISTERED:
            raise AcegError(f"--frames must be at least {MIN_REGISTERED}, got {self.frames}")
        if not 0 <= self.blur_fraction < 1:
            raise AcegError(f"--blur-fraction must be in [0, 1), got {self.blur_fraction}")
        if self.camera_model not in CAMERA_MODELS or self.matcher not in MATCHERS:
            raise AcegError(f"camera model must be one of {', '.join(CAMERA_MODELS)} and "
                            f"matcher one of {', '.join(MATCHERS)}")
        if self.features not in FEATURES:
            raise AcegError(f"--features must be one of {', '.join(FEATURES)}, got "
                            f"{self.features!r}")
        if self.xfeat_keypoints < 8 or self.xfeat_long_side < XFEAT_STRIDE:
            raise AcegError(f"XFeat needs at least 8 keypoints and a long side of at least "
                            f"{XFEAT_STRIDE} px, got {self.xfeat_keypoints} and "
                            f"{self.xfeat_long_side}")
        if (self.scale is None) != (self.scale_frames is None):
            raise AcegError("--scale METRES and --scale-frames A B go together")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise AcegError(f"--scale must be a positive distance in metres, got {self.scale}")


@dataclass
class ReconstructResult:
    """What :func:`reconstruct` did: ``inputs`` images given to SfM (after ``blurry``
    video frames were dropped), ``registered`` of them posed in the kept model, of
    ``models`` models; ``features`` the feature type (:data:`FEATURES`); ``points`` 3-D
    points; ``units`` ``"sfm"`` or ``"metres"``;
    ``scale_factor`` metres per SfM unit (None without a scale); the shared camera's
    ``focal_px``; ``reprojection_px`` the mean reprojection error; ``seconds`` in all."""

    out_dir: Path
    source: str
    inputs: int
    blurry: int
    registered: int
    models: int
    features: str
    points: int
    units: str
    scale_factor: float | None
    scale_frames: tuple[str, str] | None
    camera_model: str
    focal_px: float
    reprojection_px: float
    seconds: float


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of an image (BGR or grey, 8 bit): low when blurry."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise file_error(path, "OpenCV cannot read this video; convert it (e.g. to H.264 MP4) "
                               "or extract its frames into a folder of images")
    return capture


def _frame_count(path: Path) -> int:
    """Frames of the video at ``path``, counted by decoding (the container's count is
    not always right)."""
    capture = _open_video(path)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    if count == 0:
        raise file_error(path, "OpenCV reads no frame from this video; convert it (e.g. to "
                               "H.264 MP4) or extract its frames into a folder of images")
    return count


def video_frame_indices(count: int, video_fps: float, fps: float | None,
                        frames: int | None) -> list[int]:
    """Indices of the frames to sample from a video of ``count`` frames at ``video_fps``:
    one every ``video_fps / fps`` frames, or ``frames`` evenly spaced (all of them when
    the video is shorter)."""
    if fps is not None:
        if not video_fps > 0:
            raise AcegError("the video does not state its frame rate; use --frames N instead "
                            "of --fps")
        step = max(video_fps / fps, 1.0)
        return sorted({int(round(i)) for i in np.arange(0, count, step) if round(i) < count})
    wanted = min(frames or DEFAULT_VIDEO_FRAMES, count)
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, wanted)})


def sample_video(path: Path, out_dir: Path, settings: ReconstructSettings) -> tuple[list[str], int]:
    """Write the sampled frames of the video at ``path`` to ``out_dir`` as
    ``frame_NNNNN.png`` (NNNNN: the frame index) and drop the blurry ones (see
    :data:`DEFAULT_BLUR_FRACTION`); ``(names kept, frames dropped)``."""
    count = _frame_count(path)
    capture = _open_video(path)
    wanted = set(video_frame_indices(count, capture.get(cv2.CAP_PROP_FPS), settings.fps,
                                     settings.frames))
    scores: dict[str, float] = {}
    bar = tqdm(total=len(wanted), desc="sampling video", unit="frame",
               disable=not settings.progress, leave=False)
    index = 0
    while wanted and capture.grab():
        if index in wanted:
            ok, image = capture.retrieve()
            if ok:
                name = f"frame_{index:05d}.png"
                cv2.imwrite(str(out_dir / name), image)
                scores[name] = sharpness(image)
            wanted.discard(index)
            bar.update()
        index += 1
    bar.close()
    capture.release()
    threshold = settings.blur_fraction * float(np.median(list(scores.values()) or [0.0]))
    blurry = [name for name, score in scores.items() if score < threshold]
    for name in blurry:
        (out_dir / name).unlink()
    return sorted(set(scores) - set(blurry)), len(blurry)


def gather_images(source: Path, out_dir: Path,
                  settings: ReconstructSettings) -> tuple[list[str], int, bool]:
    """Put the input images into ``out_dir`` (a folder's images copied, a video's frames
    sampled); ``(names, blurry frames dropped, is_video)``. Fails when
    there are no images, fewer than :data:`MIN_REGISTERED`, or images of several sizes
    (one shared camera needs one size)."""
    if not source.exists():
        raise file_error(source, "no such file or folder")
    is_video = source.is_file()
    if is_video and source.suffix.lower() in IMAGE_SUFFIXES:
        raise file_error(source, "is one image; give a folder of images or a video file")
    if is_video:
        names, blurry = sample_video(source, out_dir, settings)
    else:
        blurry = 0
        files = list_files(source, IMAGE_SUFFIXES)
        if not files:
            raise file_error(source, "no images (" + ", ".join(IMAGE_SUFFIXES) + ") in this "
                             "folder; give a folder of photos or a video file")
        sizes = {path.name: image_size(path) for path in files}
        if len(set(sizes.values())) > 1:
            a, size_a = files[0].name, sizes[files[0].name]
            b, size_b = next((n, s) for n, s in sizes.items() if s != size_a)
            raise file_error(source, f"images of different sizes ({a}: {size_a[0]}x{size_a[1]}, "
                                     f"{b}: {size_b[0]}x{size_b[1]}); one shared camera needs "
                                     "one size: resize them to one size first")
        for path in files:
            shutil.copyfile(path, out_dir / path.name)  # copies: the output never shares inodes
        names = [path.name for path in files]
    if len(names) < MIN_REGISTERED:
        what = "sharp video frames" if is_video else "images"
        raise file_error(source, f"only {len(names)} {what}; structure from motion needs at "
                                 f"least {MIN_REGISTERED} overlapping views"
                         + (" (sample more with --fps or --frames)" if is_video else ""))
    return names, blurry, is_video


@contextlib.contextmanager
def _quiet_colmap() -> Iterator[None]:
    """No COLMAP log lines for the block (its failures are reported as one-line errors)."""
    import pycolmap

    previous = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 3
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


def _verification(settings: ReconstructSettings):
    """COLMAP's two-view geometry options (geometric verification of matches): its
    defaults, with RANSAC seeded by ``settings.seed``."""
    import pycolmap

    options = pycolmap.TwoViewGeometryOptions()
    options.ransac.random_seed = settings.seed
    return options


def _threads() -> int:
    """COLMAP threads: ``OMP_NUM_THREADS`` when set, else every core (-1)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else -1


def xfeat_working_size(width: int, height: int,
                       long_side: int = XFEAT_LONG_SIDE) -> tuple[int, int]:
    """(width, height) in pixels XFeat sees an image of ``width`` x ``height`` at: long side
    at most ``long_side``, each side then rounded to a multiple of :data:`XFEAT_STRIDE`
    (so XFeat does not resize it again)."""
    scale = min(1.0, long_side / max(width, height))
    return tuple(max(XFEAT_STRIDE, round(side * scale / XFEAT_STRIDE) * XFEAT_STRIDE)
                 for side in (width, height))


def extract_xfeat(features, path: Path, long_side: int = XFEAT_LONG_SIDE):
    """XFeat features of the image at ``path``: ``(ImageFeatures, keypoints)``, the first
    of the image resized to :func:`xfeat_working_size` (keypoints in its pixels, aceg's
    convention: pixel centres at integers), for LighterGlue; the second the same keypoints,
    (N, 2) float32, in the pixels of the image as stored and COLMAP's convention (pixel
    centres at half-integers), for COLMAP's database. ``features``: a
    :class:`aceg.mapping.keypoints.SparseFeatures`."""
    rgb = load_image(path)
    height, width = rgb.shape[:2]
    size = xfeat_working_size(width, height, long_side)
    if size != (width, height):
        shrink = size[0] * size[1] < width * height
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    extracted = features.extract(rgb)
    # aceg pixel u' of the resized image covers [u' - 0.5, u' + 0.5]; its COLMAP coordinate
    # in the stored image is (u' + 0.5) * width / size[0] (the same for v)
    factors = np.array([width / size[0], height / size[1]], np.float64)
    keypoints = (extracted.keypoints.astype(np.float64) + PIXEL_CENTRE_OFFSET) * factors
    return extracted, keypoints.astype(np.float32).reshape(-1, 2)


def write_xfeat_features(database, images: Path, names: list[str], features,
                         long_side: int, progress: bool) -> dict:
    """Extract the XFeat keypoints of ``images/<name>`` for ``names`` and write them into
    ``database`` (an open pycolmap.Database whose images are imported), extracted at
    ``long_side`` (:func:`xfeat_working_size`); returns each
    image id's :class:`aceg.mapping.keypoints.ImageFeatures` (working-size pixels)."""
    ids = {image.name: image.image_id for image in database.read_all_images()}
    extracted = {}
    for name in tqdm(names, desc="XFeat keypoints", unit="image", disable=not progress,
                     leave=False):
        extracted[ids[name]], keypoints = extract_xfeat(features, images / name, long_side)
        database.write_keypoints(ids[name], keypoints)
    return extracted


def write_xfeat_matches(database, extracted: dict, sequential: bool, features,
                        progress: bool) -> None:
    """Match the image pairs COLMAP's exhaustive or sequential matcher would (the same
    pair generators, default options) with LighterGlue and write the matches (keypoint
    indices) into ``database``; geometric verification is left to COLMAP."""
    import pycolmap

    if sequential:
        generator = pycolmap.SequentialPairGenerator(pycolmap.SequentialPairingOptions(),
                                                     database)
    else:
        generator = pycolmap.ExhaustivePairGenerator(pycolmap.ExhaustivePairingOptions(),
                                                     database)
    for a, b in tqdm(generator.all_pairs(), desc="LighterGlue matches", unit="pair",
                     disable=not progress, leave=False):
        matches = features.match(extracted[a], extracted[b], XFEAT_MIN_CONFIDENCE)
        database.write_matches(a, b, matches.astype(np.uint32).reshape(-1, 2))


def _xfeat_features_and_matches(database_path: Path, images: Path, names: list[str],
                                sequential: bool, settings: ReconstructSettings,
                                bar: tqdm) -> None:
    """The ``xfeat`` features: images and the shared camera imported as COLMAP's image
    reader does, XFeat keypoints, LighterGlue matches, COLMAP's geometric verification;
    ``bar`` advances by two steps (features, matches)."""
    import pycolmap

    from aceg.mapping.keypoints import SparseFeatures

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = settings.camera_model
    pycolmap.Database.open(database_path).close()  # import_images needs the file to exist
    pycolmap.import_images(database_path, images, camera_mode=pycolmap.CameraMode.SINGLE,
                           image_names=names, options=reader)
    features = SparseFeatures(settings.xfeat_keypoints)
    database = pycolmap.Database.open(database_path)
    try:
        bar.set_postfix_str("XFeat keypoints")
        extracted = write_xfeat_features(database, images, names, features,
                                         settings.xfeat_long_side, settings.progress)
        bar.update()
        bar.set_postfix_str("LighterGlue matches")
        write_xfeat_matches(database, extracted, sequential, features, settings.progress)
    finally:
        database.close()
    verifier = pycolmap.GeometricVerifierOptions()
    verifier.num_threads = _threads()
    pycolmap.geometric_verification(database_path, verifier_options=verifier,
                                    two_view_geometry_options=_verification(settings))
    bar.update()


def run_sfm(work: Path, names: list[str], sequential: bool,
            settings: ReconstructSettings) -> tuple[object, int]:
    """COLMAP on ``work/images`` (``names``): features and matches (``settings.features``),
    incremental mapping with one shared camera. ``(largest pycolmap.Reconstruction,
    number of models)``; :class:`AcegError` when no model forms."""
    import pycolmap

    database, images = work / "database.db", work / "images"
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = _threads()
    options.random_seed = settings.seed
    options.ba_refine_principal_point = settings.refine_principal_point
    with _quiet_colmap(), tqdm(total=len(names) + 2, desc="structure from motion", unit="step",
                               disable=not settings.progress, leave=False) as bar:
        if settings.features == "xfeat":
            _xfeat_features_and_matches(database, images, names, sequential, settings, bar)
        else:
            _sift_features_and_matches(database, images, names, sequential, settings, bar)
        bar.set_postfix_str("registering images")
        (work / "sparse").mkdir()
        models = pycolmap.incremental_mapping(database, images, work / "sparse", options=options,
                                              next_image_callback=lambda: bar.update())
    if not models:
        raise AcegError(f"structure from motion found no pair of images to start from among "
                        f"{len(names)}; take photos that overlap more, with some sideways "
                        "motion between them")
    largest = max(models.values(), key=lambda model: model.num_reg_images())
    return largest, len(models)


def _sift_features_and_matches(database: Path, images: Path, names: list[str],
                               sequential: bool, settings: ReconstructSettings,
                               bar: tqdm) -> None:
    """The ``sift`` features: COLMAP's SIFT extraction (which imports the images and the
    shared camera) and matching with its geometric verification; ``bar`` advances by two
    steps (features, matches)."""
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = settings.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = _threads()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = _threads()
    cpu = pycolmap.Device.cpu
    bar.set_postfix_str("SIFT features")
    pycolmap.extract_features(database, images, image_names=names,
                              camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              extraction_options=extraction, device=cpu)
    bar.update()
    bar.set_postfix_str("matching")
    match = pycolmap.match_sequential if sequential else pycolmap.match_exhaustive
    match(database, matching_options=matching, verification_options=_verification(settings),
          device=cpu)
    bar.update()


def apply_scale(model, metres: float, names: tuple[str, str]) -> float:
    """Scale ``model`` (a pycolmap.Reconstruction, in place) so that the centres of the
    images named ``names`` are ``metres`` apart; returns the factor (metres per SfM unit)."""
    import pycolmap

    centres = []
    for name in names:
        image = model.find_image_with_name(name)
        if image is None or not image.has_pose:
            raise AcegError(f"--scale-frames: image {name!r} is not among the registered images "
                            "(see OUT/rgb after a run without --scale for their names)")
        centres.append(np.asarray(image.projection_center(), dtype=np.float64))
    distance = float(np.linalg.norm(centres[0] - centres[1]))
    if distance < 1e-9:
        raise AcegError(f"--scale-frames: {names[0]} and {names[1]} have the same camera centre; "
                        "choose two frames taken some distance apart")
    factor = metres / distance
    model.transform(pycolmap.Sim3d(factor, pycolmap.Rotation3d(), np.zeros(3)))
    return factor


def scene_from_model(model, images: Path, name: str) -> Scene:
    """The registered images of ``model`` as a posed :class:`Scene` (camera-to-world,
    OpenCV axes; aceg's pixel-centre convention), sorted by name."""
    frames = []
    for image_id in model.reg_image_ids():
        image = model.image(image_id)
        camera = model.camera(image.camera_id)
        where = f"COLMAP camera {image.camera_id}"
        intrinsics = intrinsics_from_camera(camera.model.name, list(camera.params), where)
        world_to_cam = np.eye(4)
        world_to_cam[:3] = image.cam_from_world().matrix()
        pose = invert_pose(check_pose(world_to_cam, f"COLMAP image {image.name}"))
        frames.append(Frame(image.name, images / image.name, int(camera.width),
                            int(camera.height), intrinsics, pose))
    return Scene(name, sorted(frames, key=lambda f: f.name), images, "colmap")


def check_output(out_dir: Path, source: Path) -> None:
    """:class:`AcegError` unless ``out_dir`` can be written (absent or an empty folder, not
    the input, nor inside an input folder)."""
    check_output_path(out_dir, folder=True, what="reconstructed scene", inputs=[source])
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise file_error(out_dir, "folder exists and is not empty; remove it or choose another")
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        raise file_error(out_dir, f"lies inside the input folder {source}; choose another output")


def reconstruct(source: str | Path, out_dir: str | Path,
                settings: ReconstructSettings | None = None) -> ReconstructResult:
    """Pose the images of ``source`` (a folder of images or a video file) by structure from
    motion and write ``out_dir`` (see the module docstring). Notes (several models) are
    :class:`AcegWarning`; bad input and failed reconstructions :class:`AcegError`."""
    settings = settings or ReconstructSettings()
    settings.check()
    source, out_dir = Path(source), Path(out_dir)
    check_output(out_dir, source)
    start = time.perf_counter()
    with output_lock(out_dir):
        remove_stale_temps(out_dir)
        work = temp_path(out_dir)
        if work.exists():
            shutil.rmtree(work)
        (work / "images").mkdir(parents=True)
        try:
            result = _reconstruct_in(work, source, out_dir, settings, start)
            if out_dir.is_dir():
                out_dir.rmdir()  # empty (checked above); a rename cannot replace a folder
            os.replace(work / "scene", out_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _reconstruct_in(work: Path, source: Path, out_dir: Path, settings: ReconstructSettings,
                    start: float) -> ReconstructResult:
    """The steps of :func:`reconstruct`, writing the finished scene to ``work/scene``."""
    names, blurry, is_video = gather_images(source, work / "images", settings)
    sequential = settings.matcher == "sequential" or (settings.matcher == "auto" and is_video)
    model, models = run_sfm(work, names, sequential, settings)
    registered = model.num_reg_images()
    if registered < MIN_REGISTERED:
        raise file_error(source, f"only {registered} of {len(names)} images could be posed "
                                 f"(need {MIN_REGISTERED}); give more views that overlap, with "
                                 "sideways motion between them")
    if models > 1:
        warnings.warn(AcegWarning(f"the images formed {models} separate models; kept the largest "
                                  f"({registered} of {len(names)} images)"), stacklevel=2)
    factor = None
    if settings.scale is not None:
        factor = apply_scale(model, settings.scale, settings.scale_frames)
    scene = scene_from_model(model, work / "images", out_dir.name)
    write_ace_scene(scene, work / "scene")
    colmap = work / "scene" / COLMAP_FOLDER
    colmap.mkdir()
    model.write_text(str(colmap))
    os.replace(work / "images", colmap / "images")
    camera = model.camera(model.image(next(iter(model.reg_image_ids()))).camera_id)
    result = ReconstructResult(
        out_dir, str(source), len(names), blurry, registered, models, settings.features,
        model.num_points3D(),
        "sfm" if factor is None else "metres", factor, settings.scale_frames,
        camera.model.name, float(camera.params[0]),
        float(model.compute_mean_reprojection_error()), time.perf_counter() - start)
    summary = {**asdict(result), "out_dir": str(out_dir),
               "note": "poses in SfM units (up to scale)" if factor is None else
               "poses in metres (scaled by the distance between scale_frames)"}
    (work / "scene" / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return result
