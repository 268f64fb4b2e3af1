"""Detection defenses (PRADA, SEAT) and the stateful threat model: per-account monitors, refused
accounts, the attacker's relay and adaptive strategies, and bad settings as one-line errors.

Each test is built so that a wrong method fails it: PRADA's W is checked against scipy's
Shapiro-Wilk on distances computed by hand from a constructed stream in which one query does not
join the growing set (a detector measuring to every earlier query, or dropping the set's rule,
gets other distances); SEAT must stop a near-duplicate stream and pass distinct images; a stopped
account must get no answer and no count.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy.stats import shapiro
from torch import nn

from msbench.attacks.adaptive import Spread
from msbench.defenses.prada import Prada, PradaMonitor
from msbench.defenses.seat import Seat, SeatMonitor, nearest_distances
from msbench.detection import AccountService, AccountStopped, Monitor, Relay
from msbench.detection.measure import benign_rate
from msbench.data import ImageData
from msbench.oracle import Oracle, QueryLedger
from msbench.config import SuiteError
from msbench.runner.suite import load_suite
from tests.conftest import synthetic_images, synthetic_suite

SHAPE = (1, 4, 4)


def line_stream(gaps: list[float]) -> torch.Tensor:
    """Queries on a line through pixel 0: each ``gap`` further than the last (flattened images)."""
    positions = np.concatenate([[0.0], np.cumsum(gaps)])
    x = torch.zeros(len(positions), int(np.prod(SHAPE)), dtype=torch.float64)
    x[:, 0] = torch.tensor(positions)
    return x.view(len(positions), *SHAPE)


def test_prada_statistic_is_shapiro_wilk_of_the_growing_set_distances():
    """108 increasing gaps (each query joins its class's set), then a query 0.9 beyond the last one,
    below the class threshold (about 1.0), so it stays out of the set, then one 1.0 beyond it: its
    distance is measured to the set (1.9), not to the query before it (1.0). W at the 111th query
    (a test point: every 10th query from the first) must be scipy's W on exactly these distances."""
    gaps = list(1 + (np.arange(1, 109) / 108) ** 2)
    x = torch.cat([line_stream(gaps), line_stream(gaps + [0.9, 1.0])[-2:]])
    monitor = PradaMonitor(delta=1e-9)
    assert monitor.screen(x.float(), torch.zeros(len(x), dtype=torch.long)) is None
    assert len(monitor.sets[0]) == 110, "the query 0.9 away should not join the growing set"
    expected = np.asarray(gaps + [0.9, 1.9])
    assert monitor.last_w == pytest.approx(shapiro(expected).statistic, abs=1e-6)
    assert monitor.statistic() == pytest.approx(shapiro(expected).statistic, abs=1e-6)


def test_prada_flags_at_the_first_test_below_delta_and_not_before_enough_distances():
    gaps = list(1 + (np.arange(1, 109) / 108) ** 2) + [0.9, 1.0]
    x = line_stream(gaps).float()
    w = shapiro(np.asarray(gaps[:108] + [0.9, 1.9])).statistic
    labels = torch.zeros(len(x), dtype=torch.long)
    assert PradaMonitor(delta=w + 1e-3).screen(x, labels) == 110  # the first test with more than 100 distances
    assert PradaMonitor(delta=w - 1e-3).screen(x, labels) is None
    few = PradaMonitor(delta=0.999)
    assert few.screen(x[:101], labels[:101]) is None and few.statistic() is None  # 100 distances: no test yet


def test_prada_pools_only_classes_with_enough_distances():
    monitor = PradaMonitor(delta=0.5)
    x = line_stream([1.0 + 0.01 * k for k in range(20)]).float()
    monitor.screen(x[:9], torch.ones(9, dtype=torch.long))  # class 1: 8 distances, below class_min
    monitor.screen(x[9:], torch.zeros(12, dtype=torch.long))  # class 0: 11 distances
    assert len(monitor.pooled()) == 11


def near_duplicates(count: int, seed: int = 0) -> torch.Tensor:
    base = torch.tensor(synthetic_images(0, 1, seed)[0]).float().div(255).unsqueeze(1)
    noise = torch.rand((count, 1, 28, 28), generator=torch.Generator().manual_seed(seed)) * 0.02 - 0.01
    return (base + noise).clamp(0, 1)


def distinct_images(count: int, seed: int) -> torch.Tensor:
    return torch.tensor(synthetic_images(0, count, seed)[0]).float().div(255).unsqueeze(1)


def test_seat_stops_near_duplicates_and_passes_distinct_images():
    """The pair threshold from distinct images' nearest-neighbour distances (0.1th percentile): a
    stream of copies of one image under 1% noise passes the bound within a few queries; a stream
    of 300 distinct images makes almost no close pair."""
    encoder = nn.Flatten()
    delta = float(np.percentile(nearest_distances(encoder, distinct_images(400, seed=7), torch.device("cpu")), 0.1))
    labels = torch.zeros(300, dtype=torch.long)
    duplicates = SeatMonitor(encoder, delta, bound=20)
    flagged = duplicates.screen(near_duplicates(300), labels)
    assert flagged is not None and flagged <= 8, f"near-duplicates flagged at {flagged}"  # 7 copies make 21 pairs
    distinct = SeatMonitor(encoder, delta, bound=20)
    assert distinct.screen(distinct_images(300, seed=11), labels) is None and distinct.pairs <= 2


def test_seat_counts_pairs_across_batches_in_order():
    monitor = SeatMonitor(nn.Flatten(), delta=0.5, bound=7)
    x = torch.zeros(4, *SHAPE)  # identical: every pair is close
    assert monitor.screen(x[:2], torch.zeros(2)) is None and monitor.pairs == 1
    assert monitor.screen(x[2:], torch.zeros(2)) is None and monitor.pairs == 6  # 1 + 2 + 3 pairs: not past the bound
    assert monitor.screen(x[:2] + 1, torch.zeros(2)) is None and monitor.pairs == 7  # far from the history, close to each other
    assert monitor.screen(x[:1], torch.zeros(1)) == 0  # 4 more pairs pass the bound at this batch's first query


class FlagAt(Monitor):
    """Flags its account at its ``at``-th query (0-based), counting across batches."""

    def __init__(self, at: int):
        self.at, self.seen = at, 0

    def screen(self, x: torch.Tensor, labels: torch.Tensor) -> int | None:
        start, self.seen = self.seen, self.seen + len(x)
        return self.at - start if start <= self.at < self.seen else None


class Counting(AccountService):
    """The API, counting the queries each account sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: dict[int, int] = {}

    def __call__(self, x: torch.Tensor, account: int) -> torch.Tensor:
        self.sent[account] = self.sent.get(account, 0) + len(x)
        return super().__call__(x, account)


def service(at: int, budget: int = 100) -> tuple[Counting, QueryLedger, list[int]]:
    ledger, predicted = QueryLedger(), []

    def predict(x: torch.Tensor) -> torch.Tensor:
        predicted.append(len(x))
        return torch.full((len(x), 3), 1 / 3)
    oracle = Oracle(predict, "soft", budget, 3, input_shape=SHAPE, ledger=ledger)
    return Counting(oracle, lambda x: torch.zeros(len(x), dtype=torch.long), lambda: FlagAt(at)), ledger, predicted


def test_a_stopped_account_gets_no_answers_and_its_refused_queries_are_not_counted():
    api, ledger, predicted = service(at=5)
    account = api.open_account()
    assert len(api(torch.rand(4, *SHAPE), account)) == 4
    with pytest.raises(AccountStopped) as stop:
        api(torch.rand(4, *SHAPE), account)  # its 6th query (index 5) is flagged
    assert stop.value.answered == 1 and len(stop.value.answers) == 1
    assert ledger.queries == 5 and sum(predicted) == 5, "the flagged query and the rest of its batch were answered"
    with pytest.raises(AccountStopped) as again:
        api(torch.rand(3, *SHAPE), account)
    assert again.value.answered == 0 and ledger.queries == 5 and sum(predicted) == 5
    other = api.open_account()
    assert len(api(torch.rand(2, *SHAPE), other)) == 2 and ledger.queries == 7  # other accounts are served


def test_the_relay_replaces_stopped_accounts_and_keeps_what_came_before_the_stop():
    api, ledger, _ = service(at=10)
    relay = Relay(api)
    x = torch.rand(25, *SHAPE)
    answers = relay(x)
    assert len(answers) == 25 and ledger.queries == 25 and relay.queries == 25
    assert relay.stops == [10, 20] and relay.opened == 3 and relay.own == 1
    assert relay.stop_queries == 10
    kept = torch.cat(relay.kept_x)
    assert torch.equal(kept, x[:10]), "the attacker keeps exactly the queries answered before its account was stopped"


def test_spread_deals_queries_round_robin_over_its_accounts():
    api, ledger, _ = service(at=1000)
    relay = Relay(api)
    send = Spread(Spread.Config(budget=30, accounts=3)).sender(relay, ctx=None)  # spreading needs no context
    x = torch.rand(10, *SHAPE)
    answers = send(x)
    send(torch.rand(5, *SHAPE))
    assert api.sent == {0: 5, 1: 5, 2: 5} and relay.own == 3 and ledger.queries == 15 and len(answers) == 10


def test_spread_over_k_accounts_is_stopped_only_when_all_k_are():
    api, ledger, _ = service(at=4)  # every account is flagged at its 5th query
    relay = Relay(api)
    send = Spread(Spread.Config(budget=30, accounts=3)).sender(relay, ctx=None)
    send(torch.rand(30, *SHAPE))
    assert relay.stops[:3] == [12, 14, 15] or len(relay.stops) >= 3
    assert relay.stop_queries == relay.stops[2] and relay.opened > 3 and ledger.queries == 30


@pytest.mark.parametrize("plugin, table, key, message", [
    ("spread", {"accounts": 0}, "accounts", "at least 1 account"),
    ("prada", {"delta": 1.5}, "delta", "in (0, 1)"),
    ("prada", {"delta": 0.0}, "delta", "in (0, 1)"),
    ("seat", {"percentile": 0.0}, "percentile", "in (0, 100)"),
    ("seat", {"benign_users": 0}, "benign_users", "positive integer"),
])
def test_bad_settings_are_one_line_errors_naming_the_key(plugin, table, key, message):
    cls = {"spread": Spread, "prada": Prada, "seat": Seat}[plugin]
    with pytest.raises(ValueError) as error:
        cls(dataclasses.replace(cls.Config(), **table))
    text = str(error.value)
    assert "\n" not in text and key in text and message in text and plugin in text


def test_a_benign_stream_longer_than_the_test_split_is_a_one_line_error_naming_the_key():
    test = ImageData(torch.zeros(50, 1, 4, 4, dtype=torch.uint8), torch.zeros(50, dtype=torch.long), "tiny")

    class Victim(nn.Module):
        benign_users, benign_queries = 2, 60

        def new_monitor(self) -> Monitor:
            return FlagAt(10 ** 6)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match=r"^defenses\.prada\.benign_queries: 60 queries per benign user is longer than the test split \(50 images\)$"):
        benign_rate(Victim(), victim, test, 2, 60, 0, torch.device("cpu"), "defenses.prada.benign_queries")
    assert benign_rate(Victim(), victim, test, 2, 50, 0, torch.device("cpu"), "defenses.prada.benign_queries")[0] == 0.0


def test_detection_defenses_answer_exactly_as_their_base():
    base = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=1))
    x = torch.rand(8, *SHAPE)
    module = Prada().build(base, ctx=None)
    assert torch.equal(module(x), base(x))


def test_a_suite_whose_attacker_has_zero_accounts_fails_in_one_line_naming_the_key(tmp_path):
    path = synthetic_suite(tmp_path, matrix={"defenses": ["prada"], "attacks": ["spread"]},
                           attacks={"spread": {"accounts": 0, "budget": 100}})
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    text = str(error.value)
    assert "\n" not in text and "attacks.spread.accounts" in text and "at least 1 account" in text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from msbench.runner.suite import check_data
    from msbench.runner.workspace import Workspace
    from tests.conftest import single_thread
    tmp = tmp_path_factory.mktemp("detection")
    path = synthetic_suite(tmp, matrix={"defenses": ["prada", "seat"], "attacks": ["knockoff-avg", "spread"]},
                           defenses={"prada": {"benign_users": 3, "benign_queries": 100},
                                     "seat": {"benign_users": 3, "benign_queries": 100, "epochs": 1, "calibration": 300,
                                              "bound": 20}},
                           attacks={"knockoff-avg": {"budget": 300, "perturbation": "gaussian", "sigma": 0.01}, "spread": {"budget": 300, "accounts": 2}})
    suite = load_suite(path)
    check_data(suite, tmp)
    with single_thread():
        yield Workspace(suite, tmp, tmp / "run", torch.device("cpu"))


CELLS = [("seat", "knockoff-avg"), ("seat", "spread"), ("prada", "knockoff-avg"), ("vanilla", "knockoff-avg")]


@pytest.fixture(scope="module")
def records(workspace) -> dict[tuple[str, str], dict]:
    """The cells of ``CELLS`` through the runner, as stored (JSON round trip)."""
    from msbench.runner.cells import Cell, cell_key
    from msbench.runner.evaluate import run_cell
    out = {}
    for defense, attack in CELLS:
        cell = Cell("synth", "smallcnn", defense, attack, "soft", 0)
        out[defense, attack] = json.loads(json.dumps(run_cell(workspace, cell, cell_key(workspace.suite, cell))))
    return out


@pytest.mark.parametrize("defense, attack", CELLS[:3])
def test_a_detection_cell_records_its_stop_and_the_clone_kept_there(records, defense, attack):
    """Through the runner: the record counts every answered query, the attacker's accounts and the
    accounts opened; when stopped, ``clone_acc`` is the clone trained on what came before the stop."""
    from msbench.runner.results import RECORD_SCHEMA, record_problem
    record = records[defense, attack]
    assert record_problem(record, record["cell_id"]) is None and set(RECORD_SCHEMA["ok"]) <= set(record)
    assert record["queries"] == 300 and record["attacker_accounts"] == (2 if attack == "spread" else 1)
    assert record["benign_fpr"] == 0.0 and record["monitor_ms"] > 0
    if defense == "seat" and attack == "knockoff-avg":  # five copies of every image under 1% noise: close pairs
        assert record["flag_queries"] < 300 and record["stop_queries"] <= 300
        assert record["accounts_needed"] > record["attacker_accounts"]
    if record["stop_queries"] == record["stop_queries"]:  # stopped: the kept clone is not the unstopped one
        assert record["clone_acc"] != record["clone_unstopped"] or record["stop_queries"] == 300


def test_the_report_shows_stops_kept_clones_accounts_and_claims(records, tmp_path):
    """The detection table, the worst case's accounts and the verdict sentences, from the run tables alone."""
    from msbench.report.detection import detection_tables, summary
    from msbench.report.headline import verdict_sentences
    from msbench.report.load import load_runs
    from msbench.report.verdict import worst_case
    from msbench.runner.results import write_tables
    write_tables(tmp_path, list(records.values()))
    tables = load_runs(tmp_path)
    frame = summary(tables).set_index(["defense", "attack"])
    seat = records["seat", "knockoff-avg"]
    assert frame.loc[("seat", "knockoff-avg"), "stop_queries"] == seat["stop_queries"]
    assert frame.loc[("seat", "knockoff-avg"), "kept"] == pytest.approx(seat["clone_acc"])
    assert frame.loc[("seat", "knockoff-avg"), "reference_clone"] == pytest.approx(records["vanilla", "knockoff-avg"]["clone_acc"])
    assert ("vanilla", "knockoff-avg") not in frame.index  # no detector, no detection row
    table, = detection_tables(tables)
    assert "3.8 to 16 times more accounts" in table.caption and "no false positives" in table.caption
    worst = worst_case(tables).set_index("defense")
    assert worst.loc["seat", "accounts_needed"] == records["seat", worst.loc["seat", "attack"]]["accounts_needed"]
    assert worst.loc["vanilla", "accounts_needed"] != worst.loc["vanilla", "accounts_needed"]  # NaN: no accounts
    sentences = [s for s in verdict_sentences(tables) if s.startswith("SEAT")]
    assert len(sentences) == 1 and "Its paper claims" in sentences[0]
    from msbench.report.detection import curves_at_stops
    curves = curves_at_stops(tables).curves
    stopped = curves[(curves["defense"] == "seat") & (curves["attack"] == "knockoff-avg")]
    assert stopped["queries"].max() == seat["stop_queries"], "a stopped attacker's curve goes past its stop"
    assert stopped.iloc[-1]["clone_acc"] == pytest.approx(seat["clone_acc"])
    unstopped = curves[curves["defense"] == "vanilla"]
    assert len(unstopped) == len(tables.curves[tables.curves["defense"] == "vanilla"])


def test_a_benign_stream_longer_than_the_subset_test_split_is_refused_before_any_work(tmp_path, mnist_root):
    from msbench.runner.suite import check_data
    from tests.conftest import tiny_suite

    suite = load_suite(tiny_suite(tmp_path, matrix={"defenses": ["prada"]}, run={"test_subset": 100},
                                  defenses={"prada": {"benign_queries": 150}}))
    with pytest.raises(SuiteError) as refused:
        check_data(suite, mnist_root)
    message = str(refused.value)
    assert "\n" not in message and "defenses.prada.benign_queries" in message
    assert "150 queries per benign user is longer than mnist's test split (100 images)" in message
