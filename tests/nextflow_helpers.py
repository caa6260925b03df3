"""Static checks of the Nextflow layer (main.nf, workflows/, modules/, configs).

Each ``*_problems`` function takes a repository root and returns a list of
problem messages, empty when the check passes. The tests run them on this
repository and on mutated copies, so every check is shown to fail when it
should. The checks read Nextflow files as text (and through reftrace for
the parse check and the process directives); they need no Java.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import reftrace

from samplerflow.cli import _backbones, _percentiles, _scales, build_parser
from samplerflow.features import available_backbones, create_backbone

REPO_ROOT = Path(__file__).resolve().parent.parent
NEXTFLOW_DIRS = ("modules", "workflows", "subworkflows")
RESOURCE_LABELS = {"process_low", "process_medium", "process_high", "process_gpu"}

# Options of the subcommands that the modules fill from the sample (meta,
# staged files, fixed output names) or set for the cohort task (its staged
# files and --allow-empty), so they have no parameter.
SAMPLE_OPTIONS = {
    "sample", "qc_json", "slide", "mpp", "roi", "outdir", "mask", "output", "tiles", "features",
    "samplesheet", "sampler", "qc", "qc_output", "params_json", "allow_empty", "input", "task",
}
# Subcommand whose options are parameters with a prefix: `synth --per-kind` is params.synth_per_kind.
PARAM_PREFIXES = {
    "convert": "", "aoi": "", "convert-objects": "", "focus": "", "tile": "", "extract": "", "sampler": "",
    "cohort": "", "synth": "synth_", "classify": "classify_",
}
# Options of `samplerflow run` that switch stages on; the workflow reads them as params of the same name.
RUN_SWITCHES = ("convert", "convert_objects", "focus_qc", "task")
# Params that name a file the tasks read. Modules must get such a file as a
# path input, so Nextflow stages it into the task (containers, cluster nodes),
# and never interpolate the param into a command line.
FILE_PARAMS = ("focus_checkpoint", "stain_reference", "task", "classify_external")

# Values for Nextflow expressions in a module's command line.
META_VALUES = {"id": "S1", "patient": "P1", "center": "C1", "label": "tumour", "mpp": "0.25", "roi": "roi.json"}
# Values for params that default to null, used where a script sets them.
NULL_PARAM_VALUES = {
    "spacing_um": "96.0",
    "max_tiles": "50",
    "input": "samplesheet.csv",
    "weights_cache": "/shared/weights-cache",
    "target_mpp": "0.5",
    "blur_threshold": "0.3",
    "classify_class_weight": "balanced",
    "classify_tol": "1e-06",
    "classify_threshold": "0.4",
}
# Values for `def` variables of a script block that are not `CONDITION ? "TEXT" : ''`.
# Values for `def` variables that always have a value, whatever the options.
REQUIRED_DEF_VALUES = {"backbone_list": "inception_v3,uni"}
DEF_VALUES = {
    "args": "",
    "checkpoint_options": "",
    "weights_option": "--weights inception_v3=weights/1/model.safetensors --weights uni=hf-hub:org/model",
}


def find_nextflow() -> str | None:
    """Return the Nextflow launcher (.nextflow-dist/nextflow, else `nextflow` on PATH) when Java is available."""
    candidates = [REPO_ROOT / ".nextflow-dist" / "nextflow"]
    on_path = shutil.which("nextflow")
    if on_path:
        candidates.append(Path(on_path))
    java = os.environ.get("JAVA_CMD") or shutil.which("java")
    for variable in ("NXF_JAVA_HOME", "JAVA_HOME"):
        if not java and os.environ.get(variable):
            home_java = Path(os.environ[variable]) / "bin" / "java"
            java = str(home_java) if home_java.is_file() else None
    if not java:
        return None
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def nextflow_files(root: Path) -> list[Path]:
    """Return main.nf and every .nf file under modules/, workflows/ and subworkflows/."""
    files = [root / "main.nf"]
    for folder in NEXTFLOW_DIRS:
        if (root / folder).is_dir():
            files += sorted((root / folder).rglob("*.nf"))
    return files


def module_files(root: Path) -> list[Path]:
    """Return the process files, modules/*/*/main.nf."""
    return sorted((root / "modules").glob("*/*/main.nf"))


# ----------------------------------------------------------------------------
# Parsing


def parse_problems(root: Path) -> list[str]:
    """Parse every .nf file with reftrace and return its parse errors."""
    problems = []
    for path in nextflow_files(root):
        result = reftrace.Module.from_file(str(path))
        if isinstance(result, reftrace.ParseError):
            problems.append(f"{path.relative_to(root)}: reftrace cannot parse it: {result.error}")
    return problems


def _parse_module(path: Path) -> reftrace.Module:
    result = reftrace.Module.from_file(str(path))
    if isinstance(result, reftrace.ParseError):
        raise ValueError(f"{path}: reftrace cannot parse it: {result.error}")
    return result


def include_problems(root: Path) -> list[str]:
    """Check that every include names an existing file that defines the included process or workflow."""
    problems = []
    for path in nextflow_files(root):
        module = _parse_module(path)
        for include in module.includes:
            target = (path.parent / include.from_module).resolve()
            if target.suffix != ".nf":
                target = target.with_name(target.name + ".nf")
            where = f"{path.relative_to(root)}:{include.line}"
            if not target.is_file():
                problems.append(f"{where}: included file not found: {include.from_module} (looked for {target})")
                continue
            included = _parse_module(target)
            defined = {process.name for process in included.processes} | {workflow.name for workflow in included.workflows}
            for item in include.items:
                if item.name not in defined:
                    problems.append(
                        f"{where}: {item.name} is not defined in {include.from_module} "
                        f"(defined there: {', '.join(sorted(defined)) or 'nothing'})"
                    )
    return problems


def _section(text: str, start: str, ends: tuple[str, ...]) -> str:
    """Return the text after the line ``start:`` up to the next line that starts a section in ``ends``."""
    match = re.search(rf"^\s*{start}:\s*$", text, flags=re.MULTILINE)
    if match is None:
        return ""
    rest = text[match.end():]
    end_positions = [m.start() for end in ends for m in [re.search(rf"^\s*{end}:\s*$", rest, flags=re.MULTILINE)] if m]
    return rest[: min(end_positions)] if end_positions else rest


def process_problems(root: Path) -> list[str]:
    """Check each module: one process with tag, resource label, container, stub, versions topic and ext.args."""
    problems = []
    for path in module_files(root):
        where = str(path.relative_to(root))
        module = _parse_module(path)
        if len(module.processes) != 1:
            problems.append(f"{where}: expected exactly one process, found {len(module.processes)}")
            continue
        process = module.processes[0]
        tags = [tag.tag for tag in process.tags]
        if tags != ["${meta.id}"]:
            problems.append(f"{where}: {process.name} needs the directive tag \"${{meta.id}}\", found {tags}")
        labels = [label.label for label in process.labels]
        if not RESOURCE_LABELS & set(labels):
            problems.append(f"{where}: {process.name} needs a resource label ({', '.join(sorted(RESOURCE_LABELS))}), found {labels}")
        containers = [container.name for container in process.containers]
        if not containers or not all("params.container" in name for name in containers):
            problems.append(f"{where}: {process.name} needs a container directive set from params.container, found {containers}")

        text = path.read_text()
        output = _section(text, "output", ("script", "stub", "exec"))
        if not re.search(r"topic:\s*['\"]?versions", output):
            problems.append(f"{where}: {process.name} has no output on the versions topic (topic: versions)")
        if not re.search(r"^\s*stub:\s*$", text, flags=re.MULTILINE):
            problems.append(f"{where}: {process.name} has no stub: block")
        script = _section(text, "script", ("stub",))
        if "task.ext.args" not in script:
            problems.append(f"{where}: {process.name} does not pass task.ext.args to its command")
        input_section = _section(text, "input", ("output",))
        if "val(meta)" not in input_section:
            problems.append(f"{where}: {process.name} has no val(meta) input")
    return problems


# ----------------------------------------------------------------------------
# Command lines against the real CLI


def _script_template(section: str) -> tuple[str, dict[str, str]]:
    """Return the first triple-quoted string of a script or stub section and its `def` lines."""
    match = re.search(r'"""(.*?)"""', section, flags=re.DOTALL)
    template = match.group(1) if match else ""
    head = section[: match.start()] if match else section
    defs = {name: expression.strip() for name, expression in re.findall(r"^\s*def\s+(\w+)\s*=\s*(.+)$", head, flags=re.MULTILINE)}
    return template, defs


def _input_names(text: str) -> set[str]:
    section = _section(text, "input", ("output",))
    return set(re.findall(r"path\((\w+)", section)) | set(re.findall(r"val\((\w+)\)", section))


def _substitute(template: str, defs: dict[str, str], inputs: set[str], params: dict[str, Any], options_on: bool) -> str:
    """Replace each ${...} by a sample value; raise KeyError for an expression with no known value."""

    def value(expression: str) -> str:
        expression = expression.strip()
        if expression.startswith("meta."):
            return META_VALUES[expression.split(".", 1)[1]]
        if expression.startswith("params."):
            name = expression.split(".", 1)[1]
            if name not in params:
                raise KeyError(f"params.{name} is not defined in nextflow.config")
            if params[name] is None:
                return NULL_PARAM_VALUES[name]
            return _groovy_string(params[name])
        if expression in defs:
            return resolve_def(expression)
        if expression in inputs:
            return f"{expression}.dat"
        raise KeyError(f"no sample value for ${{{expression}}}")

    def resolve_def(name: str) -> str:
        expression = defs[name]
        ternary = re.fullmatch(r"(.+?)\s*\?\s*(\"[^\"]*\"|'[^']*')\s*:\s*''", expression)
        if ternary:
            return substitute(ternary.group(2)[1:-1]) if options_on else ""
        if name in REQUIRED_DEF_VALUES:
            return REQUIRED_DEF_VALUES[name]
        if name in DEF_VALUES:
            return DEF_VALUES[name] if options_on else ""
        raise KeyError(f"no sample value for def {name} = {expression}")

    def substitute(text: str) -> str:
        return re.sub(r"\$\{([^}]*)\}", lambda match: value(match.group(1)), text)

    return substitute(template)


def _groovy_string(value: Any) -> str:
    """Format a config value as Groovy interpolates it into a string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def samplerflow_commands(root: Path) -> Iterator[tuple[str, str, bool]]:
    """Yield (module, command line, options_on) for each `samplerflow` call in script and stub blocks.

    Each call is yielded twice: with every optional option of the script
    switched on (meta values, ternary options, ext.args) and with all off.
    """
    params = read_config_params(root / "nextflow.config")
    for path in module_files(root):
        text = path.read_text()
        inputs = _input_names(text)
        for start, ends in (("script", ("stub",)), ("stub", ())):
            template, defs = _script_template(_section(text, start, ends))
            joined = re.sub(r"\\\\\s*\n", " ", template)
            for line in joined.splitlines():
                if not line.strip().startswith("samplerflow"):
                    continue
                for options_on in (True, False):
                    command = _substitute(line.strip(), defs, inputs, params, options_on)
                    yield str(path.relative_to(root)), command, options_on


