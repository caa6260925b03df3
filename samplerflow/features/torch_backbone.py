"""Base class for backbones that are torch modules on normalized CHW float tensors.

Weights come from :mod:`samplerflow.features.weights` (local checkpoint or
Hugging Face hub, loaded strictly) or, only when the caller asks for them,
from a seeded random initialization recorded in the provenance.
"""

from __future__ import annotations

import logging

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


class TorchBackbone(Backbone):
    """Shared code for backbones that are torch modules taking normalized CHW float tensors."""

    needs_weights = True
    recommended_weights = ""

    def __init__(self) -> None:
        super().__init__()
        self.model: torch.nn.Module | None = None
        self.device = torch.device("cpu")

    def build(self) -> torch.nn.Module:
        """Create the architecture with uninitialized (random) parameters."""
        raise NotImplementedError

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a published checkpoint's keys onto :meth:`build`'s module (default: unchanged)."""
        return state_dict

    def missing_weights_error(self) -> InputError:
        """Return the error for a run that gives neither weights nor ``--random-weights``."""
        return InputError(
            f"Backbone '{self.name}' needs pretrained weights. Pass --weights {self.name}=PATH "
            f"(a local checkpoint) or --weights {self.name}={self.recommended_weights} (Hugging Face; "
            "cached for offline use). For tests and demos only, --random-weights uses random parameters."
        )

    def load(self, *, weights: str | None, random_weights: bool, device: str) -> None:
        if weights is None and not random_weights:
            raise self.missing_weights_error()
        torch.manual_seed(RANDOM_SEED)
        model = self.build()
        if weights is not None:
            path, self.provenance = resolve_checkpoint(weights, backbone=self.name)
            state_dict = self.adapt_state_dict(load_state_dict(path))
            load_strict(model, state_dict, source=str(path), backbone=self.name)
            log.info("Backbone '%s': weights from %s (sha256 %s)", self.name, weights, self.provenance["sha256"][:12])
        else:
            self.provenance = random_provenance(self.name, seed=RANDOM_SEED)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def prepare(self, tile: np.ndarray) -> np.ndarray:
        image = tile.astype(np.float32).transpose(2, 0, 1) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (image - mean) / std

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"Backbone '{self.name}' used before load()")
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with torch.inference_mode():
            output = self.model(tensor)
        return output.float().cpu().numpy()
