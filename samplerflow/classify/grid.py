"""Benchmark grid: rank backbones and fields of view, then validate the best configuration in full.

For each backbone of the cohort (or of the task's ``features``), the grid
tries every single scale (field of view) and every pair of scales, whose
SAMPLER values are concatenated. Each configuration gets the same fixed-seed
patient-grouped k-fold (one repeat). ``grid.csv`` ranks them by mean AUROC
over folds: the positive class's AUROC for binary tasks, the mean over
classes (one-vs-rest) or stages (two-stage) otherwise. The best configuration
then gets the repeated validation of :func:`~samplerflow.classify.run.classify_cohort`,
with its report and bundle in ``best/``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from samplerflow.errors import InputError
from samplerflow.io import atomic_path, write_text

if TYPE_CHECKING:
    from samplerflow.classify.models import ModelSpec
    from samplerflow.classify.splits import Split
    from samplerflow.classify.task import Dataset, FeatureSelection, TaskSpec

log = logging.getLogger(__name__)

BEST_FOLDER = "best"


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """One grid configuration: a backbone and one or two of its scales."""

    backbone: str
    scales: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.backbone} scale {'+'.join(str(s) for s in self.scales)}"


def grid_configs(var: pd.DataFrame, task: TaskSpec, *, source: str) -> list[GridConfig]:
    """Return every backbone x single scale and backbone x pair of scales, in backbone then scale order.

    With ``features`` in the task, only its backbones (and their listed
    scales) enter the grid; otherwise every backbone in ``var``.
    """
    backbones = var["backbone"].astype(str).to_numpy()
    scales = var["scale"].astype(int).to_numpy()
    if task.features:
        requested: list[tuple[str, tuple[int, ...] | None]] = [(f.backbone, f.scales) for f in task.features]
    else:
        requested = [(name, None) for name in sorted(set(backbones.tolist()))]
    configs = []
    for backbone, chosen in requested:
        available = sorted(set(scales[backbones == backbone].tolist()))
        if not available:
            raise InputError(f"{source}: backbone {backbone!r} not found; the cohort has {sorted(set(backbones))}")
        missing = sorted(set(chosen or ()) - set(available))
        if missing:
            raise InputError(f"{source}: backbone {backbone!r} has no scale {missing}; available scales are {available}")
        usable = sorted(chosen) if chosen else available
        configs += [GridConfig(backbone, (s,)) for s in usable]
        configs += [GridConfig(backbone, pair) for pair in itertools.combinations(usable, 2)]
    return configs


def ranking_auroc(summary: dict[str, Any], kind: str) -> float:
    """Return the AUROC that ranks configurations: binary mean AUROC, else the macro mean over classes or stages."""
    return float(summary["auroc_mean"] if kind == "binary" else summary["auroc_macro_mean"])


def _evaluate(dataset: Dataset, task: TaskSpec, spec: ModelSpec, splits: list[Split], *, threshold: float | None,
              engine: str, jobs: int, bootstrap: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Cross-validate one configuration; return its summary and the per-fold AUROC (macro mean for multiclass)."""
    from samplerflow.classify.evaluate import evaluate_binary
    from samplerflow.classify.multiclass import evaluate_ovr, evaluate_two_stage

    if task.kind == "binary":
        result = evaluate_binary(dataset, splits, spec, engine=engine, n_jobs=jobs, threshold=threshold,
                                 bootstrap_resamples=bootstrap, seed=seed)
        return result.summary, result.tables["folds"]["auroc"].to_numpy()
    if task.kind == "ovr":
        multi = evaluate_ovr(dataset, splits, spec, thresholds=task.thresholds, engine=engine, n_jobs=jobs)
    else:
        assert task.stage2 is not None and task.parent is not None
        multi = evaluate_two_stage(dataset, task.stage2, task.parent, splits, spec, threshold=threshold,
                                   engine=engine, n_jobs=jobs)
    folds = multi.tables["folds"]
    per_fold = folds[[c for c in folds.columns if c.startswith("auroc_")]].mean(axis=1, skipna=True)
    return multi.summary, per_fold.to_numpy()


def _selection(config: GridConfig) -> FeatureSelection:
    from samplerflow.classify.task import FeatureSelection

    return FeatureSelection(backbone=config.backbone, scales=config.scales)


