"""Defenses: importing this package registers the built-in ones."""
from msbench.defenses.base import (Defense, OutputDefense, Softmax, TrainingDefense, VictimContext,  # noqa: F401
                                   load_cached_victim, load_victim, save_victim)
from msbench.defenses import vanilla  # noqa: F401
from msbench.defenses import edm, ini  # noqa: F401
from msbench.defenses import am, mad  # noqa: F401
from msbench.defenses import (dcp, grad2, label_only, modelguard_s, modelguard_w, random_noise,  # noqa: F401
                              reverse_sigmoid, rounding, topk)
