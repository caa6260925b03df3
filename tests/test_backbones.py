"""Feature backbones: inception_v3 weight loading and forward passes, handcrafted features."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_rgb
from samplerflow.errors import InputError
from samplerflow.features import available_backbones, create_backbone
from samplerflow.features.extract import resize_tile

TILES = "tiles/histolab_tissue_detection"
TISSUE_TILES = ("tissue-level0-4302-10273-4814-10785.png", "tissue-level2-4640-4649-8736-8746.png")
WHITE_TILE = "almost-white-1.png"


@pytest.fixture(scope="module")
def torchvision_state(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Torchvision's InceptionV3 state dict (auxiliary head included) saved as a .pth."""
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    state = model.state_dict()
    path = tmp_path_factory.mktemp("weights") / "inception_v3_torchvision.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def real_tiles(wsi_data: Path) -> np.ndarray:
    names = (*TISSUE_TILES, WHITE_TILE, "no-tissue-red-pen.png")
    return np.stack([load_rgb(wsi_data / TILES / name) for name in names])


@pytest.fixture(scope="module")
def random_inception():
    backbone = create_backbone("inception_v3")
    backbone.load(weights=None, random_weights=True, device="cpu")
    return backbone


def test_registry_lists_builtins():
    assert {"handcrafted", "inception_v3"} <= set(available_backbones())


def test_unknown_backbone_rejected():
    with pytest.raises(InputError, match="no_such_backbone"):
        create_backbone("no_such_backbone")


@pytest.mark.slow
def test_inception_loads_torchvision_checkpoint(torchvision_state):
    path, state = torchvision_state
    backbone = create_backbone("inception_v3")
    backbone.load(weights=str(path), random_weights=False, device="cpu")
    loaded = backbone.model.state_dict()
    # The classifier heads are dropped because the backbone returns pooled features.
    feature_keys = [key for key in state if not key.startswith(("fc.", "AuxLogits."))]
    assert sorted(loaded) == sorted(feature_keys)
    differing = [key for key in feature_keys if not torch.equal(loaded[key], state[key])]
    assert differing == []


@pytest.mark.slow
def test_inception_records_checkpoint_sha256(torchvision_state):
    path, _ = torchvision_state
    backbone = create_backbone("inception_v3")
    backbone.load(weights=str(path), random_weights=False, device="cpu")
    assert backbone.provenance["weights"] == "file"
    assert backbone.provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_checkpoint_wrong_key_rejected(torchvision_state, tmp_path):
    _, state = torchvision_state
    broken = dict(state)
    broken["Conv2d_1a_3x3.renamed.weight"] = broken.pop("Conv2d_1a_3x3.conv.weight")
    path = tmp_path / "renamed.pth"
    torch.save(broken, path)
    with pytest.raises(InputError) as caught:
        create_backbone("inception_v3").load(weights=str(path), random_weights=False, device="cpu")
    assert "Conv2d_1a_3x3.conv.weight" in str(caught.value)
    assert "Conv2d_1a_3x3.renamed.weight" in str(caught.value)


@pytest.mark.slow
def test_checkpoint_wrong_shape_rejected(torchvision_state, tmp_path):
    _, state = torchvision_state
    broken = dict(state)
    broken["Mixed_7c.branch1x1.conv.weight"] = torch.zeros(7, 7, 1, 1)
    path = tmp_path / "reshaped.pth"
    torch.save(broken, path)
    with pytest.raises(InputError) as caught:
        create_backbone("inception_v3").load(weights=str(path), random_weights=False, device="cpu")
    assert "Mixed_7c.branch1x1.conv.weight" in str(caught.value)


def test_missing_checkpoint_file_rejected(tmp_path):
    with pytest.raises(InputError, match="not found"):
        create_backbone("inception_v3").load(weights=str(tmp_path / "absent.pth"), random_weights=False, device="cpu")


def test_hf_hub_offline_raises_without_network(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    attempts = []

    def refuse_connect(self, address):
        attempts.append(address)
        raise OSError(f"test blocks network access (connect to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    empty_home = tmp_path / "hf_home"
    empty_home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(empty_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_home / "hub"))
    # huggingface_hub reads these variables once at import, so its module constants are set too.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HOME", str(empty_home), raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(empty_home / "hub"), raising=False)

    with pytest.raises(InputError) as caught:
        create_backbone("inception_v3").load(
            weights="hf-hub:timm/inception_v3.tv_in1k", random_weights=False, device="cpu"
        )
    message = str(caught.value)
    assert "timm/inception_v3.tv_in1k" in message
    assert "HF_HUB_OFFLINE" in message
    assert "local checkpoint" in message
    assert attempts == []


@pytest.mark.slow
def test_inception_forward_real_tiles(random_inception, real_tiles):
    batch = np.stack([random_inception.prepare(resize_tile(tile, random_inception.input_size)) for tile in real_tiles])
    first = random_inception.embed(batch)
    second = random_inception.embed(batch)
    assert first.shape == (len(real_tiles), 2048)
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)


def test_inception_random_provenance(random_inception):
    assert random_inception.provenance["weights"] == "random"


def test_inception_describe(random_inception):
    description = random_inception.describe()
    assert description["input_size"] == 299
    assert description["dim"] == 2048
    assert description["needs_weights"] is True


def _handcrafted(tile: np.ndarray) -> np.ndarray:
    backbone = create_backbone("handcrafted")
    prepared = backbone.prepare(resize_tile(tile, backbone.input_size))
    return backbone.embed(prepared[None])[0]


def test_handcrafted_deterministic(real_tiles):
    assert np.array_equal(_handcrafted(real_tiles[0]), _handcrafted(real_tiles[0]))


def test_handcrafted_finite(real_tiles):
    for tile in real_tiles:
        assert np.isfinite(_handcrafted(tile)).all()


def test_handcrafted_labels_match_dim(real_tiles):
    backbone = create_backbone("handcrafted")
    assert len(backbone.feature_labels()) == backbone.dim
    assert len(set(backbone.feature_labels())) == backbone.dim
    assert _handcrafted(real_tiles[0]).shape == (backbone.dim,)


def test_handcrafted_tissue_differs_from_white(real_tiles):
    assert not np.allclose(_handcrafted(real_tiles[0]), _handcrafted(real_tiles[2]))


def test_handcrafted_tissue_fraction_orders_tiles(real_tiles):
    labels = create_backbone("handcrafted").feature_labels()
    column = labels.index("tissue_fraction")
    assert _handcrafted(real_tiles[0])[column] > _handcrafted(real_tiles[2])[column]


def test_handcrafted_flat_tile_finite():
    flat = np.full((224, 224, 3), 255, dtype=np.uint8)
    assert np.isfinite(_handcrafted(flat)).all()
