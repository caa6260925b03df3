"""Task definitions (YAML) and the cohort matrix they select.

A task file maps the ``label`` values of ``cohort.h5ad`` to classes, names the
positive class and selects feature sets by backbone and scale::

    name: rms_vs_nrsts
    kind: binary                   # binary | two_stage | ovr
    classes:
      RMS: [alveolar RMS, embryonal RMS, spindle cell RMS]
      NRSTS: ["*"]                 # "*": every label not listed elsewhere
    positive: RMS
    features:                      # optional; default: every SAMPLER value
      - {backbone: inception, scales: [1, 2]}
      - {backbone: handcrafted}    # all scales of this backbone

A ``two_stage`` task has ``stage1`` (classes, positive, parent) and ``stage2``
(classes, positive) sections instead of ``classes``: samples of stage 1's
``parent`` class are split further by stage 2, whose "*" covers the labels of
the parent class not listed in stage 2. An ``ovr`` task lists three or more
classes and may give per-class ``thresholds``.

Samples with an empty label, or a label no class covers, are left out; the
counts per label are logged and stored in :attr:`Dataset.excluded`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from samplerflow.errors import InputError

log = logging.getLogger(__name__)

WILDCARD = "*"
TASK_KINDS = ("binary", "two_stage", "ovr")
REQUIRED_OBS = ("patient", "center", "label")


@dataclass(frozen=True)
class FeatureSelection:
    """One feature set: a backbone and optionally a subset of its scales (None: all)."""

    backbone: str
    scales: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ClassMap:
    """Ordered classes, each with the labels it covers. At most one class has the wildcard."""

    classes: dict[str, tuple[str, ...]]
    positive: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def assign(self, labels: Sequence[str]) -> list[str | None]:
        """Return the class of each label, or None when no class covers it."""
        explicit = {label: name for name, members in self.classes.items() for label in members if label != WILDCARD}
        wildcard = next((name for name, members in self.classes.items() if WILDCARD in members), None)
        assigned: list[str | None] = []
        for label in labels:
            if label == "":
                assigned.append(None)
            else:
                assigned.append(explicit.get(label, wildcard))
        return assigned


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task file; ``stage2`` is set only for ``two_stage`` tasks."""

    name: str
    kind: str
    classes: ClassMap
    features: tuple[FeatureSelection, ...] = ()
    stage2: ClassMap | None = None
    parent: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    source: str = "<dict>"

    def as_dict(self) -> dict[str, Any]:
        """Return the task in the YAML layout, for model cards and metrics.json."""
        payload: dict[str, Any] = {"name": self.name, "kind": self.kind}
        stage1 = {"classes": {k: list(v) for k, v in self.classes.classes.items()}, "positive": self.classes.positive}
        if self.kind == "two_stage":
            assert self.stage2 is not None
            payload["stage1"] = {**stage1, "parent": self.parent}
            payload["stage2"] = {
                "classes": {k: list(v) for k, v in self.stage2.classes.items()}, "positive": self.stage2.positive,
            }
        else:
            payload.update(stage1)
        if self.thresholds:
            payload["thresholds"] = dict(self.thresholds)
        payload["features"] = [
            {"backbone": f.backbone, **({"scales": list(f.scales)} if f.scales is not None else {})}
            for f in self.features
        ]
        return payload


