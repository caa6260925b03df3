"""One call for a whole classification run: the function behind ``samplerflow classify``.

:func:`classify_cohort` is called by the command line, by the backbone and
scale grid (:mod:`samplerflow.classify.grid`) and, through the command line,
by pipeline modules, so all of them read the same inputs and write the same files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samplerflow.classify.choices import ENGINES, MODEL_KINDS, SPLITS
from samplerflow.errors import InputError

if TYPE_CHECKING:
    from samplerflow.classify.models import ModelSpec
    from samplerflow.classify.splits import Split
    from samplerflow.classify.task import Dataset, TaskSpec

log = logging.getLogger(__name__)


def check_options(*, model: str, split: str, external: Path | None, folds: int, repeats: int, engine: str,
                  jobs: int, bootstrap: int) -> None:
    """Raise InputError naming the first invalid option of :func:`classify_cohort`; fits nothing."""
    if model not in MODEL_KINDS:
        raise InputError(f"Invalid model {model!r}; use one of {', '.join(MODEL_KINDS)}")
    if split not in SPLITS:
        raise InputError(f"Invalid split {split!r}; use one of {', '.join(SPLITS)}")
    if engine not in ENGINES:
        raise InputError(f"Invalid engine {engine!r}; use one of {', '.join(ENGINES)}")
    if split == "external" and external is None:
        raise InputError("--split external needs --external COHORT.h5ad to test on")
    if split != "external" and external is not None:
        raise InputError(f"--external {external} is used only with --split external; add --split external or drop it")
    if folds < 2:
        raise InputError(f"Invalid folds={folds}: k-fold cross-validation needs 2 or more folds")
    if repeats < 1:
        raise InputError(f"Invalid repeats={repeats}: give 1 or more")
    if jobs == 0:
        raise InputError("Invalid jobs=0: give 1 or more parallel jobs, or -1 for one per core")
    if bootstrap < 1:
        raise InputError(f"Invalid bootstrap={bootstrap}: give 1 or more resamples")


def classify_cohort(
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
    split: str = "kfold",
    folds: int = 5,
    repeats: int = 100,
    seed: int = 0,
    external: Path | None = None,
    engine: str = "kernel",
    jobs: int = 1,
    bootstrap: int = 1000,
    bundle: bool = True,
) -> dict[str, Any]:
    """Evaluate a task on a cohort, write the report and the model bundle, and return the summary.

    Inputs:

    - ``cohort``: ``cohort.h5ad`` from ``samplerflow run`` or ``samplerflow
      cohort``. ``obs`` needs ``patient``, ``center`` and ``label``; ``var``
      needs ``backbone`` and ``scale``.
    - ``task``: task YAML file (binary, two_stage or ovr; see
      :mod:`samplerflow.classify.task`).
    - ``external``: a second ``cohort.h5ad``, required with
      ``split="external"`` and rejected otherwise.

    Outputs in ``outdir`` (each written to a temporary name, then renamed):

    - ``metrics.json``: task, model, split, seed, cohort summary and metrics
      (the returned dict);
    - ``folds.csv``, ``out_of_fold.csv``, ``mean_roc.csv``,
      ``confusion_percent.csv``, and for binary tasks ``thresholds.csv`` and
      (logistic) ``calibration.csv``;
    - ``roc.png``, ``confusion.png``, and for binary tasks ``thresholds.png``
      and (logistic) ``calibration.png``;
    - ``model/model.joblib`` and ``model/model_card.json`` unless
      ``bundle=False``: the task's models fitted on every sample of ``cohort``.

    Options:

    - ``model``: ``logistic`` or ``svm``; ``C``: the inverse L2 regularization
      strength; ``tol``: the solver tolerance (None: the model's default).
    - ``threshold``: the decision threshold on the score of binary and
      two-stage tasks (None: 0.5 for probabilities, 0 for SVM margins).
    - ``split``: ``kfold`` (``repeats`` x ``folds`` patient-grouped folds,
      repeat r seeded with ``seed + r``), ``center`` (leave one center out)
      or ``external``.
    - ``engine``: ``kernel`` or ``plain``; ``jobs``: joblib workers for folds;
      ``bootstrap``: resamples of the AUROC confidence interval (binary tasks).

    Invalid options raise :class:`~samplerflow.errors.InputError` before any
    model is fitted.
    """
    # Imported here so that importing this module (and the command line) does not load scikit-learn.
    from samplerflow.classify.bundle import save_bundle, train_bundle
    from samplerflow.classify.models import ModelSpec
    from samplerflow.classify.task import load_dataset, load_task

    check_options(model=model, split=split, external=external, folds=folds, repeats=repeats, engine=engine,
                   jobs=jobs, bootstrap=bootstrap)
    outdir = Path(outdir)
    task_spec = load_task(task)
    if task_spec.kind == "ovr" and threshold is not None:
        raise InputError(f"Task {task_spec.name!r} is one-vs-rest: set per-class 'thresholds' in {task}, "
                         "not --threshold")
    spec = ModelSpec(kind=model, C=C, class_weight=class_weight, random_state=seed, max_iter=max_iter, tol=tol)
    dataset = load_dataset(cohort, task_spec)
    header: dict[str, Any] = {"task": task_spec.as_dict(), "model": spec.as_dict(), "split": split, "seed": seed}
    log.info("Task %s (%s): %d samples, %d features, classes %s", task_spec.name, task_spec.kind,
             dataset.n_samples, len(dataset.feature_names), list(dataset.classes))

    if split == "external":
        assert external is not None
        test = load_dataset(external, task_spec)
        header["cohort"] = test.summary()
        summary, tables, curves, plot_threshold = _external(dataset, test, task_spec, spec, threshold=threshold,
                                                            bootstrap=bootstrap, seed=seed)
    else:
        header["cohort"] = dataset.summary()
        splits = _splits(dataset, split=split, folds=folds, repeats=repeats, seed=seed)
        summary, tables, curves, plot_threshold = _cross_validate(
            dataset, task_spec, spec, splits, threshold=threshold, engine=engine, jobs=jobs,
            bootstrap=bootstrap, seed=seed,
        )

    summary = {**header, **summary}
    if bundle:
        summary["bundle"] = "model"
    from samplerflow.classify.report import write_report

    write_report(outdir, summary=summary, tables=tables, curves=curves, title=f"{task_spec.name} ({model})",
                 threshold=plot_threshold)
    if bundle:
        save_bundle(train_bundle(dataset, task_spec, spec, threshold=threshold), outdir / "model")
    return summary


def _splits(dataset: Dataset, *, split: str, folds: int, repeats: int, seed: int) -> list[Split]:
    from samplerflow.classify.splits import leave_one_center_out, repeated_grouped_kfold

    if split == "center":
        return list(leave_one_center_out(dataset.y, dataset.patients, dataset.centers))
    return list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=folds, repeats=repeats, seed=seed))


def _cross_validate(
    dataset: Dataset, task: TaskSpec, spec: ModelSpec, splits: list[Split], *, threshold: float | None, engine: str, jobs: int,
    bootstrap: int, seed: int,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], float | None]:
    """Return summary, tables, curves and the plotted threshold (binary only) of cross-validation."""
    from samplerflow.classify.evaluate import evaluate_binary
    from samplerflow.classify.multiclass import evaluate_ovr, evaluate_two_stage

    if task.kind == "binary":
        result = evaluate_binary(dataset, splits, spec, engine=engine, n_jobs=jobs, threshold=threshold,
                                 bootstrap_resamples=bootstrap, seed=seed)
        return result.summary, result.tables, result.curves, result.threshold
    if task.kind == "ovr":
        multi = evaluate_ovr(dataset, splits, spec, thresholds=task.thresholds, engine=engine, n_jobs=jobs)
    else:
        assert task.stage2 is not None and task.parent is not None
        multi = evaluate_two_stage(dataset, task.stage2, task.parent, splits, spec, threshold=threshold,
                                   engine=engine, n_jobs=jobs)
    return multi.summary, multi.tables, multi.curves, None


def _external(
    train: Dataset, test: Dataset, task: TaskSpec, spec: ModelSpec, *, threshold: float | None, bootstrap: int, seed: int,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], float | None]:
    """Return summary, tables, curves and the plotted threshold (binary only) of external validation."""
    from samplerflow.classify.evaluate import external_validation
    from samplerflow.classify.multiclass import (
        external_validation_ovr,
        external_validation_two_stage,
    )

    if task.kind == "binary":
        result = external_validation(train, test, spec, threshold=threshold, bootstrap_resamples=bootstrap, seed=seed)
        return result.summary, result.tables, result.curves, result.threshold
    if task.kind == "ovr":
        multi = external_validation_ovr(train, test, spec, thresholds=task.thresholds)
    else:
        assert task.stage2 is not None and task.parent is not None
        multi = external_validation_two_stage(train, test, task.stage2, task.parent, spec, threshold=threshold)
    return multi.summary, multi.tables, multi.curves, None
