"""PSI and the quantile distance on distributions whose answer is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from streamfeat.monitoring.drift import PSI_EPSILON, QD_QUANTILES, Reference, psi, quantile_distance
from streamfeat.monitoring.sketch import ValueSketch

N = 200_000


def sketch(x: np.ndarray) -> ValueSketch:
    s = ValueSketch()
    s.add_array(x)
    return s


def phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def z_of(p: float) -> float:
    """Inverse of phi by bisection (no scipy)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if phi(mid) < p else (lo, mid)
    return (lo + hi) / 2


def normal_psi(shift: float, scale: float = 1.0) -> float:
    """PSI of N(shift, scale) against N(0, 1) over N(0, 1)'s deciles, exactly."""
    edges = [-math.inf, *(z_of(i / 10) for i in range(1, 10)), math.inf]
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        b = 0.1
        a = phi((hi - shift) / scale) - phi((lo - shift) / scale)
        a = max(a, PSI_EPSILON)
        total += (a - b) * math.log(a / b)
    return total


rng = np.random.default_rng(17)
BASE = rng.normal(0, 1, N)


def test_a_sample_against_itself_is_zero_and_another_sample_is_near_zero() -> None:
    base = sketch(BASE)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-12)
    assert quantile_distance(base, base) == pytest.approx(0.0, abs=1e-12)
    other = sketch(rng.normal(0, 1, N))
    assert psi(base, other) is not None
    assert psi(base, other) < 0.002  # noise: about 9 * (1/N + 1/N)
    assert quantile_distance(base, other) < 0.02


@pytest.mark.parametrize("shift,scale", [(0.25, 1.0), (0.5, 1.0), (1.0, 1.0), (0.0, 2.0),
                                         (-2.0, 1.0)])
def test_psi_of_shifted_normals_equals_the_exact_value(shift: float, scale: float) -> None:
    # positive and negative values, bins from the sketch's decile buckets: within a few %
    got = psi(sketch(BASE), sketch(rng.normal(shift, scale, N)))
    want = normal_psi(shift, scale)
    assert got == pytest.approx(want, rel=0.05, abs=0.003), (got, want)


def test_the_alert_threshold_separates_small_and_large_shifts() -> None:
    base = sketch(BASE)
    assert psi(base, sketch(rng.normal(0.1, 1, 2000))) < 0.2  # an interval of 2000 values
    assert psi(base, sketch(rng.normal(0.6, 1, 2000))) > 0.2


def test_quantile_distance_of_a_shift_is_the_shift_in_iqrs() -> None:
    iqr = z_of(0.75) - z_of(0.25)  # 1.349
    got = quantile_distance(sketch(BASE), sketch(BASE + 0.5))
    assert got == pytest.approx(0.5 / iqr, rel=0.03)


def test_quantile_distance_of_a_scale_change() -> None:
    iqr = z_of(0.75) - z_of(0.25)
    want = float(np.mean([abs(z_of(q)) for q in QD_QUANTILES])) / iqr  # |2z - z| = |z|
    got = quantile_distance(sketch(BASE), sketch(BASE * 2))
    assert got == pytest.approx(want, rel=0.05)


def test_a_point_mass_merges_bins_and_a_stable_stream_stays_stable() -> None:
    # a sum over a window: 0 for most writes (windows emptied), a tail otherwise
    def sample(n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.55, 0.0, rng.lognormal(3, 1, n))

    base = sketch(sample(N))
    ref = Reference(base)
    assert ref.bins < 10  # the deciles up to 50 % all fall in the zero bucket
    assert ref.shares is not None and ref.shares.sum() == pytest.approx(1.0)
    assert ref.shares[0] == pytest.approx(0.55, abs=0.01)
    assert ref.psi(sketch(sample(3000))) < 0.05
    assert ref.psi(sketch(sample(3000) * 3)) > 0.2
    # the scale of the quantile distance is the IQR, not 0
    assert ref.scale > 0


def test_without_numbers_there_is_no_drift() -> None:
    empty = ValueSketch()
    nulls = ValueSketch()
    nulls.add([None, None])
    base = sketch(BASE)
    assert psi(base, empty) is None and psi(empty, base) is None
    assert psi(base, nulls) is None
    assert quantile_distance(base, nulls) is None


def test_a_constant_baseline() -> None:
    const = sketch(np.full(1000, 7.0))
    ref = Reference(const)
    assert ref.bins == 2 and ref.scale == 1.0  # (-inf, 7], (7, inf); absolute differences
    assert ref.psi(sketch(np.full(100, 7.0))) == pytest.approx(0.0)
    assert ref.psi(sketch(np.full(100, 9.0))) > 5
    assert ref.quantile_distance(sketch(np.full(100, 9.0))) == pytest.approx(2.0, rel=0.02)
