"""Cross-validated scores and their summaries for binary, two-stage and one-vs-rest tasks.

Two engines give the same scores (see :mod:`samplerflow.classify.fast`):
``plain`` fits the scikit-learn Pipeline on each fold; ``kernel`` (default)
solves each fold from its Gram matrix. Folds run in parallel with joblib
(``n_jobs``); results do not depend on ``n_jobs``.
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
from samplerflow.classify.fast import CenteredMatrix, fit_score_fold
from samplerflow.classify.models import (
    ModelSpec,
    build_pipeline,
    default_threshold,
    positive_scores,
    score_kind,
)
from samplerflow.classify.splits import Split
from samplerflow.classify.task import ClassMap, Dataset
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


def external_validation(
    train: Dataset, test: Dataset, spec: ModelSpec, *, threshold: float | None = None,
    bootstrap_resamples: int = 1000, seed: int = 0,
) -> BinaryResult:
    """Fit on all of ``train`` and score ``test`` with the untuned threshold (no tuning on ``test``).

    The two cohorts must have the same feature names and classes. The result
    has a single "fold" (repeat 0, fold 0, named ``external``) whose rows index ``test``.
    """
    if train.feature_names != test.feature_names:
        raise InputError(f"Feature names of {test.source} differ from those of {train.source}; "
                         "build both cohorts with the same backbones, scales and percentiles")
    if train.classes != test.classes:
        raise InputError(f"Classes of {test.source} {list(test.classes)} differ from {list(train.classes)}")
    started = time.perf_counter()
    pipeline = build_pipeline(spec).fit(train.X, train.y)
    scores = positive_scores(pipeline, test.X)
    elapsed = time.perf_counter() - started
    split = Split(repeat=0, fold=0, train=np.array([], dtype=np.int64), test=np.arange(test.n_samples), name="external")
    folds = [FoldScores(split, scores)]
    threshold = default_threshold(spec) if threshold is None else threshold
    summary, tables, curves = summarize_binary(test, folds, spec, threshold=threshold,
                                               bootstrap_resamples=bootstrap_resamples, seed=seed)
    summary["training_cohort"] = train.summary()
    summary["fit_seconds"] = elapsed
    return BinaryResult(test, spec, folds, threshold, elapsed, summary, tables, curves)


# --- one-vs-rest ------------------------------------------------------------


@dataclass
class MulticlassResult:
    """Cross-validation result of a one-vs-rest or two-stage task."""

    dataset: Dataset
    classes: tuple[str, ...]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    curves: dict[str, Any]


def ovr_predict(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Return argmax over classes of (score - per-class threshold) for a samples x classes score matrix."""
    return np.argmax(scores - thresholds[None, :], axis=1)


