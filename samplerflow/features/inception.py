"""InceptionV3 (ImageNet) pooled features: 2048 values per 299 x 299 tile.

The architecture is timm's ``inception_v3`` without its classifier, whose
parameter names equal torchvision's, so torchvision's ``inception_v3`` state
dict and timm's ``inception_v3.tv_in1k`` checkpoint load strictly after
their classifier heads (``fc``, ``AuxLogits``) are dropped. Normalization is
mean 0.5 and std 0.5 per channel, the setting of those weights in timm's
pretrained configuration (timm 1.0).
"""

from __future__ import annotations

import torch

from samplerflow.features.registry import register
from samplerflow.features.torch_backbone import TorchBackbone

RECOMMENDED_WEIGHTS = "hf-hub:timm/inception_v3.tv_in1k"
CLASSIFIER_PREFIXES = ("fc.", "AuxLogits.")


@register("inception_v3")
class InceptionV3Backbone(TorchBackbone):
    """ImageNet InceptionV3, global-average-pooled 2048-d features."""

    name = "inception_v3"
    input_size = 299
    dim = 2048
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    recommended_weights = RECOMMENDED_WEIGHTS

    def build(self) -> torch.nn.Module:
        import timm

        return timm.create_model("inception_v3", pretrained=False, num_classes=0)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value for key, value in state_dict.items() if not key.startswith(CLASSIFIER_PREFIXES)}
