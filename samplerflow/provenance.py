"""Versions of the software that produced an output, for provenance records."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

from samplerflow import __version__

PACKAGES = (
    "numpy", "pandas", "scipy", "scikit-learn", "scikit-image", "opencv-python-headless", "tifffile",
    "imagecodecs", "openslide-python", "openslide-bin", "torch", "torchvision", "timm", "anndata",
    "h5py", "pyarrow", "numba",
)


@cache
def package_versions() -> dict[str, str]:
    """Return samplerflow's, Python's and the key libraries' versions (``missing`` if absent)."""
    versions = {"samplerflow": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    try:
        import openslide

        versions["openslide-library"] = openslide.__library_version__
    except (ImportError, AttributeError):
        versions["openslide-library"] = "missing"
    return versions
