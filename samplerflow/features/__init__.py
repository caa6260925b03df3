"""Per-tile feature extraction: backbone registry and the extraction stage."""

from samplerflow.features.registry import Backbone, available_backbones, create_backbone

__all__ = ["Backbone", "available_backbones", "create_backbone"]
