"""The victim check covers what runs: each change below must move the fingerprint, and nothing
an honest cell does (answering queries, evaluation) may."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from msbench.fingerprint import fingerprint


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.epsilon = 0.5  # a scalar setting, like MAD's epsilon
        self.table = torch.zeros(3)  # a plain tensor attribute, not a buffer
        self.options = {"mode": "soft", "weights": [1.0, 2.0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x) * self.epsilon + self.table, dim=1)


def _set_epsilon(m: Scaled) -> None:
    m.epsilon = 0.25


def _instance_forward(m: Scaled) -> None:
    m.forward = lambda x: torch.full((len(x), 3), 1 / 3)


def _class_forward(m: Scaled) -> None:
    type(m).forward = lambda self, x: torch.full((len(x), 3), 1 / 3)


def _hook(m: Scaled) -> None:
    m.linear.register_forward_hook(lambda module, inputs, output: output * 0)


def _global_hook(m: Scaled) -> None:
    nn.modules.module.register_module_forward_hook(lambda module, inputs, output: output)


def _tensor(m: Scaled) -> None:
    m.table[0] = 1.0


def _container(m: Scaled) -> None:
    m.options["weights"][1] = 3.0


def _mode(m: Scaled) -> None:
    m.train()


CHANGES = [_set_epsilon, _instance_forward, _class_forward, _hook, _global_hook, _tensor, _container, _mode]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_a_change_to_what_runs_moves_the_fingerprint(change, monkeypatch):
    from torch.nn.modules import module as torch_module

    for table in [name for name in vars(torch_module) if name.startswith("_global_") and name.endswith("hooks")]:
        monkeypatch.setattr(torch_module, table, type(getattr(torch_module, table))(getattr(torch_module, table)))
    monkeypatch.setattr(Scaled, "forward", Scaled.forward)  # restored after the class-level change
    victim = Scaled().eval()
    before = fingerprint(victim)
    change(victim)
    assert fingerprint(victim) != before


def test_answering_and_evaluating_leave_the_fingerprint_alone():
    victim = Scaled().eval()
    before = fingerprint(victim)
    with torch.no_grad():
        victim(torch.rand(8, 4))
    victim.eval()
    assert fingerprint(victim) == before


def test_a_loaded_modelguard_s_victim_keeps_its_fingerprint_as_it_answers():
    from msbench.defenses.base import Softmax
    from msbench.defenses.modelguard_s import ModelGuardSVictim

    torch.manual_seed(0)
    victim = ModelGuardSVictim(Softmax(nn.Linear(4, 3)), epsilon=0.5, max_centroids=4, num_classes=3).eval()
    victim.training_answers = torch.softmax(torch.randn(20, 3, dtype=torch.float64), dim=1)  # as loaded: no codebook yet
    before = fingerprint(victim)
    with torch.no_grad():
        victim(torch.rand(8, 4))  # fills the codebook memo
    assert victim._codebooks and fingerprint(victim) == before
    victim.epsilon = 0.25  # what the memo is a function of is still checked
    assert fingerprint(victim) != before
