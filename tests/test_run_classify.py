"""The classification step of `samplerflow run`: it runs when a task file is given and labels exist.

One cohort of synthetic slides of two tissue kinds (round and spindle
nuclei), labelled by kind, is run twice with a task: the first run writes
the report and the bundle under OUTDIR/classify, the second skips the step.
Run-level mistakes (a task without labels, an unreadable task file) stop
the run before any slide is read.
"""

from __future__ import annotations

import json

import pytest

from conftest import read_timings, run_cli

pytestmark = pytest.mark.slow

RUN_OPTIONS = ["--max-tiles", "12", "--scales", "1", "--workers", "0", "--classify-repeats", "2", "--classify-folds", "2"]
TASK = """\
name: round_vs_spindle
kind: binary
classes:
  round: [round]
  spindle: [spindle]
positive: round
"""


@pytest.fixture(scope="module")
def labelled_cohort(tmp_path_factory):
    """Synthetic slides, two per kind, with a samplesheet whose label is the tissue kind."""
    from samplerflow.synthetic import write_cohort

    folder = tmp_path_factory.mktemp("run_classify")
    sheet = write_cohort(folder / "slides", per_kind=2, mpp=0.5, width_um=800.0, height_um=600.0, seed=5)
    task = folder / "task.yaml"
    task.write_text(TASK)
    return {"folder": folder, "sheet": sheet, "task": task}


@pytest.fixture(scope="module")
def classified(labelled_cohort):
    outdir = labelled_cohort["folder"] / "out"
    runs = []
    for _ in range(2):
        status = run_cli("run", "--input", labelled_cohort["sheet"], "--outdir", outdir, "--task", labelled_cohort["task"], *RUN_OPTIONS)
        runs.append({"status": status, "timings": read_timings(outdir)})
    return {"outdir": outdir, "runs": runs}


def test_first_run_writes_report_and_bundle(classified):
    outdir = classified["outdir"]
    assert classified["runs"][0]["status"] == 0
    metrics = json.loads((outdir / "classify" / "metrics.json").read_text())
    assert metrics["task"]["name"] == "round_vs_spindle"
    assert metrics["cohort"]["samples"] == 4
    for name in ("folds.csv", "out_of_fold.csv", "roc.png", "model/model_card.json"):
        assert (outdir / "classify" / name).is_file(), name


def test_classification_uses_the_run_cohort(classified):
    """The out-of-fold table contains exactly the samples of cohort.h5ad."""
    import anndata
    import pandas as pd

    outdir = classified["outdir"]
    cohort = anndata.read_h5ad(outdir / "cohort.h5ad")
    predictions = pd.read_csv(outdir / "classify" / "out_of_fold.csv")
    assert set(predictions["sample"]) == set(cohort.obs_names)


def test_identical_rerun_skips_classification(classified):
    first, second = classified["runs"]
    assert second["status"] == 0
    assert first["timings"]["*/classify"] is False
    assert second["timings"]["*/classify"] is True


def test_task_without_labels_stops_before_reading_slides(labelled_cohort, tmp_path):
    unlabelled = tmp_path / "unlabelled.csv"
    lines = labelled_cohort["sheet"].read_text().splitlines()
    header = lines[0].split(",")
    keep = [index for index, name in enumerate(header) if name != "label"]
    unlabelled.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n")
    # Relative image paths in the sheet resolve against its folder, so copy them next to it.
    for line in lines[1:]:
        image = line.split(",")[header.index("image")]
        source = labelled_cohort["sheet"].parent / image
        (tmp_path / image).symlink_to(source)
    outdir = tmp_path / "out"
    status = run_cli("run", "--input", unlabelled, "--outdir", outdir, "--task", labelled_cohort["task"], *RUN_OPTIONS)
    assert status == 2
    assert not (outdir / "samples").exists()


def test_unreadable_task_stops_the_run(labelled_cohort, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("name: broken\nkind: binary\nclasses: [round\n")
    status = run_cli("run", "--input", labelled_cohort["sheet"], "--outdir", tmp_path / "out", "--task", task, *RUN_OPTIONS)
    assert status == 2
    assert not (tmp_path / "out" / "samples").exists()


def test_too_many_folds_named_in_error(labelled_cohort, tmp_path):
    """Two slides per class cannot fill three stratified folds; the message names the option to lower."""
    status = run_cli(
        "run", "--input", labelled_cohort["sheet"], "--outdir", tmp_path / "out", "--task", labelled_cohort["task"],
        "--max-tiles", "12", "--scales", "1", "--workers", "0", "--classify-folds", "3",
    )
    assert status == 2
    assert (tmp_path / "out" / "cohort.h5ad").is_file()
    assert not (tmp_path / "out" / "classify" / "metrics.json").exists()


def test_model_card_records_preprocessing(classified):
    card = json.loads((classified["outdir"] / "classify" / "model" / "model_card.json").read_text())
    assert card["preprocessing"]["stain_norm"] == "none"
    assert card["preprocessing"]["tile_size_um"] == 128.0
    assert card["preprocessing"]["target_mpp"] is None


def test_predict_warns_on_other_preprocessing(classified, tmp_path, caplog):
    """A cohort built with another stain normalization gets a warning that names the setting."""
    import anndata

    from samplerflow.classify.bundle import load_bundle, predict

    adata = anndata.read_h5ad(classified["outdir"] / "cohort.h5ad")
    parameters = json.loads(adata.uns["samplerflow"]["parameters"])
    parameters["stain"] = {"method": "macenko"}
    adata.uns["samplerflow"]["parameters"] = json.dumps(parameters)
    other = tmp_path / "other.h5ad"
    adata.write_h5ad(other)
    bundle = load_bundle(classified["outdir"] / "classify" / "model")
    with caplog.at_level("WARNING"):
        predict(bundle, classified["outdir"] / "cohort.h5ad")
    assert "other settings" not in caplog.text
    with caplog.at_level("WARNING"):
        predict(bundle, other)
    assert "stain_norm 'macenko' (training: 'none')" in caplog.text
