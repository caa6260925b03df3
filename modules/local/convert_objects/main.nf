// Writes one pyramidal OME-TIFF per tissue object of roi.json, cropped to the
// object's bounding box, as convert/objects/{sample}_object{i}.ome.tiff.
// A failed sample writes only qc/convert_objects.json.
process CONVERT_OBJECTS {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(image), path(roi)

    output:
    tuple val(meta), path('convert/objects/*.ome.tiff'), emit: objects, optional: true
    tuple val(meta), path('qc/convert_objects.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def mpp_option = meta.mpp != null ? "--mpp ${meta.mpp}" : ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress convert-objects \\
        --sample ${meta.id} \\
        --slide ${image} \\
        --roi ${roi} \\
        --outdir convert/objects \\
        --qc-json qc/convert_objects.json \\
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
    mkdir -p convert/objects qc
    touch convert/objects/${meta.id}_object0.ome.tiff
    echo '{"sample": "${meta.id}", "stage": "convert_objects", "status": "ok", "reason": ""}' > qc/convert_objects.json
    """
}
