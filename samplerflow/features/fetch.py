"""Stage every checkpoint a run needs into one cache folder, once, so that extraction runs offline.

Layout of ``cache_dir``:

- ``{backbone}/{file}``: the checkpoint, copied from a local path or
  downloaded from the Hugging Face hub (``hf_hub_download`` with
  ``local_dir``, so it is a plain file and not a link into the hub cache);
- ``manifest.json``: ``{"backbones": {name: {"spec", "file", "sha256",
  "size_bytes", "staged_at"}}}`` with ``file`` relative to ``cache_dir``;
- ``.fetch.lock``: a file lock held while staging, so that parallel cluster
  jobs sharing the folder download each checkpoint only once.

Extraction then takes ``--weights NAME=PATH`` from :func:`staged_weights`
and never contacts the hub; set ``HF_HUB_OFFLINE=1`` on compute nodes to
make any stray hub call fail instead of reaching the network.

Gated repositories read a token from ``HF_TOKEN``. The token is passed to
``huggingface_hub`` only and is never logged or written to the manifest.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from samplerflow.errors import InputError
from samplerflow.features.registry import create_backbone
from samplerflow.features.torch_backbone import TorchBackbone
from samplerflow.features.weights import HUB_DEFAULT_FILES, HUB_PREFIX
from samplerflow.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".fetch.lock"
DEFAULT_LOCK_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True)
class StagedWeights:
    """One staged checkpoint: where it is, where it came from, and whether this call wrote it."""

    backbone: str
    spec: str
    path: Path
    sha256: str
    size_bytes: int
    reused: bool


def fetch_weights(
    backbones: Mapping[str, str | None] | Sequence[str],
    cache_dir: Path,
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> dict[str, StagedWeights]:
    """Stage the checkpoint of every backbone into ``cache_dir`` and record it in the manifest.

    ``backbones`` maps a backbone name to a weights spec (a local path or
    ``hf-hub:ORG/NAME[/FILE]``). A name without a spec keeps a checkpoint
    already staged for it, from whatever source, and otherwise gets the
    backbone's published hub repository. Backbones without weights (``handcrafted``)
    are skipped. A checkpoint already staged from the same spec with the
    recorded size is reused. Raises :class:`InputError` when a checkpoint
    cannot be found or downloaded, or when its sha256 differs from the
    published one.
    """
    requested = _requested_backbones(backbones)
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache_dir / LOCK_NAME), timeout=lock_timeout_s)
    staged: dict[str, StagedWeights] = {}
    try:
        with lock:
            manifest = read_manifest(cache_dir)
            for name, (backbone, spec) in requested.items():
                staged[name] = _stage_one(backbone, spec, cache_dir, manifest)
    except Timeout as error:
        raise InputError(
            f"Timed out after {lock_timeout_s:g} s waiting for {cache_dir / LOCK_NAME}: another "
            "'samplerflow weights fetch' holds it. Wait for it, or remove the lock file if no fetch is running."
        ) from error
    return staged


def staged_weights(cache_dir: Path, backbones: Sequence[str], *, verify: bool = True) -> dict[str, str]:
    """Return ``{backbone: checkpoint path}`` from the manifest for the backbones that need weights.

    With ``verify`` each file's sha256 is compared with the manifest. Raises
    :class:`InputError` naming the fetch command when a backbone is missing
    or its file is absent or changed.
    """
    cache_dir = Path(cache_dir).expanduser().resolve()
    manifest = read_manifest(cache_dir)
    paths = {}
    for name in backbones:
        backbone = create_backbone(name)
        if not isinstance(backbone, TorchBackbone):
            continue
        entry = manifest["backbones"].get(name)
        refetch = f"run 'samplerflow weights fetch --backbone {name} --cache-dir {cache_dir}' where the network is reachable"
        if entry is None:
            raise InputError(f"No staged weights for backbone '{name}' in {cache_dir}: {refetch}. {backbone.weights_hint()}")
        path = cache_dir / entry["file"]
        if not path.is_file():
            raise InputError(f"Staged weights for backbone '{name}' are missing: {path} not found; {refetch}.")
        if verify:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise InputError(
                    f"Staged weights {path} changed since they were fetched (sha256 {digest}, manifest "
                    f"{entry['sha256']}); {refetch}."
                )
        paths[name] = str(path)
    return paths


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    """Return the cache folder's manifest, or an empty one when none was written yet."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return {"backbones": {}}
    return json.loads(path.read_text())


