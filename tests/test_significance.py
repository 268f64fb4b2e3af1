"""Verdicts that separate signal from noise: intervals, paired and Welch tests, ranks with ties, bold,
uninformative attacks and the verdict sentences, on small fixed tables whose answers are worked by hand.
"""
from __future__ import annotations

import json
import math

import pytest
from scipy import stats

import msbench
from msbench.config import SuiteError
from msbench.report import render_report
from msbench.report.headline import verdict_sentences
from msbench.report.load import load_runs
from msbench.report.significance import best, compare, interval, power, ranks, seeds_needed
from msbench.report.verdict import per_attack, worst_case
from msbench.runner.suite import parse_suite
from tests.report_fixtures import full_results, suite_json, write_run
from tests.test_report import parse_tables

# -- the statistics, worked by hand ------------------------------------------------------------------


def test_t_interval_by_hand():
    # 10, 12, 14: mean 12, sd 2, se 2/sqrt(3); t(0.975, 2) = 4.3027 (the printed table's 4.303)
    spread = interval({0: 10.0, 1: 12.0, 2: 14.0})
    assert (spread.mean, spread.n) == (12.0, 3)
    assert spread.low == pytest.approx(12 - 4.3027 * 2 / math.sqrt(3), abs=1e-3)
    assert spread.high == pytest.approx(12 + 4.3027 * 2 / math.sqrt(3), abs=1e-3)
    one = interval({4: 93.0})
    assert one.n == 1 and one.mean == 93.0 and math.isnan(one.low) and math.isnan(one.high)


def test_paired_t_by_hand():
    # differences -1, -2, -1: mean -4/3, sd 1/sqrt(3), se 1/3, t = -4 with 2 df. Student t with 2 df has
    # the closed form P(T > t) = 1/2 - t / (2 sqrt(2 + t^2)): p = 2 (1/2 - 4 / (2 sqrt(18))) = 0.0572
    c = compare({0: 10.0, 1: 12.0, 2: 14.0}, {0: 11.0, 1: 14.0, 2: 15.0})
    assert c.test == "paired t" and c.diff == pytest.approx(-4 / 3)
    assert c.p == pytest.approx(2 * (0.5 - 4 / (2 * math.sqrt(18))), abs=1e-4) and not c.significant
    assert (c.low, c.high) == pytest.approx((-4 / 3 - 4.3027 / 3, -4 / 3 + 4.3027 / 3), abs=1e-3)
    # differences -3, -4, -3.5: t = -3.5 / (0.5 / sqrt(3)) = -12.12, p = 2 (1/2 - 12.12 / (2 sqrt(2 + 12.12^2))) = 0.0067
    c = compare({0: 10.0, 1: 12.0, 2: 14.0}, {0: 13.0, 1: 16.0, 2: 17.5})
    t = 3.5 / (0.5 / math.sqrt(3))
    assert c.p == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(2 + t * t))), abs=1e-4) and c.significant
    # pairing matters: the same values unpaired (Welch) do not separate
    unpaired = compare({0: 10.0, 1: 12.0, 2: 14.0}, {3: 13.0, 4: 16.0, 5: 17.5})
    assert unpaired.test == "Welch t" and not unpaired.significant


def test_welch_t_by_hand():
    # a = 1, 3 (mean 2, var 2, n 2); b = 5, 7, 9 (mean 7, var 4, n 3): se^2 = 2/2 + 4/3 = 7/3,
    # df = (7/3)^2 / (1^2 / 1 + (4/3)^2 / 2) = 2.882, t = -5 / sqrt(7/3)
    c = compare({0: 1.0, 1: 3.0}, {2: 5.0, 3: 7.0, 4: 9.0})
    se, df = math.sqrt(7 / 3), (7 / 3) ** 2 / (1 + (4 / 3) ** 2 / 2)
    assert c.test == "Welch t" and c.diff == -5.0
    assert c.p == pytest.approx(2 * stats.t.sf(5 / se, df), rel=1e-9)
    assert c.high - c.diff == pytest.approx(stats.t.ppf(0.975, df) * se, rel=1e-9)
    assert c.p == pytest.approx(stats.ttest_ind([1, 3], [5, 7, 9], equal_var=False).pvalue, rel=1e-9)


def test_one_seed_is_never_significant():
    c = compare({0: 10.0}, {0: 90.0})
    assert c.test == "none" and not c.testable and not c.significant and math.isnan(c.p) and c.diff == -80.0


