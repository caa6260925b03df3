"""Tissue object detection (AOI) on synthetic slides with known objects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samplerflow.aoi import AoiParams, detect_objects
from samplerflow.errors import SampleError
from samplerflow.slide import open_slide
from samplerflow.synthetic import SyntheticSpec, write_pyramid_tiff, write_slide

AOI_FILES = ("thumbnail.png", "tissue_mask.png", "overlay.png", "roi.json")


def test_detect_objects_finds_two(synthetic_slides, tmp_path):
    with open_slide(synthetic_slides[0.5]) as reader:
        payload = detect_objects(reader, tmp_path, params=AoiParams())
    assert payload["source"] == "detected"
    assert len(payload["objects"]) == 2


def test_detect_objects_writes_files(synthetic_slides, tmp_path):
    with open_slide(synthetic_slides[0.5]) as reader:
        detect_objects(reader, tmp_path, params=AoiParams())
    for name in AOI_FILES:
        assert (tmp_path / name).is_file(), name


def test_detected_objects_left_and_right(synthetic_slides, tmp_path):
    """The synthetic objects sit side by side: one box per half of the slide, normalized to 0..1."""
    with open_slide(synthetic_slides[0.5]) as reader:
        objects = detect_objects(reader, tmp_path, params=AoiParams())["objects"]
    centres_x = sorted(item["location"][0] + item["size"][0] / 2 for item in objects)
    assert centres_x[0] < 0.5 < centres_x[1]
    for item in objects:
        for value in item["location"] + item["size"]:
            assert 0.0 <= value <= 1.0
        assert item["location"][0] + item["size"][0] <= 1.0 + 1e-6
        assert item["location"][1] + item["size"][1] <= 1.0 + 1e-6


@pytest.mark.parametrize("objects", [1, 3])
def test_detect_objects_counts_match_spec(objects, tmp_path):
    spec = SyntheticSpec(width_um=1500.0, height_um=500.0, mpp=1.0, objects=objects, seed=11)
    slide = write_slide(spec, tmp_path / "slide.tiff")
    with open_slide(slide) as reader:
        payload = detect_objects(reader, tmp_path / "aoi", params=AoiParams())
    assert len(payload["objects"]) == objects


def test_curated_roi_replaces_detection(synthetic_slides, tmp_path):
    curated = [{"location": [0.1, 0.2], "size": [0.3, 0.4]}]
    roi_path = tmp_path / "curated.json"
    roi_path.write_text(json.dumps(curated))
    with open_slide(synthetic_slides[0.5]) as reader:
        payload = detect_objects(reader, tmp_path / "aoi", params=AoiParams(), roi_path=roi_path)
    assert payload["source"] == "manual"
    assert len(payload["objects"]) == 1
    assert payload["objects"][0]["location"] == [0.1, 0.2]
    assert payload["objects"][0]["size"] == [0.3, 0.4]
    written = json.loads((tmp_path / "aoi" / "roi.json").read_text())
    assert written["objects"] == payload["objects"]


def test_curated_roi_counts_tissue_inside(synthetic_slides, tmp_path):
    roi_path = tmp_path / "curated.json"
    roi_path.write_text(json.dumps({"objects": [{"location": [0.0, 0.0], "size": [1.0, 1.0]}]}))
    with open_slide(synthetic_slides[0.5]) as reader:
        payload = detect_objects(reader, tmp_path / "aoi", params=AoiParams(), roi_path=roi_path)
    assert payload["objects"][0]["pixel_count"] > 0


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '[{"location": [0.9, 0.1], "size": [0.5, 0.5]}]', '[{"size": [0.5, 0.5]}]'],
    ids=["not_json", "empty_list", "outside_slide", "no_location"],
)
def test_invalid_curated_roi_rejected(content, synthetic_slides, tmp_path):
    roi_path = tmp_path / "curated.json"
    roi_path.write_text(content)
    with open_slide(synthetic_slides[0.5]) as reader, pytest.raises(SampleError) as caught:
        detect_objects(reader, tmp_path / "aoi", params=AoiParams(), roi_path=roi_path)
    assert caught.value.status == "invalid_roi"
    assert str(roi_path) in str(caught.value)


def test_white_slide_has_no_tissue(tmp_path):
    white = np.full((300, 400, 3), 245, dtype=np.uint8)
    slide = tmp_path / "white.tiff"
    write_pyramid_tiff(white, slide, mpp=1.0)
    with open_slide(slide) as reader, pytest.raises(SampleError) as caught:
        detect_objects(reader, tmp_path / "aoi", params=AoiParams())
    assert caught.value.status == "no_tissue"
    assert str(slide) in str(caught.value)
    assert (tmp_path / "aoi" / "thumbnail.png").is_file()
    assert (tmp_path / "aoi" / "overlay.png").is_file()
