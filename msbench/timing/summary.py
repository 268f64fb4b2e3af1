"""The timing stage's console summary: each measurement with the cost model beside it."""
from __future__ import annotations

import pandas as pd


def timing_summary(frame: pd.DataFrame) -> str:
    """The console table: each measurement with the cost model beside it."""
    if frame.empty:
        return "(no timings)"
    shown = frame[["arch", "input", "batch_size", "defense", "total_seconds", "ms_per_query", "slowdown", "cost_model"]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


__all__ = ["timing_summary"]
