"""Atomic file output and content hashing.

Every output is written to a temporary name in its destination folder and
renamed into place, so a killed run never leaves a half-written file that
looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it into place on success.

    The temporary name keeps the destination's suffix so that libraries which
    choose a format by extension (PIL, pandas, anndata) still work.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.stem}.", suffix=f".tmp{''.join(destination.suffixes)}",
        dir=destination.parent,
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.chmod(temporary_path, 0o644)
        os.replace(temporary_path, destination)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def write_json(destination: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON with sorted keys, atomically."""
    with atomic_path(destination) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_text(destination: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(destination) as temporary:
        temporary.write_text(text)


def sha256_file(path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(payload: Any) -> str:
    """Return the hex SHA-256 digest of a JSON-serializable value in canonical form."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
