"""Slide reader on every real test file, and OpenSlide against tifffile on one synthetic TIFF.

Expected backends, sizes and mpp come from the provenance table of the test
data (checked there with openslide-python 1.4.7 and openslide-bin 4.0.1).
"""

from __future__ import annotations


import numpy as np
import pytest

from samplerflow.errors import SampleError
from samplerflow.slide import TiffFileReader, open_slide
from samplerflow.units import SlidePixels

# relpath: (vendor, level-0 width, height, level count, mpp)
READABLE = {
    "slides/aperio/CMU-1-Small-Region.svs": ("aperio", 2220, 2967, 1, 0.499),
    "slides/aperio/small.svs": ("aperio", 16, 16, 1, 0.499),
    "slides/hamamatsu/test3-DAPI-2-387.ndpi": ("hamamatsu", 3968, 4864, 7, 0.22818),
    "slides/dicom/wsi2dcm_jpeg/jpeg.dicom": ("dicom", 957, 715, 1, 16.783),
    "slides/dicom/openslide_python_pair/boxes_0.dcm": ("dicom", 16, 16, 1, 0.499),
}

# relpath: QC status. OpenSlide refuses each of these and tifffile cannot stand in.
REJECTED = {
    "slides/dicom/highdicom_sm_image_grayscale.dcm": "unreadable",  # 16-bit DICOM
    "slides/olympus/vsi-ets-test-jpg2k.vsi": "unsupported_format",
    "slides/olympus_missing_ets/Image_Mouse13_PB_H7.vsi": "unsupported_format",
    "edge_cases/unopenable.tiff": "unreadable",  # unknown TIFF compression
    "edge_cases/broken.svs": "unsupported_format",  # ASCII text, not TIFF
    "edge_cases/hamamatsu_vms_skeleton/CMU-1-40x - 2010-01-12 13.24.05.vms": "unreadable",  # placeholder JPEGs
}

PLAIN_TIFF = "slides/plain_tiff/kidney-48-5.tif"


@pytest.mark.parametrize("relpath", sorted(READABLE))
def test_open_slide_real_file_geometry(relpath, wsi_data):
    vendor, width, height, levels, mpp = READABLE[relpath]
    with open_slide(wsi_data / relpath) as reader:
        info = reader.info
        assert info.backend == "openslide"
        assert info.vendor == vendor
        assert (info.width, info.height) == (width, height)
        assert len(info.level_dimensions) == levels
        assert info.mpp == pytest.approx(mpp, rel=1e-4)
        assert info.mpp_source == "metadata:openslide.mpp-x"


@pytest.mark.parametrize("relpath", sorted(READABLE))
def test_read_region_output_shape(relpath, wsi_data):
    with open_slide(wsi_data / relpath) as reader:
        info = reader.info
        region = reader.read_region(
            x=SlidePixels(info.width / 4), y=SlidePixels(info.height / 4),
            width=SlidePixels(max(1.0, info.width / 2)), height=SlidePixels(max(1.0, info.height / 2)),
            out_width=37, out_height=23,
        )
    assert region.shape == (23, 37, 3)
    assert region.dtype == np.uint8


@pytest.mark.parametrize("relpath", sorted(READABLE))
def test_thumbnail_not_finer_than_level0(relpath, wsi_data):
    with open_slide(wsi_data / relpath) as reader:
        info = reader.info
        image, actual_mpp = reader.thumbnail(mpp=info.mpp / 10)
    assert actual_mpp >= info.mpp * (1 - 1e-9)
    assert image.shape[1] <= info.width
    assert image.shape[0] <= info.height


def test_thumbnail_reports_its_mpp(wsi_data):
    with open_slide(wsi_data / "slides/aperio/CMU-1-Small-Region.svs") as reader:
        image, actual_mpp = reader.thumbnail(mpp=8.0)
        width_um = reader.info.width * reader.info.mpp
    assert image.shape[1] * actual_mpp == pytest.approx(width_um)
    assert actual_mpp == pytest.approx(8.0, rel=0.01)


def test_read_region_ndpi_uses_coarse_level(wsi_data):
    """A 16x reduction on the 7-level NDPI is read from a pyramid level, not level 0."""
    with open_slide(wsi_data / "slides/hamamatsu/test3-DAPI-2-387.ndpi") as reader:
        assert reader.best_level(16.0) > 0
        region = reader.read_region(
            x=SlidePixels(0), y=SlidePixels(0), width=SlidePixels(3968), height=SlidePixels(4864),
            out_width=248, out_height=304,
        )
    assert region.shape == (304, 248, 3)


