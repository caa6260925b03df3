"""CONCH (Lu et al., Nature Medicine 2024) image encoder: 512 values per 448 x 448 tile.

CONCH is a CoCa model whose image tower (``conch/open_clip_custom/`` of
github.com/mahmoodlab/CONCH: ``coca_model.py``, ``vision_tower.py``,
``transformer.py``, ``model_configs/conch_ViT-B-16.json``) is:

- ``visual.trunk``: timm ``VisionTransformer`` (ViT-B/16, width 768, depth
  12, 12 heads, 448 px, class token, ``num_classes=0``, dynamic image size),
  run through ``forward_features`` (all tokens after the final LayerNorm);
- ``visual.attn_pool_contrast``: attentional pooler with 1 learned query of
  width 512 attending over the 768-d tokens with 8 heads, then
  ``visual.ln_contrast`` (LayerNorm 512);
- ``visual.proj_contrast``: a 512 x 512 projection for image-text retrieval;
- ``visual.attn_pool_caption`` and ``visual.ln_caption``: 256 queries of
  width 768 feeding the caption decoder.

The feature returned here is ``encode_image(image, proj_contrast=False,
normalize=False)``, the output of ``ln_contrast`` before the projection and
without L2 normalization, which the CONCH README recommends for linear probes
and multiple-instance learning on slides. The caption pooler and projection
are built too so that every ``visual.*`` key of the published
``pytorch_model.bin`` loads strictly. The text tower, the caption decoder and
``logit_scale`` are dropped in :meth:`CONCHBackbone.adapt_state_dict`.

``open_clip_torch`` (3.3.0 installs beside torch 2.14.1) is not used: its
CoCa image tower has different module names (no ``trunk`` plus
``attn_pool_contrast`` layout), so CONCH's checkpoint would not load into it
strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from samplerflow.features.registry import register
from samplerflow.features.torch_backbone import TorchBackbone

# OpenAI CLIP colour statistics, which conch/open_clip_custom/factory.py sets as the image mean and std.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TRUNK_WIDTH = 768
CONTRAST_WIDTH = 512
POOLER_HEADS = 8
CAPTION_QUERIES = 256
# Keys of the full CoCa checkpoint that belong to the text side.
TEXT_PREFIXES = ("text.", "text_decoder.")
TEXT_KEYS = ("logit_scale",)
DATA_PARALLEL_PREFIX = "module."


class AttentionalPooler(nn.Module):
    """Learned queries that cross-attend over LayerNorm-ed tokens (CoCa's attentional pooling)."""

    def __init__(self, *, width: int, context_width: int, heads: int, queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(queries, width))
        # kdim/vdim differing from width makes torch store separate q/k/v projection weights,
        # exactly as the published checkpoint does for the contrastive pooler.
        self.attn = nn.MultiheadAttention(width, heads, kdim=context_width, vdim=context_width, batch_first=True)
        self.ln_q = nn.LayerNorm(width)
        self.ln_k = nn.LayerNorm(context_width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        context = self.ln_k(tokens)
        query = self.ln_q(self.query).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attn(query, context, context, need_weights=False)
        return pooled


class CONCHVisual(nn.Module):
    """CONCH's image tower with the module names of its checkpoint (the ``visual.`` prefix)."""

    def __init__(self, *, image_size: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.trunk = VisionTransformer(
            img_size=image_size,
            patch_size=16,
            embed_dim=TRUNK_WIDTH,
            depth=12,
            num_heads=12,
            mlp_ratio=4,
            num_classes=0,
            dynamic_img_size=True,
        )
        self.attn_pool_contrast = AttentionalPooler(
            width=CONTRAST_WIDTH, context_width=TRUNK_WIDTH, heads=POOLER_HEADS, queries=1
        )
        self.ln_contrast = nn.LayerNorm(CONTRAST_WIDTH)
        self.proj_contrast = nn.Parameter(TRUNK_WIDTH**-0.5 * torch.randn(CONTRAST_WIDTH, CONTRAST_WIDTH))
        self.attn_pool_caption = AttentionalPooler(
            width=TRUNK_WIDTH, context_width=TRUNK_WIDTH, heads=POOLER_HEADS, queries=CAPTION_QUERIES
        )
        self.ln_caption = nn.LayerNorm(TRUNK_WIDTH)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the unprojected, unnormalized contrastive embedding (batch, 512)."""
        tokens = self.trunk.forward_features(images)
        pooled = self.attn_pool_contrast(tokens)[:, 0]
        return self.ln_contrast(pooled)


class CONCHImageEncoder(nn.Module):
    """Wrapper whose state-dict keys carry the checkpoint's ``visual.`` prefix."""

    def __init__(self, *, image_size: int) -> None:
        super().__init__()
        self.visual = CONCHVisual(image_size=image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


@register("conch")
class CONCHBackbone(TorchBackbone):
    """CONCH v1 image encoder, 512-d pooled embedding before the contrastive projection."""

    name = "conch"
    input_size = 448
    dim = CONTRAST_WIDTH
    mean = OPENAI_CLIP_MEAN
    std = OPENAI_CLIP_STD
    recommended_weights = "hf-hub:MahmoodLab/CONCH"
    weights_file = "pytorch_model.bin"
    weights_source = (
        "gated Hugging Face repository MahmoodLab/CONCH (CC-BY-NC-ND 4.0, non-commercial academic use): "
        "accept the terms on its page, then run 'samplerflow weights fetch' with HF_TOKEN set"
    )
    # NOTE: CONCH's own transform resizes with bicubic interpolation; the extraction stage resizes every
    # backbone's tiles with antialiased bilinear interpolation, so features differ slightly from CONCH's.

    def build(self) -> nn.Module:
        return CONCHImageEncoder(image_size=self.input_size)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        adapted = {}
        for key, value in state_dict.items():
            if key.startswith(DATA_PARALLEL_PREFIX):
                key = key[len(DATA_PARALLEL_PREFIX):]
            if key.startswith(TEXT_PREFIXES) or key in TEXT_KEYS:
                continue
            adapted[key] = value
        return adapted