def test_overlapping_defenses_share_a_rank_and_neither_is_bold():
    a, b = {0: 50.0, 1: 55.0, 2: 52.0}, {0: 53.0, 1: 51.0, 2: 54.0}  # intervals overlap, no paired difference
    far = {0: 80.0, 1: 82.0, 2: 81.0}
    shared = ranks({"a": a, "b": b})
    assert shared["a"].rank == shared["b"].rank == 1 and shared["a"].tied and shared["a"].text() == "=1"
    assert best({"a": a, "b": b}) == set()  # neither is bolded over the other
    three = ranks({"a": a, "b": b, "far": far})
    assert (three["a"].text(), three["b"].text(), three["far"].text()) == ("=1", "=1", "3")
    assert best({"a": a, "b": b, "far": far}) == {"a", "b"}  # both separable from the third: they share the bold


def test_bold_needs_beating_someone_not_only_being_unbeaten():
    b, c = {0: 10.0, 1: 11.0, 2: 12.0}, {0: 30.0, 1: 31.5, 2: 32.0}  # b below c on every seed: p = 0.0004
    a = {0: 5.0, 1: 40.0, 2: 20.0}  # so spread out that it separates from neither
    assert compare(b, c).significant and not compare(a, b).significant and not compare(a, c).significant
    ranked = ranks({"a": a, "b": b, "c": c})
    assert (ranked["a"].rank, ranked["b"].rank, ranked["c"].rank) == (1, 1, 2)  # a is unbeaten, but beats nobody
    assert best({"a": a, "b": b, "c": c}) == {"b"}


def test_pairs_on_the_seeds_both_have_and_refuses_to_test_no_spread():
    # seed 2 failed for b: the paired test runs on seeds 0 and 1 (differences -2, -2.5 ... -3)
    c = compare({0: 10.0, 1: 12.0, 2: 14.0, 3: 9.0}, {0: 12.0, 1: 14.5, 3: 12.0})
    assert c.test == "paired t" and (c.n_a, c.n_b) == (3, 3) and c.diff == pytest.approx((-2 - 2.5 - 3) / 3)
    same = compare({0: 10.0, 1: 12.0}, {0: 11.0, 1: 13.0})  # every seed differs by exactly 1: no spread, no test
    assert same.test == "none" and not same.significant and same.diff == -1.0
    assert power(0.0, 1.0, 5) == pytest.approx(0.05)  # no true difference: the test's false-positive rate


def test_power_and_seeds_needed_match_the_textbook():
    # Cohen's tables: a paired t test needs 10 pairs for effect size 1 at 80% power (0.80), a two-sample
    # t test 17 per group
    assert seeds_needed(5.0, 5.0, paired=True) == 10 and 0.80 <= power(5.0, 5.0, 10) < 0.82
    assert seeds_needed(5.0, 5.0, paired=False) == 17
    assert seeds_needed(5.0, 1.0) == 3 and power(5.0, 1.0, 2) < 0.8
    assert power(5.0, 0.41, 3) > 0.999 and seeds_needed(5.0, 0.67) == 3  # far out in the tail scipy's lower tail is NaN


# -- the report on small fixed tables ------------------------------------------------------------------


def _table(tmp_path, values: dict, seeds=(0, 1, 2), match_benign=1.0, report=None, name="run"):
    """A run with one attack (soft), Vanilla and the defenses of ``values`` (defense -> clone per seed), benign 95."""
    defenses = list(values)
    results, _ = full_results(datasets=("mnist",), defenses=defenses, attacks=("knockoff",), modes=("soft",), seeds=seeds,
                              collapsed=(), tag=name)
    results["benign_acc"] = 95.0
    for defense, clones in values.items():
        for seed, clone in zip(seeds, clones):
            results.loc[(results["defense"] == defense) & (results["seed"] == seed), "clone_acc"] = clone
    results = results.dropna(subset=["clone_acc"])
    results["relative_perf"] = results["clone_acc"] / results["benign_acc"]
    suite = suite_json(name, ["mnist"], defenses, ["knockoff"], ["soft"], list(seeds), match_benign=match_benign)
    if report is not None:
        suite["report"] = report
    return write_run(tmp_path / name, results, suite=suite)


