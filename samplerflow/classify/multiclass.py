"""One-vs-rest and two-stage tasks: final models, cross-validation and external validation.

One-vs-rest (OvR): one binary model per class (that class against the rest).
A sample's predicted class is the argmax of its per-class scores minus
per-class thresholds.

Two-stage: stage 1 separates its two classes. Samples that stage 1 predicts
as its ``parent`` class go to stage 2, which splits that class in two. The
final classes are the stage-1 classes other than ``parent``, then the stage-2
classes (negative first).

Both kinds report a confusion matrix over the final classes and ROC curves
per class (OvR) or per stage (two-stage). Cross-validation and external
validation share the summaries; external validation is a single split named
``external`` whose test rows are the other cohort.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.pipeline import Pipeline

from samplerflow.classify import metrics
from samplerflow.classify.evaluate import (
    FoldScores,
    _prepare,
    _score_rows,
    check_compatible,
    cross_validated_target_scores,
    external_split,
    out_of_fold_table,
)
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


@dataclass
class MulticlassResult:
    """Cross-validation or external-validation result of a one-vs-rest or two-stage task."""

    dataset: Dataset
    classes: tuple[str, ...]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    curves: dict[str, Any]


def _sd(column: pd.Series) -> float:
    return float(column.std(ddof=1)) if column.count() > 1 else 0.0


# --- one-vs-rest ------------------------------------------------------------


def ovr_predict(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Return argmax over classes of (score - per-class threshold) for a samples x classes score matrix."""
    return np.argmax(scores - thresholds[None, :], axis=1)


def ovr_thresholds(classes: Sequence[str], spec: ModelSpec, thresholds: dict[str, float] | None) -> np.ndarray:
    """Return each class's threshold: the task's value, else the model's untuned threshold."""
    return np.array([(thresholds or {}).get(name, default_threshold(spec)) for name in classes], dtype=np.float64)


def fit_ovr_models(dataset: Dataset, spec: ModelSpec) -> dict[str, Pipeline]:
    """Fit one Pipeline per class (class = 1, rest = 0) on every sample; keys are the class names in order."""
    return {
        name: build_pipeline(spec).fit(dataset.X, (dataset.y == index).astype(np.int64))
        for index, name in enumerate(dataset.classes)
    }


def ovr_score_matrix(models: dict[str, Pipeline], X: np.ndarray) -> np.ndarray:
    """Return the samples x classes matrix of per-class scores, columns in the models' order."""
    return np.column_stack([positive_scores(model, X) for model in models.values()])


