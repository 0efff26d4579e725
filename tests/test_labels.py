"""Labels that tell runs apart: the settings that differ, short, numbers sorted by value."""

from __future__ import annotations

from forgetless.labels import file_stem, ordered, run_labels, unique_stems


def _config(strategy="ewc", seed=0, lr=0.1, **params):
    return {"scenario": "split-digits", "protocol": "task", "strategy": strategy, "seed": seed,
            "lr": lr, "epochs": 1, "threads": None, "data_dir": "/x", "strategy_params": params}  # fmt: skip


def test_labels_show_only_what_differs():
    configs = [_config(lam=10.0), _config(lam=1000.0), _config(lam=10.0, lr=0.05)]
    assert run_labels(configs) == ["ewc lam=10 lr=0.1 s0", "ewc lam=1000 lr=0.1 s0",
                                   "ewc lam=10 lr=0.05 s0"]  # fmt: skip
    # A parameter of EWC says nothing about fine-tuning: no "lam=none" on its label.
    mixed = [_config(lam=10.0), _config(lam=100.0), _config("finetune")]
    assert run_labels(mixed) == ["ewc lam=10 s0", "ewc lam=100 s0", "finetune s0"]
    assert run_labels(mixed, seed=False) == ["ewc lam=10", "ewc lam=100", "finetune"]
    # Settings that do not change a run's numbers (threads, data_dir) are never shown.
    other = _config(lam=10.0)
    other["threads"], other["data_dir"] = 4, "/y"
    assert run_labels([_config(lam=10.0), other]) == ["ewc s0 #1", "ewc s0 #2"]


def test_order_is_numeric_and_file_names_never_collide():
    configs = [_config(lam=v) for v in (1000.0, 10.0, 100.0)] + [_config(lam=10.0, seed=1)]
    order = ordered(configs)
    assert [configs[i]["strategy_params"]["lam"] for i in order] == [10.0, 10.0, 100.0, 1000.0]
    assert [configs[i]["seed"] for i in order][:2] == [0, 1]
    assert file_stem("ewc lam=10 lr=0.05 s0") == "ewc_lam10_lr0.05_s0"
    assert unique_stems(["a b", "a_b", "A b"]) == ["a_b", "a_b_2", "A_b_3"]


def test_nested_loop_settings_of_train_results_label_by_name():
    a = {"strategy": "ewc", "seed": 0, "fit": {"lr": 0.1, "epochs": 1, "threads": 2}}
    b = {"strategy": "ewc", "seed": 0, "fit": {"lr": 0.05, "epochs": 1, "threads": 1}}
    assert run_labels([a, b]) == ["ewc lr=0.1 s0", "ewc lr=0.05 s0"]
