"""Base class for backbones that are torch modules on normalized CHW float tensors.

Weights come from :mod:`samplerflow.features.weights` (local checkpoint or
Hugging Face hub, loaded strictly) or, only when the caller asks for them,
from a seeded random initialization recorded in the provenance.

On CUDA, :meth:`TorchBackbone.set_inference_options` turns on autocast
(bfloat16 or float16) and channels-last memory layout. On CPU both are
ignored, so CPU features are computed in float32 exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from samplerflow.errors import InputError
from samplerflow.features.registry import Backbone
from samplerflow.features.weights import (
    load_state_dict,
    load_strict,
    random_provenance,
    resolve_checkpoint,
)

log = logging.getLogger(__name__)

RANDOM_SEED = 0
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchBackbone(Backbone):
    """Shared code for backbones that are torch modules taking normalized CHW float tensors."""

    needs_weights = True
    # Weights spec to stage by default ("hf-hub:ORG/NAME"), empty when no hub repository publishes them.
    recommended_weights = ""
    # File name of the published checkpoint, and a sentence on where it comes from and its licence.
    weights_file = ""
    weights_source = ""
    # sha256 of the published checkpoint where its authors or a maintained loader state one.
    weights_sha256 = ""

    def __init__(self) -> None:
        super().__init__()
        self.model: torch.nn.Module | None = None
        self.device = torch.device("cpu")
        self.autocast_dtype: torch.dtype | None = None
        self.channels_last = False

    def build(self) -> torch.nn.Module:
        """Create the architecture with uninitialized (random) parameters."""
        raise NotImplementedError

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a published checkpoint's keys onto :meth:`build`'s module (default: unchanged)."""
        return state_dict

    def describe(self) -> dict[str, Any]:
        entry = super().describe()
        entry["hub_weights"] = self.recommended_weights or None
        entry["weights_file"] = self.weights_file or None
        entry["weights_source"] = self.weights_source or None
        return entry

    def weights_hint(self) -> str:
        """Return a sentence naming the expected checkpoint file and how to get it."""
        file_name = self.weights_file or "the published checkpoint"
        where = self.weights_source or f"pass --weights {self.name}={self.recommended_weights}"
        return f"Backbone '{self.name}' expects {file_name}: {where}."

    def missing_weights_error(self) -> InputError:
        """Return the error for a run that gives neither weights nor ``--random-weights``."""
        hub = (
            f" or --weights {self.name}={self.recommended_weights} (Hugging Face; cached for offline use)"
            if self.recommended_weights
            else ""
        )
        return InputError(
            f"Backbone '{self.name}' needs pretrained weights. Pass --weights {self.name}=PATH "
            f"(a local checkpoint){hub}. {self.weights_hint()} "
            "For tests and demos only, --random-weights uses random parameters."
        )

    def set_inference_options(self, *, autocast_dtype: str | None = None, channels_last: bool = False) -> None:
        """Choose CUDA autocast precision (``bfloat16``, ``float16`` or None) and channels-last layout.

        Both only take effect when the model runs on CUDA; call before :meth:`load`.
        """
        if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
            raise InputError(
                f"Invalid autocast precision {autocast_dtype!r}: choose {', '.join(AUTOCAST_DTYPES)} or none"
            )
        self.autocast_dtype = AUTOCAST_DTYPES[autocast_dtype] if autocast_dtype else None
        self.channels_last = channels_last

    def load(self, *, weights: str | None, random_weights: bool, device: str) -> None:
        if weights is None and not random_weights:
            raise self.missing_weights_error()
        torch.manual_seed(RANDOM_SEED)
        model = self.build()
        if weights is not None:
            path, self.provenance = resolve_checkpoint(weights, backbone=self.name)
            state_dict = self.adapt_state_dict(load_state_dict(path))
            try:
                load_strict(model, state_dict, source=str(path), backbone=self.name)
            except InputError as error:
                raise InputError(f"{error} {self.weights_hint()}") from error
            log.info("Backbone '%s': weights from %s (sha256 %s)", self.name, weights, self.provenance["sha256"][:12])
        else:
            self.provenance = random_provenance(self.name, seed=RANDOM_SEED)
        self.device = torch.device(device)
        model = model.eval().to(self.device)
        if self._on_cuda() and self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.provenance["inference"] = {
            "device": self.device.type,
            "autocast": str(self.autocast_dtype).removeprefix("torch.") if self._on_cuda() and self.autocast_dtype else None,
        }

    def _on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def prepare(self, tile: np.ndarray) -> np.ndarray:
        image = tile.astype(np.float32).transpose(2, 0, 1) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (image - mean) / std

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self.embed_tensor(torch.from_numpy(np.ascontiguousarray(batch)))

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Map a CPU float32 batch (n, 3, size, size), pinned or not, to a float32 (n, dim) matrix."""
        if self.model is None:
            raise RuntimeError(f"Backbone '{self.name}' used before load()")
        if not self._on_cuda():
            with torch.inference_mode():
                output = self.model(batch)
            return output.float().numpy()

        # A pinned source makes this copy asynchronous; the .cpu() below synchronizes.
        tensor = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(
            "cuda", dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            output = self.model(tensor)
        return output.float().cpu().numpy()
