"""Local runner: every stage for every sample on one machine, with resume.

Output layout (see docs/output.md)::

    OUTDIR/
      samplesheet.valid.csv
      samples/{sample}/convert/{sample}.ome.tiff            (with --convert)
      samples/{sample}/convert/objects/{sample}_object{i}.ome.tiff  (with --convert-objects)
      samples/{sample}/aoi/{thumbnail.png, tissue_mask.png, overlay.png, roi.json}
      samples/{sample}/focus/{focus_heatmap.png, focus_map.npz}   (with --focus-qc)
      samples/{sample}/tiles/tiles.parquet
      samples/{sample}/features/{backbone}.h5
      samples/{sample}/sampler/sampler.parquet
      samples/{sample}/qc/{stage}.json
      qc.csv
      cohort.h5ad
      classify/{metrics.json, *.csv, *.png, model/}   (with --task)
      pipeline_info/{params.json, versions.json, timings.tsv}

Resume: each step stores a stamp (``.stamps/`` in the sample folder) with a
key hashed from the package version, the step's parameters and its inputs.
Upstream outputs enter the key by content hash, and slides by path, size and
modification time. A step whose key and outputs are unchanged is skipped, so an
identical second run does no work and a changed parameter redoes only the
steps it reaches. Per-sample failures are stamped too and are not retried
until an input or parameter changes.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from samplerflow import __version__, stages
from samplerflow.aoi import AoiParams
from samplerflow.convert import ConvertParams
from samplerflow.errors import InputError, SampleError
from samplerflow.features import create_backbone
from samplerflow.features.extract import resolve_device
from samplerflow.features.torch_backbone import TorchBackbone
from samplerflow.focus_params import FocusParams
from samplerflow.io import sha256_file, sha256_json, write_json, write_text
from samplerflow.provenance import package_versions
from samplerflow.qc import log_failures, merge_records, qc_record, write_qc_table, write_record
from samplerflow.sampler import DEFAULT_PERCENTILES
from samplerflow.samplesheet import Sample
from samplerflow.stages import DEFAULT_OUTLIER_MADS
from samplerflow.stain import StainParams
from samplerflow.tiling import TilingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``samplerflow run`` needs.

    Harmonization is off unless requested: ``convert`` (None: read the
    slides as they are), ``convert_objects`` (None: no per-object files,
    else their encoding), ``target_mpp`` (None: each
    slide's own resolution), ``focus`` (None: no focus QC) and ``stain``.
    ``outlier_mads`` None switches QC stage III off. With ``task`` (a task
    YAML) the cohort is classified and cross-validated after it is built.
    """

    input: Path
    outdir: Path
    convert: ConvertParams | None = None
    convert_objects: ConvertParams | None = None
    target_mpp: float | None = None
    focus: FocusParams | None = None
    stain: StainParams = field(default_factory=StainParams)
    outlier_mads: float | None = DEFAULT_OUTLIER_MADS
    aoi: AoiParams = field(default_factory=AoiParams)
    tiling: TilingParams = field(default_factory=TilingParams)
    backbones: tuple[str, ...] = ("handcrafted",)
    weights: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    batch_size: int = 32
    num_workers: int = 2
    device: str = "auto"
    autocast: str | None = "bfloat16"
    feature_dtype: str = "float32"
    task: Path | None = None
    classify_model: str = "logistic"
    classify_folds: int = 5
    classify_repeats: int = 100
    classify_seed: int = 0
    classify_jobs: int = 1
    strict: bool = False
    progress: bool = True

    def parameters(self) -> dict[str, Any]:
        """Return the run's parameters as JSON-friendly values (weights paths, never tokens)."""
        payload = asdict(self)
        payload["input"] = str(self.input)
        payload["outdir"] = str(self.outdir)
        payload["task"] = None if self.task is None else str(self.task)
        return payload


