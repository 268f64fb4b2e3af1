"""msbench's version, in a module of its own.

Records, provenance, timing tables and reports stamp it; reading it from here rather than from the
``msbench`` package keeps them from importing the package's ``__init__``, which imports the runner,
the timing stage and the report (and so would import them back).
"""
from __future__ import annotations

__version__ = "0.1.0"
