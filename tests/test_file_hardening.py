"""Map files, readers and outputs that used to fail silently or with a traceback (issue 30,
items 4-6). Each test reproduces one such failure:

* map files: one flipped byte, metadata of the wrong JSON type and a working size far out of
  range are refused with one line naming the file; the service lists such a map as
  unavailable and serves the others;
* readers: a COLMAP ``images.txt`` whose empty POINTS2D lines were stripped, a zero
  quaternion and a deeply nested ``transforms.json`` are one-line errors naming the file;
  ``aceg info SCENE | head -1`` exits quietly;
* outputs: a writer killed mid-write leaves nothing behind once the next write is done,
  and a second ``aceg map`` to the same output is refused while the first runs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import aceg
from aceg.cli.main import main
from aceg.data.readers import read_scene
from aceg.errors import AcegError
from aceg.model.map_file import load_map
from fuzzing import colmap_image_line, write_colmap_text_model
from test_fuzz import H, W, _image, _pose, build_ace, build_nerfstudio
from tiny_map import tiny_map

SRC = Path(aceg.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_map(tmp_path_factory)


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def _one_line_error(err: str, *parts: str) -> None:
    assert err.count("\n") == 1 and err.startswith("aceg: error: "), err
    for part in parts:
        assert part in err, (part, err)


def tensor_span(data: bytes, name: str) -> tuple[int, int]:
    """Byte range of tensor ``name`` in a safetensors file's bytes."""
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + header_len])
    start, end = header[name]["data_offsets"]
    return 8 + header_len + start, 8 + header_len + end


def legacy_map(source: Path, target: Path, **changes) -> Path:
    """A copy of map ``source`` as an older aceg wrote it (format version 1, no content
    hash), with metadata fields replaced by ``changes``."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        meta = json.loads(f.metadata()["aceg_map"])
    meta.pop("sha256", None)
    meta.update(format_version=1, **changes)
    save_file(load_file(str(source)), str(target), metadata={"aceg_map": json.dumps(meta)})
    return target


# -- 4: map files -------------------------------------------------------------------------


def test_flipped_byte_in_scene_centre_is_refused_naming_the_file(tiny, tmp_path, capsys):
    data = bytearray(tiny.map_path.read_bytes())
    start, _ = tensor_span(bytes(data), "scene_centre")
    data[start + 6] ^= 0x10  # an exponent bit of the first coordinate: metres off
    path = tmp_path / "flipped.map"
    path.write_bytes(bytes(data))
    poses = tmp_path / "poses.txt"
    code, out, err = _run(capsys, "localize", path, tiny.ace_dir, "--out", poses)
    assert code == 2 and not poses.exists()
    _one_line_error(err, str(path), "content hash")


def test_map_metadata_of_the_wrong_json_type_is_a_one_line_error(tiny, tmp_path, capsys):
    tensors = load_file(str(tiny.map_path))
    for name, meta in (("list", "[1, 2]"), ("number", "7"), ("string", '"map"')):
        path = tmp_path / f"{name}.map"
        save_file(tensors, str(path), metadata={"aceg_map": meta})
        code, out, err = _run(capsys, "localize", path, tiny.ace_dir, "--out", tmp_path / "p.txt")
        assert code == 2
        _one_line_error(err, str(path), "metadata", "not a JSON object")


def test_map_working_size_out_of_range_is_refused_naming_the_field(tiny, tmp_path, capsys):
    for value in (20000, 0, -480, 480.5, "480", True):
        path = legacy_map(tiny.map_path, tmp_path / "big.map", short_side=value)
        with pytest.raises(AcegError, match=rf"^{re.escape(str(path))}: .*short_side"):
            load_map(path)
    code, _, err = _run(capsys, "localize", path, tiny.ace_dir, "--out", tmp_path / "p.txt")
    assert code == 2
    _one_line_error(err, str(path), "short_side")


def test_service_lists_bad_maps_as_unavailable_and_serves_the_others(tiny, tmp_path):
    import requests

    from aceg.service.app import ServiceConfig
    from aceg.service.maps import MapRegistry
    from aceg.service.server import BackgroundServer

    folder = tmp_path / "maps"
    folder.mkdir()
    shutil.copy(tiny.map_path, folder / "good.map")
    save_file(load_file(str(tiny.map_path)), str(folder / "list.map"),
              metadata={"aceg_map": "[1, 2]"})
    legacy_map(tiny.map_path, folder / "huge.map", short_side=20000)
    data = bytearray(tiny.map_path.read_bytes())
    data[tensor_span(bytes(data), "scene_centre")[0] + 6] ^= 0x10
    (folder / "flipped.map").write_bytes(bytes(data))
    registry = MapRegistry(folder, localizer_factory=lambda path: object())
    assert list(registry.entries) == ["good"]
    assert sorted(registry.unavailable) == ["flipped", "huge", "list"]
    assert "short_side" in registry.unavailable["huge"]
    assert "content hash" in registry.unavailable["flipped"]
    assert all(str(folder) not in reason for reason in registry.unavailable.values())
    with BackgroundServer(ServiceConfig(folder), registry) as server:
        body = requests.get(f"{server.url}/maps", timeout=60).json()
    assert [m["name"] for m in body["maps"]] == ["good"]
    assert sorted(m["name"] for m in body["unavailable"]) == ["flipped", "huge", "list"]
    assert all(m["reason"] for m in body["unavailable"])


# -- 5: readers ---------------------------------------------------------------------------


def colmap_text_model(root: Path, count: int) -> Path:
    """A COLMAP text model of ``count`` 16x12 images in ``root`` (images/ beside it), each
    image's POINTS2D line empty, as COLMAP writes an image without 2-D points."""
    images = ["# Image list with two lines of data per image:"]
    for i in range(count):
        _image(root / "images" / f"im{i:02d}.png", i)
        images += [colmap_image_line(i + 1, _pose(i), 1, f"im{i:02d}.png"), ""]
    return write_colmap_text_model(root, ["# cameras", f"1 PINHOLE {W} {H} 20 20 8 6"], images)


