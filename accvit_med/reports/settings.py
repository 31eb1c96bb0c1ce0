"""``ReportSettings``: every choice ``write_report`` takes, in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from accvit_med.errors import UserError
from accvit_med.reports.bootstrap import BOOTSTRAP_METHODS, DEFAULT_RESAMPLES
from accvit_med.reports.calibration import DEFAULT_BINS

DEFAULT_GALLERY = 12


@dataclass(frozen=True)
class ReportSettings:
    """``dataset``/``model`` name bare inputs (``model`` only when there is one input); ``ordinal``
    True forces quadratic weighted kappa. ``reference`` is the model compared with every other run
    of its data set (default: the ACC-ViT runs); ``paired=False`` skips the comparisons (and the
    check that runs share their test images). ``bootstrap`` is "rows" (resample test images) or
    "stratified" (resample within each true class). ``positive`` names the positive classes of a
    binary task reported beside the clinical tasks each data set declares; ``gallery`` the number of
    most confident test errors report.html shows per data set."""

    seed: int = 0
    n_boot: int = DEFAULT_RESAMPLES
    split: str = "test"
    dataset: str | None = None
    model: str | None = None
    ordinal: bool | None = None
    paired: bool = True
    reference: str | None = None
    ece_bins: int = DEFAULT_BINS
    progress: bool = False
    bootstrap: str = "rows"
    positive: tuple[str, ...] = ()  # classes of an extra binary task (beside the data sets' own)
    gallery: int = DEFAULT_GALLERY  # the failure gallery's most confident errors per data set (0: none)

    def check(self) -> None:
        """UserError for a setting no report can use (before any file is read)."""
        if self.n_boot < 0:
            raise UserError(f"--n-boot is {self.n_boot}; pass 0 (no intervals) or more resamples, e.g. 1000")
        if self.ece_bins < 1:
            raise UserError(f"--ece-bins is {self.ece_bins}; pass a positive number of bins, e.g. 15")
        if self.gallery < 0:
            raise UserError(f"--gallery is {self.gallery}; pass 0 (no failure gallery) or a number of images, e.g. 12")
        if self.bootstrap not in BOOTSTRAP_METHODS:
            raise UserError(f"--bootstrap is '{self.bootstrap}'; pass one of {', '.join(BOOTSTRAP_METHODS)}")

    def recorded(self) -> dict:
        """The settings report.json records (what changes the numbers, and the gallery's size)."""
        return {"seed": self.seed, "n_boot": self.n_boot, "split": self.split, "ece_bins": self.ece_bins,
                "bootstrap": self.bootstrap, "positive": list(self.positive), "gallery": self.gallery}
