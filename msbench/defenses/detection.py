"""The base of the detection defenses (PRADA, SEAT): output defenses whose answers equal their base
victim's and whose module is a ``msbench.detection.Monitored``, which makes one monitor per account.
"""
from __future__ import annotations

from typing import Any, ClassVar

from msbench.defenses.base import OutputDefense


def benign_problem(config: Any) -> tuple[str, str] | None:
    """The benign-stream settings every detection defense shares, checked: several users, each a
    stream of at least one query (its length against the test split is checked when the split is known)."""
    for key in ("benign_users", "benign_queries"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return key, f"expected a positive integer, got {value!r}"
    return None


class DetectionDefense(OutputDefense):
    """Base of the detection defenses: an output defense whose answers equal its base victim's and
    whose ``build`` returns a ``Monitored``. Nothing to tune (``tunable = None``): its knobs decide
    when an account is stopped, not what is answered, so benign matching has nothing to match.

    Every detection defense's Config has ``benign_users`` and ``benign_queries``: the benign
    accounts on which its false-positive rate is measured (streams of test-split images)."""

    detects: ClassVar[bool] = True
    # What the defense's paper claims, in one sentence: reports print it beside the measured numbers.
    paper_claim: ClassVar[str] = ""
    cost_model = "M_f + monitor"