def summarize_ovr(
    dataset: Dataset, split_list: Sequence[Split], score_matrices: Sequence[np.ndarray], spec: ModelSpec,
    offsets: np.ndarray,
) -> MulticlassResult:
    """Summarize per-split score matrices (rows: the split's test rows) into metrics, tables and curves."""
    n_classes = len(dataset.classes)
    fold_rows = []
    confusions = []
    class_curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in dataset.classes}
    oof_frames = []
    for split, score_matrix in zip(split_list, score_matrices, strict=True):
        truth = dataset.y[split.test]
        predicted = ovr_predict(score_matrix, offsets)
        confusions.append(metrics.confusion_percent(truth, predicted, n_classes=n_classes))
        row: dict[str, Any] = {"repeat": split.repeat, "fold": split.fold, "name": split.name,
                               "accuracy": float(np.mean(predicted == truth))}
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
        per_class_summary[name] = {"auroc_mean": float(column.mean()), "auroc_sd": _sd(column)}
        mean_roc_frames.append(pd.DataFrame({"class": name, "fpr": grid, "tpr_mean": mean_tpr, "tpr_sd": sd_tpr}))
    summary = {
        "score": score_kind(spec),
        "thresholds": dict(zip(dataset.classes, offsets.tolist(), strict=True)),
        "folds": len(split_list),
        "repeats": int(fold_table["repeat"].nunique()),
        "accuracy_mean": float(fold_table["accuracy"].mean()),
        "auroc_macro_mean": float(np.mean([v["auroc_mean"] for v in per_class_summary.values()])),
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
    offsets = ovr_thresholds(dataset.classes, spec, thresholds)
    started = time.perf_counter()
    targets = [(dataset.y == index).astype(np.int64) for index in range(n_classes)]
    per_class = cross_validated_target_scores(dataset.X, targets, split_list, spec, engine=engine, n_jobs=n_jobs)
    elapsed = time.perf_counter() - started
    score_matrices = [
        np.column_stack([per_class[c][position].scores for c in range(n_classes)]) for position in range(len(split_list))
    ]
    result = summarize_ovr(dataset, split_list, score_matrices, spec, offsets)
    result.summary["cross_validation_seconds"] = elapsed
    result.summary["engine"] = engine
    log.info("OvR macro-mean AUROC %.3f, accuracy %.3f over %d folds (%s engine, %.1f s)",
             result.summary["auroc_macro_mean"], result.summary["accuracy_mean"], len(split_list), engine, elapsed)
    return result


def external_validation_ovr(
    train: Dataset, test: Dataset, spec: ModelSpec, *, thresholds: dict[str, float] | None = None,
) -> MulticlassResult:
    """Fit the per-class models on all of ``train`` and predict ``test`` with the task's thresholds (no tuning)."""
    check_compatible(train, test)
    started = time.perf_counter()
    models = fit_ovr_models(train, spec)
    scores = ovr_score_matrix(models, test.X)
    elapsed = time.perf_counter() - started
    result = summarize_ovr(test, [external_split(test.n_samples)], [scores], spec,
                           ovr_thresholds(test.classes, spec, thresholds))
    result.summary["training_cohort"] = train.summary()
    result.summary["fit_seconds"] = elapsed
    return result


# --- two-stage ----------------------------------------------------------------


@dataclass(frozen=True)
class TwoStageTargets:
    """Stage-2 and final classes of each row of a stage-1 dataset.

    ``stage2_y`` is 0/1 (1 = stage-2 positive class) for rows of the parent
    class whose label stage 2 covers, else -1. ``final_true`` indexes
    ``final_classes``, or is -1 for parent rows that stage 2 does not cover.
    """

    parent_index: int
    stage2_classes: tuple[str, str]
    stage2_y: np.ndarray
    final_classes: tuple[str, ...]
    final_true: np.ndarray

    @property
    def uncovered(self) -> int:
        return int(np.sum(self.final_true < 0))

    def final_predictions(self, stage1_classes: Sequence[str], stage1_pred: np.ndarray,
                          stage2_pred: np.ndarray) -> np.ndarray:
        """Combine 0/1 stage predictions into indices of ``final_classes`` (see :func:`combine_stages`)."""
        return combine_stages(stage1_classes, stage1_classes[self.parent_index], self.stage2_classes,
                              self.final_classes, stage1_pred, stage2_pred)


def combine_stages(
    stage1_classes: Sequence[str], parent: str, stage2_classes: Sequence[str], final_classes: Sequence[str],
    stage1_pred: np.ndarray, stage2_pred: np.ndarray,
) -> np.ndarray:
    """Return final-class indices from 0/1 stage predictions; stage 2 decides where stage 1 predicts ``parent``."""
    final = list(final_classes)
    stage1_to_final = np.array([final.index(name) if name != parent else -1 for name in stage1_classes])
    stage2_to_final = np.array([final.index(name) for name in stage2_classes])
    parent_index = list(stage1_classes).index(parent)
    return np.where(stage1_pred == parent_index, stage2_to_final[stage2_pred], stage1_to_final[stage1_pred])


def stage2_class_order(stage2: ClassMap) -> tuple[str, str]:
    """Return the stage-2 classes as (negative, positive)."""
    negative = next(name for name in stage2.names if name != stage2.positive)
    assert stage2.positive is not None
    return negative, stage2.positive


def two_stage_targets(dataset: Dataset, stage2: ClassMap, parent: str) -> TwoStageTargets:
    """Map each row of a stage-1 dataset to its stage-2 class and final class."""
    parent_index = dataset.classes.index(parent)
    stage2_assigned = np.array(
        [a if (cls == parent_index and a is not None) else None
         for a, cls in zip(stage2.assign(dataset.labels.tolist()), dataset.y, strict=True)],
        dtype=object,
    )
    stage2_classes = stage2_class_order(stage2)
    stage2_y = np.array([stage2_classes.index(a) if a is not None else -1 for a in stage2_assigned], dtype=np.int64)
    final_classes = tuple(n for n in dataset.classes if n != parent) + stage2_classes
    final_true = np.array([
        final_classes.index(dataset.classes[cls]) if cls != parent_index
        else (final_classes.index(stage2_classes[s2]) if s2 >= 0 else -1)
        for cls, s2 in zip(dataset.y, stage2_y, strict=True)
    ], dtype=np.int64)
    targets = TwoStageTargets(parent_index, stage2_classes, stage2_y, final_classes, final_true)
    if targets.uncovered:
        log.info("%s: %d samples of class %s have labels stage 2 does not cover; left out of the combined matrix",
                 dataset.source, targets.uncovered, parent)
    return targets


def _stage2_rows(targets: TwoStageTargets, rows: np.ndarray, *, where: str) -> np.ndarray:
    """Return the rows that train stage 2; raise when they contain one stage-2 class."""
    stage2_rows = rows[targets.stage2_y[rows] >= 0]
    if len(np.unique(targets.stage2_y[stage2_rows])) < 2:
        raise InputError(f"{where}: stage-2 training rows contain one class; "
                         "use fewer folds or more samples of each stage-2 class")
    return stage2_rows


def fit_two_stage_models(dataset: Dataset, targets: TwoStageTargets, spec: ModelSpec) -> dict[str, Pipeline]:
    """Fit stage 1 on every sample and stage 2 on the parent-class samples it covers."""
    rows = _stage2_rows(targets, np.arange(dataset.n_samples), where=dataset.source)
    return {
        "stage1": build_pipeline(spec).fit(dataset.X, dataset.y),
        "stage2": build_pipeline(spec).fit(dataset.X[rows], targets.stage2_y[rows]),
    }


def summarize_two_stage(
    dataset: Dataset, targets: TwoStageTargets, split_list: Sequence[Split], stage1_scores: Sequence[np.ndarray],
    stage2_scores: Sequence[np.ndarray], spec: ModelSpec, threshold: float,
) -> MulticlassResult:
    """Summarize per-split stage scores (both stages scored on every test row) into metrics, tables and curves."""
    final_classes = targets.final_classes
    stage2_y = targets.stage2_y
    confusions = []
    rows = []
    oof_frames = []
    stage_curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"stage1": [], "stage2": []}
    for split, s1, s2 in zip(split_list, stage1_scores, stage2_scores, strict=True):
        stage1_pred = (s1 >= threshold).astype(int)
        stage2_pred = (s2 >= threshold).astype(int)
        final_pred = targets.final_predictions(dataset.classes, stage1_pred, stage2_pred)
        truth = targets.final_true[split.test]
        covered = truth >= 0
        confusions.append(metrics.confusion_percent(truth[covered], final_pred[covered], n_classes=len(final_classes)))
        row: dict[str, Any] = {"repeat": split.repeat, "fold": split.fold, "name": split.name,
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
    per_stage = {
        stage: {"auroc_mean": float(fold_table[f"auroc_{stage}"].mean()), "auroc_sd": _sd(fold_table[f"auroc_{stage}"])}
        for stage in ("stage1", "stage2") if f"auroc_{stage}" in fold_table
    }
    summary = {
        "score": score_kind(spec),
        "threshold": threshold,
        "folds": len(split_list),
        "repeats": int(fold_table["repeat"].nunique()),
        "stage1_classes": list(dataset.classes),
        "stage2_classes": list(targets.stage2_classes),
        "final_classes": list(final_classes),
        "uncovered_parent_samples": targets.uncovered,
        "accuracy_mean": float(fold_table["accuracy"].mean()),
        "auroc_macro_mean": float(np.mean([v["auroc_mean"] for v in per_stage.values()])) if per_stage else float("nan"),
        "per_stage": per_stage,
        "confusion_percent": {"classes": list(final_classes), "rows_true_columns_predicted": confusion.tolist()},
    }
    tables = {
        "folds": fold_table,
        "out_of_fold": pd.concat(oof_frames, ignore_index=True),
        "mean_roc": pd.concat(mean_roc_frames, ignore_index=True) if mean_roc_frames else pd.DataFrame(),
        "confusion_percent": pd.DataFrame(confusion, index=list(final_classes), columns=list(final_classes)),
    }
    return MulticlassResult(dataset, final_classes, summary, tables, curves)


def evaluate_two_stage(
    dataset: Dataset, stage2: ClassMap, parent: str, splits: Iterable[Split], spec: ModelSpec, *,
    threshold: float | None = None, engine: str = "kernel", n_jobs: int = 1,
) -> MulticlassResult:
    """Cross-validate a two-stage task and return the combined confusion matrix over the final classes.

    ``dataset`` carries the stage-1 classes (positive = 1). On each split,
    stage 1 is fitted on all training rows; stage 2 on the training rows of the
    ``parent`` class that stage 2 covers. Test rows predicted as ``parent``
    (scored against ``threshold``, default the untuned one, in both stages)
    go to stage 2. Parent rows whose label stage 2 does not cover are left out
    of stage-2 training and of the combined matrix (counted in the summary).
    """
    split_list = list(splits)
    threshold = default_threshold(spec) if threshold is None else float(threshold)
    targets = two_stage_targets(dataset, stage2, parent)
    stage2_trains = [
        _stage2_rows(targets, s.train, where=f"Repeat {s.repeat} fold {s.fold}") for s in split_list
    ]
    started = time.perf_counter()
    data = _prepare(dataset.X, engine)
    stage1_scores = Parallel(n_jobs=n_jobs)(
        delayed(_score_rows)(data, dataset.y, s.train, s.test, spec, engine) for s in split_list
    )
    stage2_scores = Parallel(n_jobs=n_jobs)(
        delayed(_score_rows)(data, targets.stage2_y, train, s.test, spec, engine)
        for s, train in zip(split_list, stage2_trains, strict=True)
    )
    elapsed = time.perf_counter() - started
    result = summarize_two_stage(dataset, targets, split_list, stage1_scores, stage2_scores, spec, threshold)
    result.summary["cross_validation_seconds"] = elapsed
    result.summary["engine"] = engine
    log.info("Two-stage AUROC stage 1 %.3f, stage 2 %.3f, accuracy %.3f over %d folds (%s engine, %.1f s)",
             result.summary["per_stage"].get("stage1", {}).get("auroc_mean", np.nan),
             result.summary["per_stage"].get("stage2", {}).get("auroc_mean", np.nan),
             result.summary["accuracy_mean"], len(split_list), engine, elapsed)
    return result


def external_validation_two_stage(
    train: Dataset, test: Dataset, stage2: ClassMap, parent: str, spec: ModelSpec, *,
    threshold: float | None = None,
) -> MulticlassResult:
    """Fit both stages on all of ``train`` and predict ``test`` at ``threshold`` (default untuned; no tuning)."""
    check_compatible(train, test)
    threshold = default_threshold(spec) if threshold is None else float(threshold)
    started = time.perf_counter()
    models = fit_two_stage_models(train, two_stage_targets(train, stage2, parent), spec)
    stage1_scores = positive_scores(models["stage1"], test.X)
    stage2_scores = positive_scores(models["stage2"], test.X)
    elapsed = time.perf_counter() - started
    result = summarize_two_stage(test, two_stage_targets(test, stage2, parent), [external_split(test.n_samples)],
                                 [stage1_scores], [stage2_scores], spec, threshold)
    result.summary["training_cohort"] = train.summary()
    result.summary["fit_seconds"] = elapsed
    return result
