"""Reports that cannot mislead: what is bold, what is marked, what is merged, what is pending, the
worst-case verdict, and figures readable at a paper's column width. Hand-written run directories
(tests/report_fixtures.py), no training but one tiny synthetic run checking what a run records for the report."""
from __future__ import annotations

import itertools
import os
import sys
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Patch
from scipy import stats

import msbench
from msbench.cli import main as cli_main
from msbench.defenses.mad import MAD
from msbench.registry import ATTACKS, DEFENSES
from msbench.report import figures as figs
from msbench.report import load_runs, render_report
from msbench.report.labels import attack_label, defense_colour, defense_label, order_defenses
from msbench.report.load import settings_id
from msbench.report.runs import DEFAULT_TOLERANCE
from msbench.report.tables import all_tables
from msbench.report.verdict import worst_case
from msbench.runner.presentation import presentation as suite_presentation
from msbench.runner.suite import load_suite
from tests.conftest import synthetic_suite, unregister
from tests.report_fixtures import (full_results, full_run, presentation, separated_best, significantly_below, suite_json,
                                   write_run)
from tests.test_report import parse_number, parse_tables

PDFFONTS = shutil.which("pdffonts")


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """Two datasets x seven defenses x two attacks x two label modes x two seeds; InI's FashionMNIST victims collapsed."""
    return full_run(tmp_path_factory.mktemp("full") / "run")


@pytest.fixture(scope="module")
def full_tex(full, tmp_path_factory) -> dict:
    out = render_report(full, out=tmp_path_factory.mktemp("full_report"), formats="latex")
    return {"text": (out / "tables.tex").read_text(), "tables": parse_tables((out / "tables.tex").read_text())}


# -- bold and collapse ----------------------------------------------------------------------------
def test_bold_only_defenses_within_tolerance_of_vanilla(full, full_tex):
    clone = full_tex["tables"]["clone-knockoff-smallcnn"]
    results = pd.read_csv(full / "results.csv")
    bolded = 0
    for j, (dataset, mode) in enumerate([("mnist", "soft"), ("mnist", "hard"), ("fashionmnist", "soft"), ("fashionmnist", "hard")]):
        cells = {label: parse_number(row[j]) for label, row in clone["rows"].items()}
        bold = {label for label, c in cells.items() if c[3]}
        frame = results[(results["dataset"] == dataset)]
        benign = frame.drop_duplicates(["defense", "seed"]).groupby("defense")["benign_acc"].mean()
        eligible = {defense_label(d): d for d, b in benign.items() if d != "vanilla" and b >= benign["vanilla"] - DEFAULT_TOLERANCE}
        column = frame[(frame["attack"] == "knockoff") & (frame["label_mode"] == mode)].sort_values("seed")
        samples = {label: dict(zip(column.loc[column["defense"] == d, "seed"], column.loc[column["defense"] == d, "clone_acc"]))
                   for label, d in eligible.items()}
        assert bold == separated_best(samples)
        bolded += len(bold)
        if dataset == "fashionmnist":  # InI's victims collapsed to 8.5%: lowest clone accuracy, never bold, marked
            assert min(float(c[0]) for c in cells.values()) < min(float(cells[label][0]) for label in eligible)
            for label in ("InI", "InI + MAD", "InI + AM"):
                assert row_cell(clone, label, j).endswith(r"$^\dagger$") and not cells[label][3]
        assert "Vanilla" not in bold
    assert bolded  # the fixture's defenses are far enough apart for two seeds to separate some
    benign_table = full_tex["tables"]["benign-smallcnn"]
    assert benign_table["rows"]["InI"][1].endswith(r"$^\dagger$") and not benign_table["rows"]["InI"][0].endswith(r"$^\dagger$")


def row_cell(table: dict, label: str, j: int) -> str:
    return table["rows"][label][j]


def test_vanilla_never_bold_and_tolerance_from_the_suite(tmp_path):
    results, _ = full_results(datasets=("mnist",), defenses=("vanilla", "mad", "edm"), attacks=("knockoff",), modes=("soft",),
                              seeds=(0,), collapsed=())
    results.loc[results["defense"] == "vanilla", ["clone_acc", "benign_acc"]] = [48.0, 95.0]  # Vanilla lowest: still not bold
    results.loc[results["defense"] == "mad", ["clone_acc", "benign_acc"]] = [50.0, 94.5]  # 0.5 below Vanilla
    results.loc[results["defense"] == "edm", ["clone_acc", "benign_acc"]] = [60.0, 93.0]  # 2.0 below Vanilla
    results["relative_perf"] = results["clone_acc"] / results["benign_acc"]
    # one seed: bold is indicative, by the means, and needs two eligible defenses to separate
    for tolerance, bold_row, marked in [(None, None, {"EDM"}), (3.0, "MAD", set()), (0.1, None, {"MAD", "EDM"})]:
        suite = suite_json("t", ["mnist"], ["vanilla", "mad", "edm"], ["knockoff"], ["soft"], [0], match_benign=tolerance)
        run = write_run(tmp_path / f"run{tolerance}", results, suite=suite)
        tex = parse_tables((render_report(run, out=tmp_path / f"rep{tolerance}", formats="latex") / "tables.tex").read_text())
        column = {label: row[0] for label, row in tex["clone-knockoff-smallcnn"]["rows"].items()}
        assert {label for label, c in column.items() if c.startswith(r"\textbf")} == ({bold_row} if bold_row else set())
        assert {label for label, c in column.items() if r"\dagger" in c} == marked


