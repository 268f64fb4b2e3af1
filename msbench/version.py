"""msbench's version, in a module of its own: code that records it (run tables, reports) imports
this, not the ``msbench`` package, whose ``__init__`` imports that code."""
from __future__ import annotations

__version__ = "0.1.0"
