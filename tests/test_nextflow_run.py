"""Real Nextflow runs: the test and test_real profiles, a stub run, and the local runner on the same inputs.

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


def run_local_runner(samplesheet: Path, outdir: Path) -> None:
    status = samplerflow_main(["--no-progress", "run", "--input", str(samplesheet), "--outdir", str(outdir), *PROFILE_OPTIONS])
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


def assert_same_results(nextflow_outdir: Path, runner_outdir: Path) -> None:
    """Check that both runs give identical SAMPLER tables, cohort matrices and QC statuses."""
    samples = sample_ids(nextflow_outdir)
    assert samples == sample_ids(runner_outdir)
    for sample in samples:
        pd.testing.assert_frame_equal(
            pd.read_parquet(nextflow_outdir / "samples" / sample / "sampler" / "sampler.parquet"),
            pd.read_parquet(runner_outdir / "samples" / sample / "sampler" / "sampler.parquet"),
        )
    from_nextflow = ad.read_h5ad(nextflow_outdir / "cohort.h5ad")
    from_runner = ad.read_h5ad(runner_outdir / "cohort.h5ad")
    assert list(from_nextflow.obs_names) == list(from_runner.obs_names)
    assert list(from_nextflow.var_names) == list(from_runner.var_names)
    np.testing.assert_array_equal(from_nextflow.X, from_runner.X)
    columns = ["sample", "status", "tiles", "scales", "sampler_values"]
    pd.testing.assert_frame_equal(
        pd.read_csv(nextflow_outdir / "qc.csv")[columns],
        pd.read_csv(runner_outdir / "qc.csv")[columns],
    )


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


def test_stub_run_of_test_profile(tmp_path: Path):
    outdir = tmp_path / "results"
    require_success(run_nextflow(tmp_path, "-profile", "test", "-stub-run", "--outdir", str(outdir)))
    assert (outdir / "cohort.h5ad").is_file()
    assert (outdir / "qc.csv").is_file()
    for sample in ("synth_stub_1", "synth_stub_2"):
        assert (outdir / "samples" / sample / "sampler" / "sampler.parquet").is_file()


@pytest.mark.parametrize("switch", ["convert", "focus_qc", "stain_norm", "classify", "report"])
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
