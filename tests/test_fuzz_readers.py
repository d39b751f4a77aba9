"""Property-based fuzz of the scene readers beyond bytes and tokens (tests/test_fuzz.py):
edits of a file's lines and of its JSON nesting, and the COLMAP reader against pycolmap.

Every mutated scene is read by :func:`aceg.data.readers.read_scene` and by ``aceg info``:
the read must either fail with a one-line :class:`AcegError` (the CLI exits 2 with one
line, no traceback) or give frames that the file really holds: for an edit that keeps the
meaning (line endings, spacing, a byte-order mark, stripped empty lines where the format
allows them) exactly the unedited scene, and for an edit that removes or repeats a line,
frames each equal to the unedited one of its name (a COLMAP image whose two lines went,
say). A reader that reads something else silently (every other COLMAP image, a zero
quaternion as the identity) fails the test.

The number of inputs is ``ACEG_FUZZ_EXAMPLES`` (tests/fuzzing.py); the counts per target
go to ``ACEG_FUZZ_COUNT_FILE`` (benchmarks/fuzz_robustness.py).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from aceg.cli.main import main
from aceg.data.readers import read_scene
from aceg.data.readers._colmap_files import (
    CAMERA_MODELS,
    read_cameras_binary,
    read_cameras_text,
    read_images_binary,
    read_images_text,
)
from aceg.errors import AcegError
from fuzzing import colmap_image_line, fuzz_settings, record, write_colmap_text_model
from test_fuzz import BUILDERS, H, W, _image, _pose

# -- templates ----------------------------------------------------------------------------


def build_colmap_empty_points(root: Path) -> None:
    """A COLMAP text model of three images, two of them without 2-D points (an empty
    POINTS2D line, as COLMAP writes it), with comments and a blank line between records."""
    images = ["# Image list with two lines of data per image:", "#   POINTS2D[] as (X, Y, ID)"]
    for i in range(3):
        _image(root / "images" / f"e{i}.png", i)
        images += [colmap_image_line(i + 1, _pose(i), 1, f"e{i}.png"),
                   "3.5 4.5 7 1 2 -1" if i == 1 else ""]
    write_colmap_text_model(root / "sparse" / "0",
                            ["# Camera list", f"1 SIMPLE_RADIAL {W} {H} 20 8 6 0.01"], images,
                            ["# 3D point list"])


FORMATS = {**BUILDERS, "colmap-empty-points": build_colmap_empty_points}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """format -> (folder, reader format, {frame name: frame}) of a valid scene."""
    root = tmp_path_factory.mktemp("fuzz_lines")
    out = {}
    for name, build in FORMATS.items():
        folder = root / name
        build(folder)
        fmt = name.split("-")[0]
        out[name] = (folder, fmt, read_scene(folder, fmt).by_name())
    return out


# -- outcome checks -----------------------------------------------------------------------


def _same_frame(a, b, intrinsics: bool = True) -> bool:
    same = (a.name == b.name and (a.width, a.height) == (b.width, b.height)
            and np.allclose(a.cam_to_world, b.cam_to_world, rtol=0, atol=1e-12))
    return same and (not intrinsics or a.intrinsics == b.intrinsics)


def _cli_is_clean(folder: Path, fmt: str) -> tuple[int, str]:
    """``aceg info --no-decode``: exit code and stderr; no exception may escape."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["info", str(folder), "--format", fmt, "--no-decode"])
    return code, err.getvalue()


def judge(target: str, folder: Path, fmt: str, reference: dict, exact: bool,
          intrinsics: bool = True) -> str:
    """Read ``folder``: "refused" (one-line AcegError, and the CLI agrees), "identical"
    (every frame of ``reference``, equal), or "valid" (some of them, each equal: only when
    not ``exact``). Anything else fails the test and is counted as a failure."""
    try:
        scene = read_scene(folder, fmt)
    except AcegError as exc:
        message = str(exc)
        outcome = "refused" if message and "\n" not in message else "multi-line error"
    except Exception as exc:  # noqa: BLE001 - counted, then reported by the assert
        outcome, message = "traceback", f"{type(exc).__name__}: {exc}"
    else:
        frames = scene.by_name()
        equal = all(n in reference and _same_frame(f, reference[n], intrinsics)
                    for n, f in frames.items())
        complete = frames.keys() == reference.keys()
        outcome = ("identical" if equal and complete else "valid" if equal and not exact
                   else "wrong")
        message = f"{len(frames)} of {len(reference)} frames, equal: {equal}"
    code, err = _cli_is_clean(folder, fmt)
    if outcome == "refused" and not (code == 2 and err.count("\n") == 1):
        outcome = "cli not one line"
    if outcome in ("identical", "valid") and code != 0:
        outcome = "cli disagrees"
    record(target, outcome)
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test: no statistics
        event(f"{outcome}: {re.sub(r'[0-9.e+-]+', 'N', message.split(': ')[-1])[:60]}")
    assert outcome in ("refused", "identical", "valid"), f"{outcome}: {message} | {err}"
    return outcome