def test_colmap_images_txt_without_its_empty_lines_is_refused_at_the_line(tmp_path):
    root = colmap_text_model(tmp_path / "colmap", 11)
    assert len(read_scene(root, "colmap")) == 11
    images = root / "images.txt"
    images.write_text("".join(line for line in images.read_text().splitlines(keepends=True)
                              if line.strip()))
    with pytest.raises(AcegError) as info:
        read_scene(root)
    message = str(info.value)
    assert re.match(rf"^{re.escape(str(images))}:3: .*POINTS2D", message), message
    assert "\n" not in message


@pytest.mark.parametrize("quaternion", ["0 0 0 0", "0.0 -0.0 0 0.0", "1e-200 0 0 0", "2 0 0 0"])
def test_colmap_degenerate_quaternion_is_refused(tmp_path, quaternion):
    root = colmap_text_model(tmp_path / "colmap", 2)
    images = root / "images.txt"
    lines = images.read_text().splitlines()
    fields = lines[3].split()
    lines[3] = " ".join([fields[0], quaternion, *fields[5:]])
    images.write_text("\n".join(lines) + "\n")
    with pytest.raises(AcegError, match=rf"^{re.escape(str(images))}:4: .*quaternion"):
        read_scene(root)


@pytest.mark.parametrize("line, problem", [
    ("1 PINHOLE 16 12 0 20 8 6", "focal length"),
    ("1 PINHOLE 16 12 20 20 8 nan", "non-finite"),
    ("1 PINHOLE 0 12 20 20 8 6", "width"),
    ("1 PINHOLE 16 12 20 20 80 6", "principal point"),
])
def test_colmap_degenerate_cameras_are_refused(tmp_path, line, problem):
    root = colmap_text_model(tmp_path / "colmap", 2)
    (root / "cameras.txt").write_text(line + "\n")
    with pytest.raises(AcegError, match=rf"^{re.escape(str(root / 'cameras.txt'))}:1: .*{problem}"):
        read_scene(root)


def test_transforms_json_nested_very_deep_is_a_clear_error(tmp_path):
    root = tmp_path / "ns"
    build_nerfstudio(root)
    path = root / "transforms.json"
    depth = 100_000
    text = path.read_text().replace('"k1": 0.01', '"k1": ' + "[" * depth + "]" * depth, 1)
    path.write_text(text)
    with pytest.raises(AcegError, match=rf"^{re.escape(str(path))}: .*nested"):
        read_scene(root)


def _aceg_subprocess(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "aceg", *args], env=env, **kwargs)


@pytest.mark.parametrize("args", [["info", "SCENE"], ["--help"], ["info", "--help"]])
def test_output_into_a_closed_pipe_exits_quietly(tmp_path, args):
    """``aceg info SCENE | head -1``: the reader is gone before aceg writes."""
    build_ace(tmp_path / "scene")
    args = [str(tmp_path / "scene") if a == "SCENE" else a for a in args]
    proc = _aceg_subprocess(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err, err
    # 141 = 128 + SIGPIPE, as a program the signal stopped; help is printed by argparse,
    # which ignores a failed write itself
    assert proc.returncode in ((141,) if args[-1] != "--help" else (0, 141))


# -- 6: outputs ---------------------------------------------------------------------------

KILLED_WRITER = """
import sys, time
from aceg.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"")  # killed as save_file starts writing
    print("writing", flush=True)
    time.sleep(120)
"""


def test_a_killed_write_leaves_nothing_once_the_next_write_is_done(tmp_path):
    from aceg.io import atomic_write_bytes

    target = tmp_path / "out" / "scene.map"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert any(".tmp-" in p.name for p in target.parent.iterdir())  # the kill left its temporary file
    atomic_write_bytes(target, b"the next map")
    assert [p.name for p in target.parent.iterdir()] == ["scene.map"]
    assert target.read_bytes() == b"the next map"


def _first_map_run(scene: str, target: str, started, release) -> None:
    """``aceg map`` whose mapping waits for ``release`` (the first of two runs)."""
    import aceg.mapping.mapper as mapper

    def blocking(*args, **kwargs):
        started.set()
        release.wait(120)
        os._exit(0)

    mapper.map_scene = blocking
    main(["map", scene, target, "--model", "ace"])
    os._exit(1)


def test_a_second_aceg_map_to_the_same_output_is_refused(tmp_path, capsys):
    scene = tmp_path / "scene"
    build_ace(scene)
    target = tmp_path / "maps" / "scene.map"
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_first_map_run, args=(str(scene), str(target), started, release))
    first.start()
    try:
        assert started.wait(120), "the first aceg map did not start mapping"
        code, out, err = _run(capsys, "map", scene, target, "--model", "ace", "--preset", "fast",
                              "--iterations", "2", "--short-side", "16")
    finally:
        release.set()
        first.join(60)
    assert code == 2 and "wrote" not in out
    assert err == f"aceg: error: another aceg map is writing {target} (pid {first.pid})\n"
    assert not target.exists()


