"""Resume: an identical rerun does nothing, a changed option redoes only what it reaches.

Four runs into one output folder, in order: the first run, the identical
rerun, new percentiles, then a second backbone added.
"""

from __future__ import annotations

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
