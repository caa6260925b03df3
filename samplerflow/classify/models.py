"""Classifiers: scikit-learn Pipelines of StandardScaler and a linear model.

The scaler sits inside the Pipeline, so cross-validation fits it on the
training folds only. Scores for AUROC come from ``predict_proba`` (logistic
regression: probability of the positive class) or ``decision_function``
(SVM: signed distance to the hyperplane); :func:`score_kind` names which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from samplerflow.errors import InputError

ModelKind = Literal["logistic", "svm"]
from samplerflow.classify.choices import MODEL_KINDS  # noqa: E402  (re-exported)

# Solver tolerances. lbfgs stops when the largest gradient component falls below tol.
# With d >> n SAMPLER values, scikit-learn's default 1e-4 stopped lbfgs after about 45 of the
# about 175 iterations it needs on an 867 x 20,480 matrix, with probabilities up to 0.35 away
# from the optimum and per-fold AUROC up to 0.013 away (benchmarks/bench_classify.py matrix).
# At 1e-8 lbfgs reaches the optimum, so both engines fit the same model.
DEFAULT_TOL: dict[str, float] = {"logistic": 1e-8, "svm": 1e-4}


@dataclass(frozen=True)
class ModelSpec:
    """Hyperparameters of one classifier.

    ``C`` is the inverse L2 regularization strength of both models.
    ``class_weight`` is None or ``"balanced"``. ``max_iter`` and ``tol`` go to
    the lbfgs solver (logistic) or libsvm (svm, where ``max_iter=-1`` means no limit).
    ``tol=None`` takes :data:`DEFAULT_TOL` of the model kind.
    """

    kind: ModelKind = "logistic"
    C: float = 1.0
    class_weight: str | None = None
    random_state: int = 0
    max_iter: int = 1000
    tol: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise InputError(f"Invalid model {self.kind!r}; use one of {', '.join(MODEL_KINDS)}")
        if self.tol is None:
            object.__setattr__(self, "tol", DEFAULT_TOL[self.kind])
        if not self.tol > 0:
            raise InputError(f"Invalid tol={self.tol}: the solver tolerance must be positive")
        if not self.C > 0:
            raise InputError(f"Invalid C={self.C}: the inverse regularization strength must be positive")
        if self.class_weight not in (None, "balanced"):
            raise InputError(f"Invalid class_weight {self.class_weight!r}: use 'balanced' or leave it unset")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_estimator(spec: ModelSpec) -> LogisticRegression | SVC:
    """Return the unfitted linear model of ``spec`` (no scaler)."""
    if spec.kind == "logistic":
        return LogisticRegression(
            C=spec.C, class_weight=spec.class_weight, max_iter=spec.max_iter, tol=spec.tol,
            random_state=spec.random_state,
        )
    return SVC(
        kernel="linear", C=spec.C, class_weight=spec.class_weight, tol=spec.tol, random_state=spec.random_state,
        max_iter=-1,
    )


def build_pipeline(spec: ModelSpec) -> Pipeline:
    """Return the unfitted Pipeline StandardScaler -> linear model."""
    return Pipeline([("scaler", StandardScaler()), ("model", build_estimator(spec))])


def score_kind(spec: ModelSpec) -> str:
    """Name the score used for AUROC: ``predict_proba`` or ``decision_function``."""
    return "predict_proba" if spec.kind == "logistic" else "decision_function"


def default_threshold(spec: ModelSpec) -> float:
    """Return the untuned decision threshold on the score: 0.5 for probabilities, 0 for SVM margins."""
    return 0.5 if spec.kind == "logistic" else 0.0


def positive_scores(model: Any, X: np.ndarray) -> np.ndarray:
    """Return the positive-class score of a fitted binary Pipeline or estimator for each row of ``X``."""
    if hasattr(model, "predict_proba") and _has_proba(model):
        return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)
    return np.asarray(model.decision_function(X), dtype=np.float64)


def _has_proba(model: Any) -> bool:
    final = model[-1] if isinstance(model, Pipeline) else model
    return isinstance(final, LogisticRegression)
