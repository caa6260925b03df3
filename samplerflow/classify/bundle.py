"""Model bundles: fitted Pipelines (joblib) and their model card (JSON), and prediction with them.

A bundle is a folder containing ``model.joblib`` and ``model_card.json``.
``model.joblib`` holds a dict of fitted scikit-learn Pipelines, keyed by
``binary`` (binary task), the class names in class order (one-vs-rest), or
``stage1`` and ``stage2`` (two-stage). The card holds the task, classes,
feature names, training cohort summary, the training cohort's pixel-level
settings (``preprocessing``, compared with every cohort scored), thresholds,
uncertain band, package versions, training time in seconds and the model
file's size in bytes.

NOTE: joblib files are pickles; load bundles only from sources you trust.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from samplerflow.classify.models import (
    ModelSpec,
    build_pipeline,
    default_threshold,
    positive_scores,
    score_kind,
)
from samplerflow.classify.multiclass import (
    combine_stages,
    fit_ovr_models,
    fit_two_stage_models,
    ovr_predict,
    ovr_score_matrix,
    ovr_thresholds,
    stage2_class_order,
    two_stage_targets,
)
from samplerflow.classify.task import Dataset, TaskSpec, parse_task
from samplerflow.errors import InputError
from samplerflow.io import atomic_path, write_json
from samplerflow.provenance import package_versions

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"
# Sample names listed in the warning about labels outside the task; the CSV marks all of them.
MAX_NAMED_SAMPLES = 20


@dataclass(frozen=True)
class Bundle:
    """Fitted Pipelines and their model card; ``models`` is keyed as in ``model.joblib``."""

    models: dict[str, Any]
    card: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.card["task"]["kind"])


def default_uncertain_band(spec: ModelSpec) -> tuple[float, float]:
    """Return the default uncertain band on the score: 0.4 to 0.6 for probabilities, -0.5 to 0.5 for SVM margins."""
    return (0.4, 0.6) if spec.kind == "logistic" else (-0.5, 0.5)


PREPROCESSING_KEYS = ("target_mpp", "stain_norm", "tile_size_um", "grid", "min_tissue_fraction")


def cohort_preprocessing(cohort: str | Path) -> dict[str, Any] | None:
    """Return the pixel-level settings a cohort was built with, or None when it does not record them.

    Reads ``uns["samplerflow"]["parameters"]`` of ``cohort.h5ad``, written by
    ``samplerflow run`` (nested settings) or by the Nextflow pipeline (flat
    params), and returns the same keys for both: :data:`PREPROCESSING_KEYS`.
    Features computed with other settings differ even when their names match.
    """
    import h5py

    try:
        with h5py.File(cohort, "r") as handle:
            raw = handle["uns/samplerflow/parameters"][()]
    except (OSError, KeyError):
        return None
    parameters = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    if not parameters:
        return None
    tiling = parameters.get("tiling") if isinstance(parameters.get("tiling"), dict) else parameters
    stain = parameters.get("stain")
    stain_method = stain.get("method", "none") if isinstance(stain, dict) else parameters.get("stain_norm") or "none"
    return {
        "target_mpp": parameters.get("target_mpp"),
        "stain_norm": "none" if stain_method is False else str(stain_method),
        "tile_size_um": tiling.get("tile_size_um"),
        "grid": tiling.get("grid"),
        "min_tissue_fraction": tiling.get("min_tissue_fraction"),
    }


def _warn_preprocessing_differs(bundle: Bundle, cohort: Path) -> None:
    trained = bundle.card.get("preprocessing")
    current = cohort_preprocessing(cohort)
    if trained is None or current is None:
        log.info("%s: preprocessing not compared with the model's training cohort (one of them does not record it)", cohort)
        return
    differences = [f"{key} {current.get(key)!r} (training: {trained.get(key)!r})" for key in PREPROCESSING_KEYS
                   if current.get(key) != trained.get(key)]
    if differences:
        log.warning(
            "%s was built with other settings than the model's training cohort: %s; its features are not comparable, "
            "so rebuild it with the training settings before trusting these predictions", cohort, "; ".join(differences),
        )


def train_bundle(
    dataset: Dataset, task: TaskSpec, spec: ModelSpec, *, threshold: float | None = None,
    uncertain_band: tuple[float, float] | None = None,
) -> Bundle:
    """Fit the task's models on every sample of ``dataset`` and describe them in a model card.

    ``dataset`` comes from :func:`~samplerflow.classify.task.load_dataset`
    with the task (stage-1 classes for two-stage tasks). ``threshold`` is the
    decision threshold on the score of binary and two-stage models (both
    stages); one-vs-rest tasks take per-class thresholds from the task file.
    ``uncertain_band`` (low, high) on the score flags predictions for review
    (see :func:`predict`); it defaults to :func:`default_uncertain_band`.
    """
    if task.kind == "ovr" and threshold is not None:
        raise InputError(f"Task {task.name!r} is one-vs-rest: set per-class 'thresholds' in the task file, not --threshold")
    threshold = default_threshold(spec) if threshold is None else float(threshold)
    low, high = default_uncertain_band(spec) if uncertain_band is None else uncertain_band
    if task.kind != "ovr" and not low <= threshold <= high:
        raise InputError(f"Uncertain band {(low, high)} must contain the threshold {threshold}")
    if low > high:
        raise InputError(f"Invalid uncertain band {(low, high)}: its low end exceeds its high end")

    card: dict[str, Any] = {
        "task": task.as_dict(),
        "model": spec.as_dict(),
        "score": score_kind(spec),
        "uncertain_band": [float(low), float(high)],
        "feature_names": list(dataset.feature_names),
        "training_cohort": dataset.summary(),
        "preprocessing": cohort_preprocessing(dataset.summary()["cohort"]),
        "package_versions": package_versions(),
    }
    started = time.perf_counter()
    if task.kind == "binary":
        if len(dataset.classes) != 2:
            raise InputError(f"A binary bundle needs two classes, but task {task.name!r} has {list(dataset.classes)}")
        models = {"binary": build_pipeline(spec).fit(dataset.X, dataset.y)}
        card.update(classes=list(dataset.classes), positive_class=dataset.classes[1], threshold=threshold)
    elif task.kind == "ovr":
        models = fit_ovr_models(dataset, spec)
        offsets = ovr_thresholds(dataset.classes, spec, task.thresholds)
        card.update(classes=list(dataset.classes), thresholds=dict(zip(dataset.classes, offsets.tolist(), strict=True)))
    else:
        assert task.stage2 is not None and task.parent is not None
        targets = two_stage_targets(dataset, task.stage2, task.parent)
        models = fit_two_stage_models(dataset, targets, spec)
        final_counts = {name: int(np.sum(targets.final_true == index)) for index, name in enumerate(targets.final_classes)}
        card["training_cohort"]["final_class_counts"] = final_counts
        card.update(classes=list(targets.final_classes), stage1_classes=list(dataset.classes),
                    stage2_classes=list(targets.stage2_classes), parent=task.parent, threshold=threshold)
    card["training_seconds"] = time.perf_counter() - started
    card["models"] = list(models)
    return Bundle(models, card)


def save_bundle(bundle: Bundle, folder: str | Path) -> Path:
    """Write the bundle folder atomically file by file; the card records the model file's size in bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_FILE) as temporary:
        joblib.dump(bundle.models, temporary)
    card = dict(bundle.card)
    card["model_file_bytes"] = (folder / MODEL_FILE).stat().st_size
    write_json(folder / CARD_FILE, card)
    log.info("Saved %s model bundle (%s) to %s (%d bytes)", bundle.kind, ", ".join(bundle.models), folder,
             card["model_file_bytes"])
    return folder


