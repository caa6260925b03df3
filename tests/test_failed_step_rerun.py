"""A failed step is recorded once; an identical rerun reports it again instead of crashing."""

from __future__ import annotations

import pandas as pd

from conftest import DEMO_SHEET, read_timings, run_cli


def test_failed_extract_rerun_reports_failure(tmp_path, monkeypatch):
    from samplerflow import stages

    def failing_extract(**_: object) -> dict:
        raise RuntimeError("simulated extraction failure")

    monkeypatch.setattr(stages, "extract", failing_extract)
    outdir = tmp_path / "out"
    options = ["run", "--input", DEMO_SHEET, "--outdir", outdir, "--max-tiles", "4", "--scales", "1", "--workers", "0"]
    first = run_cli(*options)
    second = run_cli(*options)
    assert first == 1
    assert second == 1
    qc = pd.read_csv(outdir / "qc.csv")
    assert qc.loc[0, "status"] == "error"
    assert qc.loc[0, "failed_stage"] == "extract"
    assert "simulated extraction failure" in qc.loc[0, "reason"]
    timings = read_timings(outdir)
    assert timings["CMU-1-Small-Region/extract.handcrafted"] is True
