"""Static checks of the Nextflow layer, each also run on a broken copy to show it fails.

These need no Java: they read the .nf and config files (through reftrace
for parsing and process directives) and compare them with the real CLI.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from nextflow_helpers import (
    REPO_ROOT,
    cli_parameter_problems,
    cli_problems,
    include_problems,
    module_files,
    nextflow_files,
    parse_problems,
    process_problems,
    read_config_params,
    schema_problems,
    staged_file_problems,
)

COPIED = ("main.nf", "nextflow.config", "nextflow_schema.json", "conf", "modules", "workflows")


@pytest.fixture
def pipeline_copy(tmp_path: Path) -> Path:
    """A copy of the pipeline files that a test may break."""
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        elif source.is_file():
            shutil.copy2(source, tmp_path / name)
    return tmp_path


def replace_once(path: Path, old: str, new: str) -> None:
    """Replace exactly one occurrence of ``old`` in ``path``, so a mutation cannot silently miss."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


def test_pipeline_files_present():
    files = [path.relative_to(REPO_ROOT).as_posix() for path in nextflow_files(REPO_ROOT)]
    assert "main.nf" in files
    assert "workflows/samplerflow.nf" in files
    modules = {path.parent.name for path in module_files(REPO_ROOT)}
    assert {
        "validate", "convert", "aoi", "convert_objects", "focus", "tile", "extract", "sampler", "cohort", "synth",
    } <= modules


# reftrace parse


def test_nf_files_parse():
    assert parse_problems(REPO_ROOT) == []


def test_parse_check_fails_on_broken_file(pipeline_copy: Path):
    replace_once(pipeline_copy / "modules/local/tile/main.nf", "    input:\n", "    input:\n    tuple val(meta), path(roi\n")
    problems = parse_problems(pipeline_copy)
    assert len(problems) == 1
    assert problems[0].startswith("modules/local/tile/main.nf")


# includes


def test_includes_resolve():
    assert include_problems(REPO_ROOT) == []


def test_include_check_fails_on_missing_file(pipeline_copy: Path):
    shutil.rmtree(pipeline_copy / "modules/local/sampler")
    problems = include_problems(pipeline_copy)
    assert any("included file not found: ../modules/local/sampler/main" in problem for problem in problems), problems


def test_include_check_fails_on_wrong_process_name(pipeline_copy: Path):
    workflow = pipeline_copy / "workflows/samplerflow.nf"
    replace_once(workflow, "include { TILE     }", "include { TILES    }")
    line = next(number for number, text in enumerate(workflow.read_text().splitlines(), start=1) if "TILES" in text)
    problems = include_problems(pipeline_copy)
    assert problems == [
        f"workflows/samplerflow.nf:{line}: TILES is not defined in ../modules/local/tile/main (defined there: TILE)"
    ]


# process conventions


def test_processes_follow_conventions():
    assert process_problems(REPO_ROOT) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('    tag "${meta.id}"\n', "", "needs the directive tag"),
        ("    label 'process_low'\n", "    label 'small'\n", "needs a resource label"),
        ('    container "${params.container}"\n', "", "needs a container directive"),
        ("    stub:\n", "    // no stub\n", "has no stub: block"),
        (", topic: versions", "", "no output on the versions topic"),
        ("    def args = task.ext.args ?: ''\n", "    def args = ''\n", "does not pass task.ext.args"),
    ],
)
def test_process_check_fails_on_mutation(pipeline_copy: Path, old: str, new: str, expected: str):
    replace_once(pipeline_copy / "modules/local/tile/main.nf", old, new)
    problems = process_problems(pipeline_copy)
    assert len(problems) == 1, problems
    assert problems[0].startswith("modules/local/tile/main.nf")
    assert expected in problems[0]


# samplerflow command lines against the real CLI


def test_module_commands_parse_with_cli():
    assert cli_problems(REPO_ROOT) == []


def test_cli_check_fails_on_flag_typo(pipeline_copy: Path):
    replace_once(pipeline_copy / "modules/local/aoi/main.nf", "--thumbnail-mpp ", "--thumbnail-mmp ")
    problems = cli_problems(pipeline_copy)
    # Once with the optional options on, once with them off.
    assert len(problems) == 2, problems
    assert all("--thumbnail-mmp" in problem for problem in problems)