def evaluate_ovr(
    dataset: Dataset, splits: Iterable[Split], spec: ModelSpec, *, thresholds: dict[str, float] | None = None,
    engine: str = "kernel", n_jobs: int = 1,
) -> MulticlassResult:
    """Cross-validate one binary model per class (class vs rest); predict the argmax of thresholded scores.

    Per-class thresholds default to the model's untuned threshold, so the
    default prediction is the plain argmax.
    """
    split_list = list(splits)
    n_classes = len(dataset.classes)
    offsets = np.array([(thresholds or {}).get(name, default_threshold(spec)) for name in dataset.classes])
    per_class: list[list[FoldScores]] = []
    for index in range(n_classes):
        binary_y = (dataset.y == index).astype(np.int64)
        per_class.append(cross_validated_scores(dataset.X, binary_y, split_list, spec, engine=engine, n_jobs=n_jobs))

    fold_rows = []
    confusions = []
    class_curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in dataset.classes}
    oof_frames = []
    for position, split in enumerate(split_list):
        truth = dataset.y[split.test]
        score_matrix = np.column_stack([per_class[c][position].scores for c in range(n_classes)])
        predicted = ovr_predict(score_matrix, offsets)
        confusions.append(metrics.confusion_percent(truth, predicted, n_classes=n_classes))
        row: dict[str, Any] = {"repeat": split.repeat, "fold": split.fold, "accuracy": float(np.mean(predicted == truth))}
        for c, name in enumerate(dataset.classes):
            is_class = (truth == c).astype(int)
            if 0 < is_class.sum() < len(is_class):
                fpr, tpr, _ = metrics.anchored_roc(is_class, score_matrix[:, c])
                row[f"auroc_{name}"] = metrics.trapezoid_auc(fpr, tpr)
                class_curves[name].append((fpr, tpr))
            else:
                row[f"auroc_{name}"] = np.nan
        fold_rows.append(row)
        frame = out_of_fold_table(dataset, [FoldScores(split, score_matrix[:, 0])], column=f"score_{dataset.classes[0]}")
        for c in range(1, n_classes):
            frame[f"score_{dataset.classes[c]}"] = score_matrix[:, c]
        frame["predicted"] = np.asarray(dataset.classes)[predicted]
        oof_frames.append(frame)

    fold_table = pd.DataFrame(fold_rows)
    confusion = metrics.mean_confusion_percent(confusions)
    curves: dict[str, Any] = {}
    per_class_summary = {}
    mean_roc_frames = []
    for name in dataset.classes:
        if not class_curves[name]:
            continue
        grid, mean_tpr, sd_tpr = metrics.mean_roc(class_curves[name])
        curves[name] = {"folds": class_curves[name], "grid": grid, "mean": mean_tpr, "sd": sd_tpr}
        column = fold_table[f"auroc_{name}"]
        per_class_summary[name] = {"auroc_mean": float(column.mean()),
                                   "auroc_sd": float(column.std(ddof=1)) if column.count() > 1 else 0.0}
        mean_roc_frames.append(pd.DataFrame({"class": name, "fpr": grid, "tpr_mean": mean_tpr, "tpr_sd": sd_tpr}))
    summary = {
        "score": score_kind(spec),
        "thresholds": dict(zip(dataset.classes, offsets.tolist(), strict=True)),
        "folds": len(split_list),
        "accuracy_mean": float(fold_table["accuracy"].mean()),
        "per_class": per_class_summary,
        "confusion_percent": {"classes": list(dataset.classes), "rows_true_columns_predicted": confusion.tolist()},
    }
    tables = {
        "folds": fold_table,
        "out_of_fold": pd.concat(oof_frames, ignore_index=True),
        "mean_roc": pd.concat(mean_roc_frames, ignore_index=True),
        "confusion_percent": pd.DataFrame(confusion, index=list(dataset.classes), columns=list(dataset.classes)),
    }
    return MulticlassResult(dataset, dataset.classes, summary, tables, curves)


# --- two-stage ----------------------------------------------------------------


