"""Tests of samplerflow.classify on small synthetic cohorts built directly as AnnData."""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    auc,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from samplerflow.classify import (
    ModelSpec,
    evaluate_binary,
    evaluate_ovr,
    evaluate_two_stage,
    external_validation,
    external_validation_ovr,
    external_validation_two_stage,
    grouped_kfold,
    leave_one_center_out,
    load_bundle,
    load_dataset,
    metrics,
    parse_task,
    predict,
    repeated_grouped_kfold,
    save_bundle,
    train_bundle,
)
from samplerflow.classify.cli import add_subcommands, dispatch
from samplerflow.classify.evaluate import cross_validated_scores
from samplerflow.classify.run import classify_cohort
from samplerflow.errors import InputError

BINARY_TASK = {"name": "round_vs_spindle", "classes": {"spindle": ["spindle"], "round": ["*"]}, "positive": "spindle"}
OVR_TASK = {"name": "three", "kind": "ovr", "classes": {"a": ["a"], "b": ["b"], "c": ["c"]}}
TWO_STAGE_TASK = {
    "name": "rms_then_ewing",
    "kind": "two_stage",
    "stage1": {"classes": {"RMS": ["alveolar RMS", "embryonal RMS"], "NRSTS": ["*"]}, "positive": "RMS",
               "parent": "NRSTS"},
    "stage2": {"classes": {"Ewing": ["Ewing"], "other NRSTS": ["*"]}, "positive": "Ewing"},
}
FOUR_LABELS = ("alveolar RMS", "embryonal RMS", "Ewing", "synovial")


