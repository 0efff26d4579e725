"""The scripts in examples/ run as documented (with small settings) and show what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in ("own_model_and_data", "sweep_and_report"):
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_own_model_and_data_ewc_against_replay(examples, capsys):
    from own_model_and_data import main

    results = main(["--epochs", "3"])
    out = capsys.readouterr().out
    assert set(results) == {"finetune", "ewc", "replay"}
    acc = {name: r.metrics["acc"] for name, r in results.items()}
    # Class-IL: fine-tuning forgets; replay keeps a good part of the old tasks.
    assert results["finetune"].metrics["bwt"] < -0.5
    assert acc["replay"] > acc["finetune"] + 0.2
    assert "replay     ACC" in out and "== ewc" in out


@pytest.mark.slow
def test_sweep_and_report(examples, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from sweep_and_report import main

    store, out = tmp_path / "runs", tmp_path / "report.html"
    argv = ["--epochs", "1", "--store", str(store), "--out", str(out), "--workers", "2"]
    assert main(argv) == out
    text = capsys.readouterr().out
    assert "10 run(s) trained, 0 already complete" in text
    page = out.read_text()
    for label in ("ewc lam=10 s0", "ewc lam=100 s1", "ewc lam=1000 s0", "replay s1"):
        assert label in page
    assert "Stability against plasticity" in page  # three strengths of EWC: a frontier
    assert main(argv) == out  # complete runs are not trained again
    assert "0 run(s) trained, 10 already complete" in capsys.readouterr().out
