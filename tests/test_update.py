"""Updating a trained model (digits 0-4, then new data: digits 5-9): fine-tuning fails the gate
on the old slice, replay from a retained sample narrows the drop; weight interpolation draws the
trade-off; the monitor records the decisions and flags the fall. Python API and CLI."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from forgetless import ConfigError, update
from forgetless.cli import main
from forgetless.data.digits import load_digits
from forgetless.production import interpolate, merge_sweep, monitor
from forgetless.production.loading import save_weights

FACTORY = """
import torch
from torch import nn

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
"""
FIT = dict(epochs=5, batch_size=32, optimizer="adam", lr=0.003, progress=False)


def _make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def digits():
    """Old data (digits 0-4) and new (5-9): train and test arrays, a retained 10% of the old
    training set, and a model trained on the old data."""
    d = load_digits()
    xtr, ytr = d.train.inputs().numpy(), d.train.y.numpy()
    xte, yte = d.test.inputs().numpy(), d.test.y.numpy()
    old, new = ytr < 5, ytr >= 5
    data = {
        "old": (xtr[old], ytr[old]),
        "new": (xtr[new], ytr[new]),
        "old_test": (xte[yte < 5], yte[yte < 5]),
        "new_test": (xte[yte >= 5], yte[yte >= 5]),
    }
    rng = np.random.default_rng(0)
    keep = rng.choice(int(old.sum()), size=int(old.sum()) // 10, replace=False)
    data["retained"] = (data["old"][0][keep], data["old"][1][keep])
    model = _make_model()
    x, y = torch.from_numpy(data["old"][0]), torch.from_numpy(data["old"][1])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.003)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        for idx in torch.randperm(len(x), generator=g).split(32):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
    return data, model.eval()


def test_fine_tuning_fails_the_gate_on_the_old_slice(digits):
    data, model = digits
    before = copy.deepcopy(model.state_dict())
    outcome = update(model, data["new"], None, "finetune", slices={"digits 0-4": data["old_test"]},
                     new_test=data["new_test"], **FIT)  # fmt: skip
    for name, value in model.state_dict().items():  # the deployed model is left alone
        assert torch.equal(value, before[name])
    old, new = outcome.comparison["digits 0-4"], outcome.comparison["new data"]
    assert old.baseline_accuracy > 0.95 and old.verdict == "fail"
    assert old.change < -0.5  # class-incremental fine-tuning forgets (-70 points at seed 0)
    assert new.baseline_accuracy == 0.0 and new.candidate_accuracy > 0.8
    assert outcome.comparison.exit_code == 1
    # The engine's matrix: row 0 is the given model (measured, not trained), row 1 the update.
    assert outcome.result.accuracy_matrix[0] == outcome.result.baseline
    assert outcome.result.accuracy_matrix[1][0] == pytest.approx(old.candidate_accuracy)


def test_replay_from_a_retained_sample_narrows_the_drop(digits):
    data, model = digits
    slices = {"digits 0-4": data["old_test"]}
    common = dict(slices=slices, new_test=data["new_test"], **FIT)
    finetune = update(model, data["new"], None, "finetune", **common)
    replay = update(model, data["new"], data["retained"], "replay", **common)
    assert replay.params == {"buffer_size": len(data["retained"][1]), "store_new": False}
    drop_finetune = -finetune.comparison["digits 0-4"].change
    drop_replay = -replay.comparison["digits 0-4"].change
    assert drop_finetune - drop_replay > 0.3, (drop_finetune, drop_replay)
    assert replay.comparison["new data"].candidate_accuracy > 0.8


def test_strategies_that_need_old_data_ask_for_it(digits):
    data, model = digits
    with pytest.raises(ConfigError, match="give old"):
        update(model, data["new"], None, "ewc", slices={"old": data["old_test"]})
    with pytest.raises(ConfigError, match="needs old data to judge"):
        update(model, data["new"])


def test_interpolation_is_the_weighted_mean():
    old = {"w": torch.tensor([0.0, 4.0]), "steps": torch.tensor(3)}
    new = {"w": torch.tensor([8.0, 0.0]), "steps": torch.tensor(9)}
    merged = interpolate(old, new, 0.25)
    assert torch.equal(merged["w"], torch.tensor([2.0, 3.0]))
    assert int(merged["steps"]) == 9  # counters come from the new weights


def test_merging_draws_the_trade_off(digits):
    data, model = digits
    outcome = update(model, data["new"], None, "finetune", slices={"old": data["old_test"]},
                     new_test=data["new_test"], **FIT)  # fmt: skip
    sweep = merge_sweep(model, model.state_dict(), outcome.model.state_dict(),
                        {"old": data["old_test"]}, data["new_test"], [0, 0.5, 1])  # fmt: skip
    comparison = outcome.comparison
    assert sweep.accuracy["old"][0] == pytest.approx(comparison["old"].baseline_accuracy)
    assert sweep.accuracy["old"][-1] == pytest.approx(comparison["old"].candidate_accuracy)
    assert sweep.accuracy["new data"][-1] == pytest.approx(
        comparison["new data"].candidate_accuracy
    )
    assert sweep.accuracy["old"][0] > sweep.accuracy["old"][-1]
    assert sweep.accuracy["new data"][0] < sweep.accuracy["new data"][-1]
    assert sweep.choose(max_drop=100.0) == 1.0 and sweep.choose(max_drop=0.0) == 0.0


def _save(path, pair):
    np.savez(path, x=pair[0], y=pair[1])
    return str(path)


def test_the_commands_update_gate_merge_and_monitor(digits, tmp_path, capsys):
    data, model = digits
    (tmp_path / "model.py").write_text(FACTORY)
    spec = f"{tmp_path}/model.py:make_model"
    save_weights(model, tmp_path / "v1.safetensors")
    slices = tmp_path / "slices"
    slices.mkdir()
    _save(slices / "digits-0-4.npz", data["old_test"])
    files = {k: _save(tmp_path / f"{k}.npz", data[k]) for k in ("new", "new_test", "retained")}
    store = tmp_path / "store"
    loop = ["--epochs", "5", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.003",
            "--no-progress"]  # fmt: skip
    common = ["update", "--model", spec, "--weights", str(tmp_path / "v1.safetensors"),
              "--new", files["new"], "--new-test", files["new_test"], "--slices", str(slices),
              *loop, "--store", str(store)]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "v2.safetensors"), "--window", "2024-06",
                 "--json", str(tmp_path / "update.json")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "digits-0-4" in out and "fail" in out
    assert json.loads((tmp_path / "update.json").read_text())["comparison"]["verdict"] == "fail"
    assert main([*common, "--out", str(tmp_path / "v3.safetensors"), "--strategy", "replay",
                 "--old", files["retained"], "--window", "2024-07"]) == 0  # fmt: skip
    capsys.readouterr()

    gate = ["gate", "--model", spec, "--baseline", str(tmp_path / "v1.safetensors"),
            "--slices", str(slices), "--resamples", "1000"]  # fmt: skip
    assert main([*gate, "--candidate", str(tmp_path / "v2.safetensors")]) == 1
    assert main([*gate, "--candidate", str(tmp_path / "v2.safetensors"), "--store", str(store),
                 "--version", "v2-gated"]) == 1  # fmt: skip
    capsys.readouterr()

    assert main(["merge", "--model", spec, "--old", str(tmp_path / "v1.safetensors"),
                 "--new", str(tmp_path / "v2.safetensors"), "--slices", str(slices),
                 "--new-data", files["new_test"], "--alphas", "0:1:5", "--max-drop", "5",
                 "--write", str(tmp_path / "merged.safetensors"),
                 "--json", str(tmp_path / "merge.json")]) == 0  # fmt: skip
    merge = json.loads((tmp_path / "merge.json").read_text())
    assert merge["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (tmp_path / "merged.safetensors").is_file()
    capsys.readouterr()

    state = monitor(store)
    assert state.versions[:3] == ["v1", "v2", "v3"] and state.windows[1] == "2024-06"
    assert state.flags["digits-0-4"][1] and "gate failed" in state.reasons["digits-0-4"][1]
    assert not state.flags["digits-0-4"][0]
    assert main(["monitor", str(store), "--html", str(tmp_path / "monitor.html")]) == 0
    out = capsys.readouterr().out
    assert "v2" in out and "flag(s)" in out
    page = (tmp_path / "monitor.html").read_text()
    assert "<svg" in page and "v3" in page


def test_update_errors_are_one_line(tmp_path, capsys, digits):
    data, model = digits
    (tmp_path / "model.py").write_text(FACTORY)
    save_weights(model, tmp_path / "v1.safetensors")
    new = _save(tmp_path / "new.npz", data["new"])
    argv = ["update", "--model", f"{tmp_path}/model.py:make_model", "--weights",
            str(tmp_path / "v1.safetensors"), "--new", new, "--slices", new,
            "--out", str(tmp_path / "x.safetensors"), "--no-progress"]  # fmt: skip
    assert main([*argv, "--strategy", "ewc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give old" in err
    assert main([*argv, "--strategy", "ewc", "--lamda", "3", "--old", new]) == 2
    assert "unknown option --lamda (did you mean --lam?)" in capsys.readouterr().err
    assert main(["monitor", str(tmp_path / "nothing")]) == 2
