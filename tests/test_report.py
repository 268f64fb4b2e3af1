"""The report: rendered from a real (tiny) run's tables, numbers parsed back from LaTeX, HTML opened in
headless Chromium, LaTeX compiled with pdflatex; hand-written tables for the cases a tiny run lacks
(several defenses, failed cells, ablation rows, timing)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import msbench
from msbench.cli import main as cli_main
from msbench.report import load_runs, plot_inference_time, render_report
from msbench.report.latex import escape
from msbench.runner.results import CURVE_COLUMNS, RESULT_COLUMNS
from tests.conftest import data_root, tiny_suite
from tests.report_fixtures import separated_best

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PDFLATEX = shutil.which("pdflatex")

SUITE_CHANGES = {
    "name": "report-test",
    "victim": {"epochs": 1},
    "attacks": {"knockoff": {"curve": [100]}},
    "datasets": {"mnist": {"note": "surrogate: EMNIST letters, as in the paper"}},
}


# -- parsing LaTeX back -------------------------------------------------------------------------
NUMBER = re.compile(r"^(?:\\textbf\{)?(\d+\.\d+)(?:\$\\pm\$(\d+\.\d+))?(?: \((\d+\.\d+)\$\\times\$\))?"
                    r"(?:\$\^\\dagger\$)?(?: \((\d+)/(\d+) seeds\))?(?: \$_\{n=(\d+)\}\$)?\}?$")


def parse_tables(tex: str) -> dict[str, dict]:
    """label -> {"leaves": leaf headers, "groups": spanning headers, "rows": {row label: [cells]}}."""
    tables = {}
    for block in re.findall(r"\\begin\{table\*?\}(.*?)\\end\{table\*?\}", tex, re.S):
        label = re.search(r"\\label\{tab:msbench-([^}]*)\}", block).group(1)
        head, body = block.split(r"\midrule")
        head_lines = [line for line in head.split(r"\toprule")[1].strip().splitlines() if line.endswith(r"\\")]
        groups = re.findall(r"\\multicolumn\{(\d+)\}\{c\}\{([^}]*)\}", head_lines[0]) if len(head_lines) > 1 else []
        leaves = [c.strip() for c in head_lines[-1].removesuffix(r"\\").split("&")][1:]
        rows = {}
        for line in body.split(r"\bottomrule")[0].strip().splitlines():
            cells = [c.strip() for c in line.removesuffix(r"\\").split("&")]
            rows[cells[0]] = cells[1:]
        tables[label] = {"leaves": leaves, "groups": [(int(n), g) for n, g in groups], "rows": rows}
    return tables


def parse_number(cell: str) -> tuple[str, str | None, str | None, bool]:
    match = NUMBER.match(cell)
    assert match, f"not a number cell: {cell!r}"
    return match.group(1), match.group(2), match.group(3), cell.startswith(r"\textbf{")


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """A real MNIST run (one seed; several seeds are covered by hand-written tables) rendered by run_suite
    itself; runs once per test session."""
    root = data_root()
    if root is None or not (root / "EMNIST-letters").exists():
        pytest.skip("MNIST and EMNIST-letters not found: set MSBENCH_DATA to the dataset folder")
    base = tmp_path_factory.mktemp("report_run")
    suite = tiny_suite(base, "suite.toml", **SUITE_CHANGES)
    lines: list[str] = []
    frame = msbench.run_suite(suite, data_root=root, out=base / "run", report_dir=base / "report", echo=lines.append)
    return base / "run", base / "report", frame, lines


def _row(**kw):
    base = dict(dataset="mnist", arch="smallcnn", attack="knockoff", budget=1000, queries=1000, fidelity=90.0,
                status="ok", error="", surrogate="emnist-letters", victim_seconds=1.0, attack_seconds=1.0, notes="")
    return {**base, **kw}


def synthetic_results() -> pd.DataFrame:
    """Hand-written results: 4 defenses (one beyond the paper's), 2 seeds, one failed seed, one failed cell."""
    rng = np.random.default_rng(7)
    rows = []
    for defense in ["ini_iso", "ini", "vanilla", "mad"]:  # deliberately not in the paper's order
        for mode in ["soft", "hard"]:
            for seed in (0, 1):
                benign = 98.0 + rng.random()
                clone = 40.0 + 50.0 * rng.random()
                failed = (defense == "mad" and mode == "hard") or (defense == "ini" and mode == "soft" and seed == 1)
                rows.append(_row(defense=defense, label_mode=mode, seed=seed, benign_acc=np.nan if failed else benign,
                                 clone_acc=np.nan if failed else clone, relative_perf=np.nan if failed else clone / benign,
                                 status="failed" if failed else "ok", error="RuntimeError: out of memory" if failed else "",
                                 cell_id=f"{defense}-{mode}-{seed}"))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def write_run(path: Path, results: pd.DataFrame, curves: pd.DataFrame | None = None, suite: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    results.to_csv(path / "results.csv", index=False)
    (curves if curves is not None else pd.DataFrame(columns=CURVE_COLUMNS)).to_csv(path / "curves.csv", index=False)
    if suite:
        (path / "suite.json").write_text(suite)
    return path


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    results = synthetic_results()
    run = write_run(base / "run", results, suite='{"name": "synthetic", "description": "hand-written tables"}')
    out = render_report(run, out=base / "report", formats=("html", "latex"))
    return results, out


# -- the real run -------------------------------------------------------------------------------
def test_run_suite_renders_the_report(real_run):
    run_dir, report, frame, lines = real_run
    assert (frame["status"] == "ok").all() and len(frame) == 2
    assert any(line.startswith("report: ") for line in lines)
    for name in ("index.html", "tables.tex", "tables_standalone.tex", "summary.csv"):
        assert (report / name).stat().st_size > 0
    for figure in ("clone_accuracy", "relative_performance", "tradeoff", "curves"):
        for suffix in (".png", ".pdf"):
            assert (report / "figures" / f"{figure}{suffix}").stat().st_size > 1000
    assert not list((report / "figures").glob("inference_time.*"))  # no timing.csv: skipped, not drawn empty
    html = (report / "index.html").read_text()
    assert "no timing table" in html and "surrogate: EMNIST letters, as in the paper" in html
    # each record names where its victim trained and its own training time (Vanilla: the whole chain)
    assert frame["victim_device"].str.startswith("cpu: ").all()
    assert (frame["victim_train_seconds"] == frame["victim_seconds"]).all() and (frame["victim_seconds"] > 0).all()
    assert "Training cost (smallcnn)" in html and "1.00×" in html


def test_latex_numbers_equal_the_results_table(real_run):
    run_dir, report, _, _ = real_run
    results = pd.read_csv(run_dir / "results.csv")
    tables = parse_tables((report / "tables.tex").read_text())

    clone = tables["clone-knockoff-smallcnn"]
    assert clone["groups"] == [(2, "MNIST")] and [leaf.removesuffix(" °") for leaf in clone["leaves"]] == ["soft-label", "hard-label"]
    for leaf, cell in zip(clone["leaves"], clone["rows"]["Vanilla"]):
        cell_row = results[results["label_mode"] == leaf.removesuffix(" °").removesuffix("-label")].iloc[0]
        assert leaf.endswith(" °") == (cell_row["relative_perf"] < 0.5)  # uninformative: the clone of Vanilla steals little
        mean, std, rel, _ = parse_number(cell)
        assert (mean, std, rel) == (f"{cell_row['clone_acc']:.2f}", None, f"{cell_row['relative_perf']:.2f}")
        assert abs(float(mean) - cell_row["clone_acc"]) <= 0.005 + 1e-9

    benign = tables["benign-smallcnn"]
    assert benign["leaves"] == ["MNIST"]
    assert results["benign_acc"].nunique() == 1  # one victim serves both label modes
    mean, std, rel, bold = parse_number(benign["rows"]["Vanilla"][0])
    assert (mean, std, rel, bold) == (f"{results['benign_acc'].iloc[0]:.2f}", None, None, False)


def test_report_failure_keeps_the_results(real_run, tmp_path):
    run_dir, _, _, _ = real_run
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    lines: list[str] = []
    before = (run_dir / "results.csv").read_text()
    frame = msbench.run_suite(run_dir.parent / "suite.toml", data_root=data_root(), out=run_dir, report_dir=blocked,
                              echo=lines.append)
    assert "nothing to recompute" in lines[0] and len(frame) == 2
    assert any(line.startswith("warning: report not rendered") for line in lines)
    assert (run_dir / "results.csv").read_text() == before


def _chromium(args: list[str], user_dir: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={user_dir}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def _page_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ("CONSOLE" in line and "index.html" in line) or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_html_opens_in_headless_chromium(real_run, tmp_path):
    _, report, _, _ = real_run
    shot = tmp_path / "report.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", (report / "index.html").resolve().as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
    assert _page_errors(done.stderr) == []
    dom = _chromium(["--dump-dom", (report / "index.html").resolve().as_uri()], tmp_path / "profile")
    sortable = dom.stdout.count('class="sortable')
    assert sortable >= 2 and f'data-sortable-tables="{sortable}"' in dom.stdout  # the script ran to the end
    assert _page_errors(dom.stderr) == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_html_tables_sort_by_a_column(synthetic_report, tmp_path):
    results, report = synthetic_report
    url = (report / "index.html").resolve().as_uri() + "#sort=benign-smallcnn:1:desc"
    dom = _chromium(["--dump-dom", url], tmp_path / "profile")
    assert _page_errors(dom.stderr) == []
    table = dom.stdout.split('id="benign-smallcnn"')[1].split("</table>")[0]
    shown = [float(v) for v in re.findall(r'<tr><td data-sort="[^"]*">[^<]*</td><td data-sort="([\d.]+)"', table)]
    assert len(shown) == 4 and shown == sorted(shown, reverse=True)


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
def test_standalone_latex_compiles(real_run, synthetic_report, tmp_path):
    for i, report in enumerate((real_run[1], synthetic_report[1])):
        work = tmp_path / str(i)
        work.mkdir()
        shutil.copy(report / "tables_standalone.tex", work)
        done = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "tables_standalone.tex"],
                              cwd=work, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:]
        assert (work / "tables_standalone.pdf").stat().st_size > 1000


# -- hand-written tables --------------------------------------------------------------------------
def test_tables_order_aggregate_bold_and_mark_failures(synthetic_report):
    results, report = synthetic_report
    tex = (report / "tables.tex").read_text()
    tables = parse_tables(tex)
    clone = tables["clone-knockoff-smallcnn"]
    assert list(clone["rows"]) == ["Vanilla", "MAD", "InI", r"ini\_iso"]  # paper order, then the others
    ok = results[results["status"] == "ok"]
    for j, mode in enumerate(["soft", "hard"]):
        shown = {}
        for label, defense in [("Vanilla", "vanilla"), ("MAD", "mad"), ("InI", "ini"), (r"ini\_iso", "ini_iso")]:
            cell = clone["rows"][label][j]
            cells = ok[(ok["defense"] == defense) & (ok["label_mode"] == mode)]
            if cells.empty:
                assert cell == "--"  # every seed failed
                continue
            mean, ci, rel, bold = parse_number(cell)
            assert mean == f"{cells['clone_acc'].mean():.2f}" and rel == f"{cells['relative_perf'].mean():.2f}"
            half = stats.t.ppf(0.975, len(cells) - 1) * cells["clone_acc"].std(ddof=1) / np.sqrt(len(cells)) if len(cells) > 1 else None
            assert ci == (f"{half:.2f}" if half is not None else None)  # one seed left: no interval
            assert cell.removesuffix("}" if bold else "").endswith(f"$_{{n={len(cells)}}}$")  # n differs between rows (a failed seed): every cell says its n
            shown[label] = (dict(zip(cells["seed"], cells["clone_acc"])), bold)
        candidates = {label: v for label, (v, _) in shown.items() if label != "Vanilla"}  # Vanilla is never "best"
        assert {label for label, (v, bold) in shown.items() if bold} == separated_best(candidates)

    other = tables["other-mnist-smallcnn"]  # ablation-style table: Vanilla, the extra defenses, InI
    assert list(other["rows"]) == ["Vanilla", r"ini\_iso", "InI"]
    assert other["groups"] == [(2, "KnockoffNets")]

    html = (report / "index.html").read_text()
    failed = results[results["status"] == "failed"]
    assert html.count(">RuntimeError: out of memory</td>") == len(failed) == 3
    assert "ini_iso" in html and r"ini\_iso" not in html


def test_combining_runs_concatenates_tables(tmp_path):
    results = synthetic_results()
    mnist = write_run(tmp_path / "a", results[results["defense"].isin(["vanilla", "ini"])], suite='{"name": "one"}')
    other = results[results["defense"] == "vanilla"].assign(dataset="fashionmnist", cell_id=lambda f: "f-" + f["cell_id"])
    fashion = write_run(tmp_path / "b", other, suite='{"name": "two"}')
    combined = load_runs([mnist, fashion])
    assert combined.name == "one+two" and len(combined.results) == len(results[results["defense"].isin(["vanilla", "ini"])]) + len(other)
    out = render_report([mnist, fashion], out=tmp_path / "report", formats="latex")
    clone = parse_tables((out / "tables.tex").read_text())["clone-knockoff-smallcnn"]
    assert clone["groups"] == [(2, "MNIST"), (2, "FashionMNIST")]
    assert clone["rows"]["InI"][2:] == ["", ""]  # no run covered InI on FashionMNIST: empty, not "--"
    # a cell listed again in a later run supersedes the earlier one
    rerun = results[results["cell_id"] == "vanilla-soft-0"].assign(clone_acc=12.34, relative_perf=0.5)
    again = load_runs([mnist, write_run(tmp_path / "c", rerun)])
    assert again.results.loc[again.results["cell_id"] == "vanilla-soft-0", "clone_acc"].tolist() == [12.34]


def _timing() -> pd.DataFrame:
    rows = []
    for defense, single, batch, model in [("vanilla", 2.0, 0.5, "M_f"), ("mad", 9.0, 6.0, "M_f + C M_b + S"),
                                          ("ini", 2.2, 0.6, "M_f"), ("edm", 5.0, 2.5, "n M_f + M_h")]:
        for size, seconds in ((1, single), (64, batch)):
            rows.append(dict(defense=defense, arch="smallcnn", dataset="mnist", input="random", batch_size=size, repeats=50,
                             total_seconds=seconds, ms_per_query=seconds / 50 * 1000 / size, cost_model=model,
                             device="cpu", torch="2.x"))
    frame = pd.DataFrame(rows)
    vanilla = frame[frame["defense"] == "vanilla"].set_index("batch_size")["total_seconds"]
    frame["slowdown"] = frame["total_seconds"] / frame["batch_size"].map(vanilla)
    return frame


def test_timing_table_and_figure(tmp_path):
    timing = _timing()
    written = plot_inference_time(timing, tmp_path / "fig4")
    assert sorted(p.name for p in written) == ["fig4.pdf", "fig4.png"] and all(p.stat().st_size > 1000 for p in written)
    assert plot_inference_time(timing.iloc[0:0], tmp_path / "empty") == []

    run = write_run(tmp_path / "run", synthetic_results())
    timing.to_csv(run / "timing.csv", index=False)
    out = render_report(run, out=tmp_path / "report", formats=("latex", "png"))
    assert (out / "figures" / "inference_time.png").exists()
    table = parse_tables((out / "tables.tex").read_text())["timing-mnist-smallcnn-random"]
    assert table["groups"] == [(3, "Single query"), (3, "Batch size 64")]
    assert list(table["rows"]) == ["Vanilla", "MAD", "EDM", "InI"]
    mad = table["rows"]["MAD"]
    assert mad[0] == r"$M_{f} + C M_{b} + S$" and mad[1] == "9.00" and mad[2] == r"4.50$\times$" and mad[5] == r"12.00$\times$"


def test_escape_and_cli(tmp_path):
    assert escape("a_b & 5% $x# {y} ~^\\ ±×") == r"a\_b \& 5\% \$x\# \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{} $\pm$$\times$"
    run = write_run(tmp_path / "run", synthetic_results())
    assert cli_main(["report", str(run), "--out", str(tmp_path / "rep"), "--format", "latex"]) == 0
    assert (tmp_path / "rep" / "tables.tex").exists() and not (tmp_path / "rep" / "index.html").exists()
    assert cli_main(["report", str(run), "--out", str(tmp_path / "rep"), "--format", "docx"]) == 2
    assert cli_main(["report", str(tmp_path / "missing")]) == 2


def test_repeated_notes_are_one_row_with_their_count(tmp_path):
    results = synthetic_results()
    results["notes"] = '{"distinct_images": 2000}'
    results.loc[results.index[0], "notes"] = '{"budget_capped": "surrogate set has 10 images; used 10"}'
    report = render_report(write_run(tmp_path / "run", results, suite='{"name": "n"}'), out=tmp_path / "rep", formats="html")
    html = (report / "index.html").read_text()
    section = html.split("Notes attached to cells")[1].split("</table>")[0]
    assert section.count("<tr><td>") == 2
    assert f"<td>distinct_images: 2000</td><td>{len(results) - 1}</td>" in section and "and " in section