def _requested_backbones(
    backbones: Mapping[str, str | None] | Sequence[str],
) -> dict[str, tuple[TorchBackbone, str | None]]:
    pairs = backbones.items() if isinstance(backbones, Mapping) else ((name, None) for name in backbones)
    specs = {}
    for name, spec in pairs:
        backbone = create_backbone(name)
        if not isinstance(backbone, TorchBackbone):
            log.info("Backbone '%s' has no weights to fetch", name)
            continue
        specs[name] = (backbone, spec)
    return specs


def _stage_one(backbone: TorchBackbone, spec: str | None, cache_dir: Path, manifest: dict[str, Any]) -> StagedWeights:
    name = backbone.name
    entry = manifest["backbones"].get(name)
    # Without a spec, a checkpoint staged earlier from any source is kept: a pipeline's
    # prefetch step must not replace weights a user staged by hand.
    if entry is not None and spec is None:
        path = cache_dir / entry["file"]
        if path.is_file() and path.stat().st_size == entry["size_bytes"]:
            log.info("Backbone '%s': reusing staged %s (from %s)", name, path, entry["spec"])
            return StagedWeights(name, entry["spec"], path, entry["sha256"], entry["size_bytes"], reused=True)
    if spec is None:
        if not backbone.recommended_weights:
            raise InputError(
                f"Backbone '{name}' has no published Hugging Face repository, so its checkpoint cannot be "
                f"fetched by name. {backbone.weights_hint()} Then pass --weights {name}=PATH to the fetch command."
            )
        spec = backbone.recommended_weights
    if entry is not None and entry["spec"] == spec:
        path = cache_dir / entry["file"]
        if path.is_file() and path.stat().st_size == entry["size_bytes"]:
            log.info("Backbone '%s': reusing staged %s", name, path)
            return StagedWeights(name, spec, path, entry["sha256"], entry["size_bytes"], reused=True)

    target_dir = cache_dir / name
    if spec.startswith(HUB_PREFIX):
        path = _download_from_hub(spec[len(HUB_PREFIX):], backbone=backbone, target_dir=target_dir)
    else:
        path = _copy_local(Path(spec).expanduser(), backbone=backbone, target_dir=target_dir)

    digest = sha256_file(path)
    expected = backbone.weights_sha256
    if expected and digest != expected:
        path.unlink()
        raise InputError(
            f"Checkpoint {spec} for backbone '{name}' has sha256 {digest}, but the published "
            f"{backbone.weights_file} has {expected}. {backbone.weights_hint()}"
        )
    size = path.stat().st_size
    manifest["backbones"][name] = {
        "spec": spec,
        "file": str(path.relative_to(cache_dir)),
        "sha256": digest,
        "size_bytes": size,
        "staged_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_manifest(cache_dir, manifest)
    log.info("Backbone '%s': staged %s (sha256 %s)", name, path, digest[:12])
    return StagedWeights(name, spec, path, digest, size, reused=False)


def _copy_local(source: Path, *, backbone: TorchBackbone, target_dir: Path) -> Path:
    if not source.is_file():
        raise InputError(f"Weights for backbone '{backbone.name}' not found: {source}. {backbone.weights_hint()}")
    destination = target_dir / source.name
    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)
    return destination


def _download_from_hub(repo: str, *, backbone: TorchBackbone, target_dir: Path) -> Path:
    parts = repo.split("/")
    if len(parts) < 2:
        raise InputError(f"Invalid hub id {HUB_PREFIX}{repo} for backbone '{backbone.name}': use {HUB_PREFIX}ORG/NAME[/FILE]")
    repo_id = "/".join(parts[:2])
    if len(parts) > 2:
        filenames = ["/".join(parts[2:])]
    elif backbone.weights_file:
        filenames = [backbone.weights_file]
    else:
        filenames = list(HUB_DEFAULT_FILES)
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    errors = []
    for filename in filenames:
        try:
            return hub_download(repo_id, filename, local_dir=target_dir, token=token)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
            errors.append(f"{filename}: {type(error).__name__}: {error}")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    hint = (
        "HF_HUB_OFFLINE is set: unset it on a machine that can reach the hub to fetch"
        if offline
        else f"accept the licence on the Hugging Face page of {repo_id} and set HF_TOKEN to a token of that account"
    )
    raise InputError(
        f"Cannot download {HUB_PREFIX}{repo} for backbone '{backbone.name}': {'; '.join(errors)}. {hint}. "
        f"{backbone.weights_hint()}"
    )


def hub_download(repo_id: str, filename: str, *, local_dir: Path, token: str | None) -> Path:
    """Download one file of a hub repository into ``local_dir`` and return its path (replaced in tests)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(local_dir), token=token))


def _write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(cache_dir / MANIFEST_NAME) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
