"""The command line's options: one declaration (RunConfig's fields) shared by the parser, TOML
files and sweeps; flags that win over files; "did you mean"; one syntax and one spelling per
idea, the old spellings still read with a warning; help without torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from forgetless.cli import build_parser, main
from forgetless.experiment import FIT_OBJECT_FIELDS, LOOP_FIELDS, USUAL_LR, RunConfig
from forgetless.options import attribute_help, run_options, strategy_groups

TINY = ["--n-tasks", "2", "--iterations", "2", "--hidden", "8", "--no-progress", "--json"]


def _config(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["config"]


def test_every_runconfig_field_is_an_option_with_a_meaning():
    options = {o.name: o for o in run_options()}
    names = [f.name for f in dataclasses.fields(RunConfig)]
    assert set(options) == set(names) - {"strategy_params"}
    described = attribute_help(RunConfig)
    for name in names:
        assert len(described.get(name, "")) > 8, f"RunConfig.{name} has no line in Attributes:"
    assert options["batch_size"].flag == "--batch-size" and options["lr"].parse is float
    assert options["hidden"].parse("400,400") == [400, 400]
    assert (
        options["reset_optimizer"].flag == "--keep-optimizer"
        and options["reset_optimizer"].sets is False
    )
    assert options["progress"].flag == "--no-progress"
    assert options["schedule"].parse("1,2,1") == [0, 1, 0]  # counted from 1 on the command line


def test_runconfig_has_fitconfigs_fields_with_their_defaults_and_the_presets_loop():
    from forgetless.engine import FitConfig
    from forgetless.scenarios.presets import Loop

    ours = {f.name: f for f in dataclasses.fields(RunConfig)}
    for f in dataclasses.fields(FitConfig):
        if f.name in FIT_OBJECT_FIELDS:
            continue
        assert f.name in ours, f"FitConfig.{f.name} has no RunConfig field (no flag, no TOML key)"
        if f.name not in LOOP_FIELDS:  # the loop settings default to the scenario's (None)
            # The same setting: equal, or a None that FitConfig reads as its default.
            fit = FitConfig(**{f.name: ours[f.name].default})
            assert getattr(fit, f.name) == f.default, f.name
    assert tuple(f.name for f in dataclasses.fields(Loop)) == LOOP_FIELDS
    assert USUAL_LR["sgd"] == FitConfig.lr


def test_the_torch_free_name_lists_match_the_registries():
    from forgetless import names
    from forgetless.engine import OPTIMIZERS
    from forgetless.models import MODEL_NAMES
    from forgetless.routing import ROUTERS
    from forgetless.scenarios import PRESETS
    from forgetless.strategies import STRATEGIES

    assert tuple(PRESETS) == names.SCENARIOS
    assert tuple(STRATEGIES) == names.STRATEGIES
    assert (names.MODELS, names.OPTIMIZERS, names.ROUTERS) == (MODEL_NAMES, OPTIMIZERS, ROUTERS)


def test_a_run_imports_only_the_strategies_it_uses():
    # In a fresh process: this one has imported every strategy already.
    code = (
        "import json, sys\n"
        "from forgetless.cli import main\n"
        "main(['run', '--scenario', 'split-digits', '--strategy', 'ewc', '--iterations', '2',\n"
        "      '--hidden', '8', '--no-progress', '--json', '--threads', '1'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('forgetless.strategies.'))\n"
        "from forgetless.strategies import STRATEGIES, HAT, make_strategies\n"
        "try:\n"
        "    make_strategies('ewc+hatt')\n"
        "except Exception as err:\n"
        "    error = str(err)\n"
        "hat = STRATEGIES['hat'] is HAT and 'forgetless.strategies.hat' in sys.modules\n"
        "every = all(STRATEGIES[n].name == n for n in STRATEGIES)\n"
        "print(json.dumps([loaded, error, hat, every]), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded, error, hat, every = json.loads(done.stderr.strip().splitlines()[-1])
    # EWC's module and what it imports (the quadratic penalty its family shares), and the two
    # the hand-written MLP step checks a run against (mlp_step.refusal); none of the other 22
    assert loaded == [
        "forgetless.strategies.base",
        "forgetless.strategies.ewc",
        "forgetless.strategies.finetune",
        "forgetless.strategies.quadratic",
        "forgetless.strategies.replay",
    ]
    assert error.startswith("unknown strategy 'hatt' (did you mean 'hat'?); known: finetune,")
    assert hat and every


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["frontier", "--help"]])
def test_help_imports_no_torch(argv):
    code = (
        "import sys\nfrom forgetless.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    assert "usage: forgetless" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "False"  # torch was not imported


def test_run_help_lists_the_strategies_and_the_fields_flags(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--scenario NAME", "--batch-size", "--keep-optimizer", "--eval-batch-size"):
        assert flag in text
    assert "continual-backprop" in text and "forgetless strategies" in text


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path, capsys):
    file = tmp_path / "run.toml"
    file.write_text('strategy = "ewc"\nlam = 50\nbatch_size = 16\nlog_every = 7\nseed = 3\n')
    base = ["run", "--config", str(file), *TINY]
    config = _config(capsys, [*base, "--log-every", "50", "--lam", "100"])
    assert config["log_every"] == 50  # given, at its default value: still wins
    assert config["strategy_params"] == {"lam": 100.0} and config["seed"] == 3
    assert config["batch_size"] == 16  # the file's, where no flag replaces it
    assert main([*base, "--strategy", "si", "--c", "0.5"]) == 2  # the file's lam stays
    assert "parameter(s) lam not accepted by strategy si" in capsys.readouterr().err


def test_sis_c_is_a_parameter_not_an_ambiguous_abbreviation(capsys):
    config = _config(capsys, ["run", "--strategy", "si", "--c", "0.25", *TINY])
    assert config["strategy_params"] == {"c": 0.25}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "--scenaro", "split-digits"],
            "unknown option --scenaro (did you mean --scenario?)",
        ),
        (["run", "--strategy", "ewc", "--lamb", "3"], "did you mean --lam?"),
        (["run", "--strategy", "ewc", "--zzz", "1"], "its parameters: --fisher"),
        (["run", "--buffer-size", "3"], "not accepted by strategy finetune"),
    ],
)
def test_unknown_flags_name_the_closest_option_with_hyphens(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("forgetless: error:") and message in err and "Traceback" not in err
    assert "buffer_size" not in err


def test_commands_without_strategy_parameters_suggest_their_own_options(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["sweep", "x.toml", "--worker", "2"])
    assert exit.value.code == 2 and "did you mean --workers?" in capsys.readouterr().err


def test_parameters_follow_their_strategy():
    argv = ["--lam", "1", "--strategy", "ewc", "--lam", "1:100", "--strategy", "replay",
            "--buffer-size", "50,500", "--buffer", "9"]  # fmt: skip
    extra = ["--lam", "1", "--lam", "1:100", "--buffer-size", "50,500", "--buffer", "9"]
    with pytest.warns(DeprecationWarning, match="'buffer' is deprecated"):
        groups = strategy_groups(argv, extra)
    assert groups == [
        (None, {"lam": "1"}),
        ("ewc", {"lam": "1:100"}),
        ("replay", {"buffer_size": "9"}),  # the old name, renamed; the later value wins
    ]


def test_old_spellings_still_work_with_a_one_line_warning(capsys):
    argv = ["run", "--strategy", "icarl", "--protocol", "class", "--memory-size", "20", *TINY]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["config"]["strategy_params"]["buffer_size"] == 20
    assert err.count("forgetless: warning:") == 1 and "'memory_size' is deprecated" in err

    from forgetless.strategies import ICaRL, make_strategies

    with pytest.warns(DeprecationWarning, match="memory_size"):
        assert ICaRL(memory_size=30).buffer_size == 30
    with pytest.warns(DeprecationWarning, match="'lambda' is deprecated"):
        assert make_strategies("ewc", {"lambda": 5.0})[0].lam == 5.0


def test_frontier_ranges_are_parameter_values_and_seeds_a_list():
    from forgetless.commands import frontier

    parser = build_parser("frontier")
    argv = ["frontier", "--strategy", "ewc", "--lam", "1:100", "--strategy", "pnn",
            "--points", "3", "--seeds", "0,2"]  # fmt: skip
    args, extra = parser.parse_known_args(argv)
    args.argv, args.extra = argv[1:], extra
    assert frontier.strategy_ranges(args) == [("ewc", "lam", [1.0, 10.0, 100.0]), ("pnn", "", [])]
    assert args.seeds == [0, 2]
    old = [
        "frontier",
        "--strategy",
        "ewc",
        "--range",
        "lambda=1:100",
        "--points",
        "3",
        "--seeds",
        "2",
    ]
    with pytest.warns(DeprecationWarning):
        args, extra = parser.parse_known_args(old)
    args.argv, args.extra = old[1:], extra
    assert args.seeds == [0, 1]  # the old count
    with pytest.warns(DeprecationWarning, match="--range is deprecated"):
        assert frontier.strategy_ranges(args) == [("ewc", "lam", [1.0, 10.0, 100.0])]


def test_plasticity_strategy_specs_new_and_old_spelling():
    from forgetless.options import strategy_specs

    argv = ["--strategy", "finetune", "--strategy", "continual-backprop", "--rho", "1e-4"]
    assert strategy_specs(argv, ["--rho", "1e-4"], None) == [
        ("finetune", {}),
        ("continual-backprop", {"rho": "1e-4"}),
    ]
    old = ["--strategy", "continual-backprop:rho=1e-4,maturity=100"]
    with pytest.warns(DeprecationWarning, match="--strategy continual-backprop --rho 1e-4"):
        specs = strategy_specs(old, [], None)
    assert specs == [("continual-backprop", {"rho": "1e-4", "maturity": "100"})]


def test_deprecated_flags_and_the_one_seed_spelling():
    parser = build_parser("plasticity")
    with pytest.warns(DeprecationWarning, match="--tasks is deprecated.*--n-tasks"):
        args, _ = parser.parse_known_args(["plasticity", "--tasks", "3"])
    assert args.n_tasks == 3
    parser = build_parser("frontier")
    args, _ = parser.parse_known_args(["frontier", "--strategy", "ewc", "--seeds", "3,"])
    assert args.seeds == [3]  # a comma makes it a list: the seed 3 alone
    args, _ = parser.parse_known_args(["frontier", "--strategy", "ewc", "--seeds", "0"])
    assert args.seeds == [0]  # 0 was never a count


def test_the_evaluation_batch_is_eval_batch_size_in_every_command():
    parser = build_parser("gate")
    argv = ["gate", "--model", "m.py:f", "--baseline", "a", "--candidate", "b", "--slices", "s"]
    args, _ = parser.parse_known_args([*argv, "--eval-batch-size", "64"])
    assert args.eval_batch_size == 64
    with pytest.warns(DeprecationWarning, match="--batch-size is deprecated.*--eval-batch-size"):
        args, _ = parser.parse_known_args([*argv, "--batch-size", "32"])
    assert args.eval_batch_size == 32


def test_sweeps_read_the_same_declaration():
    """A list field (schedule too, added after the sweep's own list of them) is one value in a
    grid, a list of lists varies it; renamed parameters are read as in run."""
    from forgetless.sweeps import sweep_from_dict

    one = sweep_from_dict({"grid": [{"schedule": [0, 1, 0, 1], "n_tasks": 2}]})
    assert [c.schedule for c in one.configs] == [[0, 1, 0, 1]]
    two = sweep_from_dict({"grid": [{"schedule": [[0, 1], [1, 0]], "n_tasks": 2}]})
    assert [c.schedule for c in two.configs] == [[0, 1], [1, 0]]
    with pytest.warns(DeprecationWarning, match="memory_size"):
        (icarl,) = sweep_from_dict({"grid": [{"strategy": "icarl", "memory_size": 40}]}).configs
    assert icarl.strategy_params == {"buffer_size": 40}