def load_bundle(folder: str | Path) -> Bundle:
    """Read a bundle folder written by :func:`save_bundle`."""
    folder = Path(folder)
    for name in (MODEL_FILE, CARD_FILE):
        if not (folder / name).is_file():
            raise InputError(f"Model bundle {folder} lacks {name}; pass the folder written by `samplerflow classify`")
    card = json.loads((folder / CARD_FILE).read_text())
    models = joblib.load(folder / MODEL_FILE)
    if not isinstance(models, dict):
        # Binary bundles written before multi-model bundles stored the bare Pipeline.
        models = {"binary": models}
    expected = card.get("models", ["binary"])
    if list(models) != list(expected):
        raise InputError(f"{folder / MODEL_FILE} contains models {list(models)} but {CARD_FILE} lists {expected}; "
                         "the two files come from different runs: write the bundle again")
    return Bundle(models, card)


def _feature_matrix(bundle: Bundle, adata: Any, cohort: Path) -> np.ndarray:
    names = bundle.card["feature_names"]
    missing = [name for name in names if name not in adata.var_names]
    if missing:
        raise InputError(
            f"{cohort} lacks {len(missing)} features the model needs (first: {missing[0]}); "
            "build the cohort with the backbones, scales and percentiles in the model card"
        )
    return np.asarray(adata[:, names].X, dtype=np.float64)


