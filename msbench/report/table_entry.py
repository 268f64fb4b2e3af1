"""What one entry of a report table shows (a ``TableEntry``), the ``Table`` of them, and their formats.

Each entry carries its plain text, its LaTeX and a sort key, so the LaTeX and HTML renderings show
the same numbers. Formats follow the InI paper: accuracies in percent with two decimals, relative
performance as ``79.55 (0.84x)``; with several seeds, ``mean±h`` where h is the half-width of the
95% confidence interval of the mean (Student t over the seeds that finished). An entry whose every
seed failed shows ``--``; one still planned shows ``pending``; a combination no run covered stays
empty. ``†`` marks a victim whose benign accuracy is more than the tolerance below Vanilla's: it is
never bold, since a defense that breaks its own model has not defended it. Bold is decided by
``significance.best`` over the entries' per-seed values (``samples``), never by the shown means alone.
``escape`` (text safe in LaTeX) lives here, below ``latex``, which renders these tables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from msbench.report import significance
from msbench.report.runs import PENDING
from msbench.report.stats import finite

_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
             "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$",
             ">": r"$>$", "±": r"$\pm$", "×": r"$\times$", "\n": " ", "†": r"$^\dagger$", "≥": r"$\geq$",
             "–": "--", "·": r"$\cdot$"}
_SPECIAL_RE = re.compile("|".join(re.escape(c) for c in _SPECIALS))


def escape(text: str) -> str:
    """Text safe in LaTeX's paragraph mode (``±`` and ``×`` become math symbols)."""
    return _SPECIAL_RE.sub(lambda m: _SPECIALS[m.group(0)], str(text))


FAILED = "--"
COLLAPSED_MARK = "†"
UNINFORMATIVE_MARK = "°"


@dataclass
class TableEntry:
    text: str
    latex: str
    sort: float | str | None = None
    bold: bool = False
    eligible: bool = True  # may be bold as "best" (False for Vanilla and collapsed victims)
    kind: str = ""  # "failed", "pending", "uninformative" or "": a CSS class in HTML
    samples: dict[int, float] | None = None  # the per-seed values behind the shown mean: what bold compares

    @classmethod
    def label(cls, text: str) -> "TableEntry":
        return cls(text, escape(text), text)

    @classmethod
    def empty(cls) -> "TableEntry":
        return cls("", "", None)

    @classmethod
    def failed(cls) -> "TableEntry":
        return cls(FAILED, FAILED, None, kind="failed")

    @classmethod
    def pending(cls) -> "TableEntry":
        return cls(PENDING, rf"\textit{{{PENDING}}}", None, kind="pending")


