"""The results tables: one JSON record per cell, written atomically, gathered into CSV tables.

Records are the source of truth (one file per finished cell, so an interrupted run loses at most
the cell in progress); ``results.csv`` and ``curves.csv`` are rebuilt from them after each cell.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

RESULT_COLUMNS = ["dataset", "arch", "defense", "attack", "label_mode", "seed", "budget", "queries", "benign_acc",
                  "clone_acc", "relative_perf", "fidelity", "status", "error", "surrogate", "tuned", "victim_seconds",
                  "attack_seconds", "notes", "msbench", "git_commit", "torch", "device", "device_model", "threads", "host",
                  "date", "cell_id"]
CURVE_COLUMNS = ["dataset", "arch", "defense", "attack", "label_mode", "seed", "queries", "clone_acc"]


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RecordStore:
    """``<run dir>/records/<cell id>.json``: one finished cell each."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "records"

    def path(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}.json"

    def get(self, cell_id: str) -> dict[str, Any] | None:
        path = self.path(cell_id)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def put(self, record: dict[str, Any]) -> None:
        write_atomic(self.path(record["cell_id"]), json.dumps(record, indent=1, default=str))


def results_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [{k: r.get(k) for k in RESULT_COLUMNS} for r in records]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def curves_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [{**{k: r[k] for k in CURVE_COLUMNS[:6]}, "queries": q, "clone_acc": acc}
            for r in records for q, acc in r.get("curve", [])]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def write_tables(run_dir: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(Path(run_dir) / "results.csv", results_frame(records).to_csv(index=False))
    write_atomic(Path(run_dir) / "curves.csv", curves_frame(records).to_csv(index=False))


def load_results(run_dir: str | Path, table: str = "results") -> pd.DataFrame:
    """A run's table (``results``, ``curves`` or ``timing``) as a DataFrame."""
    path = Path(run_dir) / f"{table}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table (has the suite been run with --out {run_dir}?)")
    return pd.read_csv(path)