def make_cohort(
    path: Path, *, labels: list[str], separation: float, seed: int = 0, features: int = 120,
    samples_per_patient: int = 2, centers: int = 3,
) -> Path:
    """Write a cohort.h5ad in which the k-th label (sorted) shifts features 10k..10k+9 by ``separation``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    names = sorted(set(labels))
    X = rng.standard_normal((n, features)) * 2.0 + 3.0
    for row, label in enumerate(labels):
        block = names.index(label)
        X[row, 10 * block:10 * block + 10] += separation
    backbones = ["handcrafted"] * (features // 2) + ["inception"] * (features - features // 2)
    scales = [1 + (i % 2) for i in range(features)]
    var = pd.DataFrame({
        "backbone": pd.Categorical(backbones), "scale": scales, "feature_index": np.arange(features),
        "feature_label": [f"f{i}" for i in range(features)], "percentile": 50.0,
    }, index=[f"{b}.s{s}.f{i}.q50" for i, (b, s) in enumerate(zip(backbones, scales, strict=True))])
    obs = pd.DataFrame({
        "patient": [f"P{i // samples_per_patient:03d}" for i in range(n)],
        "center": [f"C{(i // samples_per_patient) % centers}" for i in range(n)],
        "label": labels,
    }, index=[f"S{i:03d}" for i in range(n)])
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(path)
    return path


def balanced_labels(n: int, names: tuple[str, ...]) -> list[str]:
    # Patients hold two consecutive samples, so repeat each label twice to keep patients single-class.
    return [names[(i // 2) % len(names)] for i in range(n)]


@pytest.fixture(scope="module")
def separable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "separable.h5ad"
    labels = balanced_labels(80, ("round", "spindle"))
    labels[-2:] = ["", "unknown"]
    return make_cohort(path, labels=labels, separation=4.0)


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "noise.h5ad"
    return make_cohort(path, labels=balanced_labels(120, ("round", "spindle")), separation=0.0, seed=5)


# --- task files and inputs ---------------------------------------------------------------------------


def test_task_excludes_uncovered_labels(separable: Path) -> None:
    task = parse_task({"classes": {"spindle": ["spindle"], "round": ["round"]}, "positive": "spindle"})
    dataset = load_dataset(separable, task)
    assert dataset.excluded == {"": 1, "unknown": 1}
    assert dataset.n_samples == 78
    assert dataset.classes == ("round", "spindle")


def test_task_wildcard_takes_other_labels(separable: Path) -> None:
    dataset = load_dataset(separable, parse_task(BINARY_TASK))
    assert dataset.excluded == {"": 1}
    assert "unknown" in set(dataset.labels[dataset.y == 0])


def test_task_selects_backbone_and_scale(separable: Path) -> None:
    task = parse_task({**BINARY_TASK, "features": [{"backbone": "inception", "scales": [2]}, {"backbone": "handcrafted"}]})
    dataset = load_dataset(separable, task)
    assert len(dataset.feature_names) == 30 + 60
    assert dataset.feature_names[0].startswith("inception.s2.")
    assert dataset.feature_names[-1].startswith("handcrafted.")


@pytest.mark.parametrize(("raw", "message"), [
    ({"classes": {"a": ["x"], "b": ["x"]}, "positive": "a"}, "listed under both"),
    ({"classes": {"a": ["*"], "b": ["*"]}, "positive": "a"}, "only one class"),
    ({"classes": {"a": ["x"], "b": ["y"]}, "positive": "c"}, "'positive' must be one of"),
    ({"kind": "tree", "classes": {"a": ["x"], "b": ["y"]}}, "invalid kind"),
    ({"kind": "ovr", "classes": {"a": ["x"], "b": ["y"]}}, "three or more"),
])
def test_task_rejects_invalid(raw: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_task(raw, source="task.yaml")


def test_task_rejects_unknown_backbone(separable: Path) -> None:
    task = parse_task({**BINARY_TASK, "features": [{"backbone": "uni"}]})
    with pytest.raises(InputError, match="backbone 'uni' not found"):
        load_dataset(separable, task)


def test_task_rejects_unknown_scale(separable: Path) -> None:
    task = parse_task({**BINARY_TASK, "features": [{"backbone": "inception", "scales": [4]}]})
    with pytest.raises(InputError, match=r"no scale \[4\]"):
        load_dataset(separable, task)


# --- splits -------------------------------------------------------------------------------------------


def test_splits_never_share_patients(noise: Path) -> None:
    dataset = load_dataset(noise, parse_task(BINARY_TASK))
    splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=5, repeats=20, seed=3))
    splits += list(leave_one_center_out(dataset.y, dataset.patients, dataset.centers))
    assert len(splits) == 20 * 5 + 3
    for split in splits:
        assert not set(dataset.patients[split.train]) & set(dataset.patients[split.test])
        assert len(split.train) + len(split.test) == dataset.n_samples


def test_repeats_cover_each_sample_once(noise: Path) -> None:
    dataset = load_dataset(noise, parse_task(BINARY_TASK))
    splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=5, repeats=3, seed=0))
    for repeat in range(3):
        tested = np.concatenate([s.test for s in splits if s.repeat == repeat])
        assert np.array_equal(np.sort(tested), np.arange(dataset.n_samples))
    assert not np.array_equal(splits[0].test, splits[5].test)


def test_leakage_check_rejects_shared_patient() -> None:
    from samplerflow.classify.splits import Split, check_no_leakage

    patients = np.array(["A", "A", "B", "B"])
    with pytest.raises(AssertionError, match="patients"):
        check_no_leakage(Split(0, 0, train=np.array([0, 2, 3]), test=np.array([1])), patients)


# --- metrics ---------------------------------------------------------------------------------------------


def test_anchored_roc_hand_computed() -> None:
    y = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr, thresholds = metrics.anchored_roc(y, scores)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds[0] == np.inf
    assert metrics.trapezoid_auc(fpr, tpr) == pytest.approx(0.75)


def test_anchored_roc_ties_are_diagonal() -> None:
    y = np.array([0, 1, 0, 1])
    scores = np.array([0.5, 0.5, 0.2, 0.9])
    fpr, tpr, _ = metrics.anchored_roc(y, scores)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    # One tied pair counts one half: (3 + 0.5) / 4.
    assert metrics.trapezoid_auc(fpr, tpr) == pytest.approx(0.875)


def test_mean_roc_hand_computed() -> None:
    perfect = (np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    diagonal = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    grid, mean, spread = metrics.mean_roc([perfect, diagonal], points=5)
    assert grid.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert mean.tolist() == [0.0, 0.625, 0.75, 0.875, 1.0]
    assert spread.tolist() == pytest.approx([0.0, 0.375, 0.25, 0.125, 0.0])


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * y, 2)  # rounding creates ties
    fpr, tpr, thresholds = metrics.anchored_roc(y, scores)
    sk_fpr, sk_tpr, sk_thresholds = roc_curve(y, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr)
    assert np.allclose(tpr, sk_tpr)
    assert np.array_equal(thresholds[1:], sk_thresholds[1:])
    assert metrics.auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert metrics.trapezoid_auc(fpr, tpr) == pytest.approx(auc(sk_fpr, sk_tpr), abs=1e-12)
    assert metrics.rank_auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)

    table = metrics.threshold_metrics(y, scores)
    for row in table.sample(20, random_state=0).itertuples():
        predicted = (scores >= row.threshold).astype(int)
        assert row.accuracy == pytest.approx(accuracy_score(y, predicted))
        assert row.precision == pytest.approx(precision_score(y, predicted, zero_division=0))
        assert row.recall == pytest.approx(recall_score(y, predicted))
        assert row.f1 == pytest.approx(f1_score(y, predicted, zero_division=0))
    best = metrics.best_accuracy_threshold(y, scores)
    best_accuracy = accuracy_score(y, (scores >= best).astype(int))
    assert best_accuracy == max(accuracy_score(y, (scores >= t).astype(int)) for t in np.unique(scores))

    predicted = (scores >= 0.7).astype(int)
    expected = confusion_matrix(y, predicted, normalize="true") * 100
    assert np.allclose(metrics.confusion_percent(y, predicted, n_classes=2), expected)

    probabilities = np.clip(scores / scores.max(), 0, 1)
    observed, predicted_mean = calibration_curve(y, probabilities, n_bins=10)
    table = metrics.calibration(y, probabilities)
    assert np.allclose(table["fraction_positive"], observed)
    assert np.allclose(table["mean_predicted"], predicted_mean)


def test_bootstrap_ci_seeded_and_contains_auroc() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    scores = rng.random(100) + 0.5 * y
    first = metrics.bootstrap_auroc_ci(y, scores, resamples=200, seed=4)
    assert first == metrics.bootstrap_auroc_ci(y, scores, resamples=200, seed=4)
    assert first[0] < roc_auc_score(y, scores) < first[1]


# --- cross-validation ---------------------------------------------------------------------------------


def test_separable_cohort_scores_high(separable: Path) -> None:
    dataset = load_dataset(separable, parse_task(BINARY_TASK))
    splits = repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=5, repeats=3, seed=0)
    result = evaluate_binary(dataset, splits, ModelSpec(), bootstrap_resamples=200)
    assert result.summary["auroc_mean"] > 0.95
    assert result.summary["score"] == "predict_proba"
    assert result.summary["folds"] == 15
    assert len(result.tables["out_of_fold"]) == 3 * dataset.n_samples


def test_noise_cohort_scores_near_half(noise: Path) -> None:
    dataset = load_dataset(noise, parse_task(BINARY_TASK))
    splits = repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=5, repeats=10, seed=0)
    result = evaluate_binary(dataset, splits, ModelSpec(), bootstrap_resamples=200)
    assert abs(result.summary["auroc_mean"] - 0.5) < 0.1


@pytest.mark.parametrize("kind", ["logistic", "svm"])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_kernel_engine_matches_plain(noise: Path, kind: str, class_weight: str | None) -> None:
    dataset = load_dataset(noise, parse_task(BINARY_TASK))
    # Imbalanced training rows make class_weight matter.
    keep = np.flatnonzero((dataset.y == 1) | (np.arange(dataset.n_samples) % 3 != 0))
    X, y, patients = dataset.X[keep], dataset.y[keep], dataset.patients[keep]
    X[:, :5] += 0.8 * y[:, None]
    spec = ModelSpec(kind=kind, class_weight=class_weight)
    splits = list(repeated_grouped_kfold(y, patients, n_splits=5, repeats=2, seed=1))
    kernel = cross_validated_scores(X, y, splits, spec, engine="kernel")
    plain = cross_validated_scores(X, y, splits, spec, engine="plain")
    for fast, reference in zip(kernel, plain, strict=True):
        truth = y[fast.split.test]
        assert abs(roc_auc_score(truth, fast.scores) - roc_auc_score(truth, reference.scores)) <= 1e-6
        assert np.allclose(fast.scores, reference.scores, atol=1e-6)


def test_kernel_engine_matches_plain_tightly() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 300)) * 5 + 1
    y = np.repeat([0, 1], 20)
    X[:, 0] += y
    spec = ModelSpec(tol=1e-10, max_iter=5000)
    splits = list(grouped_kfold(y, np.arange(40).astype(str), n_splits=4, seed=0))
    kernel = cross_validated_scores(X, y, splits, spec, engine="kernel")
    plain = cross_validated_scores(X, y, splits, spec, engine="plain")
    for fast, reference in zip(kernel, plain, strict=True):
        assert np.allclose(fast.scores, reference.scores, atol=1e-6)


def test_same_seed_reproduces_bit_for_bit(separable: Path) -> None:
    dataset = load_dataset(separable, parse_task(BINARY_TASK))

    def run(n_jobs: int) -> pd.DataFrame:
        splits = repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=5, repeats=2, seed=7)
        result = evaluate_binary(dataset, splits, ModelSpec(random_state=7), n_jobs=n_jobs, bootstrap_resamples=100, seed=7)
        return result.tables["out_of_fold"], result.summary

    first_table, first_summary = run(1)
    second_table, second_summary = run(2)
    pd.testing.assert_frame_equal(first_table, second_table, check_exact=True)
    assert first_summary["pooled_auroc_ci95"] == second_summary["pooled_auroc_ci95"]


def test_center_split_and_external(separable: Path, noise: Path) -> None:
    task = parse_task(BINARY_TASK)
    dataset = load_dataset(separable, task)
    result = evaluate_binary(dataset, leave_one_center_out(dataset.y, dataset.patients, dataset.centers),
                             ModelSpec(), bootstrap_resamples=100)
    assert sorted(result.tables["folds"]["name"]) == ["C0", "C1", "C2"]
    external = external_validation(dataset, load_dataset(noise, task), ModelSpec(), bootstrap_resamples=100)
    assert external.summary["threshold"] == 0.5
    assert external.summary["training_cohort"]["samples"] == dataset.n_samples


# --- task kinds -----------------------------------------------------------------------------------------------


def test_ovr_confusion_and_per_class_roc(tmp_path: Path) -> None:
    names = ("a", "b", "c")
    path = make_cohort(tmp_path / "three.h5ad", labels=balanced_labels(90, names), separation=3.0)
    task = parse_task({"kind": "ovr", "classes": {"a": ["a"], "b": ["b"], "c": ["c"]}})
    dataset = load_dataset(path, task)
    splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=3, repeats=2, seed=0))
    result = evaluate_ovr(dataset, splits, ModelSpec())
    confusion = np.array(result.summary["confusion_percent"]["rows_true_columns_predicted"])
    assert confusion.shape == (3, 3)
    assert np.allclose(confusion.sum(axis=1), 100.0)
    assert set(result.curves) == set(names)
    assert all(result.summary["per_class"][n]["auroc_mean"] > 0.8 for n in names)


def test_two_stage_combined_confusion(tmp_path: Path) -> None:
    names = ("alveolar RMS", "embryonal RMS", "Ewing", "synovial")
    path = make_cohort(tmp_path / "four.h5ad", labels=balanced_labels(96, names), separation=3.0)
    task = parse_task({
        "kind": "two_stage",
        "stage1": {"classes": {"RMS": ["alveolar RMS", "embryonal RMS"], "NRSTS": ["*"]}, "positive": "RMS",
                   "parent": "NRSTS"},
        "stage2": {"classes": {"Ewing": ["Ewing"], "other NRSTS": ["*"]}, "positive": "Ewing"},
    })
    dataset = load_dataset(path, task)
    assert task.stage2 is not None
    splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=3, repeats=1, seed=0))
    result = evaluate_two_stage(dataset, task.stage2, "NRSTS", splits, ModelSpec())
    assert result.summary["final_classes"] == ["RMS", "other NRSTS", "Ewing"]
    confusion = np.array(result.summary["confusion_percent"]["rows_true_columns_predicted"])
    assert confusion.shape == (3, 3)
    assert np.allclose(confusion.sum(axis=1), 100.0)
    assert set(result.curves) == {"stage1", "stage2"}
    out = result.tables["out_of_fold"]
    assert set(out.loc[out["label"] == "Ewing", "final_class"]) == {"Ewing"}


# --- bundles and CLI -----------------------------------------------------------------------------------------------


def test_bundle_reload_predicts_identically(separable: Path, tmp_path: Path) -> None:
    task = parse_task(BINARY_TASK)
    dataset = load_dataset(separable, task)
    bundle = train_bundle(dataset, task, ModelSpec())
    before = predict(bundle, separable)
    folder = save_bundle(bundle, tmp_path / "model")
    reloaded = load_bundle(folder)
    after = predict(reloaded, separable)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert reloaded.card["model_file_bytes"] == (folder / "model.joblib").stat().st_size
    assert reloaded.card["feature_names"] == list(dataset.feature_names)
    low, high = reloaded.card["uncertain_band"]
    assert after["uncertain"].tolist() == ((after["score"] >= low) & (after["score"] <= high)).tolist()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_classify_and_predict(separable: Path, tmp_path: Path) -> None:
    task_file = tmp_path / "task.yaml"
    task_file.write_text(
        "name: round_vs_spindle\nclasses:\n  spindle: [spindle]\n  round: ['*']\npositive: spindle\n"
    )
    outdir = tmp_path / "out"
    status = dispatch(_parse(["classify", "--input", str(separable), "--task", str(task_file),
                              "--outdir", str(outdir), "--repeats", "2", "--bootstrap", "100"]))
    assert status == 0
    for name in ("metrics.json", "folds.csv", "out_of_fold.csv", "thresholds.csv", "mean_roc.csv",
                 "confusion_percent.csv", "calibration.csv", "roc.png", "thresholds.png", "confusion.png",
                 "calibration.png", "model/model.joblib", "model/model_card.json"):
        assert (outdir / name).is_file(), name
    output = tmp_path / "predictions.csv"
    assert dispatch(_parse(["predict", "--model", str(outdir / "model"), "--input", str(separable),
                            "--output", str(output)])) == 0
    table = pd.read_csv(output)
    assert len(table) == 80
    assert set(table.columns) >= {"sample", "score", "predicted", "uncertain"}


def test_cli_rejects_missing_task(separable: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Task file not found"):
        dispatch(_parse(["classify", "--input", str(separable), "--task", str(tmp_path / "none.yaml"),
                         "--outdir", str(tmp_path)]))


# --- bundles, external validation and prediction for every task kind ---------------------------------------------


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two independent three-class cohorts (training and external) with the same labels and features."""
    folder = tmp_path_factory.mktemp("three")
    labels = balanced_labels(90, ("a", "b", "c"))
    return (make_cohort(folder / "train.h5ad", labels=labels, separation=3.0, seed=1),
            make_cohort(folder / "external.h5ad", labels=labels, separation=3.0, seed=2))


