"""Cross-validation folds solved in the span of the training rows.

With n training slides and d >> n standardized features Xs, the L2-penalized
solution w of logistic regression and of the linear SVM lies in the row space
of Xs (representer theorem). Both are therefore solved from the n x n Gram
matrix K = Xs Xs^T:

- SVM: ``SVC(kernel="precomputed")`` on K solves the same libsvm problem as
  ``SVC(kernel="linear")`` on Xs, so the scores agree to rounding.
- Logistic regression: with the eigendecomposition K = U S U^T, the features
  F = U S^(1/2) are Xs expressed in an orthonormal basis V of the row space
  (Xs = U S^(1/2) V^T). scikit-learn's lbfgs on F minimizes the same
  objective as on Xs with w = V v. The optimum is unique, so scores agree up
  to the solver tolerance.

lbfgs takes the same steps in both bases (its updates use inner products
and function values, which an orthonormal change of basis keeps), but it
stops on the largest gradient component, which depends on the basis. At
tol=1e-4 the plain Pipeline stopped about 130 iterations before the optimum
on the 867 x 20,480 benchmark matrix, and the engines differed by up to 0.014
AUROC per fold. The default tol for logistic regression is therefore 1e-8
(:data:`~samplerflow.classify.models.DEFAULT_TOL`). There both engines reach
the optimum and agree within 1e-6 in the tests.

Per-fold work that is shared: the column sums of X (so each fold's mean and
variance cost one pass over its test rows, not its training rows) and one
float64 copy of X centred on the overall mean (which keeps the variance
formula free of cancellation). Each fold still pays one n x d x n product
for its Gram matrix, because its scaler differs; one-vs-rest classes share
each fold's Gram matrix (:func:`fit_score_fold_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from samplerflow.classify.models import ModelSpec


@dataclass(frozen=True)
class CenteredMatrix:
    """X minus its overall column mean, with column sums and sums of squares."""

    values: np.ndarray
    column_sum: np.ndarray
    column_sum_squares: np.ndarray

    @classmethod
    def from_matrix(cls, X: np.ndarray) -> CenteredMatrix:
        centered = np.asarray(X, dtype=np.float64) - np.asarray(X, dtype=np.float64).mean(axis=0)
        return cls(centered, centered.sum(axis=0), np.einsum("ij,ij->j", centered, centered))

    def fold_scaler(self, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return mean and scale of the ``train`` rows, as StandardScaler computes them.

        When ``train`` and ``test`` partition all rows, the sums come from the
        precomputed totals minus the test rows. Like StandardScaler, a column
        whose variance is zero up to rounding gets scale 1.
        """
        n_rows = self.values.shape[0]
        if len(train) + len(test) == n_rows:
            test_rows = self.values[test]
            total = self.column_sum - test_rows.sum(axis=0)
            total_squares = self.column_sum_squares - np.einsum("ij,ij->j", test_rows, test_rows)
        else:
            train_rows = self.values[train]
            total = train_rows.sum(axis=0)
            total_squares = np.einsum("ij,ij->j", train_rows, train_rows)
        mean = total / len(train)
        variance = np.maximum(total_squares / len(train) - mean**2, 0.0)
        scale = np.sqrt(variance)
        # NOTE: StandardScaler's constant-column rule (sklearn.preprocessing._data._handle_zeros_in_scale)
        # compares the variance with a bound proportional to eps * mean^2; this bound is close to it,
        # not identical, so near-constant columns may be scaled differently.
        scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
        return mean, scale


def fold_gram(data: CenteredMatrix, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return K_train (n_train x n_train) and K_test (n_test x n_train) on the fold's standardized rows."""
    mean, scale = data.fold_scaler(train, test)
    inverse = 1.0 / scale
    train_rows = data.values[train]
    train_rows -= mean
    train_rows *= inverse
    test_rows = data.values[test]
    test_rows -= mean
    test_rows *= inverse
    return train_rows @ train_rows.T, test_rows @ train_rows.T


def fit_score_fold(
    data: CenteredMatrix, y: np.ndarray, train: np.ndarray, test: np.ndarray, spec: ModelSpec,
) -> np.ndarray:
    """Fit ``spec`` on the training rows and return the test rows' scores (as the plain Pipeline would)."""
    return fit_score_fold_targets(data, [y], train, test, spec)[0]


def fit_score_fold_targets(
    data: CenteredMatrix, targets: Sequence[np.ndarray], train: np.ndarray, test: np.ndarray, spec: ModelSpec,
) -> list[np.ndarray]:
    """Fit one model per 0/1 target vector on the same training rows; return each one's test scores.

    The Gram matrices (and for logistic regression their eigendecomposition)
    depend only on the rows, so one-vs-rest classes share them.
    """
    K_train, K_test = fold_gram(data, train, test)
    # The n x n solves are too small to gain from BLAS threads, and on a busy machine the
    # threads' spinning slowed them down several-fold (measured with OpenBLAS 0.3.31).
    with threadpool_limits(limits=1, user_api="blas"):
        if spec.kind == "svm":
            return [_solve_svm(K_train, K_test, y[train], spec) for y in targets]
        F_train, F_test = _row_space_features(K_train, K_test)
        return [_solve_logistic(F_train, F_test, y[train], spec) for y in targets]


def _solve_svm(K_train: np.ndarray, K_test: np.ndarray, y_train: np.ndarray, spec: ModelSpec) -> np.ndarray:
    svm = SVC(kernel="precomputed", C=spec.C, class_weight=spec.class_weight, tol=spec.tol,
              random_state=spec.random_state, max_iter=-1)
    svm.fit(K_train, y_train)
    return np.asarray(svm.decision_function(K_test), dtype=np.float64)


def _row_space_features(K_train: np.ndarray, K_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the training and test rows in an orthonormal basis of the training rows' span."""
    eigenvalues, eigenvectors = np.linalg.eigh(K_train)
    # Centred training rows have rank <= n_train - 1: drop the numerically zero directions.
    keep = eigenvalues > eigenvalues[-1] * len(eigenvalues) * np.finfo(np.float64).eps
    root = np.sqrt(eigenvalues[keep])
    basis = eigenvectors[:, keep]
    return basis * root, (K_test @ basis) / root


def _solve_logistic(F_train: np.ndarray, F_test: np.ndarray, y_train: np.ndarray, spec: ModelSpec) -> np.ndarray:
    model = LogisticRegression(C=spec.C, class_weight=spec.class_weight, max_iter=spec.max_iter, tol=spec.tol,
                               random_state=spec.random_state)
    model.fit(F_train, y_train)
    return np.asarray(model.predict_proba(F_test)[:, 1], dtype=np.float64)
