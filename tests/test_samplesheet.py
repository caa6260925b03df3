"""Samplesheet validation: every problem in one error, and valid sheets read as written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from samplerflow.errors import InputError
from samplerflow.samplesheet import load_schema, read_samplesheet, write_samplesheet
from conftest import REPO, run_cli


@pytest.fixture
def slide_file(tmp_path) -> Path:
    """A stand-in image file: the samplesheet only checks that the path exists."""
    folder = tmp_path / "slides"
    folder.mkdir()
    path = folder / "a.svs"
    path.write_bytes(b"placeholder")
    return path


def write_sheet(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def bad_rows_sheet(tmp_path, slide_file) -> Path:
    # line 1 header; lines 2-7 rows
    return write_sheet(
        tmp_path / "sheet.csv",
        "sample,patient,image,center\n"
        "s1,p1,slides/a.svs,c1\n"
        "s1,p2,slides/a.svs,c1\n"
        "s3,p3,slides/missing.svs,c1\n"
        "bad/id,p4,slides/a.svs,c1\n"
        "..,p5,slides/a.svs,c1\n"
        "s6,p6,slides/a.svs,\n",
    )


def problem_lines(error: InputError) -> list[str]:
    return [line for line in str(error).splitlines() if line.startswith("  - ")]


def test_bad_rows_one_error(bad_rows_sheet):
    with pytest.raises(InputError) as caught:
        read_samplesheet(bad_rows_sheet)
    assert len(problem_lines(caught.value)) == 5


def test_bad_rows_duplicate_sample(bad_rows_sheet):
    with pytest.raises(InputError) as caught:
        read_samplesheet(bad_rows_sheet)
    [line] = [line for line in problem_lines(caught.value) if "duplicate value" in line]
    assert "line 3" in line
    assert "'sample'" in line
    assert "'s1'" in line
    assert "line 2" in line  # where the id was first used


def test_bad_rows_missing_image(bad_rows_sheet):
    with pytest.raises(InputError) as caught:
        read_samplesheet(bad_rows_sheet)
    [line] = [line for line in problem_lines(caught.value) if "missing.svs" in line]
    assert "line 4" in line
    assert "'image'" in line
    assert "not found" in line


def test_bad_rows_slash_in_sample(bad_rows_sheet):
    with pytest.raises(InputError) as caught:
        read_samplesheet(bad_rows_sheet)
    [line] = [line for line in problem_lines(caught.value) if "line 5" in line]
    assert "'sample'" in line
    assert "bad/id" in line


def test_bad_rows_dots_sample(bad_rows_sheet):
    with pytest.raises(InputError) as caught:
        read_samplesheet(bad_rows_sheet)
    [line] = [line for line in problem_lines(caught.value) if "line 6" in line]
    assert "'sample'" in line
    assert "'..'" in line


def test_bad_rows_empty_center(bad_rows_sheet):
    with pytest.raises(InputError) as caught:
        read_samplesheet(bad_rows_sheet)
    [line] = [line for line in problem_lines(caught.value) if "line 7" in line]
    assert "'center'" in line


def test_missing_column_with_row_problems(tmp_path, slide_file):
    """A missing column is reported together with the rows' own problems."""
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        "sample,patient,image\n"
        "s1,p1,slides/a.svs\n"
        "s1,p2,slides/gone.svs\n",
    )
    with pytest.raises(InputError) as caught:
        read_samplesheet(sheet)
    message = str(caught.value)
    assert "missing required column 'center'" in message
    assert "duplicate value 's1'" in message
    assert "gone.svs" in message


def test_missing_column_alone(tmp_path, slide_file):
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,image,center\ns1,slides/a.svs,c1\n")
    with pytest.raises(InputError, match="missing required column 'patient'"):
        read_samplesheet(sheet)


def test_invalid_mpp_rejected(tmp_path, slide_file):
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,patient,image,center,mpp\ns1,p1,slides/a.svs,c1,-0.5\n")
    with pytest.raises(InputError) as caught:
        read_samplesheet(sheet)
    assert "'mpp'" in str(caught.value)
    assert "-0.5" in str(caught.value)