# -- line edits ---------------------------------------------------------------------------

#: Edits that keep a file's meaning where the format allows them (or break it plainly).
KEEPING = ("crlf", "spacing", "no_final_newline", "bom", "strip_blank")
#: Edits that remove or repeat a line, or add one the format may skip.
LINE_EDITS = ("drop_line", "duplicate_line", "blank_line", "comment_line")


def edit_lines(draw, text: str, kind: str, json_file: bool) -> str:
    lines = text.split("\n")
    pick = draw(st.integers(0, max(len(lines) - 1, 0)), label="line")
    if kind == "crlf":
        return text.replace("\n", "\r\n")
    if kind == "spacing":
        gap = draw(st.sampled_from(["\t", "  ", " \t ", "   "]), label="gap")
        return "\n".join(line.replace(" ", gap) if not json_file else line for line in lines)
    if kind == "no_final_newline":
        return text.rstrip("\n")
    if kind == "bom":
        return "\ufeff" + text
    if kind == "strip_blank":
        return "\n".join(line for line in lines if line.strip())
    if kind == "drop_line":
        return "\n".join(lines[:pick] + lines[pick + 1:])
    if kind == "duplicate_line":
        return "\n".join(lines[:pick + 1] + lines[pick:])
    insert = "" if kind == "blank_line" else "# a comment"
    return "\n".join(lines[:pick] + [insert] + lines[pick:])


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".png", ".jpg"))


@pytest.mark.parametrize("name", sorted(FORMATS))
@fuzz_settings(40)
@given(data=st.data())
def test_line_edits_are_refused_or_read_as_written(scenes, name, data):
    folder, fmt, reference = scenes[name]
    json_file = fmt == "nerfstudio"
    kinds = KEEPING + tuple(k for k in LINE_EDITS if not (json_file and k == "comment_line"))
    kind = data.draw(st.sampled_from(kinds), label="edit")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / name
        shutil.copytree(folder, work)
        target = data.draw(st.sampled_from(_text_files(work)), label="file")
        target.write_bytes(edit_lines(data.draw, target.read_text(), kind, json_file).encode())
        # Dropping a nerfstudio line may drop an intrinsic key (a default then applies).
        judge(f"reader line edits: {name}", work, fmt, reference, exact=kind in KEEPING,
              intrinsics=not (json_file and kind == "drop_line"))


def test_colmap_without_empty_lines_is_refused(scenes, tmp_path):
    """The one stripped-lines case the fuzz must always catch (issue 30, item 5)."""
    folder, _, reference = scenes["colmap-empty-points"]
    work = tmp_path / "c"
    shutil.copytree(folder, work)
    images = work / "sparse" / "0" / "images.txt"
    images.write_text("\n".join(line for line in images.read_text().splitlines() if line.strip()))
    assert judge("reader line edits: colmap-empty-points", work, "colmap", reference,
                 exact=True) == "refused"


# -- JSON nesting -------------------------------------------------------------------------

JSON_VALUE = re.compile(r'(?<=[:\[,\s])(-?\d[\d.eE+-]*|"[^"]*"|true|false|null)')


@fuzz_settings(30)
@given(data=st.data())
def test_transforms_json_nesting_is_bounded(scenes, data):
    folder, fmt, reference = scenes["nerfstudio"]
    path = folder / "transforms.json"
    text = path.read_text()
    match = data.draw(st.sampled_from(list(JSON_VALUE.finditer(text))), label="value")
    depth = data.draw(st.one_of(st.sampled_from([1, 63, 64, 65, 1000, 100_000]),
                                st.integers(1, 300_000)), label="depth")
    opening, closing = data.draw(st.sampled_from([("[", "]"), ('{"a":', "}")]), label="kind")
    value = match.group(1)
    nested = opening * depth + value + closing * depth
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "ns"
        shutil.copytree(folder, work)
        (work / "transforms.json").write_text(text[:match.start(1)] + nested + text[match.end(1):])
        # A wrapped value the reader does not read (e.g. "w" when the image gives the size)
        # leaves the scene as it was; one it reads is refused.
        judge("reader JSON nesting: nerfstudio", work, fmt, reference, exact=True)


# -- COLMAP against pycolmap --------------------------------------------------------------

SUPPORTED = ["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV"]


