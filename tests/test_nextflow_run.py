"""Real Nextflow runs: the test and test_real profiles, a run with every harmonization
stage, a run with classification, a stub run, and the local runner on the same inputs.

Runs use the local executor without containers: the tasks find
`samplerflow` through bin/ (which Nextflow puts on every task's PATH) and
the Python of this test session, whose folder is put first on PATH. Each
run gets its own NXF_HOME, so no secret or plugin of the user leaks in.
The tests skip when no Nextflow launcher or no Java is found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from nextflow_helpers import REPO_ROOT, find_nextflow, read_config_params
from samplerflow.cli import main as samplerflow_main
from samplerflow.stain import DEFAULT_REFERENCE

NEXTFLOW = find_nextflow()
pytestmark = [
    pytest.mark.nextflow,
    pytest.mark.slow,
    pytest.mark.skipif(
        NEXTFLOW is None,
        reason="Nextflow not available: needs Java and .nextflow-dist/nextflow (make nextflow) or nextflow on PATH",
    ),
]

# The settings of conf/test.config and conf/test_real.config, for the local runner.
PROFILE_OPTIONS = ["--scales", "1,2", "--max-tiles", "16"]
# The same settings as Nextflow params, for runs on a samplesheet of the test's own.
NEXTFLOW_SMALL_RUN = ["--scales", "1,2", "--max_tiles", "16"]
STAGE_FOLDERS = {
    "aoi": ["thumbnail.png", "tissue_mask.png", "overlay.png", "roi.json"],
    "tiles": ["tiles.parquet"],
    "features": ["handcrafted.h5"],
    "sampler": ["sampler.parquet"],
    "qc": ["aoi.json", "tile.json", "extract.json", "sampler.json"],
}
# The harmonization switches and options of the harmonized run, as Nextflow
# params and as `samplerflow run` options; the stain reference is added per run.
# With --max_blurred_fraction 0.3 the round synthetic slide passes focus QC and
# the spindle one does not: with `samplerflow synth --per-kind 1` defaults, 5 of
# 43 and 29 of 47 tissue tiles score as blurred.
HARMONIZATION_PARAMS = [
    "--convert", "true", "--convert_objects", "true", "--min_level_px", "256",
    "--focus_qc", "true", "--max_blurred_fraction", "0.3",
    "--target_mpp", "1.0", "--stain_norm", "macenko",
]
HARMONIZATION_OPTIONS = [
    "--convert", "--convert-objects", "--min-level-px", "256",
    "--focus-qc", "--max-blurred-fraction", "0.3",
    "--target-mpp", "1.0", "--stain-norm", "macenko",
]
HARMONIZED_STATUS = {"synth_round_1": "ok", "synth_spindle_1": "out_of_focus"}
PIPELINE_INFO = [
    "execution_trace.txt",
    "execution_timeline.html",
    "execution_report.html",
    "pipeline_dag.html",
    "software_versions.yml",
    "params.json",
]


def run_nextflow(folder: Path, *arguments: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run `nextflow run REPO ARGUMENTS` in ``folder``; return the finished process with its output."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["NXF_HOME"] = str(folder / "nxf-home")
    environment["NXF_ANSI_LOG"] = "false"
    environment.pop("HF_TOKEN", None)
    command = [NEXTFLOW, "run", str(REPO_ROOT), "-work-dir", str(folder / "work"), *arguments]
    started = time.monotonic()
    result = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout)
    print(f"{' '.join(command)}: exit status {result.returncode} after {time.monotonic() - started:.0f} s")
    return result


def require_success(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"Nextflow failed (exit status {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def run_local_runner(samplesheet: Path, outdir: Path, *options: str) -> None:
    arguments = ["--no-progress", "run", "--input", str(samplesheet), "--outdir", str(outdir), *PROFILE_OPTIONS, *options]
    status = samplerflow_main(arguments)
    assert status == 0


@pytest.fixture(scope="module")
def test_profile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outdir of `nextflow run . -profile test`."""
    folder = tmp_path_factory.mktemp("nextflow-test")
    outdir = folder / "results"
    require_success(run_nextflow(folder, "-profile", "test", "--outdir", str(outdir)))
    return outdir


