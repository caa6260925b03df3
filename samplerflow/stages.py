"""The pipeline stages, one function each, with explicit input and output paths.

The command line (``samplerflow <stage>``), the local runner
(``samplerflow run``) and the Nextflow modules (through the command line)
call these functions. Each per-sample stage returns its QC record and raises
:class:`~samplerflow.errors.SampleError` when the sample cannot go on.

=========  ================================  ========================================
stage      inputs                            outputs
=========  ================================  ========================================
validate   samplesheet CSV                   validated CSV (absolute paths)
aoi        slide, optional curated ROI JSON  thumbnail.png, tissue_mask.png,
                                             overlay.png, roi.json
tile       roi.json, tissue_mask.png         tiles.parquet
extract    slide, tiles.parquet              {backbone}.h5 per backbone
sampler    {backbone}.h5 files               sampler.parquet
cohort     validated CSV, sampler.parquet    cohort.h5ad, qc.csv
           and QC JSON files
=========  ================================  ========================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from samplerflow.aoi import AoiParams, detect_objects, read_mask
from samplerflow.cohort import build_cohort, write_cohort
from samplerflow.errors import SampleError
from samplerflow.features.store import read_features
from samplerflow.qc import log_failures, merge_records, qc_record, read_records, write_qc_table
from samplerflow.sampler import DEFAULT_PERCENTILES, run_sampler
from samplerflow.samplesheet import Sample, read_samplesheet, write_samplesheet
from samplerflow.slide import open_slide
from samplerflow.tiling import TilingParams, make_grid, read_tiles, write_tiles

log = logging.getLogger(__name__)


def validate(samplesheet: Path, output: Path) -> list[Sample]:
    """Validate a samplesheet and write it with absolute paths."""
    samples = read_samplesheet(samplesheet)
    write_samplesheet(samples, output)
    return samples


def aoi(*, sample: str, image: Path, outdir: Path, params: AoiParams, mpp: float | None = None, roi: Path | None = None) -> dict[str, Any]:
    """Find tissue objects on a thumbnail; write thumbnail, mask, overlay and roi.json into ``outdir``."""
    with open_slide(image, mpp=mpp) as reader:
        info = reader.info
        fields = {
            "backend": info.backend,
            "vendor": info.vendor,
            "width_px": info.width,
            "height_px": info.height,
            "mpp": info.mpp,
            "mpp_source": info.mpp_source,
        }
        try:
            payload = detect_objects(reader, outdir, params=params, roi_path=roi)
        except SampleError as error:
            error.fields.update(fields)
            raise
    return qc_record(sample, "aoi", roi_source=payload["source"], objects=len(payload["objects"]), **fields)


def tile(*, sample: str, roi: Path, mask: Path, output: Path, params: TilingParams) -> dict[str, Any]:
    """Place tile centres inside the ROI objects; write tiles.parquet."""
    payload = json.loads(roi.read_text())
    grid = make_grid(payload, read_mask(mask), params)
    write_tiles(grid, output)
    return qc_record(sample, "tile", tiles=len(grid.table), scales=",".join(str(k) for k in params.scales))


def extract(
    *,
    sample: str,
    image: Path,
    tiles: Path,
    outdir: Path,
    backbones: Sequence[str],
    weights: Mapping[str, str] | None = None,
    random_weights: bool = False,
    mpp: float | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
    autocast: str | None = "bfloat16",
    feature_dtype: str = "float32",
    progress: bool = True,
) -> dict[str, Any]:
    """Extract per-tile features at every scale; write {backbone}.h5 per backbone into ``outdir``."""
    from samplerflow.features.extract import extract_features  # torch is imported only when features are extracted

    grid = read_tiles(tiles)
    written = extract_features(
        slide_path=image,
        grid=grid,
        backbones=backbones,
        outdir=outdir,
        weights=dict(weights or {}),
        random_weights=random_weights,
        mpp=mpp,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        autocast=autocast,
        feature_dtype=feature_dtype,
        progress=progress,
    )
    fields: dict[str, Any] = {"backbones": ",".join(backbones)}
    for name, path in written.items():
        fields[f"weights_{name}"] = _describe_weights(read_features(path).provenance)
    return qc_record(sample, "extract", **fields)


def _describe_weights(provenance: Mapping[str, Any]) -> str:
    kind = provenance.get("weights", "none")
    if kind == "file":
        return f"file:{provenance['path']}@sha256:{provenance['sha256']}"
    if kind == "hf-hub":
        return f"hf-hub:{provenance['repo_id']}/{provenance['filename']}@sha256:{provenance['sha256']}"
    if kind == "random":
        return f"random(seed={provenance.get('seed')})"
    return str(kind)


def sampler(*, sample: str, features: Sequence[Path], output: Path, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
    """Compute the SAMPLER table from per-tile features; write sampler.parquet."""
    table = run_sampler(sample=sample, feature_files=features, destination=output, percentile_list=percentiles)
    return qc_record(sample, "sampler", sampler_values=len(table))


def cohort(
    *,
    samplesheet: Path,
    sampler_files: Sequence[Path],
    qc_files: Sequence[Path],
    output: Path,
    qc_output: Path,
    parameters: Mapping[str, Any] | None = None,
    log_skipped: bool = True,
    allow_empty: bool = False,
) -> None:
    """Merge QC records into qc.csv and SAMPLER tables of ok samples into cohort.h5ad.

    ``sampler_files`` are matched to samples by the ``sample`` column they
    contain. ``log_skipped`` logs a warning per failed sample (the local
    runner has logged them already). When no sample succeeded, ``allow_empty``
    writes only qc.csv instead of raising :class:`InputError`, so a workflow
    manager can publish the QC table before it reports the failure.
    """
    import pandas as pd

    samples = read_samplesheet(samplesheet)
    table = merge_records(samples, read_records(qc_files))
    write_qc_table(table, qc_output)
    if log_skipped:
        log_failures(table)
    if allow_empty and not (table["status"] == "ok").any():
        log.error("No sample succeeded; wrote %s without %s", qc_output, output)
        return
    by_sample: dict[str, Path] = {}
    for path in sampler_files:
        names = pd.read_parquet(path, columns=["sample"])["sample"].unique()
        if len(names) != 1:
            raise ValueError(f"{path}: a SAMPLER table must hold exactly one sample, found {list(names)}")
        by_sample[str(names[0])] = Path(path)
    adata = build_cohort(samples, table, by_sample, parameters=parameters)
    write_cohort(adata, output)