@dataclass(frozen=True)
class Dataset:
    """Samples x SAMPLER values of one cohort restricted to a task's samples and features.

    ``y`` contains indices into ``classes`` (for binary tasks 1 = positive class).
    ``excluded`` counts the left-out samples per label (``""`` for empty labels).
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    samples: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    centers: np.ndarray
    feature_names: tuple[str, ...]
    excluded: dict[str, int]
    source: str

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    def summary(self) -> dict[str, Any]:
        """Return counts of samples, patients, centers and classes, for reports and model cards."""
        counts = {name: int(np.sum(self.y == index)) for index, name in enumerate(self.classes)}
        return {
            "cohort": self.source,
            "samples": self.n_samples,
            "patients": len(np.unique(self.patients)),
            "centers": sorted(str(c) for c in np.unique(self.centers)),
            "features": len(self.feature_names),
            "class_counts": counts,
            "label_counts": {str(k): int(v) for k, v in pd.Series(self.labels).value_counts().sort_index().items()},
            "excluded": dict(self.excluded),
        }


def _class_map(raw: Any, positive: Any, *, where: str, kind: str) -> ClassMap:
    if not isinstance(raw, Mapping) or len(raw) < 2:
        raise InputError(f"{where}: 'classes' must map at least two class names to lists of labels, got {raw!r}")
    classes: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, members in raw.items():
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, Sequence) or not members:
            raise InputError(f"{where}: class {name!r} needs a non-empty list of labels (or [\"*\"]), got {members!r}")
        for label in members:
            label = str(label)
            if label in seen and label != WILDCARD:
                raise InputError(
                    f"{where}: label {label!r} is listed under both {seen[label]!r} and {name!r}; list it once"
                )
            seen[label] = str(name)
        classes[str(name)] = tuple(str(m) for m in members)
    wildcards = [name for name, members in classes.items() if WILDCARD in members]
    if len(wildcards) > 1:
        raise InputError(f"{where}: only one class may use \"*\", found it in {wildcards}")
    if kind != "ovr":
        if len(classes) != 2:
            raise InputError(f"{where}: a {kind} task needs exactly two classes, got {list(classes)}")
        if positive is None or str(positive) not in classes:
            raise InputError(f"{where}: 'positive' must be one of {list(classes)}, got {positive!r}")
    elif len(classes) < 3:
        raise InputError(f"{where}: an ovr task needs three or more classes, got {list(classes)}; use kind: binary")
    return ClassMap(classes=classes, positive=None if positive is None else str(positive))


def _features(raw: Any, *, where: str) -> tuple[FeatureSelection, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise InputError(f"{where}: 'features' must be a list of {{backbone: NAME, scales: [..]}}, got {raw!r}")
    selections = []
    for item in raw:
        if not isinstance(item, Mapping) or "backbone" not in item:
            raise InputError(f"{where}: each 'features' entry needs a 'backbone' key, got {item!r}")
        scales = item.get("scales")
        if scales is not None:
            try:
                scales = tuple(int(s) for s in (scales if isinstance(scales, Sequence) else [scales]))
            except (TypeError, ValueError) as error:
                raise InputError(f"{where}: invalid scales {item.get('scales')!r}: give whole numbers like [1, 2]") from error
        selections.append(FeatureSelection(backbone=str(item["backbone"]), scales=scales))
    return tuple(selections)


def parse_task(raw: Mapping[str, Any], *, source: str = "<dict>") -> TaskSpec:
    """Validate a task mapping (the parsed YAML) and return a :class:`TaskSpec`."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: a task file must be a YAML mapping, got {type(raw).__name__}")
    kind = str(raw.get("kind", "binary"))
    if kind not in TASK_KINDS:
        raise InputError(f"{source}: invalid kind {kind!r}; use one of {', '.join(TASK_KINDS)}")
    name = str(raw.get("name") or Path(source).stem)
    features = _features(raw.get("features"), where=source)
    thresholds_raw = raw.get("thresholds") or {}
    if not isinstance(thresholds_raw, Mapping):
        raise InputError(f"{source}: 'thresholds' must map class names to numbers, got {thresholds_raw!r}")
    try:
        thresholds = {str(k): float(v) for k, v in thresholds_raw.items()}
    except (TypeError, ValueError) as error:
        raise InputError(f"{source}: invalid thresholds {thresholds_raw!r}: give numbers") from error

    if kind == "two_stage":
        for key in ("stage1", "stage2"):
            if not isinstance(raw.get(key), Mapping):
                raise InputError(f"{source}: a two_stage task needs a '{key}' section with classes and positive")
        stage1 = _class_map(raw["stage1"].get("classes"), raw["stage1"].get("positive"), where=f"{source} stage1", kind=kind)
        stage2 = _class_map(raw["stage2"].get("classes"), raw["stage2"].get("positive"), where=f"{source} stage2", kind=kind)
        parent = raw["stage1"].get("parent")
        if parent is None or str(parent) not in stage1.classes:
            raise InputError(
                f"{source}: stage1 'parent' must name the stage-1 class that stage 2 splits, one of {list(stage1.classes)}; "
                f"got {parent!r}"
            )
        clash = set(stage2.classes) & (set(stage1.classes) - {str(parent)})
        if clash:
            raise InputError(f"{source}: stage-2 class names {sorted(clash)} repeat stage-1 classes; rename them")
        return TaskSpec(name=name, kind=kind, classes=stage1, stage2=stage2, parent=str(parent),
                        features=features, thresholds=thresholds, source=source)

    class_map = _class_map(raw.get("classes"), raw.get("positive"), where=source, kind=kind)
    unknown = set(thresholds) - set(class_map.classes)
    if unknown:
        raise InputError(f"{source}: thresholds name unknown classes {sorted(unknown)}; classes are {list(class_map.classes)}")
    return TaskSpec(name=name, kind=kind, classes=class_map, features=features, thresholds=thresholds, source=source)


