"""`samplerflow run` on the real demo slide with every backbone and several scales in one run."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pytest

from samplerflow.cli import main
from samplerflow.features import available_backbones, create_backbone

REPO = Path(__file__).resolve().parent.parent
SCALES = (1, 2)


@pytest.fixture(scope="module")
def all_backbones_cohort(tmp_path_factory: pytest.TempPathFactory) -> ad.AnnData:
    outdir = tmp_path_factory.mktemp("all-backbones")
    status = main([
        "--no-progress", "run",
        "--input", str(REPO / "assets" / "demo" / "samplesheet.csv"),
        "--outdir", str(outdir),
        "--backbone", ",".join(available_backbones()),
        "--random-weights",
        "--scales", ",".join(str(scale) for scale in SCALES),
        "--max-tiles", "2",
        "--batch-size", "2",
    ])
    assert status == 0
    return ad.read_h5ad(outdir / "cohort.h5ad")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", available_backbones())
def test_sampler_names_per_backbone_and_scale(all_backbones_cohort: ad.AnnData, backbone: str):
    dim = create_backbone(backbone).dim
    var = all_backbones_cohort.var
    for scale in SCALES:
        names = var.index[(var["backbone"] == backbone) & (var["scale"] == scale)]
        assert len(names) == dim * 10
        assert f"{backbone}.s{scale}.f{dim - 1}.q95" in names


@pytest.mark.slow
@pytest.mark.parametrize("backbone", available_backbones())
def test_weights_provenance_per_backbone(all_backbones_cohort: ad.AnnData, backbone: str):
    recorded = str(all_backbones_cohort.obs[f"qc_weights_{backbone}"].iloc[0])
    if create_backbone(backbone).needs_weights:
        assert recorded.startswith("random")
    else:
        assert recorded == "none"