def test_worst_case_ties_share_a_rank_in_the_api_the_latex_and_the_html(tmp_path):
    run = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [60, 65, 62], "am": [63, 61, 64], "edm": [80, 82, 81]})
    verdict = worst_case(load_runs(run)).set_index("defense")
    assert list(verdict.loc[["mad", "am", "edm"], "rank"]) == [1, 1, 3]
    assert list(verdict.loc[["mad", "am"], "tied"]) == [True, True] and set(verdict.index[verdict["best"]]) == {"mad", "am"}
    assert verdict.loc["mad", "n"] == 3 and verdict.loc["mad", "vs_reference_test"] == "paired t"
    low, high = stats.t.interval(0.95, 2, loc=(60 + 65 + 62) / 3, scale=stats.sem([60, 65, 62]))
    assert (verdict.loc["mad", "ci_low"], verdict.loc["mad", "ci_high"]) == pytest.approx((low, high))
    assert msbench.load_results(run, table="worst_case").set_index("defense").loc["am", "ci_high"] == verdict.loc["am", "ci_high"]
    out = render_report(run, out=tmp_path / "rep", formats=("latex", "html"))
    rows = parse_tables((out / "tables.tex").read_text())["worst-mnist-smallcnn"]["rows"]
    assert [rows[d][0] for d in ("MAD", "AM", "EDM", "Vanilla")] == ["=1", "=1", "3", "ref."]
    assert rows["MAD"][2].startswith(r"\textbf") and rows["AM"][2].startswith(r"\textbf") and not rows["EDM"][2].startswith(r"\textbf")
    assert rows["MAD"][3] == "3" and rows["MAD"][4].startswith("$-$")  # n, and the difference from Vanilla with its interval
    html = (out / "index.html").read_text()
    assert ">=1</td>" in html and "n = 3" in html


def test_the_api_tables_per_attack_and_verdict(tmp_path):
    run = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [60, 65, 62], "am": [89, 93, 90]})
    cells = msbench.load_results(run, table="per_attack").set_index("defense")
    low, high = stats.t.interval(0.95, 2, loc=(89 + 93 + 90) / 3, scale=stats.sem([89, 93, 90]))
    assert (cells.loc["am", "ci_low"], cells.loc["am", "ci_high"], cells.loc["am", "n"]) == pytest.approx((low, high, 3))
    assert set(cells.index[cells["best"]]) == {"mad"} and cells.loc["vanilla", "standing"] == "reference"
    sentences = msbench.load_results(run, table="verdict")["sentence"]
    assert list(sentences) == verdict_sentences(load_runs(run))


def test_a_label_mode_without_vanilla_says_so(tmp_path):
    run = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [60, 65, 62]})
    results = load_runs(run).results
    results = results[~((results["defense"] == "vanilla") & (results["label_mode"] == "soft"))]
    write_run(tmp_path / "cut", results.drop(columns=["run", "settings"]))
    sentence = verdict_sentences(load_runs(tmp_path / "cut"))[0]
    assert "no Vanilla in this label mode to compare with" in sentence
    assert "(n = 3" in sentence and "no finished seed" not in sentence  # MAD's three seeds did finish


def test_a_defense_kept_apart_alone_is_still_judged_against_the_merged_vanilla(tmp_path):
    first = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [60, 65, 62]}, name="ra")
    second = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [61, 66, 63]}, seeds=(3, 4, 5), name="rb")
    suite = json.loads((second / "suite.json").read_text())
    suite["defenses"]["mad"]["config"] = {"epsilon": 0.9}  # MAD's settings differ between runs, Vanilla's do not
    (second / "suite.json").write_text(json.dumps(suite))
    tables = load_runs([first, second])
    assert {"vanilla", "mad@ra", "mad@rb"} == set(tables.results["defense"])
    verdict = worst_case(tables).set_index("defense")
    assert verdict.loc["mad@ra", "standing"] == "ranked" and verdict.loc["mad@ra", "vs_reference_test"] == "paired t"  # seeds 0-2


def test_one_seed_table_says_n_1_and_ranks_indicatively(tmp_path):
    run = _table(tmp_path, {"vanilla": [90], "mad": [60], "am": [63]}, seeds=(0,))
    tex = (render_report(run, out=tmp_path / "rep", formats="latex") / "tables.tex").read_text()
    assert "n = 1: one seed per cell, so no interval and no test" in tex
    verdict = worst_case(load_runs(run)).set_index("defense")
    assert verdict.loc["mad", "indicative"] and verdict.loc["mad", "rank"] == 1 and verdict.loc["am", "rank"] == 2
    assert math.isnan(verdict.loc["mad", "ci_low"])
    assert "no test (one seed, or no spread over seeds): no defense is separable from Vanilla" in verdict_sentences(load_runs(run))[0]


