"""A run's CSV tables read with their number columns checked, so a malformed table is one line.

``results.csv``, ``curves.csv`` and ``timing.csv`` are written by msbench, but the report also
reads tables edited by hand, merged from elsewhere or cut short. A number column holding text
(``clone_acc = ninety``) would otherwise surface deep inside the report as a pandas traceback;
here it is an ``InputError`` naming the file, the column, the row (counted from 1 under the
header) and what was expected, which the CLI prints as one line with exit code 2. Text columns
are not checked: any text is a valid label or note.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from msbench.config import InputError
from msbench.runner.results import _COUNT, _NUMBER, _TEXT, CURVE_DTYPES, RESULT_DTYPES

TIMING_DTYPES = {c: _NUMBER for c in ("batch_size", "repeats", "warmup", "total_seconds", "ms_per_query",
                                      "ms_per_image",
                                      "slowdown", "benign_acc", "seed", "threads")}
"""The number columns of ``timing.csv`` (``msbench.timing.stage.COLUMNS``); the rest is text."""
DTYPES: dict[str, dict[str, str]] = {"results": RESULT_DTYPES, "curves": CURVE_DTYPES, "timing": TIMING_DTYPES}
"""Each table's column types, by table name (the file's stem)."""


def read_table(path: Path, **options: Any) -> pd.DataFrame:
    """``pd.read_csv(path, **options)``; a file that is no CSV table (binary, ragged rows, empty) is
    an InputError naming it rather than a parser's multi-line message."""
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as bad:
        raise InputError(str(path), "", f"not a CSV table msbench can read ({bad})") from None


def check_numbers(frame: pd.DataFrame, path: Path, dtypes: dict[str, str]) -> None:
    """Raise InputError at the first value of a number column (``dtypes``: float or count) that is
    not a number, or of a count column that is not a whole number. Empty cells are missing values,
    not errors; columns the frame lacks (a table of an older or newer version) are not checked."""
    for column, dtype in dtypes.items():
        if dtype == _TEXT or column not in frame.columns:
            continue
        values = frame[column].reset_index(drop=True)
        numbers = pd.to_numeric(values, errors="coerce")
        suspects = values.notna() & numbers.isna()  # text that did not parse, or a spelling of NaN
        if dtype == _COUNT:
            suspects |= numbers.notna() & ((numbers - numbers.round()).abs() > 0)
        bad = [i for i in suspects[suspects].index if _problem(values[i], dtype) is not None]
        if bad:
            more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
            raise InputError(str(path), column, f"row {bad[0] + 1}: {_problem(values[bad[0]], dtype)}{more}")


def _problem(value: Any, dtype: str) -> str | None:
    """What is wrong with one cell of a number column, or None (a number, a missing value)."""
    if isinstance(value, str) and not value.strip():
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"expected {'a whole number' if dtype == _COUNT else 'a number'}, got {str(value)!r}"
    if dtype == _COUNT and not math.isnan(number) and not (math.isfinite(number) and number == round(number)):
        return f"expected a whole number, got {str(value)!r}"
    return None
