// Per-sample chain (AOI, tiling, feature extraction, SAMPLER) and the cohort merge.
//
// Every per-sample process always emits its QC record. When a sample fails
// (unreadable slide, no tissue, no tiles...) the process writes only that
// record and exits 0, so its other outputs are empty and the sample stops
// flowing. COHORT receives the QC records of every stage that ran.

include { VALIDATE } from '../modules/local/validate/main'
include { AOI      } from '../modules/local/aoi/main'
include { TILE     } from '../modules/local/tile/main'
include { EXTRACT  } from '../modules/local/extract/main'
include { PREFETCH_WEIGHTS } from '../modules/local/prefetch_weights/main'
include { SAMPLER  } from '../modules/local/sampler/main'
include { COHORT   } from '../modules/local/cohort/main'

// Stages that later releases add. Each has a switch (default false), checked
// at the place in the chain where the stage will run. Switching one on today
// stops the run with an error while the workflow is being built, instead of
// silently skipping the stage.
def rejectUnavailableStage(String param, String stage) {
    if (params[param]) {
        error("--${param} is set, but the ${stage} stage is not available yet in samplerflow ${workflow.manifest.version}. Remove --${param} (or set it to false) and run again.")
    }
}

// One samplesheet row of the validated CSV (absolute paths) to [meta, image].
def sampleFromRow(Map row) {
    def meta = [
        id     : row.sample,
        patient: row.patient,
        center : row.center,
        label  : row.label ?: null,
        mpp    : row.mpp ? row.mpp as double : null,
        roi    : row.roi ?: null,
    ]
    return [meta, file(row.image, checkIfExists: true)]
}

// Checkpoint files and hf-hub specifications from params.weights_<backbone>
// for the requested backbones.
def weightsForBackbones(List backbones) {
    def checkpoints = [:]
    def hub = [:]
    backbones.each { backbone ->
        def name = "weights_${backbone}".toString()
        def spec = params.containsKey(name) ? params[name] : null
        if (!spec) {
            return
        }
        if (spec.toString().startsWith('hf-hub:')) {
            hub[backbone] = spec.toString()
        } else {
            checkpoints[backbone] = file(spec, checkIfExists: true)
        }
    }
    return [checkpoints: checkpoints, hub: hub]
}

workflow SAMPLERFLOW {
    take:
    samplesheet  // channel: [meta, samplesheet.csv]
    params_json  // channel: params.json recorded in cohort.h5ad

    main:
    def backbones = params.backbone.toString().tokenize(',')

    VALIDATE(samplesheet)

    ch_slides = VALIDATE.out.samplesheet
        .flatMap { meta, csv -> csv.splitCsv(header: true) }
        .map { row -> sampleFromRow(row) }

    rejectUnavailableStage('convert', 'slide conversion')
    rejectUnavailableStage('focus_qc', 'focus (blur) QC')

    AOI(ch_slides.map { meta, image -> [meta, image, meta.roi ? file(meta.roi, checkIfExists: true) : []] })

    TILE(AOI.out.tissue)

    rejectUnavailableStage('stain_norm', 'stain normalization')

    def weights = weightsForBackbones(backbones)
    def hub_specs = weights.hub.collect { backbone, spec -> "${backbone}=${spec}".toString() }
    def neural_backbones = backbones.findAll { backbone -> params.containsKey("weights_${backbone}".toString()) }
    if (params.weights_cache && neural_backbones && !params.random_weights) {
        // Stage every checkpoint once; extraction then loads them from the cache only.
        PREFETCH_WEIGHTS(channel.of([
            [id: 'weights'], neural_backbones,
            weights.checkpoints.keySet().toList(), weights.checkpoints.values().toList(), hub_specs,
        ]))
        ch_extract_input = ch_slides.join(TILE.out.tiles).combine(PREFETCH_WEIGHTS.out.manifest.map { meta, manifest -> manifest })
        EXTRACT(ch_extract_input.map { meta, image, tiles, manifest -> [meta, image, tiles] }, [], [], [])
    } else {
        EXTRACT(
            ch_slides.join(TILE.out.tiles),
            weights.checkpoints.keySet().toList(),
            weights.checkpoints.values().toList(),
            hub_specs,
        )
    }

    // Feature files in the order of params.backbone, as the local runner passes them.
    ch_features = EXTRACT.out.features.map { meta, files ->
        def sorted = (files instanceof List ? files : [files]).sort { path -> backbones.indexOf(path.baseName) }
        [meta, sorted]
    }
    SAMPLER(ch_features)

    ch_qc_records = AOI.out.qc
        .mix(TILE.out.qc, EXTRACT.out.qc, SAMPLER.out.qc)
        .map { meta, record -> record }
        .collect()
    ch_sampler_tables = SAMPLER.out.sampler
        .map { meta, table -> table }
        .collect()
        .ifEmpty([])

    ch_cohort_input = VALIDATE.out.samplesheet
        .map { meta, csv -> [[id: 'cohort'], csv] }
        .combine(ch_sampler_tables.map { tables -> [tables] })
        .combine(ch_qc_records.map { records -> [records] })
    COHORT(ch_cohort_input, params_json)
    // Only a COHORT task that ran and wrote no cohort.h5ad means no sample succeeded;
    // if an upstream task failed, Nextflow reports that failure instead.
    COHORT.out.qc_table
        .combine(COHORT.out.cohort.count())
        .map { meta, table, cohorts ->
            if (cohorts == 0) {
                error("No sample succeeded, so no cohort.h5ad was written: see ${params.outdir}/qc.csv for each sample's status and reason.")
            }
            table
        }

    rejectUnavailableStage('classify', 'classification')
    rejectUnavailableStage('report', 'HTML report')

    emit:
    cohort   = COHORT.out.cohort
    qc_table = COHORT.out.qc_table
}
