"""Backbone registry: one interface for every per-tile feature extractor.

A backbone states its input size (pixels), normalization, output dimension
and how it loads weights. Work is split in two so that data-loader workers
do the per-tile CPU part and the main process only runs batched models:

- :meth:`Backbone.prepare` turns one RGB uint8 tile (already resized to
  ``input_size``) into a float32 array: a normalized CHW image for neural
  networks, or the finished feature vector for weight-free backbones.
- :meth:`Backbone.embed` maps a batch of prepared arrays to features.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from samplerflow.errors import InputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(ABC):
    """A per-tile feature extractor."""

    name: str
    input_size: int
    dim: int
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    needs_weights: bool = False

    def __init__(self) -> None:
        self.provenance: dict[str, Any] = {"weights": "none"}

    def load(self, *, weights: str | None, random_weights: bool, device: str) -> None:
        """Load weights onto ``device``; weight-free backbones ignore the arguments."""
        del weights, random_weights, device

    @abstractmethod
    def prepare(self, tile: np.ndarray) -> np.ndarray:
        """Turn one RGB uint8 tile of ``input_size`` x ``input_size`` into a float32 array."""

    def prepare_at(self, tile: np.ndarray, *, mpp: float) -> np.ndarray:
        """Prepare a tile whose pixels are ``mpp`` um wide; backbones that measure lengths override this."""
        del mpp
        return self.prepare(tile)

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Map a batch of prepared arrays to a float32 (n, dim) feature matrix."""

    def feature_labels(self) -> list[str]:
        """Return a readable name for each output column (``f{index}`` when they have none)."""
        return [f"f{index}" for index in range(self.dim)]

    def describe(self) -> dict[str, Any]:
        """Return the registry entry: name, input size, normalization, dimension."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "dim": self.dim,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "needs_weights": self.needs_weights,
        }


_REGISTRY: dict[str, Callable[[], Backbone]] = {}


def register(name: str) -> Callable[[Callable[[], Backbone]], Callable[[], Backbone]]:
    """Register a backbone factory under ``name``."""

    def decorator(factory: Callable[[], Backbone]) -> Callable[[], Backbone]:
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_backbones() -> list[str]:
    """Return the registered backbone names."""
    _import_builtins()
    return sorted(_REGISTRY)


def create_backbone(name: str) -> Backbone:
    """Instantiate a registered backbone (weights not loaded yet)."""
    _import_builtins()
    if name not in _REGISTRY:
        raise InputError(f"Unknown backbone {name!r}: choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def _import_builtins() -> None:
    # Importing the modules runs their @register decorators.
    from samplerflow import nuclei  # noqa: F401
    from samplerflow.features import conch, ctranspath, handcrafted, inception, uni  # noqa: F401
