// Stages the checkpoints of the requested neural backbones once per run into
// params.weights_cache, a folder every task can read, so that extraction tasks
// then load verified local files without network access. Runs only when
// params.weights_cache is set. A copy of the cache's manifest.json is the
// output, which extraction tasks wait for.
process PREFETCH_WEIGHTS {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), val(backbones), val(checkpoint_backbones), path(checkpoints, arity: '0..*', stageAs: 'weights/?/*'), val(hub_weights)

    output:
    tuple val(meta), path('manifest.json'), emit: manifest
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def backbone_list = backbones.join(',')
    def checkpoint_options = [checkpoint_backbones, checkpoints.toList()].transpose().collect { backbone, file -> "--weights ${backbone}=${file}" }
    def weights_option = (checkpoint_options + hub_weights.collect { spec -> "--weights ${spec}" }).join(' ')
    """
    samplerflow --no-progress weights fetch \\
        --backbone ${backbone_list} \\
        --cache-dir ${params.weights_cache} \\
        ${weights_option} \\
        ${args}
    cp ${params.weights_cache}/manifest.json manifest.json
    """

    stub:
    """
    echo '{"backbones": {}}' > manifest.json
    """
}