@pytest.fixture(scope="module")
def test_real_profile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outdir of `nextflow run . -profile test_real`."""
    folder = tmp_path_factory.mktemp("nextflow-test-real")
    outdir = folder / "results"
    require_success(run_nextflow(folder, "-profile", "test_real", "--outdir", str(outdir)))
    return outdir


@pytest.fixture(scope="module")
def harmonized_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Outdir of `nextflow run . -profile test` with every harmonization stage on, and the stain reference it got.

    The reference is a renamed copy of the shipped one, so qc.csv shows whether the given file was used.
    """
    folder = tmp_path_factory.mktemp("nextflow-harmonized")
    reference = folder / "inputs" / "reference_tile.tif"
    reference.parent.mkdir(parents=True)
    reference.write_bytes(DEFAULT_REFERENCE.read_bytes())
    outdir = folder / "results"
    arguments = ["-profile", "test", "--outdir", str(outdir), *HARMONIZATION_PARAMS, "--stain_reference", str(reference)]
    require_success(run_nextflow(folder, *arguments))
    return outdir, reference


def sample_ids(outdir: Path) -> list[str]:
    return pd.read_csv(outdir / "samplesheet.valid.csv")["sample"].astype(str).tolist()


def assert_layout(outdir: Path) -> None:
    """Check the local runner's layout: per-sample stage folders, qc.csv, cohort.h5ad, pipeline_info."""
    for sample in sample_ids(outdir):
        for folder, names in STAGE_FOLDERS.items():
            for name in names:
                path = outdir / "samples" / sample / folder / name
                assert path.is_file(), f"missing output {path}"
    for name in ("qc.csv", "cohort.h5ad", "samplesheet.valid.csv"):
        assert (outdir / name).is_file(), f"missing output {outdir / name}"
    for name in PIPELINE_INFO:
        assert (outdir / "pipeline_info" / name).is_file(), f"missing pipeline_info/{name}"


def published_files(outdir: Path) -> set[str]:
    """Return the files under OUTDIR/samples/, relative to OUTDIR (the runner's resume stamps left out)."""
    return {
        path.relative_to(outdir).as_posix()
        for path in (outdir / "samples").rglob("*")
        if path.is_file() and ".stamps" not in path.parts
    }


def reason_text(reason: object) -> str:
    """Return a failure reason without its leading "SLIDE: ", or "" for none."""
    return "" if pd.isna(reason) else str(reason).partition(": ")[2]


def assert_same_table(from_nextflow: pd.DataFrame, from_runner: pd.DataFrame, table_name: str) -> None:
    """Check two QC tables value for value.

    Slide paths differ by run folder, so ``image`` is compared by file name.
    A failure reason starts with the slide and a colon, and only the text
    after that is compared.
    """
    assert list(from_nextflow.columns) == list(from_runner.columns), table_name
    for column in from_nextflow.columns:
        nextflow_values, runner_values = from_nextflow[column], from_runner[column]
        if column == "image":
            nextflow_values = nextflow_values.astype(object).map(lambda value: Path(value).name)
            runner_values = runner_values.astype(object).map(lambda value: Path(value).name)
        if column.removeprefix("qc_") == "reason":
            # NOTE: after a conversion the runner names the samplesheet's slide and its converted copy,
            # but a Nextflow task has only the staged copy's file name.
            nextflow_values = nextflow_values.astype(object).map(reason_text)
            runner_values = runner_values.astype(object).map(reason_text)
        pd.testing.assert_series_equal(nextflow_values, runner_values, obj=f"{table_name} column {column}")


def assert_same_results(nextflow_outdir: Path, runner_outdir: Path) -> None:
    """Check that both runs give identical SAMPLER tables, cohort, qc.csv and published sample files."""
    samples = sample_ids(nextflow_outdir)
    assert samples == sample_ids(runner_outdir)
    runner_qc = pd.read_csv(runner_outdir / "qc.csv")
    for sample in runner_qc.loc[runner_qc["status"] == "ok", "sample"]:
        pd.testing.assert_frame_equal(
            pd.read_parquet(nextflow_outdir / "samples" / sample / "sampler" / "sampler.parquet"),
            pd.read_parquet(runner_outdir / "samples" / sample / "sampler" / "sampler.parquet"),
        )
    from_nextflow = ad.read_h5ad(nextflow_outdir / "cohort.h5ad")
    from_runner = ad.read_h5ad(runner_outdir / "cohort.h5ad")
    assert list(from_nextflow.obs_names) == list(from_runner.obs_names)
    assert list(from_nextflow.var_names) == list(from_runner.var_names)
    np.testing.assert_array_equal(from_nextflow.X, from_runner.X)
    assert_same_table(from_nextflow.obs, from_runner.obs, "cohort.h5ad obs")
    assert_same_table(pd.read_csv(nextflow_outdir / "qc.csv"), runner_qc, "qc.csv")
    assert published_files(nextflow_outdir) == published_files(runner_outdir)


