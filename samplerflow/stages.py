"""The pipeline stages, one function each, with explicit input and output paths.

The command line (``samplerflow <stage>``), the local runner
(``samplerflow run``) and the Nextflow modules (through the command line)
call these functions. Each per-sample stage returns its QC record and raises
:class:`~samplerflow.errors.SampleError` when the sample cannot go on.

==============  ================================  =====================================
stage           inputs                            outputs
==============  ================================  =====================================
validate        samplesheet CSV                   validated CSV (absolute paths)
convert         slide                             {sample}.ome.tiff (pyramidal, no
                                                  associated images)
aoi             slide, optional curated ROI JSON  thumbnail.png, tissue_mask.png,
                                                  overlay.png, roi.json
convert_objects slide, roi.json                   {sample}_object{i}.ome.tiff per object
focus           slide                             focus_heatmap.png, focus_map.npz
tile            roi.json, tissue_mask.png         tiles.parquet
extract         slide, tiles.parquet              {backbone}.h5 per backbone
sampler         {backbone}.h5 files               sampler.parquet
cohort          validated CSV, sampler.parquet    cohort.h5ad, qc.csv (with the
                and QC JSON files                 outlier flags of QC stage III)
==============  ================================  =====================================

Harmonization options thread through the stages that read pixels: with
``target_mpp`` the aoi, focus and extract stages read the slide through
:class:`~samplerflow.resample.ResampledSlideReader`, and must all get the
same value; ``stain`` normalizes tiles inside extract. When a stage runs
on a converted slide, every later stage gets the converted file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from samplerflow.aoi import AoiParams, detect_objects, read_mask
from samplerflow.cohort import build_cohort, write_cohort
from samplerflow.convert import ConvertParams, object_box, write_pyramid
from samplerflow.errors import SampleError
from samplerflow.features.store import read_features
from samplerflow.focus_params import FocusParams
from samplerflow.outliers import DEFAULT_THRESHOLD_MADS as DEFAULT_OUTLIER_MADS
from samplerflow.qc import log_failures, merge_records, qc_record, read_records, write_qc_table
from samplerflow.resample import open_resampled, resampling_fields
from samplerflow.sampler import DEFAULT_PERCENTILES, run_sampler
from samplerflow.samplesheet import Sample, read_samplesheet, write_samplesheet
from samplerflow.slide import open_slide
from samplerflow.stain import StainParams
from samplerflow.tiling import TilingParams, make_grid, read_tiles, write_tiles

log = logging.getLogger(__name__)


def validate(samplesheet: Path, output: Path) -> list[Sample]:
    """Validate a samplesheet and write it with absolute paths."""
    samples = read_samplesheet(samplesheet)
    write_samplesheet(samples, output)
    return samples


def convert(*, sample: str, image: Path, output: Path, params: ConvertParams, mpp: float | None = None) -> dict[str, Any]:
    """Write the slide as a pyramidal OME-TIFF without associated images."""
    with open_slide(image, mpp=mpp) as reader:
        summary = write_pyramid(reader, output, params=params)
        source = reader.info
    return qc_record(
        sample, "convert",
        source_format=source.vendor or source.backend,
        converted=output.name,
        convert_compression=params.compression,
        convert_levels=summary["levels"],
        convert_bytes=output.stat().st_size,
        convert_mpp_source=source.mpp_source,
    )


def convert_objects(
    *, sample: str, image: Path, roi: Path, outdir: Path, params: ConvertParams, mpp: float | None = None
) -> dict[str, Any]:
    """Write one pyramidal OME-TIFF per ROI object, cropped to the object's box, into ``outdir``."""
    objects = json.loads(roi.read_text())["objects"]
    written = []
    with open_slide(image, mpp=mpp) as reader:
        info = reader.info
        for index, item in enumerate(objects):
            destination = outdir / f"{sample}_object{index}.ome.tiff"
            write_pyramid(reader, destination, params=params, box=object_box(item, width=info.width, height=info.height))
            written.append(destination.name)
    return qc_record(sample, "convert_objects", object_files=len(written))


def focus(*, sample: str, image: Path, outdir: Path, params: FocusParams, mpp: float | None = None) -> dict[str, Any]:
    """Score focus over the tissue; write focus_heatmap.png and focus_map.npz into ``outdir``.

    The slide is read at its own resolution (focus tiles are resampled to
    ``params.mpp`` anyway). Raises :class:`SampleError` ``out_of_focus``
    when too many tissue tiles are blurred, unless ``params.keep_flagged``;
    kept slides carry the flag in ``focus_flag``.
    """
    from samplerflow.focus import assess_focus, focus_map, make_scorer, write_heatmap, write_scores

    scorer = make_scorer(params)
    with open_slide(image, mpp=mpp) as reader:
        slide_mpp = reader.info.mpp
        if slide_mpp > params.mpp * MAX_FOCUS_ENLARGEMENT:
            # Enlarged pixels look blurred to every measure, so the check would only reflect the scan resolution.
            reason = (
                f"{image}: not assessed, because the slide's {slide_mpp:.3g} um/px is more than "
                f"{MAX_FOCUS_ENLARGEMENT:g}x coarser than the focus resolution {params.mpp:g} um/px; "
                "review its focus by eye or lower --focus-mpp"
            )
            log.warning("%s: focus %s", sample, reason)
            return qc_record(sample, "focus", focus_flag="not_assessed", focus_reason=reason, focus_scorer=scorer.name)
        result = focus_map(reader, scorer=scorer, tile_size_um=params.tile_size_um, mpp=params.mpp)
    write_heatmap(result, outdir / "focus_heatmap.png")
    write_scores(result, outdir / "focus_map.npz")
    assessment = assess_focus(result, max_blurred_fraction=params.max_blurred_fraction)
    status, reason = assessment.pop("status"), assessment.pop("reason")
    fields = {f"focus_{key}" if not key.startswith("focus_") else key: value for key, value in assessment.items()}
    if status != "ok" and not params.keep_flagged:
        raise SampleError(status, f"{image}: {reason}", fields={**fields, "focus_flag": status})
    if status != "ok":
        log.warning("%s: kept although flagged %s: %s", sample, status, reason)
    return qc_record(sample, "focus", focus_flag="" if status == "ok" else status, focus_reason=reason, **fields)


