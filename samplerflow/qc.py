"""Per-sample quality-control records and the cohort QC table.

Each per-sample stage returns a record: ``sample``, ``stage``, ``status``
(``ok`` or a failure status such as ``unreadable``, ``no_mpp``,
``no_tissue``, ``no_tiles``), ``reason`` (empty when ok) and stage fields
(mpp and its source, object and tile counts, weights provenance). Records
are written as ``qc/{stage}.json`` per sample and merged into ``qc.csv``
with one row per samplesheet row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from samplerflow.io import atomic_path, write_json
from samplerflow.samplesheet import Sample

log = logging.getLogger(__name__)

STAGES = ("aoi", "tile", "extract", "sampler")
QC_COLUMNS = (
    "sample", "status", "reason", "failed_stage", "image", "backend", "vendor", "width_px", "height_px",
    "mpp", "mpp_source", "roi_source", "objects", "tiles", "backbones", "scales", "sampler_values",
)
INTEGER_COLUMNS = ("width_px", "height_px", "objects", "tiles", "sampler_values")


def qc_record(sample: str, stage: str, *, status: str = "ok", reason: str = "", **fields: Any) -> dict[str, Any]:
    """Return a QC record for one stage of one sample."""
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}")
    return {"sample": sample, "stage": stage, "status": status, "reason": reason, **fields}


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a QC record as JSON, atomically."""
    write_json(path, record)


def read_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Read QC record JSON files."""
    return [json.loads(Path(path).read_text()) for path in paths]


def merge_records(samples: Sequence[Sample], records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Merge stage records into one QC row per sample, in samplesheet order.

    The first failed stage sets the status and reason; a sample whose
    stages did not all run is ``incomplete``.
    """
    by_sample: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_sample.setdefault(record["sample"], {})[record["stage"]] = record
    rows = []
    for sample in samples:
        stages = by_sample.get(sample.sample, {})
        row: dict[str, Any] = {"sample": sample.sample, "image": str(sample.image)}
        status, reason, failed_stage = "ok", "", ""
        for stage in STAGES:
            record = stages.get(stage)
            if record is None:
                if status == "ok":
                    status, reason, failed_stage = "incomplete", f"stage '{stage}' did not run", stage
                break
            row.update({key: value for key, value in record.items() if key not in ("sample", "stage", "status", "reason")})
            if record["status"] != "ok":
                status, reason, failed_stage = record["status"], record["reason"], stage
                break
        row.update(status=status, reason=reason, failed_stage=failed_stage)
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in INTEGER_COLUMNS:
        if column in table.columns:
            # Nullable integers, so failed samples' empty cells do not turn counts into floats.
            table[column] = table[column].astype("Int64")
    ordered = [column for column in QC_COLUMNS if column in table.columns]
    extra = sorted(column for column in table.columns if column not in QC_COLUMNS)
    return table[ordered + extra]


def write_qc_table(table: pd.DataFrame, destination: Path) -> None:
    """Write ``qc.csv`` atomically."""
    with atomic_path(destination) as temporary:
        table.to_csv(temporary, index=False)


def log_failures(table: pd.DataFrame) -> None:
    """Log one warning per sample that did not finish, with its reason."""
    failed = table[table["status"] != "ok"]
    for row in failed.itertuples():
        log.warning("Sample %s skipped (%s): %s", row.sample, row.status, row.reason)
