"""PCGrad's old home: it moved beside its one user, InI (``msbench.defenses.pcgrad``); old imports keep working."""
from msbench.defenses.pcgrad import MERGES, draw_orders, pcgrad, pcgrad_reference  # noqa: F401
