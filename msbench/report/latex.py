"""LaTeX rendering of the report's tables: booktabs, one ``table`` per Table, ready to ``\\input``.

``tables.tex`` needs only ``\\usepackage{booktabs}`` in the including document; wide tables are
``table*`` so they span both columns of a two-column paper, as the InI paper's do.
``tables_standalone.tex`` wraps the same tables in a minimal article for plain ``pdflatex``.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from msbench.report.cell import Table

_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
             "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$",
             ">": r"$>$", "±": r"$\pm$", "×": r"$\times$", "\n": " ", "†": r"$^\dagger$", "≥": r"$\geq$",
             "–": "--", "·": r"$\cdot$"}
_SPECIAL_RE = re.compile("|".join(re.escape(c) for c in _SPECIALS))


def escape(text: str) -> str:
    """Text safe in LaTeX's paragraph mode (``±`` and ``×`` become math symbols)."""
    return _SPECIAL_RE.sub(lambda m: _SPECIALS[m.group(0)], str(text))


def _row(cells: Iterable[str]) -> str:
    return " & ".join(cells) + r" \\"


def render_table(table: "Table") -> str:
    env = "table*" if table.wide else "table"
    n = len(table.columns) - 1
    lines = [rf"\begin{{{env}}}[htbp]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{escape(table.caption)}}}", rf"\label{{tab:msbench-{table.key}}}",
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
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}"]
    return "\n".join(lines)


def render_tables(tables: list["Table"], header: str) -> str:
    """The body of ``tables.tex``: a comment header, then every table."""
    comment = "\n".join(f"% {line}" for line in header.splitlines())
    body = "\n\n".join(render_table(t) for t in tables)
    return f"{comment}\n% Needs \\usepackage{{booktabs}}.\n\n{body}\n"


def render_standalone(tables: list["Table"], header: str, title: str, verdict: list[str] = ()) -> str:
    """A complete document around the tables, for ``pdflatex tables_standalone.tex``; it opens with the
    verdict sentences (``headline.verdict_sentences``)."""
    preamble = "\n".join([
        r"\documentclass[10pt]{article}", r"\usepackage{booktabs}", r"\usepackage[landscape,margin=1.5cm]{geometry}",
        r"\begin{document}", rf"\section*{{{escape(title)}}}"]
        + ([r"\paragraph{Verdict.}", r"\begin{itemize}"] + [rf"\item {escape(v)}" for v in verdict] + [r"\end{itemize}"]
           if verdict else []))
    body = render_tables(tables, header) if tables else "No results to tabulate.\n"
    return f"{preamble}\n{body}\n\\end{{document}}\n"
