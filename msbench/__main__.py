"""``python -m msbench``: the same command as ``msbench`` (for environments without the console script)."""
import sys

from msbench.cli import main

sys.exit(main())
