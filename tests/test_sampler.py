"""SAMPLER percentiles against NumPy's reference formula.

The reference is ``np.ravel(np.percentile(X, P, axis=0))`` on real per-tile
features (MoPaDi encoder, 777 tiles x 512 features of one TCGA slide).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from samplerflow.features.store import FeatureSet, read_features
from samplerflow.sampler import COLUMN_BLOCK, DEFAULT_PERCENTILES, percentiles, run_sampler, sampler_table

NAME = re.compile(r"^(?P<backbone>[^.]+)\.s(?P<scale>\d+)\.f(?P<index>\d+)\.q(?P<percentile>[0-9.]+)$")


@pytest.fixture(scope="module")
def mopadi_features(wsi_data: Path) -> np.ndarray:
    path = wsi_data / "features" / "mopadi" / "TCGA-AD-6964-01Z-00-DX1" / "features.h5"
    with h5py.File(path, "r") as handle:
        matrix = handle["feats"][()]
    assert matrix.shape == (777, 512)
    assert matrix.dtype == np.float32
    return matrix


def write_features_file(path: Path, *, backbone: str, matrices: dict[int, np.ndarray]) -> Path:
    """Write a ``{backbone}.h5`` in the layout ``samplerflow.features.extract`` documents."""
    scales = sorted(matrices)
    rows, dim = matrices[scales[0]].shape
    with h5py.File(path, "w") as handle:
        handle.create_dataset("tile_id", data=np.arange(rows, dtype=np.int64))
        for scale in scales:
            handle.create_dataset(f"s{scale}", data=matrices[scale].astype(np.float32))
        attrs = handle.attrs
        attrs["backbone"] = backbone
        attrs["dim"] = dim
        attrs["input_size"] = 224
        attrs["scales"] = np.asarray(scales, dtype=np.int64)
        attrs["tile_size_um"] = 128.0
        attrs["mpp"] = 0.5
        attrs["mpp_source"] = "samplesheet"
        attrs["read_level"] = 0
        attrs["read_downsample"] = 1.0
        attrs["feature_labels"] = json.dumps([f"f{index}" for index in range(dim)])
        attrs["provenance"] = json.dumps({"weights": "none"})
        attrs["samplerflow_version"] = "test"
    return path


def reference_vector(matrix: np.ndarray, percentile_list) -> np.ndarray:
    return np.ravel(np.percentile(matrix, percentile_list, axis=0))


def test_percentiles_equal_numpy_on_real_features(mopadi_features):
    expected = np.percentile(mopadi_features, DEFAULT_PERCENTILES, axis=0)
    result = percentiles(mopadi_features, DEFAULT_PERCENTILES)
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    assert np.array_equal(result, expected)


def test_percentiles_single_thread_equal_numpy(mopadi_features):
    expected = np.percentile(mopadi_features, DEFAULT_PERCENTILES, axis=0)
    assert np.array_equal(percentiles(mopadi_features, DEFAULT_PERCENTILES, threads=1), expected)


def test_run_sampler_file_equals_reference(mopadi_features, tmp_path):
    features = write_features_file(tmp_path / "mopadi.h5", backbone="mopadi", matrices={1: mopadi_features})
    destination = tmp_path / "sampler.parquet"
    run_sampler(sample="TCGA-AD-6964", feature_files=[features], destination=destination)

    table = pd.read_parquet(destination)
    expected = reference_vector(mopadi_features, DEFAULT_PERCENTILES)
    assert len(table) == expected.size
    percentile_position = {float(p): position for position, p in enumerate(DEFAULT_PERCENTILES)}
    mismatches = []
    for name, value in zip(table["feature"], table["value"]):
        match = NAME.match(name)
        assert match is not None, f"feature name {name!r} does not follow backbone.sK.fI.qP"
        assert match["backbone"] == "mopadi"
        assert int(match["scale"]) == 1
        position = percentile_position[float(match["percentile"])] * 512 + int(match["index"])
        if not value == expected[position]:
            mismatches.append(name)
    assert mismatches == []
    assert table["value"].dtype == np.float64
    assert set(table["sample"]) == {"TCGA-AD-6964"}


def test_run_sampler_file_order_is_ravel(mopadi_features, tmp_path):
    features = write_features_file(tmp_path / "mopadi.h5", backbone="mopadi", matrices={1: mopadi_features})
    table = run_sampler(sample="s", feature_files=[features], destination=tmp_path / "sampler.parquet")
    assert np.array_equal(table["value"].to_numpy(), reference_vector(mopadi_features, DEFAULT_PERCENTILES))


def test_sampler_table_concatenates_scales_and_backbones(mopadi_features):
    first = FeatureSet(
        backbone="a", scales=(1, 2), tile_ids=np.arange(777),
        matrices={1: mopadi_features[:, :10], 2: mopadi_features[:, 10:20]}, attrs={},
    )
    second = FeatureSet(backbone="b", scales=(1,), tile_ids=np.arange(777), matrices={1: mopadi_features[:, 20:25]}, attrs={})
    pers = (10.0, 90.0)
    table = sampler_table("s", [first, second], pers)

    expected = np.concatenate([
        reference_vector(mopadi_features[:, :10], pers),
        reference_vector(mopadi_features[:, 10:20], pers),
        reference_vector(mopadi_features[:, 20:25], pers),
    ])
    assert np.array_equal(table["value"].to_numpy(), expected)
    assert table["feature"].iloc[0] == "a.s1.f0.q10"
    assert table["feature"].iloc[20] == "a.s2.f0.q10"
    assert table["feature"].iloc[-1] == "b.s1.f4.q90"


def test_read_features_round_trip(mopadi_features, tmp_path):
    path = write_features_file(tmp_path / "x.h5", backbone="x", matrices={1: mopadi_features, 3: mopadi_features[::-1]})
    feature_set = read_features(path)
    assert feature_set.scales == (1, 3)
    assert np.array_equal(feature_set.matrices[3], mopadi_features[::-1])


@pytest.mark.parametrize(
    "case",
    ["one_row", "two_rows", "nan_column", "float64", "wide_matrix", "integers"],
)
def test_percentiles_edge_cases(case, mopadi_features):
    rng = np.random.default_rng(7)
    matrices = {
        "one_row": mopadi_features[:1],
        "two_rows": mopadi_features[:2],
        "float64": mopadi_features.astype(np.float64) * np.pi,
        "wide_matrix": rng.normal(size=(41, 3 * COLUMN_BLOCK + 5)).astype(np.float32),
        "integers": rng.integers(-50, 50, size=(13, 7)),
    }
    if case == "nan_column":
        matrix = mopadi_features[:50].copy()
        matrix[17, 3] = np.nan
        matrices[case] = matrix
    matrix = matrices[case]

    expected = np.percentile(matrix, DEFAULT_PERCENTILES, axis=0)
    result = percentiles(matrix, DEFAULT_PERCENTILES)
    assert result.dtype == expected.dtype
    assert np.array_equal(result, expected, equal_nan=True)


def test_percentiles_nan_column_only_that_column(mopadi_features):
    matrix = mopadi_features[:50].copy()
    matrix[17, 3] = np.nan
    result = percentiles(matrix, DEFAULT_PERCENTILES)
    assert np.isnan(result[:, 3]).all()
    assert np.isfinite(np.delete(result, 3, axis=1)).all()


@pytest.mark.parametrize(
    "percentile_list",
    [(0.0, 2.5, 100.0), (100.0, 0.0), (50.0,), (0.1, 33.3, 66.7, 99.9)],
    ids=["0-2.5-100", "descending", "median", "fractional"],
)
def test_percentiles_custom_lists(percentile_list, mopadi_features):
    expected = np.percentile(mopadi_features, percentile_list, axis=0)
    assert np.array_equal(percentiles(mopadi_features, percentile_list), expected)


def test_run_sampler_names_fractional_percentile(mopadi_features, tmp_path):
    features = write_features_file(tmp_path / "m.h5", backbone="m", matrices={1: mopadi_features[:, :4]})
    table = run_sampler(sample="s", feature_files=[features], destination=tmp_path / "s.parquet", percentile_list=(0, 2.5, 100))
    assert list(table["feature"][:5]) == ["m.s1.f0.q0", "m.s1.f1.q0", "m.s1.f2.q0", "m.s1.f3.q0", "m.s1.f0.q2.5"]
    assert np.array_equal(table["value"].to_numpy(), reference_vector(mopadi_features[:, :4], (0, 2.5, 100)))


@pytest.mark.parametrize("bad", [(-1.0,), (101.0,), (50.0, 150.0)])
def test_percentiles_reject_out_of_range(bad, mopadi_features):
    with pytest.raises(ValueError, match="0..100"):
        percentiles(mopadi_features, bad)


def test_percentiles_reject_empty_matrix():
    with pytest.raises(ValueError, match="non-empty"):
        percentiles(np.empty((0, 4), dtype=np.float32), DEFAULT_PERCENTILES)


def test_run_sampler_rejects_duplicate_backbone(mopadi_features, tmp_path):
    first = write_features_file(tmp_path / "a.h5", backbone="same", matrices={1: mopadi_features})
    second = write_features_file(tmp_path / "b.h5", backbone="same", matrices={1: mopadi_features})
    with pytest.raises(ValueError, match="same"):
        run_sampler(sample="s", feature_files=[first, second], destination=tmp_path / "s.parquet")
