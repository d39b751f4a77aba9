from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real posed image sets (../shared/data); tests needing them fail loudly if absent."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder missing: {SHARED_DATA} (CI clones with ../shared beside it)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _encoder_cache(tmp_path_factory):
    """A fresh cache folder for the session's exported encoder (aceg.model.onnx_network), also
    seen by the CLI in subprocesses: the tests do not depend on, or write to, the user's."""
    previous = os.environ.get("ACEG_CACHE")
    os.environ["ACEG_CACHE"] = str(tmp_path_factory.mktemp("aceg-cache"))
    yield
    if previous is None:
        os.environ.pop("ACEG_CACHE", None)
    else:
        os.environ["ACEG_CACHE"] = previous


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is as fast and avoids oversubscribing busy 2-core machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def renderer():
    """One offscreen renderer (moderngl on EGL) for a test module's synthetic scenes."""
    from aceg.data.synthetic.renderer import Renderer

    r = Renderer()
    yield r
    r.release()
