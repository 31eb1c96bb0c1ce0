"""Wilson score intervals for proportions (accuracy, sensitivity, specificity, PPV, NPV).

For k successes in n at z = 1.96 (the 97.5% normal quantile): centre (k + z^2/2) / (n + z^2),
half-width z * sqrt(k (n - k) / n + z^2 / 4) / (n + z^2). Unlike the normal approximation it
never has zero width for n > 0 (at k = n the lower bound is below 1), which is what a small test
set needs. Equal to statsmodels' ``proportion_confint(k, n, method="wilson")``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from accvit_med.reports.bootstrap import CI_LEVEL

WILSON_NAME = "Wilson score interval"


def wilson_interval(k: float, n: float, level: float = CI_LEVEL) -> tuple[float | None, float | None]:
    """(low, high) of the Wilson score interval for ``k`` of ``n``; (None, None) when n is 0."""
    k, n = float(k), float(n)
    if n <= 0:
        return None, None
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z * math.sqrt(max(k * (n - k) / n, 0.0) + z2 / 4) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson(k: float, n: float) -> dict:
    """{"low": ..., "high": ...} of :func:`wilson_interval`, as metrics dicts hold intervals."""
    low, high = wilson_interval(k, n)
    return {"low": low, "high": high}
