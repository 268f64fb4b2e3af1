"""The pipeline stages of ``msbench run``, one module per stage, in the order data flows:

1. ``suite`` (with ``suite_schema``, ``suite_checks``, ``suite_data``): a suite file read, checked and resolved;
2. ``cells`` (with ``sweep``): the matrix expanded into cells and their cache keys; ``plan`` costs them;
3. ``workspace``: data, models and the role datasets one worker needs, loaded once;
4. ``victims`` (with ``checkpoints``): each defended victim trained once and cached;
5. ``evaluate``: one cell, an attack against one deployed victim, measured;
6. ``results``: each cell's record validated and written, then the tables;
7. ``run``: the loop over them (``msbench.run_suite``), here or through ``msbench.executors``.

Utilities the stages share (io, seeds, logs, progress, fingerprint, provenance, code identity) stay in
``msbench``; the report (``msbench.report``) reads only what ``results`` wrote.
"""
