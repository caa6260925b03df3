// Merges the QC records of all samples into qc.csv and the SAMPLER tables of
// samples with QC status ok into cohort.h5ad. Files with the same name from
// different samples are staged into numbered folders (sampler/1/, qc/1/, ...).
// With no successful sample it still writes qc.csv (--allow-empty), so the QC
// table is published; the workflow then stops with an error.
// QC stage III: slides far from the cohort (params.outlier_mads) are flagged
// in qc.csv and cohort.h5ad but kept; params.no_outlier_check skips the check.
process COHORT {
    tag "${meta.id}"
    label 'process_medium'
    container "${params.container}"

    input:
    tuple val(meta), path(samplesheet), path(sampler_tables, arity: '0..*', stageAs: 'sampler/?/*'), path(qc_records, arity: '1..*', stageAs: 'qc/?/*')
    path(params_json)

    output:
    tuple val(meta), path('cohort.h5ad'), emit: cohort, optional: true
    tuple val(meta), path('qc.csv'), emit: qc_table
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def sampler_option = sampler_tables ? "--sampler ${sampler_tables}" : ''
    def no_outlier_check_option = params.no_outlier_check ? '--no-outlier-check' : ''
    """
    samplerflow --no-progress cohort \\
        --samplesheet ${samplesheet} \\
        --qc ${qc_records} \\
        --output cohort.h5ad \\
        --qc-output qc.csv \\
        --params-json ${params_json} \\
        --allow-empty \\
        --outlier-mads ${params.outlier_mads} \\
        ${no_outlier_check_option} \\
        ${sampler_option} \\
        ${args}
    """

    stub:
    """
    touch cohort.h5ad qc.csv
    """
}