def _file_fingerprint(path: Path) -> dict[str, Any]:
    """Identify a slide cheaply: path, size and modification time (slides can be gigabytes)."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _weights_fingerprint(spec: str | None) -> Any:
    if spec is None:
        return None
    path = Path(spec).expanduser()
    return _file_fingerprint(path) if path.is_file() else spec


class StepCache:
    """Stamps that let a step be skipped when its key and outputs are unchanged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, step: str) -> Path:
        return self.folder / f"{step}.json"

    def lookup(self, step: str, key: str) -> dict[str, Any] | None:
        """Return the stored QC record when the stamp matches ``key`` and outputs are intact."""
        import json

        path = self._path(step)
        if not path.is_file():
            return None
        stamp = json.loads(path.read_text())
        if stamp.get("key") != key:
            return None
        for output, size in stamp.get("outputs", {}).items():
            candidate = Path(output)
            if not candidate.is_file() or candidate.stat().st_size != size:
                return None
        return stamp["record"]

    def store(self, step: str, key: str, record: dict[str, Any], outputs: Sequence[Path]) -> None:
        """Record the key, the QC record and output sizes of a finished step."""
        sizes = {str(path): path.stat().st_size for path in outputs if path.is_file()}
        write_json(self._path(step), {"key": key, "record": record, "outputs": sizes})


@dataclass
class Timing:
    sample: str
    step: str
    seconds: float
    skipped: bool
    status: str


