"""Whole-pipeline recovery: synthetic slides -> `samplerflow run` -> classify_cohort.

The synthetic generator draws two tissue kinds (round and spindle nuclei).
The harness must separate them from the pipeline's SAMPLER vectors, and give
AUROC near 0.5 when the labels are shuffled.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from samplerflow.classify import load_bundle, predict
from samplerflow.classify.run import classify_cohort
from samplerflow.runner import RunConfig, run
from samplerflow.synthetic import write_cohort
from samplerflow.tiling import TilingParams

pytestmark = pytest.mark.slow

SLIDES_PER_KIND = 10
TASK = {"name": "round_vs_spindle", "classes": {"spindle": ["spindle"], "round": ["round"]}, "positive": "spindle"}
# Label shuffles for the noise check. One shuffle of 20 slides gives a cross-validated AUROC anywhere
# from about 0.15 to 0.7 (measured over 12 shuffles), so the check averages many.
NOISE_SHUFFLES = 20


@pytest.fixture(scope="module")
def pipeline_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the local pipeline (handcrafted backbone, scales 1 and 2) on 10 round and 10 spindle slides."""
    folder = tmp_path_factory.mktemp("pipeline")
    # Small slides at 1 um/px keep the run near a minute on 2 cores; each contains two tissue objects.
    sheet = write_cohort(folder / "slides", per_kind=SLIDES_PER_KIND, mpp=1.0, width_um=1200.0, height_um=900.0)
    status = run(RunConfig(input=sheet, outdir=folder / "run", tiling=TilingParams(scales=(1, 2)),
                           num_workers=0, progress=False))
    assert status == 0
    return folder / "run" / "cohort.h5ad"


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("task") / "task.yaml"
    path.write_text(yaml.safe_dump(TASK))
    return path


def test_pipeline_cohort_has_every_slide(pipeline_cohort: Path) -> None:
    adata = ad.read_h5ad(pipeline_cohort)
    assert adata.n_obs == 2 * SLIDES_PER_KIND
    assert sorted(set(adata.obs["label"].astype(str))) == ["round", "spindle"]
    assert adata.obs["patient"].nunique() == 2 * SLIDES_PER_KIND
    assert sorted(set(adata.var["scale"].astype(int))) == [1, 2]


def test_pipeline_recovers_tissue_kinds(pipeline_cohort: Path, task_file: Path, tmp_path: Path) -> None:
    summary = classify_cohort(cohort=pipeline_cohort, task=task_file, outdir=tmp_path / "classify", repeats=20,
                              bootstrap=200)
    assert summary["folds"] == 100
    assert summary["auroc_mean"] >= 0.9
    assert json.loads((tmp_path / "classify" / "metrics.json").read_text())["auroc_mean"] == summary["auroc_mean"]

    table = predict(load_bundle(tmp_path / "classify" / "model"), pipeline_cohort)
    assert (table["predicted"] == table["label"]).all()
    assert table["label_in_task"].all()


def test_pipeline_shuffled_labels_near_half(pipeline_cohort: Path, task_file: Path, tmp_path: Path) -> None:
    adata = ad.read_h5ad(pipeline_cohort)
    kinds = adata.obs["label"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    aurocs = []
    for shuffle in range(NOISE_SHUFFLES):
        noisy = adata.copy()
        noisy.obs["label"] = rng.permutation(kinds)
        path = tmp_path / f"shuffle{shuffle}.h5ad"
        noisy.write_h5ad(path)
        summary = classify_cohort(cohort=path, task=task_file, outdir=tmp_path / f"shuffle{shuffle}", repeats=5,
                                  bootstrap=50, bundle=False)
        aurocs.append(summary["auroc_mean"])
    # One shuffle's AUROC has an SD of about 0.17, so the mean of 20 has an SD near 0.04, and 0.12 is 3 SD.
    assert abs(float(np.mean(aurocs)) - 0.5) < 0.12, pd.Series(aurocs).describe()