def load_task(path: str | Path) -> TaskSpec:
    """Read and validate a task YAML file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Task file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"Task file {path} is not valid YAML: {error}") from error
    return parse_task(raw, source=str(path))


def select_features(var: pd.DataFrame, selections: Sequence[FeatureSelection], *, source: str) -> np.ndarray:
    """Return the column indices of ``var`` matching the selections, in selection order (concatenated)."""
    if not selections:
        return np.arange(len(var))
    backbones = var["backbone"].astype(str).to_numpy()
    scales = var["scale"].astype(int).to_numpy()
    chosen: list[np.ndarray] = []
    for selection in selections:
        mask = backbones == selection.backbone
        if not mask.any():
            raise InputError(
                f"{source}: backbone {selection.backbone!r} not found; the cohort has {sorted(set(backbones))}"
            )
        if selection.scales is not None:
            available = sorted(set(scales[mask].tolist()))
            missing = sorted(set(selection.scales) - set(available))
            if missing:
                raise InputError(
                    f"{source}: backbone {selection.backbone!r} has no scale {missing}; available scales are {available}"
                )
            mask &= np.isin(scales, selection.scales)
        chosen.append(np.flatnonzero(mask))
    indices = np.concatenate(chosen)
    if len(np.unique(indices)) != len(indices):
        raise InputError(f"{source}: feature selections overlap; list each backbone and scale once")
    return indices


def load_dataset(cohort: str | Path, task: TaskSpec, *, class_map: ClassMap | None = None) -> Dataset:
    """Read ``cohort.h5ad`` and return the task's samples and features.

    ``class_map`` overrides the task's (stage-1) classes, e.g. to load the
    final three-class labels of a two-stage task.
    """
    import anndata as ad

    cohort = Path(cohort)
    if not cohort.is_file():
        raise InputError(f"Cohort file not found: {cohort}; run `samplerflow run` or `samplerflow cohort` first")
    adata = ad.read_h5ad(cohort)
    missing = [c for c in REQUIRED_OBS if c not in adata.obs.columns]
    if missing:
        raise InputError(f"{cohort}: obs lacks columns {missing}; the samplesheet must give patient, center and label")
    missing_var = [c for c in ("backbone", "scale") if c not in adata.var.columns]
    if missing_var:
        raise InputError(f"{cohort}: var lacks columns {missing_var}; rebuild the cohort with this samplerflow version")

    columns = select_features(adata.var, task.features, source=str(cohort))
    X = np.asarray(adata.X[:, columns] if len(columns) < adata.n_vars else adata.X, dtype=np.float64)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise InputError(f"{cohort}: {bad} samples have NaN or infinite SAMPLER values; check their QC records")

    mapping = class_map or task.classes
    labels = adata.obs["label"].astype(str).fillna("").to_numpy()
    labels = np.where(labels == "nan", "", labels)
    assigned = mapping.assign(labels.tolist())
    keep = np.array([a is not None for a in assigned], dtype=bool)
    excluded = {str(k): int(v) for k, v in pd.Series(labels[~keep]).value_counts().sort_index().items()}
    if excluded:
        log.info("%s: left out %d samples whose label no class covers: %s", cohort, int((~keep).sum()), excluded)

    classes = mapping.names
    if task.kind != "ovr" and mapping.positive is not None:
        negative = next(name for name in classes if name != mapping.positive)
        classes = (negative, mapping.positive)
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[a] for a in assigned if a is not None], dtype=np.int64)
    present = set(np.unique(y).tolist())
    absent = [classes[i] for i in range(len(classes)) if i not in present]
    if absent:
        raise InputError(
            f"{cohort}: no sample falls in class(es) {absent} of task {task.name!r}; "
            f"labels present are {sorted(set(labels.tolist()))}"
        )
    obs = adata.obs.iloc[np.flatnonzero(keep)]
    return Dataset(
        X=np.ascontiguousarray(X[keep]),
        y=y,
        classes=tuple(classes),
        samples=obs.index.astype(str).to_numpy(),
        labels=labels[keep],
        patients=obs["patient"].astype(str).to_numpy(),
        centers=obs["center"].astype(str).to_numpy(),
        feature_names=tuple(adata.var_names[columns].astype(str)),
        excluded=excluded,
        source=str(cohort),
    )