class Runner:
    """Run all stages for all samples of a samplesheet."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        # Absolute, so resume stamps stay valid when a later run starts from another folder.
        self.outdir = config.outdir.resolve()
        self.timings: list[Timing] = []
        self.device = resolve_device(config.device)
        self._check_weights()
        self._check_harmonization()
        self._check_task()

    def _check_task(self) -> None:
        """Fail before any slide is read when the task file or the classification options cannot be used."""
        config = self.config
        if config.task is None:
            return
        from samplerflow.classify.run import check_options
        from samplerflow.classify.task import load_task

        load_task(config.task)
        check_options(
            model=config.classify_model, split="kfold", external=None, folds=config.classify_folds,
            repeats=config.classify_repeats, engine="kernel", jobs=config.classify_jobs, bootstrap=1000,
        )

    def _check_harmonization(self) -> None:
        """Fail before any slide is read when the stain reference or the focus checkpoint cannot be used."""
        from samplerflow.focus import make_scorer
        from samplerflow.units import is_plausible_mpp

        config = self.config
        if config.target_mpp is not None and not is_plausible_mpp(config.target_mpp):
            raise InputError(f"Invalid --target-mpp {config.target_mpp}: expected a scanner resolution such as 0.25 or 0.5 um/px")
        config.stain.fitted()
        if config.focus is not None:
            make_scorer(config.focus)

    def _check_weights(self) -> None:
        """Fail before any slide is read when a backbone has no usable weights."""
        config = self.config
        unknown = sorted(set(config.weights) - set(config.backbones))
        if unknown:
            raise InputError(f"--weights given for backbones not requested: {', '.join(unknown)}")
        for name in config.backbones:
            backbone = create_backbone(name)
            spec = config.weights.get(name)
            if isinstance(backbone, TorchBackbone) and spec is None and not config.random_weights:
                raise backbone.missing_weights_error()
            if spec is not None and not spec.startswith("hf-hub:") and not Path(spec).expanduser().is_file():
                raise InputError(f"Weights for backbone '{name}' not found: {spec}. Pass an existing checkpoint file.")

    def sample_dir(self, sample: Sample) -> Path:
        return self.outdir / "samples" / sample.sample

    def _step(
        self,
        sample: Sample,
        step: str,
        key_inputs: dict[str, Any],
        outputs: Sequence[Path],
        action: Callable[[], dict[str, Any]],
        qc_stage: str,
    ) -> dict[str, Any]:
        """Run one step unless its stamp is current; convert failures into QC records."""
        cache = StepCache(self.sample_dir(sample) / ".stamps")
        key = sha256_json({"step": step, "version": __version__, **key_inputs})
        started = time.perf_counter()
        cached = cache.lookup(step, key)
        if cached is not None:
            self.timings.append(Timing(sample.sample, step, time.perf_counter() - started, True, cached["status"]))
            log.debug("%s: %s up to date, skipped", sample.sample, step)
            return cached
        try:
            record = action()
        except SampleError as error:
            if self.config.strict:
                raise
            record = qc_record(sample.sample, qc_stage, status=error.status, reason=str(error), **error.fields)
        except InputError:
            raise  # a run-level problem (options, weights): every sample would fail the same way
        except Exception as error:  # one bad slide must not stop the cohort
            if self.config.strict:
                raise
            log.error("%s: %s failed unexpectedly:\n%s", sample.sample, step, traceback.format_exc())
            record = qc_record(
                sample.sample, qc_stage, status="error",
                reason=f"{sample.image}: {step} failed: {type(error).__name__}: {error}",
            )
        cache.store(step, key, record, outputs if record["status"] == "ok" else [])
        self.timings.append(Timing(sample.sample, step, time.perf_counter() - started, False, record["status"]))
        return record

    def run_sample(self, sample: Sample) -> list[dict[str, Any]]:
        """Run aoi, tile, extract and sampler for one sample; return its QC records."""
        config = self.config
        base = self.sample_dir(sample)
        aoi_dir, tiles_path = base / "aoi", base / "tiles" / "tiles.parquet"
        features_dir, sampler_path = base / "features", base / "sampler" / "sampler.parquet"
        records: list[dict[str, Any]] = []

        def finish(record: dict[str, Any], stage: str) -> bool:
            if image != sample.image and record["reason"]:
                # Name the samplesheet's file first, because users know it and not the derived copy.
                record = {**record, "reason": record["reason"].replace(str(image), f"{sample.image} (converted copy {image})")}
            write_record(base / "qc" / f"{stage}.json", record)
            records.append(record)
            return record["status"] == "ok"

        for stale in (base / "qc").glob("*.json") if (base / "qc").is_dir() else []:
            stale.unlink()

        image = sample.image
        if config.convert is not None:
            converted = base / "convert" / f"{sample.sample}.ome.tiff"
            record = self._step(
                sample, "convert",
                {"image": _file_fingerprint(sample.image), "mpp": sample.mpp, "params": asdict(config.convert)},
                [converted],
                lambda: stages.convert(sample=sample.sample, image=sample.image, output=converted, params=config.convert, mpp=sample.mpp),
                "convert",
            )
            if not finish(record, "convert"):
                return records
            image = converted  # every later stage reads the converted slide

        aoi_outputs = [aoi_dir / name for name in ("thumbnail.png", "tissue_mask.png", "overlay.png", "roi.json")]
        record = self._step(
            sample, "aoi",
            {
                "image": _file_fingerprint(image),
                "roi": sha256_file(sample.roi) if sample.roi else None,
                "mpp": sample.mpp,
                "target_mpp": config.target_mpp,
                "params": asdict(config.aoi),
            },
            aoi_outputs,
            lambda: stages.aoi(
                sample=sample.sample, image=image, outdir=aoi_dir, params=config.aoi, mpp=sample.mpp, roi=sample.roi,
                target_mpp=config.target_mpp,
            ),
            "aoi",
        )
        if not finish(record, "aoi"):
            return records

        if config.convert_objects is not None:
            import json

            objects_dir = base / "convert" / "objects"
            count = len(json.loads((aoi_dir / "roi.json").read_text())["objects"])
            params = config.convert_objects
            record = self._step(
                sample, "convert_objects",
                {"image": _file_fingerprint(image), "roi": sha256_file(aoi_dir / "roi.json"), "mpp": sample.mpp, "params": asdict(params)},
                [objects_dir / f"{sample.sample}_object{index}.ome.tiff" for index in range(count)],
                lambda: stages.convert_objects(
                    sample=sample.sample, image=image, roi=aoi_dir / "roi.json", outdir=objects_dir, params=params, mpp=sample.mpp,
                ),
                "convert_objects",
            )
            if not finish(record, "convert_objects"):
                return records

        if config.focus is not None:
            focus_dir = base / "focus"
            focus_params = config.focus
            record = self._step(
                sample, "focus",
                {
                    "image": _file_fingerprint(image),
                    "mpp": sample.mpp,
                    "params": asdict(focus_params),
                    "checkpoint": _weights_fingerprint(focus_params.checkpoint),
                },
                [focus_dir / "focus_heatmap.png", focus_dir / "focus_map.npz"],
                lambda: stages.focus(sample=sample.sample, image=image, outdir=focus_dir, params=focus_params, mpp=sample.mpp),
                "focus",
            )
            if not finish(record, "focus"):
                return records

        record = self._step(
            sample, "tile",
            {"roi": sha256_file(aoi_dir / "roi.json"), "mask": sha256_file(aoi_dir / "tissue_mask.png"), "params": asdict(config.tiling)},
            [tiles_path],
            lambda: stages.tile(sample=sample.sample, roi=aoi_dir / "roi.json", mask=aoi_dir / "tissue_mask.png", output=tiles_path, params=config.tiling),
            "tile",
        )
        if not finish(record, "tile"):
            return records

        record = self._extract(sample, image, tiles_path, features_dir)
        if not finish(record, "extract"):
            return records

        feature_files = [features_dir / f"{name}.h5" for name in config.backbones]
        record = self._step(
            sample, "sampler",
            {"features": [sha256_file(path) for path in feature_files], "percentiles": list(config.percentiles)},
            [sampler_path],
            lambda: stages.sampler(sample=sample.sample, features=feature_files, output=sampler_path, percentiles=config.percentiles),
            "sampler",
        )
        finish(record, "sampler")
        return records

    def _extract(self, sample: Sample, image: Path, tiles_path: Path, features_dir: Path) -> dict[str, Any]:
        """Extract features, one stamp per backbone, so adding a backbone leaves the others alone."""
        config = self.config
        tiles_hash = sha256_file(tiles_path)
        merged = qc_record(sample.sample, "extract", backbones=",".join(config.backbones))
        stain = config.stain.provenance()
        stale = []
        keys = {}
        for name in config.backbones:
            keys[name] = {
                "image": _file_fingerprint(image),
                "mpp": sample.mpp,
                "target_mpp": config.target_mpp,
                "stain": stain,
                "tiles": tiles_hash,
                "backbone": name,
                "weights": _weights_fingerprint(config.weights.get(name)),
                # --random-weights changes only backbones that need weights and were given none.
                "random_weights": (
                    config.random_weights and create_backbone(name).needs_weights and name not in config.weights
                ),
                "device": self.device,
                "feature_dtype": config.feature_dtype,
                # Mixed precision changes features only on CUDA.
                "autocast": config.autocast if self.device.startswith("cuda") else None,
            }
            cached = StepCache(self.sample_dir(sample) / ".stamps").lookup(
                f"extract.{name}", sha256_json({"step": f"extract.{name}", "version": __version__, **keys[name]})
            )
            if cached is None:
                stale.append(name)
            elif cached["status"] != "ok":
                # A failure stays recorded until an input or setting of this backbone changes.
                self.timings.append(Timing(sample.sample, f"extract.{name}", 0.0, True, cached["status"]))
                return cached
            else:
                merged.update({k: v for k, v in cached.items() if k.startswith(("weights_", "stain_"))})
                self.timings.append(Timing(sample.sample, f"extract.{name}", 0.0, True, cached["status"]))
        if not stale:
            return merged

        def action() -> dict[str, Any]:
            return stages.extract(
                sample=sample.sample, image=image, tiles=tiles_path, outdir=features_dir,
                backbones=stale, weights={k: v for k, v in config.weights.items() if k in stale},
                random_weights=config.random_weights, mpp=sample.mpp, batch_size=config.batch_size,
                num_workers=config.num_workers, device=self.device, autocast=config.autocast,
                feature_dtype=config.feature_dtype, target_mpp=config.target_mpp, stain=config.stain,
                progress=config.progress,
            )

        # Run once for all stale backbones (one read of the slide), then stamp each.
        first = stale[0]
        result = self._step(sample, f"extract.{first}", keys[first], [features_dir / f"{first}.h5"], action, "extract")
        if result["status"] != "ok":
            return result
        for name in stale[1:]:
            # Extracted in the same pass as the first stale backbone, whose timing row covers both.
            self.timings.append(Timing(sample.sample, f"extract.{name}", 0.0, False, result["status"]))
            StepCache(self.sample_dir(sample) / ".stamps").store(
                f"extract.{name}",
                sha256_json({"step": f"extract.{name}", "version": __version__, **keys[name]}),
                result,
                [features_dir / f"{name}.h5"],
            )
        merged.update({k: v for k, v in result.items() if k.startswith(("weights_", "stain_"))})
        return merged

    def run(self) -> int:
        """Run the whole cohort; return the process exit status."""
        config = self.config
        self.outdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        samples = stages.validate(config.input, self.outdir / "samplesheet.valid.csv")
        if config.task is not None and not any(sample.label for sample in samples):
            raise InputError(
                f"--task {config.task} needs labels, but no row of {config.input} has a 'label'; "
                "add the column or run without --task"
            )
        write_json(self.outdir / "pipeline_info" / "params.json", config.parameters())
        write_json(self.outdir / "pipeline_info" / "versions.json", package_versions())

        records: list[dict[str, Any]] = []
        progress = tqdm(samples, desc="samples", unit="slide", disable=not config.progress)
        for sample in progress:
            progress.set_postfix_str(sample.sample)
            records += self.run_sample(sample)
        progress.close()

        qc_table = merge_records(samples, records)
        log_failures(qc_table)
        ok = qc_table[qc_table["status"] == "ok"]["sample"].tolist()
        log.info("%d of %d samples succeeded", len(ok), len(samples))
        if ok:
            self._cohort(samples, ok)  # writes qc.csv with the cohort's outlier flags
            if config.task is not None:
                self._classify()
        else:
            write_qc_table(qc_table, self.outdir / "qc.csv")
        self._write_timings(time.perf_counter() - started)
        if not ok:
            log.error("No sample succeeded; see %s", self.outdir / "qc.csv")
            return 1
        if config.strict and len(ok) < len(samples):
            return 1
        return 0

    def _cohort(self, samples: Sequence[Sample], ok: Sequence[str]) -> None:
        sheet = self.outdir / "samplesheet.valid.csv"
        sampler_files = [self.outdir / "samples" / name / "sampler" / "sampler.parquet" for name in ok]
        qc_files = sorted((self.outdir / "samples").glob("*/qc/*.json"))
        qc_files = [path for path in qc_files if path.parent.parent.name in {s.sample for s in samples}]
        output = self.outdir / "cohort.h5ad"
        key = sha256_json(
            {
                "version": __version__,
                "sheet": sha256_file(sheet),
                "sampler": [sha256_file(path) for path in sampler_files],
                "qc": [sha256_file(path) for path in qc_files],
                "outlier_mads": self.config.outlier_mads,
            }
        )
        stamp = StepCache(self.outdir / ".stamps")
        started = time.perf_counter()
        if stamp.lookup("cohort", key) is not None:
            self.timings.append(Timing("*", "cohort", time.perf_counter() - started, True, "ok"))
            return
        stages.cohort(
            samplesheet=sheet, sampler_files=sampler_files, qc_files=qc_files, output=output,
            qc_output=self.outdir / "qc.csv", parameters=self.config.parameters(), log_skipped=False,
            outlier_mads=self.config.outlier_mads,
        )
        stamp.store("cohort", key, {"status": "ok"}, [output, self.outdir / "qc.csv"])
        self.timings.append(Timing("*", "cohort", time.perf_counter() - started, False, "ok"))

    def _classify(self) -> None:
        """Cross-validate the task on cohort.h5ad into OUTDIR/classify, unless its stamp is current."""
        from samplerflow.classify.run import classify_cohort

        config = self.config
        assert config.task is not None
        cohort_path, outdir = self.outdir / "cohort.h5ad", self.outdir / "classify"
        options = {
            "model": config.classify_model, "folds": config.classify_folds, "repeats": config.classify_repeats,
            "seed": config.classify_seed, "jobs": config.classify_jobs,
        }
        key = sha256_json(
            {"version": __version__, "cohort": sha256_file(cohort_path), "task": sha256_file(config.task), **options}
        )
        stamp = StepCache(self.outdir / ".stamps")
        started = time.perf_counter()
        if stamp.lookup("classify", key) is not None:
            self.timings.append(Timing("*", "classify", time.perf_counter() - started, True, "ok"))
            return
        summary = classify_cohort(cohort=cohort_path, task=config.task, outdir=outdir, **options)
        stamp.store("classify", key, {"status": "ok"}, [outdir / "metrics.json"])
        self.timings.append(Timing("*", "classify", time.perf_counter() - started, False, "ok"))
        log.info("Classification report in %s (%s)", outdir, _headline(summary))

    def _write_timings(self, total: float) -> None:
        lines = ["sample\tstep\tseconds\tskipped\tstatus"]
        lines += [f"{t.sample}\t{t.step}\t{t.seconds:.3f}\t{str(t.skipped).lower()}\t{t.status}" for t in self.timings]
        lines.append(f"*\ttotal\t{total:.3f}\tfalse\t-")
        write_text(self.outdir / "pipeline_info" / "timings.tsv", "\n".join(lines) + "\n")


def _headline(summary: dict[str, Any]) -> str:
    """Return the summary's main AUROC for the log, when it has one."""
    for key in ("auroc_mean", "auroc", "auroc_macro_mean"):
        if isinstance(summary.get(key), (int, float)):
            return f"{key} {summary[key]:.3f}"
    return "see metrics.json"


def run(config: RunConfig) -> int:
    """Run the local pipeline; see :class:`Runner`."""
    return Runner(config).run()