@pytest.mark.parametrize("relpath", sorted(REJECTED))
def test_open_slide_rejects_unreadable(relpath, wsi_data):
    path = wsi_data / relpath
    with pytest.raises(SampleError) as caught:
        open_slide(path)
    assert caught.value.status == REJECTED[relpath]
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("relpath", sorted(REJECTED))
def test_open_slide_rejects_despite_sheet_mpp(relpath, wsi_data):
    """A samplesheet mpp does not make an unreadable file readable."""
    with pytest.raises(SampleError) as caught:
        open_slide(wsi_data / relpath, mpp=0.5)
    assert caught.value.status == REJECTED[relpath]


def test_plain_tiff_without_mpp_fails(wsi_data):
    path = wsi_data / PLAIN_TIFF
    with pytest.raises(SampleError) as caught:
        open_slide(path)
    assert caught.value.status == "no_mpp"
    assert str(path) in str(caught.value)
    assert "mpp" in str(caught.value)


def test_plain_tiff_with_sheet_mpp_opens(wsi_data):
    with open_slide(wsi_data / PLAIN_TIFF, mpp=0.5) as reader:
        info = reader.info
        region = reader.read_level(0, 0, 0, 40, 30)
    assert info.backend == "tifffile"
    assert info.mpp == 0.5
    assert info.mpp_source == "samplesheet"
    assert (info.width, info.height) == (1493, 901)
    assert region.shape == (30, 40, 3)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(SampleError) as caught:
        open_slide(tmp_path / "absent.svs")
    assert caught.value.status == "unreadable"


def test_empty_file_is_unreadable(tmp_path):
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SampleError) as caught:
        open_slide(empty)
    assert caught.value.status == "unreadable"
    assert str(empty) in str(caught.value)


def test_synthetic_tiff_opens_in_openslide(synthetic_slides):
    with open_slide(synthetic_slides[0.25]) as reader:
        assert reader.info.backend == "openslide"
        assert reader.info.mpp == pytest.approx(0.25)
        assert len(reader.info.level_dimensions) == 4


def test_synthetic_tiff_backends_agree_on_geometry(synthetic_slides):
    path = synthetic_slides[0.25]
    tiff = TiffFileReader(path)
    try:
        with open_slide(path) as reader:
            assert tiff.info.level_dimensions == reader.info.level_dimensions
            assert tiff.info.level_downsamples == pytest.approx(reader.info.level_downsamples)
            assert tiff.metadata_mpp == pytest.approx(reader.info.mpp, rel=1e-6)
            assert tiff.metadata_mpp_source == "metadata:tiff-resolution"
    finally:
        tiff.close()


def test_synthetic_tiff_backends_agree_on_pixels(synthetic_slides):
    """JPEG decoders differ by a few grey levels; the regions must otherwise match."""
    path = synthetic_slides[0.25]
    tiff = TiffFileReader(path)
    try:
        with open_slide(path) as reader:
            for level, (width, height) in enumerate(reader.info.level_dimensions):
                boxes = [(width // 3, height // 3, 97, 61), (0, 0, 64, 64), (width - 50, height - 40, 80, 70)]
                for x, y, box_width, box_height in boxes:
                    expected = reader.read_level(level, x, y, box_width, box_height).astype(np.int16)
                    actual = tiff.read_level(level, x, y, box_width, box_height).astype(np.int16)
                    assert actual.shape == expected.shape
                    difference = np.abs(actual - expected)
                    assert difference.max() <= 8, (level, x, y)
                    assert difference.mean() <= 1.0, (level, x, y)
    finally:
        tiff.close()


def test_read_region_at_mpp_size(wsi_data):
    with open_slide(wsi_data / "slides/aperio/CMU-1-Small-Region.svs") as reader:
        pixels = reader.read_region_at_mpp(
            x=SlidePixels(100), y=SlidePixels(100), width=SlidePixels(1000), height=SlidePixels(500), mpp=1.0
        )
    # 1000 x 500 px at 0.499 um/px cover 499 x 249.5 um, so 499 x 250 px at 1 um/px.
    assert pixels.shape == (250, 499, 3)
    assert pixels.dtype == np.uint8
