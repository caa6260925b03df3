// Computes the SAMPLER table (percentiles of each feature over tiles, per scale).
process SAMPLER {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(features)

    output:
    tuple val(meta), path('sampler/sampler.parquet'), emit: sampler, optional: true
    tuple val(meta), path('qc/sampler.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress sampler \\
        --sample ${meta.id} \\
        --features ${features} \\
        --output sampler/sampler.parquet \\
        --qc-json qc/sampler.json \\
        --percentiles ${params.percentiles} \\
        ${strict_option} \\
        ${args}
    """

    stub:
    """
    mkdir -p sampler qc
    touch sampler/sampler.parquet
    echo '{"sample": "${meta.id}", "stage": "sampler", "status": "ok", "reason": ""}' > qc/sampler.json
    """
}
