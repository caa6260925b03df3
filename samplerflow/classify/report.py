"""Write a classification result: metrics.json, CSV tables and PNG plots.

Files in the output folder (all written atomically):

- ``metrics.json``: task, model, cohort summary and the summary metrics;
- ``{table}.csv``: ``folds`` (per-fold AUROC), ``out_of_fold`` (one row per
  split and test sample), ``thresholds``, ``mean_roc``, ``confusion_percent``
  and ``calibration`` where computed;
- ``roc.png``, ``thresholds.png``, ``confusion.png``, ``calibration.png``
  where the data for them exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samplerflow.io import atomic_path, write_json

log = logging.getLogger(__name__)


def write_tables(outdir: Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write each table to ``outdir/{name}.csv``; confusion matrices keep their class index."""
    written = []
    for name, table in tables.items():
        path = outdir / f"{name}.csv"
        with atomic_path(path) as temporary:
            table.to_csv(temporary, index=name == "confusion_percent")
        written.append(path)
    return written


def _pyplot() -> Any:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")


def plot_roc(path: Path, curves: Mapping[str, Mapping[str, Any]], *, title: str) -> None:
    """Plot each named mean ROC curve with its +-1 SD band and the per-fold curves in light grey."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    for name, curve in curves.items():
        if len(curves) == 1:
            for fpr, tpr in curve["folds"][:200]:
                axes.plot(fpr, tpr, color="0.85", linewidth=0.5)
        area = float(np.trapezoid(curve["mean"], curve["grid"]))
        line = axes.plot(curve["grid"], curve["mean"], linewidth=2, label=f"{name} mean ROC (AUC {area:.3f})")[0]
        axes.fill_between(curve["grid"], np.clip(curve["mean"] - curve["sd"], 0, 1),
                          np.clip(curve["mean"] + curve["sd"], 0, 1), color=line.get_color(), alpha=0.2,
                          label=f"{name} +-1 SD")
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1)
    axes.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right", fontsize=8)
    _save(figure, path)
    plt.close(figure)


def plot_thresholds(path: Path, table: pd.DataFrame, *, threshold: float, title: str) -> None:
    """Plot accuracy, precision, recall and F1 against the decision threshold."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for column in ("accuracy", "precision", "recall", "f1"):
        axes.plot(table["threshold"], table[column], label=column)
    axes.axvline(threshold, color="0.4", linestyle=":", label=f"threshold {threshold:g}")
    axes.set(xlabel="Decision threshold on the score", ylabel="Value", title=title, ylim=(0, 1.02))
    axes.legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)


def plot_confusion(path: Path, table: pd.DataFrame, *, title: str) -> None:
    """Plot a percent confusion matrix (rows: true class, columns: predicted class)."""
    plt = _pyplot()
    size = 1.2 * len(table) + 2
    figure, axes = plt.subplots(figsize=(size, size))
    values = table.to_numpy(dtype=float)
    axes.imshow(values, cmap="Blues", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(values):
        axes.text(j, i, "n/a" if np.isnan(value) else f"{value:.1f}%", ha="center", va="center",
                  color="white" if value > 50 else "black")
    axes.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    axes.set_yticks(range(len(table.index)), table.index)
    axes.set(xlabel="Predicted class", ylabel="True class", title=title)
    _save(figure, path)
    plt.close(figure)


def plot_calibration(path: Path, table: pd.DataFrame, *, title: str) -> None:
    """Plot the calibration curve against the diagonal of perfect calibration."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1)
    axes.plot(table["mean_predicted"], table["fraction_positive"], marker="o")
    axes.set(xlabel="Mean predicted probability", ylabel="Fraction positive", title=title, xlim=(0, 1), ylim=(0, 1))
    _save(figure, path)
    plt.close(figure)


def write_report(
    outdir: str | Path, *, summary: Mapping[str, Any], tables: Mapping[str, pd.DataFrame],
    curves: Mapping[str, Any], title: str, threshold: float | None = None,
) -> Path:
    """Write metrics.json, the tables and the plots of one result; return the metrics.json path.

    ``curves`` is either one binary curve set (keys folds, grid, mean, sd) or
    a mapping of class or stage name to such sets.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    write_tables(outdir, tables)
    named = {"": curves} if "grid" in curves else dict(curves)
    if named:
        plot_roc(outdir / "roc.png", {k or "all folds": v for k, v in named.items()}, title=title)
    if "thresholds" in tables and threshold is not None:
        plot_thresholds(outdir / "thresholds.png", tables["thresholds"], threshold=threshold, title=title)
    if "confusion_percent" in tables:
        plot_confusion(outdir / "confusion.png", tables["confusion_percent"], title=title)
    if "calibration" in tables:
        plot_calibration(outdir / "calibration.png", tables["calibration"], title=title)
    path = outdir / "metrics.json"
    write_json(path, dict(summary))
    log.info("Wrote metrics, tables and plots to %s", outdir)
    return path
