"""The forgetting gate: its statistics against hand computations and explicit resampling, its
verdicts and exit codes (0, 1, 2, 3) on constructed models and slices, and its outputs."""

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import forgetless
from forgetless.cli import main
from forgetless.production.gate import GateResult, decide
from forgetless.production.loading import save_weights

# A model whose answers are known: a 10x10 linear map of one-hot inputs, so the prediction for
# input e_k is the row of the largest weight in column k. The identity answers k; a candidate
# that sends e_0 to class 1 is wrong on every example of class 0 and right on the rest.
FACTORY = """
from torch import nn

def make_model():
    return nn.Linear(10, 10, bias=False)
"""


def _weights(mapping: dict[int, int]) -> dict[str, torch.Tensor]:
    w = torch.eye(10)
    for source, target in mapping.items():
        w[:, source] = 0
        w[target, source] = 1
    return {"weight": w}


def _slice(labels) -> dict[str, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    return {"x": np.eye(10, dtype=np.float32)[y], "y": y}


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "model.py").write_text(FACTORY)
    save_weights(_weights({}), tmp_path / "baseline.safetensors")
    save_weights(_weights({0: 1}), tmp_path / "candidate.safetensors")
    save_weights(_weights({}), tmp_path / "same.safetensors")
    slices = tmp_path / "slices"
    slices.mkdir()
    rng = np.random.default_rng(0)
    np.savez(slices / "old.npz", **_slice(rng.integers(0, 5, 1000)))  # about 20% class 0
    np.savez(slices / "new.npz", **_slice(rng.integers(5, 10, 1000)))
    return tmp_path


def _gate(setup, candidate="candidate", slices="slices", *extra):
    return main(
        ["gate", "--model", f"{setup}/model.py:make_model",
         "--baseline", f"{setup}/baseline.safetensors",
         "--candidate", f"{setup}/{candidate}.safetensors",
         "--slices", str(setup / slices), "--resamples", "2000", *extra]
    )  # fmt: skip


def test_a_known_drop_fails_with_exit_code_1(setup, capsys):
    code = _gate(setup, "candidate", "slices", "--json", str(setup / "gate.json"))
    assert code == 1
    data = json.loads((setup / "gate.json").read_text())
    new, old = data["slices"]  # files in name order
    y = np.load(setup / "slices" / "old.npz")["y"]
    zeros = int((y == 0).sum())
    assert old["name"] == "old" and old["verdict"] == "fail"
    assert old["negative_flips"] == zeros and old["positive_flips"] == 0
    assert old["baseline_accuracy"] == 1.0
    assert old["candidate_accuracy"] == pytest.approx(1 - zeros / 1000)
    assert old["change"] == pytest.approx(-zeros / 1000)
    assert old["high"] < -0.01
    assert new["verdict"] == "pass" and new["negative_flips"] == new["positive_flips"] == 0
    assert data["overall"]["examples"] == 2000 and data["exit_code"] == 1
    out = capsys.readouterr().out
    assert "fail" in out and "verdict: fail (exit code 1)" in out


def test_the_same_model_passes_with_exit_code_0(setup, tmp_path):
    html = tmp_path / "gate.html"
    assert _gate(setup, "same", "slices", "--html", str(html)) == 0
    page = html.read_text()
    assert "<svg" in page and "PASS" in page and "http" not in page.split("<svg")[0]


def test_a_tiny_slice_is_inconclusive_with_exit_code_3(setup, capsys):
    tiny = setup / "tiny"
    tiny.mkdir()
    np.savez(tiny / "few.npz", **_slice([5, 6, 7, 8, 9]))
    assert _gate(setup, "same", "tiny") == 3
    assert "inconclusive (needs ~" in capsys.readouterr().out


def test_thresholds_per_slice_from_a_toml_file(setup):
    # A 25-point allowance on the old slice (and overall) turns the fail into a pass.
    toml = setup / "thresholds.toml"
    toml.write_text("max_drop = 1.0\n[slices]\nold = 40.0\noverall = 25.0\n")
    assert _gate(setup, "candidate", "slices", "--thresholds", str(toml)) == 0
    toml.write_text("[slices]\nodl = 40.0\n")
    assert _gate(setup, "candidate", "slices", "--thresholds", str(toml)) == 2


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_usage_and_data_errors_exit_2_with_one_line(setup, capsys):
    model = f"{setup}/model.py:make_model"
    base = ["--baseline", f"{setup}/baseline.safetensors"]
    cand = ["--candidate", f"{setup}/candidate.safetensors", "--slices", str(setup / "slices")]
    assert main(["gate", "--model", f"{setup}/model.py:nope", *base, *cand]) == 2
    assert "unknown factory" in _error_line(capsys)
    assert main(["gate", "--model", "no_such_package.models:make", *base, *cand]) == 2
    assert "unknown factory" in _error_line(capsys)
    save_weights({"weight": torch.zeros(10, 12)}, setup / "wide.safetensors")
    wide = ["--candidate", f"{setup}/wide.safetensors", "--slices", str(setup / "slices")]
    assert main(["gate", "--model", model, *base, *wide]) == 2
    assert "do not fit" in _error_line(capsys)
    for name, arrays, message in [
        ("shape", {"x": np.zeros((4, 3), np.float32), "y": np.zeros(4, np.int64)}, "cannot take"),
        ("labels", _slice([1, 2]) | {"y": np.array([1, 12])}, "labels must be in 0..9"),
        ("empty", {"x": np.zeros((0, 10), np.float32), "y": np.zeros(0, np.int64)}, "empty"),
        ("rows", {"x": np.zeros((3, 10), np.float32), "y": np.zeros(2, np.int64)}, "one per row"),
    ]:
        folder = setup / f"bad-{name}"
        folder.mkdir()
        np.savez(folder / "s.npz", **arrays)
        argv = ["gate", "--model", model, *base, "--candidate", f"{setup}/same.safetensors"]
        assert main([*argv, "--slices", str(folder)]) == 2, name
        assert message in _error_line(capsys), name


