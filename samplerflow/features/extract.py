"""Feature extraction stage: tiles of a slide at every scale through one or more backbones.

File contract: for each backbone, ``{backbone}.h5`` (HDF5) contains

- ``tile_id`` (int64, n): the tiles table's ids, in the same row order;
- ``s{k}`` (n x dim, float32 unless ``feature_dtype="float16"`` was
  requested) for each scale k: row i is tile i's features at k x the base
  tile size;
- attributes ``backbone``, ``dim``, ``input_size``, ``scales``,
  ``tile_size_um``, ``mpp``, ``mpp_source``, ``read_level``,
  ``read_downsample``, ``feature_labels`` (JSON list), ``provenance``
  (JSON: weights source and checksum, or ``random``; device and CUDA
  autocast precision), ``feature_dtype``, ``target_mpp`` (0 when the slide
  was read at its own resolution), ``stain_normalization`` (JSON: method,
  reference and its checksum, and the count of tile images left unchanged
  because they held too little stain), ``samplerflow_version``.

All scales of a centre come from one read: the region of the largest scale
is read once at the pyramid level chosen for the base scale, and every
smaller field of view is a centred crop of it. Crops are resized to each
backbone's input size with torchvision's antialiased resize, then stain
normalized when a method is set, once per input size.

With ``target_mpp`` the slide is read through
:class:`~samplerflow.resample.ResampledSlideReader`, as the AOI stage read
it, so the tile centres (level-0 pixels of the resampled grid) match.

Reading, cropping, resizing and normalization run in DataLoader workers.
On CUDA, batches travel in pinned memory and neural backbones run under
autocast (bfloat16 by default) in channels-last layout; on CPU they run in
float32 as they always have.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as tv_functional
from tqdm import tqdm

from samplerflow import __version__
from samplerflow.errors import InputError
from samplerflow.features.registry import Backbone, create_backbone
from samplerflow.features.torch_backbone import AUTOCAST_DTYPES, TorchBackbone
from samplerflow.io import atomic_path
from samplerflow.resample import open_resampled
from samplerflow.slide import SlideReader
from samplerflow.stain import StainParams
from samplerflow.tiling import TileGrid

log = logging.getLogger(__name__)

FEATURE_DTYPES = ("float32", "float16")
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class ReadPlan:
    """Tile read geometry: one pyramid level and the base tile side in its pixels."""

    level: int
    level_downsample: float
    base_side: int
    scales: tuple[int, ...]

    def box(self, centre_px: tuple[float, float], scale: int) -> tuple[int, int, int]:
        """Return (left, top, side) of the scale's tile in pixels of the read level.

        Integer arithmetic makes every scale's box a sub-box of the largest
        one, so cropping and reading separately give the same pixels.
        """
        side = scale * self.base_side
        left = math.floor(centre_px[0] / self.level_downsample - side / 2 + 0.5)
        top = math.floor(centre_px[1] / self.level_downsample - side / 2 + 0.5)
        return left, top, side


def plan_reads(reader: SlideReader, grid: TileGrid, *, input_size: int) -> ReadPlan:
    """Choose the coarsest level that still gives ``input_size`` pixels across the base tile."""
    base_side_level0 = float(grid.tile_side_px(1))
    level = reader.best_level(base_side_level0 / input_size)
    downsample = reader.info.level_downsamples[level]
    base_side = max(1, round(base_side_level0 / downsample))
    if base_side < input_size / 2:
        log.warning(
            "%s: the %.0f um base tile spans only %d px at level %d; tiles are upsampled to %d px",
            reader.info.path, grid.params.tile_size_um, base_side, level, input_size,
        )
    return ReadPlan(level=level, level_downsample=downsample, base_side=base_side, scales=tuple(grid.params.scales))


def read_multiscale(reader: SlideReader, plan: ReadPlan, centre_px: tuple[float, float]) -> dict[int, np.ndarray]:
    """Read the largest scale's region once and crop every scale from it."""
    largest = max(plan.scales)
    left, top, side = plan.box(centre_px, largest)
    region = reader.read_level(plan.level, left, top, side, side)
    crops = {}
    for scale in plan.scales:
        scale_left, scale_top, scale_side = plan.box(centre_px, scale)
        row, col = scale_top - top, scale_left - left
        crops[scale] = region[row : row + scale_side, col : col + scale_side]
    return crops


