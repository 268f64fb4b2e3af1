"""Attacks: importing this package registers the built-in ones."""
from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets  # noqa: F401
from msbench.attacks import knockoff  # noqa: F401
from msbench.attacks import jbda  # noqa: F401
from msbench.attacks import knockoff_avg  # noqa: F401
from msbench.attacks import recovery  # noqa: F401
from msbench.attacks import dfme  # noqa: F401
from msbench.attacks import activethief  # noqa: F401
from msbench.attacks import adaptive  # noqa: F401  (spread, interleave, blind: against detection defenses)
