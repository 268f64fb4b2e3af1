"""The HTML page: one self-contained ``index.html`` rendered from jinja2 templates shipped with msbench.

Figures are embedded as base64 PNG and the sorting script is inline, so the page opens offline,
from a file, on a machine without msbench.
"""
from __future__ import annotations

import base64
import json
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from msbench.report.labels import dataset_label, in_order
from msbench.report.runs import RunTables
from msbench.report.table_entry import Table
from msbench.version import __version__

TEMPLATES = Path(__file__).parent / "templates"
ROLE_KEYS = ("surrogate", "ood", "hash", "format", "like", "union", "train_subset", "test_subset", "note")


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["sortkey"] = lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
    return env


def _compact_json(value: Any) -> str:
    """Indented JSON with lists of plain values on one line (a matrix reads as six short lines)."""
    text = json.dumps(value, indent=1, default=str)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def _settings(suite: dict[str, Any]) -> list[tuple[str, str]]:
    """The resolved suite, section by section."""
    return [(key, _compact_json(value)) for key, value in suite.items() if key not in ("name", "description")]


def _dataset_notes(tables: RunTables) -> list[dict[str, Any]]:
    """Per dataset: the roles and notes the suites record, and the surrogate each run actually queried."""
    rows: dict[str, dict[str, Any]] = {}
    for suite in tables.suites:
        for name, options in (suite.get("datasets") or {}).items():
            entry = rows.setdefault(name, {"dataset": dataset_label(name), "fields": {}})
            for key in ROLE_KEYS:
                value = (options or {}).get(key)
                if value not in (None, "", [], {}):
                    entry["fields"][key] = str(value)
    if not tables.results.empty:
        for name in in_order(tables.results["dataset"]):
            used = [s for s in in_order(tables.results.loc[tables.results["dataset"] == name, "surrogate"]) if str(s)]
            entry = rows.setdefault(name, {"dataset": dataset_label(name), "fields": {}})
            if used:
                entry["fields"]["surrogate queried"] = ", ".join(str(s) for s in used)
    return [row for row in rows.values() if row["fields"]]