def _score_columns(bundle: Bundle, X: np.ndarray) -> dict[str, Any]:
    """Return the score, predicted and uncertain columns of the bundle's task kind."""
    low, high = bundle.card["uncertain_band"]
    classes = np.asarray(bundle.card["classes"])
    if bundle.kind == "binary":
        scores = positive_scores(bundle.models["binary"], X)
        return {"score": scores, "predicted": classes[(scores >= float(bundle.card["threshold"])).astype(int)],
                "uncertain": (scores >= low) & (scores <= high)}

    if bundle.kind == "ovr":
        matrix = ovr_score_matrix(bundle.models, X)
        offsets = np.array([bundle.card["thresholds"][name] for name in classes], dtype=np.float64)
        columns: dict[str, Any] = {f"score_{name}": matrix[:, c] for c, name in enumerate(classes)}
        confident = (matrix > high).sum(axis=1)
        columns.update(predicted=classes[ovr_predict(matrix, offsets)], uncertain=confident != 1)
        return columns

    threshold = float(bundle.card["threshold"])
    stage1_classes = list(bundle.card["stage1_classes"])
    parent_index = stage1_classes.index(bundle.card["parent"])
    stage1_scores = positive_scores(bundle.models["stage1"], X)
    stage1_pred = (stage1_scores >= threshold).astype(int)
    routed = stage1_pred == parent_index
    stage2_scores = np.full(len(X), np.nan)
    if routed.any():
        stage2_scores[routed] = positive_scores(bundle.models["stage2"], X[routed])
    stage2_pred = np.where(routed, np.nan_to_num(stage2_scores, nan=-np.inf) >= threshold, 0).astype(int)
    final = combine_stages(stage1_classes, bundle.card["parent"], bundle.card["stage2_classes"], list(classes),
                           stage1_pred, stage2_pred)
    uncertain = ((stage1_scores >= low) & (stage1_scores <= high)) | (
        routed & (stage2_scores >= low) & (stage2_scores <= high)
    )
    return {"score_stage1": stage1_scores, "score_stage2": stage2_scores, "predicted": classes[final],
            "uncertain": uncertain}


def label_classes(task: TaskSpec, labels: np.ndarray) -> np.ndarray:
    """Return each label's final task class, or "" when the task does not cover it (or the label is empty)."""
    stage1 = task.classes.assign(labels.tolist())
    if task.kind != "two_stage":
        return np.array([name or "" for name in stage1], dtype=object)
    assert task.stage2 is not None
    stage2_order = stage2_class_order(task.stage2)
    stage2 = task.stage2.assign(labels.tolist())
    final = []
    for first, second in zip(stage1, stage2, strict=True):
        if first is None:
            final.append("")
        elif first != task.parent:
            final.append(first)
        else:
            final.append(second if second in stage2_order else "")
    return np.array(final, dtype=object)


def _warn_labels_outside(cohort: Path, task: TaskSpec, samples: np.ndarray, labels: np.ndarray,
                         outside: np.ndarray) -> None:
    count = int(outside.sum())
    if not count:
        return
    names = samples[outside].tolist()
    listed = ", ".join(names[:MAX_NAMED_SAMPLES]) + (f" and {count - MAX_NAMED_SAMPLES} more" if count > MAX_NAMED_SAMPLES else "")
    counts = pd.Series(labels[outside]).value_counts().sort_index().to_dict()
    log.warning("%s: %d samples have labels outside the classes of task %r (labels %s); they are scored anyway "
                "and marked label_in_task=False: %s", cohort, count, task.name, counts, listed)


def predict(bundle: Bundle, cohort: str | Path) -> pd.DataFrame:
    """Score every sample of ``cohort`` with the bundle; return one row per sample.

    Columns: sample, patient, center, label; the scores (``score`` for
    binary tasks, ``score_{class}`` per class for one-vs-rest,
    ``score_stage1`` and ``score_stage2`` for two-stage, where stage 2 scores
    only the samples stage 1 predicts as its parent class and is NaN
    elsewhere); predicted (final class); uncertain; class (the task class of
    the label, "" when none); and label_in_task (False for a non-empty label
    outside the task's classes, which is also logged as a warning; empty for
    an empty or missing label). The features are matched to the card's by name.

    ``uncertain``: binary, the score lies inside the card's uncertain band
    (inclusive); two-stage, the stage-1 score, or for samples sent to stage 2
    the stage-2 score, lies inside it; one-vs-rest, the number of classes
    whose score exceeds the band's upper end is not exactly one.
    """
    import anndata as ad

    cohort = Path(cohort)
    if not cohort.is_file():
        raise InputError(f"Cohort file not found: {cohort}")
    adata = ad.read_h5ad(cohort)
    X = _feature_matrix(bundle, adata, cohort)
    _warn_preprocessing_differs(bundle, cohort)
    obs = adata.obs
    samples = obs.index.astype(str).to_numpy()
    labels = obs["label"].astype(str).fillna("").to_numpy() if "label" in obs else np.full(len(obs), "", dtype=object)
    labels = np.where(labels == "nan", "", labels)

    task = parse_task(bundle.card["task"], source=f"model card of {cohort}")
    classes = label_classes(task, labels)
    has_label = labels != ""
    outside = has_label & (classes == "")
    _warn_labels_outside(cohort, task, samples, labels, outside)
    label_in_task = pd.array(np.where(has_label, ~outside, False), dtype="boolean")
    label_in_task[~has_label] = pd.NA

    table = pd.DataFrame({
        "sample": samples,
        "patient": obs["patient"].astype(str).to_numpy() if "patient" in obs else "",
        "center": obs["center"].astype(str).to_numpy() if "center" in obs else "",
        "label": labels,
    })
    for name, values in _score_columns(bundle, X).items():
        table[name] = values
    table["class"] = classes
    table["label_in_task"] = label_in_task
    return table
