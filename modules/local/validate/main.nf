// Validates the samplesheet against assets/schema_input.json and writes it with absolute paths.
process VALIDATE {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(samplesheet)

    output:
    tuple val(meta), path('samplesheet.valid.csv'), emit: samplesheet
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    samplerflow --no-progress validate \\
        --input ${samplesheet} \\
        --output samplesheet.valid.csv \\
        ${args}
    """

    // The stub runs the real validator: it only reads the CSV and checks that
    // the files exist, and the workflow needs the absolute paths it writes.
    stub:
    """
    samplerflow --no-progress validate \\
        --input ${samplesheet} \\
        --output samplesheet.valid.csv
    """
}