def _shown(value: Any) -> str:
    """A value as a reader sees it: floats rounded (``97.69999980926514`` -> ``97.7``), whole floats as integers."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if pd.isna(value):
            return ""
        return (str(int(value)) if value.is_integer()
                else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip("."))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_shown(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    return str(value)


def _cell_notes(results: pd.DataFrame) -> list[dict[str, str]]:
    """Notes attacks and defenses attached to cells (e.g. a capped budget), one row per distinct note
    item (key and value) with how many cells carry it and which (the first three named): a note
    every cell repeats is one row."""
    if results.empty:
        return []
    grouped: dict[str, list[str]] = {}
    for _, row in results[results["notes"].notna() & (results["notes"].astype(str) != "")].iterrows():
        try:
            parsed = json.loads(row["notes"])
            texts = [_shown({k: v}) for k, v in parsed.items()] if isinstance(parsed, dict) else [_shown(parsed)]
        except (TypeError, ValueError):
            texts = [str(row["notes"])]
        cell = (f"{row['dataset']}/{row['arch']}/{row['defense']}/{row['attack']}/{row['label_mode']}"
                f"/seed {_shown(row['seed'])}")
        for text in texts:  # one row per distinct note item, so a note every cell repeats groups though others differ
            grouped.setdefault(text, []).append(cell)
    return [{"cell": "; ".join(cells[:3]) + (f"; and {len(cells) - 3} more" if len(cells) > 3 else ""),
             "count": str(len(cells)),
             "note": text} for text, cells in grouped.items()]


def _commits(results: pd.DataFrame) -> str:
    """The msbench commits the records were computed at (short), each marked when its checkout was dirty."""
    if results.empty or "git_commit" not in results.columns:
        return ""
    values = [str(v) for v in in_order(results["git_commit"].dropna()) if str(v)]
    shown = [f"{v[:10]}{' (uncommitted changes)' if v.endswith('+dirty') else ''}" for v in values]
    return ", ".join(shown)


def _tuned(results: pd.DataFrame) -> list[dict[str, str]]:
    """Output-defense settings tuned per victim to match Vanilla's benign accuracy (the paper's protocol)."""
    if results.empty or "tuned" not in results.columns:
        return []
    rows = results[results["tuned"].notna() & (results["tuned"].astype(str) != "")]
    rows = rows.drop_duplicates(["dataset", "arch", "defense", "seed", "tuned"])
    return [{k: _shown(r[k]) for k in ("dataset", "arch", "defense", "seed", "tuned")} for _, r in rows.iterrows()]


def _rendering_machine() -> list[tuple[str, str]]:
    rows = [("msbench", __version__), ("python", platform.python_version()), ("platform", platform.platform())]
    try:
        import torch

        rows.append(("torch", torch.__version__))
        rows.append(("CUDA (torch build)", str(torch.version.cuda or "none")))
        rows.append(("device",
                     torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA device visible)"))
    except ImportError:
        rows.append(("torch", "not installed"))
    for package in ("pandas", "matplotlib", "seaborn", "jinja2"):
        try:
            rows.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            pass
    return rows


def _run_environment(tables: RunTables) -> list[tuple[str, str, str]]:
    """What the runs themselves recorded: (source, key, value)."""
    rows = []
    for column in ("msbench", "torch", "device"):
        if column in tables.results.columns:
            values = [str(v) for v in in_order(tables.results[column].dropna())]
            if values:
                rows.append(("results.csv", column, ", ".join(values)))
    if not tables.timing.empty:
        for column in ("device", "torch", "msbench", "threads"):
            if column not in tables.timing.columns:
                continue
            values = [str(v) for v in in_order(tables.timing[column].dropna())]
            if values:
                rows.append(("timing.csv", column, ", ".join(values)))
    for run_dir, suite in zip(tables.run_dirs, tables.suites):
        for key, value in (suite.get("environment") or {}).items():
            rows.append((f"{run_dir.name}/suite.json", key, str(value)))
    return rows


def render_html(tables: RunTables, sections: dict[str, list[Table]], figures: list[dict[str, Any]],
                skipped: list[dict[str, str]], title: str, verdict: list[str]) -> str:
    results = tables.results
    failed = tables.failed if not results.empty else results
    progress = tables.progress
    context = {
        "title": title,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "runs": [{"dir": str(d), "name": s.get("name", d.name), "description": s.get("description", ""),
                  "settings": _settings(s)} for d, s in zip(tables.run_dirs, tables.suites)],
        "counts": {"cells": progress.planned, "ok": progress.finished, "failed": progress.failed,
                   "pending": progress.pending,
                   "timing_rows": len(tables.timing), "curve_points": len(tables.curves)},
        "partial": progress.sentence() if progress.partial else "",
        "verdict": verdict,  # headline.verdict_sentences, computed once by render_report
        "kept_apart": tables.kept_apart,
        "pending": [{k: _shown(row[k]) for k in ("dataset", "arch", "defense", "attack", "label_mode", "seed")}
                    for _, row in tables.pending.iterrows()],
        "sections": [("Worst case: the verdict", "Per defense, the strongest attack of the runs; the headline table.",
                      sections["worst"]),
                     ("Benign accuracy", "Paper Table 1.", sections["benign"]),
                     ("Clone accuracy and relative performance", "Paper Tables 2 and 3, one table per attack.",
                      sections["attacks"]),
                     ("Inference time", "Paper Table 4 (from timing.csv).", sections["timing"]),
                     ("Training cost", "Paper Table B.1: victim training time relative to Vanilla on the same device.",
                      sections["cost"]),
                     ("Further defenses", "Paper Table 5 style: defenses beyond the paper's, e.g. InI ablations.",
                      sections["others"]),
                     ("Detection defenses",
                      "Per-account detectors: queries to detection, the clone kept there, accounts "
                      "needed and benign false positives, beside what their papers claim.", sections["detection"])],
        "figures": [{**f, "data": base64.b64encode(f["png"]).decode("ascii")} for f in figures],
        "skipped": skipped,
        "figure_note": (f"Error bars and bands: 95% confidence intervals of the mean over seeds (Student t), where "
                        f"there are several. Collapsed victims (benign accuracy more than {tables.tolerance:g} points "
                        f"below Vanilla's) are hatched in bars, dashed in curves, marked † in the heat map, and fall "
                        f"in the grey band of the trade-off figure."),
        "failed": [{k: _shown(row[k]) for k in ("dataset", "arch", "defense", "attack", "label_mode", "seed", "error")}
                   for _, row in failed.iterrows()],
        "datasets": _dataset_notes(tables),
        "cell_notes": _cell_notes(results),
        "commits": _commits(tables.recorded if not results.empty else results),
        "tuned": _tuned(results),
        "run_environment": _run_environment(tables),
        "machine": _rendering_machine(),
    }
    return _environment().get_template("index.html.j2").render(**context)
