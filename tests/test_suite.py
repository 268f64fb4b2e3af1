from pathlib import Path

import pytest

from msbench.runner.suite import SuiteError, check_data, load_suite, parse_suite
from tests.conftest import data_root

BASE = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"]}}


def with_(**changes):
    raw = {"matrix": dict(BASE["matrix"])}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    return raw


def error_of(raw) -> SuiteError:
    with pytest.raises(SuiteError) as error:
        parse_suite(raw, "s.toml")
    return error.value


def test_valid_suite_fills_defaults():
    suite = parse_suite(with_(), "s.toml")
    assert suite.matrix.label_modes == ["soft", "hard"] and suite.matrix.seeds == [0]
    assert suite.victim.momentum == 0.5 and suite.clone.momentum == 0.9
    assert suite.attacks["knockoff"].config.budget == 50000
    assert suite.role("mnist", "surrogate") == "emnist-letters"


def test_misspelt_defense_names_file_key_and_suggestion():
    error = error_of(with_(matrix__defenses=["vanila"]))
    assert str(error) == "s.toml: matrix.defenses[0]: unknown defense 'vanila'; did you mean 'vanilla'?"


def test_wrong_type_names_the_key_and_expectation():
    error = error_of(with_(attacks__knockoff={"budget": "many"}))
    assert error.key == "attacks.knockoff.budget" and "expected an integer" in error.message


def test_unknown_key_is_refused_with_suggestion():
    error = error_of(with_(victim__epoch=3))
    assert error.key == "victim.epoch" and "did you mean 'epochs'" in error.message


def test_bad_label_mode_and_composition():
    assert error_of(with_(matrix__label_modes=["soft", "logits"])).key == "matrix.label_modes[1]"
    assert "unknown attack" in error_of(with_(matrix__attacks=["knockof"])).message


def test_file_dataset_definition_is_checked():
    error = error_of(with_(datasets__kmnist_test={"format": "idx", "like": "mnist", "train": "x.npz"}))
    assert error.key == "datasets.kmnist_test.train"


def test_missing_dataset_files_fail_before_training(tmp_path):
    suite = parse_suite(with_(), "s.toml")
    with pytest.raises(SuiteError) as error:
        check_data(suite, tmp_path)
    assert error.value.key == "data" and str(tmp_path) in error.value.message and "matrix.datasets (mnist)" in error.value.message


def test_every_missing_dataset_is_named_in_one_error_and_a_missing_root_is_not_created(tmp_path, monkeypatch):
    monkeypatch.setenv("MSBENCH_DOWNLOAD", "1")  # even where downloads are allowed: a root that is not there stays so
    raw = with_(matrix__defenses=["vanilla", "am"], datasets__mnist={"surrogate": "emnist-letters", "ood": "kmnist-test"},
                datasets__kmnist_test={"format": "idx", "like": "mnist",
                                       "test": {"images": "KMNIST/t10k-images", "labels": "KMNIST/t10k-labels"}})
    raw["datasets"]["kmnist-test"] = raw["datasets"].pop("kmnist_test")
    suite = parse_suite(raw, "s.toml")
    root = tmp_path / "typo-in-the-root"
    with pytest.raises(SuiteError) as error:
        check_data(suite, root)
    text = str(error.value)
    assert len(text.splitlines()) == 1 and text.startswith("s.toml: data: 3 datasets missing under ")
    for name, key in (("mnist", "matrix.datasets (mnist)"), ("emnist-letters", "datasets.mnist.surrogate"),
                      ("kmnist-test", "datasets.mnist.ood")):
        assert f"{name} " in text and key in text
    assert "nothing was downloaded or created" in text and not root.exists()


