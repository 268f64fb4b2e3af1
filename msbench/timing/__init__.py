"""The inference-cost stage (``msbench time``): how much each defense slows the deployed API down.

- ``schema``: the suite's ``[timing]`` section (``TimingOptions``), checked at load time;
- ``cost``: each composition's cost formula, as its plugins declare it;
- ``measure``: the timed loop and the inputs it cycles through;
- ``plan``: what is timed, on which victims, and the key of a table still valid;
- ``stage``: ``time_suite``, the stage itself, writing ``<run dir>/timing.csv``;
- ``summary``: the console table.

Import from the submodule (``from msbench.timing.stage import time_suite``): this file imports
none of them, because ``msbench.runner.suite`` imports ``msbench.timing.schema`` (which runs this file
first) while the suite module is itself being imported, and the plan and the stage import the suite.
"""
