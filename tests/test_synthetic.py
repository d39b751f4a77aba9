"""Synthetic scene generator: projection convention, geometry consistency between frames,
lighting changes, determinism, ACE layout, CLI. Tiny images (60x80) and few frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aceg.cli.main import main as aceg_main
from aceg.data.camera import Intrinsics, invert_pose
from aceg.data.images import load_depth, load_image
from aceg.data.readers import read_scene
from aceg.data.synthetic.generate import (
    SPLITS,
    SynthSettings,
    generate_scene,
    scene_layout,
    scene_seed,
)
from aceg.data.synthetic.layout import Material
from aceg.data.synthetic.mesh import MeshBuilder
from aceg.data.synthetic.renderer import Lighting, Renderer

HEIGHT, WIDTH = 60, 80
FRAMES_MAPPING, FRAMES_QUERY = 12, 4
SEED = 11

#: Lower bounds on the mean absolute RGB difference (grey levels, 0-255) between a
#: query_same frame and the query_light frame of the same pose: for every frame, and on
#: average over the frames. (Over 40 seeds x 4 frames at 60x80 we measured: per frame
#: min 7.4, median 31.7; per-scene mean min 17.1.)
MIN_LIGHTING_DIFFERENCE = 5.0
MIN_MEAN_LIGHTING_DIFFERENCE = 15.0

TINY = dict(frames_mapping=FRAMES_MAPPING, frames_query=FRAMES_QUERY, height=HEIGHT,
            width=WIDTH, texture_size=128)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory, renderer) -> Path:
    out = tmp_path_factory.mktemp("synth") / "scene"
    generate_scene(out, SEED, renderer=renderer, **TINY)
    return out


def _frames(split_dir: Path) -> list[str]:
    return sorted(p.stem for p in (split_dir / "rgb").glob("*.png"))


def _read_frame(split_dir: Path, name: str):
    depth = load_depth(split_dir / "depth" / f"{name}.png")
    pose = np.loadtxt(split_dir / "poses" / f"{name}.txt")
    K = np.loadtxt(split_dir / "calibration" / f"{name}.txt")
    return depth, pose, K


def _reprojection_error(depth_a, pose_a, K_a, depth_b, pose_b, K_b):
    """Median relative depth error of frame a's points visible in frame b (b's depth
    interpolated bilinearly where its 4 neighbouring pixels lie on one surface), and the
    fraction of a's pixels compared."""
    h, w = depth_a.shape
    v, u = np.nonzero(depth_a > 0)
    z = depth_a[v, u].astype(np.float64)
    rays = np.linalg.inv(K_a) @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    points_a = rays * z  # camera a frame, OpenCV axes
    a_to_b = invert_pose(pose_b) @ pose_a
    points_b = a_to_b[:3, :3] @ points_a + a_to_b[:3, 3:4]
    pixels = K_b @ points_b
    with np.errstate(divide="ignore", invalid="ignore"):
        ub, vb = pixels[0] / pixels[2], pixels[1] / pixels[2]
    # bilinear interpolation of b's depth between the 4 pixel centres around (ub, vb)
    inside = (points_b[2] > 0) & (ub >= 0) & (ub <= w - 1) & (vb >= 0) & (vb <= h - 1)
    ub, vb, zb = ub[inside], vb[inside], points_b[2][inside]
    u0 = np.minimum(np.floor(ub).astype(int), w - 2)
    v0 = np.minimum(np.floor(vb).astype(int), h - 2)
    fu, fv = ub - u0, vb - v0
    corners = np.stack([depth_b[v0, u0], depth_b[v0, u0 + 1], depth_b[v0 + 1, u0],
                        depth_b[v0 + 1, u0 + 1]]).astype(np.float64)
    weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])
    # the 4 neighbours must lie on one surface (no depth edge between them)
    valid = (corners.min(axis=0) > 0) & (corners.max(axis=0) < 1.05 * corners.min(axis=0))
    if not valid.any():
        return float("inf"), 0.0
    observed = (corners * weights).sum(axis=0)[valid]
    zb = zb[valid]
    # where b sees something nearer, a's point is hidden in b (occlusion): not compared.
    # b seeing *farther* than a's point would be an error and stays in.
    visible = observed > 0.95 * zb
    if visible.sum() < 50:
        return float("inf"), 0.0
    relative = np.abs(zb[visible] - observed[visible]) / observed[visible]
    return float(np.median(relative)), visible.sum() / depth_a.size


