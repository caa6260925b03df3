"""Cohort step: per-sample SAMPLER tables into one AnnData file.

File contract: ``cohort.h5ad`` (AnnData) with

- ``X``: float64, samples x SAMPLER values, only samples whose QC status is ``ok``;
- ``obs``: indexed by sample id; samplesheet columns (patient, center,
  label, image, metadata columns) and QC columns prefixed ``qc_`` (mpp and
  its source, backend, objects, tiles, weights provenance per backbone);
- ``var``: indexed by SAMPLER name ``{backbone}.s{scale}.f{index}.q{percentile}``,
  with columns backbone, scale, feature_index, feature_label, percentile;
- ``uns["samplerflow"]``: percentiles, parameters and package versions (JSON strings).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from samplerflow.errors import InputError
from samplerflow.io import atomic_path
from samplerflow.provenance import package_versions
from samplerflow.samplesheet import Sample

log = logging.getLogger(__name__)

VAR_COLUMNS = ["backbone", "scale", "feature_index", "feature_label", "percentile"]


def build_cohort(
    samples: Sequence[Sample],
    qc_table: pd.DataFrame,
    sampler_files: Mapping[str, Path],
    *,
    parameters: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Stack the SAMPLER vectors of samples with QC status ``ok`` into an AnnData."""
    qc_by_sample = qc_table.set_index("sample")
    kept = [s for s in samples if s.sample in sampler_files and qc_by_sample.loc[s.sample, "status"] == "ok"]
    if not kept:
        raise InputError("No sample has a SAMPLER table with QC status 'ok'; see qc.csv for the reasons")

    reference: pd.DataFrame | None = None
    rows = []
    for sample in kept:
        table = pd.read_parquet(sampler_files[sample.sample])
        if reference is None:
            reference = table
        elif not np.array_equal(table["feature"].to_numpy(), reference["feature"].to_numpy()):
            raise InputError(
                f"SAMPLER features of sample {sample.sample} differ from those of {kept[0].sample} "
                "(different backbones, scales or percentiles); rerun all samples with the same settings"
            )
        rows.append(table["value"].to_numpy(dtype=np.float64))
    assert reference is not None

    var = reference[["feature"] + VAR_COLUMNS].set_index("feature")
    var.index.name = None
    var["backbone"] = var["backbone"].astype("category")
    var["feature_label"] = var["feature_label"].astype(str).astype("category")

    obs = pd.DataFrame([_obs_row(sample, qc_by_sample.loc[sample.sample]) for sample in kept])
    obs = obs.set_index("sample")
    obs.index.name = None
    for column in obs.columns:
        if obs[column].dtype == object:
            # Categorical up front, as anndata would store them, without its per-column notice.
            obs[column] = obs[column].astype(str).astype("category")

    adata = ad.AnnData(X=np.vstack(rows), obs=obs, var=var)
    adata.uns["samplerflow"] = {
        "percentiles": json.dumps(sorted(set(reference["percentile"].tolist()))),
        "parameters": json.dumps(dict(parameters or {}), sort_keys=True, default=str),
        "versions": json.dumps(package_versions(), sort_keys=True),
    }
    log.info("Cohort: %d samples x %d SAMPLER values", adata.n_obs, adata.n_vars)
    return adata


def _obs_row(sample: Sample, qc: pd.Series) -> dict[str, Any]:
    row = sample.as_row()
    row["mpp"] = "" if sample.mpp is None else sample.mpp
    row = {key: ("" if value is None else value) for key, value in row.items()}
    row["sample"] = sample.sample
    row["samplesheet_mpp"] = row.pop("mpp")
    for key, value in qc.items():
        if key in ("image",):
            continue
        row[f"qc_{key}"] = "" if (isinstance(value, float) and np.isnan(value)) else value
    return row


def write_cohort(adata: ad.AnnData, destination: Path) -> None:
    """Write the AnnData file atomically."""
    with atomic_path(destination) as temporary:
        adata.write_h5ad(temporary)
