// Places tile centres inside the tissue objects found by AOI.
process TILE {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container}"

    input:
    tuple val(meta), path(roi), path(mask)

    output:
    tuple val(meta), path('tiles/tiles.parquet'), emit: tiles, optional: true
    tuple val(meta), path('qc/tile.json'), emit: qc
    tuple val("${task.process}"), val('samplerflow'), eval("samplerflow --version | sed 's/^samplerflow //'"), topic: versions

    script:
    def args = task.ext.args ?: ''
    def spacing_option = params.spacing_um != null ? "--spacing-um ${params.spacing_um}" : ''
    def max_tiles_option = params.max_tiles != null ? "--max-tiles ${params.max_tiles}" : ''
    def strict_option = params.strict ? '--strict' : ''
    """
    samplerflow --no-progress tile \\
        --sample ${meta.id} \\
        --roi ${roi} \\
        --mask ${mask} \\
        --output tiles/tiles.parquet \\
        --qc-json qc/tile.json \\
        --grid ${params.grid} \\
        --tile-size-um ${params.tile_size_um} \\
        --scales ${params.scales} \\
        --min-tissue-fraction ${params.min_tissue_fraction} \\
        --grid-seed ${params.grid_seed} \\
        ${spacing_option} \\
        ${max_tiles_option} \\
        ${strict_option} \\
        ${args}
    """

    stub:
    """
    mkdir -p tiles qc
    touch tiles/tiles.parquet
    echo '{"sample": "${meta.id}", "stage": "tile", "status": "ok", "reason": ""}' > qc/tile.json
    """
}
