"""LaTeX rendering of the report's tables: booktabs, one ``table`` per Table, ready to ``\\input``.

``tables.tex`` needs ``\\usepackage{booktabs}`` and ``\\usepackage{graphicx}`` in the including
document. Each table estimates its natural width: one that would not fit a column of a two-column
paper (about 240 pt) is ``table*``, spanning both columns as the InI paper's wide tables do; and
every tabular sits in ``\\resizebox`` that shrinks it to the line only where it is still wider
(never enlarges it), so no table runs over the neighbouring column in any document class.
``tables_standalone.tex`` wraps the same tables in a minimal article for plain ``pdflatex``.
"""
from __future__ import annotations

import re
import textwrap
from typing import Iterable

from msbench.report.table_entry import Table, escape

COLUMN_PT = 240.0
"""The width of one column of a two-column paper (``article``'s 10 pt twocolumn: 241 pt; ACM's 241 pt)."""
_CHAR_PT, _SEP_PT = 5.0, 8.0  # an average \small character, and 2 x \tabcolsep (4 pt)


def _shown_length(latex: str) -> int:
    """Characters a LaTeX cell prints, roughly: commands and braces dropped, a math symbol one character."""
    text = re.sub(r"\\(pm|times|geq|dagger|sim)\b", "x", latex)
    text = re.sub(r"\\[a-zA-Z]+\*?", "", text)
    return len(re.sub(r"[{}$^_]", "", text))


def natural_width(table: Table) -> float:
    """The tabular's width in points, estimated from its longest cell per column (spanning headers included)."""
    columns = [[table.columns[j]] + [row[j].latex for row in table.rows if j < len(row)]
               for j in range(len(table.columns))]
    widths = [max(_shown_length(c) for c in column) * _CHAR_PT + _SEP_PT for column in columns]
    start = 1
    for label, span in table.groups:  # a spanning header wider than its columns widens them
        need = _shown_length(escape(label)) * _CHAR_PT + _SEP_PT
        have = sum(widths[start:start + span])
        if need > have:
            widths[start:start + span] = [w + (need - have) / span for w in widths[start:start + span]]
        start += span
    return sum(widths)


def _row(cells: Iterable[str]) -> str:
    return " & ".join(cells) + r" \\"


LEGEND = ("Clone and benign accuracy in \\%; relative performance (clone / benign accuracy) in parentheses; lower "
          "clone accuracy is a better defense. mean$\\pm$h: mean over seeds and the half-width of its 95\\% confidence "
          "interval (Student t); n: seeds. Bold: a defense within the benign-accuracy tolerance of Vanilla that is "
          "significantly below another such defense and above none (paired t over shared seeds, Welch t otherwise, "
          "5\\%); rank =k: shared; $\\sim$: indicative (one seed, no test). $^\\dagger$: benign accuracy collapsed "
          "beyond the tolerance, never bold. $^\\circ$: uninformative attack (its clone of Vanilla steals little), "
          "never bold. $\\geq$: some attack settings pending or failed.")
"""The notation every table uses, printed once (``\\msbenchLegend``) rather than under each table."""


def paper_view(table: Table) -> Table:
    """``table`` as a paper prints it: without its bookkeeping columns, under its one-line caption."""
    from dataclasses import replace

    keep = [j for j in range(len(table.columns)) if j not in table.bookkeeping]
    return replace(table, columns=[table.columns[j] for j in keep], rows=[[row[j] for j in keep] for row in table.rows],
                   caption=table.short or table.title, bookkeeping=())


def render_table(table: Table) -> str:
    legend = table.caption  # the full legend: a comment above the table, for the author
    table = paper_view(table)
    env = "table*" if table.wide or natural_width(table) > COLUMN_PT else "table"
    n = len(table.columns) - 1
    comment = [f"% {line}" for line in textwrap.wrap(legend, 100)]
    lines = [*comment, rf"\begin{{{env}}}[htbp]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{escape(table.caption)}}}", rf"\label{{tab:msbench-{table.key}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{l{'c' * n}}}", r"\toprule"]
    if table.groups:
        heads, rules, start = [escape(table.columns[0])], [], 2
        for label, span in table.groups:
            heads.append(rf"\multicolumn{{{span}}}{{c}}{{{escape(label)}}}" if label else "")
            if label:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines += [_row(heads), " ".join(rules), _row([""] + [escape(c) for c in table.columns[1:]])]
    else:
        lines.append(_row(escape(c) for c in table.columns))
    lines.append(r"\midrule")
    for row in table.rows:
        lines.append(_row(rf"\textbf{{{c.latex}}}" if c.bold and c.latex else c.latex for c in row))
    lines += [r"\bottomrule", r"\end{tabular}}", rf"\end{{{env}}}"]
    return "\n".join(lines)


def render_tables(tables: list[Table], header: str) -> str:
    """The body of ``tables.tex``: a comment header, then every table."""
    comment = "\n".join(f"% {line}" for line in header.splitlines())
    body = "\n\n".join(render_table(t) for t in tables)
    return (f"{comment}\n% Needs \\usepackage{{booktabs}} and \\usepackage{{graphicx}}. Print the notation once, e.g. "
            f"under the first table: \\msbenchLegend\n\\providecommand{{\\msbenchLegend}}{{{LEGEND}}}\n\n{body}\n")


def render_standalone(tables: list[Table], header: str, title: str, verdict: list[str] = ()) -> str:
    """A complete document around the tables, for ``pdflatex tables_standalone.tex``; it opens with the
    verdict sentences (``headline.verdict_sentences``)."""
    preamble = "\n".join([
        r"\documentclass[10pt]{article}", r"\usepackage{booktabs}", r"\usepackage{graphicx}",
        r"\usepackage[landscape,margin=1.5cm]{geometry}",
        r"\begin{document}", rf"\section*{{{escape(title)}}}"]
        + ([r"\paragraph{Verdict.}", r"\begin{itemize}"] + [rf"\item {escape(v)}" for v in verdict] + [r"\end{itemize}"]
           if verdict else []))
    body = (render_tables(tables, header) + "\n\\paragraph{Notation.} \\msbenchLegend\n" if tables
            else "No results to tabulate.\n")
    return f"{preamble}\n{body}\n\\end{{document}}\n"