def cli_problems(root: Path) -> list[str]:
    """Parse every module's `samplerflow` command line with the real argument parser."""
    problems = []
    parser = build_parser()
    subcommands = set(_subparsers(parser))
    seen_modules = set()
    try:
        commands = list(samplerflow_commands(root))
    except KeyError as error:
        return [f"cannot build a module command line: {error.args[0]}"]
    for module, command, options_on in commands:
        seen_modules.add(module)
        words = command.split()[1:]
        subcommand = next((word for word in words if not word.startswith("-")), None)
        if subcommand not in subcommands:
            problems.append(f"{module}: unknown samplerflow subcommand {subcommand!r} in: {command}")
            continue
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parser.parse_args(words)
        except SystemExit:
            variant = "optional options on" if options_on else "optional options off"
            problems.append(f"{module} ({variant}): the CLI rejects {command!r}: {stderr.getvalue().strip()}")
    for path in module_files(root):
        module = str(path.relative_to(root))
        if module not in seen_modules:
            problems.append(f"{module}: no `samplerflow` command found in its script block")
        script = _section(path.read_text(), "script", ("stub",))
        if re.search(r"\bpython3?\b", script):
            problems.append(f"{module}: the script block runs python; call the `samplerflow` command instead")
    return problems


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# ----------------------------------------------------------------------------
# Parameters