def test_mixed_seed_counts_are_marked_never_averaged_silently(tmp_path):
    run = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [60, float("nan"), float("nan")], "am": [63, 61, 64]})
    verdict = worst_case(load_runs(run)).set_index("defense")
    assert verdict["n_differs"].all() and verdict.loc["mad", "n"] == 1 and verdict.loc["am", "n"] == 3
    assert "n differs between rows" in verdict_sentences(load_runs(run))[0]
    tex = (render_report(run, out=tmp_path / "rep", formats="latex") / "tables.tex").read_text()
    assert "n differs between rows (1-3 seeds" in tex
    clone = parse_tables(tex)["clone-knockoff-smallcnn"]["rows"]
    assert clone["MAD"][0].removesuffix("}").endswith("$_{n=1}$") and clone["AM"][0].removesuffix("}").endswith("$_{n=3}$")


def test_verdict_sentence_names_what_is_separable_from_vanilla(tmp_path):
    run = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [60, 65, 62], "am": [89, 93, 90]})
    sentence = verdict_sentences(load_runs(run))[0]
    diff = compare({0: 60, 1: 65, 2: 62}, {0: 90, 1: 91, 2: 92})
    assert sentence.startswith("MNIST, soft labels (n = 3; paired t): MAD (")
    assert f"{diff.diff:+.2f} points [{diff.low:+.2f}, {diff.high:+.2f}]" in sentence and "AM is not separable" in sentence
    none = _table(tmp_path, {"vanilla": [90, 91, 92], "mad": [89, 93, 90]}, name="none")
    assert "no defense is separable from Vanilla under its worst case" in verdict_sentences(load_runs(none))[0]


def test_uninformative_column_is_flagged_and_bolds_nothing(tmp_path):
    values = {"vanilla": [30, 31, 32], "mad": [10, 11, 12], "am": [25, 26, 24]}  # Vanilla's clone at 0.33 of 95%
    run = _table(tmp_path, values)
    table = per_attack(load_runs(run)).set_index("defense")
    assert table["uninformative"].all() and not table["best"].any()
    assert table.loc["mad", "rank"] == 1 and table.loc["mad", "n"] == 3  # still ranked, never bold
    out = render_report(run, out=tmp_path / "rep", formats=("latex", "html"))
    tex = parse_tables((out / "tables.tex").read_text())
    assert tex["clone-knockoff-smallcnn"]["leaves"] == ["soft-label °"]
    assert not any(c.startswith(r"\textbf") for row in tex["clone-knockoff-smallcnn"]["rows"].values() for c in row)
    assert not any(row[2].startswith(r"\textbf") for row in tex["worst-mnist-smallcnn"]["rows"].values())
    assert worst_case(load_runs(run))["uninformative"].all()  # it still counts in the worst case
    assert "uninformative (clone of Vanilla below 0.5 of its benign accuracy): KnockoffNets 0.33" in verdict_sentences(load_runs(run))[0]
    assert 'class="uninformative"' in (out / "index.html").read_text()
    # the same table with the threshold lowered under [report]: informative, MAD bold
    lowered = _table(tmp_path, values, report={"uninformative_below": 0.3}, name="lowered")
    table = per_attack(load_runs(lowered)).set_index("defense")
    assert not table["uninformative"].any() and set(table.index[table["best"]]) == {"mad"}


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2])
def test_report_threshold_outside_0_1_is_one_line(value):
    raw = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"]},
           "report": {"uninformative_below": value}}
    with pytest.raises(SuiteError, match=r"report\.uninformative_below: expected a relative performance strictly between 0 and 1"):
        parse_suite(raw, "s.toml")


def test_duplicate_seeds_are_one_line():
    raw = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"],
                      "seeds": [0, 1, 0]}}
    with pytest.raises(SuiteError, match=r"matrix\.seeds"):
        parse_suite(raw, "s.toml")


def test_the_threshold_reaches_suite_json():
    raw = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"]},
           "report": {"uninformative_below": 0.4}}
    assert parse_suite(raw, "s.toml").resolved()["report"] == {"uninformative_below": 0.4}


def test_a_run_of_vanilla_alone_says_there_is_nothing_to_compare(tmp_path):
    run = _table(tmp_path, {"vanilla": [90, 91, 92]})
    assert verdict_sentences(load_runs(run)) == [
        "MNIST, soft labels (n = 3): Vanilla 91.00 under its worst case; no defense in these runs to compare."]
