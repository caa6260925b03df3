"""One `samplerflow run` over the real slides and edge cases with every harmonization stage on.

Conversion, per-object conversion, focus QC, resampling to 0.25 um/px,
Macenko stain normalization and the nuclei backbone all run. Every slide
must finish or be excluded with a reason in qc.csv, the converted copies
must read back with the source's mpp and without associated images, and
no input may change.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import openslide
import pytest
import tifffile
from test_edge_cohort import (
    MUST_FINISH,
    MUST_SKIP,
    RUN_OPTIONS,
    SHEET_ROWS,
    TOO_SMALL,
    run_test_cohort,
)

from samplerflow.convert import object_box
from samplerflow.io import sha256_file
from samplerflow.slide import open_slide
from samplerflow.stages import MIN_OUTLIER_COHORT
from samplerflow.stain import DEFAULT_REFERENCE

pytestmark = pytest.mark.slow

TARGET_MPP = 0.25
HARMONIZE_OPTIONS = [
    "--convert", "--convert-objects", "--focus-qc", "--target-mpp", str(TARGET_MPP),
    "--stain-norm", "macenko", "--backbone", "handcrafted,nuclei",
]
# Stages after which a slide has a converted copy and an aoi record.
REACHED_AOI = ("ok", "no_tissue", "out_of_focus")


@pytest.fixture(scope="module")
def harmonized_run(wsi_data: Path, tmp_path_factory):
    """Run the cohort once and return the exit status, outdir, qc table and input digests before and after."""
    run = run_test_cohort(wsi_data, tmp_path_factory.mktemp("harmonized"), *RUN_OPTIONS, *HARMONIZE_OPTIONS)
    run["sheet_mpp"] = {sample: mpp for sample, _, mpp in SHEET_ROWS}
    run["paths"] = {sample: wsi_data / relpath for sample, relpath, _ in SHEET_ROWS}
    return run


def _samples_with(run: dict, statuses: tuple[str, ...]) -> list[str]:
    return [sample for sample in run["qc"].index if run["qc"].loc[sample, "status"] in statuses]


def _source_mpp(run: dict, sample: str) -> float:
    mpp = run["sheet_mpp"][sample]
    with open_slide(run["paths"][sample], mpp=float(mpp) if mpp else None) as reader:
        return reader.info.mpp


def _converted(run: dict, sample: str) -> Path:
    return run["outdir"] / "samples" / sample / "convert" / f"{sample}.ome.tiff"


def test_harmonized_run_exits_zero(harmonized_run):
    assert harmonized_run["status"] == 0


def test_harmonized_qc_has_every_sample(harmonized_run):
    assert sorted(harmonized_run["qc"].index) == sorted(sample for sample, _, _ in SHEET_ROWS)


@pytest.mark.parametrize("sample", [sample for sample, _, _ in SHEET_ROWS])
def test_excluded_slide_explained(sample, harmonized_run):
    row = harmonized_run["qc"].loc[sample]
    if row["status"] == "ok":
        assert row["reason"] == ""
        assert row["failed_stage"] == ""
        return
    # Stages after conversion read, and name, the converted copy.
    named = (str(harmonized_run["paths"][sample]), str(_converted(harmonized_run, sample)))
    assert any(path in row["reason"] for path in named), row["reason"]
    assert row["failed_stage"] in ("convert", "aoi", "convert_objects", "focus", "tile", "extract", "sampler")


@pytest.mark.parametrize("sample", sorted(MUST_FINISH))
def test_readable_slide_ok_or_out_of_focus(sample, harmonized_run):
    row = harmonized_run["qc"].loc[sample]
    assert row["status"] in ("ok", "out_of_focus"), row["reason"]
    if row["status"] == "out_of_focus":
        assert row["failed_stage"] == "focus"
        assert row["focus_flag"] == "out_of_focus"
        assert "blurred" in row["reason"]
        assert (harmonized_run["outdir"] / "samples" / sample / row["focus_heatmap"]).is_file()


def test_sharp_he_slide_ok(harmonized_run):
    # CMU-1 is an in-focus H&E scan, which the focus tests do not flag at the default threshold.
    row = harmonized_run["qc"].loc["aperio_cmu1"]
    assert row["status"] == "ok", row["reason"]
    assert row["focus_flag"] == ""


@pytest.mark.parametrize("sample", sorted(TOO_SMALL))
def test_tiny_slide_ok_or_no_tissue(sample, harmonized_run):
    row = harmonized_run["qc"].loc[sample]
    assert row["status"] in ("ok", "no_tissue", "no_tiles"), row["reason"]


@pytest.mark.parametrize("sample", sorted(MUST_SKIP))
def test_bad_file_fails_conversion(sample, harmonized_run):
    row = harmonized_run["qc"].loc[sample]
    assert row["status"] in ("unreadable", "unsupported_format"), row["status"]
    assert row["failed_stage"] == "convert"
    assert str(harmonized_run["paths"][sample]) in row["reason"]
    assert not _converted(harmonized_run, sample).exists()


def test_no_mpp_fails_conversion(harmonized_run):
    row = harmonized_run["qc"].loc["kidney_no_mpp"]
    assert row["status"] == "no_mpp"
    assert row["failed_stage"] == "convert"
    assert "kidney-48-5.tif" in row["reason"]


def test_converted_slides_exist(harmonized_run):
    converted = _samples_with(harmonized_run, REACHED_AOI)
    assert set(MUST_FINISH) <= set(converted)
    for sample in converted:
        assert harmonized_run["qc"].loc[sample, "converted"] == f"{sample}.ome.tiff"
        assert _converted(harmonized_run, sample).is_file(), sample


@pytest.mark.parametrize("sample", sorted(MUST_FINISH))
def test_converted_openslide_mpp_no_associated(sample, harmonized_run):
    with openslide.OpenSlide(str(_converted(harmonized_run, sample))) as handle:
        assert handle.associated_images == {}
        mpp = float(handle.properties[openslide.PROPERTY_NAME_MPP_X])
    assert mpp == pytest.approx(_source_mpp(harmonized_run, sample), rel=1e-6)


@pytest.mark.parametrize("sample", sorted(MUST_FINISH))
def test_converted_tifffile_mpp_one_series(sample, harmonized_run):
    with tifffile.TiffFile(_converted(harmonized_run, sample)) as tiff:
        assert tiff.is_ome
        # One image whose reduced levels are SubIFDs, so no page can be a label, macro or thumbnail.
        assert len(tiff.series) == 1
        assert len(tiff.pages) == 1
        assert not any(name in tiff.series[0].name.lower() for name in ("label", "macro", "thumbnail"))
        levels = len(tiff.series[0].levels)
        numerator, denominator = tiff.pages[0].tags["XResolution"].value
    assert 1e4 / (numerator / denominator) == pytest.approx(_source_mpp(harmonized_run, sample), rel=1e-6)
    assert levels == int(harmonized_run["qc"].loc[sample, "convert_levels"])


def test_converted_slide_read_back_unchanged_geometry(harmonized_run):
    for sample in sorted(MUST_FINISH):
        mpp = harmonized_run["sheet_mpp"][sample]
        with open_slide(harmonized_run["paths"][sample], mpp=float(mpp) if mpp else None) as source:
            expected = (source.info.width, source.info.height)
        with open_slide(_converted(harmonized_run, sample)) as converted:
            assert (converted.info.width, converted.info.height) == expected, sample


def test_object_files_one_per_roi_object(harmonized_run):
    checked = 0
    for sample in _samples_with(harmonized_run, ("ok", "out_of_focus")):
        roi = json.loads((harmonized_run["outdir"] / "samples" / sample / "aoi" / "roi.json").read_text())
        files = sorted((harmonized_run["outdir"] / "samples" / sample / "convert" / "objects").glob("*.ome.tiff"))
        assert len(files) == len(roi["objects"]) == int(harmonized_run["qc"].loc[sample, "object_files"]), sample
        checked += 1
    assert checked >= len(MUST_FINISH)


def test_object_files_cover_object_boxes(harmonized_run):
    for sample in sorted(MUST_FINISH):
        base = harmonized_run["outdir"] / "samples" / sample
        objects = json.loads((base / "aoi" / "roi.json").read_text())["objects"]
        with open_slide(_converted(harmonized_run, sample)) as converted:
            width, height, mpp = converted.info.width, converted.info.height, converted.info.mpp
        for index, item in enumerate(objects):
            path = base / "convert" / "objects" / f"{sample}_object{index}.ome.tiff"
            _, _, box_width, box_height = object_box(item, width=width, height=height)
            with open_slide(path) as crop:
                assert (crop.info.width, crop.info.height) == (box_width, box_height), path
                assert crop.info.mpp == pytest.approx(mpp, rel=1e-6)


def test_scale_factor_recorded(harmonized_run):
    samples = _samples_with(harmonized_run, REACHED_AOI)
    assert set(MUST_FINISH) <= set(samples)
    for sample in samples:
        row = harmonized_run["qc"].loc[sample]
        source_mpp = _source_mpp(harmonized_run, sample)
        assert float(row["target_mpp"]) == TARGET_MPP
        assert float(row["mpp"]) == pytest.approx(TARGET_MPP)
        assert float(row["source_mpp"]) == pytest.approx(source_mpp, rel=1e-6)
        assert float(row["scale_factor"]) == pytest.approx(source_mpp / TARGET_MPP, rel=1e-6), sample


def test_focus_columns_filled(harmonized_run):
    for sample in _samples_with(harmonized_run, ("ok", "out_of_focus")):
        row = harmonized_run["qc"].loc[sample]
        assert row["focus_scorer"] == "laplacian", sample
        if row["focus_flag"] == "not_assessed":
            continue
        assert int(row["focus_tissue_tiles"]) >= int(row["focus_blurred_tiles"]) >= 0
        assert row["focus_heatmap"] == "focus/focus_heatmap.png"
        assert (harmonized_run["outdir"] / "samples" / sample / "focus" / "focus_heatmap.png").is_file()


def test_stain_columns_filled(harmonized_run):
    finished = _samples_with(harmonized_run, ("ok",))
    assert finished
    for sample in finished:
        row = harmonized_run["qc"].loc[sample]
        assert row["stain_method"] == "macenko"
        assert row["stain_reference"] == DEFAULT_REFERENCE.name
        assert row["stain_reference_sha256"] == sha256_file(DEFAULT_REFERENCE)
        assert int(row["stain_unchanged_tiles"]) >= 0


def test_feature_files_record_harmonization(harmonized_run):
    for sample in _samples_with(harmonized_run, ("ok",)):
        for backbone in ("handcrafted", "nuclei"):
            with h5py.File(harmonized_run["outdir"] / "samples" / sample / "features" / f"{backbone}.h5", "r") as handle:
                assert float(handle.attrs["target_mpp"]) == TARGET_MPP
                assert json.loads(handle.attrs["stain_normalization"])["method"] == "macenko"


def test_nuclei_features_in_cohort(harmonized_run):
    import anndata

    adata = anndata.read_h5ad(harmonized_run["outdir"] / "cohort.h5ad")
    nuclei = adata.var[adata.var["backbone"] == "nuclei"]
    assert sorted(set(nuclei["scale"])) == [1, 2]
    assert "nucleus_area_mean_um2" in set(nuclei["feature_label"])
    assert set(adata.obs_names) == set(_samples_with(harmonized_run, ("ok",)))


def test_outlier_columns_follow_cohort_size(harmonized_run):
    finished = len(_samples_with(harmonized_run, ("ok",)))
    has_columns = "outlier" in harmonized_run["qc"].columns
    assert has_columns == (finished >= MIN_OUTLIER_COHORT), f"{finished} slides finished"


def test_inputs_unchanged(harmonized_run):
    assert harmonized_run["after"] == harmonized_run["before"]


def test_input_folders_gained_no_files(harmonized_run):
    assert harmonized_run["listings_after"] == harmonized_run["listings_before"]


def test_coarse_slide_focus_not_assessed(harmonized_run):
    # jpeg.dicom is scanned at about 16.8 um/px, far coarser than the 0.5 um/px focus tiles.
    row = harmonized_run["qc"].loc["dicom_jpeg"]
    assert row["focus_flag"] == "not_assessed"
    assert "coarser than the focus resolution" in row["focus_reason"]
    assert row["focus_heatmap"] == ""