@pytest.fixture(scope="module")
def four_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two independent four-label cohorts (training and external) for the two-stage task."""
    folder = tmp_path_factory.mktemp("four")
    labels = balanced_labels(96, FOUR_LABELS)
    return (make_cohort(folder / "train.h5ad", labels=labels, separation=3.0, seed=3),
            make_cohort(folder / "external.h5ad", labels=labels, separation=3.0, seed=4))


def _round_trip(bundle, folder: Path, cohort: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    before = predict(bundle, cohort)
    after = predict(load_bundle(save_bundle(bundle, folder)), cohort)
    return before, after


def test_ovr_bundle_reload_predicts_identically(three_class: tuple[Path, Path], tmp_path: Path) -> None:
    train, external = three_class
    task = parse_task({**OVR_TASK, "thresholds": {"b": 0.7}})
    dataset = load_dataset(train, task)
    before, after = _round_trip(train_bundle(dataset, task, ModelSpec()), tmp_path / "model", external)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    card = load_bundle(tmp_path / "model").card
    assert card["models"] == ["a", "b", "c"]
    assert card["thresholds"] == {"a": 0.5, "b": 0.7, "c": 0.5}
    assert card["model_file_bytes"] == (tmp_path / "model" / "model.joblib").stat().st_size
    assert card["training_cohort"]["class_counts"] == {"a": 30, "b": 30, "c": 30}
    scores = after[["score_a", "score_b", "score_c"]].to_numpy()
    expected = np.array(["a", "b", "c"])[np.argmax(scores - np.array([0.5, 0.7, 0.5]), axis=1)]
    assert after["predicted"].tolist() == expected.tolist()
    assert (after["predicted"] == after["label"]).mean() > 0.9
    confident = (scores > 0.6).sum(axis=1)
    assert after["uncertain"].tolist() == (confident != 1).tolist()


def test_two_stage_bundle_reload_predicts_identically(four_label: tuple[Path, Path], tmp_path: Path) -> None:
    train, external = four_label
    task = parse_task(TWO_STAGE_TASK)
    dataset = load_dataset(train, task)
    before, after = _round_trip(train_bundle(dataset, task, ModelSpec()), tmp_path / "model", external)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    card = load_bundle(tmp_path / "model").card
    assert card["models"] == ["stage1", "stage2"]
    assert card["classes"] == ["RMS", "other NRSTS", "Ewing"]
    assert card["training_cohort"]["final_class_counts"] == {"RMS": 48, "other NRSTS": 24, "Ewing": 24}
    routed = after["score_stage1"] < 0.5
    assert after.loc[~routed, "score_stage2"].isna().all()
    assert after.loc[routed, "score_stage2"].notna().all()
    assert set(after.loc[~routed, "predicted"]) == {"RMS"}
    assert set(after.loc[routed, "predicted"]) <= {"other NRSTS", "Ewing"}
    assert (after["predicted"] == after["class"]).mean() > 0.9


def test_ovr_external_validation(three_class: tuple[Path, Path]) -> None:
    train, external = three_class
    task = parse_task(OVR_TASK)
    result = external_validation_ovr(load_dataset(train, task), load_dataset(external, task), ModelSpec())
    confusion = np.array(result.summary["confusion_percent"]["rows_true_columns_predicted"])
    assert confusion.shape == (3, 3)
    assert np.allclose(confusion.sum(axis=1), 100.0)
    assert set(result.curves) == {"a", "b", "c"}
    assert result.summary["folds"] == 1
    assert result.summary["thresholds"] == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert result.summary["training_cohort"]["cohort"] == str(train)
    assert all(result.summary["per_class"][n]["auroc_mean"] > 0.9 for n in ("a", "b", "c"))
    assert result.tables["folds"]["name"].tolist() == ["external"]
    assert len(result.tables["out_of_fold"]) == 90


def test_two_stage_external_validation(four_label: tuple[Path, Path]) -> None:
    train, external = four_label
    task = parse_task(TWO_STAGE_TASK)
    assert task.stage2 is not None
    result = external_validation_two_stage(load_dataset(train, task), load_dataset(external, task), task.stage2,
                                           "NRSTS", ModelSpec())
    confusion = np.array(result.summary["confusion_percent"]["rows_true_columns_predicted"])
    assert result.summary["final_classes"] == ["RMS", "other NRSTS", "Ewing"]
    assert confusion.shape == (3, 3)
    assert np.allclose(confusion.sum(axis=1), 100.0)
    assert set(result.curves) == {"stage1", "stage2"}
    assert result.summary["per_stage"]["stage1"]["auroc_mean"] > 0.9
    assert result.summary["per_stage"]["stage2"]["auroc_mean"] > 0.9
    assert result.summary["per_stage"]["stage1"]["auroc_sd"] == 0.0
    assert result.summary["threshold"] == 0.5


def test_predict_marks_labels_outside_task(separable: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = parse_task({"name": "strict", "classes": {"spindle": ["spindle"], "round": ["round"]}, "positive": "spindle"})
    bundle = train_bundle(load_dataset(separable, task), task, ModelSpec())
    with caplog.at_level("WARNING", logger="samplerflow.classify.bundle"):
        table = predict(bundle, separable)
    assert len(table) == 80
    by_sample = table.set_index("sample")
    # S078 has an empty label and S079 the label "unknown" (see the separable fixture).
    assert pd.isna(by_sample.loc["S078", "label_in_task"])
    assert by_sample.loc["S079", "label_in_task"] == False
    assert by_sample["label_in_task"].sum() == 78
    assert by_sample.loc["S079", "class"] == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "1 samples have labels outside the classes of task 'strict'" in warnings[0]
    assert "S079" in warnings[0]
    assert "S078" not in warnings[0]


def test_predict_no_warning_when_labels_covered(separable: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = parse_task(BINARY_TASK)
    bundle = train_bundle(load_dataset(separable, task), task, ModelSpec())
    with caplog.at_level("WARNING", logger="samplerflow.classify.bundle"):
        table = predict(bundle, separable)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert table["label_in_task"].sum() == 79


def test_old_binary_bundle_still_loads(separable: Path, tmp_path: Path) -> None:
    import joblib

    task = parse_task(BINARY_TASK)
    bundle = train_bundle(load_dataset(separable, task), task, ModelSpec())
    folder = save_bundle(bundle, tmp_path / "model")
    # Bundles written before multi-model bundles stored the bare Pipeline and no "models" key.
    joblib.dump(bundle.models["binary"], folder / "model.joblib")
    card = load_bundle(folder).card
    del card["models"]
    (folder / "model_card.json").write_text(__import__("json").dumps(card))
    pd.testing.assert_frame_equal(predict(load_bundle(folder), separable), predict(bundle, separable), check_exact=True)


# --- classify_cohort and the command line for every task kind ------------------------------------------------------


def _write_task(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("kind", ["ovr", "two_stage"])
def test_cli_multiclass_external_and_predict(
    kind: str, three_class: tuple[Path, Path], four_label: tuple[Path, Path], tmp_path: Path,
) -> None:
    train, external = three_class if kind == "ovr" else four_label
    task_file = _write_task(tmp_path / "task.yaml", OVR_TASK if kind == "ovr" else TWO_STAGE_TASK)
    outdir = tmp_path / "external"
    assert dispatch(_parse(["classify", "--input", str(train), "--task", str(task_file), "--outdir", str(outdir),
                            "--split", "external", "--external", str(external)])) == 0
    for name in ("metrics.json", "folds.csv", "out_of_fold.csv", "mean_roc.csv", "confusion_percent.csv",
                 "roc.png", "confusion.png", "model/model.joblib", "model/model_card.json"):
        assert (outdir / name).is_file(), name
    metrics_json = __import__("json").loads((outdir / "metrics.json").read_text())
    assert metrics_json["split"] == "external"
    assert metrics_json["cohort"]["cohort"] == str(external)
    assert metrics_json["training_cohort"]["cohort"] == str(train)

    output = tmp_path / "predictions.csv"
    assert dispatch(_parse(["predict", "--model", str(outdir / "model"), "--input", str(external),
                            "--output", str(output)])) == 0
    table = pd.read_csv(output, keep_default_na=False)
    score_columns = ["score_a", "score_b", "score_c"] if kind == "ovr" else ["score_stage1", "score_stage2"]
    assert set(table.columns) >= {"sample", "label", "predicted", "uncertain", "class", "label_in_task", *score_columns}
    assert len(table) == (90 if kind == "ovr" else 96)
    assert (table["predicted"] == table["class"]).mean() > 0.9


def test_classify_cohort_returns_metrics(separable: Path, tmp_path: Path) -> None:
    task_file = _write_task(tmp_path / "task.yaml", BINARY_TASK)
    summary = classify_cohort(cohort=separable, task=task_file, outdir=tmp_path / "out", repeats=2, bootstrap=50,
                              bundle=False)
    written = __import__("json").loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["auroc_mean"] == summary["auroc_mean"]
    assert written["seed"] == 0
    assert summary["folds"] == 10
    assert not (tmp_path / "out" / "model").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"split": "external"}, "needs --external"),
    ({"split": "kfold", "external": Path("other.h5ad")}, "used only with --split external"),
    ({"split": "tree"}, "Invalid split"),
    ({"folds": 1}, "Invalid folds=1"),
    ({"repeats": 0}, "Invalid repeats=0"),
    ({"model": "forest"}, "Invalid model"),
    ({"tol": -1.0}, "Invalid tol"),
])
def test_classify_cohort_rejects_options(separable: Path, tmp_path: Path, options: dict, message: str) -> None:
    task_file = _write_task(tmp_path / "task.yaml", BINARY_TASK)
    with pytest.raises(InputError, match=message):
        classify_cohort(cohort=separable, task=task_file, outdir=tmp_path / "out", **options)


def test_classify_cohort_rejects_ovr_threshold(three_class: tuple[Path, Path], tmp_path: Path) -> None:
    task_file = _write_task(tmp_path / "task.yaml", OVR_TASK)
    with pytest.raises(InputError, match="per-class 'thresholds'"):
        classify_cohort(cohort=three_class[0], task=task_file, outdir=tmp_path / "out", threshold=0.3)


def test_classify_cohort_reproducible(four_label: tuple[Path, Path], tmp_path: Path) -> None:
    task_file = _write_task(tmp_path / "task.yaml", TWO_STAGE_TASK)
    tables = []
    for run in ("first", "second"):
        classify_cohort(cohort=four_label[0], task=task_file, outdir=tmp_path / run, repeats=2, seed=3, bundle=False)
        tables.append((tmp_path / run / "out_of_fold.csv").read_bytes())
    assert tables[0] == tables[1]


# --- benchmark grid ------------------------------------------------------------------------------------------------------


def make_grid_cohort(path: Path, *, n: int = 100, seed: int = 0) -> Path:
    """Write a cohort with backbones handcrafted and inception at scales 1-3 (20 values each).

    The label is the sign of z1 + z2. Inception scale 1 carries z1 and scale 2
    carries z2, so the pair 1+2 separates the classes and every other
    configuration carries half of the signal or none.
    """
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 2))
    labels = np.where(latent.sum(axis=1) > 0, "spindle", "round")
    blocks, backbones, scales = [], [], []
    for backbone in ("handcrafted", "inception"):
        for scale in (1, 2, 3):
            block = rng.standard_normal((n, 20))
            if backbone == "inception" and scale in (1, 2):
                block[:, :5] += 3.0 * latent[:, [scale - 1]]
            blocks.append(block)
            backbones += [backbone] * 20
            scales += [scale] * 20
    var = pd.DataFrame({"backbone": backbones, "scale": scales},
                       index=[f"{b}.s{s}.f{i % 20}" for i, (b, s) in enumerate(zip(backbones, scales, strict=True))])
    obs = pd.DataFrame({"patient": [f"P{i:03d}" for i in range(n)], "center": [f"C{i % 3}" for i in range(n)],
                        "label": labels}, index=[f"S{i:03d}" for i in range(n)])
    ad.AnnData(X=np.hstack(blocks), obs=obs, var=var).write_h5ad(path)
    return path


def test_grid_ranks_configurations_and_validates_best(tmp_path: Path) -> None:
    cohort = make_grid_cohort(tmp_path / "grid.h5ad")
    task_file = _write_task(tmp_path / "task.yaml", BINARY_TASK)
    outdir = tmp_path / "grid"
    assert dispatch(_parse(["classify-grid", "--input", str(cohort), "--task", str(task_file), "--outdir", str(outdir),
                            "--repeats", "3", "--bootstrap", "50"])) == 0
    table = pd.read_csv(outdir / "grid.csv", dtype={"scales": str})
    assert len(table) == 2 * (3 + 3)
    assert set(zip(table["backbone"], table["scales"], strict=True)) == {
        (b, s) for b in ("handcrafted", "inception") for s in ("1", "2", "3", "1+2", "1+3", "2+3")
    }
    assert table["rank"].tolist() == list(range(1, 13))
    assert table["auroc_mean"].is_monotonic_decreasing
    assert (table.loc[0, "backbone"], table.loc[0, "scales"]) == ("inception", "1+2")
    assert table.loc[0, "auroc_mean"] > 0.9
    assert table.loc[0, "auroc_mean"] - table.loc[1, "auroc_mean"] > 0.05
    assert table.loc[0, "features"] == 40
    best = __import__("json").loads((outdir / "best" / "metrics.json").read_text())
    assert best["task"]["features"] == [{"backbone": "inception", "scales": [1, 2]}]
    assert best["repeats"] == 3
    assert best["folds"] == 15
    assert (outdir / "best" / "model" / "model_card.json").is_file()


def test_grid_limited_by_task_features(tmp_path: Path) -> None:
    from samplerflow.classify.grid import grid_configs

    cohort = make_grid_cohort(tmp_path / "grid.h5ad", n=20)
    var = ad.read_h5ad(cohort).var
    task = parse_task({**BINARY_TASK, "features": [{"backbone": "inception", "scales": [1, 3]}]})
    names = [config.name for config in grid_configs(var, task, source="grid.h5ad")]
    assert names == ["inception scale 1", "inception scale 3", "inception scale 1+3"]
    with pytest.raises(InputError, match="has no scale"):
        grid_configs(var, parse_task({**BINARY_TASK, "features": [{"backbone": "inception", "scales": [4]}]}),
                     source="grid.h5ad")


@pytest.mark.parametrize("kind", ["logistic", "svm"])
def test_shared_gram_matches_per_target(three_class: tuple[Path, Path], kind: str) -> None:
    from samplerflow.classify.evaluate import cross_validated_target_scores

    dataset = load_dataset(three_class[0], parse_task(OVR_TASK))
    targets = [(dataset.y == c).astype(np.int64) for c in range(3)]
    splits = list(repeated_grouped_kfold(dataset.y, dataset.patients, n_splits=3, repeats=1, seed=0))
    spec = ModelSpec(kind=kind)
    shared = cross_validated_target_scores(dataset.X, targets, splits, spec)
    plain = cross_validated_target_scores(dataset.X, targets, splits, spec, engine="plain")
    for index, y in enumerate(targets):
        separate = cross_validated_scores(dataset.X, y, splits, spec)
        for together, alone, reference in zip(shared[index], separate, plain[index], strict=True):
            assert np.array_equal(together.scores, alone.scores)
            assert np.allclose(together.scores, reference.scores, atol=1e-6)