def test_cli_check_fails_on_missing_required_argument(pipeline_copy: Path):
    replace_once(pipeline_copy / "modules/local/tile/main.nf", "        --mask ${mask} \\\\\n", "")
    problems = cli_problems(pipeline_copy)
    assert len(problems) == 2, problems
    assert all("the following arguments are required: --mask" in problem for problem in problems)


def test_cli_check_fails_on_unknown_subcommand(pipeline_copy: Path):
    replace_once(pipeline_copy / "modules/local/sampler/main.nf", "samplerflow --no-progress sampler", "samplerflow --no-progress sample")
    problems = cli_problems(pipeline_copy)
    assert problems and all("unknown samplerflow subcommand 'sample'" in problem for problem in problems)


def test_cli_check_fails_on_python_call(pipeline_copy: Path):
    replace_once(pipeline_copy / "modules/local/tile/main.nf", "samplerflow --no-progress tile", "python -m samplerflow.cli --no-progress tile")
    problems = cli_problems(pipeline_copy)
    assert "modules/local/tile/main.nf: no `samplerflow` command found in its script block" in problems
    assert "modules/local/tile/main.nf: the script block runs python; call the `samplerflow` command instead" in problems


@pytest.mark.parametrize(
    ("module", "subcommand"),
    [
        ("convert", "convert"),
        ("convert_objects", "convert-objects"),
        ("focus", "focus"),
        ("cohort", "cohort"),
    ],
)
def test_cli_check_covers_module(pipeline_copy: Path, module: str, subcommand: str):
    path = pipeline_copy / f"modules/local/{module}/main.nf"
    replace_once(path, f"samplerflow --no-progress {subcommand} \\\\\n", f"samplerflow --no-progress {subcommand} --no-such-option \\\\\n")
    problems = cli_problems(pipeline_copy)
    assert len(problems) == 2, problems
    assert all(problem.startswith(f"modules/local/{module}/main.nf") for problem in problems)
    assert all("--no-such-option" in problem for problem in problems)


def test_cli_check_covers_conditional_option(pipeline_copy: Path):
    # An optional option whose value has the wrong type shows up only with options on.
    replace_once(pipeline_copy / "modules/local/tile/main.nf", '"--max-tiles ${params.max_tiles}"', '"--max-tiles ${params.grid}"')
    problems = cli_problems(pipeline_copy)
    assert len(problems) == 1, problems
    assert "optional options on" in problems[0]
    assert "--max-tiles" in problems[0]


# params against CLI defaults and the schema


def test_params_equal_cli_defaults():
    assert cli_parameter_problems(REPO_ROOT) == []


def test_param_check_fails_on_changed_default(pipeline_copy: Path):
    replace_once(pipeline_copy / "nextflow.config", "brightness_max      = 220", "brightness_max      = 200")
    assert cli_parameter_problems(pipeline_copy) == [
        "params.brightness_max: default 200 differs from the CLI default 220"
    ]


def test_param_check_fails_on_wrong_number_type(pipeline_copy: Path):
    # Nextflow would pass "220.0" to an integer option, which argparse rejects.
    replace_once(pipeline_copy / "nextflow.config", "brightness_max      = 220", "brightness_max      = 220.0")
    problems = cli_parameter_problems(pipeline_copy)
    assert len(problems) == 1
    assert "is a float" in problems[0]


def test_param_check_fails_on_changed_scales(pipeline_copy: Path):
    replace_once(pipeline_copy / "nextflow.config", "scales              = '1,2,3,4'", "scales              = '1,2'")
    problems = cli_parameter_problems(pipeline_copy)
    assert len(problems) == 1
    assert problems[0].startswith("params.scales")