def test_projection_matches_pixel_centre_convention(renderer):
    """A tilted plane rendered with a K whose principal point is off-centre: the depth at
    pixel (column j, row i) equals the depth of the ray K^-1 (j, i, 1) exactly (float
    rounding). Half a pixel of shift or a flipped row order would be seen."""
    builder = MeshBuilder()
    surface = builder.surface("plane")

    def plane_z(x, y):  # plane z = 2 + 0.5 x + 0.3 y in the camera frame
        return 2.0 + 0.5 * x + 0.3 * y

    corners = np.array([[x, y, plane_z(x, y)] for x, y in ((-4, -4), (4, -4), (4, 4), (-4, 4))])
    builder.quad(corners, np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float), Material(0), surface)
    texture = np.full((1, 8, 8, 3), 128, np.uint8)
    renderer.load_scene(builder.build(), texture)
    K = np.array([[70.0, 0.0, 38.3], [0.0, 72.5, 31.1], [0.0, 0.0, 1.0]])
    lighting = Lighting(np.zeros((1, 3)), np.ones((1, 3)), np.full(3, 0.2))
    view = renderer.render(K, np.eye(4), WIDTH, HEIGHT, lighting)
    j, i = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    ray_x, ray_y = (j - K[0, 2]) / K[0, 0], (i - K[1, 2]) / K[1, 1]
    expected = 2.0 / (1.0 - 0.5 * ray_x - 0.3 * ray_y)
    relative = np.abs(view.depth / expected - 1.0)
    assert relative.max() < 1e-5
    # the test is sensitive: half a pixel to the right or a flipped image is far off
    shifted = 2.0 / (1.0 - 0.5 * (j + 0.5 - K[0, 2]) / K[0, 0] - 0.3 * ray_y)
    assert np.abs(view.depth / shifted - 1.0).max() > 1e-3
    assert np.abs(view.depth[::-1] / expected - 1.0).max() > 1e-2
    assert (view.surface == 0).all()  # surface 0, textured


def test_writes_every_split_in_ace_layout(scene_dir):
    info = json.loads((scene_dir / "scene.json").read_text())
    assert info["seed"] == SEED and info["generator_version"]
    assert (scene_dir / "contact_sheet.png").is_file()
    for split in SPLITS:
        folder = scene_dir / split
        names = _frames(folder)
        assert len(names) == (FRAMES_MAPPING if split == "mapping" else FRAMES_QUERY)
        for sub, suffix in (("poses", ".txt"), ("calibration", ".txt"), ("depth", ".png")):
            assert sorted(p.stem for p in (folder / sub).glob(f"*{suffix}")) == names
        raw_depth = cv2.imread(str(folder / "depth" / f"{names[0]}.png"), cv2.IMREAD_UNCHANGED)
        assert raw_depth.dtype == np.uint16 and raw_depth.shape == (HEIGHT, WIDTH)
        assert load_image(folder / "rgb" / f"{names[0]}.png").shape == (HEIGHT, WIDTH, 3)


def test_output_reads_through_ace_reader(scene_dir):
    for split in SPLITS:
        folder = scene_dir / split
        scene = read_scene(folder)
        assert scene.source_format == "ace" and scene.has_depth and scene.has_poses
        assert len(scene) == len(_frames(folder))
        for frame in scene.frames[:2]:
            depth, pose, K = _read_frame(folder, Path(frame.name).stem)
            np.testing.assert_array_equal(frame.cam_to_world, pose)
            np.testing.assert_array_equal(frame.intrinsics.K, K)
            assert (frame.width, frame.height) == (WIDTH, HEIGHT)
            np.testing.assert_array_equal(load_depth(frame.depth_path), depth)


def test_views_are_not_too_close_or_blank(scene_dir):
    settings = SynthSettings()
    for split in SPLITS:
        folder = scene_dir / split
        for name in _frames(folder):
            depth, _, _ = _read_frame(folder, name)
            assert (depth > 0).mean() > 0.98
            # vetted on a low-resolution render: allow a little slack at full size
            assert np.median(depth[depth > 0]) > 0.9 * settings.min_median_depth


