"""Resumable mapping: an interrupted anchor mapping run picks up the finished chunks."""

from __future__ import annotations

import pytest
import torch

import aceg.mapping.checkpoint as checkpoint
from aceg.mapping.checkpoint import partial_folder
from aceg.mapping.keypoints import SparseFeatures
from aceg.mapping.mapper import map_scene
from aceg.model.map_file import load_map
from planar_scenes import corner_scene


class Interrupted(Exception):
    """Stands in for a killed run."""


def matcher_dying_at(call: int):
    """A stand-in for :meth:`SparseFeatures.match` that matches as usual but raises
    :class:`Interrupted` on its ``call``-th call, and the real method."""
    match = SparseFeatures.match
    calls = []

    def dies(self, *args):
        calls.append(1)
        if len(calls) == call:
            raise Interrupted
        return match(self, *args)

    return dies, match


@pytest.mark.parametrize("anchor_points", ["cells", "keypoints"])
def test_an_interrupted_mapping_resumes_and_gives_the_same_map(tmp_path, monkeypatch, anchor_points):
    monkeypatch.setattr(checkpoint, "CHUNK", 2)  # several chunks of 6 images and their pairs
    scene = corner_scene(tmp_path / "s", n=6)
    settings = dict(model="anchors", short_side=120, progress=False, anchor_points=anchor_points)
    clean = map_scene(scene, tmp_path / "clean.map", **settings)
    assert clean.resumed_chunks == 0 and not partial_folder(tmp_path / "clean.map").exists()

    dies, match = matcher_dying_at(4)
    out = tmp_path / "resumed.map"
    monkeypatch.setattr(SparseFeatures, "match", dies)
    with pytest.raises(Interrupted):
        map_scene(scene, out, resume=True, **settings)
    kept = sorted(p.name for p in partial_folder(out).glob("*.safetensors"))
    assert kept == ["keypoints-00000.safetensors", "keypoints-00001.safetensors",
                    "keypoints-00002.safetensors", "matches-00000.safetensors"]
    assert not out.exists()

    monkeypatch.setattr(SparseFeatures, "match", match)
    resumed = map_scene(scene, out, resume=True, **settings)
    assert resumed.resumed_chunks == 4  # three chunks of keypoints, the first two pairs
    assert not partial_folder(out).exists()
    assert torch.equal(load_map(out).code, load_map(tmp_path / "clean.map").code)


def test_other_inputs_start_afresh(tmp_path, monkeypatch):
    """Chunks left by a run with other settings are not read back; a damaged chunk is
    computed again."""
    monkeypatch.setattr(checkpoint, "CHUNK", 2)
    scene = corner_scene(tmp_path / "s", n=6)
    out = tmp_path / "m.map"
    folder = partial_folder(out)
    digest = checkpoint.fingerprint(scene, short_side=120)
    stale = checkpoint.MappingCheckpoint(folder, digest)
    stale.save("keypoints-00000", {"counts": torch.zeros(2).numpy()})
    same = checkpoint.MappingCheckpoint(folder, digest)
    assert same.found == 1 and same.load("keypoints-00000", 2, "counts") is not None  # kept
    assert same.load("keypoints-00000", 3, "counts") is None  # a chunk of another size
    assert checkpoint.fingerprint(scene, short_side=96) != digest
    monkeypatch.setattr(checkpoint, "CHUNK", 3)
    assert checkpoint.fingerprint(scene, short_side=120) != digest  # chunks of another size
    again = checkpoint.MappingCheckpoint(folder, checkpoint.fingerprint(scene, short_side=96))
    assert again.found == 0 and again.load("keypoints-00000", 2, "counts") is None
    again.save("keypoints-00000", {"counts": torch.zeros(2).numpy()})
    (folder / "keypoints-00000.safetensors").write_bytes(b"not a safetensors file")
    assert again.load("keypoints-00000", 2, "counts") is None and again.reused == 0
    monkeypatch.setattr(checkpoint, "CHUNK", 2)
    result = map_scene(scene, out, model="anchors", short_side=120, progress=False, resume=True)
    assert result.resumed_chunks == 0 and out.exists() and not folder.exists()


def test_cli_map_resumes_by_default_and_restarts_on_request(tmp_path, monkeypatch, capsys):
    from aceg.cli.main import main
    from aceg.data.synthetic import generate_scene

    monkeypatch.setattr(checkpoint, "CHUNK", 2)
    generate_scene(tmp_path / "room", 7, frames_mapping=8, frames_query=0, height=96, width=128,
                   splits=("mapping",), contact_sheet=False)
    out = tmp_path / "m.map"
    args = ["map", str(tmp_path / "room" / "mapping"), str(out)]
    dies, match = matcher_dying_at(3)
    monkeypatch.setattr(SparseFeatures, "match", dies)
    with pytest.raises(Interrupted):
        main(args)
    monkeypatch.setattr(SparseFeatures, "match", match)
    assert main(args) == 0
    # four chunks of two images' keypoints, the matches of the first two pairs
    assert "resumed: 5 chunks of finished work" in capsys.readouterr().out
    assert out.exists() and not partial_folder(out).exists()
    monkeypatch.setattr(SparseFeatures, "match", matcher_dying_at(3)[0])
    with pytest.raises(Interrupted):
        main(args)
    monkeypatch.setattr(SparseFeatures, "match", match)
    assert partial_folder(out).exists()
    assert main(args + ["--restart"]) == 0 and "resumed:" not in capsys.readouterr().out
    assert not partial_folder(out).exists()
    assert main(args + ["--model", "ace", "--restart"]) != 0
    assert "--restart does not apply to --model ace" in capsys.readouterr().err


def test_an_interruption_while_encoding_keeps_the_encoded_chunks(tmp_path, monkeypatch):
    """Images the keypoint pass cannot encode (not multiples of 32 pixels) are encoded after
    the triangulation, chunk by chunk; a run stopped there reads those chunks back."""
    from aceg.model.encoder import Encoder

    monkeypatch.setattr(checkpoint, "CHUNK", 2)
    scene = corner_scene(tmp_path / "s", n=6)  # 160x120
    settings = dict(model="anchors", short_side=120, progress=False)
    clean = map_scene(scene, tmp_path / "clean.map", **settings)
    encode = Encoder.encode
    calls = []

    def dies_on_the_fifth_image(self, images):
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted
        return encode(self, images)

    out = tmp_path / "resumed.map"
    monkeypatch.setattr(Encoder, "encode", dies_on_the_fifth_image)
    with pytest.raises(Interrupted):
        map_scene(scene, out, resume=True, **settings)
    assert sorted(p.name for p in partial_folder(out).glob("patches-*")) == [
        "patches-00000.safetensors", "patches-00001.safetensors"]
    monkeypatch.setattr(Encoder, "encode", encode)
    resumed = map_scene(scene, out, resume=True, **settings)
    assert resumed.resumed_chunks >= 3 + 2  # the keypoints, the pairs, two chunks of patches
    assert resumed.patches == clean.patches and resumed.stats["cells"] == clean.stats["cells"]
    assert torch.equal(load_map(out).code, load_map(tmp_path / "clean.map").code)