def read_single_scale(reader: SlideReader, plan: ReadPlan, centre_px: tuple[float, float], scale: int) -> np.ndarray:
    """Read one scale's tile on its own (reference for :func:`read_multiscale`)."""
    left, top, side = plan.box(centre_px, scale)
    return reader.read_level(plan.level, left, top, side, side)


def resize_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 tile to ``size`` x ``size`` with antialiased bilinear interpolation."""
    if tile.shape[0] == size and tile.shape[1] == size:
        return np.ascontiguousarray(tile)
    tensor = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)
    resized = tv_functional.resize(tensor, [size, size], antialias=True)
    return resized.permute(1, 2, 0).contiguous().numpy()


class TileDataset(Dataset):
    """Tiles of one slide; item i is, per backbone, a stacked array over scales.

    The last element of each item counts the tile images that stain
    normalization left unchanged (too little stain to estimate from).
    """

    def __init__(
        self,
        slide_path: Path,
        *,
        mpp: float | None,
        centres_px: np.ndarray,
        plan: ReadPlan,
        preparers: Sequence[Backbone],
        tile_size_um: float,
        target_mpp: float | None = None,
        normalizer: Any | None = None,
    ) -> None:
        self.slide_path = slide_path
        self.mpp = mpp
        self.target_mpp = target_mpp
        self.centres_px = centres_px
        self.plan = plan
        self.preparers = list(preparers)
        self.tile_size_um = tile_size_um
        self.normalizer = normalizer
        self._reader: SlideReader | None = None

    def __len__(self) -> int:
        return len(self.centres_px)

    def _slide(self) -> SlideReader:
        # Each worker process opens its own handle: slide libraries are not fork-safe.
        if self._reader is None:
            self._reader = open_resampled(self.slide_path, mpp=self.mpp, target_mpp=self.target_mpp)
        return self._reader

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        centre = (float(self.centres_px[index, 0]), float(self.centres_px[index, 1]))
        crops = read_multiscale(self._slide(), self.plan, centre)
        images: dict[tuple[int, int], np.ndarray] = {}
        unchanged = 0
        for size in sorted({backbone.input_size for backbone in self.preparers}):
            for scale in self.plan.scales:
                resized = resize_tile(crops[scale], size)
                if self.normalizer is not None:
                    normalized = self.normalizer.transform(resized)
                    unchanged += normalized is resized  # the normalizers return pale tiles as they are
                    resized = normalized
                images[scale, size] = resized
        prepared = []
        for backbone in self.preparers:
            size = backbone.input_size
            per_scale = [
                backbone.prepare_at(images[scale, size], mpp=self.tile_size_um * scale / size) for scale in self.plan.scales
            ]
            prepared.append(np.stack(per_scale))
        return (*prepared, np.asarray(unchanged, dtype=np.int64))


def _worker_context() -> multiprocessing.context.BaseContext:
    """Return a forkserver context whose server has preloaded this module.

    Workers forked straight from the main process inherit the state of
    OpenCV's and OpenMP's thread pools, which the slide and tissue steps
    have started, and then hang on their first threaded call. The
    forkserver is a clean single-threaded process, so its children are safe,
    and preloading makes each worker start without importing torch again.
    """
    # Python 3.11's forkserver starts as `python -c` and ignores the parent's
    # sys.path, so the working folder comes first on its path: a folder named
    # samplerflow there (a clone's own folder, seen from its parent) would
    # shadow the installed package. PYTHONSAFEPATH keeps the working folder off.
    os.environ.setdefault("PYTHONSAFEPATH", "1")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _worker_init(_: int) -> None:
    # Workers already run in parallel; nested library threads would oversubscribe the cores.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; reject unavailable devices."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} requested but no CUDA GPU is visible; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"Invalid --device {device!r}: choose auto, cpu or cuda[:N]")
    return device


def extract_features(
    *,
    slide_path: Path,
    grid: TileGrid,
    backbones: Sequence[str],
    outdir: Path,
    weights: dict[str, str] | None = None,
    random_weights: bool = False,
    mpp: float | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
    autocast: str | None = "bfloat16",
    channels_last: bool = True,
    feature_dtype: str = "float32",
    target_mpp: float | None = None,
    stain: StainParams | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Extract features of every tile at every scale; write one HDF5 file per backbone.

    ``autocast`` (``bfloat16``, ``float16`` or None for float32) and
    ``channels_last`` apply to neural backbones on CUDA only. ``feature_dtype``
    is the stored precision (``float32`` or ``float16``) on every device.
    Returns the written paths by backbone name.
    """
    weights = weights or {}
    unknown = sorted(set(weights) - set(backbones))
    if unknown:
        raise InputError(f"--weights given for backbones not requested: {', '.join(unknown)}")
    if feature_dtype not in FEATURE_DTYPES:
        raise InputError(f"Invalid feature dtype {feature_dtype!r}: choose {' or '.join(FEATURE_DTYPES)}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise InputError(f"Invalid autocast precision {autocast!r}: choose {', '.join(AUTOCAST_DTYPES)} or none")
    device = resolve_device(device)
    models = [create_backbone(name) for name in backbones]
    for model in models:
        if isinstance(model, TorchBackbone):
            model.set_inference_options(autocast_dtype=autocast, channels_last=channels_last)
        model.load(weights=weights.get(model.name), random_weights=random_weights, device=device)

    stain = stain or StainParams()
    normalizer = stain.fitted()
    reader = open_resampled(slide_path, mpp=mpp, target_mpp=target_mpp)
    try:
        _check_grid_matches(reader, grid, target_mpp=target_mpp)
        plan = plan_reads(reader, grid, input_size=max(model.input_size for model in models))
        slide_info = reader.info
    finally:
        reader.close()

    dataset = TileDataset(
        slide_path,
        mpp=mpp,
        centres_px=grid.centres_px,
        plan=plan,
        preparers=[create_backbone(name) for name in backbones],
        tile_size_um=float(grid.params.tile_size_um),
        target_mpp=target_mpp,
        normalizer=normalizer,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        multiprocessing_context=_worker_context() if num_workers > 0 else None,
        pin_memory=device.startswith("cuda"),
        collate_fn=_collate,
        persistent_workers=False,
    )

    outdir.mkdir(parents=True, exist_ok=True)
    n_tiles = len(dataset)
    written: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        files = {}
        for model in models:
            destination = outdir / f"{model.name}.h5"
            temporary = stack.enter_context(atomic_path(destination))
            handle = stack.enter_context(h5py.File(temporary, "w"))
            _write_header(handle, model, grid, plan, slide_info.mpp_source)
            handle.attrs["feature_dtype"] = feature_dtype
            for scale in plan.scales:
                handle.create_dataset(
                    f"s{scale}", shape=(n_tiles, model.dim), dtype=feature_dtype,
                    chunks=(min(n_tiles, 1024), model.dim),
                )
            files[model.name] = handle
            written[model.name] = destination

        position = 0
        unchanged = 0
        bar = tqdm(total=n_tiles, desc=f"features {slide_path.name}", unit="tile", disable=not progress, leave=False)
        for *batch, batch_unchanged in loader:
            count = batch[0].shape[0]
            unchanged += int(batch_unchanged.sum())
            for model, prepared in zip(models, batch):
                flat = prepared.reshape((count * len(plan.scales),) + tuple(prepared.shape[2:]))
                features = _embed(model, flat).reshape(count, len(plan.scales), model.dim)
                if not np.isfinite(features).all():
                    raise RuntimeError(f"Backbone '{model.name}' produced non-finite features on {slide_path}")
                if feature_dtype == "float16" and np.abs(features).max() > FLOAT16_MAX:
                    raise RuntimeError(
                        f"Backbone '{model.name}' produced features beyond the float16 range (|x| > {FLOAT16_MAX:g}) "
                        f"on {slide_path}; store them as float32"
                    )
                for scale_index, scale in enumerate(plan.scales):
                    files[model.name][f"s{scale}"][position : position + count] = features[:, scale_index]
            position += count
            bar.update(count)
        bar.close()
        stain_record = {**stain.provenance(), "unchanged_tiles": unchanged if stain.enabled else 0}
        for handle in files.values():
            handle.attrs["target_mpp"] = float(target_mpp or 0.0)
            handle.attrs["stain_normalization"] = json.dumps(stain_record, sort_keys=True)
        if stain.enabled and unchanged:
            log.info("%s: %s left %d of %d tile images unchanged (too little stain)",
                     slide_path, stain.method, unchanged, n_tiles * len(plan.scales) * len({m.input_size for m in models}))
    log.info("%s: %d tiles x %d scales through %s", slide_path, n_tiles, len(plan.scales), ", ".join(backbones))
    return written


def _check_grid_matches(reader: SlideReader, grid: TileGrid, *, target_mpp: float | None) -> None:
    """Fail when the tiles were placed on a pixel grid other than the one this reader presents."""
    info = reader.info
    same_mpp = math.isclose(info.mpp, grid.mpp, rel_tol=1e-3)
    same_size = abs(info.width - grid.slide_width_px) <= 1 and abs(info.height - grid.slide_height_px) <= 1
    if not (same_mpp and same_size):
        raise InputError(
            f"{info.path}: the tiles were placed on a {grid.slide_width_px} x {grid.slide_height_px} px grid at "
            f"{float(grid.mpp):.4g} um/px, but the slide reads as {info.width} x {info.height} px at {info.mpp:.4g} um/px "
            f"(target mpp {target_mpp}); run aoi, tile and extract on the same slide with the same --target-mpp"
        )


def _collate(items: list[tuple[np.ndarray, ...]]) -> tuple[torch.Tensor, ...]:
    # Tensors, not arrays, so that the DataLoader can pin them for asynchronous copies to the GPU.
    return tuple(torch.from_numpy(np.stack(column)) for column in zip(*items))


def _embed(model: Backbone, batch: torch.Tensor) -> np.ndarray:
    if isinstance(model, TorchBackbone):
        return model.embed_tensor(batch)
    return model.embed(batch.numpy())


def _write_header(handle: h5py.File, model: Backbone, grid: TileGrid, plan: ReadPlan, mpp_source: str) -> None:
    handle.create_dataset("tile_id", data=grid.table["tile_id"].to_numpy(dtype=np.int64))
    attrs = handle.attrs
    attrs["backbone"] = model.name
    attrs["dim"] = model.dim
    attrs["input_size"] = model.input_size
    attrs["scales"] = np.asarray(plan.scales, dtype=np.int64)
    attrs["tile_size_um"] = float(grid.params.tile_size_um)
    attrs["mpp"] = float(grid.mpp)
    attrs["mpp_source"] = mpp_source
    attrs["read_level"] = plan.level
    attrs["read_downsample"] = plan.level_downsample
    attrs["feature_labels"] = json.dumps(model.feature_labels())
    attrs["provenance"] = json.dumps(model.provenance, sort_keys=True)
    attrs["registry"] = json.dumps(model.describe(), sort_keys=True)
    attrs["samplerflow_version"] = __version__


def default_workers() -> int:
    """Return a data-loader worker count for this machine (at most 4)."""
    return max(0, min(4, (os.cpu_count() or 1)))
