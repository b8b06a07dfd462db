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
