// Writes the slide as a pyramidal OME-TIFF without label or macro images.
// Every later stage reads this copy instead of the original. A failed sample
// writes only qc/convert.json, so the converted slide is an optional output.
process CONVERT {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(image)

    output:
    tuple val(meta), path("convert/${meta.id}.ome.tiff"), emit: slide, optional: true
    tuple val(meta), path('qc/convert.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def mpp_option = meta.mpp != null ? "--mpp ${meta.mpp}" : ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress convert \\
        --sample ${meta.id} \\
        --slide ${image} \\
        --output convert/${meta.id}.ome.tiff \\
        --qc-json qc/convert.json \\
        --compression ${params.compression} \\
        --jpeg-quality ${params.jpeg_quality} \\
        --convert-tile-px ${params.convert_tile_px} \\
        --min-level-px ${params.min_level_px} \\
        ${mpp_option} \\
        ${strict_option} \\
        ${args}
    """

    stub:
    """
    mkdir -p convert qc
    touch convert/${meta.id}.ome.tiff
    echo '{"sample": "${meta.id}", "stage": "convert", "status": "ok", "reason": ""}' > qc/convert.json
    """
}
