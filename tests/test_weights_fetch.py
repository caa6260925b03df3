"""Weight staging: cache folder, manifest, file lock across processes, offline use, CLI, extraction dtype."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from samplerflow.errors import InputError
from samplerflow.features import create_backbone
from samplerflow.features import fetch as fetch_module
from samplerflow.features.fetch import MANIFEST_NAME, fetch_weights, read_manifest, staged_weights

SECRET_TOKEN = "hf_test_secret_token_value"


@pytest.fixture(scope="module")
def inception_checkpoint(tmp_path_factory) -> Path:
    """Torchvision's InceptionV3 state dict, the layout inception_v3 loads."""
    import torchvision

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("source") / "inception_v3_torchvision.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


@pytest.fixture
def block_network(monkeypatch) -> list:
    """Make every socket connect fail and record the attempted addresses."""
    attempts: list = []

    def refuse_connect(self, address):
        attempts.append(address)
        raise OSError(f"test blocks network access (connect to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    return attempts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_local_file_records_manifest(inception_checkpoint, tmp_path):
    staged = fetch_weights({"inception_v3": str(inception_checkpoint)}, tmp_path / "cache")
    record = staged["inception_v3"]
    manifest = read_manifest(tmp_path / "cache")["backbones"]["inception_v3"]
    assert record.reused is False
    assert record.path == (tmp_path / "cache" / "inception_v3" / inception_checkpoint.name).resolve()
    assert manifest["sha256"] == _sha256(inception_checkpoint)
    assert manifest["file"] == f"inception_v3/{inception_checkpoint.name}"
    assert manifest["spec"] == str(inception_checkpoint)


def test_fetch_twice_reuses(inception_checkpoint, tmp_path):
    fetch_weights({"inception_v3": str(inception_checkpoint)}, tmp_path)
    second = fetch_weights({"inception_v3": str(inception_checkpoint)}, tmp_path)
    assert second["inception_v3"].reused is True


def test_fetch_skips_handcrafted(tmp_path):
    assert fetch_weights(["handcrafted"], tmp_path) == {}


def test_fetch_ctranspath_needs_path(tmp_path):
    with pytest.raises(InputError) as caught:
        fetch_weights(["ctranspath"], tmp_path)
    assert "ctranspath.pth" in str(caught.value)
    assert "github.com/Xiyue-Wang/TransPath" in str(caught.value)


def test_fetch_missing_file_names_expected(tmp_path):
    with pytest.raises(InputError) as caught:
        fetch_weights({"conch": str(tmp_path / "absent.bin")}, tmp_path / "cache")
    assert "absent.bin" in str(caught.value)
    assert "MahmoodLab/CONCH" in str(caught.value)


def test_fetch_ctranspath_wrong_sha_rejected(tmp_path):
    impostor = tmp_path / "ctranspath.pth"
    impostor.write_bytes(b"not the published checkpoint")
    with pytest.raises(InputError) as caught:
        fetch_weights({"ctranspath": str(impostor)}, tmp_path / "cache")
    assert "7c998680060c8743551a412583fac689db43cec07053b72dfec6dcd810113539" in str(caught.value)
    assert not (tmp_path / "cache" / "ctranspath" / "ctranspath.pth").exists()
    assert "ctranspath" not in read_manifest(tmp_path / "cache")["backbones"]


def test_fetch_hub_uses_token_without_logging(tmp_path, monkeypatch, caplog):
    calls = []

    def fake_download(repo_id, filename, *, local_dir, token):
        calls.append((repo_id, filename, token))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights of " + repo_id.encode())
        return path

    monkeypatch.setattr(fetch_module, "hub_download", fake_download)
    monkeypatch.setenv("HF_TOKEN", SECRET_TOKEN)
    with caplog.at_level("DEBUG"):
        staged = fetch_weights(["uni", "conch"], tmp_path)
    assert calls == [("MahmoodLab/UNI", "pytorch_model.bin", SECRET_TOKEN), ("MahmoodLab/CONCH", "pytorch_model.bin", SECRET_TOKEN)]
    assert staged["uni"].path == (tmp_path / "uni" / "pytorch_model.bin").resolve()
    assert SECRET_TOKEN not in caplog.text
    assert SECRET_TOKEN not in (tmp_path / MANIFEST_NAME).read_text()


def test_fetch_hub_offline_fails_without_network(tmp_path, monkeypatch, block_network):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once at import, so its module constant is set too.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(InputError) as caught:
        fetch_weights(["uni"], tmp_path)
    assert "HF_HUB_OFFLINE" in str(caught.value)
    assert block_network == []


def test_staged_weights_offline_load(inception_checkpoint, tmp_path, monkeypatch, block_network):
    fetch_weights({"inception_v3": str(inception_checkpoint)}, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = staged_weights(tmp_path, ["handcrafted", "inception_v3"])
    backbone = create_backbone("inception_v3")
    backbone.load(weights=paths["inception_v3"], random_weights=False, device="cpu")
    assert list(paths) == ["inception_v3"]
    assert backbone.provenance["sha256"] == _sha256(inception_checkpoint)
    assert block_network == []


def test_staged_weights_missing_names_fetch(tmp_path):
    with pytest.raises(InputError) as caught:
        staged_weights(tmp_path, ["uni"])
    assert "samplerflow weights fetch --backbone uni" in str(caught.value)


def test_staged_weights_changed_file_rejected(inception_checkpoint, tmp_path):
    staged = fetch_weights({"inception_v3": str(inception_checkpoint)}, tmp_path)
    with staged["inception_v3"].path.open("r+b") as handle:
        handle.write(b"corrupt")
    with pytest.raises(InputError, match="changed since they were fetched"):
        staged_weights(tmp_path, ["inception_v3"])


def _fetch_in_process(source: str, cache: str, barrier, results) -> None:
    barrier.wait()
    staged = fetch_weights({"uni": source}, Path(cache))
    results.put(staged["uni"].reused)


@pytest.mark.slow
def test_two_processes_stage_once(tmp_path):
    source = tmp_path / "pytorch_model.bin"
    source.write_bytes(np.random.default_rng(0).bytes(64 << 20))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=_fetch_in_process, args=(str(source), str(tmp_path / "cache"), barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    exit_codes = [worker.exitcode for worker in workers]
    reused = sorted(results.get(timeout=5) for _ in workers)
    manifest = json.loads((tmp_path / "cache" / MANIFEST_NAME).read_text())
    assert exit_codes == [0, 0]
    assert reused == [False, True]
    assert manifest["backbones"]["uni"]["sha256"] == _sha256(source)
    assert _sha256(tmp_path / "cache" / "uni" / "pytorch_model.bin") == _sha256(source)


def test_cli_fetch_prints_records(inception_checkpoint, tmp_path, capsys):
    import argparse

    from samplerflow.features.weights_cli import add_subcommands, dispatch

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "weights", "fetch", "--backbone", "inception_v3,handcrafted",
        "--weights", f"inception_v3={inception_checkpoint}", "--cache-dir", str(tmp_path),
    ])
    assert dispatch(args) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["backbone"] == "inception_v3"
    assert record["sha256"] == _sha256(inception_checkpoint)


def test_cli_weights_for_unrequested_rejected(tmp_path):
    import argparse

    from samplerflow.features.weights_cli import add_subcommands, dispatch

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["weights", "fetch", "--backbone", "uni", "--weights", "conch=x.bin", "--cache-dir", str(tmp_path)])
    with pytest.raises(InputError, match="conch"):
        dispatch(args)