def test_header_only_rejected(tmp_path):
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,patient,image,center\n")
    with pytest.raises(InputError, match="no rows"):
        read_samplesheet(sheet)


def test_absent_sheet_rejected(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_samplesheet(tmp_path / "absent.csv")


def test_relative_paths_resolve_against_sheet(tmp_path, slide_file, monkeypatch):
    sheet = write_sheet(tmp_path / "sheets" / "sheet.csv", "sample,patient,image,center\ns1,p1,../slides/a.svs,c1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    [sample] = read_samplesheet(sheet)
    assert sample.image == slide_file.resolve()
    assert sample.image.is_absolute()


def test_roi_path_resolves_against_sheet(tmp_path, slide_file):
    (tmp_path / "roi.json").write_text("[]")
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,patient,image,center,roi\ns1,p1,slides/a.svs,c1,roi.json\n")
    [sample] = read_samplesheet(sheet)
    assert sample.roi == (tmp_path / "roi.json").resolve()


def test_extra_columns_kept_as_metadata(tmp_path, slide_file):
    sheet = write_sheet(
        tmp_path / "sheet.csv",
        "sample,patient,image,center,label,mpp,stain,scanner\ns1,p1,slides/a.svs,c1,tumour,0.5,HE,GT450\n",
    )
    [sample] = read_samplesheet(sheet)
    assert sample.metadata == {"stain": "HE", "scanner": "GT450"}
    assert sample.label == "tumour"
    assert sample.mpp == 0.5


def test_empty_optional_cells_are_none(tmp_path, slide_file):
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,patient,image,center,label,mpp,roi\ns1,p1,slides/a.svs,c1,,,\n")
    [sample] = read_samplesheet(sheet)
    assert sample.label is None
    assert sample.mpp is None
    assert sample.roi is None


def test_written_sheet_reads_back(tmp_path, slide_file):
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,patient,image,center,stain\ns1,p1,slides/a.svs,c1,HE\n")
    samples = read_samplesheet(sheet)
    valid = tmp_path / "out" / "valid.csv"
    write_samplesheet(samples, valid)
    assert read_samplesheet(valid) == samples


def test_package_schema_is_assets_schema():
    assets_schema = REPO / "assets" / "schema_input.json"
    package_schema = REPO / "samplerflow" / "schemas" / "schema_input.json"
    assert package_schema.read_bytes() == assets_schema.read_bytes()
    assert load_schema() == json.loads(assets_schema.read_text())


def test_schema_required_columns():
    assert load_schema()["items"]["required"] == ["sample", "patient", "image", "center"]


def _samplerflow_command() -> list[str]:
    script = Path(sys.executable).parent / "samplerflow"
    if script.is_file():
        return [str(script)]
    found = shutil.which("samplerflow")
    return [found] if found else [sys.executable, "-m", "samplerflow.cli"]


@pytest.mark.slow  # a fresh interpreter imports torch through the CLI
def test_cli_validate_exits_2(bad_rows_sheet, tmp_path):
    output = tmp_path / "valid.csv"
    completed = subprocess.run(
        [*_samplerflow_command(), "validate", "--input", str(bad_rows_sheet), "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    printed = completed.stdout + completed.stderr
    for fragment in ("duplicate value 's1'", "missing.svs", "bad/id", "'..'", "line 7", "'center'"):
        assert fragment in printed, fragment
    assert not output.exists()


def test_cli_validate_writes_absolute_paths(tmp_path, slide_file):
    sheet = write_sheet(tmp_path / "sheet.csv", "sample,patient,image,center\ns1,p1,slides/a.svs,c1\n")
    output = tmp_path / "valid.csv"
    assert run_cli("validate", "--input", sheet, "--output", output) == 0
    assert str(slide_file.resolve()) in output.read_text()


def test_cli_validate_in_process_exits_2(bad_rows_sheet, tmp_path):
    assert run_cli("validate", "--input", bad_rows_sheet, "--output", tmp_path / "valid.csv") == 2
