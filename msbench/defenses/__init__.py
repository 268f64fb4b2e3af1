"""Defenses: importing this package registers the built-in ones."""
from msbench.runner.checkpoints import load_cached_victim, load_victim, save_victim  # noqa: F401  (their old home)
from msbench.defenses.base import Defense, OutputDefense, Softmax, TrainingDefense, VictimContext  # noqa: F401
from msbench.defenses import vanilla  # noqa: F401
from msbench.defenses import edm, ini  # noqa: F401
from msbench.defenses import am, mad  # noqa: F401
from msbench.defenses import (dcp, grad2, label_only, modelguard_s, modelguard_w, random_noise,  # noqa: F401
                              reverse_sigmoid, rounding, topk)
from msbench.defenses import prada, seat  # noqa: F401  (detection defenses)

from msbench.registry import DEFENSES  # noqa: E402


def reference_defense() -> str:
    """The registry name of the undefended reference, the one defense declaring ``reference = True``
    (Vanilla): the row every benign accuracy is compared with, the denominator of every slowdown.

    Reports and the timing stage ask this instead of naming it, so the reference is the plugin's
    declaration; two or no registered references are a plugin error, reported as such."""
    DEFENSES.load_entry_points()
    found = [name for name, plugin in DEFENSES.items()
             if isinstance(plugin, type) and issubclass(plugin, Defense) and plugin.reference]
    if len(found) != 1:
        raise LookupError(f"expected exactly one registered defense declaring reference = True, found "
                          f"{len(found)}{': ' + ', '.join(found) if found else ''}")
    return found[0]
