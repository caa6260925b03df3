// Detects tissue objects on a slide thumbnail (or reads a curated ROI JSON).
// With params.target_mpp the slide is read resampled to that resolution, the
// same value EXTRACT gets, so objects and tiles share one pixel grid.
// A failed sample writes only qc/aoi.json, so the other outputs are optional.
process AOI {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(image), path(roi)

    output:
    tuple val(meta), path('aoi/roi.json'), path('aoi/tissue_mask.png'), emit: tissue, optional: true
    tuple val(meta), path('aoi/thumbnail.png'), path('aoi/overlay.png'), emit: images, optional: true
    tuple val(meta), path('qc/aoi.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def mpp_option = meta.mpp != null ? "--mpp ${meta.mpp}" : ''
    def roi_option = roi ? "--roi ${roi}" : ''
    def target_mpp_option = params.target_mpp != null ? "--target-mpp ${params.target_mpp}" : ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress aoi \\
        --sample ${meta.id} \\
        --slide ${image} \\
        --outdir aoi \\
        --qc-json qc/aoi.json \\
        --thumbnail-mpp ${params.thumbnail_mpp} \\
        --brightness-max ${params.brightness_max} \\
        --saturation-min ${params.saturation_min} \\
        --dbscan-eps-um ${params.dbscan_eps_um} \\
        --dbscan-min-samples ${params.dbscan_min_samples} \\
        --min-object-area-um2 ${params.min_object_area_um2} \\
        --roi-padding-um ${params.roi_padding_um} \\
        ${mpp_option} \\
        ${roi_option} \\
        ${target_mpp_option} \\
        ${strict_option} \\
        ${args}
    """

    stub:
    """
    mkdir -p aoi qc
    touch aoi/roi.json aoi/tissue_mask.png aoi/thumbnail.png aoi/overlay.png
    echo '{"sample": "${meta.id}", "stage": "aoi", "status": "ok", "reason": ""}' > qc/aoi.json
    """
}
