"""One `samplerflow run` over every real slide and edge case of the test data.

Readable slides with tissue must finish, every other file must be skipped
with a reason naming it, and no input may change.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli, sha256_tree

# (sample id, path under the test data folder, samplesheet mpp)
SHEET_ROWS = [
    ("aperio_cmu1", "slides/aperio/CMU-1-Small-Region.svs", ""),
    ("aperio_small", "slides/aperio/small.svs", ""),
    ("hamamatsu_ndpi", "slides/hamamatsu/test3-DAPI-2-387.ndpi", ""),
    ("dicom_jpeg", "slides/dicom/wsi2dcm_jpeg/jpeg.dicom", ""),
    ("dicom_boxes", "slides/dicom/openslide_python_pair/boxes_0.dcm", ""),
    ("dicom_grayscale", "slides/dicom/highdicom_sm_image_grayscale.dcm", ""),
    ("olympus_vsi", "slides/olympus/vsi-ets-test-jpg2k.vsi", ""),
    ("olympus_missing_ets", "slides/olympus_missing_ets/Image_Mouse13_PB_H7.vsi", ""),
    ("kidney_no_mpp", "slides/plain_tiff/kidney-48-5.tif", ""),
    ("kidney_sheet_mpp", "slides/plain_tiff/kidney-48-5.tif", "0.5"),
    ("unopenable", "edge_cases/unopenable.tiff", ""),
    ("broken", "edge_cases/broken.svs", ""),
    ("vms_skeleton", "edge_cases/hamamatsu_vms_skeleton/CMU-1-40x - 2010-01-12 13.24.05.vms", ""),
]

# Readable files with tissue. small.svs and boxes_0.dcm are 16 x 16 px (8 um),
# far below one tile, so they may finish or be skipped for lack of tissue.
MUST_FINISH = {"aperio_cmu1", "hamamatsu_ndpi", "dicom_jpeg", "kidney_sheet_mpp"}
TOO_SMALL = {"aperio_small", "dicom_boxes"}
MUST_SKIP = {"dicom_grayscale", "olympus_vsi", "olympus_missing_ets", "unopenable", "broken", "vms_skeleton"}

# The kidney TIFF's only tissue is one fragment of about 60 x 30 um at 0.5 um/px,
# below the default 20000 um^2 object and 128 um tile, hence the smaller settings.
RUN_OPTIONS = [
    "--max-tiles", "8", "--scales", "1,2", "--workers", "0",
    "--min-object-area-um2", "500", "--tile-size-um", "64", "--min-tissue-fraction", "0.05",
]


def run_test_cohort(wsi_data: Path, folder: Path, *options: str) -> dict:
    """Run SHEET_ROWS through `samplerflow run` with ``options``; return the exit status, outdir, qc table and input digests."""
    sheet = folder / "samplesheet.csv"
    with open(sheet, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "patient", "image", "center", "mpp"])
        for sample, relpath, mpp in SHEET_ROWS:
            writer.writerow([sample, f"patient_{sample}", str(wsi_data / relpath), "test", mpp])

    before = sha256_tree(wsi_data)
    listings_before = {relpath: _listing(wsi_data / relpath) for _, relpath, _ in SHEET_ROWS}
    outdir = folder / "out"
    status = run_cli("run", "--input", sheet, "--outdir", outdir, *options)
    after = sha256_tree(wsi_data)
    listings_after = {relpath: _listing(wsi_data / relpath) for _, relpath, _ in SHEET_ROWS}
    qc = pd.read_csv(outdir / "qc.csv", dtype=str, keep_default_na=False).set_index("sample")
    return {
        "status": status, "outdir": outdir, "qc": qc, "before": before, "after": after,
        "listings_before": listings_before, "listings_after": listings_after, "root": wsi_data,
    }


@pytest.fixture(scope="module")
def edge_run(wsi_data: Path, tmp_path_factory):
    """Run the cohort once; return (exit status, outdir, qc table, input digests before and after)."""
    return run_test_cohort(wsi_data, tmp_path_factory.mktemp("edge"), *RUN_OPTIONS)


def _listing(slide: Path) -> list[str]:
    """Every file and folder under the slide's folder (multi-file formats keep companions there)."""
    return sorted(str(path.relative_to(slide.parent)) for path in slide.parent.rglob("*"))


pytestmark = pytest.mark.slow


def test_edge_run_exits_zero(edge_run):
    assert edge_run["status"] == 0


def test_edge_run_qc_has_every_sample(edge_run):
    assert sorted(edge_run["qc"].index) == sorted(sample for sample, _, _ in SHEET_ROWS)


@pytest.mark.parametrize("sample", sorted(MUST_FINISH))
def test_readable_slide_ok(sample, edge_run):
    row = edge_run["qc"].loc[sample]
    assert row["status"] == "ok", row["reason"]


@pytest.mark.parametrize("sample", sorted(MUST_FINISH))
def test_readable_slide_in_cohort(sample, edge_run):
    import anndata

    adata = anndata.read_h5ad(edge_run["outdir"] / "cohort.h5ad")
    assert sample in adata.obs_names


@pytest.mark.parametrize("sample", sorted(TOO_SMALL))
def test_tiny_slide_ok_or_no_tissue(sample, edge_run):
    row = edge_run["qc"].loc[sample]
    assert row["status"] in ("ok", "no_tissue", "no_tiles"), row["reason"]


@pytest.mark.parametrize("sample", sorted(MUST_SKIP))
def test_bad_file_skipped_with_reason(sample, edge_run):
    row = edge_run["qc"].loc[sample]
    relpath = dict((name, path) for name, path, _ in SHEET_ROWS)[sample]
    assert row["status"] in ("unreadable", "unsupported_format"), row["status"]
    assert str(edge_run["root"] / relpath) in row["reason"]


def test_plain_tiff_without_mpp_fails(edge_run):
    row = edge_run["qc"].loc["kidney_no_mpp"]
    assert row["status"] == "no_mpp"
    assert "kidney-48-5.tif" in row["reason"]


def test_plain_tiff_with_sheet_mpp(edge_run):
    row = edge_run["qc"].loc["kidney_sheet_mpp"]
    assert row["mpp_source"] == "samplesheet"
    assert float(row["mpp"]) == 0.5


def test_real_slide_mpp_from_metadata(edge_run):
    row = edge_run["qc"].loc["aperio_cmu1"]
    assert row["mpp_source"].startswith("metadata")
    assert float(row["mpp"]) == pytest.approx(0.499)


def test_inputs_unchanged(edge_run):
    assert edge_run["after"] == edge_run["before"]


def test_input_folders_gained_no_files(edge_run):
    assert edge_run["listings_after"] == edge_run["listings_before"]
