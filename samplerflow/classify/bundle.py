"""Model bundles: a fitted Pipeline (joblib) and its model card (JSON), and prediction with them.

A bundle is a folder containing ``model.joblib`` (the fitted scikit-learn
Pipeline of a binary task) and ``model_card.json`` (task, classes, feature
names, training cohort summary, threshold, uncertain band, package
versions, training time in seconds and size on disk in bytes).

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
from samplerflow.classify.task import Dataset, TaskSpec
from samplerflow.errors import InputError
from samplerflow.io import atomic_path, write_json
from samplerflow.provenance import package_versions

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class Bundle:
    """A fitted Pipeline and its model card."""

    pipeline: Any
    card: dict[str, Any]


def train_bundle(
    dataset: Dataset, task: TaskSpec, spec: ModelSpec, *, threshold: float | None = None,
    uncertain_band: tuple[float, float] | None = None,
) -> Bundle:
    """Fit the Pipeline on every sample of a binary dataset and describe it in a model card.

    ``uncertain_band`` (low, high) on the score flags predictions for review;
    it defaults to (0.4, 0.6) for probabilities and (-0.5, 0.5) for SVM margins.
    """
    if len(dataset.classes) != 2:
        raise InputError(f"A bundle contains one binary model, but task {task.name!r} has classes {list(dataset.classes)}")
    threshold = default_threshold(spec) if threshold is None else float(threshold)
    if uncertain_band is None:
        uncertain_band = (0.4, 0.6) if spec.kind == "logistic" else (-0.5, 0.5)
    if not uncertain_band[0] <= threshold <= uncertain_band[1]:
        raise InputError(f"Uncertain band {uncertain_band} must contain the threshold {threshold}")
    started = time.perf_counter()
    pipeline = build_pipeline(spec).fit(dataset.X, dataset.y)
    elapsed = time.perf_counter() - started
    card = {
        "task": task.as_dict(),
        "classes": list(dataset.classes),
        "positive_class": dataset.classes[1],
        "model": spec.as_dict(),
        "score": score_kind(spec),
        "threshold": threshold,
        "uncertain_band": list(uncertain_band),
        "feature_names": list(dataset.feature_names),
        "training_cohort": dataset.summary(),
        "package_versions": package_versions(),
        "training_seconds": elapsed,
    }
    return Bundle(pipeline, card)


def save_bundle(bundle: Bundle, folder: str | Path) -> Path:
    """Write the bundle folder atomically file by file; the card records the model file's size in bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_FILE) as temporary:
        joblib.dump(bundle.pipeline, temporary)
    card = dict(bundle.card)
    card["model_file_bytes"] = (folder / MODEL_FILE).stat().st_size
    write_json(folder / CARD_FILE, card)
    log.info("Saved model bundle to %s (%d bytes)", folder, card["model_file_bytes"])
    return folder


def load_bundle(folder: str | Path) -> Bundle:
    """Read a bundle folder written by :func:`save_bundle`."""
    folder = Path(folder)
    for name in (MODEL_FILE, CARD_FILE):
        if not (folder / name).is_file():
            raise InputError(f"Model bundle {folder} lacks {name}; pass the folder written by `samplerflow classify`")
    card = json.loads((folder / CARD_FILE).read_text())
    return Bundle(joblib.load(folder / MODEL_FILE), card)


def predict(bundle: Bundle, cohort: str | Path) -> pd.DataFrame:
    """Score every sample of ``cohort`` with the bundle; return one row per sample.

    Columns: sample, patient, center, label, score (the card's ``score``
    kind), predicted (class name at the card's threshold) and uncertain (score
    inside the card's uncertain band, inclusive). All samples are scored,
    whatever their label; the features are matched to the card's by name.
    """
    import anndata as ad

    cohort = Path(cohort)
    if not cohort.is_file():
        raise InputError(f"Cohort file not found: {cohort}")
    adata = ad.read_h5ad(cohort)
    names = bundle.card["feature_names"]
    missing = [name for name in names if name not in adata.var_names]
    if missing:
        raise InputError(
            f"{cohort} lacks {len(missing)} features the model needs (first: {missing[0]}); "
            "build the cohort with the backbones, scales and percentiles in the model card"
        )
    X = np.asarray(adata[:, names].X, dtype=np.float64)
    scores = positive_scores(bundle.pipeline, X)
    threshold = float(bundle.card["threshold"])
    low, high = bundle.card["uncertain_band"]
    classes = np.asarray(bundle.card["classes"])
    obs = adata.obs
    return pd.DataFrame({
        "sample": obs.index.astype(str),
        "patient": obs["patient"].astype(str).to_numpy() if "patient" in obs else "",
        "center": obs["center"].astype(str).to_numpy() if "center" in obs else "",
        "label": obs["label"].astype(str).to_numpy() if "label" in obs else "",
        "score": scores,
        "predicted": classes[(scores >= threshold).astype(int)],
        "uncertain": (scores >= low) & (scores <= high),
    })
