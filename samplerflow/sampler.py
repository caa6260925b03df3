"""SAMPLER: a slide's tile features summarized by per-feature percentiles.

For a tiles x features matrix X and percentiles P (default 5, 15, ..., 95),
the SAMPLER vector is ``np.ravel(np.percentile(X, P, axis=0))``: the block of
every feature at P[0], then every feature at P[1], and so on. Blocks of
several backbones and scales are concatenated, and feature names
``{backbone}.s{scale}.f{index}.q{percentile}`` identify each value.

:func:`percentiles` returns exactly what ``np.percentile(X, P, axis=0)``
returns (linear interpolation, same float64 arithmetic) but faster: columns
are transposed in cache-sized blocks by a compiled kernel, sorted with
NumPy's vectorized sort in parallel threads, and the needed order statistics
are interpolated with NumPy's own lerp formula.

File contract: ``sampler.parquet`` is a long table with one row per SAMPLER
value: ``sample``, ``feature`` (name), ``backbone``, ``scale``,
``feature_index``, ``feature_label``, ``percentile``, ``value`` (float64).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from samplerflow.errors import SampleError
from samplerflow.features.store import FeatureSet, read_features
from samplerflow.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_PERCENTILES: tuple[float, ...] = tuple(float(p) for p in range(5, 100, 10))
COLUMN_BLOCK = 256


def _transpose_kernel():  # pragma: no cover - compiled code is exercised through percentiles()
    from numba import njit

    @njit(cache=True, nogil=True)
    def transpose_block(matrix, first_column, block):
        rows = matrix.shape[0]
        width = block.shape[0]
        for row in range(rows):
            for column in range(width):
                block[column, row] = matrix[row, first_column + column]

    return transpose_block


_TRANSPOSE = None


def _transpose_block(matrix: np.ndarray, first_column: int, block: np.ndarray) -> None:
    global _TRANSPOSE
    if _TRANSPOSE is None:
        _TRANSPOSE = _transpose_kernel()
    _TRANSPOSE(matrix, first_column, block)


def percentile_name(value: float) -> str:
    """Format a percentile for feature names: 5.0 -> '5', 2.5 -> '2.5'."""
    return f"{value:g}"


def percentiles(matrix: np.ndarray, percentile_list: Sequence[float], *, threads: int | None = None) -> np.ndarray:
    """Return ``np.percentile(matrix, percentile_list, axis=0)`` with identical values, faster.

    ``matrix`` is (n, d) with n >= 1; the result is (len(percentile_list), d)
    float64 (NumPy's result type for float32 and float64 input). Columns with
    NaN give NaN, as in NumPy.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"Expected a non-empty 2-D matrix (tiles x features), got shape {matrix.shape}")
    if matrix.dtype not in (np.float32, np.float64):
        matrix = matrix.astype(np.float64)
    matrix = np.ascontiguousarray(matrix)
    quantiles = np.true_divide(np.asarray(percentile_list, dtype=np.float64), 100)
    if quantiles.ndim != 1 or np.any(quantiles < 0) or np.any(quantiles > 1):
        raise ValueError(f"Percentiles must be a list of values in 0..100, got {list(percentile_list)}")

    rows, columns = matrix.shape
    # NumPy's "linear" method (Hyndman and Fan type 7): virtual index (n - 1) * q.
    virtual = (rows - 1) * quantiles
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= rows - 1
    previous[above] = rows - 1
    following[above] = rows - 1
    previous_index = previous.astype(np.intp)
    following_index = following.astype(np.intp)
    gamma = (virtual - previous_index).astype(np.float64)[:, None]
    needed = np.unique(np.concatenate([previous_index, following_index, [rows - 1]]))

    order_statistics = np.empty((needed.size, columns), dtype=matrix.dtype)
    column_starts = list(range(0, columns, COLUMN_BLOCK))

    def sort_block(first_column: int) -> None:
        width = min(COLUMN_BLOCK, columns - first_column)
        block = np.empty((width, rows), dtype=matrix.dtype)
        _transpose_block(matrix, first_column, block)
        block.sort(axis=1)  # NumPy's vectorized sort; releases the GIL
        order_statistics[:, first_column : first_column + width] = block[:, needed].T

    workers = threads if threads is not None else min(len(column_starts), os.cpu_count() or 1)
    if workers <= 1:
        for first_column in column_starts:
            sort_block(first_column)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(sort_block, column_starts))

    position = {int(index): row for row, index in enumerate(needed)}
    lower = order_statistics[[position[int(i)] for i in previous_index]]
    upper = order_statistics[[position[int(i)] for i in following_index]]
    # NumPy's _lerp, term by term, so that rounding is identical.
    difference = upper - lower
    result = np.add(lower, difference * gamma)
    np.subtract(upper, difference * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    has_nan = np.isnan(order_statistics[position[rows - 1]])
    if has_nan.any():
        result[:, has_nan] = np.nan
    return result


def feature_names(backbone: str, scale: int, dim: int, percentile_list: Sequence[float]) -> list[str]:
    """Return SAMPLER names for one backbone and scale, in vector order (percentile-major)."""
    return [
        f"{backbone}.s{scale}.f{index}.q{percentile_name(p)}" for p in percentile_list for index in range(dim)
    ]


def sampler_table(sample: str, feature_sets: Sequence[FeatureSet], percentile_list: Sequence[float]) -> pd.DataFrame:
    """Compute the long SAMPLER table of one sample over all backbones and scales."""
    frames = []
    for feature_set in feature_sets:
        labels = _labels(feature_set)
        for scale in feature_set.scales:
            matrix = feature_set.matrices[scale]
            if matrix.shape[0] == 0:
                raise SampleError("no_tiles", f"sample {sample}: backbone {feature_set.backbone} has no tiles")
            values = percentiles(matrix, percentile_list)
            dim = matrix.shape[1]
            frames.append(
                pd.DataFrame(
                    {
                        "sample": sample,
                        "feature": feature_names(feature_set.backbone, scale, dim, percentile_list),
                        "backbone": feature_set.backbone,
                        "scale": np.int32(scale),
                        "feature_index": np.tile(np.arange(dim, dtype=np.int32), len(percentile_list)),
                        "feature_label": np.tile(np.asarray(labels, dtype=object), len(percentile_list)),
                        "percentile": np.repeat(np.asarray(percentile_list, dtype=np.float64), dim),
                        "value": values.ravel(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _labels(feature_set: FeatureSet) -> list[str]:
    import json

    raw = feature_set.attrs.get("feature_labels")
    dim = next(iter(feature_set.matrices.values())).shape[1]
    labels = json.loads(raw) if raw else [f"f{index}" for index in range(dim)]
    return labels if len(labels) == dim else [f"f{index}" for index in range(dim)]


def run_sampler(
    *, sample: str, feature_files: Sequence[Path], destination: Path, percentile_list: Sequence[float] = DEFAULT_PERCENTILES
) -> pd.DataFrame:
    """Read per-tile features, compute the SAMPLER table and write it as parquet."""
    feature_sets = [read_features(path) for path in feature_files]
    backbones = [feature_set.backbone for feature_set in feature_sets]
    if len(set(backbones)) != len(backbones):
        raise ValueError(f"Features of one backbone given twice for sample {sample}: {backbones}")
    table = sampler_table(sample, feature_sets, percentile_list)
    with atomic_path(destination) as temporary:
        table.to_parquet(temporary, index=False)
    log.info("%s: SAMPLER vector of %d values", sample, len(table))
    return table
