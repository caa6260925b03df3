"""Cross-validated scores of binary models, and the summaries of binary tasks.

Two engines give the same scores (see :mod:`samplerflow.classify.fast`):
``plain`` fits the scikit-learn Pipeline on each fold; ``kernel`` (default)
solves each fold from its Gram matrix. Folds run in parallel with joblib
(``n_jobs``); results do not depend on ``n_jobs``. One-vs-rest and
two-stage tasks build on these functions in :mod:`samplerflow.classify.multiclass`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from samplerflow.classify import metrics
from samplerflow.classify.fast import (
    CenteredMatrix,
    fit_score_fold,
    fit_score_fold_targets,
)
from samplerflow.classify.models import (
    ModelSpec,
    build_pipeline,
    default_threshold,
    positive_scores,
    score_kind,
)
from samplerflow.classify.splits import Split
from samplerflow.classify.task import Dataset
from samplerflow.errors import InputError

log = logging.getLogger(__name__)

Engine = Literal["kernel", "plain"]
from samplerflow.classify.choices import ENGINES  # noqa: E402  (re-exported)


@dataclass(frozen=True)
class FoldScores:
    """Scores of one split's test rows (row indices into the dataset)."""

    split: Split
    scores: np.ndarray


def _score_rows(
    data: CenteredMatrix | np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
    spec: ModelSpec, engine: str,
) -> np.ndarray:
    if engine == "kernel":
        assert isinstance(data, CenteredMatrix)
        return fit_score_fold(data, y, train, test, spec)
    pipeline = build_pipeline(spec).fit(data[train], y[train])
    return positive_scores(pipeline, data[test])


def _score_rows_targets(
    data: CenteredMatrix | np.ndarray, targets: Sequence[np.ndarray], train: np.ndarray, test: np.ndarray,
    spec: ModelSpec, engine: str,
) -> list[np.ndarray]:
    if engine == "kernel":
        assert isinstance(data, CenteredMatrix)
        return fit_score_fold_targets(data, targets, train, test, spec)
    return [positive_scores(build_pipeline(spec).fit(data[train], y[train]), data[test]) for y in targets]


def _prepare(X: np.ndarray, engine: str) -> CenteredMatrix | np.ndarray:
    if engine not in ENGINES:
        raise InputError(f"Invalid engine {engine!r}; use one of {', '.join(ENGINES)}")
    return CenteredMatrix.from_matrix(X) if engine == "kernel" else np.asarray(X, dtype=np.float64)


def cross_validated_scores(
    X: np.ndarray, y: np.ndarray, splits: Iterable[Split], spec: ModelSpec, *,
    engine: str = "kernel", n_jobs: int = 1,
) -> list[FoldScores]:
    """Fit ``spec`` on each split's training rows and score its test rows (y: 0/1)."""
    data = _prepare(X, engine)
    split_list = list(splits)
    scores = Parallel(n_jobs=n_jobs)(
        delayed(_score_rows)(data, y, split.train, split.test, spec, engine) for split in split_list
    )
    return [FoldScores(split, s) for split, s in zip(split_list, scores, strict=True)]


def cross_validated_target_scores(
    X: np.ndarray, targets: Sequence[np.ndarray], splits: Iterable[Split], spec: ModelSpec, *,
    engine: str = "kernel", n_jobs: int = 1,
) -> list[list[FoldScores]]:
    """Like :func:`cross_validated_scores` for several 0/1 targets on the same splits; returns [target][split].

    The kernel engine builds each split's Gram matrix once for all targets.
    """
    data = _prepare(X, engine)
    split_list = list(splits)
    per_split = Parallel(n_jobs=n_jobs)(
        delayed(_score_rows_targets)(data, targets, split.train, split.test, spec, engine) for split in split_list
    )
    return [
        [FoldScores(split, scores[index]) for split, scores in zip(split_list, per_split, strict=True)]
        for index in range(len(targets))
    ]


@dataclass
class BinaryResult:
    """Cross-validation result of one binary task: per-fold scores plus their summaries."""

    dataset: Dataset
    spec: ModelSpec
    folds: list[FoldScores]
    threshold: float
    elapsed_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)


