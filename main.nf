#!/usr/bin/env nextflow
/*
 * samplerflow: H&E whole-slide images to SAMPLER slide representations.
 *
 * Input: a samplesheet (--input, columns defined in assets/schema_input.json)
 * or, with --synthetic (the test profile), tiny synthetic slides written by
 * `samplerflow synth`. Output layout: the same as the local runner
 * (`samplerflow run`), plus pipeline_info/ with Nextflow's trace, timeline,
 * report, DAG and software_versions.yml. See docs/usage.md.
 */

// Topic channels (the versions topic) are a preview feature in Nextflow 24.10
// and stable from 25.04. NOTE: the pipeline has been run with 24.10.8 only;
// if a 25.x release rejects this flag, delete the line.
nextflow.preview.topic = true

include { SYNTH       } from './modules/local/synth/main'
include { SAMPLERFLOW } from './workflows/samplerflow'

// One line per process: "PROCESS:\n  tool: version", in YAML.
def versionsYaml(List entries) {
    def byProcess = [:].withDefault { [:] }
    entries.each { entry ->
        def process = entry[0].toString().tokenize(':').last()
        byProcess[process][entry[1].toString()] = entry[2].toString()
    }
    def lines = []
    byProcess.sort().each { process, tools ->
        lines << "${process}:"
        tools.sort().each { tool, version -> lines << "  ${tool}: ${version}" }
    }
    lines << 'Workflow:'
    lines << "  samplerflow-pipeline: ${workflow.manifest.version}"
    lines << "  Nextflow: ${nextflow.version}"
    return lines.join('\n') + '\n'
}

workflow {
    if (params.synthetic && params.input) {
        error("Both --input and --synthetic are set: give a samplesheet with --input, or use --synthetic (the test profile) without --input.")
    }
    if (!params.synthetic && !params.input) {
        error("Missing --input: give the samplesheet CSV (columns: sample, patient, image, center, and optional label, mpp, roi; see docs/usage.md).")
    }

    if (params.synthetic) {
        SYNTH([id: 'synthetic'])
        ch_samplesheet = SYNTH.out.samplesheet
    } else {
        ch_samplesheet = channel.of([[id: 'samplesheet'], file(params.input, checkIfExists: true)])
    }

    // Run parameters recorded in cohort.h5ad (uns["samplerflow"]["parameters"])
    // and in pipeline_info/params.json. Secrets are never params, so none appear here.
    ch_params_json = channel.of(groovy.json.JsonOutput.prettyPrint(groovy.json.JsonOutput.toJson(params)))
        .collectFile(name: 'params.json', storeDir: "${params.outdir}/pipeline_info")

    SAMPLERFLOW(ch_samplesheet, ch_params_json)

    channel.topic('versions')
        .unique()
        .toList()
        .map { entries -> versionsYaml(entries) }
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info")
}