def test_test_profile_layout(test_profile_run: Path):
    assert_layout(test_profile_run)
    assert len(sample_ids(test_profile_run)) == 2
    qc = pd.read_csv(test_profile_run / "qc.csv")
    assert (qc["status"] == "ok").all(), qc[["sample", "status", "reason"]]


def test_test_profile_versions(test_profile_run: Path):
    versions = (test_profile_run / "pipeline_info" / "software_versions.yml").read_text()
    for process in ("SYNTH", "VALIDATE", "AOI", "TILE", "EXTRACT", "SAMPLER", "COHORT"):
        assert f"{process}:\n  samplerflow: " in versions
    assert "Nextflow: " in versions


def test_test_profile_matches_local_runner(test_profile_run: Path, tmp_path: Path):
    # The samplesheet and slides the test profile generated, as published by SYNTH.
    runner_outdir = tmp_path / "runner"
    run_local_runner(test_profile_run / "synthetic" / "samplesheet.csv", runner_outdir)
    assert_same_results(test_profile_run, runner_outdir)


def test_test_real_profile_matches_local_runner(test_real_profile_run: Path, tmp_path: Path):
    assert_layout(test_real_profile_run)
    runner_outdir = tmp_path / "runner"
    run_local_runner(REPO_ROOT / "assets" / "demo" / "samplesheet.csv", runner_outdir)
    assert_same_results(test_real_profile_run, runner_outdir)


def test_harmonized_run_layout(harmonized_run: tuple[Path, Path]):
    outdir, reference = harmonized_run
    qc = pd.read_csv(outdir / "qc.csv").set_index("sample")
    assert qc["status"].to_dict() == HARMONIZED_STATUS, qc[["status", "reason"]]
    for sample in HARMONIZED_STATUS:
        folder = outdir / "samples" / sample
        for name in (f"convert/{sample}.ome.tiff", "focus/focus_heatmap.png", "focus/focus_map.npz"):
            assert (folder / name).is_file(), f"missing output {folder / name}"
        objects = list((folder / "convert" / "objects").glob(f"{sample}_object*.ome.tiff"))
        assert objects, f"no per-object OME-TIFF in {folder / 'convert' / 'objects'}"
        for stage in ("convert", "aoi", "convert_objects", "focus"):
            assert (folder / "qc" / f"{stage}.json").is_file(), f"missing QC record {folder}/qc/{stage}.json"
    # QC stage II: the out-of-focus slide stops before tiling.
    assert not (outdir / "samples" / "synth_spindle_1" / "tiles").exists()
    assert qc.loc["synth_round_1", "stain_reference"] == reference.name
    assert qc.loc["synth_round_1", "target_mpp"] == 1.0
    # 3200 x 2400 px halved while the shorter side stays >= --min_level_px 256: 4 levels (3 with the default 512).
    assert qc.loc["synth_round_1", "convert_levels"] == 4
    assert list(ad.read_h5ad(outdir / "cohort.h5ad").obs_names) == ["synth_round_1"]
    versions = (outdir / "pipeline_info" / "software_versions.yml").read_text()
    for process in ("CONVERT", "CONVERT_OBJECTS", "FOCUS"):
        assert f"{process}:\n  samplerflow: " in versions


def test_harmonized_run_matches_local_runner(harmonized_run: tuple[Path, Path], tmp_path: Path):
    outdir, reference = harmonized_run
    runner_outdir = tmp_path / "runner"
    run_local_runner(
        outdir / "synthetic" / "samplesheet.csv", runner_outdir, *HARMONIZATION_OPTIONS, "--stain-reference", str(reference),
    )
    assert_same_results(outdir, runner_outdir)


def test_stub_run_of_test_profile(tmp_path: Path):
    """Stub-run the test profile with every harmonization stage on.

    The DeepFocus checkpoint and the stain reference must reach the tasks as staged inputs.
    """
    checkpoint = tmp_path / "inputs" / "deepfocus.pt"
    reference = tmp_path / "inputs" / "reference_tile.tif"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"stub checkpoint\n")
    reference.write_bytes(DEFAULT_REFERENCE.read_bytes())
    outdir = tmp_path / "results"
    result = run_nextflow(
        tmp_path, "-profile", "test", "-stub-run", "--outdir", str(outdir), *HARMONIZATION_PARAMS,
        "--focus_measure", "deepfocus", "--focus_checkpoint", str(checkpoint), "--stain_reference", str(reference),
    )
    require_success(result)
    assert (outdir / "cohort.h5ad").is_file()
    assert (outdir / "qc.csv").is_file()
    for sample in ("synth_stub_1", "synth_stub_2"):
        folder = outdir / "samples" / sample
        for name in (
            f"convert/{sample}.ome.tiff", f"convert/objects/{sample}_object0.ome.tiff", "focus/focus_map.npz",
            "qc/focus.json", "sampler/sampler.parquet",
        ):
            assert (folder / name).is_file(), f"missing output {folder / name}"
    work = tmp_path / "work"
    # Two samples, so two FOCUS and two EXTRACT tasks.
    assert len(list(work.glob("*/*/focus_checkpoint/deepfocus.pt"))) == 2
    assert len(list(work.glob("*/*/stain_reference/reference_tile.tif"))) == 2