def classify_grid(
    *,
    cohort: Path,
    task: Path,
    outdir: Path,
    model: str = "logistic",
    C: float = 1.0,
    class_weight: str | None = None,
    max_iter: int = 1000,
    tol: float | None = None,
    threshold: float | None = None,
    folds: int = 5,
    repeats: int = 100,
    seed: int = 0,
    engine: str = "kernel",
    jobs: int = 1,
    bootstrap: int = 1000,
    bundle: bool = True,
) -> dict[str, Any]:
    """Rank backbone and scale configurations, then validate the best one in full; return both results.

    Inputs: ``cohort.h5ad`` and the task YAML, as for
    :func:`~samplerflow.classify.run.classify_cohort`; the task's
    ``features`` (if any) limit the grid to its backbones and scales.

    Outputs in ``outdir``:

    - ``grid.csv``: one row per configuration, ranked: rank, backbone,
      scales (``1+2`` for a pair), features (SAMPLER values), auroc_mean
      (see :func:`ranking_auroc`), auroc_sd (over folds), accuracy_mean
      (over folds, at the untuned threshold), seconds (cross-validation);
    - ``best/task.yaml``: the task with the best configuration as its
      ``features``;
    - ``best/``: the full report of ``classify_cohort`` on that task with
      ``repeats`` x ``folds`` folds, and its model bundle unless ``bundle=False``.

    Every configuration uses the same splits: ``folds`` patient-grouped
    folds shuffled with ``seed``. Ties keep the grid order (backbone, then
    single scales, then pairs). Returns ``{"grid": [rows], "best": row,
    "best_summary": metrics of best/}``.
    """
    import anndata as ad

    from samplerflow.classify.models import ModelSpec
    from samplerflow.classify.run import check_options, classify_cohort
    from samplerflow.classify.splits import repeated_grouped_kfold
    from samplerflow.classify.task import load_dataset, load_task, select_features

    check_options(model=model, split="kfold", external=None, folds=folds, repeats=repeats, engine=engine,
                   jobs=jobs, bootstrap=bootstrap)
    outdir = Path(outdir)
    task_spec = load_task(task)
    if task_spec.kind == "ovr" and threshold is not None:
        raise InputError(f"Task {task_spec.name!r} is one-vs-rest: set per-class 'thresholds' in {task}, "
                         "not --threshold")
    cohort = Path(cohort)
    if not cohort.is_file():
        raise InputError(f"Cohort file not found: {cohort}; run `samplerflow run` or `samplerflow cohort` first")
    backed = ad.read_h5ad(cohort, backed="r")
    try:
        var = backed.var.copy()
    finally:
        backed.file.close()
    if not {"backbone", "scale"} <= set(var.columns):
        raise InputError(f"{cohort}: var lacks backbone or scale columns; rebuild the cohort with this samplerflow version")
    configs = grid_configs(var, task_spec, source=str(cohort))

    # One read of the cohort: every backbone and scale the grid needs, then columns by name per configuration.
    union = dataclasses.replace(task_spec, features=tuple(
        _selection(GridConfig(backbone, tuple(sorted({s for c in configs if c.backbone == backbone for s in c.scales}))))
        for backbone in dict.fromkeys(c.backbone for c in configs)
    ))
    dataset = load_dataset(cohort, union)
    column_of = {name: index for index, name in enumerate(dataset.feature_names)}
    spec = ModelSpec(kind=model, C=C, class_weight=class_weight, random_state=seed, max_iter=max_iter, tol=tol)
    splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=folds, repeats=1, seed=seed))
    log.info("Grid of %d configurations on %d samples, %d-fold (seed %d)", len(configs), dataset.n_samples, folds, seed)

    rows = []
    for config in tqdm(configs, desc="grid", unit="config"):
        names = var.index[select_features(var, [_selection(config)], source=str(cohort))].astype(str)
        columns = np.array([column_of[name] for name in names])
        subset = dataclasses.replace(dataset, X=np.ascontiguousarray(dataset.X[:, columns]), feature_names=tuple(names))
        started = time.perf_counter()
        summary, fold_aurocs = _evaluate(subset, task_spec, spec, splits, threshold=threshold, engine=engine,
                                         jobs=jobs, bootstrap=bootstrap, seed=seed)
        rows.append({
            "backbone": config.backbone, "scales": "+".join(str(s) for s in config.scales), "features": len(names),
            "auroc_mean": ranking_auroc(summary, task_spec.kind),
            "auroc_sd": float(np.nanstd(fold_aurocs, ddof=1)) if np.isfinite(fold_aurocs).sum() > 1 else 0.0,
            "accuracy_mean": float(summary["accuracy_mean"]), "seconds": time.perf_counter() - started,
        })
        log.info("%s: AUROC %.4f", config.name, rows[-1]["auroc_mean"])

    table = pd.DataFrame(rows)
    table = table.sort_values("auroc_mean", ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    with atomic_path(outdir / "grid.csv") as temporary:
        table.to_csv(temporary, index=False)
    best = table.iloc[0].to_dict()
    log.info("Best configuration: %s scale %s (AUROC %.4f); running %d x %d-fold validation in %s",
             best["backbone"], best["scales"], best["auroc_mean"], repeats, folds, outdir / BEST_FOLDER)

    best_task = task_spec.as_dict()
    best_task["features"] = [{"backbone": best["backbone"], "scales": [int(s) for s in str(best["scales"]).split("+")]}]
    best_task_path = outdir / BEST_FOLDER / "task.yaml"
    write_text(best_task_path, yaml.safe_dump(best_task, sort_keys=False))
    best_summary = classify_cohort(
        cohort=cohort, task=best_task_path, outdir=outdir / BEST_FOLDER, model=model, C=C, class_weight=class_weight,
        max_iter=max_iter, tol=tol, threshold=threshold, split="kfold", folds=folds, repeats=repeats, seed=seed,
        engine=engine, jobs=jobs, bootstrap=bootstrap, bundle=bundle,
    )
    return {"grid": table.to_dict(orient="records"), "best": best, "best_summary": best_summary}

