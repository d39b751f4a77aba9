"""Headless rasterisation of a synthetic scene: RGB and metric z-depth, OpenCV conventions.

Why moderngl on EGL (and not pyrender): moderngl is maintained, ships wheels for numpy 2
and creates a standalone OpenGL 3.3+ context on EGL (Mesa llvmpipe without a GPU) with no
display; pyrender is no longer released, pins an old PyOpenGL and needs a shim for numpy 2.
A few shaders is all we need, so the thin binding fits.

Conventions (those of :mod:`aceg.data.camera`):

* The camera is a pinhole ``K`` with OpenCV axes (x right, y down, z forward); poses are
  camera-to-world 4x4 (metres).
* The projection is built from ``K`` so that the fragment at image column ``j``, row ``i``
  (row 0 at the top) is shaded at the ray through ``(u, v) = (j, i)``: with image size
  ``W x H``, ``x_ndc = 2 (u + 0.5) / W - 1`` and ``y_ndc = 2 (v + 0.5) / H - 1``. OpenGL
  rasterises at window positions ``(j + 0.5, r + 0.5)`` with ``r`` the framebuffer row, so
  framebuffer row ``r`` is image row ``v = r`` and the read-back needs no flip.
* Depth is the camera-frame ``z`` of the surface (metres, along the optical axis, not the
  ray length), interpolated per fragment and written to a float32 attachment; pixels that
  see nothing are 0.

Shading: textures (sRGB) are linearised, lit by an ambient term plus point lights
(diffuse with ``1 / (1 + d^2 / r^2)`` falloff and a Blinn-Phong highlight), tone-mapped
with an exposure and returned to sRGB. No shadows; a mesh of several lighting zones (the
rooms of a place, :attr:`Mesh.zones`) is drawn zone by zone, each lit only by its own
:class:`Lighting`, so that light does not pass through walls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aceg.data.camera import invert_pose
from aceg.data.synthetic.mesh import VERTEX_ATTRIBUTES, VERTEX_FORMAT, Mesh
from aceg.errors import AcegError

#: Most point lights a lighting may have.
MAX_LIGHTS = 8

#: Near and far clipping distances (metres) along the optical axis.
NEAR, FAR = 0.02, 100.0

_VERTEX_SHADER = """
#version 330
uniform mat4 world_to_camera;   // OpenCV camera frame
uniform mat4 projection;        // from K, see module docstring
in vec3 in_position;
in vec3 in_normal;
in vec2 in_uv;
in float in_layer;
in vec3 in_tint;
in vec2 in_specular;
in float in_surface;
out vec3 v_world;
out vec3 v_normal;
out vec2 v_uv;
out float v_depth;
flat out float v_layer;
flat out vec3 v_tint;
flat out vec2 v_specular;
flat out float v_surface;
void main() {
    vec4 camera_point = world_to_camera * vec4(in_position, 1.0);
    gl_Position = projection * camera_point;
    v_world = in_position;
    v_normal = in_normal;
    v_uv = in_uv;
    v_depth = camera_point.z;
    v_layer = in_layer;
    v_tint = in_tint;
    v_specular = in_specular;
    v_surface = in_surface;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform sampler2DArray textures;
uniform vec3 camera_centre;
uniform vec3 ambient;
uniform int light_count;
uniform vec3 light_position[@MAX_LIGHTS@];
uniform vec3 light_colour[@MAX_LIGHTS@];  // colour times intensity, linear RGB
uniform float light_radius;
uniform float exposure;
in vec3 v_world;
in vec3 v_normal;
in vec2 v_uv;
in float v_depth;
flat in float v_layer;
flat in vec3 v_tint;
flat in vec2 v_specular;
flat in float v_surface;
layout(location = 0) out vec4 out_colour;
layout(location = 1) out vec2 out_depth_surface;
void main() {
    // mirrored repeat: no seams where a texture repeats
    vec2 mirrored = 1.0 - abs(mod(v_uv, 2.0) - 1.0);
    vec3 texel = textureGrad(textures, vec3(mirrored, v_layer), dFdx(v_uv), dFdy(v_uv)).rgb;
    vec3 albedo = pow(texel, vec3(2.2)) * v_tint;
    vec3 to_eye = normalize(camera_centre - v_world);
    vec3 n = normalize(v_normal);
    if (dot(n, to_eye) < 0.0) n = -n;
    vec3 diffuse = ambient;
    vec3 highlight = vec3(0.0);
    for (int i = 0; i < light_count; ++i) {
        vec3 to_light = light_position[i] - v_world;
        float d2 = dot(to_light, to_light);
        vec3 l = to_light * inversesqrt(d2);
        float falloff = 1.0 / (1.0 + d2 / (light_radius * light_radius));
        float lambert = max(dot(n, l), 0.0);
        diffuse += light_colour[i] * lambert * falloff;
        if (lambert > 0.0) {
            vec3 h = normalize(l + to_eye);
            highlight += light_colour[i] * falloff * v_specular.x
                         * pow(max(dot(n, h), 0.0), v_specular.y);
        }
    }
    vec3 radiance = albedo * diffuse + highlight;
    vec3 mapped = vec3(1.0) - exp(-radiance * exposure);
    out_colour = vec4(pow(mapped, vec3(1.0 / 2.2)), 1.0);
    out_depth_surface = vec2(v_depth, v_surface);
}
""".replace("@MAX_LIGHTS@", str(MAX_LIGHTS))


def projection_from_intrinsics(K: np.ndarray, width: int, height: int,
                               near: float = NEAR, far: float = FAR) -> np.ndarray:
    """4x4 matrix from OpenCV camera coordinates to clip coordinates (see module docstring).

    ``x_clip = (2 fx / W) x + (2 (cx + 0.5) / W - 1) z`` and likewise for y, ``w_clip = z``,
    ``z_clip`` maps ``z = near`` to -1 and ``z = far`` to +1. Skew ``K[0, 1]`` is honoured.
    """
    fx, skew, cx = K[0, 0], K[0, 1], K[0, 2]
    fy, cy = K[1, 1], K[1, 2]
    return np.array([
        [2 * fx / width, 2 * skew / width, 2 * (cx + 0.5) / width - 1, 0.0],
        [0.0, 2 * fy / height, 2 * (cy + 0.5) / height - 1, 0.0],
        [0.0, 0.0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0.0, 0.0, 1.0, 0.0],
    ])


@dataclass(frozen=True)
class Lighting:
    """Point lights plus ambient, in linear RGB.

    Attributes:
        positions: (L, 3) light positions, world metres.
        colours: (L, 3) colour times intensity of each light (0 for a light that is off).
        ambient: (3,) ambient light.
        radius: falloff distance (metres): intensity halves at this distance.
        exposure: camera exposure applied before tone mapping.
    """

    positions: np.ndarray
    colours: np.ndarray
    ambient: np.ndarray
    radius: float = 2.5
    exposure: float = 1.0


@dataclass
class RenderedView:
    """One rendered image.

    Attributes:
        rgb: (H, W, 3) uint8 sRGB.
        depth: (H, W) float32 camera z in metres, 0 where nothing is seen.
        surface: (H, W) int32 ``2 * surface_id + plain`` of the visible surface, -1 where
            nothing is seen.
    """

    rgb: np.ndarray
    depth: np.ndarray
    surface: np.ndarray


class Renderer:
    """An EGL OpenGL context with the shaders; load a scene, then render views of it.

    One renderer per process; reuse it across scenes (:meth:`load_scene` replaces the
    geometry and textures). Every method makes its own context current for the call:
    moderngl draws into whichever context is current, so a second renderer created and
    released in between would otherwise leave this one drawing into a released context.
    """

    def __init__(self):
        import moderngl

        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as exc:  # noqa: BLE001 - moderngl raises plain Exception
            raise AcegError(
                f"cannot create a headless OpenGL context on EGL ({exc}); install the EGL/Mesa "
                "packages (libegl1 libegl-mesa0 libgl1-mesa-dri)"
            ) from None
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER,
                                         fragment_shader=_FRAGMENT_SHADER)
        self.vao = None
        self.vbo = None
        self.texture = None
        self.zones: list[tuple[int, int]] | None = None
        self.zone_centres: np.ndarray | None = None
        self._framebuffers: dict[tuple[int, int], object] = {}

    def release(self) -> None:
        """Free the GPU objects and the context."""
        with self.ctx:
            self._release_resources()
        self.ctx.release()

    def _release_resources(self) -> None:
        self._release_scene()
        for fbo, attachments in self._framebuffers.values():
            fbo.release()
            for a in attachments:
                a.release()
        self._framebuffers.clear()
        self.program.release()

    def _release_scene(self) -> None:
        for obj in (self.vao, self.vbo, self.texture):
            if obj is not None:
                obj.release()
        self.vao = self.vbo = self.texture = None

    def load_scene(self, mesh: Mesh, texture_stack: np.ndarray | None) -> None:
        """Upload geometry (``mesh.vertices``) and textures ((L, S, S, 3) uint8 sRGB);
        ``texture_stack=None`` keeps the textures already loaded (same scene, moved
        objects)."""
        with self.ctx:
            self._load_scene(mesh, texture_stack)

    def _load_scene(self, mesh: Mesh, texture_stack: np.ndarray | None) -> None:
        import moderngl

        if texture_stack is None:
            if self.texture is None:
                raise RuntimeError("Renderer.load_scene: no textures loaded yet")
            for obj in (self.vao, self.vbo):
                if obj is not None:
                    obj.release()
            self._upload_geometry(mesh)
            return
        self._release_scene()
        layers, size = texture_stack.shape[0], texture_stack.shape[1]
        self.texture = self.ctx.texture_array((size, size, layers), 3,
                                              np.ascontiguousarray(texture_stack).tobytes())
        self.texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        # no anisotropic filtering: llvmpipe's draws stray lines of wrong texels with it
        self.texture.anisotropy = 1.0
        # coordinates arrive mirrored into [0, 1]: clamp, or bilinear filtering at the
        # borders would blend in the opposite edge
        self.texture.repeat_x = False
        self.texture.repeat_y = False
        self.texture.build_mipmaps()
        self._upload_geometry(mesh)

    def _upload_geometry(self, mesh: Mesh) -> None:
        self.zones = mesh.zones
        self.zone_centres = None
        if mesh.zones is not None:  # for drawing near zones first (early depth rejection)
            self.zone_centres = np.stack([mesh.vertices[first:first + count, :3].mean(axis=0)
                                          for first, count in mesh.zones])
        self.vbo = self.ctx.buffer(np.ascontiguousarray(mesh.vertices, np.float32).tobytes())
        self.vao = self.ctx.vertex_array(self.program,
                                         [(self.vbo, VERTEX_FORMAT, *VERTEX_ATTRIBUTES)])

    def _framebuffer(self, width: int, height: int):
        key = (width, height)
        if key not in self._framebuffers:
            colour = self.ctx.renderbuffer((width, height), 4, dtype="f1")
            depth_surface = self.ctx.renderbuffer((width, height), 2, dtype="f4")
            zbuffer = self.ctx.depth_renderbuffer((width, height))
            fbo = self.ctx.framebuffer([colour, depth_surface], zbuffer)
            self._framebuffers[key] = (fbo, (colour, depth_surface, zbuffer))
        return self._framebuffers[key][0]

    def render(self, K: np.ndarray, cam_to_world: np.ndarray, width: int, height: int,
               lighting: Lighting | Sequence[Lighting], colour: bool = True) -> RenderedView:
        """Render the loaded scene seen by a pinhole camera.

        Args:
            K: 3x3 intrinsics (pixels) for a ``width`` x ``height`` image.
            cam_to_world: 4x4 camera-to-world pose, OpenCV axes, metres.
            lighting: lights and exposure; for a mesh with zones, one per zone.
            colour: read back the RGB image (False leaves ``rgb`` empty, for quick checks).
        """
        with self.ctx:
            return self._render(K, cam_to_world, width, height, lighting, colour)

    def _render(self, K: np.ndarray, cam_to_world: np.ndarray, width: int, height: int,
                lighting: Lighting | Sequence[Lighting], colour: bool) -> RenderedView:
        import moderngl

        if self.vao is None:
            raise RuntimeError("Renderer.render called before load_scene")
        fbo = self._framebuffer(width, height)
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.disable(moderngl.CULL_FACE)
        world_to_camera = invert_pose(np.asarray(cam_to_world, np.float64))
        program = self.program
        # moderngl expects column-major matrices: pass the transpose
        program["world_to_camera"].write(world_to_camera.T.astype("f4").tobytes())
        projection = projection_from_intrinsics(np.asarray(K, np.float64), width, height)
        program["projection"].write(projection.T.astype("f4").tobytes())
        program["camera_centre"].value = tuple(float(v) for v in cam_to_world[:3, 3])
        self.texture.use(location=0)
        program["textures"].value = 0
        if self.zones is None:
            if not isinstance(lighting, Lighting):
                raise RuntimeError("Renderer.render: one Lighting for a mesh without zones")
            self._set_lighting(lighting)
            self.vao.render(moderngl.TRIANGLES)
        else:
            if isinstance(lighting, Lighting) or len(lighting) != len(self.zones):
                raise RuntimeError("Renderer.render: one Lighting per zone of the mesh")
            distance = np.linalg.norm(self.zone_centres - cam_to_world[:3, 3], axis=1)
            for zone in np.argsort(distance, kind="stable"):
                first, count = self.zones[zone]
                self._set_lighting(lighting[zone])
                self.vao.render(moderngl.TRIANGLES, vertices=count, first=first)
        raw = np.frombuffer(fbo.read(components=2, attachment=1, dtype="f4"), np.float32)
        depth_surface = raw.reshape(height, width, 2)
        depth = np.ascontiguousarray(depth_surface[..., 0])
        surface = np.rint(depth_surface[..., 1]).astype(np.int32)
        surface[depth <= 0] = -1
        if colour:
            rgb = np.frombuffer(fbo.read(components=3, attachment=0), np.uint8)
            rgb = rgb.reshape(height, width, 3).copy()
        else:
            rgb = np.zeros((0, 0, 3), np.uint8)
        return RenderedView(rgb, depth, surface)

    def _set_lighting(self, lighting: Lighting) -> None:
        program = self.program
        count = min(len(lighting.positions), MAX_LIGHTS)
        positions = np.zeros((MAX_LIGHTS, 3), "f4")
        colours = np.zeros((MAX_LIGHTS, 3), "f4")
        positions[:count] = lighting.positions[:count]
        colours[:count] = lighting.colours[:count]
        program["light_count"].value = count
        program["light_position"].write(positions.tobytes())
        program["light_colour"].write(colours.tobytes())
        program["ambient"].value = tuple(float(v) for v in lighting.ambient)
        program["light_radius"].value = float(lighting.radius)
        program["exposure"].value = float(lighting.exposure)