def test_toml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[matrix\n")
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("broken, key", [
    ('defenses = ["inl"]', "matrix.defenses[0]"),
    ('defenses = "vanilla"', "matrix.defenses"),
])
def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, broken, key):
    from msbench.cli import main

    path = tmp_path / "broken.toml"
    path.write_text(f'[matrix]\ndatasets = ["mnist"]\narchs = ["smallcnn"]\n{broken}\nattacks = ["knockoff"]\n')
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and key in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_cli_missing_data_exits_2(tmp_path, capsys, monkeypatch):
    from msbench.cli import main

    monkeypatch.setenv("MSBENCH_DOWNLOAD", "0")
    path = Path(__file__).resolve().parents[1] / "suites" / "smoke.toml"
    assert main(["run", str(path), "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "smoke.toml: data: 2 datasets missing under" in error and "matrix.datasets (mnist)" in error
    assert not (tmp_path / "nothing").exists()  # a mistyped --data-root is not created


def test_shipped_suites_validate():
    for path in sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.toml")):
        load_suite(path)


def test_paper_mnist_suite_is_the_papers_setting():
    """The reproduction suite: full splits, the seven defenses, InI in the paper's form, the seed
    and victim epochs that fit 2 hours on two cores (MNIST 5, FashionMNIST 10), JBDA with the
    paper's 150 seeds and 6 rounds; its data files exist where the data folder does."""
    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "paper-mnist.toml")
    assert suite.run.train_subset is None and suite.run.test_subset is None
    assert suite.matrix.defenses == ["vanilla", "mad", "am", "edm", "ini", "ini+mad", "ini+am"]
    assert suite.matrix.seeds == [0] and suite.matrix.label_modes == ["soft", "hard"]
    assert suite.matrix.attacks == ["knockoff", "jbda", "knockoff-avg"]
    assert suite.victim_recipe("mnist", "ini").epochs == 5 and suite.victim_recipe("fashionmnist", "ini").epochs == 10
    ini = suite.defenses["ini"].config
    assert ini.variant == "paper" and ini.pcgrad and ini.isolation and ini.induction and ini.grad_norm
    jbda = suite.attacks["jbda"].config
    assert (jbda.seeds, jbda.rounds, jbda.step, jbda.epochs_per_round) == (150, 6, 0.1, 10)
    assert suite.role("mnist", "surrogate") == "emnist-letters"
    root = data_root()
    if root is not None and (root / "KMNIST").exists() and (root / "EMNIST-letters").exists():
        check_data(suite, root)


def test_seeds_suite_is_the_paper_suite_with_more_seeds_of_vanilla_and_ini():
    """``extends``: the seed-spread suite differs from paper-mnist only in its matrix's defenses
    and seeds, so its seed 0 would be paper-mnist's cells exactly (same cell keys)."""
    from msbench.runner.cells import Cell, cell_key
    suites = Path(__file__).resolve().parents[1] / "suites"
    base, seeds = load_suite(suites / "paper-mnist.toml"), load_suite(suites / "paper-mnist-seeds.toml")
    assert seeds.name == "paper-mnist-seeds" and seeds.matrix.defenses == ["vanilla", "ini"] and seeds.matrix.seeds == [1, 2]
    assert seeds.matrix.attacks == base.matrix.attacks and seeds.defenses["ini"].config == base.defenses["ini"].config
    for cell in (Cell("fashionmnist", "smallcnn", "ini", "jbda", "hard", 1), Cell("mnist", "smallcnn", "vanilla", "knockoff", "soft", 2)):
        assert cell_key(seeds, cell) == cell_key(base, cell)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_extends_merges_tables_and_replaces_values(tmp_path):
    write(tmp_path / "base.toml", 'name = "base"\n[matrix]\ndatasets = ["mnist"]\narchs = ["smallcnn"]\n'
          'defenses = ["vanilla", "mad"]\nattacks = ["knockoff"]\nseeds = [0]\n[victim]\nepochs = 3\nlr = 0.05\n')
    child = write(tmp_path / "child.toml", 'extends = "base.toml"\nname = "child"\n[matrix]\nseeds = [1, 2]\n[victim]\nepochs = 4\n')
    suite = load_suite(child)
    assert suite.name == "child" and suite.matrix.seeds == [1, 2] and suite.matrix.defenses == ["vanilla", "mad"]
    assert suite.victim.epochs == 4 and suite.victim.lr == 0.05


@pytest.mark.parametrize("child, expected", [
    ('extends = "missing.toml"\nname = "c"\n', "no such suite file 'missing.toml'"),
    ('extends = "child.toml"\nname = "c"\n', "a cycle"),
    ('extends = 3\nname = "c"\n', "expected the path of a suite TOML file"),
    ('extends = "base.toml"\n', "names itself"),
])
def test_bad_extends_is_one_line_naming_file_and_key(tmp_path, child, expected):
    write(tmp_path / "base.toml", 'name = "base"\n[matrix]\ndatasets = ["mnist"]\narchs = ["smallcnn"]\ndefenses = ["vanilla"]\nattacks = ["knockoff"]\n')
    path = write(tmp_path / "child.toml", child)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_extends_cycle_through_two_files_is_refused(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\nname = "a"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\nname = "b"\n')
    with pytest.raises(SuiteError, match="a cycle"):
        load_suite(tmp_path / "a.toml")


def test_extends_chain_is_bounded_in_one_line_and_a_self_extension_is_a_cycle(tmp_path):
    """A chain of MAX_EXTENDS extends loads; one deeper (1,500 used to end in RecursionError) is one
    line naming the file and ``extends``."""
    from msbench.runner.suite import MAX_EXTENDS

    write(tmp_path / "s0.toml", 'name = "s0"\n[matrix]\ndatasets = ["mnist"]\narchs = ["smallcnn"]\n'
          'defenses = ["vanilla"]\nattacks = ["knockoff"]\n')
    for i in range(1, MAX_EXTENDS + 2):
        write(tmp_path / f"s{i}.toml", f'extends = "s{i - 1}.toml"\nname = "s{i}"\n')
    assert load_suite(tmp_path / f"s{MAX_EXTENDS}.toml").name == f"s{MAX_EXTENDS}"
    with pytest.raises(SuiteError) as error:
        load_suite(tmp_path / f"s{MAX_EXTENDS + 1}.toml")
    assert error.value.key == "extends" and "s1.toml" in error.value.file and f"more than {MAX_EXTENDS}" in str(error.value)
    assert "\n" not in str(error.value)
    write(tmp_path / "self.toml", 'extends = "self.toml"\nname = "self"\n')
    with pytest.raises(SuiteError, match="a cycle"):
        load_suite(tmp_path / "self.toml")


@pytest.mark.parametrize("section", ["matrix", "run", "victim", "clone", "timing", "datasets"])
def test_a_value_where_a_section_table_belongs_is_one_line(tmp_path, section):
    """``matrix = 3`` used to end in an AttributeError traceback from the table reader."""
    text = 'name = "s"\n[matrix]\ndatasets = ["mnist"]\narchs = ["smallcnn"]\ndefenses = ["vanilla"]\nattacks = ["knockoff"]\n'
    path = write(tmp_path / "s.toml", (f"{section} = 3\n" + text) if section != "matrix" else 'name = "s"\nmatrix = 3\n')
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert str(error.value) == f"{path}: {section}: expected a table, got 3"


def test_full_suite_runs_ini_in_the_form_that_trains_at_resnet18_size():
    """docs/methods.md, "InI at ResNet-18 size": the paper form's norm term swamps the benign
    gradient there; full.toml normalises it by sqrt(P) and runs the OOD forward in training mode."""
    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "full.toml")
    ini = suite.defenses["ini"].config
    assert suite.matrix.archs == ["resnet18"] and ini.variant == "paper" and ini.pcgrad
    assert (ini.grad_norm_form, ini.ood_train_mode, ini.beta) == ("rms", True, 1.0)


def test_every_independent_problem_of_a_suite_is_reported_in_one_pass(tmp_path, capsys):
    """Three mistakes are three lines of one error (one edit-and-rerun cycle, not three), each naming its key."""
    from msbench.cli import main as cli_main

    path = tmp_path / "three.toml"
    path.write_text('[matrix]\ndatasets = ["mnist"]\narchs = ["smallcnn"]\ndefenses = ["vanilla"]\n'
                    'attacks = ["knockoff", "knockof"]\n[run]\nval_fraction = 1.5\n[victim]\nlr = -1\n')
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    lines = str(error.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["run.val_fraction", "victim.lr", "matrix.attacks[1]"]
    assert error.value.key == "run.val_fraction"  # the first problem, for a caller that reads one
    assert cli_main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith(f"msbench: {path}: ") for line in err)
