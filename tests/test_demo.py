"""Acceptance on the bundled demo slide (CMU-1-Small-Region.svs, 0.499 um/px)."""

from __future__ import annotations

import json

import h5py
import pandas as pd
import pytest

from conftest import DEMO_SHEET, run_cli, sha256_tree
from samplerflow.errors import InputError

pytestmark = pytest.mark.slow

SAMPLE = "CMU-1-Small-Region"
SCALES = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def handcrafted_run(tmp_path_factory):
    inputs_before = sha256_tree(DEMO_SHEET.parent)
    outdir = tmp_path_factory.mktemp("demo") / "out"
    status = run_cli("run", "--input", DEMO_SHEET, "--outdir", outdir, "--workers", "0")
    return {"status": status, "outdir": outdir, "sample_dir": outdir / "samples" / SAMPLE, "inputs_before": inputs_before}


@pytest.fixture(scope="module")
def inception_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("demo_inception") / "out"
    status = run_cli(
        "run", "--input", DEMO_SHEET, "--outdir", outdir, "--workers", "0",
        "--backbone", "inception_v3", "--random-weights", "--max-tiles", "2",
    )
    return {"status": status, "outdir": outdir, "sample_dir": outdir / "samples" / SAMPLE}


def test_demo_exits_zero(handcrafted_run):
    assert handcrafted_run["status"] == 0


def test_demo_roi_objects_normalized(handcrafted_run):
    roi = json.loads((handcrafted_run["sample_dir"] / "aoi" / "roi.json").read_text())
    assert len(roi["objects"]) >= 1
    for item in roi["objects"]:
        for value in item["location"] + item["size"]:
            assert 0.0 <= value <= 1.0
        assert item["size"][0] > 0
        assert item["size"][1] > 0


def test_demo_tiles_exist(handcrafted_run):
    tiles = pd.read_parquet(handcrafted_run["sample_dir"] / "tiles" / "tiles.parquet")
    assert len(tiles) >= 1


def test_demo_features_per_scale(handcrafted_run):
    tiles = pd.read_parquet(handcrafted_run["sample_dir"] / "tiles" / "tiles.parquet")
    with h5py.File(handcrafted_run["sample_dir"] / "features" / "handcrafted.h5", "r") as handle:
        assert list(handle.attrs["scales"]) == list(SCALES)
        for scale in SCALES:
            matrix = handle[f"s{scale}"]
            assert matrix.shape == (len(tiles), int(handle.attrs["dim"])), scale
        assert list(handle["tile_id"][()]) == list(tiles["tile_id"])


def test_demo_sampler_table(handcrafted_run):
    table = pd.read_parquet(handcrafted_run["sample_dir"] / "sampler" / "sampler.parquet")
    assert len(table) > 0
    assert set(table["scale"]) == set(SCALES)
    assert table["value"].notna().all()


def test_demo_cohort_obs_mpp(handcrafted_run):
    import anndata

    adata = anndata.read_h5ad(handcrafted_run["outdir"] / "cohort.h5ad")
    assert list(adata.obs_names) == [SAMPLE]
    assert float(adata.obs.loc[SAMPLE, "qc_mpp"]) == 0.499
    assert str(adata.obs.loc[SAMPLE, "qc_mpp_source"]).startswith("metadata")


def test_demo_cohort_matches_sampler(handcrafted_run):
    import anndata

    adata = anndata.read_h5ad(handcrafted_run["outdir"] / "cohort.h5ad")
    table = pd.read_parquet(handcrafted_run["sample_dir"] / "sampler" / "sampler.parquet")
    assert list(adata.var_names) == list(table["feature"])
    assert list(adata.X[0]) == list(table["value"])


def test_demo_inputs_unchanged(handcrafted_run):
    assert sha256_tree(DEMO_SHEET.parent) == handcrafted_run["inputs_before"]


def test_inception_demo_exits_zero(inception_run):
    assert inception_run["status"] == 0


def test_inception_demo_features_2048(inception_run):
    with h5py.File(inception_run["sample_dir"] / "features" / "inception_v3.h5", "r") as handle:
        for scale in SCALES:
            assert handle[f"s{scale}"].shape == (2, 2048), scale
        assert json.loads(handle.attrs["provenance"])["weights"] == "random"


def test_inception_demo_records_random(inception_run):
    import anndata

    adata = anndata.read_h5ad(inception_run["outdir"] / "cohort.h5ad")
    assert str(adata.obs.loc[SAMPLE, "qc_weights_inception_v3"]).startswith("random")
    assert float(adata.obs.loc[SAMPLE, "qc_mpp"]) == 0.499


def test_inception_without_weights_fails(tmp_path, caplog):
    status = run_cli("run", "--input", DEMO_SHEET, "--outdir", tmp_path / "out", "--backbone", "inception_v3")
    assert status == 2
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "--weights inception_v3=" in logged
    assert "hf-hub:" in logged


def test_inception_without_weights_reads_no_slide(tmp_path):
    run_cli("run", "--input", DEMO_SHEET, "--outdir", tmp_path / "out", "--backbone", "inception_v3")
    assert not (tmp_path / "out" / "samples").exists()


def test_inception_load_without_weights_raises():
    from samplerflow.features import create_backbone

    with pytest.raises(InputError) as caught:
        create_backbone("inception_v3").load(weights=None, random_weights=False, device="cpu")
    assert "--weights inception_v3=" in str(caught.value)
    assert "--random-weights" in str(caught.value)
