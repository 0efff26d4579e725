"""Avalanche is compared against, never depended on: no package module imports it, and the
comparison script skips cleanly where it is not installed."""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_of_the_package_imports_avalanche_and_no_dependency_names_it():
    offenders = []
    for path in (ROOT / "src" / "forgetless").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "avalanche"]
    assert offenders == []
    assert "avalanche" not in (ROOT / "pyproject.toml").read_text().lower()  # no dependency


def test_the_comparison_skips_with_a_clear_message_without_avalanche(tmp_path):
    if importlib.util.find_spec("avalanche") is not None:
        pytest.skip("this interpreter has avalanche: the skip cannot be shown with it")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "avalanche_compare.py"),
            "--data-dir",
            str(tmp_path),
            "--avalanche-python",
            sys.executable,
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "skipped" in done.stderr and "has no avalanche package" in done.stderr
    assert "has no avalanche package" in json.loads(done.stdout)["skipped"]
    assert not (tmp_path / "out.json").exists()


def test_the_bound_counts_the_protocols_matrix_products_by_hand():
    spec = importlib.util.spec_from_file_location(
        "avalanche_compare", ROOT / "benchmarks" / "avalanche_compare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flop = module.protocol_flop([100, 50], tests=10)
    # 784-400-400-10: forward 2*(784*400 + 400*400 + 400*10) per example; a training step adds
    # the weight gradients of all three layers and the input gradients of the last two.
    forward = 2 * (313_600 + 160_000 + 4_000)
    step = forward + 2 * (313_600 + 160_000 + 4_000) + 2 * (160_000 + 4_000)
    assert flop["naive"] == (150 * step, 2 * 10 * forward)
    assert flop["ewc"] == (300 * step, 2 * 10 * forward)
    assert flop["replay"] == (200 * step, 2 * 10 * forward)