# Focus is judged on tiles read at FocusParams.mpp. A slide scanned more than
# this many times coarser would be judged on enlarged pixels.
MAX_FOCUS_ENLARGEMENT = 2.0


def aoi(
    *,
    sample: str,
    image: Path,
    outdir: Path,
    params: AoiParams,
    mpp: float | None = None,
    roi: Path | None = None,
    target_mpp: float | None = None,
) -> dict[str, Any]:
    """Find tissue objects on a thumbnail; write thumbnail, mask, overlay and roi.json into ``outdir``."""
    with open_resampled(image, mpp=mpp, target_mpp=target_mpp) as reader:
        info = reader.info
        fields = {
            "backend": info.backend,
            "vendor": info.vendor,
            "width_px": info.width,
            "height_px": info.height,
            "mpp": info.mpp,
            "mpp_source": info.mpp_source,
            **resampling_fields(reader, target_mpp=target_mpp),
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
    target_mpp: float | None = None,
    stain: StainParams | None = None,
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
        target_mpp=target_mpp,
        stain=stain,
        progress=progress,
    )
    fields: dict[str, Any] = {"backbones": ",".join(backbones)}
    for name, path in written.items():
        fields[f"weights_{name}"] = _describe_weights(read_features(path).provenance)
    stain = stain or StainParams()
    if stain.enabled:
        import h5py

        with h5py.File(next(iter(written.values())), "r") as handle:
            record = json.loads(handle.attrs["stain_normalization"])
        fields.update(
            stain_method=record["method"],
            stain_reference=Path(record["reference"]).name,
            stain_reference_sha256=record["reference_sha256"],
            stain_unchanged_tiles=record["unchanged_tiles"],
        )
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
    outlier_mads: float | None = DEFAULT_OUTLIER_MADS,
) -> None:
    """Merge QC records into qc.csv and SAMPLER tables of ok samples into cohort.h5ad.

    ``sampler_files`` are matched to samples by the ``sample`` column they
    contain. ``log_skipped`` logs a warning per failed sample (the local
    runner has logged them already). When no sample succeeded, ``allow_empty``
    writes only qc.csv instead of raising :class:`InputError`, so a workflow
    manager can publish the QC table before it reports the failure.

    QC stage III: with ``outlier_mads`` set, slides whose SAMPLER vector
    lies more than that many MADs beyond the cohort's median PCA distance
    are flagged for review (``outlier``, ``outlier_score`` and
    ``outlier_reason`` in qc.csv and, prefixed ``qc_``, in the AnnData
    ``obs``). Flagged slides stay in the cohort.
    """
    import pandas as pd

    samples = read_samplesheet(samplesheet)
    table = merge_records(samples, read_records(qc_files))
    if log_skipped:
        log_failures(table)
    if allow_empty and not (table["status"] == "ok").any():
        write_qc_table(table, qc_output)
        log.error("No sample succeeded; wrote %s without %s", qc_output, output)
        return
    by_sample: dict[str, Path] = {}
    for path in sampler_files:
        names = pd.read_parquet(path, columns=["sample"])["sample"].unique()
        if len(names) != 1:
            raise ValueError(f"{path}: a SAMPLER table must hold exactly one sample, found {list(names)}")
        by_sample[str(names[0])] = Path(path)
    try:
        adata = build_cohort(samples, table, by_sample, parameters=parameters)
    except Exception:
        write_qc_table(table, qc_output)  # the QC table explains the failure, so it is written first
        raise
    if outlier_mads is not None:
        table = _flag_outliers(adata, table, threshold_mads=outlier_mads)
    write_qc_table(table, qc_output)
    write_cohort(adata, output)


# The outlier check scales by medians of absolute deviations (MADs). With a
# handful of slides a MAD can be near zero, so ordinary slides are flagged
# hundreds of MADs out: on six synthetic slides of two kinds, one was flagged
# 541 MADs out. The automatic check therefore waits for a cohort of this size.
MIN_OUTLIER_COHORT = 10


def _flag_outliers(adata: Any, table: Any, *, threshold_mads: float) -> Any:
    """QC stage III: add outlier columns to the QC table and to ``adata.obs`` (in place)."""
    from samplerflow.outliers import flag_outliers

    if adata.n_obs < MIN_OUTLIER_COHORT:
        log.info("Outlier check skipped: it needs at least %d slides, the cohort has %d", MIN_OUTLIER_COHORT, adata.n_obs)
        return table
    try:
        flags = flag_outliers(adata, threshold_mads=threshold_mads)
    except ValueError as error:  # e.g. every feature constant across the cohort
        log.warning("Outlier check skipped: %s", error)
        return table
    flags = flags.set_index("sample")
    columns = {"outlier": flags["outlier"], "outlier_score": flags["mads_above_median"].round(3), "outlier_reason": flags["reason"]}
    for name, values in columns.items():
        table[name] = table["sample"].map(values)
        adata.obs[f"qc_{name}"] = values.reindex(adata.obs_names).to_numpy()
    adata.obs["qc_outlier_reason"] = adata.obs["qc_outlier_reason"].astype(str).astype("category")
    table["outlier"] = table["outlier"].astype("boolean")
    return table
