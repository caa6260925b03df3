"""Classification and evaluation of SAMPLER cohorts: tasks, models, splits, metrics, reports and bundles.

Entry points: :func:`classify_cohort` runs a whole classification (the
command line ``samplerflow classify`` calls it) and :func:`classify_grid` the
backbone and scale grid (``samplerflow classify-grid``). The parts:
:func:`load_task` and :func:`load_dataset` read the inputs;
:func:`evaluate_binary`, :func:`evaluate_ovr` and :func:`evaluate_two_stage`
cross-validate; :func:`external_validation` and its ``_ovr`` and
``_two_stage`` variants test on another cohort; :func:`write_report` writes
metrics, tables and plots; :func:`train_bundle`, :func:`save_bundle`,
:func:`load_bundle` and :func:`predict` handle deployable models.
``docs/classification.md`` describes the files.
"""

from __future__ import annotations

import importlib
from typing import Any

# Submodules load on first use, so the command line starts without importing scikit-learn.
_EXPORTS = {
    "Bundle": "samplerflow.classify.bundle",
    "load_bundle": "samplerflow.classify.bundle",
    "predict": "samplerflow.classify.bundle",
    "save_bundle": "samplerflow.classify.bundle",
    "train_bundle": "samplerflow.classify.bundle",
    "cross_validated_scores": "samplerflow.classify.evaluate",
    "evaluate_binary": "samplerflow.classify.evaluate",
    "external_validation": "samplerflow.classify.evaluate",
    "evaluate_ovr": "samplerflow.classify.multiclass",
    "evaluate_two_stage": "samplerflow.classify.multiclass",
    "external_validation_ovr": "samplerflow.classify.multiclass",
    "external_validation_two_stage": "samplerflow.classify.multiclass",
    "classify_cohort": "samplerflow.classify.run",
    "classify_grid": "samplerflow.classify.grid",
    "ModelSpec": "samplerflow.classify.models",
    "build_pipeline": "samplerflow.classify.models",
    "write_report": "samplerflow.classify.report",
    "Split": "samplerflow.classify.splits",
    "grouped_kfold": "samplerflow.classify.splits",
    "leave_one_center_out": "samplerflow.classify.splits",
    "repeated_grouped_kfold": "samplerflow.classify.splits",
    "Dataset": "samplerflow.classify.task",
    "TaskSpec": "samplerflow.classify.task",
    "load_dataset": "samplerflow.classify.task",
    "load_task": "samplerflow.classify.task",
    "parse_task": "samplerflow.classify.task",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in ("metrics",):
        return importlib.import_module(f"samplerflow.classify.{name}")
    raise AttributeError(f"module 'samplerflow.classify' has no attribute {name!r}")


__all__ = [
    "Bundle", "Dataset", "ModelSpec", "Split", "TaskSpec", "build_pipeline", "classify_cohort", "classify_grid",
    "cross_validated_scores", "evaluate_binary", "evaluate_ovr", "evaluate_two_stage", "external_validation",
    "external_validation_ovr", "external_validation_two_stage", "grouped_kfold",
    "leave_one_center_out", "load_bundle", "load_dataset", "load_task", "parse_task", "predict",
    "repeated_grouped_kfold", "save_bundle", "train_bundle", "write_report",
]
