"""Comparing defenses over seeds: intervals, tests, ranks with ties, bold, and power.

A benchmark's verdict is a comparison, and seeds are its unit of evidence. Two defenses run with the
same seeds share each seed's victim initialisation and attack stream (``seeds.derive_seed`` per
purpose), so their per-seed differences cancel what the seed does to both: they are compared with a
**paired t test** over the seeds they share (two or more), and with **Welch's t test** otherwise.
Where either side has a single seed, or every seed agrees exactly (no spread to test against),
there is no test: the pair is ordered by its means and the comparison is *indicative*, never
called significant.

A ranking built on these tests gives each entry ``1 +`` the number of entries that beat it
(significantly lower at ``ALPHA``), so entries that cannot be separated share a rank. It is not a
total order: rank 1 above rank 2 says something beats the second, not that the first does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from scipy import stats

ALPHA = 0.05
"""Two-sided significance level of every test, and 1 - the confidence of every interval."""

Samples = Mapping[int, float]
"""One experiment's values by seed."""


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with its 95% confidence interval (Student t, n - 1 degrees of freedom); NaN
    bounds below 2 seeds."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """``a - b``: the difference of means, its 95% interval and two-sided p value, and the test that gave them."""

    diff: float
    low: float
    high: float
    p: float
    test: str  # "paired t", "Welch t", or "none" (a side has fewer than 2 seeds, or no spread at all)
    n_a: int
    n_b: int

    @property
    def testable(self) -> bool:
        return self.test != "none"

    @property
    def significant(self) -> bool:
        return self.testable and self.p < ALPHA


def _clean(values: Samples) -> dict[int, float]:
    return {int(s): float(v) for s, v in values.items() if v is not None and math.isfinite(float(v))}


def interval(values: Samples) -> Interval:
    """The mean of ``values`` (seed -> value) and its 95% Student t interval."""
    xs = list(_clean(values).values())
    n = len(xs)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * _sd(xs) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def _sd(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def _t_result(diff: float, se: float, df: float, test: str, n_a: int, n_b: int) -> Comparison:
    """A t test's result from its mean difference, standard error and degrees of freedom. A zero
    standard error (every seed agrees exactly) leaves the t statistic undefined: no test."""
    if se == 0:
        return Comparison(diff, float("nan"), float("nan"), float("nan"), "none", n_a, n_b)
    t = diff / se
    half = stats.t.ppf(1 - ALPHA / 2, df) * se
    return Comparison(diff, diff - half, diff + half, float(2 * stats.t.sf(abs(t), df)), test, n_a, n_b)


def compare(a: Samples, b: Samples) -> Comparison:
    """``a - b`` over seeds: paired t over the seeds both have when they share two or more (``n_a`` and
    ``n_b`` are then the shared count, and ``diff`` the mean paired difference), Welch's t when both
    have two or more but share fewer, and no test (``test == "none"``, the difference of means) when
    either has one."""
    a, b = _clean(a), _clean(b)
    n_a, n_b = len(a), len(b)
    mean_a = sum(a.values()) / n_a if n_a else float("nan")
    mean_b = sum(b.values()) / n_b if n_b else float("nan")
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        diffs = [a[s] - b[s] for s in shared]
        return _t_result(sum(diffs) / len(shared), _sd(diffs) / math.sqrt(len(shared)), len(shared) - 1, "paired t",
                         len(shared), len(shared))
    if n_a < 2 or n_b < 2:
        return Comparison(mean_a - mean_b, float("nan"), float("nan"), float("nan"), "none", n_a, n_b)
    va, vb = _sd(list(a.values())) ** 2 / n_a, _sd(list(b.values())) ** 2 / n_b
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)) if se > 0 else n_a + n_b - 2
    return _t_result(mean_a - mean_b, se, df, "Welch t", n_a, n_b)


def beats(a: Samples, b: Samples) -> bool:
    """``a`` is lower than ``b``: significantly where both can be tested, by the means where not (indicative)."""
    c = compare(a, b)
    if c.testable:
        return c.significant and c.diff < 0
    return math.isfinite(c.diff) and c.diff < 0


@dataclass(frozen=True)
class Rank:
    rank: int  # 1 + the number of entries that beat this one (lower is better)
    tied: bool  # another entry has the same rank: shown "=rank"
    indicative: bool  # some comparison of this entry had a one-seed side: decided by means, not by a test

    def text(self) -> str:
        return f"={self.rank}" if self.tied else str(self.rank)


def ranks(entries: Mapping[str, Samples]) -> dict[str, Rank]:
    """Ranks of ``entries`` (name -> seed -> value, lower is better), ties shared (see the module docstring)."""
    names = [n for n, v in entries.items() if _clean(v)]
    value = {n: 1 + sum(beats(entries[o], entries[n]) for o in names if o != n) for n in names}
    untested = {n: any(not compare(entries[n], entries[o]).testable for o in names if o != n) for n in names}
    counts = {r: list(value.values()).count(r) for r in value.values()}
    return {n: Rank(value[n], counts[value[n]] > 1, untested[n]) for n in names}


def best(entries: Mapping[str, Samples]) -> set[str]:
    """The entries to bold as best: those no other entry beats that themselves beat at least one other
    (so entries that cannot be separated from anything have no bold, and of two that cannot be
    separated from each other neither is bolded over the other)."""
    names = [n for n, v in entries.items() if _clean(v)]
    return {n for n in names if not any(beats(entries[o], entries[n]) for o in names if o != n)
            and any(beats(entries[n], entries[o]) for o in names if o != n)}


def power(delta: float, sd: float, n: int, paired: bool = True) -> float:
    """Probability that the two-sided t test at ``ALPHA`` separates a true difference ``delta`` with
    ``n`` seeds per side, when the per-seed spread is ``sd`` (of the paired differences if
    ``paired``, else of each side's values, Welch with equal spreads)."""
    if n < 2 or sd <= 0 or delta == 0:
        return float("nan") if n < 2 or sd <= 0 else ALPHA
    se, df = (sd / math.sqrt(n), n - 1) if paired else (sd * math.sqrt(2 / n), 2 * (n - 1))
    crit, shift = stats.t.ppf(1 - ALPHA / 2, df), abs(delta) / se
    wrong_side = float(stats.nct.cdf(-crit, df, shift))  # below 1e-9 once it matters; scipy returns NaN far out
    return float(stats.nct.sf(crit, df, shift)) + (wrong_side if math.isfinite(wrong_side) else 0.0)


def seeds_needed(delta: float, sd: float, target: float = 0.8, paired: bool = True, most: int = 1000) -> int | None:
    """The fewest seeds per side for which ``power(delta, sd, n, paired)`` reaches ``target``; None beyond ``most``."""
    for n in range(2, most + 1):
        if power(delta, sd, n, paired) >= target:
            return n
    return None
