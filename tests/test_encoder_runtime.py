"""The query encoder's network on ONNX Runtime (aceg.model.onnx_network)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from aceg.errors import AcegWarning
from aceg.model import onnx_network
from aceg.model.encoder import XFeatEncoder, get_encoder


@pytest.fixture(scope="module")
def encoders():
    """The same XFeat on PyTorch and on ONNX Runtime (exported into the session's cache)."""
    on_torch = XFeatEncoder()
    on_onnx = XFeatEncoder()
    on_onnx.use_runtime("onnxruntime")
    return on_torch, on_onnx


def test_onnx_runtime_gives_the_networks_features_and_ratings(encoders):
    on_torch, on_onnx = encoders
    assert (on_torch.runtime, on_onnx.runtime) == ("torch", "onnxruntime")
    rng = np.random.default_rng(0)
    # two sizes that are not multiples of 32 (padded inside), a batch of 2: dynamic shapes
    for shape in ((2, 72, 104, 3), (1, 96, 64, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        f_torch, s_torch = on_torch.encode_scored(images)
        f_onnx, s_onnx = on_onnx.encode_scored(images)
        assert f_onnx.shape == f_torch.shape == (shape[0], 64, shape[1] // 8, shape[2] // 8)
        assert torch.allclose(f_onnx, f_torch, atol=1e-3)  # features have unit channel RMS
        assert torch.allclose(s_onnx, s_torch, atol=1e-4)
        assert not torch.equal(f_onnx, on_torch.encode(images[:, ::-1].copy()))  # it reads the image


def test_the_export_is_kept_and_read_back(encoders, monkeypatch):
    encoders[1].encode(np.zeros((1, 40, 56, 3), np.uint8))  # padded to 64x64: one export
    files = {p.name: p.stat().st_mtime_ns for p in onnx_network.cache_folder().glob("xfeat-*.onnx")}
    # one file per input size: the trial's and the padded size above
    assert {n.rsplit("-", 1)[1] for n in files} >= {"1x3x32x32.onnx", "1x3x64x64.onnx"}

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the network")

    monkeypatch.setattr(onnx_network, "export_network", no_export)
    again = XFeatEncoder()
    again.use_runtime("onnxruntime")
    again.encode(np.zeros((1, 40, 56, 3), np.uint8))
    assert again.runtime == "onnxruntime"
    assert {p.name: p.stat().st_mtime_ns for p in onnx_network.cache_folder().glob("xfeat-*.onnx")} == files


def test_a_damaged_cache_file_is_exported_again(encoders):
    path = onnx_network.export_path(encoders[0].net, "xfeat", (1, 3, 96, 96))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an onnx model")
    image = np.full((1, 96, 96, 3), 77, np.uint8)
    assert torch.allclose(encoders[1].encode(image), encoders[0].encode(image), atol=1e-3)
    assert encoders[1].runtime == "onnxruntime"
    assert path.read_bytes() != b"not an onnx model"


def test_exports_on_two_threads_at_once(encoders):
    from concurrent.futures import ThreadPoolExecutor

    from aceg.mapping.keypoints import SparseFeatures

    sparse = SparseFeatures(128, runtime="onnxruntime")
    rng = np.random.default_rng(5)
    jobs = [lambda: encoders[1].encode(rng.integers(0, 256, (1, 128, 160, 3), dtype=np.uint8)),
            lambda: sparse.extract(rng.integers(0, 256, (160, 224, 3), dtype=np.uint8))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a fallback note nor an exporter warning
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
    assert encoders[1].runtime == sparse.xfeat.net.runtime == "onnxruntime"


def test_an_export_unlike_the_network_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("ACEG_CACHE", str(tmp_path))
    monkeypatch.setattr(onnx_network, "TOLERANCE", 0.0)  # float rounding is too much
    encoder = XFeatEncoder()
    with pytest.warns(AcegWarning, match="differ from the network"):
        encoder.use_runtime("auto")
    assert encoder.runtime == "torch"


def test_auto_falls_back_to_torch_with_a_note_and_onnxruntime_insists(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    monkeypatch.setenv("ACEG_CACHE", str(tmp_path))
    encoder = XFeatEncoder()
    with pytest.warns(AcegWarning, match="ONNX Runtime not used"):
        encoder.use_runtime("auto")
    assert encoder.runtime == "torch"
    image = np.zeros((1, 32, 32, 3), np.uint8)
    assert encoder.encode(image).shape == (1, 64, 4, 4)
    with pytest.raises(RuntimeError, match="cannot run on ONNX Runtime"), warnings.catch_warnings():
        warnings.simplefilter("ignore", AcegWarning)
        encoder.use_runtime("onnxruntime")
    with pytest.raises(ValueError, match="encoder runtime"):
        encoder.use_runtime("tensorrt")


def test_an_unwritable_cache_still_runs_with_a_note(encoders, monkeypatch, tmp_path):
    exported = next(onnx_network.cache_folder().glob("xfeat-*-1x3x32x32.onnx")).read_bytes()
    monkeypatch.setattr(onnx_network, "export_network", lambda net, shape: exported)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("ACEG_CACHE", str(blocked / "cache"))  # cannot be made
    encoder = XFeatEncoder()
    with pytest.warns(AcegWarning, match="cannot keep the exported encoder"):
        encoder.use_runtime("onnxruntime")
    assert encoder.runtime == "onnxruntime"
    image = np.full((1, 32, 32, 3), 90, np.uint8)  # the size of the stand-in export
    assert torch.allclose(encoder.encode(image), encoders[0].encode(image), atol=1e-3)


def test_a_size_that_fails_later_falls_back_under_auto(monkeypatch, tmp_path):
    monkeypatch.setenv("ACEG_CACHE", str(tmp_path))
    encoder = XFeatEncoder()
    encoder.use_runtime("auto")
    assert encoder.runtime == "onnxruntime"

    def broken(net, shape):
        raise RuntimeError("exporter gone")

    monkeypatch.setattr(onnx_network, "export_network", broken)
    image = np.full((1, 64, 96, 3), 120, np.uint8)
    with pytest.warns(AcegWarning, match="exporter gone"):
        features = encoder.encode(image)
    assert encoder.runtime == "torch"
    assert torch.equal(features, XFeatEncoder().encode(image))


def test_get_encoder_shares_one_encoder_per_runtime():
    assert get_encoder("xfeat", "cpu", "torch") is get_encoder("xfeat")
    assert get_encoder("xfeat", "cpu", "torch").runtime == "torch"
    assert get_encoder("xfeat", "cpu", "auto") is get_encoder("xfeat", "cpu", "auto")
    assert get_encoder("xfeat", "cpu", "auto").runtime == "onnxruntime"


def test_query_keypoints_on_onnx_runtime_are_pytorchs(shared_data):
    import cv2

    from aceg.data.images import load_image
    from aceg.mapping.keypoints import SparseFeatures

    photo = load_image(shared_data / "strecha" / "fountain-P11" / "images" / "0005.jpg")
    image = cv2.resize(photo, (384, 256), interpolation=cv2.INTER_AREA)
    on_torch = SparseFeatures(256).extract(image)
    sparse = SparseFeatures(256, runtime="onnxruntime")
    assert sparse.xfeat.net.runtime == "onnxruntime"
    on_onnx = sparse.extract(image, keep_cells=True)  # the forward hook sees the runtime's output
    assert len(on_torch.keypoints) > 100
    same = {tuple(k) for k in np.round(on_torch.keypoints, 2)} & {tuple(k) for k in np.round(on_onnx.keypoints, 2)}
    assert len(same) >= 0.95 * len(on_torch.keypoints)
    index = {tuple(k): i for i, k in enumerate(np.round(on_onnx.keypoints, 2))}
    for i, k in enumerate(np.round(on_torch.keypoints, 2)):
        if tuple(k) in index:
            assert np.allclose(on_torch.descriptors[i], on_onnx.descriptors[index[tuple(k)]], atol=1e-3)
    assert on_onnx.cells is not None and len(on_onnx.cell_features) == len(on_onnx.cells)
