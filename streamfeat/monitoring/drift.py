"""How far a distribution has moved from its baseline: PSI and a quantile distance.

Both compare the *numeric* values of two :class:`~streamfeat.monitoring.sketch.ValueSketch`
es (nulls are watched apart, by the null rate), and both are ``None`` when either side has
no numeric value.

**Population stability index.** The bins are the baseline's deciles: the sketch buckets
holding its 10 %, 20 %, ..., 90 % lower quantiles are the upper edges of bins
``(-inf, e1], (e1, e2], ..., (e9, +inf)`` (edges that fall in one bucket, a value repeated
over more than a tenth of the baseline such as a count of 0, merge into one bin, so there
may be fewer than 10). With ``b_i`` and ``a_i`` the baseline's and the actual values'
shares of bin ``i``, each raised to at least ``PSI_EPSILON`` (an empty bin would make the
logarithm infinite)::

    PSI = sum_i (a_i - b_i) * ln(a_i / b_i)

0 for identical shares; the usual reading is below 0.1 stable, 0.1-0.2 moderate, above 0.2
a significant shift (alert threshold :data:`PSI_ALERT`). Sampling noise adds about
``(bins - 1) * (1/n_actual + 1/n_baseline)`` on average: 0.02 for 500 values against a
large baseline, so an interval needs some hundreds of values for 0.2 to mean drift.

**Quantile distance.** The mean absolute difference of the 5 %, 10 %, ..., 95 % quantiles
(19 of them), divided by the baseline's interquartile range (``q75 - q25``)::

    QD = mean_q |Q_actual(q) - Q_baseline(q)| / (Q_baseline(0.75) - Q_baseline(0.25))

so 0.5 means the quantiles moved by half an IQR on average; it is scale-free and, unlike
PSI, grows with how far the values moved, not only with how many changed bin. When the
baseline's IQR is 0 (more than half its values equal), its 5-95 % range is the scale, and
when that is 0 too (a constant), the absolute difference is used as it is (scale 1). Each
quantile carries the sketch's 1 % relative error.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from streamfeat.monitoring.sketch import SIZE, ValueSketch

__all__ = ["PSI_ALERT", "PSI_EPSILON", "QD_QUANTILES", "Reference", "psi", "quantile_distance"]

PSI_EPSILON = 1e-4
"""The least share a bin is given in the PSI (an empty bin counts as this)."""
PSI_ALERT = 0.2
"""The conventional PSI alert threshold."""
DECILES = tuple(i / 10 for i in range(1, 10))
QD_QUANTILES = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The quantiles the quantile distance compares: 0.05, 0.10, ..., 0.95."""


class Reference:
    """A baseline sketch prepared for comparisons: its decile bins and quantiles, computed
    once (a worker compares every interval with it)."""

    __slots__ = ("_bin_of", "bins", "quantiles", "scale", "shares", "sketch")

    def __init__(self, sketch: ValueSketch) -> None:
        self.sketch = sketch
        self.shares: npt.NDArray[np.float64] | None = None
        self.quantiles: npt.NDArray[np.float64] | None = None
        self.scale = 1.0
        self.bins = 0
        self._bin_of: npt.NDArray[np.intp] | None = None
        if not sketch.n:
            return
        edges = np.unique(sketch.positions(DECILES))
        # the bin of every axis position: how many edges lie strictly below it
        self._bin_of = np.searchsorted(edges, np.arange(SIZE), side="left")
        self.bins = len(edges) + 1
        self.shares = self._shares(sketch)
        q = np.asarray(sketch.quantiles([*QD_QUANTILES, 0.25, 0.75]), dtype=np.float64)
        self.quantiles = q[:len(QD_QUANTILES)]
        iqr = float(q[-1] - q[-2])
        spread = float(self.quantiles[-1] - self.quantiles[0])
        self.scale = iqr if iqr > 0 else spread if spread > 0 else 1.0

    def _shares(self, sketch: ValueSketch) -> npt.NDArray[np.float64]:
        if self._bin_of is None:
            return np.zeros(0)
        counts = np.bincount(self._bin_of, weights=sketch.buckets, minlength=self.bins)
        return counts / max(1, sketch.n)

    def psi(self, actual: ValueSketch) -> float | None:
        """PSI of ``actual`` against this baseline (see the module docstring)."""
        if self.shares is None or not actual.n:
            return None
        a = np.maximum(self._shares(actual), PSI_EPSILON)
        b = np.maximum(self.shares, PSI_EPSILON)
        return float(np.sum((a - b) * np.log(a / b)))

    def quantile_distance(self, actual: ValueSketch) -> float | None:
        """Quantile distance of ``actual`` from this baseline (see the module docstring)."""
        if self.quantiles is None or not actual.n:
            return None
        got = np.asarray(actual.quantiles(QD_QUANTILES), dtype=np.float64)
        value = float(np.mean(np.abs(got - self.quantiles)) / self.scale)
        return value if math.isfinite(value) else None


def psi(baseline: ValueSketch, actual: ValueSketch) -> float | None:
    """PSI of ``actual`` against ``baseline``'s deciles (see the module docstring)."""
    return Reference(baseline).psi(actual)


def quantile_distance(baseline: ValueSketch, actual: ValueSketch) -> float | None:
    """Mean |quantile difference| over 5..95 %, in units of the baseline's IQR."""
    return Reference(baseline).quantile_distance(actual)
