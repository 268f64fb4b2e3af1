"""The results tables: one JSON record per cell, written atomically, gathered into CSV tables.

Records are the source of truth (one file per finished cell, so an interrupted run loses at most
the cell in progress); ``results.csv`` and ``curves.csv`` are rebuilt from them after each cell.
A record counts as done only if it parses and matches ``RECORD_SCHEMA``; any other file is
reported, set aside as ``<cell id>.json.corrupt`` and its cell computed again. The tables have
fixed column types (``RESULT_DTYPES``), whatever the records hold.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from msbench.io import write_atomic

log = logging.getLogger("msbench")

RESULT_COLUMNS = ["dataset", "arch", "defense", "setting", "attack", "label_mode", "seed", "budget", "queries",
                  "benign_acc",
                  "clone_acc", "relative_perf", "fidelity", "distortion_queries", "distortion_test", "status", "error",
                  "surrogate", "tuned", "victim_seconds", "victim_train_seconds", "victim_device", "attack_seconds",
                  "notes", "msbench", "git_commit", "torch", "device", "device_model", "threads", "host",
                  "date", "cell_id",
                  # detection defenses' cells only (docs/methods.md, "Detection defenses"); NaN elsewhere
                  "attacker_accounts", "flag_queries", "stop_queries", "accounts_needed", "clone_unstopped",
                  "benign_fpr",
                  "benign_users", "benign_queries", "monitor_ms"]
CURVE_COLUMNS = ["dataset", "arch", "defense", "attack", "label_mode", "seed", "queries", "clone_acc"]
_TEXT, _COUNT, _NUMBER = "string", "Int64", "float64"
RESULT_DTYPES = {**{c: _TEXT for c in RESULT_COLUMNS}, "seed": _COUNT, "budget": _COUNT, "queries": _COUNT,
                 "threads": _COUNT,
                 **{c: _NUMBER for c in ("setting", "benign_acc", "clone_acc", "relative_perf", "fidelity",
                                         "distortion_queries",
                                    "distortion_test", "victim_seconds", "victim_train_seconds", "attack_seconds",
                                    "attacker_accounts", "flag_queries", "stop_queries", "accounts_needed",
                                    "clone_unstopped",
                                    "benign_fpr", "benign_users", "benign_queries", "monitor_ms")}}
CURVE_DTYPES = {**{c: _TEXT for c in CURVE_COLUMNS}, "seed": _COUNT, "queries": _COUNT, "clone_acc": _NUMBER}

_STR, _INT, _NUM = (str,), (int,), (int, float)
RECORD_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "any": {"cell_id": _STR, "status": _STR, "error": _STR, "dataset": _STR, "arch": _STR, "defense": _STR,
            "attack": _STR, "label_mode": _STR, "seed": _INT},
    "ok": {"budget": _INT, "queries": _INT, "benign_acc": _NUM, "clone_acc": _NUM, "relative_perf": _NUM,
           "fidelity": _NUM, "curve": (list,)},
    "optional": {"victim_seconds": _NUM, "victim_train_seconds": _NUM, "victim_device": _STR},
}
"""Keys every record has (``any``), those of a finished cell (``ok``), and those a record may lack
(``optional``: records made before the field existed), with their JSON types. ``victim_seconds`` is
the training time of the victim's whole defense chain (``ini+mad``: InI's and MAD's), while
``victim_train_seconds`` is its last link's own; ``victim_device`` names where the chain trained
(``provenance.training_device``), empty when a link's checkpoint predates the field."""