def read_config_params(path: Path) -> dict[str, Any]:
    """Read the top-level ``params { name = value }`` block of a Nextflow config.

    Values may be quoted strings, numbers, true, false or null; anything else
    raises ValueError, so a computed default needs this reader extended.
    """
    text = path.read_text()
    match = re.search(r"^params\s*\{\s*$", text, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"{path}: no top-level params {{ }} block")
    params: dict[str, Any] = {}
    for line in text[match.end():].splitlines():
        stripped = line.strip()
        if stripped == "}":
            break
        if not stripped or stripped.startswith("//"):
            continue
        assignment = re.fullmatch(r"(\w+)\s*=\s*('[^']*'|\"[^\"]*\"|[^\s/]+)\s*(//.*)?", stripped)
        if assignment is None:
            raise ValueError(f"{path}: cannot read params line {line!r}")
        params[assignment.group(1)] = _config_value(assignment.group(2), path)
    return params


def _config_value(text: str, path: Path) -> Any:
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"'[^']*'|\"[^\"$]*\"", text):
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    raise ValueError(f"{path}: cannot read the params value {text!r}")


def cli_parameter_problems(root: Path) -> list[str]:
    """Compare nextflow.config params with the CLI defaults of the options they set.

    Every option of the subcommands in PARAM_PREFIXES that the sample does
    not fill must have a param (``synth_`` prefix for synth), as must the
    stage switches of ``samplerflow run`` (RUN_SWITCHES), and every backbone
    that needs weights a ``weights_<backbone>`` param defaulting to null.
    """
    params = read_config_params(root / "nextflow.config")
    subparsers = _subparsers(build_parser())
    problems = []
    for subcommand, prefix in PARAM_PREFIXES.items():
        for action in subparsers[subcommand]._actions:
            if not action.option_strings or action.dest == "help" or action.dest in SAMPLE_OPTIONS:
                continue
            if action.dest == "weights":
                continue
            name = prefix + action.dest
            if name not in params:
                problems.append(f"{action.option_strings[0]} of `samplerflow {subcommand}` has no param {name} in nextflow.config")
                continue
            problem = _compare_default(name, params[name], action.dest, action.default)
            if problem:
                problems.append(f"params.{name}: {problem}")
    run_options = {action.dest: action for action in subparsers["run"]._actions}
    for name in RUN_SWITCHES:
        if name not in params:
            problems.append(f"{run_options[name].option_strings[0]} of `samplerflow run` has no param {name} in nextflow.config")
            continue
        problem = _compare_default(name, params[name], name, run_options[name].default)
        if problem:
            problems.append(f"params.{name}: {problem}")
    for backbone in available_backbones():
        if not create_backbone(backbone).needs_weights:
            continue
        name = f"weights_{backbone}"
        if name not in params:
            problems.append(f"backbone {backbone} needs weights but nextflow.config has no param {name}")
        elif params[name] is not None:
            problems.append(f"params.{name} defaults to {params[name]!r}; the CLI default is no weights (null)")
    return problems


