// Per-sample chain and the cohort merge, in the local runner's order:
// CONVERT (--convert), AOI, CONVERT_OBJECTS (--convert_objects) and FOCUS
// (--focus_qc), TILE, EXTRACT, SAMPLER, then COHORT.
//
// Every per-sample process always emits its QC record. When a sample fails
// (unreadable slide, no tissue, out of focus, no tiles...) the process writes
// only that record and exits 0, so its other outputs are empty and the sample
// stops flowing. COHORT receives the QC records of every stage that ran.

include { VALIDATE } from '../modules/local/validate/main'
include { CONVERT  } from '../modules/local/convert/main'
include { AOI      } from '../modules/local/aoi/main'
include { CONVERT_OBJECTS } from '../modules/local/convert_objects/main'
include { FOCUS    } from '../modules/local/focus/main'
include { TILE     } from '../modules/local/tile/main'
include { EXTRACT  } from '../modules/local/extract/main'
include { PREFETCH_WEIGHTS } from '../modules/local/prefetch_weights/main'
include { SAMPLER  } from '../modules/local/sampler/main'
include { COHORT   } from '../modules/local/cohort/main'
include { CLASSIFY } from '../modules/local/classify/main'

// Stages that later releases add (classification, report). Each has a switch
// (default false), checked at the place in the chain where the stage will run.
// Switching one on today stops the run with an error while the workflow is
// being built, instead of silently skipping the stage.
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

// Status of a QC record JSON (ok or the failure status).
def qcStatus(record) {
    return new groovy.json.JsonSlurper().parseText(record.text).status
}

// Items ([meta, ...]) of the samples whose QC record ([meta, record]) has status ok.
// FOCUS emits its maps for out-of-focus slides too, so only the record can
// tell which samples go on.
def keepPassed(items, qc_records) {
    def passed = qc_records
        .filter { meta, record -> qcStatus(record) == 'ok' }
        .map { meta, record -> [meta, true] }
    return items.join(passed).map { item -> item[0..-2] }
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

    // Conversion: every later stage reads the converted slide instead of the original.
    ch_stage_qc = channel.empty()
    if (params.convert) {
        CONVERT(ch_slides)
        ch_images = CONVERT.out.slide
        ch_stage_qc = ch_stage_qc.mix(CONVERT.out.qc)
    } else {
        ch_images = ch_slides
    }

    AOI(ch_images.map { meta, image -> [meta, image, meta.roi ? file(meta.roi, checkIfExists: true) : []] })
    ch_stage_qc = ch_stage_qc.mix(AOI.out.qc)

    // Object conversion and focus QC both follow AOI and run side by side, and a
    // sample goes on to TILE only when both passed. The local runner runs them
    // one after the other and skips focus QC after a failed object conversion,
    // so only here such a sample has focus maps. Its qc.csv row is the same,
    // because qc.csv reports the first failed stage.
    ch_tissue = AOI.out.tissue
    ch_aoi_images = ch_images.join(AOI.out.tissue).map { meta, image, roi, mask -> [meta, image, roi] }
    if (params.convert_objects) {
        CONVERT_OBJECTS(ch_aoi_images)
        ch_tissue = keepPassed(ch_tissue, CONVERT_OBJECTS.out.qc)
        ch_stage_qc = ch_stage_qc.mix(CONVERT_OBJECTS.out.qc)
    }
    if (params.focus_qc) {
        // QC stage II: out-of-focus slides stop here unless --keep_out_of_focus.
        def focus_checkpoint = params.focus_checkpoint ? file(params.focus_checkpoint, checkIfExists: true) : []
        FOCUS(ch_aoi_images.map { meta, image, roi -> [meta, image] }, focus_checkpoint)
        ch_tissue = keepPassed(ch_tissue, FOCUS.out.qc)
        ch_stage_qc = ch_stage_qc.mix(FOCUS.out.qc)
    }

    TILE(ch_tissue)

    def stain_reference = params.stain_reference ? file(params.stain_reference, checkIfExists: true) : []
    def weights = weightsForBackbones(backbones)
    def hub_specs = weights.hub.collect { backbone, spec -> "${backbone}=${spec}".toString() }
    def neural_backbones = backbones.findAll { backbone -> params.containsKey("weights_${backbone}".toString()) }
    if (params.weights_cache && neural_backbones && !params.random_weights) {
        // Stage every checkpoint once; extraction then loads them from the cache only.
        PREFETCH_WEIGHTS(channel.of([
            [id: 'weights'], neural_backbones,
            weights.checkpoints.keySet().toList(), weights.checkpoints.values().toList(), hub_specs,
        ]))
        ch_extract_input = ch_images.join(TILE.out.tiles).combine(PREFETCH_WEIGHTS.out.manifest.map { meta, manifest -> manifest })
        EXTRACT(ch_extract_input.map { meta, image, tiles, manifest -> [meta, image, tiles] }, [], [], [], stain_reference)
    } else {
        EXTRACT(
            ch_images.join(TILE.out.tiles),
            weights.checkpoints.keySet().toList(),
            weights.checkpoints.values().toList(),
            hub_specs,
            stain_reference,
        )
    }

    // Feature files in the order of params.backbone, as the local runner passes them.
    ch_features = EXTRACT.out.features.map { meta, files ->
        def sorted = (files instanceof List ? files : [files]).sort { path -> backbones.indexOf(path.baseName) }
        [meta, sorted]
    }
    SAMPLER(ch_features)

    ch_qc_records = ch_stage_qc
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

    if (params.task) {
        // Cross-validation on the cohort, on CPUs; the external cohort, if any, is staged as a file.
        CLASSIFY(
            COHORT.out.cohort.map { meta, cohort -> [meta, cohort, file(params.task, checkIfExists: true)] },
            params.classify_external ? file(params.classify_external, checkIfExists: true) : [],
        )
    }

    rejectUnavailableStage('report', 'HTML report')

    emit:
    cohort   = COHORT.out.cohort
    qc_table = COHORT.out.qc_table
}