def test_collapsed_victims_marked_in_every_figure(full):
    tables = load_runs(full)
    palette = figs.defense_palette(tables.defenses())
    collapsed = {("fashionmnist", "smallcnn", d) for d in ("ini", "ini+mad", "ini+am")}
    marks = {"collapsed": collapsed, "tolerance": 1.0}
    bars = figs.clone_accuracy(tables.results, palette, **marks)
    fashion = [ax for ax in bars.axes if ax.get_title() == "FashionMNIST"][0]
    hatched = [p for p in fashion.patches if p.get_hatch()]
    assert len(hatched) == 3 * 2 and {p.get_facecolor()[:3] for p in hatched} == {
        tuple(int(palette[d][i:i + 2], 16) / 255 for i in (1, 3, 5)) for d in ("ini", "ini+mad", "ini+am")}
    assert not [p for ax in bars.axes if ax.get_title() == "MNIST" for p in ax.patches if p.get_hatch()]
    heat = figs.relative_heatmap(tables.results, **marks)
    texts = [t.get_text() for ax in heat.axes for t in ax.texts]
    assert sum(t.endswith("†") for t in texts) == 3 * 4  # 3 victims x 4 attack settings, FashionMNIST only
    trade = figs.tradeoff(tables.results, palette, reference={("mnist", "smallcnn"): 95.0, ("fashionmnist", "smallcnn"): 78.0}, **marks)
    assert all(any(isinstance(p, Patch) and p.get_facecolor()[:3] != (1, 1, 1) for p in ax.patches) for ax in trade.axes[:2])  # the band
    curves = figs.curves(tables.curves, palette, **marks)
    dashed = {line.get_color() for ax in curves.axes for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert dashed == {palette[d] for d in ("ini", "ini+mad", "ini+am")}


# -- combining runs -------------------------------------------------------------------------------
def _two_runs(tmp_path: Path, budget_b: int, names=("a", "b"), seeds_b=(0,)) -> tuple[Path, Path]:
    base = dict(datasets=("mnist",), defenses=("vanilla", "mad"), attacks=("knockoff",), modes=("soft",), collapsed=())
    a, ca = full_results(seeds=(0,), seed=1, **base)
    b, cb = full_results(seeds=seeds_b, seed=2, tag="b-", budgets={"knockoff": budget_b}, **base)
    b.loc[b["defense"] == "vanilla", "clone_acc"] = 7.0  # far from run a's: averaging them would show a wide interval
    suite = lambda seeds, budget: suite_json("quick", ["mnist"], ["vanilla", "mad"], ["knockoff"], ["soft"], seeds,
                                             budgets={"knockoff": budget})  # noqa: E731
    return (write_run(tmp_path / names[0], a, ca, suite((0,), 4000)),
            write_run(tmp_path / names[1], b, cb, suite(seeds_b, budget_b)))


def test_runs_with_different_settings_are_kept_apart(tmp_path):
    a, b = _two_runs(tmp_path, budget_b=1000)
    tables = load_runs([a, b])
    assert set(tables.results["defense"]) == {"vanilla@a", "vanilla@b", "mad@a", "mad@b"}
    assert tables.kept_apart and "shown apart by run name" in tables.kept_apart[0]
    tex = parse_tables((render_report([a, b], out=tmp_path / "rep", formats="latex") / "tables.tex").read_text())
    rows = tex["clone-knockoff-smallcnn"]["rows"]
    assert set(rows) == {"Vanilla (a)", "Vanilla (b)", "MAD (a)", "MAD (b)"}
    assert all(parse_number(cells[0])[1] is None for cells in rows.values())  # one seed each: nothing averaged
    assert float(parse_number(rows["Vanilla (b)"][0])[0]) == 7.0
    # MAD (a) is compared with Vanilla (a), not with Vanilla (b)
    check = worst_case(tables).set_index("defense")
    assert check.loc["mad@a", "benign_drop"] == pytest.approx(
        tables.results.query("defense == 'vanilla@a'")["benign_acc"].iloc[0] - tables.results.query("defense == 'mad@a'")["benign_acc"].iloc[0])


def test_runs_with_identical_settings_merge_as_seeds(tmp_path):
    a, b = _two_runs(tmp_path, budget_b=4000, seeds_b=(1,))
    tables = load_runs([a, b])
    assert set(tables.results["defense"]) == {"vanilla", "mad"} and not tables.kept_apart
    tex = parse_tables((render_report([a, b], out=tmp_path / "rep", formats="latex") / "tables.tex").read_text())
    values = tables.results.query("defense == 'vanilla'")["clone_acc"]
    mean, ci, _, _ = parse_number(tex["clone-knockoff-smallcnn"]["rows"]["Vanilla"][0])
    assert (mean, ci) == (f"{values.mean():.2f}", f"{stats.t.ppf(0.975, 1) * values.std(ddof=1) / np.sqrt(2):.2f}")


def test_a_setting_added_later_reads_as_the_value_earlier_runs_used(tmp_path, monkeypatch):
    """A suite.json written before a plugin setting (or a dataset's ``union``) existed lacks it: its runs
    merge with runs that set the value they computed with (the plugin's ``former_defaults``) and with no other."""
    a, b = _two_runs(tmp_path, budget_b=4000, seeds_b=(1,))
    old = json.loads((a / "suite.json").read_text())
    del old["attacks"]["knockoff"]["config"]["budget"]
    (a / "suite.json").write_text(json.dumps(old))
    new = json.loads((b / "suite.json").read_text())
    new["datasets"]["mnist"]["union"] = None
    (b / "suite.json").write_text(json.dumps(new))
    assert load_runs([a, b]).kept_apart  # a setting missing with no declared former value: kept apart
    monkeypatch.setattr(ATTACKS.get("knockoff"), "former_defaults", {"budget": 1000})
    assert load_runs([a, b]).kept_apart  # run a computed with 1000, run b with 4000
    monkeypatch.setattr(ATTACKS.get("knockoff"), "former_defaults", {"budget": 4000})
    tables = load_runs([a, b])
    assert not tables.kept_apart and set(tables.results["defense"]) == {"vanilla", "mad"}
    new["datasets"]["mnist"]["union"] = ["mnist", "kmnist-test"]
    (b / "suite.json").write_text(json.dumps(new))
    assert load_runs([a, b]).kept_apart  # a union that is set is a different dataset


def test_same_seed_twice_with_identical_settings_is_not_two_seeds(tmp_path):
    a, b = _two_runs(tmp_path, budget_b=4000, seeds_b=(0,))  # seed 0 in both runs (different cell ids, same settings)
    tables = load_runs([a, b])
    assert len(tables.results) == 2 and (tables.results["run"] == "1").all()  # the later run supersedes


def test_runs_of_the_same_name_with_different_settings_are_refused(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = _two_runs(tmp_path, budget_b=1000, names=("x/quick", "y/quick"))
    with pytest.raises(ValueError, match="different settings in runs of the same name"):
        load_runs([a, b])
    assert cli_main(["report", str(a), str(b), "--out", str(tmp_path / "rep"), "--format", "latex"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mnist/smallcnn/vanilla" in err


# -- partial runs ---------------------------------------------------------------------------------
def test_partial_run_says_so_and_shows_pending_cells(tmp_path):
    results, curves = full_results(datasets=("mnist", "fashionmnist"), defenses=("vanilla", "mad"), attacks=("knockoff", "jbda"),
                                   modes=("soft", "hard"), seeds=(0,), collapsed=())
    done = results[(results["dataset"] == "mnist") & ~((results["defense"] == "mad") & (results["attack"] == "jbda"))].copy()
    done.loc[done.index[0], ["status", "error", "clone_acc"]] = ["failed", "RuntimeError: boom", np.nan]
    suite = suite_json("p", ["mnist", "fashionmnist"], ["vanilla", "mad"], ["knockoff", "jbda"], ["soft", "hard"], [0])
    run = write_run(tmp_path / "run", done, curves, suite)
    tables = load_runs(run)
    progress = tables.progress
    assert (progress.planned, progress.finished, progress.failed, progress.pending) == (16, 5, 1, 10)
    sentence = "Partial run: 16 cells planned, 5 finished, 1 failed, 10 pending."
    out = render_report(run, out=tmp_path / "rep", formats=("html", "latex"))
    html, tex = (out / "index.html").read_text(), (out / "tables.tex").read_text()
    assert sentence in html and sentence in tex
    parsed = parse_tables(tex)
    knockoff = parsed["clone-knockoff-smallcnn"]["rows"]
    assert knockoff["MAD"][2:] == [r"\textit{pending}", r"\textit{pending}"]  # FashionMNIST: planned, not run
    assert parsed["clone-jbda-smallcnn"]["rows"]["MAD"][:2] == [r"\textit{pending}"] * 2
    assert parsed["benign-smallcnn"]["rows"]["Vanilla"][1] == r"\textit{pending}"
    worst = parsed["worst-mnist-smallcnn"]["rows"]
    assert worst["MAD"][2].startswith(r"$\geq$")  # two of four attack settings pending: the worst case may rise, not bold
    assert len(worst["MAD"]) == 6 and "Settings done" not in tex  # no bookkeeping column in a paper's tables
    assert html.count('<td data-sort="" class="pending">pending</td>') >= 10
    assert 'id="pending-cells"' in html
    # a finished run says nothing of the kind
    full = write_run(tmp_path / "full", results, curves, suite)
    assert not load_runs(full).progress.partial
    assert "Partial run" not in (render_report(full, out=tmp_path / "rep2", formats="latex") / "tables.tex").read_text()


# -- the worst-case verdict -----------------------------------------------------------------------
def test_worst_case_is_the_strongest_attack_per_defense(full):
    tables = load_runs(full)
    verdict = worst_case(tables)
    results = tables.ok
    for (dataset, defense), row in verdict.set_index(["dataset", "defense"]).iterrows():
        means = results[(results["dataset"] == dataset) & (results["defense"] == defense)].groupby(["attack", "label_mode"])["clone_acc"].mean()
        assert row["clone_mean"] == pytest.approx(means.max())
        assert (row["attack"], row["label_mode"]) == means.idxmax()
        assert row["settings_finished"] == row["settings_total"] == 4 and row["complete"]
        values = results[(results["dataset"] == dataset) & (results["defense"] == defense) & (results["attack"] == row["attack"])
                         & (results["label_mode"] == row["label_mode"])]["clone_acc"]
        assert row["clone_ci"] == pytest.approx(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    for dataset, group in verdict.groupby("dataset", sort=False):
        standings = list(group["standing"])
        ranked = group[group["standing"] == "ranked"]
        cells = {r.defense: results[(results["dataset"] == dataset) & (results["defense"] == r.defense) & (results["attack"] == r.attack)
                                    & (results["label_mode"] == r.label_mode)] for r in ranked.itertuples()}
        samples = {d: dict(zip(c["seed"], c["clone_acc"])) for d, c in cells.items()}
        beaten = {d: sum(significantly_below(samples[o], samples[d]) for o in samples if o != d) for d in samples}
        assert list(ranked["rank"]) == [1 + beaten[d] for d in ranked["defense"]]  # ties shared, by paired t over seeds
        assert list(ranked["rank"]) == sorted(ranked["rank"])
        assert list(ranked["tied"]) == [list(ranked["rank"]).count(r) > 1 for r in ranked["rank"]]
        assert set(ranked.loc[ranked["best"], "defense"]) == separated_best(samples)
        assert standings == sorted(standings, key=["ranked", "reference", "collapsed", "unchecked"].index)
        assert group.loc[group["defense"] == "vanilla", "standing"].item() == "reference"
    fashion = verdict[verdict["dataset"] == "fashionmnist"]
    assert set(fashion.loc[fashion["standing"] == "collapsed", "defense"]) == {"ini", "ini+mad", "ini+am"}
    pd.testing.assert_frame_equal(msbench.load_results(full, table="worst_case"), verdict)


def test_worst_case_is_the_headline_table(full, full_tex, tmp_path):
    labels = re.findall(r"\\label\{tab:msbench-([^}]*)\}", full_tex["text"])
    assert labels[:2] == ["worst-mnist-smallcnn", "worst-fashionmnist-smallcnn"]
    worst = full_tex["tables"]["worst-mnist-smallcnn"]
    verdict = worst_case(load_runs(full))
    mnist = verdict[verdict["dataset"] == "mnist"]
    assert list(worst["rows"]) == [defense_label(d) for d in mnist["defense"]]
    bold = [label for label, cells in worst["rows"].items() if cells[2].startswith(r"\textbf")]
    assert bold == [defense_label(d) for d in mnist.loc[mnist["best"], "defense"]] and worst["rows"]["Vanilla"][0] == "ref."
    shared = [cells[0] for label, cells in worst["rows"].items() if label in bold]
    assert shared == (["=1"] * len(bold) if len(bold) > 1 else ["1"] * len(bold))  # bold rows share rank 1
    assert "95% confidence interval over seeds (Student t)" in full_tex["text"].split(r"\label{tab:msbench-worst-mnist")[0]
    assert r"\providecommand{\msbenchLegend}" in full_tex["text"]  # the notation, once
    sections = all_tables(load_runs(full))
    assert list(sections)[0] == "worst"
    html = (render_report(full, out=tmp_path / "rep", formats="html") / "index.html").read_text()
    assert html.index('id="worst-mnist-smallcnn"') < html.index('id="benign-smallcnn"') < html.index('id="clone-knockoff-smallcnn"')


def test_label_only_bound_is_stated_where_it_applies(tmp_path):
    for attacks, modes, expected in [(("knockoff", "jbda"), ("soft", "hard"), True), (("knockoff",), ("soft",), False),
                                     (("jbda",), ("hard",), False)]:
        results, curves = full_results(datasets=("mnist",), defenses=("vanilla", "mad"), attacks=attacks, modes=modes, seeds=(0,),
                                       collapsed=())
        run = write_run(tmp_path / "_".join(attacks + modes), results, curves,
                        suite_json("t", ["mnist"], ["vanilla", "mad"], attacks, modes, [0]))
        tex = parse_tables_and_text(render_report(run, out=tmp_path / ("r" + "_".join(attacks + modes)), formats="latex"))
        assert ("label-only bound" in tex["worst-mnist-smallcnn"]) is expected
        if "knockoff" in attacks:
            assert ("label-only bound" in tex["clone-knockoff-smallcnn"]) is expected
        if "jbda" in attacks:
            assert "label-only bound" not in tex["clone-jbda-smallcnn"]


def parse_tables_and_text(out: Path) -> dict[str, str]:
    """Each table's LaTeX with the legend comment above it (a paper's caption is one line; the legend is kept
    for the author as comment lines), by label."""
    text = (out / "tables.tex").read_text()
    blocks = re.findall(r"((?:^% [^\n]*\n)*)\\begin\{table\*?\}(.*?)\\end\{table\*?\}", text, re.S | re.M)
    return {re.search(r"\\label\{tab:msbench-([^}]*)\}", body).group(1): comment.replace("\n% ", " ") + body
            for comment, body in blocks}


def test_worst_case_per_budget_when_an_attack_ran_at_several(tmp_path):
    a, b = _two_runs(tmp_path, budget_b=1000)  # KnockoffNets at 4,000 queries in run a, at 1,000 in run b
    verdict = worst_case(load_runs([a, b]))
    assert sorted(verdict["budget"].unique()) == [1000, 4000]
    assert set(verdict.loc[verdict["budget"] == 1000, "defense"]) == {"vanilla@b", "mad@b"}
    tex = parse_tables_and_text(render_report([a, b], out=tmp_path / "rep", formats="latex"))
    assert {"worst-mnist-smallcnn-1000-0", "worst-mnist-smallcnn-4000-0"} <= set(tex)
    unsplit = worst_case(load_runs(a))
    assert unsplit["budget"].isna().all()


# -- plugins declare how they are shown -----------------------------------------------------------
def test_labels_colours_and_order_come_from_the_plugins(monkeypatch):
    monkeypatch.setattr(MAD, "label", "MAD-x")
    monkeypatch.setattr(MAD, "color", "#123456")
    assert defense_label("ini+mad") == "InI + MAD-x" and defense_label("mad@run2") == "MAD-x (run2)"
    assert figs.defense_palette(["mad", "vanilla"])["mad"] == "#123456"
    monkeypatch.setattr(MAD, "paper_order", 9)
    assert order_defenses(["mad", "ini", "vanilla", "zzz"]) == ["vanilla", "ini", "mad", "zzz"]

    @msbench.register_defense("report_test_defense")
    class Plain(msbench.DEFENSES.get("vanilla")):
        """A defense that declares nothing about its display."""
        label, color, paper_order = "", None, None

    try:
        assert defense_label("report_test_defense") == "report_test_defense"
        assert order_defenses(["report_test_defense", "vanilla", "unknown_thing"]) == ["vanilla", "report_test_defense", "unknown_thing"]
        palette = figs.defense_palette(["vanilla", "report_test_defense", "unknown_thing"])
        assert len(set(palette.values())) == 3 and palette["report_test_defense"] in figs.SPARE_COLOURS
    finally:
        unregister(DEFENSES, "report_test_defense")
    assert attack_label("knockoff") == "KnockoffNets" and attack_label("not_an_attack") == "not_an_attack"


def _recorded_run(path: Path, recorded: dict | None) -> Path:
    """Vanilla, MAD and ``ghost`` (a defense no plugin here registers) under KnockoffNets; suite.json with
    ``recorded`` as its presentation section (None: a run recorded before the section existed)."""
    results, _ = full_results(datasets=("mnist",), defenses=("vanilla", "mad", "ghost"), attacks=("knockoff",),
                              modes=("soft",), seeds=(0,), collapsed=())
    suite = suite_json("p", ["mnist"], ["vanilla", "mad", "ghost"], ["knockoff"], ["soft"], [0])
    if recorded is not None:
        suite["presentation"] = recorded
    return write_run(path, results, suite=suite)


RECORDED = presentation(
    defenses={"vanilla": {"label": "Plain", "paper_order": 0, "reference": True, "color": "#999999"},
              "mad": {"label": "MAD as run", "paper_order": 5, "default_base": "vanilla", "color_over_base": "#0072B2"},
              "ghost": {"label": "Ghost Defense", "paper_order": 1, "color": "#123456"}},
    attacks={"knockoff": {"label": "Knockoff as run", "paper_order": 0, "roles": ["surrogate"]}})


def test_a_report_shows_the_labels_and_order_its_run_recorded(tmp_path):
    """suite.json's presentation, not the plugins installed here: a label recorded for a plugin no one
    registered here shows, a recorded label wins over the live plugin's, the recorded paper order sorts."""
    assert "ghost" not in DEFENSES and MAD.label == "MAD" and ATTACKS.get("knockoff").label == "KnockoffNets"
    run = _recorded_run(tmp_path / "run", RECORDED)
    out = render_report(run, out=tmp_path / "rep", formats="latex,html")
    tex, page = (out / "tables.tex").read_text(), (out / "index.html").read_text()
    clone = parse_tables(tex)["clone-knockoff-smallcnn"]
    assert list(clone["rows"]) == ["Plain", "Ghost Defense", "MAD as run"]  # the recorded paper order
    for text in (tex, page):
        assert "Ghost Defense" in text and "MAD as run" in text and "Knockoff as run" in text
        assert "KnockoffNets" not in text and "MAD &" not in text and "MAD</" not in text
    assert "ghost" not in tex.replace("Ghost Defense", "")  # (the page also shows the suite's settings, raw names)
    assert defense_label("ini+mad") == "InI + MAD as run" and defense_colour("ghost") == "#123456"
    assert defense_colour("ini+mad") == "#0072B2"
    unrecorded = suite_json("p", ["mnist"], ["vanilla", "mad"], ["knockoff"], ["soft"], [0])
    assert settings_id(json.loads((run / "suite.json").read_text()), "mnist", "smallcnn", "mad", "knockoff") == \
        settings_id(unrecorded, "mnist", "smallcnn", "mad", "knockoff")  # the section is no setting


def test_a_run_recorded_before_the_presentation_section_reads_the_plugins(tmp_path):
    """A suite.json without the section shows what the installed plugins declare, and raw names for
    the rest; loading it replaces what an earlier report's runs recorded."""
    load_runs(_recorded_run(tmp_path / "new", RECORDED))
    assert defense_label("mad") == "MAD as run"
    out = render_report(_recorded_run(tmp_path / "old", None), out=tmp_path / "rep", formats="latex")
    assert list(parse_tables((out / "tables.tex").read_text())["clone-knockoff-smallcnn"]["rows"]) == \
        ["Vanilla", "MAD", "ghost"]
    assert defense_label("mad") == "MAD" and attack_label("knockoff") == "KnockoffNets"
    tables = load_runs([_recorded_run(tmp_path / "old", None), _recorded_run(tmp_path / "new", RECORDED)])
    assert tables.presentation["defenses"]["ghost"]["label"] == "Ghost Defense"
    assert defense_label("ghost") == "Ghost Defense" and defense_label("edm") == "EDM"  # recorded, else live


# -- figures --------------------------------------------------------------------------------------
def _draw(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _overlaps(boxes) -> list:
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_curve_panels_have_readable_log_axes_for_every_attack(full):
    tables = load_runs(full)
    fig = figs.curves(tables.curves, figs.defense_palette(tables.defenses()))
    renderer = _draw(fig)
    ylabels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert [label.split("\n")[0] for label in ylabels] == ["KnockoffNets soft", "KnockoffNets hard", "JBDA soft", "JBDA hard"]
    logs = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(logs) == 4  # JBDA's 150..4,800 queries span 1.5 decades
    for ax in fig.axes:
        low, high = ax.get_xlim()
        labels = [t for t in ax.get_xticklabels(which="both") if t.get_text() and low <= t.get_position()[0] <= high]
        assert 2 <= len(labels) and not _overlaps([t.get_window_extent(renderer) for t in labels]), ax.get_ylabel()


def test_figures_fit_a_column_and_their_legends_fit_the_figure(full):
    tables = load_runs(full)
    palette = figs.defense_palette(tables.defenses())
    for name, (_, build) in figs.FIGURES.items():
        fig = build(tables, palette)
        if fig is None:
            continue
        renderer = _draw(fig)
        assert fig.get_figwidth() <= figs.COLUMN_WIDTH + 1e-9, name  # two datasets: one column
        width = fig.bbox.width
        for legend in fig.legends:
            box = legend.get_window_extent(renderer)
            assert box.x0 >= -1 and box.x1 <= width + 1, name
        sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
                 if t.get_text().strip() and t.get_visible()]
        assert min(sizes) >= 5.5 and max(sizes) <= 9, name


def test_tradeoff_legend_order_markers_and_axes(full):
    tables = load_runs(full)
    palette = figs.defense_palette(tables.defenses())
    reference = {("mnist", "smallcnn"): 95.0, ("fashionmnist", "smallcnn"): 78.0}
    fig = figs.tradeoff(tables.results, palette, collapsed={("fashionmnist", "smallcnn", "ini")}, reference=reference)
    renderer = _draw(fig)
    top = max(fig.legends, key=lambda legend: legend.get_window_extent(renderer).y0)
    assert all(isinstance(h, Patch) for h in top.legend_handles)  # defenses by colour alone: no marker to clash with attacks
    entries = sorted(((t.get_window_extent(renderer).y0, t.get_window_extent(renderer).x0, t.get_text()) for t in top.get_texts()),
                     key=lambda e: (-round(e[0]), e[1]))
    assert [text for _, _, text in entries] == [defense_label(d) for d in order_defenses(tables.results["defense"])]  # reads row by row
    markers = {c.get_paths()[0].vertices.tobytes() for ax in fig.axes for c in ax.collections}
    assert len(markers) == 3  # circle, triangle and the pinned left-pointing triangle; no square
    for ax, dataset in zip(fig.axes, ["mnist", "fashionmnist"]):
        low, high = ax.get_xlim()
        shown = tables.ok[(tables.ok["dataset"] == dataset) & (tables.ok["benign_acc"] > low)]
        benign = shown.groupby("defense")["benign_acc"].mean()
        # the points use the axis, not one corner of it: no wider than their spread or the tolerance band needs
        assert high - low <= 2 * max(benign.max() - benign.min(), 2 * 1.0) + 1.0
        every = tables.ok[tables.ok["dataset"] == dataset]  # pinned points included
        clone = every.groupby(["defense", "attack", "label_mode"])["clone_acc"].mean()
        y_low, y_high = ax.get_ylim()
        assert (clone.max() - clone.min()) / (y_high - y_low) > 0.6


@pytest.mark.skipif(PDFFONTS is None, reason="pdffonts not installed (apt-get install poppler-utils)")
def test_pdf_figures_embed_truetype_fonts(full, tmp_path):
    out = render_report(full, out=tmp_path / "rep", formats="pdf")
    pdfs = sorted((out / "figures").glob("*.pdf"))
    assert len(pdfs) == 4
    for pdf in pdfs:
        listing = subprocess.run([PDFFONTS, str(pdf)], capture_output=True, text=True, check=True).stdout
        rows = listing.splitlines()[2:]
        assert rows and all("TrueType" in row for row in rows) and "Type 3" not in listing, (pdf.name, listing)


# -- rounding -------------------------------------------------------------------------------------
def test_numbers_rounded_where_shown_and_exact_where_stored(tmp_path):
    results, curves = full_results(datasets=("mnist",), defenses=("vanilla", "mad"), attacks=("knockoff",), modes=("soft",),
                                   seeds=(0,), collapsed=())
    results["clone_acc"] = 97.69999980926514
    results["relative_perf"] = results["clone_acc"] / results["benign_acc"]
    results["notes"] = json.dumps({"capped_budget": 1234.5678912345, "fraction": 0.123456789012})
    results["tuned"] = "mad.epsilon=0.3"
    run = write_run(tmp_path / "run", results, curves,
                    suite_json("t", ["mnist"], ["vanilla", "mad"], ["knockoff"], ["soft"], [0]))
    out = render_report(run, out=tmp_path / "rep", formats=("html", "latex"))
    html = (out / "index.html").read_text()
    shown = re.sub(r'data:image/png;base64,[^"]+|data-sort="[^"]*"', "", html.split("<section id=\"environment\">")[0])
    shown += (out / "tables.tex").read_text()
    assert not re.findall(r"\d\.\d{5,}", shown), re.findall(r".{30}\d\.\d{5,}.{10}", shown)
    assert "97.70" in shown and "1234.57" in shown
    assert (pd.read_csv(out / "summary.csv")["clone_mean"] == 97.69999980926514).all()  # stored: full precision
    assert (pd.read_csv(run / "results.csv")["clone_acc"] == 97.69999980926514).all()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
def test_marked_and_partial_tables_compile(full, tmp_path):
    results, curves = full_results(datasets=("mnist",), defenses=("vanilla", "mad"), seeds=(0,), collapsed=())
    partial = write_run(tmp_path / "partial", results.iloc[:3], curves,
                        suite_json("p", ["mnist"], ["vanilla", "mad"], ["knockoff", "jbda"], ["soft", "hard"], [0]))
    for i, run in enumerate((full, partial)):  # collapse marks, CIs, pending cells, worst cases marked >=
        out = render_report(run, out=tmp_path / f"rep{i}", formats="latex")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables_standalone.tex"], cwd=out,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:]
        assert "Unicode character" not in done.stdout


def test_a_combined_report_keeps_every_mark_rank_and_bold_of_the_single_run(tmp_path):
    """A run holding a collapsed defense merged with another run's Vanilla (other settings): every
    defense is still judged against its own run's Vanilla, with the same collapse mark, rank and bold."""
    single = full_run(tmp_path / "a", name="a", datasets=("mnist", "fashionmnist"), seeds=(0, 1, 2))
    other, _ = full_results(datasets=("mnist", "fashionmnist"), defenses=("vanilla",), seeds=(0,), seed=9, tag="b-")
    suite = suite_json("b", ["mnist", "fashionmnist"], ["vanilla"], ["knockoff", "jbda"], ["soft", "hard"], [0])
    suite["run"]["train_subset"] = 3000  # a smaller victim (a smoke run, say): its Vanilla is not run a's
    smoke = write_run(tmp_path / "b", other, suite=suite)
    alone = worst_case(load_runs(single)).set_index(["dataset", "defense"])
    merged = load_runs([single, smoke])
    assert {"vanilla@a", "vanilla@b", "ini@a", "mad@a"} <= set(merged.results["defense"])
    together = worst_case(merged)
    together = together[together["defense"].str.endswith("@a")].assign(defense=lambda f: f["defense"].str.removesuffix("@a"))
    together = together.set_index(["dataset", "defense"])
    columns = ["standing", "rank", "tied", "best", "n", "clone_mean", "benign_drop"]
    pd.testing.assert_frame_equal(together.loc[alone.index, columns], alone[columns])
    assert (alone["standing"] == "collapsed").any() and alone["best"].any()
    tex_alone = parse_tables((render_report(single, out=tmp_path / "r1", formats="latex") / "tables.tex").read_text())
    tex_merged = parse_tables((render_report([single, smoke], out=tmp_path / "r2", formats="latex") / "tables.tex").read_text())
    for table in ("worst-mnist-smallcnn", "worst-fashionmnist-smallcnn"):
        rows = {label.removesuffix(" (a)"): cells for label, cells in tex_merged[table]["rows"].items() if label.endswith(" (a)")}
        assert rows == tex_alone[table]["rows"]


TWO_COLUMN = r"""\documentclass[twocolumn]{article}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
\input{tables.tex}
\end{document}
"""


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
def test_tables_fit_a_two_column_paper(tmp_path):
    """tables.tex dropped into a two-column article compiles with no Overfull hbox: a table wider than a
    column spans both (table*), and one wider than the page is shrunk to the line."""
    run = full_run(tmp_path / "run", datasets=("mnist", "fashionmnist"), attacks=("knockoff", "jbda", "knockoff-avg"),
                   seeds=(0, 1, 2), budgets={"knockoff": 4000, "jbda": 4800, "knockoff-avg": 4000})
    out = render_report(run, out=tmp_path / "rep", formats="latex")
    (out / "paper.tex").write_text(TWO_COLUMN)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    log = (out / "paper.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)[:5]
    tex = (out / "tables.tex").read_text()
    assert r"\begin{table*}" in tex and r"\begin{table}" in tex  # wide tables span, narrow ones stay in a column


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    high, low = sorted([luminance(a), luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_automatic_plugin_colours_read_as_hollow_markers_and_under_hatching():
    from msbench.report.figures.style import HATCH_COLOUR, SPARE_COLOURS

    for colour in SPARE_COLOURS:
        assert _contrast(colour, "#FFFFFF") >= 3.0, colour  # a hollow marker's edge on white
        assert _contrast(colour, HATCH_COLOUR) >= 2.0, colour  # the hatching of a collapsed bar
    palette = figs.defense_palette([f"plugin_{i}" for i in range(8)])
    assert set(palette.values()) <= set(SPARE_COLOURS)


def test_the_report_imports_the_plugins_its_run_recorded(tmp_path):
    """A plugin named in a run's suite.json (next to its suite file) shows with its own label in a report
    rendered by a fresh process that never imported it."""
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "labelled_plugin.py").write_text(
        "from msbench.defenses import OutputDefense\nfrom msbench.registry import register_defense\n\n\n"
        "@register_defense('labelled')\nclass Labelled(OutputDefense):\n    '''Passes answers through.'''\n"
        "    label = 'My Labelled Defense'\n\n    def build(self, base, ctx):\n        return base\n")
    results, _ = full_results(datasets=("mnist",), defenses=("vanilla", "labelled"), attacks=("knockoff",), modes=("soft",),
                              seeds=(0,), collapsed=())
    suite = suite_json("p", ["mnist"], ["vanilla", "labelled"], ["knockoff"], ["soft"], [0])
    suite.update(plugins=["labelled_plugin"], file=str(folder / "p.toml"))
    run = write_run(tmp_path / "run", results, suite=suite)
    done = subprocess.run([sys.executable, "-m", "msbench", "report", str(run), "--out", str(tmp_path / "rep"), "--format", "latex"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert "My Labelled Defense" in (tmp_path / "rep" / "tables.tex").read_text()


def test_a_run_records_how_each_plugin_is_shown(tmp_path, one_thread):
    """suite.json's presentation: every defense with each link of its chain and an output defense's
    default base, the reference, every attack; written by a real run."""
    chains = suite_presentation(load_suite(synthetic_suite(tmp_path, "chains.toml",
                                                           matrix={"defenses": ["ini+mad", "am"]})))
    assert list(chains["defenses"]) == ["vanilla", "ini", "mad", "oe", "am"]
    suite = synthetic_suite(tmp_path, matrix={"defenses": ["mad"], "label_modes": ["soft"]},
                            victim={"epochs": 1}, clone={"epochs": 1})
    msbench.run_suite(suite, data_root=tmp_path / "no-data", out=tmp_path / "run", echo=lambda *_: None, report=False)
    recorded = json.loads((tmp_path / "run" / "suite.json").read_text())["presentation"]
    assert recorded["defenses"]["mad"] == {"label": "MAD", "color": MAD.color, "paper_order": MAD.paper_order,
                                           "reference": False, "ablation_reference": False, "default_base": "vanilla",
                                           "color_over_base": MAD.color_over_base}
    assert recorded["defenses"]["vanilla"]["reference"] and recorded["defenses"]["vanilla"]["label"] == "Vanilla"
    assert recorded["attacks"] == {"knockoff": {"label": "KnockoffNets", "color": None, "paper_order": 0,
                                                "roles": ["surrogate"]}}
