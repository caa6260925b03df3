"""Evaluation metrics for scores of a binary classifier.

Conventions: ``y_true`` contains 0/1 with 1 the positive class; ``scores`` are
higher for the positive class (probabilities or SVM margins); a sample is
predicted positive when its score is >= the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.calibration import calibration_curve as sklearn_calibration_curve
from sklearn.metrics import confusion_matrix

MEAN_ROC_POINTS = 100


def anchored_roc(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return FPR, TPR and thresholds of the ROC curve, starting at (0, 0) and ending at (1, 1).

    One point per distinct score, taken from the highest score down; ties
    move FPR and TPR together, which gives the diagonal segment that makes the
    trapezoid AUC equal to the Mann-Whitney AUROC. The first threshold is +inf.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = y_true.sum()
    negatives = len(y_true) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC needs both classes among the samples")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_truth = y_true[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    true_positives = np.cumsum(sorted_truth)[last_of_tie]
    false_positives = (last_of_tie + 1) - true_positives
    fpr = np.r_[0.0, false_positives / negatives]
    tpr = np.r_[0.0, true_positives / positives]
    thresholds = np.r_[np.inf, sorted_scores[last_of_tie]]
    return fpr, tpr, thresholds


def trapezoid_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Return the area under a curve given by points sorted by FPR, by the trapezoid rule."""
    return float(np.trapezoid(tpr, fpr))


def mean_roc(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], *, points: int = MEAN_ROC_POINTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average ROC curves on a common FPR grid.

    Each curve's TPR is linearly interpolated (``np.interp``) onto ``points``
    evenly spaced FPR values from 0 to 1, and its value at FPR 0 is set to 0
    (a curve that rises vertically at FPR 0 would otherwise start above 0).
    Anchored curves end at (1, 1), so the mean does too. Returns the grid,
    the mean TPR and its standard deviation over curves (ddof=0).
    """
    grid = np.linspace(0.0, 1.0, points)
    stacked = np.vstack([np.interp(grid, fpr, tpr) for fpr, tpr in curves])
    stacked[:, 0] = 0.0
    return grid, stacked.mean(axis=0), stacked.std(axis=0)


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Return the AUROC (trapezoid area under the anchored ROC)."""
    fpr, tpr, _ = anchored_roc(y_true, scores)
    return trapezoid_auc(fpr, tpr)


def threshold_metrics(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Return accuracy, precision, recall and F1 at each threshold (default: each distinct score).

    Precision is 0 where nothing is predicted positive (scikit-learn's
    ``zero_division=0``); so is F1 where precision and recall are both 0.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if thresholds is None:
        thresholds = np.unique(scores)
    predicted = scores[None, :] >= np.asarray(thresholds)[:, None]
    true_positives = (predicted & y_true).sum(axis=1)
    predicted_positives = predicted.sum(axis=1)
    positives = y_true.sum()
    correct = (predicted == y_true).sum(axis=1)
    precision = np.divide(true_positives, predicted_positives, out=np.zeros(len(thresholds)), where=predicted_positives > 0)
    recall = true_positives / positives if positives else np.zeros(len(thresholds))
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(len(thresholds)), where=denominator > 0)
    return pd.DataFrame({
        "threshold": thresholds, "accuracy": correct / len(y_true), "precision": precision,
        "recall": recall, "f1": f1,
    })


def best_accuracy_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Return the threshold with the highest accuracy (the lowest such threshold on ties)."""
    table = threshold_metrics(y_true, scores)
    return float(table["threshold"].iloc[int(np.argmax(table["accuracy"].to_numpy()))])


def confusion_percent(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Return the confusion matrix in percent of each true class (rows: true, columns: predicted).

    Rows of classes absent from ``y_true`` are NaN.
    """
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * counts / totals


def mean_confusion_percent(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """Average per-fold percent confusion matrices, ignoring folds where a true class is absent."""
    return np.nanmean(np.stack(matrices), axis=0)


def calibration(y_true: np.ndarray, probabilities: np.ndarray, *, bins: int = 10) -> pd.DataFrame:
    """Return the calibration curve (uniform bins): mean predicted probability and observed positive fraction."""
    observed, predicted = sklearn_calibration_curve(y_true, probabilities, n_bins=bins, strategy="uniform")
    return pd.DataFrame({"mean_predicted": predicted, "fraction_positive": observed})


def rank_auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Return AUROC as the Mann-Whitney statistic from average ranks (ties count one half)."""
    y_true = np.asarray(y_true).astype(bool)
    positives = int(y_true.sum())
    negatives = len(y_true) - positives
    ranks = rankdata(scores)
    return float((ranks[y_true].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def bootstrap_auroc_ci(
    y_true: np.ndarray, scores: np.ndarray, *, resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Return the percentile bootstrap confidence interval of AUROC, resampling samples with replacement.

    Resamples containing a single class are drawn again; the generator is
    ``numpy.random.default_rng(seed)``.
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    attempts = 0
    while len(values) < resamples:
        attempts += 1
        if attempts > 20 * resamples:
            raise ValueError("Bootstrap resamples keep containing a single class; too few samples of one class")
        index = rng.integers(0, len(y_true), len(y_true))
        if y_true[index].min() == y_true[index].max():
            continue
        values.append(rank_auroc(y_true[index], scores[index]))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)
