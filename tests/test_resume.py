"""Resume: an identical rerun does nothing, a changed option redoes only what it reaches.

Four runs into one output folder, in order: the first run, the identical
rerun, new percentiles, then a second backbone added. Four more runs with
the harmonization stages on go into a second folder.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest
from conftest import read_timings, run_cli, sha256_tree

pytestmark = pytest.mark.slow

BASE_OPTIONS = ["--max-tiles", "3", "--scales", "1,2", "--workers", "0"]
NEW_PERCENTILES = ["--percentiles", "10,50,90"]
# Random weights keep the run offline; they are recorded as such in the outputs.
ADD_BACKBONE = ["--backbone", "handcrafted,inception_v3", "--random-weights"]
# Run bookkeeping that every run rewrites: parameters, versions, timings and stamps.
BOOKKEEPING = ("pipeline_info", ".stamps")


@pytest.fixture(scope="module")
def runs(synthetic_slides, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    sheet = folder / "samplesheet.csv"
    sheet.write_text(f"sample,patient,image,center\nsynthetic,p1,{synthetic_slides[0.5]},c1\n")
    outdir = folder / "out"
    steps = [
        ("first", BASE_OPTIONS),
        ("identical", BASE_OPTIONS),
        ("percentiles", BASE_OPTIONS + NEW_PERCENTILES),
        ("backbone", BASE_OPTIONS + NEW_PERCENTILES + ADD_BACKBONE),
    ]
    result = {}
    for name, options in steps:
        status = run_cli("run", "--input", sheet, "--outdir", outdir, *options)
        result[name] = {
            "status": status,
            "timings": read_timings(outdir),
            "digests": sha256_tree(outdir, exclude_dirs=BOOKKEEPING),
        }
    return result


def test_every_run_exits_zero(runs):
    assert {name: run["status"] for name, run in runs.items()} == dict.fromkeys(runs, 0)


def test_first_run_does_work(runs):
    timings = runs["first"]["timings"]
    assert timings["synthetic/aoi"] is False
    assert timings["*/cohort"] is False


def test_identical_rerun_skips_everything(runs):
    timings = runs["identical"]["timings"]
    assert timings, "timings.tsv lists no steps"
    assert [step for step, skipped in timings.items() if not skipped] == []


def test_identical_rerun_lists_same_steps(runs):
    assert sorted(runs["identical"]["timings"]) == sorted(runs["first"]["timings"])


def test_identical_rerun_keeps_outputs(runs):
    assert runs["identical"]["digests"] == runs["first"]["digests"]


def test_percentiles_rerun_only_sampler_and_cohort(runs):
    timings = runs["percentiles"]["timings"]
    rerun = sorted(step for step, skipped in timings.items() if not skipped)
    assert rerun == ["*/cohort", "synthetic/sampler"]


def test_percentiles_keep_upstream_files(runs):
    first, changed = runs["first"]["digests"], runs["percentiles"]["digests"]
    upstream = [path for path in first if "/aoi/" in path or "/tiles/" in path or "/features/" in path]
    assert upstream
    assert {path: changed.get(path) for path in upstream} == {path: first[path] for path in upstream}


def test_percentiles_change_sampler_file(runs):
    path = "samples/synthetic/sampler/sampler.parquet"
    assert runs["percentiles"]["digests"][path] != runs["first"]["digests"][path]


def test_added_backbone_skips_other_steps(runs):
    timings = runs["backbone"]["timings"]
    for step in ("synthetic/aoi", "synthetic/tile", "synthetic/extract.handcrafted"):
        assert timings[step] is True, step


def test_added_backbone_extracts_new(runs):
    assert runs["backbone"]["timings"]["synthetic/extract.inception_v3"] is False


def test_added_backbone_keeps_handcrafted_file(runs):
    path = "samples/synthetic/features/handcrafted.h5"
    assert runs["backbone"]["digests"][path] == runs["first"]["digests"][path]


def test_added_backbone_writes_features(runs):
    assert "samples/synthetic/features/inception_v3.h5" in runs["backbone"]["digests"]


# Harmonization on: conversion, per-object copies, focus QC, resampling and stain normalization.
# Runs into a second output folder, in order: the first run, the identical rerun, another
# stain normalization, then another target resolution.
HARMONIZE_OPTIONS = [
    "--convert", "--convert-objects", "--focus-qc", "--target-mpp", "0.25", "--stain-norm", "macenko",
]
NEW_STAIN = ["--stain-norm", "reinhard"]
NEW_TARGET = ["--target-mpp", "0.5"]


@pytest.fixture(scope="module")
def harmonized_runs(synthetic_slides, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume_harmonized")
    sheet = folder / "samplesheet.csv"
    sheet.write_text(f"sample,patient,image,center\nsynthetic,p1,{synthetic_slides[0.5]},c1\n")
    outdir = folder / "out"
    # argparse keeps the last value of a repeated option, so appending one replaces it.
    steps = [
        ("first", BASE_OPTIONS + HARMONIZE_OPTIONS),
        ("identical", BASE_OPTIONS + HARMONIZE_OPTIONS),
        ("stain", BASE_OPTIONS + HARMONIZE_OPTIONS + NEW_STAIN),
        ("target", BASE_OPTIONS + HARMONIZE_OPTIONS + NEW_STAIN + NEW_TARGET),
    ]
    result = {}
    for name, options in steps:
        status = run_cli("run", "--input", sheet, "--outdir", outdir, *options)
        result[name] = {
            "status": status,
            "timings": read_timings(outdir),
            "digests": sha256_tree(outdir, exclude_dirs=BOOKKEEPING),
            "qc": (outdir / "qc.csv").read_text(),
        }
    return result


def _qc_row(run: dict) -> pd.Series:
    return pd.read_csv(io.StringIO(run["qc"]), keep_default_na=False).iloc[0]


def _rerun_steps(run: dict) -> list[str]:
    return sorted(step for step, skipped in run["timings"].items() if not skipped)


def test_harmonized_runs_exit_zero(harmonized_runs):
    assert {name: run["status"] for name, run in harmonized_runs.items()} == dict.fromkeys(harmonized_runs, 0)


def test_harmonized_first_run_does_every_step(harmonized_runs):
    timings = harmonized_runs["first"]["timings"]
    for step in ("convert", "aoi", "convert_objects", "focus", "tile", "extract.handcrafted", "sampler"):
        assert timings[f"synthetic/{step}"] is False, step
    assert _qc_row(harmonized_runs["first"])["status"] == "ok"


def test_harmonized_identical_rerun_skips_everything(harmonized_runs):
    assert harmonized_runs["identical"]["timings"]
    assert _rerun_steps(harmonized_runs["identical"]) == []
    assert sorted(harmonized_runs["identical"]["timings"]) == sorted(harmonized_runs["first"]["timings"])


def test_harmonized_identical_rerun_keeps_outputs(harmonized_runs):
    assert harmonized_runs["identical"]["digests"] == harmonized_runs["first"]["digests"]


def test_stain_change_redoes_extract_onward(harmonized_runs):
    assert _rerun_steps(harmonized_runs["stain"]) == ["*/cohort", "synthetic/extract.handcrafted", "synthetic/sampler"]


def test_stain_change_keeps_upstream_files(harmonized_runs):
    first, changed = harmonized_runs["first"]["digests"], harmonized_runs["stain"]["digests"]
    upstream = [path for path in first if any(f"/{part}/" in path for part in ("convert", "aoi", "focus", "tiles"))]
    assert upstream
    assert {path: changed.get(path) for path in upstream} == {path: first[path] for path in upstream}
    features = "samples/synthetic/features/handcrafted.h5"
    assert changed[features] != first[features]


def test_target_change_redoes_aoi_onward(harmonized_runs):
    timings = harmonized_runs["target"]["timings"]
    assert timings["synthetic/convert"] is True
    for step in ("aoi", "tile", "extract.handcrafted", "sampler"):
        assert timings[f"synthetic/{step}"] is False, step
    assert timings["*/cohort"] is False


def test_target_change_keeps_focus(harmonized_runs):
    # Focus tiles are read at --focus-mpp whatever the target resolution, so the focus step stays.
    assert harmonized_runs["target"]["timings"]["synthetic/focus"] is True


def test_target_change_keeps_converted_file(harmonized_runs):
    path = "samples/synthetic/convert/synthetic.ome.tiff"
    assert harmonized_runs["target"]["digests"][path] == harmonized_runs["first"]["digests"][path]


def test_target_change_recorded(harmonized_runs):
    row = _qc_row(harmonized_runs["target"])
    assert float(row["target_mpp"]) == 0.5
    assert float(row["scale_factor"]) == pytest.approx(1.0)
