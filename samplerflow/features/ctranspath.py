"""CTransPath: Swin-T with a convolutional stem, 768 values per 224 x 224 tile.

The architecture follows ``ctran.py`` of github.com/Xiyue-Wang/TransPath:
timm's ``swin_tiny_patch4_window7_224`` whose patch embedding is replaced by
a stem of two stride-2 3x3 convolutions (BatchNorm and ReLU after each) and
a 1x1 convolution to 96 channels, then LayerNorm. The output is the
global-average-pooled final feature map after the last LayerNorm (768-d).

The published checkpoint (``ctranspath.pth``, a dict whose ``model`` entry is
the state dict) was written by a fork of timm 0.5.4. Its key layout, as read
in the Swin copy that KatherLab/STAMP vendors to load it strictly
(``src/stamp/preprocessing/extractor/ctranspath.py``), differs from timm 1.0
in three ways that :meth:`CTransPathBackbone.adapt_state_dict` undoes:

- ``layers.N.downsample`` (patch merging at the end of stage N) is
  ``layers.N+1.downsample`` in timm 1.0, which merges at the start of a stage;
- ``relative_position_index`` and ``attn_mask`` are saved buffers there and
  non-persistent buffers in timm 1.0, which recomputes them;
- the classifier is absent (STAMP loads the file into a model whose head is
  ``nn.Identity``).

timm 1.0's patch merging concatenates the 2 x 2 neighbours in the same order
as timm 0.5.4, (row, column) offsets (0, 0), (1, 0), (0, 1), (1, 1), so the
``reduction`` weights keep their meaning. timm 1.0's own ``swin_transformer.checkpoint_filter_fn`` applies
the same downsample shift to original Swin checkpoints.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from samplerflow.features.registry import IMAGENET_MEAN, IMAGENET_STD, register
from samplerflow.features.torch_backbone import TorchBackbone

WEIGHTS_FILE = "ctranspath.pth"
STEM_CHANNEL_DIVISOR = 8
NON_PERSISTENT_BUFFERS = ("relative_position_index", "attn_mask")
CLASSIFIER_PREFIX = "head."
OLD_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


class ConvStem(nn.Module):
    """Convolutional patch embedding of CTransPath: 4x downsampling, NHWC output for timm 1.0's Swin."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: type[nn.Module] | None = None,
        strict_img_size: bool = True,
        output_fmt: str = "NHWC",
        **factory_kwargs: object,
    ) -> None:
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        if patch_size != (4, 4):
            raise ValueError(f"ConvStem downsamples by exactly 4 (two stride-2 convolutions), got patch_size {patch_size}")
        if embed_dim % STEM_CHANNEL_DIVISOR:
            raise ValueError(f"ConvStem needs embed_dim divisible by {STEM_CHANNEL_DIVISOR}, got {embed_dim}")
        if output_fmt != "NHWC":
            raise ValueError(f"ConvStem only produces NHWC output (timm's Swin layout), got {output_fmt!r}")
        # timm 1.0 passes device/dtype for meta-device construction; this stem builds on the default device.
        del factory_kwargs
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size

        # Parameters sit at indices 0, 1, 3, 4 and 6 (checkpoint keys patch_embed.proj.N); the ReLUs have none.
        width = embed_dim // STEM_CHANNEL_DIVISOR
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, embed_dim, kernel_size=1),
        )
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"CTransPath input is {tuple(x.shape[-2:])} px, expected {self.img_size}")
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x)


@register("ctranspath")
class CTransPathBackbone(TorchBackbone):
    """CTransPath (Wang et al., Medical Image Analysis 2022), pooled 768-d Swin-T features."""

    name = "ctranspath"
    input_size = 224
    dim = 768
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    recommended_weights = ""
    weights_file = WEIGHTS_FILE
    # The digest KatherLab/STAMP checks after downloading ctranspath.pth from the TransPath link.
    weights_sha256 = "7c998680060c8743551a412583fac689db43cec07053b72dfec6dcd810113539"
    weights_source = (
        "ctranspath.pth has no Hugging Face repository: download it from the Google Drive link in the README "
        "of github.com/Xiyue-Wang/TransPath (section 'CTransPath'; GPL-3.0 code licence) and pass its path"
    )

    def build(self) -> nn.Module:
        import timm

        return timm.create_model(
            "swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, embed_layer=ConvStem
        )

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # A checkpoint already in timm 1.0 layout has no stage-0 downsample and is used as it is.
        old_layout = any(key.startswith("layers.0.downsample.") for key in state_dict)
        adapted = {}
        for key, value in state_dict.items():
            if key.rsplit(".", 1)[-1] in NON_PERSISTENT_BUFFERS or key.startswith(CLASSIFIER_PREFIX):
                continue
            if old_layout:
                key = OLD_DOWNSAMPLE.sub(lambda match: f"layers.{int(match.group(1)) + 1}.downsample.", key)
            adapted[key] = value
        return adapted
