"""Welch's t-test and the Student-t functions behind the report, against tables and closed forms."""
import math

import pytest

from attn_bench.sweeps.stats import NEED_SEEDS, sample_std, t_cdf, t_quantile, t_two_sided_p, welch_compare

T975_DF2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (tables: 4.303)


def p_df2(t):
    """Two-sided p for 2 degrees of freedom, where the t CDF has a closed form."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


# ---------------------------------------------------------------- statistics

@pytest.mark.parametrize("t, df, expected", [
    (1.0, 1, 0.75),                                     # Cauchy: 1/2 + atan(1)/pi
    (1.5, 2, 0.5 + 1.5 / (2 * math.sqrt(2 + 1.5**2))),  # closed form for df = 2
    (0.0, 7.3, 0.5),
    (-2.0, 5, 0.0509697),                               # half of the two-sided p below
    (2.228138851986, 10, 0.975),
    (1.959963984540, 1e7, 0.975),                       # the normal limit
])
def test_t_cdf_matches_known_values(t, df, expected):
    assert t_cdf(t, df) == pytest.approx(expected, abs=1e-6)


def test_two_sided_p_and_quantiles_match_tables():
    assert t_two_sided_p(2.0, 5) == pytest.approx(0.1019395, abs=1e-6)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062047, abs=1e-6)
    assert t_quantile(0.975, 2) == pytest.approx(T975_DF2, abs=1e-9)
    assert t_quantile(0.975, 10) == pytest.approx(2.2281389, abs=1e-6)
    assert t_quantile(0.025, 3) == pytest.approx(-3.1824463, abs=1e-6)


def test_welch_interval_and_verdicts():
    clear = welch_compare([80.0, 82.0], [70.0, 72.0])  # delta 10, se sqrt(2), df 2
    assert clear.delta == pytest.approx(10.0)
    assert clear.df == pytest.approx(2.0)
    assert (clear.ci_low, clear.ci_high) == pytest.approx((10 - T975_DF2 * math.sqrt(2), 10 + T975_DF2 * math.sqrt(2)))
    assert clear.p_value == pytest.approx(p_df2(10 / math.sqrt(2)))
    assert clear.significant and clear.verdict.startswith("yes (p=0.019")
    noise = welch_compare([71.0, 73.0], [70.0, 72.0])
    assert noise.p_value == pytest.approx(p_df2(1 / math.sqrt(2))) and not noise.significant
    assert noise.verdict.startswith("no (p=0.55")
    single = welch_compare([75.0], [70.0, 72.0])
    assert single.delta == pytest.approx(4.0) and single.ci_low is None and single.verdict == NEED_SEEDS
    assert welch_compare([70.0, 70.0], [70.0, 70.0]).verdict.startswith("n/a: no seed variance")
    assert math.isnan(sample_std([1.0])) and sample_std([70.0, 72.0]) == pytest.approx(math.sqrt(2))


def t_cdf_by_quadrature(t: float, df: float, steps: int = 20000) -> float:
    """The Student-t CDF by Simpson's rule over the density: independent of the incomplete-beta code."""
    pdf = lambda x: (math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))  # noqa: E731
                     * (1 + x * x / df) ** (-(df + 1) / 2))
    h = abs(t) / steps
    area = h / 3 * sum((1 if i in (0, steps) else 4 if i % 2 else 2) * pdf(i * h) for i in range(steps + 1))
    return 0.5 + math.copysign(area, t)


@pytest.mark.parametrize("t, df", [(1.3, 3.533), (-0.7385, 3.5), (2.5, 7.25), (0.4, 1.5)])
def test_t_cdf_at_fractional_degrees_of_freedom_matches_quadrature(t, df):
    assert t_cdf(t, df) == pytest.approx(t_cdf_by_quadrature(t, df), abs=1e-8)


def test_welch_on_unequal_sizes_and_variances_matches_the_formulas():
    """Groups where Welch and Student differ: n = 5 and 3, variances 2.5 and 4 (hand-derived values)."""
    block, baseline = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0]
    c = welch_compare(block, baseline)
    se = math.sqrt(2.5 / 5 + 4.0 / 3)
    df = (2.5 / 5 + 4.0 / 3) ** 2 / ((2.5 / 5) ** 2 / 4 + (4.0 / 3) ** 2 / 2)
    assert c.delta == pytest.approx(-1.0) and c.df == pytest.approx(df) and df == pytest.approx(3.5328, abs=1e-4)
    assert c.p_value == pytest.approx(2 * (1 - t_cdf_by_quadrature(1.0 / se, df)), abs=1e-7)
    student_df = 5 + 3 - 2  # Student's test would use 6 degrees of freedom: a visibly different p
    assert abs(c.p_value - t_two_sided_p(-1.0 / se, student_df)) > 0.01
    # the 97.5 % quantile at df = 3.5328, computed once with scipy.stats.t.ppf (not the code's own t_quantile)
    assert c.ci_high - c.delta == pytest.approx(2.9274053061524556 * se, rel=1e-9)
    assert c.delta - c.ci_low == pytest.approx(3.963725522186273, rel=1e-9)


def test_holm_adjusts_step_down_and_keeps_the_order():
    from attn_bench.sweeps.stats import holm

    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.04, 0.01, None, 0.03]) == pytest.approx([0.06, 0.03, None, 0.06])
    assert holm([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]


def test_a_raw_p_below_005_can_lose_significance_after_holm():
    from dataclasses import replace as with_

    clear = welch_compare([80.0, 82.0], [70.0, 72.0])  # p = 0.0194
    assert clear.significant and not with_(clear, p_holm=0.0582).significant
    assert with_(clear, p_holm=0.0582).verdict == "no (p=0.0194, Holm 0.0582)"
