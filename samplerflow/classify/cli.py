"""Command-line subcommands ``classify``, ``classify-grid`` and ``predict``.

``samplerflow.cli`` registers them with :func:`add_subcommands` and runs
them with :func:`dispatch`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from samplerflow.classify.choices import ENGINES, MODEL_KINDS, SPLITS
from samplerflow.io import atomic_path

log = logging.getLogger(__name__)

COMMANDS = ("classify", "classify-grid", "predict")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=MODEL_KINDS, default="logistic", help="classifier (default: %(default)s)")
    model.add_argument("--C", type=float, default=1.0, help="inverse L2 regularization strength (default: %(default)s)")
    model.add_argument("--class-weight", choices=["balanced"], default=None, help="weight classes by inverse frequency")
    model.add_argument("--max-iter", type=int, default=1000, help="solver iteration limit for logistic regression (default: %(default)s)")
    model.add_argument("--tol", type=float, default=None,
                       help="solver tolerance (default: 1e-8 for logistic, which reaches the optimum, 1e-4 for svm)")
    model.add_argument("--threshold", type=float, default=None,
                       help="decision threshold on the score of binary and two-stage tasks "
                            "(default: 0.5 for logistic, 0 for svm); one-vs-rest tasks set thresholds in the task file")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--engine", choices=ENGINES, default="kernel",
                     help="kernel: solve folds from the Gram matrix; plain: scikit-learn Pipeline per fold (default: %(default)s)")
    run.add_argument("--jobs", type=int, default=1, help="folds fitted in parallel (joblib n_jobs) (default: %(default)s)")
    run.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUROC CI (default: %(default)s)")
    run.add_argument("--no-bundle", action="store_true", help="skip fitting and saving the final model bundle")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``classify``, ``classify-grid`` and ``predict`` on the main parser's subparsers."""
    classify = subparsers.add_parser("classify", help="cross-validate a classifier on cohort.h5ad and save a model bundle")
    classify.add_argument("--input", type=Path, required=True, help="cohort.h5ad to train and cross-validate on")
    classify.add_argument("--task", type=Path, required=True, help="task YAML: classes, positive class, feature sets")
    classify.add_argument("--outdir", type=Path, required=True, help="folder for metrics.json, CSV tables, plots and model/")
    _add_model_options(classify)
    splits = classify.add_argument_group("splits")
    splits.add_argument("--split", choices=SPLITS, default="kfold",
                        help="kfold: patient-grouped stratified k-fold; center: leave one center out; "
                             "external: train on --input, test on --external (default: %(default)s)")
    splits.add_argument("--folds", type=int, default=5, help="folds per repeat (default: %(default)s)")
    splits.add_argument("--repeats", type=int, default=100,
                        help="repeats of k-fold, repeat r seeded with seed + r; 1 = fixed-seed mode (default: %(default)s)")
    splits.add_argument("--seed", type=int, default=0, help="seed of splits, models and bootstrap (default: %(default)s)")
    splits.add_argument("--external", type=Path, default=None, help="cohort.h5ad to test on with --split external")
    _add_run_options(classify)

    grid = subparsers.add_parser(
        "classify-grid",
        help="rank every backbone x scale and scale pair by fixed-seed k-fold AUROC, then validate the best in full",
    )
    grid.add_argument("--input", type=Path, required=True, help="cohort.h5ad with several backbones or scales")
    grid.add_argument("--task", type=Path, required=True,
                      help="task YAML; its features, if any, limit the grid to those backbones and scales")
    grid.add_argument("--outdir", type=Path, required=True, help="folder for grid.csv and best/ (full report of the best)")
    _add_model_options(grid)
    grid_splits = grid.add_argument_group("splits")
    grid_splits.add_argument("--folds", type=int, default=5, help="folds of the grid and of the best configuration (default: %(default)s)")
    grid_splits.add_argument("--repeats", type=int, default=100,
                             help="k-fold repeats for the best configuration; the grid uses one (default: %(default)s)")
    grid_splits.add_argument("--seed", type=int, default=0, help="seed of splits, models and bootstrap (default: %(default)s)")
    _add_run_options(grid)

    predict_parser = subparsers.add_parser("predict", help="score a cohort.h5ad with a saved model bundle")
    predict_parser.add_argument("--model", type=Path, required=True, help="bundle folder written by `samplerflow classify`")
    predict_parser.add_argument("--input", type=Path, required=True, help="cohort.h5ad to score")
    predict_parser.add_argument("--output", type=Path, required=True, help="CSV of per-sample scores and predictions")


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "C": args.C, "class_weight": args.class_weight, "max_iter": args.max_iter,
            "tol": args.tol, "threshold": args.threshold}


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"engine": args.engine, "jobs": args.jobs, "bootstrap": args.bootstrap, "bundle": not args.no_bundle}


def run_classify(args: argparse.Namespace) -> int:
    """Run :func:`~samplerflow.classify.run.classify_cohort` with the command-line options."""
    from samplerflow.classify.run import classify_cohort

    classify_cohort(cohort=args.input, task=args.task, outdir=args.outdir, split=args.split, folds=args.folds,
                    repeats=args.repeats, seed=args.seed, external=args.external, **_model_options(args),
                    **_run_options(args))
    return 0


def run_grid(args: argparse.Namespace) -> int:
    """Run :func:`~samplerflow.classify.grid.classify_grid` with the command-line options."""
    from samplerflow.classify.grid import classify_grid

    classify_grid(cohort=args.input, task=args.task, outdir=args.outdir, folds=args.folds, repeats=args.repeats,
                  seed=args.seed, **_model_options(args), **_run_options(args))
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
    """Run the subcommand named by ``args.command`` (one of :data:`COMMANDS`); return the exit status."""
    if args.command == "classify":
        return run_classify(args)
    if args.command == "classify-grid":
        return run_grid(args)
    if args.command == "predict":
        return run_predict(args)
    raise ValueError(f"dispatch() handles {', '.join(COMMANDS)}, not {args.command!r}")