@pytest.fixture(scope="module")
def synthetic_grid(synthetic_slides, tmp_path_factory):
    from samplerflow.aoi import AoiParams, detect_objects, read_mask
    from samplerflow.slide import open_slide
    from samplerflow.tiling import TilingParams, make_grid

    slide = synthetic_slides[0.5]
    outdir = tmp_path_factory.mktemp("aoi")
    with open_slide(slide) as reader:
        payload = detect_objects(reader, outdir, params=AoiParams())
    return slide, make_grid(payload, read_mask(outdir / "tissue_mask.png"), TilingParams(tile_size_um=128.0, scales=(1, 2)))


@pytest.mark.slow
def test_extract_float16_storage(synthetic_grid, tmp_path):
    import h5py

    from samplerflow.features.extract import extract_features

    slide, grid = synthetic_grid
    common = dict(slide_path=slide, grid=grid, backbones=["ctranspath"], random_weights=True, batch_size=4, num_workers=0, device="cpu", progress=False)
    full = extract_features(outdir=tmp_path / "f32", **common)["ctranspath"]
    half = extract_features(outdir=tmp_path / "f16", feature_dtype="float16", **common)["ctranspath"]
    with h5py.File(full) as reference, h5py.File(half) as compact:
        assert compact["s1"].dtype == np.float16
        assert compact.attrs["feature_dtype"] == "float16"
        assert reference["s2"].dtype == np.float32
        np.testing.assert_allclose(compact["s2"][()].astype(np.float32), reference["s2"][()], rtol=2e-3, atol=2e-3)


def test_extract_invalid_dtype_rejected(synthetic_grid, tmp_path):
    from samplerflow.features.extract import extract_features

    slide, grid = synthetic_grid
    with pytest.raises(InputError, match="bfloat8"):
        extract_features(slide_path=slide, grid=grid, backbones=["handcrafted"], outdir=tmp_path, feature_dtype="bfloat8", device="cpu")


def test_fetch_without_spec_keeps_staged_file(tmp_path, monkeypatch):
    """A later fetch that names no source (as the pipeline's prefetch does) keeps a hand-staged checkpoint."""
    import torchvision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "inception_v3.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), checkpoint)
    cache = tmp_path / "cache"
    first = fetch_weights({"inception_v3": str(checkpoint)}, cache)
    again = fetch_weights(["inception_v3"], cache)
    assert again["inception_v3"].reused
    assert again["inception_v3"].path == first["inception_v3"].path
    assert again["inception_v3"].sha256 == first["inception_v3"].sha256