def test_param_check_fails_on_missing_param(pipeline_copy: Path):
    replace_once(pipeline_copy / "nextflow.config", "    synth_seed      = 0\n", "")
    assert cli_parameter_problems(pipeline_copy) == [
        "--seed of `samplerflow synth` has no param synth_seed in nextflow.config"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    target_mpp      = null\n", "--target-mpp of `samplerflow aoi` has no param target_mpp in nextflow.config"),
        ("    jpeg_quality    = 90\n", "--jpeg-quality of `samplerflow convert` has no param jpeg_quality in nextflow.config"),
        ("    focus_mpp            = 0.5\n", "--focus-mpp of `samplerflow focus` has no param focus_mpp in nextflow.config"),
        ("    no_outlier_check = false\n", "--no-outlier-check of `samplerflow cohort` has no param no_outlier_check in nextflow.config"),
        ("    convert_objects = false\n", "--convert-objects of `samplerflow run` has no param convert_objects in nextflow.config"),
    ],
)
def test_param_check_covers_harmonization(pipeline_copy: Path, line: str, expected: str):
    replace_once(pipeline_copy / "nextflow.config", line, "")
    assert expected in cli_parameter_problems(pipeline_copy)


def test_param_check_fails_on_changed_switch_default(pipeline_copy: Path):
    replace_once(pipeline_copy / "nextflow.config", "    focus_qc        = false\n", "    focus_qc        = true\n")
    assert cli_parameter_problems(pipeline_copy) == ["params.focus_qc: default True differs from the CLI default False"]


def test_param_check_fails_on_missing_weights_param(pipeline_copy: Path):
    replace_once(pipeline_copy / "nextflow.config", "    weights_inception_v3 = null\n", "")
    assert cli_parameter_problems(pipeline_copy) == [
        "backbone inception_v3 needs weights but nextflow.config has no param weights_inception_v3"
    ]


def test_file_params_staged_as_inputs():
    assert staged_file_problems(REPO_ROOT) == []


def test_staged_file_check_fails_on_param_path(pipeline_copy: Path):
    replace_once(
        pipeline_copy / "modules/local/focus/main.nf",
        'checkpoint ? "--focus-checkpoint ${checkpoint}" : \'\'',
        'params.focus_checkpoint ? "--focus-checkpoint ${params.focus_checkpoint}" : \'\'',
    )
    assert staged_file_problems(pipeline_copy) == [
        "modules/local/focus/main.nf: its script block reads params.focus_checkpoint; "
        "stage the file as a path input and use that input instead"
    ]


def test_params_documented_in_schema():
    assert schema_problems(REPO_ROOT) == []


def test_schema_check_fails_on_undocumented_param(pipeline_copy: Path):
    schema_path = pipeline_copy / "nextflow_schema.json"
    schema = json.loads(schema_path.read_text())
    del schema["$defs"]["tiling_options"]["properties"]["max_tiles"]
    schema_path.write_text(json.dumps(schema))
    assert schema_problems(pipeline_copy) == ["params.max_tiles is not documented in nextflow_schema.json"]


def test_schema_check_fails_on_stale_default(pipeline_copy: Path):
    replace_once(pipeline_copy / "nextflow.config", "batch_size           = 32", "batch_size           = 64")
    assert schema_problems(pipeline_copy) == [
        "nextflow_schema.json: batch_size default 32 differs from nextflow.config 64"
    ]


def test_schema_groups_are_all_referenced():
    schema = json.loads((REPO_ROOT / "nextflow_schema.json").read_text())
    referenced = {entry["$ref"].rsplit("/", 1)[1] for entry in schema["allOf"]}
    assert referenced == set(schema["$defs"])


# secrets and site independence


def test_hf_token_only_from_secret():
    params = read_config_params(REPO_ROOT / "nextflow.config")
    assert not [name for name in params if "token" in name.lower()]
    modules_config = (REPO_ROOT / "conf/modules.config").read_text()
    assert "secret = secrets.HF_TOKEN ? ['HF_TOKEN'] : []" in modules_config
    for path in nextflow_files(REPO_ROOT):
        text = path.read_text()
        assert "secrets." not in text, f"{path} reads a secret; only conf/modules.config may"
        assert not re.search(r"echo[^\n]*HF_TOKEN", text), f"{path} prints HF_TOKEN"


def test_configs_have_no_site_paths():
    configs = [REPO_ROOT / "nextflow.config", *sorted((REPO_ROOT / "conf").glob("*.config"))]
    for path in configs:
        text = path.read_text()
        for pattern in (r"/home/", r"/Users/", r"/scratch/", r"/work/", r"/data/", r"/gpfs/", r"/lustre/"):
            assert not re.search(pattern, text), f"{path.name} contains the site path {pattern}"