def record_problem(record: Any, cell_id: str, cell: dict[str, Any] | None = None,
                   budget: int | None = None) -> str | None:
    """Why ``record`` is not a valid record of ``cell_id``, or None. With ``cell`` (the cell's identity:
    dataset, arch, defense, attack, label mode, seed, setting) and ``budget`` (its attack's query
    budget), the record must also be that cell's and its numbers possible for it: a record copied from
    another cell, or edited to values impossible for its cell, is refused, not shown as ``ok`` (an
    edit that keeps every value consistent cannot be told from a result by its values)."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    required = {**RECORD_SCHEMA["any"], **(RECORD_SCHEMA["ok"] if record.get("status") == "ok" else {})}
    for key, types in required.items():
        if key not in record:
            return f"missing key '{key}'"
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"'{key}' should be {' or '.join(t.__name__ for t in types)}, got {value!r}"
    for key, types in RECORD_SCHEMA["optional"].items():
        value = record.get(key)
        if key in record and (isinstance(value, bool) or not isinstance(value, types)):
            return f"'{key}' should be {' or '.join(t.__name__ for t in types)}, got {value!r}"
    if record["status"] not in ("ok", "failed"):
        return f"'status' should be 'ok' or 'failed', got {record['status']!r}"
    if record["cell_id"] != cell_id:
        return f"'cell_id' is {record['cell_id']!r}, expected {cell_id!r} (the file name)"
    for key, value in (cell or {}).items():
        if record.get(key) != value:
            return f"'{key}' is {record.get(key)!r}, expected {value!r} (the cell's)"
    return _numbers_problem(record, budget) if record["status"] == "ok" else None


def _numbers_problem(record: dict[str, Any], budget: int | None) -> str | None:
    """Why a finished record's numbers are impossible (percentages out of range, queries outside the
    budget), or None."""
    for point in record["curve"]:
        if not (isinstance(point,
                           list) and len(point) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                    for v in point)):
            return f"'curve' should hold [queries, accuracy] pairs, got {point!r}"
        if not (0 <= point[0] <= record["budget"] and math.isfinite(point[1]) and 0 <= point[1] <= 100):
            return f"'curve' point {point!r} is outside [0, budget {record['budget']}] x [0, 100]"
    for key in ("benign_acc", "clone_acc", "fidelity"):
        if not (math.isfinite(record[key]) and 0 <= record[key] <= 100):
            return f"'{key}' should be a percentage, got {record[key]!r}"
    if budget is not None and record["budget"] != budget:
        return f"'budget' is {record['budget']}, expected {budget} (the attack's)"
    if not 0 <= record["queries"] <= record["budget"]:
        return f"'queries' is {record['queries']}, outside [0, budget {record['budget']}]"
    expected = record["clone_acc"] / record["benign_acc"] if record["benign_acc"] else float("nan")
    if not math.isclose(record["relative_perf"], expected,
                        rel_tol=1e-9) and not (math.isnan(expected) and math.isnan(record["relative_perf"])):
        return f"'relative_perf' is {record['relative_perf']!r}, expected clone_acc / benign_acc = {expected!r}"
    return None


class RecordStore:
    """``<run dir>/records/<cell id>.json``: one finished cell each."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "records"

    def path(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}.json"

    def get(self, cell_id: str, cell: dict[str, Any] | None = None, budget: int | None = None) -> dict[str, Any] | None:
        """The cell's record; None when absent or invalid (an invalid file is reported and set aside).
        ``cell`` and ``budget``: what the record must belong to (``record_problem``)."""
        path = self.path(cell_id)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            problem = record_problem(record, cell_id, cell, budget)
        except (OSError, UnicodeDecodeError, ValueError) as failure:
            problem = f"unreadable ({type(failure).__name__}: {failure})"
        if problem is None:
            return record
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning("warning: %s: invalid record (%s); moved to %s, its cell will be computed again",
                    path, " ".join(problem.split()), aside.name)
        return None

    def put(self, record: dict[str, Any]) -> None:
        write_atomic(self.path(record["cell_id"]), json.dumps(record, indent=1, default=str))


def typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """The table with its fixed column types: text (missing: ""), nullable integers, floats."""
    for column, dtype in dtypes.items():
        values = frame[column]
        if dtype == _TEXT:
            values = values.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        elif dtype == _COUNT:
            values = pd.to_numeric(values, errors="coerce").round()
        else:
            values = pd.to_numeric(values, errors="coerce")
        frame[column] = values.astype(dtype)
    return frame


def results_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [{k: r.get(k) for k in RESULT_COLUMNS} for r in records]
    return typed(pd.DataFrame(rows, columns=RESULT_COLUMNS), RESULT_DTYPES)


def curves_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [{**{k: r[k] for k in CURVE_COLUMNS[:6]}, "queries": q, "clone_acc": acc}
            for r in records if r.get("setting") is None for q, acc in r.get("curve", [])]  # swept cells: no curves
    return typed(pd.DataFrame(rows, columns=CURVE_COLUMNS), CURVE_DTYPES)


def write_tables(run_dir: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(Path(run_dir) / "results.csv", results_frame(records).to_csv(index=False))
    write_atomic(Path(run_dir) / "curves.csv", curves_frame(records).to_csv(index=False))
