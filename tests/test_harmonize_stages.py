"""Harmonization wired into the stages: focus QC, QC merging, outlier flags, nuclei units, stain, target mpp.

These call the stage functions of :mod:`samplerflow.stages` on small
synthetic or demo-derived slides, the way the runner and the command line
call them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_SLIDE, run_cli
from test_nuclei import draw_tile, separated_centres

from samplerflow import stages
from samplerflow.aoi import AoiParams
from samplerflow.errors import InputError, SampleError
from samplerflow.features.store import FeatureSet, read_features
from samplerflow.focus import FocusParams
from samplerflow.io import sha256_file
from samplerflow.nuclei import LABELS as NUCLEUS_LABELS
from samplerflow.nuclei import NucleiBackbone
from samplerflow.qc import merge_records, qc_record
from samplerflow.sampler import sampler_table
from samplerflow.samplesheet import Sample
from samplerflow.slide import open_slide
from samplerflow.stain import DEFAULT_REFERENCE, StainParams
from samplerflow.synthetic import write_pyramid_tiff
from samplerflow.tiling import TilingParams, read_tiles, write_tiles

# Gaussian blur of the demo slide for the focus tests, in px at its 0.499 um/px.
# Real tiles blurred with sigma 1.5 px already score below the default
# threshold (docs/harmonization.md); 3 px leaves no tile sharp.
HEAVY_BLUR_SIGMA_PX = 3.0


# --- Focus stage (QC stage II) ------------------------------------------------


@pytest.fixture(scope="module")
def demo_copies(tmp_path_factory) -> dict[str, Path]:
    """The demo slide rewritten as a tiled TIFF, as it is and with a heavy Gaussian blur: {'sharp', 'blurred'}."""
    folder = tmp_path_factory.mktemp("focus_slides")
    with open_slide(DEMO_SLIDE) as reader:
        image = reader.read_level(0, 0, 0, reader.info.width, reader.info.height)
        mpp = reader.info.mpp
    blurred = cv2.GaussianBlur(image, (0, 0), HEAVY_BLUR_SIGMA_PX)
    paths = {"sharp": folder / "demo_sharp.tiff", "blurred": folder / "demo_blurred.tiff"}
    write_pyramid_tiff(image, paths["sharp"], mpp=mpp)
    write_pyramid_tiff(blurred, paths["blurred"], mpp=mpp)
    return paths


def test_focus_blurred_slide_excluded(demo_copies, tmp_path):
    outdir = tmp_path / "focus"
    with pytest.raises(SampleError) as raised:
        stages.focus(sample="blurred", image=demo_copies["blurred"], outdir=outdir, params=FocusParams())
    error = raised.value
    assert error.status == "out_of_focus"
    assert str(demo_copies["blurred"]) in str(error)
    assert "focus_heatmap.png" in str(error)
    assert error.fields["focus_flag"] == "out_of_focus"
    assert error.fields["focus_blurred_fraction"] > FocusParams().max_blurred_fraction


def test_focus_blurred_slide_writes_heatmap(demo_copies, tmp_path):
    outdir = tmp_path / "focus"
    with pytest.raises(SampleError):
        stages.focus(sample="blurred", image=demo_copies["blurred"], outdir=outdir, params=FocusParams())
    assert (outdir / "focus_heatmap.png").stat().st_size > 0
    scores = np.load(outdir / "focus_map.npz")
    assert scores["blurred"][scores["tissue"]].all()


def test_focus_keep_flagged_goes_on(demo_copies, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="samplerflow.stages"):
        record = stages.focus(
            sample="blurred", image=demo_copies["blurred"], outdir=tmp_path, params=FocusParams(keep_flagged=True)
        )
    assert record["status"] == "ok"
    assert record["focus_flag"] == "out_of_focus"
    assert "blurred" in record["focus_reason"]
    assert (tmp_path / "focus_heatmap.png").is_file()
    assert any("kept although flagged" in entry.getMessage() for entry in caplog.records)


def test_focus_sharp_slide_ok(demo_copies, tmp_path):
    record = stages.focus(sample="sharp", image=demo_copies["sharp"], outdir=tmp_path, params=FocusParams())
    assert record["status"] == "ok"
    assert record["focus_flag"] == ""
    assert record["focus_tissue_tiles"] > 0
    assert record["focus_blurred_fraction"] <= FocusParams().max_blurred_fraction


# --- qc.merge_records -----------------------------------------------------------


def _sample(name: str) -> Sample:
    return Sample(sample=name, patient=name, image=Path(f"/slides/{name}.svs"), center="c1")


def _required_records(name: str) -> list[dict]:
    return [
        qc_record(name, "aoi", objects=1),
        qc_record(name, "tile", tiles=5, scales="1,2"),
        qc_record(name, "extract", backbones="handcrafted"),
        qc_record(name, "sampler", sampler_values=1440),
    ]


def test_merge_without_optional_stages_ok():
    table = merge_records([_sample("a")], _required_records("a")).set_index("sample")
    assert table.loc["a", "status"] == "ok"
    assert table.loc["a", "failed_stage"] == ""


def test_merge_missing_required_stage_incomplete():
    records = [record for record in _required_records("a") if record["stage"] != "tile"]
    table = merge_records([_sample("a")], records).set_index("sample")
    assert table.loc["a", "status"] == "incomplete"
    assert table.loc["a", "failed_stage"] == "tile"


def test_merge_review_images_of_finished_stages():
    records = _required_records("a") + [qc_record("a", "focus", focus_flag="", focus_tissue_tiles=10)]
    table = merge_records([_sample("a")], records).set_index("sample")
    assert table.loc["a", "thumbnail"] == "aoi/thumbnail.png"
    assert table.loc["a", "overlay"] == "aoi/overlay.png"
    assert table.loc["a", "focus_heatmap"] == "focus/focus_heatmap.png"


def test_merge_review_images_without_focus_stage():
    table = merge_records([_sample("a")], _required_records("a"))
    assert "focus_heatmap" not in table.columns
    assert table.loc[0, "thumbnail"] == "aoi/thumbnail.png"


def test_merge_out_of_focus_keeps_heatmap():
    records = [
        qc_record("a", "aoi", objects=1),
        qc_record("a", "focus", status="out_of_focus", reason="/slides/a.svs: 9 of 10 tissue tiles are blurred",
                  focus_flag="out_of_focus"),
    ]
    row = merge_records([_sample("a")], records).set_index("sample").loc["a"]
    assert row["status"] == "out_of_focus"
    assert row["failed_stage"] == "focus"
    assert row["focus_heatmap"] == "focus/focus_heatmap.png"
    assert row["thumbnail"] == "aoi/thumbnail.png"


def test_merge_unreadable_has_no_images():
    records = [qc_record("a", "aoi", status="unreadable", reason="/slides/a.svs: cannot be decoded")]
    table = merge_records([_sample("a")], records)
    assert table.loc[0, "status"] == "unreadable"
    assert "thumbnail" not in table.columns


def test_merge_failed_conversion_is_first_stage():
    records = [qc_record("a", "convert", status="unsupported_format", reason="/slides/a.svs: not a slide")]
    row = merge_records([_sample("a")], records).loc[0]
    assert row["status"] == "unsupported_format"
    assert row["failed_stage"] == "convert"


def test_merge_integer_columns_stay_integers():
    records = _required_records("a") + [qc_record("a", "convert", convert_levels=3, convert_bytes=1000)]
    records += [qc_record("b", "convert", status="unreadable", reason="/slides/b.svs: damaged")]
    table = merge_records([_sample("a"), _sample("b")], records)
    assert str(table["convert_levels"].dtype) == "Int64"
    assert table["convert_levels"].isna().tolist() == [False, True]


# --- Cohort outlier flags (QC stage III) ----------------------------------------

OUTLIER_FEATURES = 20
OUTLIER_TILES = 40


def _write_cohort_inputs(folder: Path, *, samples: int, planted: int | None, seed: int = 0) -> dict:
    """Write a samplesheet, sampler tables and QC records of ``samples`` synthetic slides.

    Every slide's tiles scatter around its own mean vector, drawn from 5
    latent factors, so each feature varies between slides with a standard
    deviation of about 2.2. Slide ``planted``, if given, has 10 features
    shifted by 30.
    """
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(5, OUTLIER_FEATURES))
    images = folder / "images"
    images.mkdir()
    sheet_rows, sampler_files, qc_files = [], [], []
    for index in range(samples):
        name = f"slide{index:02d}"
        image = images / f"{name}.svs"
        image.write_bytes(b"placeholder")  # the samplesheet checks only that the file exists
        sheet_rows.append({"sample": name, "patient": name, "image": str(image), "center": "c1"})
        mean = rng.normal(size=5) @ loadings
        if index == planted:
            mean[:10] += 30.0
        tiles = mean + rng.normal(scale=0.3, size=(OUTLIER_TILES, OUTLIER_FEATURES))
        features = FeatureSet(
            backbone="handcrafted", scales=(1,), matrices={1: tiles.astype(np.float32)},
            tile_ids=np.arange(OUTLIER_TILES), attrs={},
        )
        path = folder / f"{name}.parquet"
        table = sampler_table(name, [features], (5, 25, 50, 75, 95))
        table.to_parquet(path, index=False)
        sampler_files.append(path)
        for record in _required_records(name):
            qc_path = folder / f"{name}.{record['stage']}.json"
            qc_path.write_text(json.dumps(record))
            qc_files.append(qc_path)
    sheet = folder / "samplesheet.csv"
    pd.DataFrame(sheet_rows).to_csv(sheet, index=False)
    return {"samplesheet": sheet, "sampler_files": sampler_files, "qc_files": qc_files}


def test_cohort_flags_planted_outlier(tmp_path):
    inputs = _write_cohort_inputs(tmp_path, samples=12, planted=4)
    stages.cohort(**inputs, output=tmp_path / "cohort.h5ad", qc_output=tmp_path / "qc.csv")
    qc = pd.read_csv(tmp_path / "qc.csv", keep_default_na=False).set_index("sample")
    assert qc["outlier"].map(str).to_dict() == {name: str(name == "slide04") for name in qc.index}
    assert "MAD above the cohort median" in qc.loc["slide04", "outlier_reason"]
    assert float(qc.loc["slide04", "outlier_score"]) > 6
    assert (qc.drop(index="slide04")["outlier_reason"] == "").all()


def test_cohort_outlier_flags_in_anndata(tmp_path):
    import anndata

    inputs = _write_cohort_inputs(tmp_path, samples=12, planted=4)
    stages.cohort(**inputs, output=tmp_path / "cohort.h5ad", qc_output=tmp_path / "qc.csv")
    adata = anndata.read_h5ad(tmp_path / "cohort.h5ad")
    assert adata.n_obs == 12, "flagged slides stay in the cohort"
    assert adata.obs["qc_outlier"].astype(bool).to_dict() == {name: name == "slide04" for name in adata.obs_names}


def test_cohort_below_minimum_skips_outliers(tmp_path, caplog):
    inputs = _write_cohort_inputs(tmp_path, samples=stages.MIN_OUTLIER_COHORT - 1, planted=4)
    with caplog.at_level(logging.INFO, logger="samplerflow.stages"):
        stages.cohort(**inputs, output=tmp_path / "cohort.h5ad", qc_output=tmp_path / "qc.csv")
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert not {"outlier", "outlier_score", "outlier_reason"} & set(qc.columns)
    messages = [entry.getMessage() for entry in caplog.records]
    assert any("Outlier check skipped" in message and str(stages.MIN_OUTLIER_COHORT) in message for message in messages)


def test_cohort_outlier_check_switched_off(tmp_path):
    inputs = _write_cohort_inputs(tmp_path, samples=12, planted=4)
    stages.cohort(**inputs, output=tmp_path / "cohort.h5ad", qc_output=tmp_path / "qc.csv", outlier_mads=None)
    assert "outlier" not in pd.read_csv(tmp_path / "qc.csv").columns


# --- Nuclei: real um/px at every scale ------------------------------------------

NUCLEUS_RADIUS_UM = 3.5  # the radius test_nuclei.draw_tile draws, at 0.5 um/px


def _nucleus_features(tile: np.ndarray, *, mpp: float) -> dict[str, float]:
    return dict(zip(NUCLEUS_LABELS, NucleiBackbone().prepare_at(tile, mpp=mpp)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nuclei_areas_agree_across_resolutions(seed):
    # The tile at 0.5 um/px and its 2x area-downsampled copy at 1.0 um/px show the same disks.
    fine = draw_tile(separated_centres(30, min_gap_px=6, seed=seed), seed=seed)
    coarse = cv2.resize(fine, (fine.shape[1] // 2, fine.shape[0] // 2), interpolation=cv2.INTER_AREA)
    at_fine = _nucleus_features(fine, mpp=0.5)
    at_coarse = _nucleus_features(coarse, mpp=1.0)
    drawn_area = math.pi * NUCLEUS_RADIUS_UM**2
    assert at_coarse["nucleus_count"] == at_fine["nucleus_count"] == 30
    # Thresholding the blurred disk edge drops part of its rim, so areas measured 7-9 %
    # below the drawn 38.5 um^2, and the two resolutions agreed within 2 %. The worst
    # case, half a pixel lost all round at 1 um/px, is 2 pi r x 0.5 um = 11 um^2 (29 %),
    # so the limits follow the measurement with room to spare: 15 % against the drawn
    # area, 10 % between resolutions. A wrong unit changes areas 4x and still fails.
    assert at_fine["nucleus_area_mean_um2"] == pytest.approx(drawn_area, rel=0.15)
    assert at_coarse["nucleus_area_mean_um2"] == pytest.approx(drawn_area, rel=0.15)
    assert at_coarse["nucleus_area_mean_um2"] == pytest.approx(at_fine["nucleus_area_mean_um2"], rel=0.10)
    assert at_coarse["nucleus_density_per_mm2"] == pytest.approx(at_fine["nucleus_density_per_mm2"], rel=1e-6)


def test_nuclei_prepare_without_mpp_assumes_default():
    # prepare() alone assumes 0.5 um/px: at 1.0 um/px that shrinks every area 4x,
    # below the 10 um^2 minimum, which is why extraction passes each scale's mpp.
    fine = draw_tile(separated_centres(30, min_gap_px=6, seed=0), seed=0)
    coarse = cv2.resize(fine, (fine.shape[1] // 2, fine.shape[0] // 2), interpolation=cv2.INTER_AREA)
    assumed = dict(zip(NUCLEUS_LABELS, NucleiBackbone().prepare(coarse)))
    assert assumed["nucleus_area_mean_um2"] < 0.5 * _nucleus_features(coarse, mpp=1.0)["nucleus_area_mean_um2"]


@pytest.fixture(scope="module")
def synthetic_aoi(synthetic_slides, tmp_path_factory) -> dict[str, Path]:
    """AOI outputs of the 0.5 um/px synthetic slide, read at its own resolution."""
    folder = tmp_path_factory.mktemp("harmonize_aoi")
    stages.aoi(sample="synthetic", image=synthetic_slides[0.5], outdir=folder, params=AoiParams())
    return {"slide": synthetic_slides[0.5], "roi": folder / "roi.json", "mask": folder / "tissue_mask.png"}


def test_nuclei_extraction_areas_match_across_scales(synthetic_aoi, tmp_path):
    # Scale 1 tiles are 128 um over 256 px (0.5 um/px), scale 2 tiles 256 um (1 um/px).
    tiles = tmp_path / "tiles.parquet"
    stages.tile(sample="synthetic", roi=synthetic_aoi["roi"], mask=synthetic_aoi["mask"], output=tiles,
                params=TilingParams(scales=(1, 2)))
    stages.extract(sample="synthetic", image=synthetic_aoi["slide"], tiles=tiles, outdir=tmp_path,
                   backbones=["nuclei"], num_workers=0, progress=False)
    features = read_features(tmp_path / "nuclei.h5")
    column = NUCLEUS_LABELS.index("nucleus_area_mean_um2")
    median_area = {scale: float(np.median(features.matrices[scale][:, column])) for scale in (1, 2)}
    # Measured: 31.6 and 29.9 um^2. Assuming 0.5 um/px at scale 2 would give a quarter.
    assert median_area[1] > 0
    assert median_area[2] == pytest.approx(median_area[1], rel=0.2)


# --- Extraction: stain normalization and target mpp -----------------------------


@pytest.fixture(scope="module")
def stain_runs(synthetic_aoi, tmp_path_factory) -> dict:
    """Scale-1 handcrafted features of the tissue tiles plus one blank-glass tile (last row), without and with Macenko."""
    folder = tmp_path_factory.mktemp("stain_runs")
    tiles = folder / "tiles.parquet"
    stages.tile(sample="synthetic", roi=synthetic_aoi["roi"], mask=synthetic_aoi["mask"], output=tiles,
                params=TilingParams(scales=(1,)))
    grid = read_tiles(tiles)
    side_um = grid.params.tile_size_um
    centre_um = _blank_centre_um(synthetic_aoi, side_um=side_um)
    blank = grid.table.iloc[[0]].copy()
    blank[["tile_id", "grid_row", "grid_col", "tissue_fraction"]] = [len(grid.table), -1, -1, 0.0]
    blank[["center_x_um", "center_y_um"]] = list(centre_um)
    blank[["center_x_px", "center_y_px"]] = [value / grid.mpp for value in centre_um]
    table = pd.concat([grid.table, blank], ignore_index=True).astype(grid.table.dtypes.to_dict())
    write_tiles(replace(grid, table=table), tiles)
    records = {}
    for method in ("none", "macenko"):
        records[method] = stages.extract(
            sample="synthetic", image=synthetic_aoi["slide"], tiles=tiles, outdir=folder / method,
            backbones=["handcrafted"], num_workers=0, progress=False, stain=StainParams(method=method),
        )
    side_px = int(side_um / grid.mpp)
    with open_slide(synthetic_aoi["slide"]) as reader:
        blank_pixels = reader.read_level(
            0, int(centre_um[0] / grid.mpp) - side_px // 2, int(centre_um[1] / grid.mpp) - side_px // 2, side_px, side_px
        )
    return {"folder": folder, "tiles": read_tiles(tiles), "records": records, "blank_pixels": blank_pixels}


def _blank_centre_um(aoi_outputs: dict[str, Path], *, side_um: float) -> tuple[float, float]:
    """Return the centre (x, y) in um of a square of ``side_um`` with no tissue on the AOI mask, plus one mask pixel."""
    from numpy.lib.stride_tricks import sliding_window_view

    from samplerflow.aoi import read_mask

    mask = read_mask(aoi_outputs["mask"]) > 0
    mask_mpp = json.loads(aoi_outputs["roi"].read_text())["thumbnail"]["mpp"]
    window = math.ceil(side_um / mask_mpp) + 2
    rows, columns = np.nonzero(sliding_window_view(mask, (window, window)).sum(axis=(2, 3)) == 0)
    assert len(rows), f"no {side_um} um square without tissue on the synthetic slide"
    return ((columns[0] + window / 2) * mask_mpp, (rows[0] + window / 2) * mask_mpp)


def test_stain_attrs_recorded(stain_runs):
    with h5py.File(stain_runs["folder"] / "macenko" / "handcrafted.h5", "r") as handle:
        record = json.loads(handle.attrs["stain_normalization"])
    assert record["method"] == "macenko"
    assert Path(record["reference"]) == DEFAULT_REFERENCE
    assert record["reference_sha256"] == sha256_file(DEFAULT_REFERENCE)
    assert record["unchanged_tiles"] == stain_runs["records"]["macenko"]["stain_unchanged_tiles"]


def test_stain_off_recorded_as_none(stain_runs):
    with h5py.File(stain_runs["folder"] / "none" / "handcrafted.h5", "r") as handle:
        assert json.loads(handle.attrs["stain_normalization"]) == {"method": "none", "unchanged_tiles": 0}
    assert "stain_method" not in stain_runs["records"]["none"]


def test_stain_record_fields(stain_runs):
    record = stain_runs["records"]["macenko"]
    assert record["stain_method"] == "macenko"
    assert record["stain_reference"] == DEFAULT_REFERENCE.name
    assert record["stain_reference_sha256"] == sha256_file(DEFAULT_REFERENCE)


def test_stain_background_passes_through(stain_runs):
    assert stain_runs["blank_pixels"].min() > 200, "the tile chosen as blank holds stained pixels"
    plain = read_features(stain_runs["folder"] / "none" / "handcrafted.h5").matrices[1]
    normalized = read_features(stain_runs["folder"] / "macenko" / "handcrafted.h5").matrices[1]
    unchanged_rows = (plain == normalized).all(axis=1)
    assert unchanged_rows[-1], "the blank tile was changed"
    assert stain_runs["records"]["macenko"]["stain_unchanged_tiles"] > 0


def test_stain_changes_tissue_tiles(stain_runs):
    plain = read_features(stain_runs["folder"] / "none" / "handcrafted.h5").matrices[1]
    normalized = read_features(stain_runs["folder"] / "macenko" / "handcrafted.h5").matrices[1]
    unchanged_rows = (plain == normalized).all(axis=1)
    tissue = stain_runs["tiles"].table["tissue_fraction"].to_numpy()
    assert (tissue == 1).any()
    assert not unchanged_rows[tissue == 1].any(), "tissue-filled tiles must be normalized"
    # One scale and one input size make one tile image per row.
    assert stain_runs["records"]["macenko"]["stain_unchanged_tiles"] == int(unchanged_rows.sum())


@pytest.fixture(scope="module")
def tiles_at_target(synthetic_slides, tmp_path_factory) -> dict[str, Path]:
    """AOI and tiles of the 0.5 um/px synthetic slide presented at 0.25 um/px."""
    folder = tmp_path_factory.mktemp("target_mpp")
    stages.aoi(sample="synthetic", image=synthetic_slides[0.5], outdir=folder, params=AoiParams(), target_mpp=0.25)
    tiles = folder / "tiles.parquet"
    stages.tile(sample="synthetic", roi=folder / "roi.json", mask=folder / "tissue_mask.png", output=tiles,
                params=TilingParams(scales=(1,), max_tiles=3))
    return {"slide": synthetic_slides[0.5], "tiles": tiles, "folder": folder}


def test_extract_rejects_other_target_mpp(tiles_at_target, tmp_path):
    with pytest.raises(InputError, match="same --target-mpp") as raised:
        stages.extract(sample="synthetic", image=tiles_at_target["slide"], tiles=tiles_at_target["tiles"], outdir=tmp_path,
                       backbones=["handcrafted"], num_workers=0, progress=False, target_mpp=None)
    assert str(tiles_at_target["slide"]) in str(raised.value)
    assert not (tmp_path / "handcrafted.h5").exists()


def test_extract_rejects_tiles_without_target(synthetic_aoi, tmp_path):
    tiles = tmp_path / "tiles.parquet"
    stages.tile(sample="synthetic", roi=synthetic_aoi["roi"], mask=synthetic_aoi["mask"], output=tiles,
                params=TilingParams(scales=(1,), max_tiles=3))
    with pytest.raises(InputError, match="same --target-mpp"):
        stages.extract(sample="synthetic", image=synthetic_aoi["slide"], tiles=tiles, outdir=tmp_path,
                       backbones=["handcrafted"], num_workers=0, progress=False, target_mpp=0.25)


def test_extract_cli_rejects_other_target_mpp(tiles_at_target, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="samplerflow"):
        status = run_cli("extract", "--sample", "synthetic", "--slide", tiles_at_target["slide"],
                         "--tiles", tiles_at_target["tiles"], "--outdir", tmp_path, "--workers", "0")
    assert status == 2
    assert any("--target-mpp" in entry.getMessage() for entry in caplog.records)


def test_extract_same_target_mpp_recorded(tiles_at_target, tmp_path):
    stages.extract(sample="synthetic", image=tiles_at_target["slide"], tiles=tiles_at_target["tiles"], outdir=tmp_path,
                   backbones=["handcrafted"], num_workers=0, progress=False, target_mpp=0.25)
    with h5py.File(tmp_path / "handcrafted.h5", "r") as handle:
        assert float(handle.attrs["target_mpp"]) == 0.25
        assert float(handle.attrs["mpp"]) == 0.25


def test_aoi_records_scale_factor(tiles_at_target):
    roi = json.loads((tiles_at_target["folder"] / "roi.json").read_text())
    assert roi["slide"]["mpp"] == pytest.approx(0.25)
    record = stages.aoi(sample="synthetic", image=tiles_at_target["slide"], outdir=tiles_at_target["folder"] / "again",
                        params=AoiParams(), target_mpp=0.25)
    assert record["source_mpp"] == pytest.approx(0.5)
    assert record["target_mpp"] == 0.25
    assert record["scale_factor"] == pytest.approx(2.0)