def evaluate_two_stage(
    dataset: Dataset, stage2: ClassMap, parent: str, splits: Iterable[Split], spec: ModelSpec, *,
    engine: str = "kernel", n_jobs: int = 1,
) -> MulticlassResult:
    """Cross-validate a two-stage task and return the combined confusion matrix over the final classes.

    ``dataset`` carries the stage-1 classes (positive = 1). On each split,
    stage 1 is fitted on all training rows; stage 2 on the training rows of the
    ``parent`` class that stage 2 covers. Test rows predicted as ``parent``
    (score below the untuned threshold when ``parent`` is the negative class)
    go to stage 2. Final classes: the stage-1 classes other than ``parent``,
    then the stage-2 classes. Parent rows whose label stage 2 does not cover
    are left out of stage-2 training and of the combined matrix (counted in the summary).
    """
    split_list = list(splits)
    threshold = default_threshold(spec)
    parent_index = dataset.classes.index(parent)
    stage2_assigned = np.array(
        [a if (cls == parent_index and a is not None) else None
         for a, cls in zip(stage2.assign(dataset.labels.tolist()), dataset.y, strict=True)],
        dtype=object,
    )
    stage2_classes = (next(n for n in stage2.names if n != stage2.positive), stage2.positive)
    stage2_y = np.array([stage2_classes.index(a) if a is not None else -1 for a in stage2_assigned])
    final_classes = tuple(n for n in dataset.classes if n != parent) + stage2_classes
    final_true = np.array([
        final_classes.index(dataset.classes[cls]) if cls != parent_index
        else (final_classes.index(stage2_classes[s2]) if s2 >= 0 else -1)
        for cls, s2 in zip(dataset.y, stage2_y, strict=True)
    ])
    uncovered = int(np.sum(final_true < 0))
    if uncovered:
        log.info("%d samples of class %s have labels stage 2 does not cover; left out of the combined matrix",
                 uncovered, parent)

    data = _prepare(dataset.X, engine)
    stage1_scores = Parallel(n_jobs=n_jobs)(
        delayed(_score_rows)(data, dataset.y, s.train, s.test, spec, engine) for s in split_list
    )
    stage2_trains = [s.train[stage2_y[s.train] >= 0] for s in split_list]
    for split, train in zip(split_list, stage2_trains, strict=True):
        if len(np.unique(stage2_y[train])) < 2:
            raise InputError(f"Repeat {split.repeat} fold {split.fold}: stage-2 training rows contain one class; "
                             "use fewer folds or more samples of each stage-2 class")
    stage2_scores = Parallel(n_jobs=n_jobs)(
        delayed(_score_rows)(data, stage2_y, train, s.test, spec, engine)
        for s, train in zip(split_list, stage2_trains, strict=True)
    )

    confusions = []
    rows = []
    oof_frames = []
    stage_curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"stage1": [], "stage2": []}
    for split, s1, s2 in zip(split_list, stage1_scores, stage2_scores, strict=True):
        stage1_pred = (s1 >= threshold).astype(int)
        stage2_pred = (s2 >= threshold).astype(int)
        final_pred = np.where(
            stage1_pred == parent_index,
            np.array([final_classes.index(stage2_classes[p]) for p in stage2_pred]),
            np.array([final_classes.index(dataset.classes[p]) if p != parent_index else -1 for p in stage1_pred]),
        )
        truth = final_true[split.test]
        covered = truth >= 0
        confusions.append(metrics.confusion_percent(truth[covered], final_pred[covered], n_classes=len(final_classes)))
        row: dict[str, Any] = {"repeat": split.repeat, "fold": split.fold,
                               "accuracy": float(np.mean(final_pred[covered] == truth[covered]))}
        y1 = dataset.y[split.test]
        if 0 < y1.sum() < len(y1):
            fpr, tpr, _ = metrics.anchored_roc(y1, s1)
            row["auroc_stage1"] = metrics.trapezoid_auc(fpr, tpr)
            stage_curves["stage1"].append((fpr, tpr))
        y2 = stage2_y[split.test]
        in_stage2 = y2 >= 0
        if in_stage2.any() and 0 < y2[in_stage2].sum() < in_stage2.sum():
            fpr, tpr, _ = metrics.anchored_roc(y2[in_stage2], s2[in_stage2])
            row["auroc_stage2"] = metrics.trapezoid_auc(fpr, tpr)
            stage_curves["stage2"].append((fpr, tpr))
        rows.append(row)
        frame = out_of_fold_table(dataset, [FoldScores(split, s1)], column="score_stage1")
        frame["score_stage2"] = s2
        frame["predicted"] = [final_classes[p] if p >= 0 else "" for p in final_pred]
        frame["final_class"] = [final_classes[t] if t >= 0 else "" for t in truth]
        oof_frames.append(frame)

    fold_table = pd.DataFrame(rows)
    confusion = metrics.mean_confusion_percent(confusions)
    curves = {}
    mean_roc_frames = []
    for stage, stage_list in stage_curves.items():
        if stage_list:
            grid, mean_tpr, sd_tpr = metrics.mean_roc(stage_list)
            curves[stage] = {"folds": stage_list, "grid": grid, "mean": mean_tpr, "sd": sd_tpr}
            mean_roc_frames.append(pd.DataFrame({"class": stage, "fpr": grid, "tpr_mean": mean_tpr, "tpr_sd": sd_tpr}))
    summary = {
        "score": score_kind(spec),
        "threshold": threshold,
        "folds": len(split_list),
        "stage1_classes": list(dataset.classes),
        "stage2_classes": list(stage2_classes),
        "final_classes": list(final_classes),
        "uncovered_parent_samples": uncovered,
        "accuracy_mean": float(fold_table["accuracy"].mean()),
        "per_stage": {
            stage: {"auroc_mean": float(fold_table[f"auroc_{stage}"].mean()),
                    "auroc_sd": float(fold_table[f"auroc_{stage}"].std(ddof=1))}
            for stage in ("stage1", "stage2") if f"auroc_{stage}" in fold_table
        },
        "confusion_percent": {"classes": list(final_classes), "rows_true_columns_predicted": confusion.tolist()},
    }
    tables = {
        "folds": fold_table,
        "out_of_fold": pd.concat(oof_frames, ignore_index=True),
        "mean_roc": pd.concat(mean_roc_frames, ignore_index=True) if mean_roc_frames else pd.DataFrame(),
        "confusion_percent": pd.DataFrame(confusion, index=list(final_classes), columns=list(final_classes)),
    }
    return MulticlassResult(dataset, final_classes, summary, tables, curves)