@dataclass
class Table:
    key: str  # anchor in HTML, label suffix in LaTeX
    title: str
    caption: str
    columns: list[str]  # leaf headers; the first names the row labels
    rows: list[list[TableEntry]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # spanning headers over the data columns
    wide: bool = False
    short: str = ""  # the one-line caption a paper prints (LaTeX); "" = the title. ``caption`` is the full legend
    bookkeeping: tuple[int, ...] = ()  # columns a paper would not print (LaTeX leaves them out; HTML shows them)


def fmt_value(mean: float, spread: float | None = None, digits: int = 2) -> tuple[str, str]:
    """(text, latex) of ``mean`` or ``mean±spread`` (the spread is a 95% CI half-width)."""
    text = f"{mean:.{digits}f}"
    if spread is not None and finite(spread):
        return f"{text}±{spread:.{digits}f}", f"{text}$\\pm${spread:.{digits}f}"
    return text, text


def fmt_clone(mean: float, ci: float | None, rel: float | None) -> tuple[str, str]:
    """(text, latex) of a clone accuracy: ``mean±h (rel×)``, the relative performance where known."""
    text, latex = fmt_value(mean, ci)
    if rel is not None and finite(rel):
        return f"{text} ({rel:.2f}×)", f"{latex} ({rel:.2f}$\\times$)"
    return text, latex


def with_progress(entry: TableEntry, n_ok: int, n_failed: int, n_pending: int) -> TableEntry:
    """``93.25 (1/3 seeds)`` when some seeds of the entry are still pending or failed."""
    if n_pending or n_failed:
        note = f" ({n_ok}/{n_ok + n_failed + n_pending} seeds)"
        entry.text += note
        entry.latex += escape(note)
    return entry


def mark_collapsed(entry: TableEntry) -> TableEntry:
    entry.text += COLLAPSED_MARK
    entry.latex += r"$^\dagger$"
    entry.eligible = False
    return entry


def accuracy_entry(mean: float, ci: float | None, n: int, n_pending: int = 0) -> TableEntry:
    if n == 0 or not finite(mean):
        return TableEntry.pending() if n_pending else TableEntry.failed()
    text, latex = fmt_value(mean, ci)
    return with_progress(TableEntry(text, latex, round(float(mean), 2)), n, 0, n_pending)


def with_n(entry: TableEntry, n: int) -> TableEntry:
    """``85.57±4.07 (0.87×) n=3``: an entry's seed count, for tables whose rows have different counts."""
    if entry.sort is not None:
        entry.text += f" n={n}"
        entry.latex += f" $_{{n={n}}}$"
    return entry


def attack_entry(row: pd.Series | None, samples: dict[int, float] | None = None) -> TableEntry:
    """``79.55 (0.84x)``: clone accuracy (mean±CI over seeds) and mean relative performance; ``samples``
    are its per-seed values, which decide bold."""
    if row is None:
        return TableEntry.empty()
    if row["n_ok"] == 0 or not finite(row["clone_mean"]):
        return TableEntry.pending() if row["n_pending"] else TableEntry.failed()
    text, latex = fmt_clone(row["clone_mean"], row["clone_ci"], row["rel_mean"])
    entry = TableEntry(text, latex, round(float(row["clone_mean"]), 2), samples=samples)
    return with_progress(entry, int(row["n_ok"]), int(row["n_failed"]), int(row["n_pending"]))


def bold_best(rows: list[list[TableEntry]]) -> None:
    """Bold, per column, the eligible entries (a defense that kept its benign accuracy, against an
    informative attack: not Vanilla, not collapsed) that ``significance.best`` finds best over their
    per-seed values: lower is a better defense, and entries that cannot be separated share the bold or
    none has it."""
    if not rows:
        return
    for j in range(1, len(rows[0])):
        shown = {i: r[j] for i, r in enumerate(rows) if isinstance(r[j].sort, float) and r[j].eligible and r[j].samples}
        for i in significance.best({str(i): c.samples for i, c in shown.items()}):
            shown[int(i)].bold = True


def mark_uninformative(entry: TableEntry) -> TableEntry:
    """Grey in HTML (the entry stays readable: it is a measurement, just not one that judges defenses)."""
    if entry.sort is not None and not entry.kind:
        entry.kind = "uninformative"
    return entry


def slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def points(tolerance: float) -> str:
    """``1 point``, ``0.5 points``: the tolerance as a caption says it."""
    return f"{tolerance:g} point" + ("" if tolerance == 1 else "s")


def fmt_budget(value) -> str:
    return f"{int(value):,}" if finite(value) else "?"


def fmt_seconds(value: float) -> str:
    """Seconds as the paper prints them (471.7), with more digits for the short times of small models."""
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:#.3g}"


def cost_model_latex(model: str) -> str:
    """``M_f + C*M_b + S`` -> ``$M_{f} + C\\cdot M_{b} + S$``; anything else is escaped text."""
    if re.fullmatch(r"[A-Za-z0-9_ +*()./-]+", model):
        body = re.sub(r"_(\w+)", r"_{\1}", model).replace("*", "\\cdot ")
        return f"${body}$"
    return escape(model)
