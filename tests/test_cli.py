"""The forgetless command, end to end, in process."""

import json

import pytest

from forgetless.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("accuracy (%)      task 1") == 4  # the collapse, replay, EWC, the bound
    assert "ACC: the mean accuracy" in out and "BWT: the mean change" in out
    assert "'random init' row is the untrained network" in out
    assert "fell from" in out
    results = {
        name: json.loads((tmp_path / name / "result.json").read_text())["metrics"]
        for name in ("finetune", "replay", "ewc", "joint", "finetune-task")
    }
    assert results["finetune"]["bwt"] < -0.9  # the collapse: every old task wiped out
    assert results["replay"]["acc"] > results["finetune"]["acc"] + 0.5  # replay works
    # EWC, with the task given, forgets less than fine-tuning on the same stream
    assert results["ewc"]["bwt"] > results["finetune-task"]["bwt"] + 0.03
    assert results["joint"]["acc"] > 0.9 and results["joint"]["acc"] > results["replay"]["acc"]


def test_run_writes_config_and_result(capsys, tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--scenario",
            "split-digits",
            "--protocol",
            "task",
            "--hidden",
            "32",
            "--epochs",
            "2",
            "--lr",
            "0.1",
            "--seed",
            "3",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert config["seed"] == 3 and config["hidden"] == [32] and config["protocol"] == "task"
    assert len(result["accuracy_matrix"]) == 5 and all(
        len(r) == 5 for r in result["accuracy_matrix"]
    )
    assert all(0 <= a <= 1 for row in result["accuracy_matrix"] for a in row)
    assert {"acc", "bwt", "fwt", "forgetting"} <= result["metrics"].keys()
    assert "after task 5" in capsys.readouterr().out


def test_strategy_parameters_pass_through(capsys):
    code = main(
        [
            "run",
            "--strategy",
            "cumulative",
            "--from-scratch",
            "false",
            "--n-tasks",
            "2",
            "--epochs",
            "1",
            "--no-progress",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["strategy_params"] == {"from_scratch": False}  # typed, as trained


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--strategy", "finetun"], "did you mean 'finetune'"),
        (["run", "--lam", "3"], "not accepted by strategy finetune"),
        (["run", "--epochs", "0"], "epochs must be a positive integer"),
        (
            ["run", "--scenario", "split-digits", "--protocol", "domain", "--n-tasks", "3"],
            "domain-incremental protocol needs the same classes",
        ),
        (["run", "--standardize", "dataset"], "split-digits has no published input statistics"),
        (["run", "--strategy", "replay", "--buffer-policy", "fifo"], "buffer_policy must be"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("forgetless: error:") and message in err
    assert "Traceback" not in err


def test_missing_data_names_what_to_get(capsys, tmp_path, monkeypatch):
    from forgetless.data import catalog

    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path))
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(catalog, "SYSTEM_DIRS", (tmp_path / "system",))
    assert main(["run", "--scenario", "split-mnist", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "forgetless data fetch mnist" in err and "train-images-idx3-ubyte" in err


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion-mnist", "kmnist"):
        assert name in out


def test_run_from_a_toml_config_file_with_overrides(tmp_path, capsys):
    file = tmp_path / "run.toml"
    file.write_text(
        'scenario = "split-digits"\nprotocol = "task"\nstrategy = "ewc"\nlam = 50\n'
        "iterations = 5\nseed = 4\n"
    )
    assert main(["run", "--config", str(file), "--seed", "7", "--no-progress", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["strategy"], config["protocol"], config["iterations"]) == ("ewc", "task", 5)
    assert config["strategy_params"] == {"lam": 50.0}  # typed: 50 and 50.0 are one run
    assert config["seed"] == 7  # the command line wins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'scenario = "split-digits"\nlearning_rate = 0.1\n',
            "parameter(s) learning_rate not accepted",
        ),
        ('scenaro = "split-digits"\n', "did you mean 'scenario'"),
        ("lam = [", "is not valid TOML"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, capsys, text, message):
    file = tmp_path / "run.toml"
    file.write_text(text)
    assert main(["run", "--config", str(file), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_toml_files_are_read_on_python_3_10_too(tmp_path, monkeypatch):
    """pyproject says Python >= 3.10; tomllib arrived in 3.11, so 3.10 reads TOML with tomli
    (the same parser, a dependency there). Pretend to be 3.10, with tomli in place."""
    import importlib
    import sys

    import tomllib

    import forgetless.toml_file as toml_file

    file = tmp_path / "c.toml"
    file.write_text('strategy = "ewc"\nlam = 10.0\n')
    monkeypatch.setattr(sys, "version_info", (3, 10, 0, "final", 0))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # "import tomllib" now fails
    monkeypatch.setitem(sys.modules, "tomli", tomllib)
    try:
        reloaded = importlib.reload(toml_file)
        assert reloaded.tomllib is tomllib
        assert reloaded.read_toml(file) == {"strategy": "ewc", "lam": 10.0}
    finally:
        monkeypatch.undo()
        importlib.reload(toml_file)


def test_strategies_lists_every_strategy_parameter_with_a_meaning_and_its_choices(capsys):
    """`forgetless strategies` (which `run --help` points to, so that it needs no torch)."""
    from forgetless.strategies import STRATEGIES, parameter_help, strategy_parameters

    assert main(["strategies"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.strip().startswith("--fisher auto"))
    assert (
        "Fisher estimate" in line
        and "auto|exact|sample|empirical|weighted-empirical|batched" in line
    )
    assert "--gate example" in text and "(example|batch)" in text
    assert "--buffer-size 200" in text and "buffer_size" not in text  # flags, with hyphens
    for cls in STRATEGIES.values():
        meanings = parameter_help(cls)
        assert set(meanings) == set(strategy_parameters(cls))
        for name, meaning in meanings.items():
            assert 3 < len(meaning) <= 120 and "``" not in meaning, (cls.name, name, meaning)


def test_a_flag_given_at_its_default_value_still_wins_over_the_config_file(tmp_path, capsys):
    """--lr 0.01 is SGD's default, yet given on the command line it must replace the file's lr
    (the merge used to keep only flags whose value differed from the default)."""
    file = tmp_path / "run.toml"
    file.write_text("lr = 0.5\nseed = 4\niterations = 2\nn_tasks = 2\nhidden = [8]\n")
    argv = ["run", "--config", str(file), "--lr", "0.01", "--seed", "0", "--no-progress", "--json"]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["lr"] == 0.01 and config["seed"] == 0
    assert config["iterations"] == 2 and config["hidden"] == [8]  # the file's, where no flag


def test_only_a_command_line_run_ends_its_process_itself_after_the_exit_handlers():
    # In a fresh process: a command-line call never returns. Its output still arrives (stdout
    # is a pipe here, so buffered), the atexit handlers run, and the exit code is the command's.
    import subprocess
    import sys

    probe = (
        "import atexit, gc, sys\n"
        "from forgetless.cli import main\n"
        "main(['strategies', 'ewc'])\n"
        "print('returned', gc.get_freeze_count(), 'torch' in sys.modules)\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "sys.argv = ['forgetless', 'strategies', 'no-such-strategy']\n"
        "main()\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr  # the command's code: an unknown strategy
    lines = done.stdout.splitlines()
    assert "returned 0 True" in lines  # called with argv: it returned, nothing frozen
    assert lines[-1] == "exit handler ran" and "not reached" not in lines
    assert "unknown strategy 'no-such-strategy'" in done.stderr
