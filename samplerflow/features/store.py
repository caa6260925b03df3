"""Reading per-tile feature files (``{backbone}.h5``) without loading torch.

The format is written by :mod:`samplerflow.features.extract`, whose module
docstring documents the datasets and attributes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np


@dataclass(frozen=True)
class FeatureSet:
    """Per-tile features of one backbone read back from ``{backbone}.h5``."""

    backbone: str
    scales: tuple[int, ...]
    matrices: dict[int, np.ndarray]
    tile_ids: np.ndarray
    attrs: dict[str, Any]

    @property
    def provenance(self) -> dict[str, Any]:
        """Weights provenance recorded at extraction."""
        return json.loads(self.attrs.get("provenance", "{}"))


def read_features(path: Path) -> FeatureSet:
    """Read a features file written by :func:`extract_features`.

    Matrices stored as float16 are returned as float32, so that statistics
    such as percentiles are not computed in half precision.
    """
    with h5py.File(path, "r") as handle:
        attrs = {key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in handle.attrs.items()}
        scales = tuple(int(k) for k in attrs["scales"])
        matrices = {scale: handle[f"s{scale}"][()].astype(np.float32, copy=False) for scale in scales}
        tile_ids = handle["tile_id"][()]
    return FeatureSet(backbone=str(attrs["backbone"]), scales=scales, matrices=matrices, tile_ids=tile_ids, attrs=attrs)