@pytest.mark.parametrize("switch", ["report"])
def test_unavailable_stage_fails_clearly(tmp_path: Path, switch: str):
    result = run_nextflow(tmp_path, "-profile", "test", "-stub-run", f"--{switch}", "true", "--outdir", str(tmp_path / "results"))
    assert result.returncode != 0
    assert f"--{switch} is set, but the" in result.stdout + result.stderr
    assert "stage is not available yet" in result.stdout + result.stderr


def flat_config(*profile: str) -> dict[str, str]:
    """Return `nextflow config -flat` of the pipeline as {name: value text}."""
    arguments = ["config", str(REPO_ROOT), "-flat"]
    if profile:
        arguments += ["-profile", ",".join(profile)]
    # Run outside the repository, so Nextflow's .nextflow/ cache lands in a temporary folder.
    folder = Path(tempfile.mkdtemp(prefix="samplerflow-nextflow-config-"))
    environment = dict(os.environ, NXF_HOME=str(folder / "nxf-home"))
    result = subprocess.run([NEXTFLOW, *arguments], cwd=folder, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"nextflow config failed:\n{result.stdout}\n{result.stderr}"
    entries = {}
    for line in result.stdout.splitlines():
        name, separator, value = line.partition(" = ")
        if separator:
            entries[name.strip()] = value.strip()
    return entries


def test_config_params_read_like_nextflow():
    # The static tests read params with a small parser; Nextflow must read the same values.
    entries = flat_config()
    params = read_config_params(REPO_ROOT / "nextflow.config")
    for name, value in params.items():
        text = entries[f"params.{name}"]
        if value is None:
            assert text == "null", name
        elif isinstance(value, bool):
            assert text == str(value).lower(), name
        elif isinstance(value, str):
            assert text == f"'{value}'", name
        else:
            assert text == str(value), name


def test_cluster_gpu_profiles_resolve():
    entries = flat_config("slurm", "apptainer", "gpu")
    assert entries["process.executor"] == "'slurm'"
    assert entries["apptainer.enabled"] == "true"
    assert entries["params.gpu"] == "true"
    assert "'withLabel:process_gpu'.cpus" in " ".join(entries)


def test_docker_test_profile_resolves():
    entries = flat_config("test", "docker")
    assert entries["docker.enabled"] == "true"
    assert entries["params.synthetic"] == "true"
    assert entries["params.gpu"] == "false"


def test_bad_slide_skipped_not_fatal(tmp_path: Path):
    """A cohort with one unreadable slide finishes; qc.csv names the file and the good slide is in cohort.h5ad."""
    broken = tmp_path / "inputs" / "broken.svs"
    broken.parent.mkdir(parents=True)
    broken.write_text("not a slide\n")
    sheet = tmp_path / "inputs" / "samplesheet.csv"
    demo = REPO_ROOT / "assets" / "demo" / "CMU-1-Small-Region.svs"
    sheet.write_text(
        "sample,patient,image,center\n"
        f"good,p1,{demo},c1\n"
        f"bad,p2,{broken},c1\n"
    )
    outdir = tmp_path / "results"
    require_success(run_nextflow(tmp_path, "--input", str(sheet), "--outdir", str(outdir), *NEXTFLOW_SMALL_RUN))
    qc = pd.read_csv(outdir / "qc.csv").set_index("sample")
    assert qc.loc["good", "status"] == "ok"
    assert qc.loc["bad", "status"] == "unsupported_format"
    # Nextflow stages the slide under its own name, so the reason names the file, and qc.csv's image column has the path.
    assert broken.name in qc.loc["bad", "reason"]
    assert qc.loc["bad", "image"] == str(broken)
    assert list(ad.read_h5ad(outdir / "cohort.h5ad").obs_names) == ["good"]


def test_no_successful_sample_publishes_qc(tmp_path: Path):
    broken = tmp_path / "inputs" / "broken.svs"
    broken.parent.mkdir(parents=True)
    broken.write_text("not a slide\n")
    sheet = tmp_path / "inputs" / "samplesheet.csv"
    sheet.write_text(f"sample,patient,image,center\nbad,p1,{broken},c1\n")
    outdir = tmp_path / "results"
    result = run_nextflow(tmp_path, "--input", str(sheet), "--outdir", str(outdir), *NEXTFLOW_SMALL_RUN)
    assert result.returncode != 0
    assert "No sample succeeded" in result.stdout + result.stderr
    assert pd.read_csv(outdir / "qc.csv").loc[0, "status"] == "unsupported_format"
    assert not (outdir / "cohort.h5ad").exists()


def test_prefetch_weights_then_offline_extract(tmp_path: Path):
    """With --weights_cache, PREFETCH_WEIGHTS stages the checkpoint once and extraction loads it from the cache."""
    import torch
    import torchvision

    checkpoint = tmp_path / "inputs" / "inception_v3.pth"
    checkpoint.parent.mkdir(parents=True)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(model.state_dict(), checkpoint)
    cache = tmp_path / "weights-cache"
    outdir = tmp_path / "results"
    result = run_nextflow(
        tmp_path, "-profile", "test_real", "--outdir", str(outdir), "--backbone", "inception_v3",
        "--weights_inception_v3", str(checkpoint), "--weights_cache", str(cache), "--max_tiles", "2", "--scales", "1",
    )
    require_success(result)
    manifest = json.loads((cache / "manifest.json").read_text())
    qc = pd.read_csv(outdir / "qc.csv")
    assert "inception_v3" in manifest["backbones"]
    assert qc.loc[0, "status"] == "ok"
    assert qc.loc[0, "weights_inception_v3"].startswith(f"file:{cache}")
    assert "PREFETCH_WEIGHTS" in (outdir / "pipeline_info" / "software_versions.yml").read_text()


# Three synthetic slides per tissue kind, labelled by kind, cross-validated with
# three folds twice: the smallest run in which every fold contains both classes.
CLASSIFY_TASK = """\
name: round_vs_spindle
kind: binary
classes:
  round: [round]
  spindle: [spindle]
positive: round
"""
CLASSIFY_RUNNER_OPTIONS = ["--classify-folds", "3", "--classify-repeats", "2"]
CLASSIFY_PARAMS = ["--classify_folds", "3", "--classify_repeats", "2"]


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Outdir of `nextflow run . -profile test --task TASK` on six labelled synthetic slides, and the task file."""
    folder = tmp_path_factory.mktemp("nextflow-classify")
    task = folder / "inputs" / "task.yaml"
    task.parent.mkdir(parents=True)
    task.write_text(CLASSIFY_TASK)
    outdir = folder / "results"
    arguments = ["-profile", "test", "--synth_per_kind", "3", "--outdir", str(outdir), "--task", str(task), *CLASSIFY_PARAMS]
    require_success(run_nextflow(folder, *arguments))
    return outdir, task


def test_classify_run_publishes_report(classify_run: tuple[Path, Path]):
    outdir, _ = classify_run
    for name in ("metrics.json", "folds.csv", "out_of_fold.csv", "roc.png", "model/model_card.json"):
        assert (outdir / "classify" / name).is_file(), name
    metrics = json.loads((outdir / "classify" / "metrics.json").read_text())
    assert metrics["cohort"]["samples"] == 6
    assert "CLASSIFY" in (outdir / "pipeline_info" / "software_versions.yml").read_text()


def test_classify_run_matches_local_runner(classify_run: tuple[Path, Path], tmp_path: Path):
    outdir, task = classify_run
    runner_outdir = tmp_path / "runner"
    run_local_runner(outdir / "synthetic" / "samplesheet.csv", runner_outdir, "--task", str(task), *CLASSIFY_RUNNER_OPTIONS)
    for name in ("folds.csv", "out_of_fold.csv", "mean_roc.csv"):
        from_nextflow = pd.read_csv(outdir / "classify" / name)
        from_runner = pd.read_csv(runner_outdir / "classify" / name)
        pd.testing.assert_frame_equal(from_nextflow, from_runner, check_exact=True, obj=name)
    summary_keys = ("auroc_mean", "auroc_sd", "accuracy_mean")
    from_nextflow = json.loads((outdir / "classify" / "metrics.json").read_text())
    from_runner = json.loads((runner_outdir / "classify" / "metrics.json").read_text())
    assert {key: from_nextflow[key] for key in summary_keys} == {key: from_runner[key] for key in summary_keys}
