"""Progress bars for long stages: shown on a terminal, silent in logs (MSBENCH_PROGRESS=1 forces, 0 hides)."""
from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def _setting() -> bool | None:
    """True: bars forced on; False: forced off; None: tqdm decides (on where stderr is a terminal)."""
    setting = os.environ.get("MSBENCH_PROGRESS", "")
    return False if setting in ("0", "false", "no") else (True if setting in ("1", "true", "yes") else None)


def bars_shown() -> bool:
    """Whether ``progress`` bars are drawn (tqdm draws on stderr): then they, not log lines, show a run's progress."""
    forced = _setting()
    if forced is not None:
        return forced
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(**kwargs: Any) -> tqdm:
    forced = _setting()
    kwargs.setdefault("leave", False)
    return tqdm(dynamic_ncols=True, disable=None if forced is None else not forced, **kwargs)
