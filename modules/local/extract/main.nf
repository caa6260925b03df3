// Extracts per-tile features for every requested backbone and scale in one task,
// so the slide is read once. Writes features/{backbone}.h5 per backbone.
//
// Weights: `checkpoint_backbones` names the backbone of each file in
// `checkpoints` (same order); `hub_weights` holds BACKBONE=hf-hub:ORG/NAME
// specifications. A Hugging Face token reaches the task only as the HF_TOKEN
// environment variable, through the Nextflow secret set in conf/modules.config.
//
// Tiles are read resampled to params.target_mpp when it is set (the value AOI
// got) and stain-normalized with params.stain_norm. `stain_reference` is the
// reference tile for normalization, or an empty list for the shipped one.
process EXTRACT {
    tag "${meta.id}"
    label 'process_gpu'
    container "${params.container}"

    input:
    tuple val(meta), path(image), path(tiles)
    val(checkpoint_backbones)
    path(checkpoints, arity: '0..*', stageAs: 'weights/?/*')
    val(hub_weights)
    path(stain_reference, stageAs: 'stain_reference/*')

    output:
    tuple val(meta), path('features/*.h5'), emit: features, optional: true
    tuple val(meta), path('qc/extract.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def mpp_option = meta.mpp != null ? "--mpp ${meta.mpp}" : ''
    def checkpoint_options = [checkpoint_backbones, checkpoints.toList()].transpose().collect { backbone, file -> "--weights ${backbone}=${file}" }
    def weights_option = (checkpoint_options + hub_weights.collect { spec -> "--weights ${spec}" }).join(' ')
    def random_weights_option = params.random_weights ? '--random-weights' : ''
    def weights_cache_option = params.weights_cache && !params.random_weights ? "--weights-cache ${params.weights_cache}" : ''
    def target_mpp_option = params.target_mpp != null ? "--target-mpp ${params.target_mpp}" : ''
    def stain_reference_option = stain_reference ? "--stain-reference ${stain_reference}" : ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress extract \\
        --sample ${meta.id} \\
        --slide ${image} \\
        --tiles ${tiles} \\
        --outdir features \\
        --qc-json qc/extract.json \\
        --backbone ${params.backbone} \\
        --batch-size ${params.batch_size} \\
        --workers ${params.workers} \\
        --device ${params.device} \\
        --autocast ${params.autocast} \\
        --feature-dtype ${params.feature_dtype} \\
        --stain-norm ${params.stain_norm} \\
        ${weights_cache_option} \\
        ${mpp_option} \\
        ${target_mpp_option} \\
        ${stain_reference_option} \\
        ${weights_option} \\
        ${random_weights_option} \\
        ${strict_option} \\
        ${args}
    """

    stub:
    def backbones = params.backbone.toString().tokenize(',')
    """
    mkdir -p features qc
    touch ${backbones.collect { name -> "features/${name}.h5" }.join(' ')}
    echo '{"sample": "${meta.id}", "stage": "extract", "status": "ok", "reason": ""}' > qc/extract.json
    """
}