@st.composite
def colmap_text_model(draw) -> tuple[str, str, int]:
    """``(cameras.txt, images.txt, images)`` of a valid random model in COLMAP's text
    format, laid out in any way the format allows."""
    params_of = dict(CAMERA_MODELS.values())
    finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    sep = lambda: draw(st.sampled_from([" ", "  ", "\t"]), label="separator")  # noqa: E731
    comment = lambda: draw(st.sampled_from([[], ["# a comment"], [""], ["", "#"]]), label="gap")  # noqa: E731
    camera_ids = draw(st.lists(st.integers(1, 2**31), min_size=1, max_size=3, unique=True))
    cameras = ["# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    for cid in camera_ids:
        model = draw(st.sampled_from(SUPPORTED))
        size = [draw(st.integers(1, 5000)), draw(st.integers(1, 5000))]
        params = [draw(st.floats(1, 1e4))] + [draw(finite) for _ in range(params_of[model] - 1)]
        cameras += comment() + [sep().join([str(cid), model, *map(str, size), *map(repr, params)])]
    images = ["# Image list with two lines of data per image:"]
    image_ids = draw(st.lists(st.integers(1, 2**31), min_size=1, max_size=6, unique=True))
    for n, iid in enumerate(image_ids):
        q = np.array([draw(st.floats(-1, 1)) for _ in range(4)])
        q = q / np.linalg.norm(q) if np.linalg.norm(q) > 0.1 else np.array([1.0, 0, 0, 0])
        t = [draw(finite) for _ in range(3)]
        line = sep().join([str(iid), *map(repr, q.tolist()), *map(repr, t),
                           str(draw(st.sampled_from(camera_ids))), f"img_{n}.png"])
        points = draw(st.lists(st.tuples(finite, finite, st.integers(-1, 10**6)), max_size=4))
        points_line = sep().join(f"{x!r}{sep()}{y!r}{sep()}{p}" for x, y, p in points)
        images += comment() + [line, points_line]
    newline = draw(st.sampled_from(["\n", "\r\n"]), label="newline")
    return (newline.join(cameras) + newline, newline.join(images) + newline, len(image_ids))


def _same_model(cameras, images, reconstruction) -> None:
    assert sorted(cameras) == sorted(reconstruction.cameras)
    for cid, camera in reconstruction.cameras.items():
        ours = cameras[cid]
        assert (ours.model, ours.width, ours.height) == (camera.model.name, camera.width,
                                                         camera.height)
        np.testing.assert_array_equal(ours.params, camera.params)
    assert sorted(images) == sorted(reconstruction.images)
    for iid, image in reconstruction.images.items():
        ours = images[iid]
        assert (ours.name, ours.camera_id) == (image.name, image.camera_id)
        pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        x, y, z, w = pose.rotation.quat
        np.testing.assert_allclose(ours.qvec, [w, x, y, z], rtol=0, atol=1e-15)
        np.testing.assert_array_equal(ours.tvec, pose.translation)


@fuzz_settings(40)
@given(model=colmap_text_model())
def test_colmap_files_read_as_pycolmap_reads_them(model):
    """Random valid models, text then binary (written by pycolmap): the same cameras and
    images as pycolmap's own reader."""
    cameras_txt, images_txt, count = model
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "cameras.txt").write_text(cameras_txt, newline="")
        (folder / "images.txt").write_text(images_txt, newline="")
        (folder / "points3D.txt").write_text("")
        reconstruction = pycolmap.Reconstruction(str(folder))
        assert len(reconstruction.images) == count
        _same_model(read_cameras_text(folder / "cameras.txt"),
                    read_images_text(folder / "images.txt"), reconstruction)
        record("COLMAP text vs pycolmap", "identical")
        binary = folder / "bin"
        binary.mkdir()
        reconstruction.write_binary(str(binary))
        _same_model(read_cameras_binary(binary / "cameras.bin"),
                    read_images_binary(binary / "images.bin"), reconstruction)
        record("COLMAP binary vs pycolmap", "identical")


def test_colmap_camera_model_table_is_pycolmaps():
    for model_id, (name, count) in CAMERA_MODELS.items():
        camera = pycolmap.Camera.create_from_model_name(1, name, 100.0, 10, 10)
        assert (int(camera.model), len(camera.params)) == (model_id, count)


def test_tiny_colmap_scene_reads(tmp_path):
    """The text template with an image without 2-D points reads all three frames."""
    build_colmap_empty_points(tmp_path / "c")
    scene = read_scene(tmp_path / "c")
    assert [f.name for f in scene] == ["e0.png", "e1.png", "e2.png"] and scene[0].width == W
    assert scene[0].height == H
