// Focus QC (QC stage II): scores the sharpness of tissue tiles and writes
// focus/focus_heatmap.png and focus/focus_map.npz. A slide with too many
// blurred tiles gets status out_of_focus in qc/focus.json, and the workflow
// keeps it out of tiling unless params.keep_out_of_focus is set (then the
// record has status ok and the flag in focus_flag). The maps are written
// before the slide is judged, so an out-of-focus slide has them too. A slide
// scanned too coarsely to judge gets status ok, focus_flag not_assessed and
// no maps.
//
// `checkpoint` is the DeepFocus state dict for --focus_measure deepfocus,
// or an empty list for the other measures.
process FOCUS {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(image)
    path(checkpoint, stageAs: 'focus_checkpoint/*')

    output:
    tuple val(meta), path('focus/focus_heatmap.png'), path('focus/focus_map.npz'), emit: maps, optional: true
    tuple val(meta), path('qc/focus.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def mpp_option = meta.mpp != null ? "--mpp ${meta.mpp}" : ''
    def checkpoint_option = checkpoint ? "--focus-checkpoint ${checkpoint}" : ''
    def blur_threshold_option = params.blur_threshold != null ? "--blur-threshold ${params.blur_threshold}" : ''
    def keep_option = params.keep_out_of_focus ? '--keep-out-of-focus' : ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress focus \\
        --sample ${meta.id} \\
        --slide ${image} \\
        --outdir focus \\
        --qc-json qc/focus.json \\
        --focus-measure ${params.focus_measure} \\
        --max-blurred-fraction ${params.max_blurred_fraction} \\
        --focus-tile-size-um ${params.focus_tile_size_um} \\
        --focus-mpp ${params.focus_mpp} \\
        ${mpp_option} \\
        ${checkpoint_option} \\
        ${blur_threshold_option} \\
        ${keep_option} \\
        ${strict_option} \\
        ${args}
    """

    stub:
    """
    mkdir -p focus qc
    touch focus/focus_heatmap.png focus/focus_map.npz
    echo '{"sample": "${meta.id}", "stage": "focus", "status": "ok", "reason": ""}' > qc/focus.json
    """
}