def test_cameras_are_in_free_space(scene_dir):
    """No camera inside an object, a wall, the floor or the ceiling (the layout rebuilt
    from the seed; query_moved has other object positions and is checked by the
    generator against those)."""
    layout, _ = scene_layout(SEED, SynthSettings(**TINY))
    for split in ("mapping", "query_same", "query_light", "query_view"):
        folder = scene_dir / split
        centres = np.stack([_read_frame(folder, n)[1][:3, 3] for n in _frames(folder)])
        assert layout.is_free(centres[:, :2], centres[:, 2], clearance=0.29).all(), split


def test_depth_reprojects_between_frames(scene_dir):
    """Depth of frame a back-projected with its pose and K, moved into frame b with b's
    pose and projected with b's K, matches b's depth (median relative error < 1%)."""
    mapping = scene_dir / "mapping"
    mapping_frames = [_read_frame(mapping, n) for n in _frames(mapping)]
    errors = []
    # every pair of mapping frames, and every query_same / query_view frame against every
    # mapping frame, that overlap by at least 30% of the pixels
    sources = list(mapping_frames)
    for split in ("query_same", "query_view"):
        sources += [_read_frame(scene_dir / split, n) for n in _frames(scene_dir / split)]
    for index, frame_a in enumerate(sources):
        for index_b, frame_b in enumerate(mapping_frames):
            if index == index_b:
                continue
            error, overlap = _reprojection_error(*frame_a, *frame_b)
            if overlap > 0.3:
                errors.append(error)
    assert len(errors) >= 10
    assert max(errors) < 0.01, f"median relative errors {np.round(errors, 4)}"
    assert np.median(errors) < 0.001  # exact up to the millimetre rounding of the PNGs
    print(f"reprojection: {len(errors)} pairs, median relative error: median over pairs "
          f"{np.median(errors):.5f}, worst {max(errors):.5f}")


def test_lighting_changes_images_not_geometry(scene_dir):
    same, light = scene_dir / "query_same", scene_dir / "query_light"
    differences = []
    for name in _frames(same):
        assert (same / "depth" / f"{name}.png").read_bytes() == \
            (light / "depth" / f"{name}.png").read_bytes()
        assert (same / "poses" / f"{name}.txt").read_text() == \
            (light / "poses" / f"{name}.txt").read_text()
        a = load_image(same / "rgb" / f"{name}.png").astype(np.float64)
        b = load_image(light / "rgb" / f"{name}.png").astype(np.float64)
        differences.append(float(np.abs(a - b).mean()))
    assert min(differences) > MIN_LIGHTING_DIFFERENCE, differences
    assert np.mean(differences) > MIN_MEAN_LIGHTING_DIFFERENCE, differences
    print(f"lighting A vs B, same pose: mean |RGB difference| per frame {np.round(differences, 1)}")


def test_same_seed_same_scene(scene_dir, renderer, tmp_path):
    again = tmp_path / "again"
    generate_scene(again, SEED, renderer=renderer, **TINY)
    assert (scene_dir / "scene.json").read_text() == (again / "scene.json").read_text()
    for split in SPLITS:
        for name in _frames(scene_dir / split):
            for sub in ("depth", "poses", "calibration"):
                suffix = ".png" if sub == "depth" else ".txt"
                assert (scene_dir / split / sub / f"{name}{suffix}").read_bytes() == \
                    (again / split / sub / f"{name}{suffix}").read_bytes()
            a = load_image(scene_dir / split / "rgb" / f"{name}.png").astype(int)
            b = load_image(again / split / "rgb" / f"{name}.png").astype(int)
            assert np.abs(a - b).max() <= 2
    other = tmp_path / "other"
    generate_scene(other, SEED + 1, renderer=renderer, splits=("mapping",),
                   **{**TINY, "frames_mapping": 2})
    assert (other / "mapping" / "depth" / "frame_00000.png").read_bytes() != \
        (scene_dir / "mapping" / "depth" / "frame_00000.png").read_bytes()