def _compare_default(name: str, value: Any, dest: str, default: Any) -> str | None:
    """Return why a param default differs from the CLI default, or None when they agree."""
    if dest == "scales":
        actual = _scales(str(value))
    elif dest == "percentiles":
        actual = _percentiles(str(value))
    elif dest == "backbone":
        actual, default = tuple(str(value).split(",")), _backbones(default)
    else:
        actual = value
    if actual != default:
        return f"default {value!r} differs from the CLI default {default!r}"
    if default is not None and type(actual) is not type(default):
        return f"default {value!r} is a {type(actual).__name__}, the CLI default {default!r} is a {type(default).__name__}"
    return None


def staged_file_problems(root: Path) -> list[str]:
    """Check that no module script interpolates a param naming an input file (FILE_PARAMS, weights_*).

    Such a file reaches a task only when Nextflow stages it as a path
    input. A command line with the param's own path works only where the
    task can read the same file system as the machine running Nextflow.
    """
    params = read_config_params(root / "nextflow.config")
    names = [name for name in params if name in FILE_PARAMS or (name.startswith("weights_") and name != "weights_cache")]
    problems = []
    for path in module_files(root):
        text = path.read_text()
        for start, ends in (("script", ("stub",)), ("stub", ())):
            section = _section(text, start, ends)
            for name in names:
                if re.search(rf"params\.{name}\b", section):
                    problems.append(
                        f"{path.relative_to(root)}: its {start} block reads params.{name}; "
                        "stage the file as a path input and use that input instead"
                    )
    return problems


def schema_problems(root: Path) -> list[str]:
    """Check that nextflow_schema.json documents exactly the params of nextflow.config, with their defaults."""
    params = read_config_params(root / "nextflow.config")
    schema = json.loads((root / "nextflow_schema.json").read_text())
    documented: dict[str, dict[str, Any]] = {}
    for group in schema.get("$defs", {}).values():
        documented.update(group.get("properties", {}))
    documented.update(schema.get("properties", {}))
    problems = []
    for name, value in params.items():
        entry = documented.get(name)
        if entry is None:
            problems.append(f"params.{name} is not documented in nextflow_schema.json")
            continue
        for key in ("type", "description"):
            if not entry.get(key):
                problems.append(f"nextflow_schema.json: {name} has no {key}")
        if entry.get("default") != value and not (value is None and "default" not in entry):
            problems.append(f"nextflow_schema.json: {name} default {entry.get('default')!r} differs from nextflow.config {value!r}")
    for name in documented:
        if name not in params:
            problems.append(f"nextflow_schema.json documents {name}, which nextflow.config does not define")
    return problems
