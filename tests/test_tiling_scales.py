"""Tile geometry in micrometres and the one-read multiscale crops.

Synthetic slides of one seed at 0.25 and 0.5 um/px show the same tissue, so
their tile centres in micrometres must agree and every scale-k tile must
cover k x the base tile size whatever the resolution or pyramid level.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from samplerflow.aoi import AoiParams, detect_objects, read_mask
from samplerflow.features.extract import ReadPlan, plan_reads, read_multiscale, read_single_scale
from samplerflow.slide import open_slide
from samplerflow.tiling import TilingParams, make_grid, read_tiles, write_tiles

TILING = TilingParams(tile_size_um=128.0, scales=(1, 2, 3, 4))
# Input sizes of the built-in backbones (handcrafted 224, inception_v3 299).
INPUT_SIZES = (224, 299)


@pytest.fixture(scope="module")
def grids(synthetic_slides, tmp_path_factory):
    """{mpp: TileGrid} from the real aoi and tile steps on each synthetic slide."""
    result = {}
    for mpp, slide in synthetic_slides.items():
        outdir = tmp_path_factory.mktemp(f"aoi_{mpp}")
        with open_slide(slide) as reader:
            payload = detect_objects(reader, outdir, params=AoiParams())
        grid = make_grid(payload, read_mask(outdir / "tissue_mask.png"), TILING)
        write_tiles(grid, outdir / "tiles.parquet")
        result[mpp] = read_tiles(outdir / "tiles.parquet")
    return result


def test_grid_has_tiles(grids):
    for grid in grids.values():
        assert len(grid.table) > 0


def test_centres_um_equal_across_resolutions(grids):
    coarse = grids[0.5].table[["center_x_um", "center_y_um"]].to_numpy()
    fine = grids[0.25].table[["center_x_um", "center_y_um"]].to_numpy()
    assert coarse.shape == fine.shape
    assert np.array_equal(coarse, fine)


def test_centres_px_follow_mpp(grids):
    for mpp, grid in grids.items():
        centres_um = grid.table[["center_x_um", "center_y_um"]].to_numpy()
        assert np.allclose(grid.centres_px * mpp, centres_um, rtol=0, atol=1e-9)


def test_tiles_table_round_trip_params(grids):
    for grid in grids.values():
        assert grid.params.scales == TILING.scales
        assert grid.params.tile_size_um == TILING.tile_size_um
        assert grid.params.spacing == TILING.spacing


@pytest.mark.parametrize("input_size", INPUT_SIZES)
@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_read_box_covers_scale_um(mpp, input_size, grids, synthetic_slides):
    grid = grids[mpp]
    with open_slide(synthetic_slides[mpp]) as reader:
        plan = plan_reads(reader, grid, input_size=input_size)
        level_pixel_um = plan.level_downsample * mpp
        for centre in grid.centres_px[:5]:
            for scale in TILING.scales:
                side = plan.box((float(centre[0]), float(centre[1])), scale)[2]
                covered_um = side * level_pixel_um
                assert abs(covered_um - scale * TILING.tile_size_um) <= level_pixel_um, (scale, covered_um)


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_read_multiscale_tile_sizes(mpp, grids, synthetic_slides):
    grid = grids[mpp]
    with open_slide(synthetic_slides[mpp]) as reader:
        plan = plan_reads(reader, grid, input_size=224)
        level_pixel_um = plan.level_downsample * mpp
        centre = grid.centres_px[0]
        crops = read_multiscale(reader, plan, (float(centre[0]), float(centre[1])))
    assert sorted(crops) == list(TILING.scales)
    for scale, crop in crops.items():
        assert crop.shape[0] == crop.shape[1]
        assert crop.shape[2] == 3
        assert crop.dtype == np.uint8
        assert abs(crop.shape[0] * level_pixel_um - scale * TILING.tile_size_um) <= level_pixel_um


def test_plan_uses_coarser_level_on_fine_slide(grids, synthetic_slides):
    """At 0.25 um/px a 128 um tile is 512 px, so a 224 px input reads level 1 (2x)."""
    with open_slide(synthetic_slides[0.25]) as reader:
        plan = plan_reads(reader, grids[0.25], input_size=224)
    assert plan.level == 1
    assert plan.level_downsample == pytest.approx(2.0)


def test_box_nests_inside_largest_scale():
    plan = ReadPlan(level=0, level_downsample=1.0, base_side=37, scales=(1, 2, 3, 4))
    for centre in [(100.0, 100.0), (100.5, 99.5), (10.25, 3.75), (0.0, 0.0)]:
        big_left, big_top, big_side = plan.box(centre, 4)
        for scale in plan.scales:
            left, top, side = plan.box(centre, scale)
            assert big_left <= left
            assert big_top <= top
            assert left + side <= big_left + big_side
            assert top + side <= big_top + big_side


def _centres_for(reader, grid) -> list[tuple[float, float]]:
    """Grid centres plus fractional, corner and outside-edge centres."""
    width, height = reader.info.width, reader.info.height
    centres = [(float(x), float(y)) for x, y in grid.centres_px[:3]] if grid is not None else []
    centres += [
        (width / 2 + 0.5, height / 2 - 0.25),
        (width / 3 + 0.75, height / 4 + 0.5),
        (1.0, 1.0),
        (width - 2.0, height - 3.5),
        (width + 10.0, -5.0),
    ]
    return centres


def _assert_multiscale_matches_single(reader, plan, centres) -> None:
    for centre in centres:
        crops = read_multiscale(reader, plan, centre)
        for scale in plan.scales:
            single = read_single_scale(reader, plan, centre, scale)
            assert crops[scale].shape == single.shape, (plan.level, centre, scale)
            assert np.array_equal(crops[scale], single), (plan.level, centre, scale)


def test_multiscale_equals_single_every_level(grids, synthetic_slides):
    with open_slide(synthetic_slides[0.25]) as reader:
        assert len(reader.info.level_dimensions) >= 3
        centres = _centres_for(reader, grids[0.25])
        for level, base_side in itertools.product(range(len(reader.info.level_dimensions)), (37, 64)):
            plan = ReadPlan(
                level=level, level_downsample=reader.info.level_downsamples[level], base_side=base_side, scales=(1, 2, 3, 4)
            )
            _assert_multiscale_matches_single(reader, plan, centres)


def test_multiscale_equals_single_planned_read(grids, synthetic_slides):
    with open_slide(synthetic_slides[0.25]) as reader:
        plan = plan_reads(reader, grids[0.25], input_size=224)
        _assert_multiscale_matches_single(reader, plan, _centres_for(reader, grids[0.25]))


def test_multiscale_equals_single_real_svs(wsi_data: Path):
    slide = wsi_data / "slides" / "aperio" / "CMU-1-Small-Region.svs"
    with open_slide(slide) as reader:
        assert reader.info.backend == "openslide"
        # 128 um at 0.499 um/px is 257 px; an odd side tests the centring arithmetic.
        plan = ReadPlan(level=0, level_downsample=1.0, base_side=257, scales=(1, 2, 3))
        _assert_multiscale_matches_single(reader, plan, _centres_for(reader, None))
