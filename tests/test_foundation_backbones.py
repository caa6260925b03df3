"""Pathology foundation-model backbones (ctranspath, uni, conch) and inception_v3 on published key layouts.

No weights are downloaded. Each test checkpoint has the key layout of the
published file, built from the architecture those keys come from:

- ctranspath: timm 0.5.4's Swin layout (downsample at the end of stages 0-2,
  saved ``relative_position_index`` and ``attn_mask`` buffers, a ``model``
  wrapper), rebuilt from timm 1.0's module by the inverse of the loader's
  remapping;
- uni: ``timm.create_model("vit_large_patch16_224", ...)`` with the UNI
  README's arguments, whose state dict is the published file's layout;
- conch: the image tower's ``visual.*`` keys plus text-tower keys named as
  in CONCH's ``open_clip_custom`` code;
- inception_v3: torchvision's state dict (classifier and auxiliary head).

``PUBLISHED_KEYS`` pins key names and shapes read from the upstream code, so
a fixture that drifts from the published layout fails here and not only in
production. Forward passes use real tiles from the shared test data.
"""

from __future__ import annotations

import re
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

# (backbone, key in the published checkpoint, shape), from the upstream model definitions.
PUBLISHED_KEYS = [
    ("ctranspath", "patch_embed.proj.0.weight", (12, 3, 3, 3)),
    ("ctranspath", "patch_embed.proj.4.running_var", (24,)),
    ("ctranspath", "patch_embed.proj.6.weight", (96, 24, 1, 1)),
    ("ctranspath", "layers.0.downsample.reduction.weight", (192, 384)),
    ("ctranspath", "layers.2.downsample.norm.weight", (1536,)),
    ("ctranspath", "layers.0.blocks.0.attn.relative_position_index", (49, 49)),
    ("ctranspath", "layers.0.blocks.1.attn_mask", (64, 49, 49)),
    ("ctranspath", "layers.3.blocks.1.attn.relative_position_bias_table", (169, 24)),
    ("ctranspath", "norm.weight", (768,)),
    ("uni", "pos_embed", (1, 197, 1024)),
    ("uni", "blocks.23.ls2.gamma", (1024,)),
    ("uni", "blocks.0.attn.qkv.weight", (3072, 1024)),
    ("uni", "norm.bias", (1024,)),
    ("conch", "visual.trunk.pos_embed", (1, 785, 768)),
    ("conch", "visual.trunk.blocks.11.mlp.fc2.weight", (768, 3072)),
    ("conch", "visual.attn_pool_contrast.query", (1, 512)),
    ("conch", "visual.attn_pool_contrast.attn.k_proj_weight", (512, 768)),
    ("conch", "visual.attn_pool_contrast.attn.in_proj_bias", (1536,)),
    ("conch", "visual.ln_contrast.weight", (512,)),
    ("conch", "visual.proj_contrast", (512, 512)),
    ("conch", "visual.attn_pool_caption.query", (256, 768)),
    ("conch", "visual.attn_pool_caption.attn.in_proj_weight", (2304, 768)),
    ("conch", "text.token_embedding.weight", (32007, 768)),
    ("conch", "logit_scale", ()),
    ("inception_v3", "Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)),
    ("inception_v3", "fc.weight", (1000, 2048)),
]

# Text-side keys of CONCH's full CoCa checkpoint (conch/open_clip_custom/transformer.py names).
CONCH_TEXT_KEYS = {
    "text.token_embedding.weight": (32007, 768),
    "text.positional_embedding": (128, 768),
    "text.cls_emb": (768,),
    "text.text_projection": (768, 512),
    "text.ln_final.weight": (768,),
    "text.transformer.resblocks.0.attn.in_proj_weight": (2304, 768),
    "text_decoder.resblocks.0.attn.in_proj_weight": (2304, 768),
    "text_decoder.cross_attn.0.attn.in_proj_weight": (2304, 768),
    "text_decoder.text_projection": (768, 32007),
    "logit_scale": (),
}


def _ctranspath_published_state() -> dict[str, torch.Tensor]:
    """Return a ctranspath state dict in the layout of the published ctranspath.pth (timm 0.5.4)."""
    model = create_backbone("ctranspath").build()
    published = {}
    for key, value in model.state_dict().items():
        # timm 1.0 merges patches at the start of stages 1-3; timm 0.5.4 at the end of stages 0-2.
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        published[key] = value.clone()
    for key, buffer in model.named_buffers():
        if key.endswith(("relative_position_index", "attn_mask")):
            published[key] = buffer.clone()
    return published


def _uni_published_state() -> dict[str, torch.Tensor]:
    import timm

    # The arguments of uni/get_encoder/get_encoder.py (github.com/mahmoodlab/UNI) for the UNI v1 checkpoint.
    model = timm.create_model(
        "vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True
    )
    return model.state_dict()


def _conch_published_state() -> dict[str, torch.Tensor]:
    state = dict(create_backbone("conch").build().state_dict())
    for key, shape in CONCH_TEXT_KEYS.items():
        state[key] = torch.randn(shape)
    return state


def _inception_published_state() -> dict[str, torch.Tensor]:
    import torchvision

    return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()


PUBLISHED_STATES = {
    "ctranspath": _ctranspath_published_state,
    "uni": _uni_published_state,
    "conch": _conch_published_state,
    "inception_v3": _inception_published_state,
}
DIMS = {"ctranspath": 768, "uni": 1024, "conch": 512, "inception_v3": 2048}
INPUT_SIZES = {"ctranspath": 224, "uni": 224, "conch": 448, "inception_v3": 299}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """Lazily built {backbone: (checkpoint path, state dict)} in each published layout."""
    folder = tmp_path_factory.mktemp("published")
    cache: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    def get(name: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if name not in cache:
            torch.manual_seed(7)
            state = PUBLISHED_STATES[name]()
            path = folder / f"{name}.pth"
            # ctranspath.pth wraps its state dict in {"model": ...}; the others are bare state dicts.
            torch.save({"model": state} if name == "ctranspath" else state, path)
            cache[name] = (path, state)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def loaded(published) -> dict[str, object]:
    """Lazily loaded {backbone: Backbone} from the published-layout checkpoints, on CPU."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            path, _ = published(name)
            backbone = create_backbone(name)
            backbone.load(weights=str(path), random_weights=False, device="cpu")
            cache[name] = backbone
        return cache[name]

    return get


@pytest.fixture(scope="module")
def real_tiles(wsi_data: Path) -> np.ndarray:
    return np.stack([load_rgb(wsi_data / TILES / name) for name in TISSUE_TILES])


def _save_broken(state: dict[str, torch.Tensor], path: Path, *, rename: str | None = None, reshape: str | None = None) -> Path:
    broken = dict(state)
    if rename is not None:
        broken[rename + ".renamed"] = broken.pop(rename)
    if reshape is not None:
        broken[reshape] = torch.zeros(3, 3)
    torch.save(broken, path)
    return path


def test_registry_lists_foundation_backbones():
    assert {"ctranspath", "uni", "conch", "inception_v3"} <= set(available_backbones())


@pytest.mark.parametrize("name", sorted(DIMS))
def test_registry_states_dim_size_normalization(name):
    entry = create_backbone(name).describe()
    assert entry["dim"] == DIMS[name]
    assert entry["input_size"] == INPUT_SIZES[name]
    assert len(entry["mean"]) == 3
    assert len(entry["std"]) == 3


def test_registry_normalizations():
    assert create_backbone("conch").describe()["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert create_backbone("conch").describe()["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert create_backbone("uni").describe()["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert create_backbone("ctranspath").describe()["std"] == pytest.approx([0.229, 0.224, 0.225])


def test_registry_hub_ids():
    assert create_backbone("uni").describe()["hub_weights"] == "hf-hub:MahmoodLab/UNI"
    assert create_backbone("conch").describe()["hub_weights"] == "hf-hub:MahmoodLab/CONCH"
    assert create_backbone("ctranspath").describe()["hub_weights"] is None
    assert "TransPath" in create_backbone("ctranspath").describe()["weights_source"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "key", "shape"), PUBLISHED_KEYS)
def test_fixture_has_published_key(published, name, key, shape):
    _, state = published(name)
    assert key in state
    assert tuple(state[key].shape) == shape


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ctranspath", "conch", "inception_v3", "uni"])
def test_published_layout_loads_strictly(published, loaded, name):
    _, state = published(name)
    backbone = loaded(name)
    expected = backbone.adapt_state_dict(state)
    model_state = backbone.model.state_dict()
    assert sorted(model_state) == sorted(expected)
    differing = [key for key in expected if not torch.equal(model_state[key], expected[key])]
    assert differing == []
    assert backbone.provenance["weights"] == "file"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "count"), [("ctranspath", 2), ("conch", 2), ("inception_v3", 2), ("uni", 1)])
def test_forward_real_tiles(loaded, real_tiles, name, count):
    backbone = loaded(name)
    batch = np.stack([backbone.prepare(resize_tile(tile, backbone.input_size)) for tile in real_tiles[:count]])
    first = backbone.embed(batch)
    second = backbone.embed(batch)
    assert first.shape == (count, DIMS[name])
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)


@pytest.mark.slow
def test_ctranspath_tiles_differ(loaded, real_tiles):
    backbone = loaded("ctranspath")
    batch = np.stack([backbone.prepare(resize_tile(tile, 224)) for tile in real_tiles])
    features = backbone.embed(batch)
    assert not np.allclose(features[0], features[1])


def test_ctranspath_remap_shifts_downsample():
    adapted = create_backbone("ctranspath").adapt_state_dict({
        "layers.0.downsample.reduction.weight": torch.zeros(1),
        "layers.2.downsample.norm.bias": torch.zeros(1),
        "layers.0.blocks.1.attn_mask": torch.zeros(1),
        "layers.0.blocks.0.attn.relative_position_index": torch.zeros(1),
        "layers.1.blocks.0.attn.qkv.weight": torch.zeros(1),
    })
    assert sorted(adapted) == [
        "layers.1.blocks.0.attn.qkv.weight",
        "layers.1.downsample.reduction.weight",
        "layers.3.downsample.norm.bias",
    ]


def test_ctranspath_timm1_layout_unchanged():
    state = {"layers.1.downsample.reduction.weight": torch.zeros(1), "norm.weight": torch.zeros(1)}
    assert sorted(create_backbone("ctranspath").adapt_state_dict(state)) == sorted(state)


def test_conch_drops_text_tower():
    adapted = create_backbone("conch").adapt_state_dict(
        {"module.visual.ln_contrast.weight": torch.zeros(1), **{key: torch.zeros(1) for key in CONCH_TEXT_KEYS}}
    )
    assert list(adapted) == ["visual.ln_contrast.weight"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "key"),
    [("ctranspath", "norm.weight"), ("conch", "visual.ln_contrast.weight"), ("uni", "norm.weight")],
)
def test_checkpoint_wrong_key_rejected(published, tmp_path, name, key):
    _, state = published(name)
    path = _save_broken(state, tmp_path / "renamed.pth", rename=key)
    with pytest.raises(InputError) as caught:
        create_backbone(name).load(weights=str(path), random_weights=False, device="cpu")
    message = str(caught.value)
    assert f"missing keys: {key}" in message
    assert f"{key}.renamed" in message
    assert create_backbone(name).weights_file in message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ctranspath", "layers.0.downsample.reduction.weight"),
        ("conch", "visual.proj_contrast"),
        ("uni", "blocks.0.ls1.gamma"),
    ],
)
def test_checkpoint_wrong_shape_rejected(published, tmp_path, name, key):
    _, state = published(name)
    path = _save_broken(state, tmp_path / "reshaped.pth", reshape=key)
    with pytest.raises(InputError) as caught:
        create_backbone(name).load(weights=str(path), random_weights=False, device="cpu")
    assert "wrong shapes" in str(caught.value)
    assert "(3, 3)" in str(caught.value)


@pytest.mark.parametrize(("name", "expected"), [("ctranspath", "ctranspath.pth"), ("uni", "MahmoodLab/UNI"), ("conch", "MahmoodLab/CONCH")])
def test_missing_weights_names_file(name, expected):
    with pytest.raises(InputError) as caught:
        create_backbone(name).load(weights=None, random_weights=False, device="cpu")
    assert expected in str(caught.value)
    assert "--random-weights" in str(caught.value)


def test_random_weights_recorded_and_logged(caplog):
    backbone = create_backbone("ctranspath")
    with caplog.at_level("WARNING"):
        backbone.load(weights=None, random_weights=True, device="cpu")
    assert backbone.provenance["weights"] == "random"
    assert "RANDOM weights" in caplog.text


def test_cpu_ignores_gpu_options():
    reference = create_backbone("ctranspath")
    reference.load(weights=None, random_weights=True, device="cpu")
    tuned = create_backbone("ctranspath")
    tuned.set_inference_options(autocast_dtype="float16", channels_last=True)
    tuned.load(weights=None, random_weights=True, device="cpu")
    batch = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    assert np.array_equal(reference.embed(batch), tuned.embed(batch))
    assert tuned.provenance["inference"] == {"device": "cpu", "autocast": None}


def test_invalid_autocast_rejected():
    with pytest.raises(InputError, match="float8"):
        create_backbone("uni").set_inference_options(autocast_dtype="float8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_cuda_autocast_close_to_float32(precision):
    reference = create_backbone("ctranspath")
    reference.set_inference_options(autocast_dtype=None)
    reference.load(weights=None, random_weights=True, device="cuda")
    fast = create_backbone("ctranspath")
    fast.set_inference_options(autocast_dtype=precision, channels_last=True)
    fast.load(weights=None, random_weights=True, device="cuda")
    batch = torch.randn(4, 3, 224, 224).pin_memory()
    exact = reference.embed_tensor(batch)
    approximate = fast.embed_tensor(batch)
    assert approximate.dtype == np.float32
    assert np.corrcoef(exact.ravel(), approximate.ravel())[0, 1] > 0.99
