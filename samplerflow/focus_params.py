"""Settings of the focus QC stage, importable without PyTorch.

The command line builds its options from these defaults at start-up, and
every pipeline task starts the command line, so this module stays free of
the heavy imports of :mod:`samplerflow.focus`.
"""

from __future__ import annotations

from dataclasses import dataclass

from samplerflow.errors import InputError
from samplerflow.units import MicronsPerPixel

MEASURES = ("laplacian", "tenengrad")
DEFAULT_FOCUS_MPP = MicronsPerPixel(0.5)
SCORERS = (*MEASURES, "deepfocus")
DEFAULT_MAX_BLURRED_FRACTION = 0.1


@dataclass(frozen=True)
class FocusParams:
    """Settings of the focus QC stage.

    ``measure`` is ``laplacian``, ``tenengrad`` or ``deepfocus`` (which
    needs ``checkpoint``). ``blur_threshold`` replaces the measure's default
    (a sharpness for the classical measures, an out-of-focus probability
    for DeepFocus). A slide is ``out_of_focus`` when more than
    ``max_blurred_fraction`` of its tissue tiles are blurred. Flagged
    slides stop there, unless ``keep_flagged`` lets them go on to later
    stages with the flag in qc.csv.
    """

    measure: str = "laplacian"
    checkpoint: str | None = None
    blur_threshold: float | None = None
    max_blurred_fraction: float = DEFAULT_MAX_BLURRED_FRACTION
    keep_flagged: bool = False
    tile_size_um: float = 128.0
    mpp: float = float(DEFAULT_FOCUS_MPP)

    def __post_init__(self) -> None:
        if self.measure not in SCORERS:
            raise InputError(f"Invalid focus measure {self.measure!r}: choose one of {', '.join(SCORERS)}")
        if self.measure == "deepfocus" and not self.checkpoint:
            raise InputError("The deepfocus focus measure needs a checkpoint: pass --focus-checkpoint FILE.pt")
        if self.checkpoint and self.measure != "deepfocus":
            raise InputError(f"--focus-checkpoint is used only with --focus-measure deepfocus, not {self.measure!r}")
        if not 0 <= self.max_blurred_fraction <= 1:
            raise InputError(f"Invalid max blurred fraction {self.max_blurred_fraction}: must be in 0..1")
        if self.tile_size_um <= 0 or self.mpp <= 0:
            raise InputError(f"Invalid focus grid: tile size {self.tile_size_um} um at {self.mpp} um/px; both must be positive")
