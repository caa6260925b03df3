"""Time repeated 5-fold logistic regression: kernel engine against the plain scikit-learn Pipeline.

Both engines run in this process on the same synthetic, seeded SAMPLER-like
matrix (default 867 slides x 20,480 values) and the same patient-grouped
splits (``repeated_grouped_kfold``, seed 0). The matrix has the structure of
percentile features: 64 latent slide factors, of which the first 4 shift with
the class, loaded onto every column, plus independent noise, so columns are
strongly correlated. Slides come two per patient.

The script times ``--repeats`` x 5 folds with the kernel engine and the first
``--plain-repeats`` repeats with the plain Pipeline (both single-process), then
prints seconds per fold, the speed-up (per-fold time, plain over kernel) and the
largest per-fold AUROC difference on the folds both ran. It exits with status 1
when a difference exceeds ``--tolerance`` (default 0.001). Both engines use the
model's default solver tolerance (``ModelSpec``) unless ``--solver-tol`` is given.
The plain engine takes seconds per fold at the default size, so
``--plain-repeats`` defaults to 100 only for completeness; pass a smaller number
on a shared machine. The load average is printed before and after the runs,
because other processes inflate both timings.

Run by hand, never in tests:

    .venv/bin/python benchmarks/bench_classify.py --plain-repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import print_description

from samplerflow.classify.evaluate import cross_validated_scores
from samplerflow.classify.models import ModelSpec
from samplerflow.classify.splits import repeated_grouped_kfold


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=867, help="slides (default: %(default)s)")
    parser.add_argument("--cols", type=int, default=20_480, help="SAMPLER values per slide (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=100, help="5-fold repeats for the kernel engine (default: %(default)s)")
    parser.add_argument("--plain-repeats", type=int, default=100, help="5-fold repeats for the plain Pipeline (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the matrix and the splits (default: %(default)s)")
    parser.add_argument("--solver-tol", type=float, default=None,
                        help="lbfgs tol of both engines (default: the ModelSpec default for logistic regression)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed AUROC difference (default: %(default)s)")
    return parser.parse_args()


def synthetic_matrix(rows: int, cols: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return X (rows x cols, float64), y (0/1) and patient ids (two slides per patient)."""
    rng = np.random.default_rng(seed)
    patients = np.arange(rows) // 2
    y = (rng.random(rows // 2 + 1) < 0.4).astype(np.int64)[patients]
    latent = rng.standard_normal((rows, 64))
    latent[:, :4] += 0.6 * y[:, None]
    loadings = rng.standard_normal((64, cols)) / 8.0
    X = latent @ loadings + 0.5 * rng.standard_normal((rows, cols)) + rng.uniform(0, 5, cols)
    return X, y, patients.astype(str)


def main() -> int:
    args = parse_args()
    print_description()
    X, y, patients = synthetic_matrix(args.rows, args.cols, seed=args.seed)
    splits = list(repeated_grouped_kfold(y, patients, n_splits=5, repeats=args.repeats, seed=args.seed))
    plain_splits = [s for s in splits if s.repeat < args.plain_repeats]
    spec = ModelSpec(tol=args.solver_tol)
    print(f"matrix {X.shape[0]} x {X.shape[1]}, {int(y.sum())} positives; "
          f"kernel {len(splits)} folds, plain {len(plain_splits)} folds; lbfgs tol {spec.tol:g}")

    started = time.perf_counter()
    kernel = cross_validated_scores(X, y, splits, spec, engine="kernel")
    kernel_seconds = time.perf_counter() - started
    started = time.perf_counter()
    plain = cross_validated_scores(X, y, plain_splits, spec, engine="plain")
    plain_seconds = time.perf_counter() - started

    differences = [
        abs(roc_auc_score(y[k.split.test], k.scores) - roc_auc_score(y[p.split.test], p.scores))
        for k, p in zip(kernel, plain, strict=False)
    ]
    kernel_aurocs = [roc_auc_score(y[k.split.test], k.scores) for k in kernel]
    per_fold_kernel = kernel_seconds / len(splits)
    per_fold_plain = plain_seconds / len(plain_splits)
    print(f"kernel: {kernel_seconds:.1f} s total, {per_fold_kernel:.3f} s per fold, "
          f"AUROC {np.mean(kernel_aurocs):.4f} +- {np.std(kernel_aurocs, ddof=1):.4f}")
    print(f"plain:  {plain_seconds:.1f} s total, {per_fold_plain:.3f} s per fold")
    print(f"speed-up per fold: {per_fold_plain / per_fold_kernel:.1f}x; "
          f"largest AUROC difference over {len(differences)} folds: {max(differences):.2e}")
    print("load average at the end (1, 5, 15 min): " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    if max(differences) > args.tolerance:
        print(f"AUROC difference exceeds {args.tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
