"""Per-sample quality-control records and the cohort QC table.

Each per-sample stage returns a record: ``sample``, ``stage``, ``status``
(``ok`` or a failure status such as ``unreadable``, ``no_mpp``,
``no_tissue``, ``out_of_focus``, ``no_tiles``), ``reason`` (empty when ok)
and stage fields (conversion, mpp and its source, resampling scale,
object and tile counts, focus scores, stain normalization, weights
provenance). Records are written as ``qc/{stage}.json`` per sample and
merged into ``qc.csv`` with one row per samplesheet row.

QC happens in three places: stage I, slides that cannot be read or hold
no tissue (``aoi``); stage II, slides out of focus (``focus``); stage III,
slides whose SAMPLER vector is far from the cohort, flagged for review but
kept (``cohort``, columns ``outlier*``).
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

STAGES = ("convert", "aoi", "convert_objects", "focus", "tile", "extract", "sampler")
OPTIONAL_STAGES = frozenset({"convert", "convert_objects", "focus"})
"""Stages that run only when switched on; a sample without their record has not missed them."""
QC_COLUMNS = (
    "sample", "status", "reason", "failed_stage", "outlier", "outlier_score", "outlier_reason", "image",
    "source_format", "converted", "convert_compression", "convert_levels", "convert_bytes",
    "backend", "vendor", "width_px", "height_px", "mpp", "mpp_source", "source_mpp", "target_mpp", "scale_factor",
    "roi_source", "objects", "object_files",
    "focus_flag", "focus_reason", "focus_scorer", "focus_threshold", "focus_tissue_tiles", "focus_blurred_tiles",
    "focus_blurred_fraction", "tiles", "scales", "backbones",
    "stain_method", "stain_reference", "stain_reference_sha256", "stain_unchanged_tiles", "sampler_values",
    "thumbnail", "overlay", "focus_heatmap",
)
INTEGER_COLUMNS = (
    "width_px", "height_px", "objects", "tiles", "sampler_values", "convert_levels", "convert_bytes",
    "object_files", "focus_tissue_tiles", "focus_blurred_tiles", "stain_unchanged_tiles",
)
# Images for review and the report, relative to OUTDIR/samples/{sample}/, by the stage that writes them.
STAGE_IMAGES = {"aoi": {"thumbnail": "aoi/thumbnail.png", "overlay": "aoi/overlay.png"}, "focus": {"focus_heatmap": "focus/focus_heatmap.png"}}


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
    required stages did not all run is ``incomplete``. Columns
    ``thumbnail``, ``overlay`` and ``focus_heatmap`` give the review images
    of the stages that wrote them, relative to ``samples/{sample}/``.
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
                if stage in OPTIONAL_STAGES:
                    continue
                if status == "ok":
                    status, reason, failed_stage = "incomplete", f"stage '{stage}' did not run", stage
                break
            row.update({key: value for key, value in record.items() if key not in ("sample", "stage", "status", "reason")})
            # These statuses are given after the images were written; a slide too coarse for focus QC has no map.
            if record["status"] in ("ok", "no_tissue", "out_of_focus") and record.get("focus_flag") != "not_assessed":
                row.update(STAGE_IMAGES.get(stage, {}))
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
