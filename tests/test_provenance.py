"""Every result and benchmark records the forgetless version and git commit that made it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import forgetless
from forgetless import provenance as prov
from forgetless.experiment import run
from forgetless.result import Result

ROOT = Path(__file__).resolve().parents[1]


def _head() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=False)  # fmt: skip
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def test_a_result_records_the_version_and_the_commit(tmp_path):
    result = run(scenario="split-digits", iterations=30, lr=0.1, threads=1, progress=False)
    env = result.environment
    assert env["forgetless"] == forgetless.__version__
    assert env["git_commit"] == prov.git_commit()  # read once per process
    head = _head()
    if head is None or Path(forgetless.__file__).resolve().parent != ROOT / "src" / "forgetless":
        assert env["git_commit"] == "unknown"
    else:  # read afresh: HEAD may have moved since this process first read it
        assert prov.git_commit.__wrapped__().removesuffix("+dirty") == head
        assert len(env["git_commit"].removesuffix("+dirty")) == 40
    saved = json.loads(result.to_json())
    assert saved["environment"]["git_commit"] == env["git_commit"]
    # A result written before the field existed still loads.
    del saved["environment"]["git_commit"]
    assert Result.from_dict(saved).environment["forgetless"] == forgetless.__version__


def test_the_commit_is_unknown_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    # A copy of the package outside any repository.
    copy = tmp_path / "site" / "forgetless"
    copy.mkdir(parents=True)
    monkeypatch.setattr(prov, "__file__", str(copy / "provenance.py"))
    assert prov.git_commit.__wrapped__() == "unknown"
    # Installed inside another project's repository: not that project's commit.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=False, capture_output=True)
    assert prov.git_commit.__wrapped__() == "unknown"
    # No git on this machine at all.
    monkeypatch.setattr(prov, "__file__", str(ROOT / "src" / "forgetless" / "provenance.py"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert prov.git_commit.__wrapped__() == "unknown"


def test_benchmark_reports_carry_provenance(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    grid = pytest.importorskip("grid")
    out = tmp_path / "r.json"
    grid.publish({"acc": 1.0}, out)
    data = json.loads(out.read_text())
    assert data["acc"] == 1.0 and data["provenance"] == prov.provenance()
