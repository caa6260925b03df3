"""UNI (Chen et al., Nature Medicine 2024): ViT-L/16 class token, 1024 values per 224 x 224 tile.

The architecture is timm's ``vit_large_patch16_224`` with ``init_values=1e-5``
(LayerScale), ``num_classes=0`` and ``dynamic_img_size=True``, the arguments
``uni/get_encoder/get_encoder.py`` of github.com/mahmoodlab/UNI passes before
loading ``pytorch_model.bin`` of the Hugging Face repository MahmoodLab/UNI
with ``strict=True``. That file is a plain timm state dict, so no key
remapping is needed. Preprocessing in the UNI README is a 224 px resize and
ImageNet normalization.
"""

from __future__ import annotations

import torch

from samplerflow.features.registry import IMAGENET_MEAN, IMAGENET_STD, register
from samplerflow.features.torch_backbone import TorchBackbone


@register("uni")
class UNIBackbone(TorchBackbone):
    """UNI v1 (MahmoodLab), 1024-d class-token features after the final LayerNorm."""

    name = "uni"
    input_size = 224
    dim = 1024
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    recommended_weights = "hf-hub:MahmoodLab/UNI"
    weights_file = "pytorch_model.bin"
    weights_source = (
        "gated Hugging Face repository MahmoodLab/UNI (CC-BY-NC-ND 4.0, non-commercial academic use): "
        "accept the terms on its page, then run 'samplerflow weights fetch' with HF_TOKEN set"
    )

    def build(self) -> torch.nn.Module:
        import timm

        return timm.create_model(
            "vit_large_patch16_224",
            pretrained=False,
            img_size=self.input_size,
            patch_size=16,
            init_values=1e-5,
            num_classes=0,
            dynamic_img_size=True,
        )
