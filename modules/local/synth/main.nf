// Writes tiny synthetic H&E-like slides and their samplesheet (test profile only).
process SYNTH {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    val(meta)

    output:
    tuple val(meta), path('synthetic/samplesheet.csv'), emit: samplesheet
    tuple val(meta), path('synthetic/*.tiff'), emit: slides
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    samplerflow --no-progress synth \\
        --outdir synthetic \\
        --per-kind ${params.synth_per_kind} \\
        --mpp ${params.synth_mpp} \\
        --width-um ${params.synth_width_um} \\
        --height-um ${params.synth_height_um} \\
        --seed ${params.synth_seed} \\
        ${args}
    """

    stub:
    """
    mkdir -p synthetic
    touch synthetic/synth_stub_1.tiff synthetic/synth_stub_2.tiff
    printf 'sample,patient,image,center,label\\n' > synthetic/samplesheet.csv
    printf 'synth_stub_1,patient_1,synth_stub_1.tiff,center_1,round\\n' >> synthetic/samplesheet.csv
    printf 'synth_stub_2,patient_2,synth_stub_2.tiff,center_2,spindle\\n' >> synthetic/samplesheet.csv
    """
}
