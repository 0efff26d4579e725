"""Figures and the HTML report: made from results alone, self-contained, readable offline."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib")

from forgetless import ConfigError
from forgetless.cli import main
from forgetless.experiment import run
from forgetless.report import (
    accuracy_heatmap,
    build_report,
    forgetting_curves,
    save,
    strategy_comparison,
)
from forgetless.runs import RunStore


@pytest.fixture(scope="module")
def results():
    common = dict(scenario="split-digits", iterations=20, lr=0.1, threads=1, progress=False)
    return [
        run(strategy="finetune", eval_every=5, **common),
        run(strategy="replay", strategy_params={"buffer_size": 50}, **common),
    ]


def _external_references(page: str) -> list[str]:
    """URLs the page would fetch: src/href attributes and CSS url(), other than references
    within the page (#id) and inline data (data:, the heatmaps' pixels)."""
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    refs += re.findall(r"url\(([^)]*)\)", page)
    return [r for r in refs if not r.startswith(("#", "data:"))]


def test_the_report_has_every_figure_inline_and_fetches_nothing(results):
    page = build_report(results, title="two strategies")
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    # The comparison, then a heatmap and curves per run.
    assert page.count("<svg") == 1 + 2 * len(results)
    assert _external_references(page) == []
    assert "<script" not in page and "<img" not in page
    assert page.count("<tr>") == 1 + 2  # header + one summary row per strategy
    for r in results:
        assert f"{100 * r.metrics['acc']:.1f} ± n/a" in page  # one seed: no spread
    assert "fell from" in page or "kept" in page  # the plain-language account of each run


def test_figures_draw_what_the_result_holds(results, tmp_path):
    finetune, replay = results
    heatmap = accuracy_heatmap(finetune)
    texts = [t.get_text() for t in heatmap.axes[0].texts]
    assert len(texts) == 25
    assert texts[0] == f"{100 * finetune.accuracy_matrix[0][0]:.0f}"
    curves = forgetting_curves(finetune)  # with eval_every: lines through every evaluation
    lines = curves.axes[0].get_lines()
    task_lines = [line for line in lines if line.get_label().startswith("task")]
    assert len(task_lines) == 5
    # Task 1's line ends at its accuracy after the last task.
    assert task_lines[0].get_ydata()[-1] == pytest.approx(100 * finetune.accuracy_matrix[-1][0])
    coarse = forgetting_curves(replay)  # no eval_every: one point per task boundary
    assert len(coarse.axes[0].get_lines()[0].get_xdata()) == 5
    files = save(strategy_comparison(results), tmp_path / "compare")
    assert [f.suffix for f in files] == [".png", ".svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in files[1].read_text()


@pytest.mark.slow
def test_report_command_from_a_store_and_from_run_ids(tmp_path, capsys):
    store = RunStore(tmp_path / "runs")
    from forgetless.experiment import RunConfig

    for strategy, params in (("finetune", {}), ("ewc", {"lam": 10.0})):
        store.execute(
            RunConfig(
                scenario="split-digits", strategy=strategy, strategy_params=params,
                iterations=20, lr=0.1, threads=1,
            )
        )  # fmt: skip
    out = tmp_path / "report.html"
    assert (
        main(["report", str(tmp_path / "runs"), "-o", str(out), "--figures", str(tmp_path / "f")])
        == 0
    )
    assert out.read_text().count("<svg") == 1 + 2 * 2
    # A heatmap and curves per run, and the comparison of the two.
    pngs = sorted(p.name for p in (tmp_path / "f").glob("*.png"))
    assert pngs == [
        "comparison.png",
        "split-digits_ewc_s0_curves.png",
        "split-digits_ewc_s0_matrix.png",
        "split-digits_finetune_s0_curves.png",
        "split-digits_finetune_s0_matrix.png",
    ]
    run_id = store.index.find(strategy="ewc")[0]["id"]
    assert main(["report", run_id[:20], "--store", str(tmp_path / "runs"), "-o", str(out)]) == 0
    assert out.read_text().count("<svg") == 2  # one run: no comparison figure
    assert main(["report", "nothing-here", "--store", str(tmp_path / "runs")]) == 2
    assert "no run 'nothing-here'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_strength_sweep_gets_a_frontier_and_analysis_svgs_are_embedded(tmp_path):
    common = dict(scenario="split-digits", protocol="task", iterations=15, threads=1)
    sweep = [
        run(strategy="ewc", strategy_params={"lam": lam}, seed=seed, progress=False, **common)
        for lam in (1.0, 10.0, 100.0)
        for seed in (0, 1)
    ]
    comparison = strategy_comparison(sweep)  # one point per setting, averaged over seeds
    labels = sorted(t.get_text() for t in comparison.axes[0].texts)
    assert labels == ["ewc lam=1", "ewc lam=10", "ewc lam=100"]
    figure = tmp_path / "landscape_plane.svg"
    save(comparison, figure.with_suffix(""), formats=("svg",))
    page = build_report(sweep, extra_figures=[figure])
    assert "Stability against plasticity" in page and "Analysis" in page
    assert 'aria-label="landscape plane"' in page
    # comparison of the settings + frontier + the embedded file + a heatmap and curves per run
    assert page.count("<svg") == 1 + 1 + 1 + 2 * len(sweep)
    assert "<?xml" not in page and _external_references(page) == []
    # Two settings are not a sweep: no frontier.
    assert "Stability against plasticity" not in build_report(sweep[:4])
    bad = tmp_path / "bad.svg"
    bad.write_text("<svg><script>alert(1)</script></svg>")
    with pytest.raises(ConfigError, match="scripts or external links"):
        build_report(sweep, extra_figures=[bad])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_report_renders_in_headless_chromium_offline(results, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(build_report(results))
    shot = tmp_path / "shot.png"
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu",
        # Any network request fails: the page must not need one.
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri(),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # not a blank page
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<svg") == 1 + 2 * len(results)


@pytest.mark.slow
def test_a_run_that_barely_learned_is_flagged_in_the_report(results):
    with pytest.warns(RuntimeWarning, match="barely learned"):
        weak = run(scenario="split-digits", iterations=3, lr=1e-5, threads=1, progress=False)
    page = build_report([*results, weak])
    assert page.count("barely learned their tasks") == 1  # one run of three
    assert page.count('class="fail">barely learned') == 1
    assert "barely learned" not in build_report(results)
