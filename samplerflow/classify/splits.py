"""Cross-validation splits that keep every patient on one side.

Each split is a :class:`Split` with a repeat number, a fold number and the
row indices of its training and test samples. :func:`check_no_leakage`
raises when a patient appears on both sides; every generator here calls it on
every split it yields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from samplerflow.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """One train/test partition; ``name`` labels it in tables (e.g. the held-out center)."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    name: str = ""


def check_no_leakage(split: Split, patients: np.ndarray) -> None:
    """Raise AssertionError when a patient has samples in both the training and the test rows."""
    shared = np.intersect1d(patients[split.train], patients[split.test])
    if len(shared):
        raise AssertionError(
            f"repeat {split.repeat} fold {split.fold}: patients {shared[:5].tolist()} are in both training and test rows"
        )
    overlap = np.intersect1d(split.train, split.test)
    if len(overlap):
        raise AssertionError(f"repeat {split.repeat} fold {split.fold}: rows {overlap[:5].tolist()} are on both sides")


def grouped_kfold(
    y: np.ndarray, patients: np.ndarray, *, n_splits: int = 5, seed: int = 0, repeat: int = 0,
) -> Iterator[Split]:
    """Yield the folds of one patient-grouped stratified k-fold (StratifiedGroupKFold, shuffled with ``seed``)."""
    n_patients = len(np.unique(patients))
    if n_patients < n_splits:
        raise InputError(f"Only {n_patients} patients for {n_splits}-fold cross-validation; lower --folds")
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if smallest < n_splits:
        # Every test fold needs a sample of every class.
        raise InputError(
            f"The smallest class has {smallest} samples, fewer than the {n_splits} folds of stratified cross-validation; "
            f"lower --folds (--classify-folds in samplerflow run) to at most {smallest}, or add samples"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(y), 1))
    for fold, (train, test) in enumerate(splitter.split(placeholder, y, groups=patients)):
        split = Split(repeat=repeat, fold=fold, train=train, test=test)
        check_no_leakage(split, patients)
        yield split


def repeated_grouped_kfold(
    y: np.ndarray, patients: np.ndarray, *, n_splits: int = 5, repeats: int = 100, seed: int = 0,
) -> Iterator[Split]:
    """Yield ``repeats`` grouped k-folds; repeat r shuffles with seed ``seed + r``.

    ``repeats=1`` is the fixed-seed mode.
    """
    if repeats < 1:
        raise InputError(f"Invalid repeats={repeats}: give 1 or more")
    for repeat in range(repeats):
        yield from grouped_kfold(y, patients, n_splits=n_splits, seed=seed + repeat, repeat=repeat)


def leave_one_center_out(y: np.ndarray, patients: np.ndarray, centers: np.ndarray) -> Iterator[Split]:
    """Yield one split per center, holding that center's samples out.

    A center whose held-out samples are all one class is skipped with a
    warning, because AUROC is undefined on it; so is one whose removal
    leaves one class in training.
    """
    names = np.unique(centers)
    if len(names) < 2:
        raise InputError(f"Leave-one-center-out needs two or more centers; the cohort has {names.tolist()}")
    fold = 0
    for name in names:
        test = np.flatnonzero(centers == name)
        train = np.flatnonzero(centers != name)
        if len(np.unique(y[test])) < 2 or len(np.unique(y[train])) < 2:
            log.warning("Center %s skipped: its held-out or remaining samples contain a single class", name)
            continue
        split = Split(repeat=0, fold=fold, train=train, test=test, name=str(name))
        check_no_leakage(split, patients)
        fold += 1
        yield split
