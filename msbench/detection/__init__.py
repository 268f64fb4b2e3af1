"""Detection defenses' machinery: accounts, per-account monitors and what a detection cell measures.

A detection defense (PRADA, SEAT: ``msbench/defenses/prada.py``, ``seat.py``) answers like its base
victim and watches each account's stream of queries; once its monitor flags an account, the API
stops answering that account. This package holds what those defenses share: the ``Monitor``
contract and the deployed wrapper (``monitor.py``), the account-serving API and the attacker's
side of it (``accounts.py``), blinding transforms (``blinding.py``) and the measurements of a
detection cell (``measure.py``). See "Threat model" in docs/ARCHITECTURE.md.
"""
from msbench.detection.accounts import AccountService, AccountStopped, Relay  # noqa: F401
from msbench.detection.monitor import Monitor, Monitored, find_monitored  # noqa: F401