def summarize_binary(
    dataset: Dataset, folds: Sequence[FoldScores], spec: ModelSpec, *, threshold: float,
    bootstrap_resamples: int = 1000, seed: int = 0,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame], dict[str, Any]]:
    """Compute per-fold AUROC, mean ROC, threshold metrics, confusion matrices, calibration and CI.

    Pooled metrics (threshold table, calibration, bootstrap CI) use each
    sample's out-of-fold score averaged over repeats. Confusion matrices use
    ``threshold`` on each fold and are averaged over folds in percent of each true class.
    """
    y = dataset.y
    rows = []
    curves = []
    confusions = []
    for fold in folds:
        truth = y[fold.split.test]
        row: dict[str, Any] = {"repeat": fold.split.repeat, "fold": fold.split.fold, "name": fold.split.name,
                               "n_test": len(truth), "n_positive": int(truth.sum())}
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = metrics.anchored_roc(truth, fold.scores)
            row["auroc"] = metrics.trapezoid_auc(fpr, tpr)
            curves.append((fpr, tpr))
        else:
            row["auroc"] = np.nan
            log.warning("Repeat %d fold %d has one class in its test rows; its AUROC is undefined",
                        fold.split.repeat, fold.split.fold)
        predicted = (fold.scores >= threshold).astype(int)
        row["accuracy"] = float(np.mean(predicted == truth))
        confusions.append(metrics.confusion_percent(truth, predicted, n_classes=2))
        rows.append(row)
    fold_table = pd.DataFrame(rows)
    if not curves:
        raise InputError("No fold has both classes in its test rows; AUROC is undefined for this cohort")

    per_repeat = fold_table.groupby("repeat")["auroc"].mean()
    grid, mean_tpr, sd_tpr = metrics.mean_roc(curves)
    oof = out_of_fold_table(dataset, folds)
    per_sample = oof.groupby("row")["score"].mean()
    pooled_truth = y[per_sample.index.to_numpy()]
    pooled_scores = per_sample.to_numpy()
    threshold_table = metrics.threshold_metrics(pooled_truth, pooled_scores)
    best = metrics.best_accuracy_threshold(pooled_truth, pooled_scores)
    best_row = threshold_table.loc[threshold_table["threshold"] == best].iloc[0]
    at_threshold = metrics.threshold_metrics(pooled_truth, pooled_scores, np.array([threshold])).iloc[0]
    low, high = metrics.bootstrap_auroc_ci(pooled_truth, pooled_scores, resamples=bootstrap_resamples, seed=seed)
    confusion = metrics.mean_confusion_percent(confusions)

    summary: dict[str, Any] = {
        "score": score_kind(spec),
        "threshold": threshold,
        "folds": len(fold_table),
        "repeats": int(fold_table["repeat"].nunique()),
        "auroc_mean": float(fold_table["auroc"].mean()),
        "accuracy_mean": float(fold_table["accuracy"].mean()),
        "auroc_sd": float(fold_table["auroc"].std(ddof=1)) if fold_table["auroc"].count() > 1 else 0.0,
        "auroc_repeat_mean_sd": float(per_repeat.std(ddof=1)) if len(per_repeat) > 1 else 0.0,
        "mean_roc_auc": metrics.trapezoid_auc(grid, mean_tpr),
        "pooled_auroc": metrics.auroc(pooled_truth, pooled_scores),
        "pooled_auroc_ci95": [low, high],
        "bootstrap_resamples": bootstrap_resamples,
        "at_threshold": {k: float(at_threshold[k]) for k in ("accuracy", "precision", "recall", "f1")},
        "best_accuracy_threshold": best,
        "at_best_accuracy_threshold": {k: float(best_row[k]) for k in ("accuracy", "precision", "recall", "f1")},
        "confusion_percent": {"classes": list(dataset.classes), "rows_true_columns_predicted": confusion.tolist()},
    }
    tables = {
        "folds": fold_table,
        "out_of_fold": oof,
        "thresholds": threshold_table,
        "mean_roc": pd.DataFrame({"fpr": grid, "tpr_mean": mean_tpr, "tpr_sd": sd_tpr}),
        "confusion_percent": pd.DataFrame(confusion, index=list(dataset.classes), columns=list(dataset.classes)),
    }
    if spec.kind == "logistic":
        tables["calibration"] = metrics.calibration(pooled_truth, pooled_scores)
    return summary, tables, {"folds": curves, "grid": grid, "mean": mean_tpr, "sd": sd_tpr}