def test_one_npz_with_a_slice_array(setup):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 600)
    names = np.where(y < 5, "before", "after")
    np.savez(setup / "one.npz", slice=names, **_slice(y))
    base = forgetless.production.load_model(
        f"{setup}/model.py:make_model", setup / "baseline.safetensors"
    )
    cand = forgetless.production.load_model(
        f"{setup}/model.py:make_model", setup / "candidate.safetensors"
    )
    result = forgetless.gate(base, cand, setup / "one.npz", resamples=1000)
    assert [r.name for r in result.slices] == list(dict.fromkeys(names.tolist()))
    assert result["before"].verdict == "fail" and result["after"].negative_flips == 0
    # The verdict object survives JSON: what CI reads is what Python returns.
    assert GateResult.from_dict(json.loads(result.to_json())) == result


# --- statistics ------------------------------------------------------------------------------


def _pair(negative: int, same_right: int, same_wrong: int, positive: int):
    b = torch.tensor([1] * negative + [1] * same_right + [0] * same_wrong + [0] * positive)
    c = torch.tensor([0] * negative + [1] * same_right + [0] * same_wrong + [1] * positive)
    return b.bool(), c.bool()


def test_counts_accuracies_and_mcnemar_against_hand_computation():
    b, c = _pair(negative=30, same_right=900, same_wrong=60, positive=10)
    row = decide({"s": b}, {"s": c}, resamples=1000)["s"]
    assert row.examples == 1000
    assert row.baseline_accuracy == pytest.approx(930 / 1000)
    assert row.candidate_accuracy == pytest.approx(910 / 1000)
    assert row.change == pytest.approx(-20 / 1000)
    assert (row.negative_flips, row.positive_flips) == (30, 10)
    assert row.mcnemar_p == pytest.approx(stats.binomtest(30, 40, 0.5).pvalue)
    assert row.low < row.change < row.high


def test_the_interval_is_a_bootstrap_over_examples():
    """The draws equal re-weighting every example with Dirichlet weights (the Bayesian
    bootstrap) plus Jeffreys' three half-weighted pseudo-examples, one of each kind."""
    b, c = _pair(negative=12, same_right=150, same_wrong=30, positive=4)
    row = decide({"s": b}, {"s": c}, confidence=0.9, resamples=40_000)["s"]
    rng = np.random.default_rng(5)
    diffs = (c.int() - b.int()).numpy().astype(float)
    values = np.concatenate([diffs, [-1.0, 0.0, 1.0]])
    shape = np.concatenate([np.ones(len(diffs)), [0.5, 0.5, 0.5]])
    weights = rng.gamma(shape, size=(20_000, len(values)))
    explicit = (weights * values).sum(1) / weights.sum(1)
    low, high = np.quantile(explicit, [0.1, 0.9])
    assert row.low == pytest.approx(low, abs=0.003)
    assert row.high == pytest.approx(high, abs=0.003)


def test_two_models_at_the_threshold_fail_at_the_stated_rate():
    """Slices of 400 drawn from two models with the same accuracy (3% of examples flip each
    way): at max_drop 0 the gate fails about 1 - confidence of them, never two identical."""
    rng = np.random.default_rng(0)
    fails = same_fails = 0
    trials = 300
    for i in range(trials):
        u = rng.random(400)
        b = torch.from_numpy(~((u >= 0.03) & (u < 0.06)))
        c = torch.from_numpy(u >= 0.03)
        fails += decide({"s": b}, {"s": c}, max_drop=0.0, resamples=2000, seed=i).verdict == "fail"
        same_fails += (
            decide({"s": b}, {"s": b}, max_drop=0.0, resamples=2000, seed=i).verdict == "fail"
        )
    assert 0.02 <= fails / trials <= 0.09
    assert same_fails == 0


def test_needed_examples_shrink_the_interval_enough():
    """At the size it names, a slice with the same rates is decided."""
    b, c = _pair(negative=2, same_right=95, same_wrong=3, positive=0)
    row = decide({"s": b}, {"s": c}, max_drop=5.0, resamples=4000)["s"]
    assert row.verdict == "inconclusive" and row.needed > 100
    scale = -(-row.needed // 100)
    big = decide({"s": b.repeat(scale)}, {"s": c.repeat(scale)}, max_drop=5.0)["s"]
    assert big.verdict == "pass"


@pytest.mark.parametrize(
    "kwargs, message",
    [({"confidence": 1.5}, "confidence"), ({"max_drop": -1}, "max_drop"),
     ({"resamples": 10}, "resamples")],
)  # fmt: skip
def test_bad_settings_are_errors(kwargs, message):
    b, c = _pair(1, 10, 1, 1)
    with pytest.raises(forgetless.ConfigError, match=message):
        decide({"s": b}, {"s": c}, **kwargs)


def test_gate_on_models_matches_decide_on_their_answers():
    base, cand = nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False)
    base.load_state_dict(_weights({}))
    cand.load_state_dict(_weights({3: 4}))
    arrays = _slice(np.arange(300) % 10)
    result = forgetless.gate(base, cand, {"all": (arrays["x"], arrays["y"])}, resamples=500)
    row = result["all"]
    assert (row.negative_flips, row.positive_flips) == (30, 0)
    assert row.change == pytest.approx(-0.1) and result.exit_code == 1