# -- weights ------------------------------------------------------------------------------

SHIPPED_IDENTITIES = {"anchors-xfeat": "0d83cf9c425b07e2",
                      "anchors-identity-xfeat": "4e236fd806c97d1f",
                      "transformer-xfeat": "e3fa8c818411be29"}


def test_shipped_weights_carry_a_content_hash_and_keep_their_identity():
    from safetensors import safe_open

    from aceg.model.map_file import WEIGHTS_DIR, load_regressor

    for name, identity in SHIPPED_IDENTITIES.items():
        path = WEIGHTS_DIR / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            assert len(json.loads(f.metadata()["aceg_regressor"])["sha256"]) == 64
        assert load_regressor(path).identity == identity


def test_flipped_byte_in_weights_is_refused(tmp_path):
    from aceg.model.map_file import WEIGHTS_DIR, load_regressor

    data = bytearray((WEIGHTS_DIR / "anchors-xfeat.safetensors").read_bytes())
    data[-5] ^= 0x01
    path = tmp_path / "w.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(AcegError, match=rf"^{re.escape(str(path))}: .*content hash"):
        load_regressor(path)


# -- writers ------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_convert_removes_the_temporary_folders_of_dead_writers(tmp_path):
    build_ace(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    for name in (f".dst.tmp-{_dead_pid()}", f".dst.old.tmp-{_dead_pid()}"):
        (out / name / "rgb").mkdir(parents=True)
    (out / f".dst.tmp-{os.getpid()}x").mkdir()  # not a temporary name of aceg's: kept
    assert main(["convert", str(tmp_path / "src"), str(out / "dst")]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f".dst.tmp-{os.getpid()}x", "dst"]


def test_a_writer_in_another_thread_is_refused(tmp_path):
    import threading

    from aceg.io import atomic_write_text, output_lock

    target = tmp_path / "poses.txt"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with output_lock(target, "aceg localize"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(AcegError, match=rf"another .* is writing {re.escape(str(target))} "
                                            rf"\(pid {os.getpid()}\)"):
            atomic_write_text(target, "x")
    finally:
        release.set()
        thread.join()
    atomic_write_text(target, "x")  # free again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.txt"]


def test_a_map_written_before_the_hash_loads_unverified_with_a_note(tiny, tmp_path, capsys):
    from aceg.errors import AcegWarning

    path = legacy_map(tiny.map_path, tmp_path / "old.map")
    with pytest.warns(AcegWarning, match="read unverified"):
        data = load_map(path)
    assert not data.verified and load_map(tiny.map_path).verified
    code, out, err = _run(capsys, "localize", path, tiny.ace_dir, "--out", tmp_path / "p.txt")
    assert code == 0 and "wrote" in out
    notes = [line for line in err.splitlines() if line.startswith("aceg: note: ")]
    assert len(notes) == 1 and str(path) in notes[0] and "unverified" in notes[0]


def test_serve_with_every_map_failing_at_preload_refuses_to_start(tiny, tmp_path, capsys, monkeypatch):
    """A map that reads but whose localizer cannot be built is named among the warnings,
    and with no map left the service refuses to start instead of serving nothing."""
    import aceg.service.app as app

    def broken(config):
        def build(path):
            raise AcegError(f"{path}: regressor missing")
        return build

    monkeypatch.setattr(app, "localizer_factory", broken)
    folder = tmp_path / "maps"
    folder.mkdir()
    shutil.copy(tiny.map_path, folder / "only.map")
    code, out, err = _run(capsys, "serve", "--maps", folder, "--preload", "--port", "0")
    assert code != 0
    assert "only.map: regressor missing" in out
    _one_line_error(err, "no usable *.map files")


def test_map_short_side_that_no_query_could_use_is_refused_before_mapping():
    from types import SimpleNamespace

    from aceg.cli.map import check_short_side

    scene = SimpleNamespace(frames=[SimpleNamespace(width=4000, height=3000, name="a.jpg")],
                            working_short_side=lambda requested: min(requested, 3000))
    check_short_side(480, scene)
    with pytest.raises(AcegError, match="--short-side 1500: queries like the mapping images"):
        check_short_side(1500, scene)  # 2000x1500 > 2,000,000 pixels
    with pytest.raises(AcegError, match="between 16 and 4096"):
        check_short_side(5000, scene)