def out_of_fold_table(dataset: Dataset, folds: Sequence[FoldScores], *, column: str = "score") -> pd.DataFrame:
    """Return one row per (split, test sample): sample, patient, center, label, class, repeat, fold, score."""
    frames = []
    for fold in folds:
        test = fold.split.test
        frames.append(pd.DataFrame({
            "row": test, "sample": dataset.samples[test], "patient": dataset.patients[test],
            "center": dataset.centers[test], "label": dataset.labels[test],
            "class": np.asarray(dataset.classes)[dataset.y[test]], "repeat": fold.split.repeat,
            "fold": fold.split.fold, "split": fold.split.name, column: fold.scores,
        }))
    return pd.concat(frames, ignore_index=True)


def evaluate_binary(
    dataset: Dataset, splits: Iterable[Split], spec: ModelSpec, *, engine: str = "kernel", n_jobs: int = 1,
    threshold: float | None = None, bootstrap_resamples: int = 1000, seed: int = 0,
) -> BinaryResult:
    """Cross-validate a binary task and summarize it."""
    if len(dataset.classes) != 2:
        raise InputError(f"evaluate_binary needs two classes, got {list(dataset.classes)}")
    started = time.perf_counter()
    folds = cross_validated_scores(dataset.X, dataset.y, splits, spec, engine=engine, n_jobs=n_jobs)
    elapsed = time.perf_counter() - started
    threshold = default_threshold(spec) if threshold is None else threshold
    summary, tables, curves = summarize_binary(dataset, folds, spec, threshold=threshold,
                                               bootstrap_resamples=bootstrap_resamples, seed=seed)
    summary["cross_validation_seconds"] = elapsed
    summary["engine"] = engine
    log.info("AUROC %.3f +- %.3f over %d folds (%s engine, %.1f s)", summary["auroc_mean"], summary["auroc_sd"],
             summary["folds"], engine, elapsed)
    return BinaryResult(dataset, spec, folds, threshold, elapsed, summary, tables, curves)


def check_compatible(train: Dataset, test: Dataset) -> None:
    """Raise InputError unless ``test`` has the feature names and classes of ``train``."""
    if train.feature_names != test.feature_names:
        raise InputError(f"Feature names of {test.source} differ from those of {train.source}; "
                         "build both cohorts with the same backbones, scales and percentiles")
    if train.classes != test.classes:
        raise InputError(f"Classes of {test.source} {list(test.classes)} differ from {list(train.classes)}")


def external_split(n_samples: int) -> Split:
    """Return the single split of external validation: no training rows, every row of the test cohort."""
    return Split(repeat=0, fold=0, train=np.array([], dtype=np.int64), test=np.arange(n_samples), name="external")


def external_validation(
    train: Dataset, test: Dataset, spec: ModelSpec, *, threshold: float | None = None,
    bootstrap_resamples: int = 1000, seed: int = 0,
) -> BinaryResult:
    """Fit on all of ``train`` and score ``test`` with the untuned threshold (no tuning on ``test``).

    The two cohorts must have the same feature names and classes. The result
    has a single "fold" (repeat 0, fold 0, named ``external``) whose rows index ``test``.
    """
    check_compatible(train, test)
    started = time.perf_counter()
    pipeline = build_pipeline(spec).fit(train.X, train.y)
    scores = positive_scores(pipeline, test.X)
    elapsed = time.perf_counter() - started
    folds = [FoldScores(external_split(test.n_samples), scores)]
    threshold = default_threshold(spec) if threshold is None else threshold
    summary, tables, curves = summarize_binary(test, folds, spec, threshold=threshold,
                                               bootstrap_resamples=bootstrap_resamples, seed=seed)
    summary["training_cohort"] = train.summary()
    summary["fit_seconds"] = elapsed
    return BinaryResult(test, spec, folds, threshold, elapsed, summary, tables, curves)
