"""Weight resolution for neural backbones: local checkpoint, Hugging Face hub or random.

A weights specification is one of:

- a path to a local checkpoint (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``);
- ``hf-hub:ORG/NAME`` (optionally ``hf-hub:ORG/NAME/FILE``): downloaded
  once into the Hugging Face cache, or read from that cache when
  ``HF_HUB_OFFLINE=1``. Gated models read a token from ``HF_TOKEN``; the
  token is never logged or recorded.

Random weights are never a fallback: the caller asks for them explicitly
(``--random-weights``, for tests and demos), a warning is logged and the
provenance records ``random``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from samplerflow.errors import InputError
from samplerflow.io import sha256_file

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
HUB_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_checkpoint(spec: str, *, backbone: str) -> tuple[Path, dict[str, Any]]:
    """Return a local checkpoint path for ``spec`` and its provenance record."""
    if spec.startswith(HUB_PREFIX):
        return _download_from_hub(spec[len(HUB_PREFIX):], backbone=backbone)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(
            f"Weights for backbone '{backbone}' not found: {path}. Pass --weights {backbone}=PATH with an "
            f"existing checkpoint file, or --weights {backbone}=hf-hub:ORG/NAME for a Hugging Face model."
        )
    return path.resolve(), {"weights": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}


def _download_from_hub(repo: str, *, backbone: str) -> tuple[Path, dict[str, Any]]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    parts = repo.split("/")
    repo_id = "/".join(parts[:2])
    filenames = ["/".join(parts[2:])] if len(parts) > 2 else list(HUB_DEFAULT_FILES)
    token = os.environ.get("HF_TOKEN") or None
    errors = []
    for filename in filenames:
        try:
            local = hf_hub_download(repo_id=repo_id, filename=filename, token=token)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
            errors.append(f"{filename}: {type(error).__name__}: {error}")
            continue
        path = Path(local)
        return path, {
            "weights": "hf-hub",
            "repo_id": repo_id,
            "filename": filename,
            "sha256": sha256_file(path),
        }
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    hint = (
        "HF_HUB_OFFLINE is set, so only the local cache was searched: stage the weights first "
        "(run once with network access) or pass a local checkpoint path"
        if offline
        else "check the model id, accept the model's licence on its Hugging Face page, and set HF_TOKEN for gated models"
    )
    raise InputError(f"Cannot get weights {HUB_PREFIX}{repo} for backbone '{backbone}': {'; '.join(errors)}. {hint}.")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from a safetensors or torch checkpoint (tensors only, no code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(payload, dict) and key in payload and isinstance(payload[key], dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict):
        raise InputError(f"Checkpoint {path} does not contain a state dict (found {type(payload).__name__})")
    return payload


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, backbone: str) -> None:
    """Load ``state_dict`` with strict key and shape checks and a message that lists the mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or wrong_shape:
        def first(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

        details = []
        if missing:
            details.append(f"missing keys: {first(missing)}")
        if unexpected:
            details.append(f"unexpected keys: {first(unexpected)}")
        if wrong_shape:
            details.append(f"wrong shapes: {first(wrong_shape)}")
        raise InputError(
            f"Checkpoint {source} does not match the '{backbone}' architecture ({'; '.join(details)}). "
            "Use the published checkpoint for this backbone."
        )
    model.load_state_dict(state_dict, strict=True)


def random_provenance(backbone: str, *, seed: int) -> dict[str, Any]:
    """Log the random-weights warning and return its provenance record."""
    log.warning(
        "Backbone '%s' uses RANDOM weights (--random-weights): features are for tests and demos only "
        "and carry no pretrained meaning",
        backbone,
    )
    return {"weights": "random", "seed": seed}
