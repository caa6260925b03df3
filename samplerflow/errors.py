"""Exceptions that separate bad input from bugs.

A :class:`SampleError` concerns one slide: the cohort run records it in the
QC table and goes on with the other slides (unless ``--strict``). An
:class:`InputError` concerns the whole run (a bad samplesheet or option) and
stops it before any work starts.
"""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """Invalid run-level input: samplesheet, options, task or model files."""


class SampleError(RuntimeError):
    """A failure confined to one sample, recorded in the QC table.

    ``status`` is a short machine-readable QC status such as ``unreadable``,
    ``no_mpp``, ``no_tissue`` or ``no_tiles``. The message is the reason a
    person reads, naming the file and the fix.
    """

    def __init__(self, status: str, message: str, *, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields: dict[str, Any] = dict(fields or {})
        """QC fields known before the failure (e.g. mpp of a slide with no tissue)."""
