"""Cohort outlier check: flag slides far from the cohort in PCA space for review.

After SAMPLER, every slide is one row of a cohort matrix (the ``X`` of
``cohort.h5ad``). A slide whose representation sits far from all others
often has a problem upstream: a different stain protocol, pen marks,
folded tissue, a wrong mpp. :func:`flag_outliers`:

1. scales each feature robustly, by its median and median absolute
   deviation (MAD); features with zero MAD fall back to the standard
   deviation, and constant features are dropped;
2. projects the slides on the top principal components;
3. divides each component by its MAD, so one outlier cannot inflate the
   scale it is measured against, and takes each slide's Euclidean
   distance to the per-component median (a robust, diagonal Mahalanobis
   distance);
4. flags slides whose distance is more than ``threshold_mads`` MADs of
   the distances above their median.

Flagged slides are for review, not removal: a rare but real tumour
subtype can be far from the cohort too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# On synthetic 40-slide cohorts without outliers the largest distance was
# 5.7 MADs above the median (20 cohorts, tests/test_outliers.py cohort model).
DEFAULT_THRESHOLD_MADS = 6.0
MIN_SAMPLES = 5


def _as_matrix(data: Any, sample_ids: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Return a dense float64 matrix and one id per row from an AnnData, DataFrame or array."""
    if hasattr(data, "obs_names") and hasattr(data, "X"):
        matrix = data.X.toarray() if hasattr(data.X, "toarray") else np.asarray(data.X)
        ids = list(map(str, data.obs_names))
    elif isinstance(data, pd.DataFrame):
        matrix = data.to_numpy()
        ids = list(map(str, data.index))
    else:
        matrix = np.asarray(data)
        ids = [str(index) for index in range(matrix.shape[0])] if matrix.ndim == 2 else []
    if sample_ids is not None:
        ids = list(map(str, sample_ids))
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"Expected a 2-D samples x features matrix, got shape {matrix.shape}")
    if len(ids) != matrix.shape[0]:
        raise ValueError(f"Got {len(ids)} sample ids for {matrix.shape[0]} rows")
    if not np.isfinite(matrix).all():
        bad_rows = [ids[row] for row in np.nonzero(~np.isfinite(matrix).all(axis=1))[0][:5]]
        raise ValueError(f"The cohort matrix has NaN or infinite values (samples {', '.join(bad_rows)}); fix or drop them first")
    return matrix, ids


def _robust_scale(matrix: np.ndarray) -> np.ndarray:
    median = np.median(matrix, axis=0)
    spread = np.median(np.abs(matrix - median), axis=0) * 1.4826
    fallback = matrix.std(axis=0)
    spread = np.where(spread > 0, spread, fallback)
    keep = spread > 0
    return (matrix[:, keep] - median[keep]) / spread[keep]


def flag_outliers(
    data: Any,
    *,
    sample_ids: Sequence[str] | None = None,
    n_components: int = 10,
    threshold_mads: float = DEFAULT_THRESHOLD_MADS,
    random_state: int = 0,
) -> pd.DataFrame:
    """Flag slides far from the cohort in PCA space.

    ``data`` is an AnnData (rows named by ``obs_names``), a DataFrame (rows
    named by its index) or a samples x features array (rows named 0..n-1,
    or by ``sample_ids``). Returns one row per slide, in input order, with
    columns ``sample``, ``pca_distance``, ``mads_above_median``,
    ``outlier`` (bool) and ``reason`` (empty unless flagged).
    """
    if n_components < 1:
        raise ValueError(f"Invalid n_components={n_components}: must be >= 1")
    if threshold_mads <= 0:
        raise ValueError(f"Invalid threshold_mads={threshold_mads}: must be positive")
    matrix, ids = _as_matrix(data, sample_ids)
    if matrix.shape[0] < MIN_SAMPLES:
        raise ValueError(f"An outlier check needs at least {MIN_SAMPLES} slides, got {matrix.shape[0]}")

    # Imported here so that the command line starts without scikit-learn.
    from sklearn.decomposition import PCA

    scaled = _robust_scale(matrix)
    if scaled.shape[1] == 0:
        raise ValueError("Every feature is constant across the cohort; there is nothing to compare")
    components = min(n_components, scaled.shape[0] - 1, scaled.shape[1])
    scores = PCA(n_components=components, random_state=random_state).fit_transform(scaled)

    # Whitening by each component's robust scale makes inlier distances
    # roughly chi-distributed, so a MAD rule on them has a thin upper tail.
    centred = scores - np.median(scores, axis=0)
    scale = np.median(np.abs(centred), axis=0) * 1.4826
    scale = np.where(scale > 0, scale, 1.0)
    distances = np.linalg.norm(centred / scale, axis=1)

    centre = float(np.median(distances))
    mad = float(np.median(np.abs(distances - centre)))
    if mad <= 0:
        mad = float(distances.std()) or 1.0
    mads_above = (distances - centre) / mad
    outlier = mads_above > threshold_mads
    reasons = [
        f"PCA distance {value:.1f} MAD above the cohort median (limit {threshold_mads:g}, {components} PCs)" if flag else ""
        for value, flag in zip(mads_above, outlier)
    ]
    result = pd.DataFrame(
        {
            "sample": ids,
            "pca_distance": distances,
            "mads_above_median": mads_above,
            "outlier": outlier,
            "reason": reasons,
        }
    )
    for row in result[result["outlier"]].itertuples():
        log.warning("Sample %s flagged for review: %s", row.sample, row.reason)
    return result
