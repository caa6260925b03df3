"""Command-line subcommands ``classify`` and ``predict``.

``samplerflow.cli`` registers them with :func:`add_subcommands` and runs
them with :func:`dispatch`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from samplerflow.classify.choices import ENGINES, MODEL_KINDS
from samplerflow.errors import InputError
from samplerflow.io import atomic_path

if TYPE_CHECKING:
    from samplerflow.classify.models import ModelSpec

log = logging.getLogger(__name__)

SPLITS = ("kfold", "center", "external")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``classify`` and ``predict`` on the main parser's subparsers."""
    classify = subparsers.add_parser("classify", help="cross-validate a classifier on cohort.h5ad and save a model bundle")
    classify.add_argument("--input", type=Path, required=True, help="cohort.h5ad to train and cross-validate on")
    classify.add_argument("--task", type=Path, required=True, help="task YAML: classes, positive class, feature sets")
    classify.add_argument("--outdir", type=Path, required=True, help="folder for metrics.json, CSV tables, plots and model/")
    model = classify.add_argument_group("model")
    model.add_argument("--model", choices=MODEL_KINDS, default="logistic", help="classifier (default: %(default)s)")
    model.add_argument("--C", type=float, default=1.0, help="inverse L2 regularization strength (default: %(default)s)")
    model.add_argument("--class-weight", choices=["balanced"], default=None, help="weight classes by inverse frequency")
    model.add_argument("--max-iter", type=int, default=1000, help="solver iteration limit for logistic regression (default: %(default)s)")
    model.add_argument("--threshold", type=float, default=None,
                       help="decision threshold on the score (default: 0.5 for logistic, 0 for svm)")
    splits = classify.add_argument_group("splits")
    splits.add_argument("--split", choices=SPLITS, default="kfold",
                        help="kfold: patient-grouped stratified k-fold; center: leave one center out; "
                             "external: train on --input, test on --external (default: %(default)s)")
    splits.add_argument("--folds", type=int, default=5, help="folds per repeat (default: %(default)s)")
    splits.add_argument("--repeats", type=int, default=100,
                        help="repeats of k-fold, repeat r seeded with seed + r; 1 = fixed-seed mode (default: %(default)s)")
    splits.add_argument("--seed", type=int, default=0, help="seed of splits, models and bootstrap (default: %(default)s)")
    splits.add_argument("--external", type=Path, default=None, help="cohort.h5ad to test on with --split external")
    run = classify.add_argument_group("run")
    run.add_argument("--engine", choices=ENGINES, default="kernel",
                     help="kernel: solve folds from the Gram matrix; plain: scikit-learn Pipeline per fold (default: %(default)s)")
    run.add_argument("--jobs", type=int, default=1, help="folds fitted in parallel (joblib n_jobs) (default: %(default)s)")
    run.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUROC CI (default: %(default)s)")
    run.add_argument("--no-bundle", action="store_true", help="skip fitting and saving the final model bundle")

    predict_parser = subparsers.add_parser("predict", help="score a cohort.h5ad with a saved model bundle")
    predict_parser.add_argument("--model", type=Path, required=True, help="bundle folder written by `samplerflow classify`")
    predict_parser.add_argument("--input", type=Path, required=True, help="cohort.h5ad to score")
    predict_parser.add_argument("--output", type=Path, required=True, help="CSV of per-sample scores and predictions")


def _spec(args: argparse.Namespace) -> ModelSpec:
    from samplerflow.classify.models import ModelSpec

    return ModelSpec(kind=args.model, C=args.C, class_weight=args.class_weight, random_state=args.seed,
                     max_iter=args.max_iter)


def run_classify(args: argparse.Namespace) -> int:
    """Cross-validate the task, write the report and (binary tasks) the model bundle."""
    # Imported here so that other subcommands start without scikit-learn.
    from samplerflow.classify.bundle import save_bundle, train_bundle
    from samplerflow.classify.evaluate import evaluate_binary, evaluate_ovr, evaluate_two_stage, external_validation
    from samplerflow.classify.report import write_report
    from samplerflow.classify.splits import leave_one_center_out, repeated_grouped_kfold
    from samplerflow.classify.task import load_dataset, load_task

    task = load_task(args.task)
    spec = _spec(args)
    dataset = load_dataset(args.input, task)
    title = f"{task.name} ({args.model})"
    if args.split == "external":
        if args.external is None:
            raise InputError("--split external needs --external COHORT.h5ad to test on")
        if task.kind != "binary":
            raise InputError(f"External validation supports binary tasks; task {task.name!r} is {task.kind}")
        test = load_dataset(args.external, task)
        result = external_validation(dataset, test, spec, threshold=args.threshold,
                                     bootstrap_resamples=args.bootstrap, seed=args.seed)
        summary = {"task": task.as_dict(), "model": spec.as_dict(), "split": "external",
                   "cohort": test.summary(), **result.summary}
        write_report(args.outdir, summary=summary, tables=result.tables, curves=result.curves, title=title,
                     threshold=result.threshold)
    else:
        if args.split == "center":
            splits = list(leave_one_center_out(dataset.y, dataset.patients, dataset.centers))
        else:
            splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=args.folds,
                                                 repeats=args.repeats, seed=args.seed))
        header = {"task": task.as_dict(), "model": spec.as_dict(), "split": args.split, "cohort": dataset.summary()}
        if task.kind == "binary":
            result = evaluate_binary(dataset, splits, spec, engine=args.engine, n_jobs=args.jobs,
                                     threshold=args.threshold, bootstrap_resamples=args.bootstrap, seed=args.seed)
            write_report(args.outdir, summary={**header, **result.summary}, tables=result.tables,
                         curves=result.curves, title=title, threshold=result.threshold)
        elif task.kind == "ovr":
            multi = evaluate_ovr(dataset, splits, spec, thresholds=task.thresholds, engine=args.engine, n_jobs=args.jobs)
            write_report(args.outdir, summary={**header, **multi.summary}, tables=multi.tables,
                         curves=multi.curves, title=title)
        else:
            assert task.stage2 is not None and task.parent is not None
            multi = evaluate_two_stage(dataset, task.stage2, task.parent, splits, spec,
                                       engine=args.engine, n_jobs=args.jobs)
            write_report(args.outdir, summary={**header, **multi.summary}, tables=multi.tables,
                         curves=multi.curves, title=title)
    if task.kind == "binary" and not args.no_bundle:
        save_bundle(train_bundle(dataset, task, spec, threshold=args.threshold), Path(args.outdir) / "model")
    elif task.kind != "binary":
        # TODO: bundles for two-stage and one-vs-rest tasks (one Pipeline per stage or class).
        log.info("No model bundle written: bundles support binary tasks only")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Score a cohort with a bundle and write the per-sample CSV."""
    from samplerflow.classify.bundle import load_bundle, predict

    table = predict(load_bundle(args.model), args.input)
    with atomic_path(args.output) as temporary:
        table.to_csv(temporary, index=False)
    log.info("Wrote %d predictions (%d uncertain) to %s", len(table), int(table["uncertain"].sum()), args.output)
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand named by ``args.command`` (``classify`` or ``predict``); return the exit status."""
    if args.command == "classify":
        return run_classify(args)
    if args.command == "predict":
        return run_predict(args)
    raise ValueError(f"dispatch() handles classify and predict, not {args.command!r}")
