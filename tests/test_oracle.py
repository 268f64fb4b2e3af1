import pytest
import torch

from msbench.oracle import BudgetExceeded, InvalidQuery, Oracle, QueryLedger


def softmax_model(x: torch.Tensor) -> torch.Tensor:
    logits = torch.stack([x.mean(dim=(1, 2, 3)) * k for k in range(4)], dim=1)
    return torch.softmax(logits, dim=1)


def test_soft_mode_returns_the_probabilities():
    oracle = Oracle(softmax_model, "soft", budget=10, num_classes=4)
    x = torch.rand(3, 1, 5, 5)
    assert torch.allclose(oracle(x), softmax_model(x))


def test_hard_mode_returns_only_a_one_hot_of_the_top1():
    oracle = Oracle(softmax_model, "hard", budget=10, num_classes=4)
    x = torch.rand(5, 1, 5, 5)
    answer = oracle(x)
    assert set(answer.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(answer.sum(dim=1), torch.ones(5))
    assert torch.equal(answer.argmax(dim=1), softmax_model(x).argmax(dim=1))


def test_budget_is_counted_and_enforced():
    oracle = Oracle(softmax_model, "soft", budget=7, num_classes=4)
    oracle(torch.rand(4, 1, 5, 5))
    assert oracle.queries == 4 and oracle.remaining == 3
    with pytest.raises(BudgetExceeded):
        oracle(torch.rand(4, 1, 5, 5))
    assert oracle.queries == 4  # a refused batch is not answered and not counted
    oracle(torch.rand(3, 1, 5, 5))
    assert oracle.remaining == 0


def test_answers_carry_no_gradient_to_the_victim():
    weight = torch.ones(1, requires_grad=True)
    oracle = Oracle(lambda x: softmax_model(x * weight), "soft", budget=10, num_classes=4)
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    answer = oracle(x)
    assert not answer.requires_grad
    assert not [name for name in dir(oracle) if not name.startswith("__") and "weight" in name]


def test_unknown_label_mode_is_refused():
    with pytest.raises(ValueError):
        Oracle(softmax_model, "logits", budget=1, num_classes=4)


def test_count_and_budget_cannot_be_assigned_and_the_ledger_keeps_the_true_count():
    ledger = QueryLedger()
    oracle = Oracle(softmax_model, "soft", budget=5, num_classes=4, ledger=ledger)
    oracle(torch.rand(3, 1, 5, 5))
    for name, value in (("queries", 0), ("budget", 10**9), ("remaining", 10**9), ("_call", None), ("_facts", None)):
        with pytest.raises(AttributeError):
            setattr(oracle, name, value)
        with pytest.raises(AttributeError):
            delattr(oracle, name)
    assert oracle.queries == ledger.queries == 3 and oracle.budget == 5
    with pytest.raises(BudgetExceeded):
        oracle(torch.rand(3, 1, 5, 5))
    assert ledger.queries == 3


BAD_QUERIES = {
    "uint8": torch.randint(0, 256, (2, 1, 5, 5), dtype=torch.uint8),
    "int64": torch.zeros(2, 1, 5, 5, dtype=torch.long),
    "bool": torch.zeros(2, 1, 5, 5, dtype=torch.bool),
    "nan": torch.rand(2, 1, 5, 5).index_put_((torch.tensor([1]),), torch.tensor(float("nan"))),
    "inf": torch.rand(2, 1, 5, 5).index_put_((torch.tensor([0]),), torch.tensor(float("inf"))),
    "rank 3": torch.rand(1, 5, 5),
    "rank 5": torch.rand(2, 1, 1, 5, 5),
    "channels": torch.rand(2, 3, 5, 5),
    "size": torch.rand(2, 1, 6, 5),
    "numpy": torch.rand(2, 1, 5, 5).numpy(),
}


@pytest.mark.parametrize("case", sorted(BAD_QUERIES))
def test_invalid_queries_are_refused_before_they_are_counted_or_answered(case):
    asked = []
    ledger = QueryLedger()
    oracle = Oracle(lambda x: (asked.append(x), softmax_model(x))[1], "soft", budget=10, num_classes=4,
                    input_shape=(1, 5, 5), ledger=ledger)
    with pytest.raises(InvalidQuery):
        oracle(BAD_QUERIES[case])
    assert ledger.queries == 0 and oracle.remaining == 10 and not asked


def test_float_queries_of_the_input_shape_are_answered_in_any_float_precision():
    oracle = Oracle(softmax_model, "soft", budget=10, num_classes=4, input_shape=(1, 5, 5))
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    assert torch.allclose(oracle(x), softmax_model(x.float())) and oracle.queries == 2
