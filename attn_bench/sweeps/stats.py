"""Seed statistics for comparing attention blocks: mean ± std, and Welch's t-test against a baseline.

Choices, and why:

* **std** is the sample standard deviation (``n - 1`` in the denominator): each seed is one draw
  from the run-to-run noise, and we estimate that noise, not describe the few seeds we have.
* **Delta** is ``mean(block) - mean(baseline)`` in top-1 points. Its 95% confidence interval and
  p-value come from **Welch's t-test**: it does not assume the block and the baseline have the
  same seed variance (an attention block can well make training more or less stable), and with
  equal variances it loses almost nothing against Student's test. Degrees of freedom come from
  the Welch-Satterthwaite formula, so they are usually not whole numbers.
* The verdict says whether the difference is **distinguishable from seed noise**: two-sided
  ``p < 0.05`` (for a single comparison the same as the 95% interval excluding 0; the report
  decides on the Holm-adjusted p, below). With 2-5 seeds the test has
  little power, so "no" means "not shown", not "no effect".
* **Multiple comparisons:** a sweep tests many blocks against one baseline; uncorrected, about one
  block in twenty would look significant by chance. The report therefore adjusts the p-values of
  each (backbone, dataset) family with **Holm's step-down method** (:func:`holm`: controls the
  family-wise error rate at 5 % under any dependence, and is never less powerful than Bonferroni)
  and decides "beyond seed noise" on the adjusted value; both are shown.
* With fewer than 2 seeds on either side there is no variance estimate, so there is no interval
  and no verdict; with zero variance on both sides (bit-identical seeds) the test is undefined.
* The Student-t CDF is computed here through the regularized incomplete beta function
  (continued fraction, as in Numerical Recipes §6.4), so the package needs no scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

ALPHA = 0.05
NEED_SEEDS = "n/a: need >= 2 seeds"
NO_VARIANCE = "n/a: no seed variance"


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation with ``n - 1`` (NaN for a single value)."""
    if len(values) < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Modified Lentz evaluation of the continued fraction in I_x(a, b)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the CDF of a Beta(a, b) variable at ``x``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast here
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(t), df)))


def t_quantile(p: float, df: float) -> float:
    """The ``t`` with ``t_cdf(t, df) == p``, by bisection (the CDF is monotone)."""
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class Comparison:
    """``block - baseline``: the difference of means, and Welch's interval and test when defined."""

    delta: float
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    df: float | None = None
    note: str | None = None  # why there is no interval, when there is none
    p_holm: float | None = None  # adjusted over the family of comparisons (see holm)

    @property
    def decisive_p(self) -> float | None:
        return self.p_holm if self.p_holm is not None else self.p_value

    @property
    def significant(self) -> bool | None:
        return None if self.decisive_p is None else self.decisive_p < ALPHA

    @property
    def verdict(self) -> str:
        if self.p_value is None:
            return self.note or NEED_SEEDS
        holm = "" if self.p_holm is None else f", Holm {self.p_holm:.3g}"
        return f"{'yes' if self.significant else 'no'} (p={self.p_value:.3g}{holm})"


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the given order (None stays None and does not count in m):
    the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[i] = running
    return adjusted


def welch_compare(block: Sequence[float], baseline: Sequence[float], confidence: float = 1 - ALPHA) -> Comparison:
    """Welch's two-sample t-test of ``mean(block) - mean(baseline)``, with its confidence interval."""
    delta = mean(block) - mean(baseline)
    if len(block) < 2 or len(baseline) < 2:
        return Comparison(delta, note=NEED_SEEDS)
    var_block, var_base = sample_std(block) ** 2 / len(block), sample_std(baseline) ** 2 / len(baseline)
    se = math.sqrt(var_block + var_base)
    if se == 0.0:
        return Comparison(delta, note=NO_VARIANCE)
    df = (var_block + var_base) ** 2 / (var_block**2 / (len(block) - 1) + var_base**2 / (len(baseline) - 1))
    half_width = t_quantile(0.5 + confidence / 2.0, df) * se
    return Comparison(delta, delta - half_width, delta + half_width, t_two_sided_p(delta / se, df), df)