def test_intrinsics_vary_across_scenes(scene_dir):
    info = json.loads((scene_dir / "scene.json").read_text())
    intrinsics = Intrinsics(**info["intrinsics"])
    intrinsics.check("scene.json", WIDTH, HEIGHT)
    assert abs(intrinsics.fx / intrinsics.fy - 1) < 0.011
    seeds = [scene_seed(0, i) for i in range(200)]
    assert len(set(seeds)) == 200
    assert not set(seeds) & {scene_seed(1, i) for i in range(200)}


def test_cli_generates_scenes_with_derived_seeds(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", str(out), "--scenes", "2", "--seed", "3", "--frames-mapping", "3",
            "--frames-query", "2", "--size", "60x80", "--workers", "1", "--quiet",
            "--splits", "mapping,query_light"]
    assert aceg_main(args) == 0
    for index in range(2):
        info = json.loads((out / f"scene_{index:04d}" / "scene.json").read_text())
        assert info["seed"] == scene_seed(3, index)
        assert sorted(p.name for p in (out / f"scene_{index:04d}").iterdir() if p.is_dir()) == \
            ["mapping", "query_light"]
    assert aceg_main(args) == 0  # existing scenes are kept
    assert "already there" in capsys.readouterr().out
    assert aceg_main(["synth", str(out), "--size", "60by80"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert aceg_main(["synth", str(out), "--splits", "mapping,query_fog"]) == 2


def test_extra_photo_folder_is_used(tmp_path):
    from aceg.data.synthetic.textures import PhotoSource, photo_texture

    folder = tmp_path / "textures"
    folder.mkdir()
    (folder / "SOURCES.md").write_text("wood.png: made by this test\n")
    pattern = (np.indices((64, 64)).sum(axis=0) % 7 * 30).astype(np.uint8)
    cv2.imwrite(str(folder / "wood.png"), np.dstack([pattern, pattern // 2, 255 - pattern]))
    photos = PhotoSource.discover([folder])
    assert folder / "wood.png" in photos.surface and folder / "wood.png" in photos.poster
    texture = photo_texture(np.random.default_rng(0), folder / "wood.png", size=32)
    assert texture.name == "photo:wood.png" and texture.rgb.shape == (32, 32, 3)


def test_second_renderer_in_the_process_does_not_disturb_the_first(renderer, scene_dir):
    """A renderer created and released between two renders of another one (as `aceg synth
    --workers 1` does next to a caller's renderer) leaves the first one's output unchanged:
    each renderer makes its own GL context current."""
    frame = read_scene(scene_dir / "mapping").frames[0]
    pose, K = frame.cam_to_world, frame.intrinsics.K
    generate_scene(scene_dir.parent / "again_for_renderer", SEED, renderer=renderer, **TINY)
    lighting = Lighting(np.array([[0.0, 0.0, 2.0]]), np.ones((1, 3)), np.full(3, 0.3))
    before = renderer.render(K, pose, WIDTH, HEIGHT, lighting)
    other = Renderer()
    other.release()
    after = renderer.render(K, pose, WIDTH, HEIGHT, lighting)
    assert np.isfinite(after.depth).all() and (after.depth > 0).mean() > 0.5
    np.testing.assert_array_equal(after.depth, before.depth)
    np.testing.assert_array_equal(after.surface, before.surface)


@pytest.mark.slow
def test_parallel_workers_give_the_same_scenes(tmp_path, renderer):
    """Scenes rendered by two spawned worker processes equal those rendered in-process."""
    out = tmp_path / "parallel"
    args = ["synth", str(out), "--scenes", "2", "--seed", "9", "--frames-mapping", "3",
            "--frames-query", "2", "--size", "60x80", "--workers", "2", "--quiet",
            "--splits", "mapping,query_view"]
    assert aceg_main(args) == 0
    for index in range(2):
        local = tmp_path / f"local_{index}"
        generate_scene(local, scene_seed(9, index), renderer=renderer, frames_mapping=3,
                       frames_query=2, height=60, width=80, splits=("mapping", "query_view"))
        for depth in sorted(local.glob("*/depth/*.png")):
            relative = depth.relative_to(local)
            assert (out / f"scene_{index:04d}" / relative).read_bytes() == depth.read_bytes()
