"""Command line: ``samplerflow run`` and one subcommand per stage.

Option defaults come from the stage parameter classes, so the CLI, the local
runner and the Nextflow parameters share one set of defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samplerflow import __version__
from samplerflow.aoi import AoiParams
from samplerflow.classify.choices import MODEL_KINDS
from samplerflow.convert import COMPRESSIONS, ConvertParams
from samplerflow.errors import InputError, SampleError
from samplerflow.focus_params import SCORERS, FocusParams
from samplerflow.outliers import DEFAULT_THRESHOLD_MADS
from samplerflow.sampler import DEFAULT_PERCENTILES
from samplerflow.stain import STAIN_METHODS, StainParams
from samplerflow.tiling import GRIDS, TilingParams

log = logging.getLogger("samplerflow")

AOI_DEFAULTS = AoiParams()
TILING_DEFAULTS = TilingParams()
CONVERT_DEFAULTS = ConvertParams()
FOCUS_DEFAULTS = FocusParams()
PER_SAMPLE_STAGES = ("convert", "aoi", "convert-objects", "focus", "tile", "extract", "sampler")


def _scales(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid scales {text!r}: give whole numbers like 1,2,3,4") from error
    if not values:
        raise argparse.ArgumentTypeError("give at least one scale")
    return values


def _percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid percentiles {text!r}: give numbers like 5,15,25") from error
    if not values or any(not 0 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"invalid percentiles {text!r}: values must lie in 0..100")
    return values


def parse_weights_option(items: Sequence[str] | None) -> dict[str, str]:
    """Turn repeated ``--weights BACKBONE=SPEC`` values into ``{backbone: spec}``."""
    weights: dict[str, str] = {}
    for item in items or []:
        name, separator, spec = item.partition("=")
        if not separator or not name.strip() or not spec.strip():
            raise InputError(f"Invalid --weights {item!r}: use BACKBONE=PATH or BACKBONE=hf-hub:ORG/NAME")
        weights[name.strip()] = spec.strip()
    return weights


def _resolved_weights(args: argparse.Namespace, backbones: Sequence[str]) -> dict[str, str]:
    """Combine --weights with checkpoints staged in --weights-cache (explicit --weights win)."""
    weights = parse_weights_option(args.weights)
    if args.weights_cache is not None:
        from samplerflow.features.fetch import staged_weights

        missing = [name for name in backbones if name not in weights]
        weights = {**staged_weights(args.weights_cache, missing), **weights}
    return weights


def _autocast(args: argparse.Namespace) -> str | None:
    return None if args.autocast == "none" else args.autocast


def _backbones(items: Sequence[str] | None) -> tuple[str, ...]:
    names: list[str] = []
    for item in items or ["handcrafted"]:
        names += [name for name in item.split(",") if name]
    if len(set(names)) != len(names):
        raise InputError(f"Backbone listed twice: {names}")
    return tuple(names)


def add_aoi_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tissue detection (AOI)")
    group.add_argument("--thumbnail-mpp", type=float, default=AOI_DEFAULTS.thumbnail_mpp, help="thumbnail resolution in um/px (default: %(default)s)")
    group.add_argument("--brightness-max", type=int, default=AOI_DEFAULTS.brightness_max, help="tissue is darker than this grey level, 0-255 (default: %(default)s)")
    group.add_argument("--saturation-min", type=int, default=AOI_DEFAULTS.saturation_min, help="tissue is more saturated than this HSV saturation, 0-255 (default: %(default)s)")
    group.add_argument("--dbscan-eps-um", type=float, default=AOI_DEFAULTS.eps_um, help="DBSCAN neighbourhood radius in um (default: %(default)s)")
    group.add_argument("--dbscan-min-samples", type=int, default=AOI_DEFAULTS.min_samples, help="DBSCAN core-point neighbour count (default: %(default)s)")
    group.add_argument("--min-object-area-um2", type=float, default=AOI_DEFAULTS.min_object_area_um2, help="smallest tissue object kept, in um^2 (default: %(default)s)")
    group.add_argument("--roi-padding-um", type=float, default=AOI_DEFAULTS.padding_um, help="margin added around each object, in um (default: %(default)s)")


def aoi_params(args: argparse.Namespace) -> AoiParams:
    return AoiParams(
        thumbnail_mpp=args.thumbnail_mpp,
        brightness_max=args.brightness_max,
        saturation_min=args.saturation_min,
        eps_um=args.dbscan_eps_um,
        min_samples=args.dbscan_min_samples,
        min_object_area_um2=args.min_object_area_um2,
        padding_um=args.roi_padding_um,
    )


def add_convert_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("conversion to pyramidal OME-TIFF")
    group.add_argument("--compression", choices=COMPRESSIONS, default=CONVERT_DEFAULTS.compression, help="tile codec of converted slides (default: %(default)s)")
    group.add_argument("--jpeg-quality", type=int, default=CONVERT_DEFAULTS.jpeg_quality, help="JPEG quality, 1-100 (default: %(default)s)")
    group.add_argument("--convert-tile-px", type=int, default=CONVERT_DEFAULTS.tile_px, help="TIFF tile side in pixels, a multiple of 16 (default: %(default)s)")
    group.add_argument("--min-level-px", type=int, default=CONVERT_DEFAULTS.min_level_px, help="stop halving levels below this shorter side in pixels (default: %(default)s)")


def convert_params(args: argparse.Namespace) -> ConvertParams:
    try:
        return ConvertParams(
            tile_px=args.convert_tile_px, compression=args.compression, jpeg_quality=args.jpeg_quality, min_level_px=args.min_level_px,
        )
    except ValueError as error:
        raise InputError(str(error)) from error


def add_target_mpp_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-mpp", type=float, default=None,
                        help="read every slide resampled to this many um/px, e.g. 0.25 (default: each slide's own resolution)")


def add_focus_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("focus QC")
    group.add_argument("--focus-measure", choices=SCORERS, default=FOCUS_DEFAULTS.measure, help="tile focus measure (default: %(default)s)")
    group.add_argument("--focus-checkpoint", default=None, help="DeepFocus state dict for --focus-measure deepfocus")
    group.add_argument("--blur-threshold", type=float, default=None, help="sharpness below which (DeepFocus: probability above which) a tile is blurred (default: the measure's own)")
    group.add_argument("--max-blurred-fraction", type=float, default=FOCUS_DEFAULTS.max_blurred_fraction, help="flag a slide out_of_focus above this blurred share of tissue tiles (default: %(default)s)")
    group.add_argument("--keep-out-of-focus", action="store_true", help="keep flagged slides in later stages (the flag stays in qc.csv)")
    group.add_argument("--focus-tile-size-um", type=float, default=FOCUS_DEFAULTS.tile_size_um, help="side of a focus tile in um (default: %(default)s)")
    group.add_argument("--focus-mpp", type=float, default=FOCUS_DEFAULTS.mpp, help="resolution focus tiles are read at, um/px (default: %(default)s)")


def focus_params(args: argparse.Namespace) -> FocusParams:
    return FocusParams(
        measure=args.focus_measure, checkpoint=args.focus_checkpoint, blur_threshold=args.blur_threshold,
        max_blurred_fraction=args.max_blurred_fraction, keep_flagged=args.keep_out_of_focus,
        tile_size_um=args.focus_tile_size_um, mpp=args.focus_mpp,
    )


def add_stain_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stain normalization")
    group.add_argument("--stain-norm", choices=STAIN_METHODS, default="none", help="normalize tiles before feature extraction (default: %(default)s)")
    group.add_argument("--stain-reference", default=None, help="reference tile to fit on (default: the shipped Kather CC BY 4.0 tile)")


def stain_params(args: argparse.Namespace) -> StainParams:
    return StainParams(method=args.stain_norm, reference=args.stain_reference)


def add_outlier_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cohort outlier check (QC stage III)")
    group.add_argument("--outlier-mads", type=float, default=DEFAULT_THRESHOLD_MADS, help="flag slides this many MADs beyond the cohort's median PCA distance (default: %(default)s)")
    group.add_argument("--no-outlier-check", action="store_true", help="skip the outlier check")


def outlier_mads(args: argparse.Namespace) -> float | None:
    if args.no_outlier_check:
        return None
    if args.outlier_mads <= 0:
        raise InputError(f"Invalid --outlier-mads {args.outlier_mads}: must be positive")
    return args.outlier_mads


def add_tiling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tiling")
    group.add_argument("--grid", choices=GRIDS, default=TILING_DEFAULTS.grid, help="grid shape (default: %(default)s)")
    group.add_argument("--tile-size-um", type=float, default=TILING_DEFAULTS.tile_size_um, help="side of the base (scale 1) tile in um (default: %(default)s)")
    group.add_argument("--spacing-um", type=float, default=None, help="centre-to-centre spacing in um (default: the base tile size)")
    group.add_argument("--scales", type=_scales, default=TILING_DEFAULTS.scales, help="fields of view as multiples of the base tile (default: 1,2,3,4)")
    group.add_argument("--min-tissue-fraction", type=float, default=TILING_DEFAULTS.min_tissue_fraction, help="keep centres whose base tile is at least this much tissue inside an ROI (default: %(default)s)")
    group.add_argument("--grid-seed", type=int, default=TILING_DEFAULTS.seed, help="seed of the random grid and of --max-tiles subsampling (default: %(default)s)")
    group.add_argument("--max-tiles", type=int, default=None, help="keep at most this many tiles per slide, sampled with --grid-seed (default: all)")


def tiling_params(args: argparse.Namespace) -> TilingParams:
    return TilingParams(
        grid=args.grid,
        tile_size_um=args.tile_size_um,
        spacing_um=args.spacing_um,
        scales=tuple(args.scales),
        min_tissue_fraction=args.min_tissue_fraction,
        seed=args.grid_seed,
        max_tiles=args.max_tiles,
    )


def add_feature_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--backbone", action="append", metavar="NAME", help="feature extractor; repeat or comma-separate for several (default: handcrafted). See 'samplerflow backbones'")
    group.add_argument("--weights", action="append", metavar="BACKBONE=SPEC", help="weights for a backbone: a checkpoint path or hf-hub:ORG/NAME")
    group.add_argument("--random-weights", action="store_true", help="TEST ONLY: use random weights for backbones without --weights (logged and recorded)")
    group.add_argument("--batch-size", type=int, default=32, help="tiles per model batch (default: %(default)s)")
    group.add_argument("--workers", type=int, default=2, help="data-loader worker processes reading tiles (default: %(default)s)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: %(default)s)")
    group.add_argument("--autocast", choices=("bfloat16", "float16", "none"), default="bfloat16", help="mixed precision of neural backbones on CUDA; ignored on CPU (default: %(default)s)")
    group.add_argument("--feature-dtype", choices=("float32", "float16"), default="float32", help="stored precision of per-tile features (default: %(default)s)")
    group.add_argument("--weights-cache", type=Path, help="folder staged by 'samplerflow weights fetch'; backbones without --weights load from it")


def add_sampler_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--percentiles", type=_percentiles, default=DEFAULT_PERCENTILES, help="percentiles of each feature over tiles (default: 5,15,...,95)")


def _qc_output(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if getattr(args, "qc_json", None):
        from samplerflow.qc import write_record

        write_record(Path(args.qc_json), record)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="samplerflow", description="Whole-slide images to SAMPLER representations.")
    parser.add_argument("--version", action="version", version=f"samplerflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run every stage for every sample of a samplesheet")
    run.add_argument("--input", required=True, type=Path, help="samplesheet CSV")
    run.add_argument("--outdir", required=True, type=Path, help="output folder")
    run.add_argument("--strict", action="store_true", help="stop at the first failed sample and exit non-zero")
    harmonize = run.add_argument_group("harmonization switches")
    harmonize.add_argument("--convert", action="store_true", help="convert every slide to a pyramidal OME-TIFF first; later stages read the copy")
    harmonize.add_argument("--convert-objects", action="store_true", help="also write one OME-TIFF per tissue object")
    harmonize.add_argument("--focus-qc", action="store_true", help="score focus and exclude out-of-focus slides (QC stage II)")
    add_target_mpp_option(harmonize)
    add_convert_options(run)
    add_aoi_options(run)
    add_focus_options(run)
    add_tiling_options(run)
    add_feature_options(run)
    add_stain_options(run)
    add_sampler_options(run)
    add_outlier_options(run)
    classify = run.add_argument_group("classification (runs after the cohort when --task is given)")
    classify.add_argument("--task", type=Path, default=None, help="task YAML; cross-validates a classifier on the samplesheet labels")
    classify.add_argument("--classify-model", choices=MODEL_KINDS, default="logistic", help="model of the classification step (default: %(default)s)")
    classify.add_argument("--classify-folds", type=int, default=5, help="patient-grouped folds per repeat (default: %(default)s)")
    classify.add_argument("--classify-repeats", type=int, default=100, help="repeats of k-fold with different seeds (default: %(default)s)")
    classify.add_argument("--classify-seed", type=int, default=0, help="seed of the first repeat (default: %(default)s)")
    classify.add_argument("--classify-jobs", type=int, default=1, help="folds fitted in parallel (default: %(default)s)")

    validate = sub.add_parser("validate", help="validate a samplesheet and write it with absolute paths")
    validate.add_argument("--input", required=True, type=Path, help="samplesheet CSV")
    validate.add_argument("--output", required=True, type=Path, help="validated samplesheet CSV to write")

    for name, help_text in (
        ("convert", "write a slide as a pyramidal OME-TIFF without label or macro images"),
        ("aoi", "detect tissue objects; write thumbnail, mask, overlay and roi.json"),
        ("convert-objects", "write one pyramidal OME-TIFF per tissue object of roi.json"),
        ("focus", "score focus over the tissue; write focus_heatmap.png and focus_map.npz"),
        ("tile", "place tile centres in the tissue objects; write tiles.parquet"),
        ("extract", "extract per-tile features at every scale; write {backbone}.h5"),
        ("sampler", "compute SAMPLER percentiles; write sampler.parquet"),
    ):
        stage = sub.add_parser(name, help=help_text)
        stage.add_argument("--sample", required=True, help="sample id")
        stage.add_argument("--qc-json", type=Path, help="write this stage's QC record here")
        stage.add_argument("--strict", action="store_true", help="exit non-zero when the sample fails")
        if name in ("convert", "aoi", "convert-objects", "focus", "extract"):
            stage.add_argument("--slide", required=True, type=Path, help="whole-slide image")
            stage.add_argument("--mpp", type=float, help="um/px of level 0, used only when the file has none")
        if name == "convert":
            stage.add_argument("--output", required=True, type=Path, help="OME-TIFF to write (.ome.tiff)")
            add_convert_options(stage)
        elif name == "convert-objects":
            stage.add_argument("--roi", required=True, type=Path, help="roi.json from the aoi stage")
            stage.add_argument("--outdir", required=True, type=Path, help="folder for {sample}_object{i}.ome.tiff files")
            add_convert_options(stage)
        elif name == "focus":
            stage.add_argument("--outdir", required=True, type=Path, help="folder for focus_heatmap.png and focus_map.npz")
            add_focus_options(stage)
        elif name == "aoi":
            stage.add_argument("--roi", type=Path, help="curated ROI JSON replacing detection")
            stage.add_argument("--outdir", required=True, type=Path, help="folder for the AOI outputs")
            add_target_mpp_option(stage)
            add_aoi_options(stage)
        elif name == "tile":
            stage.add_argument("--roi", required=True, type=Path, help="roi.json from the aoi stage")
            stage.add_argument("--mask", required=True, type=Path, help="tissue_mask.png from the aoi stage")
            stage.add_argument("--output", required=True, type=Path, help="tiles.parquet to write")
            add_tiling_options(stage)
        elif name == "extract":
            stage.add_argument("--tiles", required=True, type=Path, help="tiles.parquet from the tile stage")
            stage.add_argument("--outdir", required=True, type=Path, help="folder for {backbone}.h5 files")
            add_target_mpp_option(stage)
            add_feature_options(stage)
            add_stain_options(stage)
        else:
            stage.add_argument("--features", required=True, nargs="+", type=Path, help="{backbone}.h5 files of the sample")
            stage.add_argument("--output", required=True, type=Path, help="sampler.parquet to write")
            add_sampler_options(stage)

    cohort = sub.add_parser("cohort", help="merge QC records and SAMPLER tables into qc.csv and cohort.h5ad")
    cohort.add_argument("--samplesheet", required=True, type=Path, help="validated samplesheet CSV")
    cohort.add_argument("--sampler", nargs="*", default=[], type=Path, help="sampler.parquet files")
    cohort.add_argument("--qc", nargs="+", required=True, type=Path, help="QC record JSON files of all stages")
    cohort.add_argument("--output", required=True, type=Path, help="cohort.h5ad to write")
    cohort.add_argument("--qc-output", required=True, type=Path, help="qc.csv to write")
    cohort.add_argument("--params-json", type=Path, help="run parameters to record in the AnnData (JSON file)")
    cohort.add_argument("--allow-empty", action="store_true", help="when no sample succeeded, write qc.csv, skip cohort.h5ad and exit 0")
    add_outlier_options(cohort)

    synth = sub.add_parser("synth", help="write tiny synthetic H&E-like slides and a samplesheet")
    synth.add_argument("--outdir", required=True, type=Path, help="folder for slides and samplesheet.csv")
    synth.add_argument("--per-kind", type=int, default=2, help="slides per tissue kind (round, spindle) (default: %(default)s)")
    synth.add_argument("--mpp", type=float, default=0.5, help="um/px of the slides (default: %(default)s)")
    synth.add_argument("--width-um", type=float, default=1600.0, help="slide width in um (default: %(default)s)")
    synth.add_argument("--height-um", type=float, default=1200.0, help="slide height in um (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")

    sub.add_parser("backbones", help="list the feature extractors with input size, dimension and normalization")

    from samplerflow.classify.cli import add_subcommands as add_classify_subcommands
    from samplerflow.features.weights_cli import add_subcommands as add_weights_subcommands

    add_classify_subcommands(sub)
    add_weights_subcommands(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _run_stage(args: argparse.Namespace) -> int:
    from samplerflow import stages
    from samplerflow.qc import qc_record

    stage = args.command.replace("-", "_")
    try:
        if args.command == "convert":
            record = stages.convert(sample=args.sample, image=args.slide, output=args.output, params=convert_params(args), mpp=args.mpp)
        elif args.command == "convert-objects":
            record = stages.convert_objects(
                sample=args.sample, image=args.slide, roi=args.roi, outdir=args.outdir, params=convert_params(args), mpp=args.mpp,
            )
        elif args.command == "focus":
            record = stages.focus(sample=args.sample, image=args.slide, outdir=args.outdir, params=focus_params(args), mpp=args.mpp)
        elif args.command == "aoi":
            record = stages.aoi(
                sample=args.sample, image=args.slide, outdir=args.outdir, params=aoi_params(args), mpp=args.mpp, roi=args.roi,
                target_mpp=args.target_mpp,
            )
        elif args.command == "tile":
            record = stages.tile(sample=args.sample, roi=args.roi, mask=args.mask, output=args.output, params=tiling_params(args))
        elif args.command == "extract":
            record = stages.extract(
                sample=args.sample, image=args.slide, tiles=args.tiles, outdir=args.outdir,
                backbones=_backbones(args.backbone), weights=_resolved_weights(args, _backbones(args.backbone)),
                random_weights=args.random_weights, mpp=args.mpp, batch_size=args.batch_size,
                num_workers=args.workers, device=args.device, autocast=_autocast(args),
                feature_dtype=args.feature_dtype, target_mpp=args.target_mpp, stain=stain_params(args),
                progress=not args.no_progress,
            )
        else:
            record = stages.sampler(sample=args.sample, features=args.features, output=args.output, percentiles=args.percentiles)
    except SampleError as error:
        log.error("%s", error)
        _qc_output(args, qc_record(args.sample, stage, status=error.status, reason=str(error), **error.fields))
        # A failed sample is recorded and skipped; the cohort run goes on unless --strict.
        return 3 if args.strict else 0
    _qc_output(args, record)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``samplerflow`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "run":
            from samplerflow.runner import RunConfig, run

            config = RunConfig(
                input=args.input,
                outdir=args.outdir,
                convert=convert_params(args) if args.convert else None,
                convert_objects=convert_params(args) if args.convert_objects else None,
                target_mpp=args.target_mpp,
                focus=focus_params(args) if args.focus_qc else None,
                stain=stain_params(args),
                outlier_mads=outlier_mads(args),
                task=args.task,
                classify_model=args.classify_model,
                classify_folds=args.classify_folds,
                classify_repeats=args.classify_repeats,
                classify_seed=args.classify_seed,
                classify_jobs=args.classify_jobs,
                aoi=aoi_params(args),
                tiling=tiling_params(args),
                backbones=_backbones(args.backbone),
                weights=_resolved_weights(args, _backbones(args.backbone)),
                random_weights=args.random_weights,
                percentiles=tuple(args.percentiles),
                batch_size=args.batch_size,
                num_workers=args.workers,
                device=args.device,
                autocast=_autocast(args),
                feature_dtype=args.feature_dtype,
                strict=args.strict,
                progress=not args.no_progress,
            )
            return run(config)
        if args.command == "validate":
            from samplerflow.stages import validate

            samples = validate(args.input, args.output)
            log.info("%d samples valid; wrote %s", len(samples), args.output)
            return 0
        if args.command in PER_SAMPLE_STAGES:
            return _run_stage(args)
        if args.command == "cohort":
            from samplerflow.stages import cohort

            parameters = json.loads(args.params_json.read_text()) if args.params_json else None
            cohort(
                samplesheet=args.samplesheet, sampler_files=args.sampler, qc_files=args.qc,
                output=args.output, qc_output=args.qc_output, parameters=parameters, allow_empty=args.allow_empty,
                outlier_mads=outlier_mads(args),
            )
            return 0
        if args.command == "synth":
            from samplerflow.synthetic import write_cohort

            sheet = write_cohort(args.outdir, per_kind=args.per_kind, mpp=args.mpp, width_um=args.width_um, height_um=args.height_um, seed=args.seed)
            log.info("Wrote %s", sheet)
            return 0
        if args.command == "weights":
            from samplerflow.features.weights_cli import dispatch as dispatch_weights

            return dispatch_weights(args)
        if args.command in ("classify", "classify-grid", "predict"):
            from samplerflow.classify.cli import dispatch

            return dispatch(args)
        if args.command == "backbones":
            from samplerflow.features import available_backbones, create_backbone

            for name in available_backbones():
                print(json.dumps(create_backbone(name).describe()))
            return 0
    except (InputError, ValueError) as error:
        log.error("%s", error)
        return 2
    except SampleError as error:  # --strict runs
        log.error("%s", error)
        return 3
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
