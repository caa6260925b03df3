"""Samplesheet reading and validation.

The samplesheet is a CSV with one row per slide. Its columns are defined once,
in ``assets/schema_input.json`` (JSON Schema, nf-core style). This module
validates rows against that file and adds the checks JSON Schema cannot
express (file existence relative to the sheet, unique sample ids). Every
problem of a sheet is collected and reported together.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from samplerflow.errors import InputError
from samplerflow.io import atomic_path

log = logging.getLogger(__name__)

NUMERIC_COLUMNS = ("mpp",)
PATH_COLUMNS = ("image", "roi")


@dataclass(frozen=True)
class Sample:
    """One validated samplesheet row; paths are absolute."""

    sample: str
    patient: str
    image: Path
    center: str
    label: str | None = None
    mpp: float | None = None
    roi: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """Return the row as a flat mapping, in samplesheet column names."""
        row: dict[str, Any] = {
            "sample": self.sample,
            "patient": self.patient,
            "image": str(self.image),
            "center": self.center,
            "label": self.label if self.label is not None else "",
            "mpp": self.mpp if self.mpp is not None else "",
            "roi": str(self.roi) if self.roi is not None else "",
        }
        row.update(self.metadata)
        return row


@cache
def load_schema() -> dict[str, Any]:
    """Load the samplesheet JSON Schema shipped with the package."""
    text = resources.files("samplerflow").joinpath("schemas/schema_input.json").read_text()
    return json.loads(text)


def _coerce(column: str, value: str) -> Any:
    """Convert a CSV cell to the JSON type the schema expects, where it parses."""
    if column in NUMERIC_COLUMNS:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _row_label(line: int, row: dict[str, str]) -> str:
    sample = row.get("sample", "").strip()
    return f"line {line}" + (f" (sample '{sample}')" if sample else "")


def read_samplesheet(path: str | Path) -> list[Sample]:
    """Read and validate a samplesheet; raise :class:`InputError` listing every problem.

    Relative ``image`` and ``roi`` paths are resolved against the folder of
    the samplesheet. Empty optional cells count as missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Samplesheet not found: {path}. Pass the path of a CSV file with --input.")

    schema = load_schema()
    item_schema = schema["items"]
    properties: dict[str, Any] = item_schema["properties"]
    required: list[str] = item_schema["required"]
    unique_columns: list[str] = schema.get("uniqueEntries", [])
    validator = jsonschema.Draft202012Validator(item_schema)

    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        raw_rows = [
            {(key or "").strip(): (value or "").strip() for key, value in row.items()}
            for row in reader
        ]

    problems: list[str] = []
    missing_columns = [name for name in required if name not in header]
    for name in missing_columns:
        description = properties[name].get("description", "")
        problems.append(f"missing required column '{name}': add it to the header ({description})")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    for name in duplicated:
        problems.append(f"column '{name}' appears more than once in the header: keep one")
    if not raw_rows:
        problems.append("the samplesheet has a header but no rows: add one row per slide")
    # Missing columns are reported with the rows' own problems below, so one error lists everything.
    if duplicated or not raw_rows:
        raise InputError(_format_problems(path, problems))

    base = path.resolve().parent
    samples: list[Sample] = []
    first_line_of: dict[tuple[str, str], int] = {}
    for offset, raw in enumerate(raw_rows):
        line = offset + 2  # line 1 is the header
        where = _row_label(line, raw)
        instance = {key: _coerce(key, value) for key, value in raw.items() if value != ""}
        row_ok = not missing_columns
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.path)):
            if error.validator == "required" and any(error.message.startswith(f"'{name}'") for name in missing_columns):
                continue  # already reported once for the header
            row_ok = False
            problems.append(f"{where}: {_describe_schema_error(error, properties)}")

        resolved: dict[str, Path] = {}
        for column in PATH_COLUMNS:
            value = raw.get(column, "")
            if not value or not properties[column].get("exists"):
                continue
            candidate = Path(value).expanduser()
            candidate = candidate if candidate.is_absolute() else base / candidate
            if not candidate.exists():
                row_ok = False
                problems.append(
                    f"{where}, column '{column}': file not found: '{value}' (looked for {candidate}); "
                    f"{properties[column].get('errorMessage', 'fix the path')}"
                )
            else:
                resolved[column] = candidate.resolve()

        for column in unique_columns:
            value = raw.get(column, "")
            if not value:
                continue
            key = (column, value)
            if key in first_line_of:
                row_ok = False
                problems.append(
                    f"{where}, column '{column}': duplicate value '{value}', first used on "
                    f"line {first_line_of[key]}: each {column} must be unique"
                )
            else:
                first_line_of[key] = line

        if not row_ok:
            continue
        metadata = {key: value for key, value in raw.items() if key not in properties and key}
        samples.append(
            Sample(
                sample=raw["sample"],
                patient=raw["patient"],
                image=resolved["image"],
                center=raw["center"],
                label=raw.get("label") or None,
                mpp=float(raw["mpp"]) if raw.get("mpp") else None,
                roi=resolved.get("roi"),
                metadata=metadata,
            )
        )

    if problems:
        raise InputError(_format_problems(path, problems))
    log.info("Samplesheet %s: %d valid sample%s", path, len(samples), "" if len(samples) == 1 else "s")
    return samples


def _describe_schema_error(error: jsonschema.ValidationError, properties: dict[str, Any]) -> str:
    """Turn a JSON Schema error into 'column X: value V is invalid: fix'."""
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        hint = properties.get(missing, {}).get("errorMessage", "fill in the cell")
        return f"column '{missing}': value is empty: {hint}"
    column = str(error.path[0]) if error.path else "?"
    hint = properties.get(column, {}).get("errorMessage", error.message)
    return f"column '{column}': invalid value {error.instance!r}: {hint}"


def _format_problems(path: Path, problems: list[str]) -> str:
    lines = [f"Invalid samplesheet {path} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  - {problem}" for problem in problems]
    return "\n".join(lines)


def write_samplesheet(samples: list[Sample], destination: str | Path) -> None:
    """Write validated samples as CSV with absolute paths, atomically."""
    columns = ["sample", "patient", "image", "center", "label", "mpp", "roi"]
    for sample in samples:
        columns += [key for key in sample.metadata if key not in columns]
    with atomic_path(destination) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for sample in samples:
            writer.writerow(sample.as_row())
