// Cross-validates a classifier on cohort.h5ad for the task file params.task and
// fits the model bundle: classify/{metrics.json, *.csv, *.png, model/}. It runs
// on CPUs only. With params.classify_split 'external', params.classify_external
// names the cohort.h5ad to test on; it is staged into the folder external/.
process CLASSIFY {
    tag "${meta.id}"
    label 'process_medium'
    container "${params.container}"

    input:
    tuple val(meta), path(cohort), path(task_file)
    path(external, arity: '0..*', stageAs: 'external/*')

    output:
    tuple val(meta), path('classify'), emit: report
    tuple val(meta), path('classify/metrics.json'), emit: metrics
    tuple val(meta), path('classify/model'), emit: model, optional: true
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def class_weight_option = params.classify_class_weight ? "--class-weight ${params.classify_class_weight}" : ''
    def tol_option = params.classify_tol != null ? "--tol ${params.classify_tol}" : ''
    def threshold_option = params.classify_threshold != null ? "--threshold ${params.classify_threshold}" : ''
    def external_option = external ? "--external ${external}" : ''
    def no_bundle_option = params.classify_no_bundle ? '--no-bundle' : ''
    """
    samplerflow --no-progress classify \\
        --input ${cohort} \\
        --task ${task_file} \\
        --outdir classify \\
        --model ${params.classify_model} \\
        --C ${params.classify_C} \\
        --max-iter ${params.classify_max_iter} \\
        --split ${params.classify_split} \\
        --folds ${params.classify_folds} \\
        --repeats ${params.classify_repeats} \\
        --seed ${params.classify_seed} \\
        --engine ${params.classify_engine} \\
        --jobs ${params.classify_jobs} \\
        --bootstrap ${params.classify_bootstrap} \\
        ${class_weight_option} \\
        ${tol_option} \\
        ${threshold_option} \\
        ${external_option} \\
        ${no_bundle_option} \\
        ${args}
    """

    stub:
    """
    mkdir -p classify/model
    echo '{}' > classify/metrics.json
    touch classify/model/model_card.json
    """
}
