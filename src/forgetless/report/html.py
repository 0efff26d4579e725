"""One self-contained HTML page of results: figures inline as SVG, no scripts, no network.

The page opens from a file with no connection: every figure is inline SVG markup, the style is
in the page, and nothing is fetched (no fonts, scripts or images from elsewhere).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from forgetless.errors import ConfigError
from forgetless.report import figures
from forgetless.result import Result, describe
from forgetless.summaries import frontiers_in, mean_and_spread, summarise

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 96vw; margin: 2em auto; padding: 0 1.5em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
.run { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1em;
       align-items: start; }
.run figure svg { width: 100%; }
.note { color: #555; font-size: 0.9em; }
.pass { color: #1a7f37; } .fail { color: #c62828; font-weight: 600; }
.inconclusive { color: #b26a00; } tr.flag td { background: #fdecea; }
.warn { background: #fdecea; border-left: 4px solid #c62828; padding: 0.2em 1em; }
"""


def build_report(
    results: Sequence[Result],
    title: str = "forgetless report",
    extra_figures: Sequence[str | Path] = (),
) -> str:
    """The HTML page for ``results``: a summary table over seeds, a comparison of strategies
    by accuracy, memory and compute, the stability-plasticity frontier when the runs sweep a
    strategy's strength (:func:`~forgetless.summaries.frontiers_in`), the SVG files
    ``extra_figures`` (e.g. from ``forgetless landscape``), then per run its accuracy-matrix
    heatmap, forgetting curves, for text runs its perplexity-matrix heatmap, and a one-line
    account of what it forgot."""
    if not results:
        raise ConfigError("a report needs at least one complete run")
    results, labels = labelled(results)
    parts = [
        f'<p class="note">{len(results)} run(s). Accuracies in percent. R[i, j] is the accuracy '
        "on task j after training task i; ACC the mean of the last row, BWT the mean change of "
        "each old task from when it was learnt to the end. Each run is named by its strategy, "
        "the settings that differ between the runs here, and its seed (s0).</p>",
    ]
    weak = [(r, name) for r, name in zip(results, labels, strict=True) if barely_learned(r)]
    if weak:
        items = "".join(
            f"<li>{html.escape(name)}: {html.escape(barely_learned(r))}</li>" for r, name in weak
        )
        parts.append(
            f'<div class="warn"><p><b>{len(weak)} run(s) barely learned their tasks</b>: '
            "their forgetting figures describe an untrained model and mean little.</p>"
            f"<ul>{items}</ul></div>"
        )
    parts += ["<h2>Summary over seeds</h2>", _summary_table(results)]
    from forgetless.labels import run_labels

    points = set(run_labels([figures._config_of(r) for r in results], seed=False))
    if len(points) > 1:  # two strategies, or two settings of one: a comparison
        parts += [
            "<h2>Strategies: accuracy against memory and compute</h2>",
            _figure(figures.strategy_comparison(results), "strategy comparison"),
        ]
    frontiers = frontiers_in(results)
    if frontiers:
        scenario = ", ".join(sorted({r.scenario for r in results}))
        parts += [
            "<h2>Stability against plasticity</h2>",
            '<p class="note">Each point is one setting of a strategy\'s strength (mean over '
            "seeds, bars one std): stability is the accuracy kept on old tasks at the end, "
            "plasticity the accuracy reached on each new task. Lines join each strategy's "
            "Pareto front.</p>",
            _figure(
                figures.frontier_plot(frontiers, scenario=scenario), "stability-plasticity frontier"
            ),
        ]
    if extra_figures:
        parts.append("<h2>Analysis</h2>")
        for path in extra_figures:
            parts.append(_svg_file(Path(path)))
    parts.append("<h2>Runs</h2>")
    for result, name in zip(results, labels, strict=True):
        where = f"{result.scenario}, {result.protocol}-incremental"
        warning = barely_learned(result)
        flag = (
            f' <span class="fail">barely learned: {html.escape(warning)}</span>' if warning else ""
        )
        parts += [
            f'<h3>{html.escape(name)} <span class="note">({html.escape(where)})</span></h3>',
            f"<p>{html.escape(describe(result))} {html.escape(result.metrics_line())}{flag}</p>",
            *([f"<p>{html.escape(result.routing_line())}</p>"] if result.routing_accuracy else []),
            '<div class="run">',
            _figure(
                figures.accuracy_heatmap(result, figures.run_title(result, "accuracy (%)", name)),
                f"accuracy matrix, {name}",
            ),
            _figure(
                figures.forgetting_curves(
                    result,
                    figures.run_title(result, "accuracy on each task along the stream", name),
                ),
                f"forgetting curves, {name}",
            ),
        ]
        if result.perplexity_matrix:
            parts.append(
                _figure(
                    figures.perplexity_heatmap(
                        result, figures.run_title(result, "perplexity per token", name)
                    ),
                    f"perplexity matrix, {name}",
                )
            )
        parts.append("</div>")
    return page(title, parts)


def labelled(results: Sequence[Result]) -> tuple[list[Result], list[str]]:
    """``results`` in reading order (scenario, strategy, then the settings that differ, numbers
    by value, then seed), each with its label (:func:`forgetless.labels.run_labels`)."""
    from forgetless.labels import ordered, run_labels

    configs = [figures._config_of(r) for r in results]
    order = ordered(configs)
    return [results[i] for i in order], run_labels([configs[i] for i in order])


def barely_learned(result: Result) -> str:
    """Why ``result`` barely learned its tasks (accuracy right after training each task within
    5 points of the model's before training), as a sentence; empty when it learned."""
    from forgetless.engine import BARELY_LEARNED

    matrix, baseline = result.accuracy_matrix, result.baseline
    first = int((result.config or {}).get("trained_tasks") or 0)
    trained = range(first, min(len(matrix), len(baseline)))
    if not trained or len(matrix) < len(baseline):
        return ""
    learned = sum(matrix[i][i] for i in trained) / len(trained)
    before = sum(baseline[i] for i in trained) / len(trained)
    if learned - before >= BARELY_LEARNED:
        return ""
    return (
        f"accuracy right after training each task averages {100 * learned:.1f}% against "
        f"{100 * before:.1f}% before training"
    )


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML page: ``title`` as its heading, then the ``body`` fragments (HTML
    already escaped where needed), with the report's style inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *body,
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    results: Sequence[Result],
    path: str | Path,
    title: str = "forgetless report",
    extra_figures: Sequence[str | Path] = (),
) -> Path:
    """Write :func:`build_report` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(results, title, extra_figures), encoding="utf-8")
    return path


def _svg_file(path: Path) -> str:
    """An SVG file as an inline figure, captioned with its name. Only SVG made by matplotlib is
    expected; anything that could reach the network or run code is refused, so the page stays
    self-contained."""
    if path.suffix.lower() != ".svg" or not path.is_file():
        raise ConfigError(f"extra figures must be SVG files, got {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    if "<svg" not in text:
        raise ConfigError(f"{path} holds no <svg> element")
    text = text[text.index("<svg") :]
    lowered = text.lower()
    if "<script" in lowered or 'href="http' in lowered or "href='http" in lowered:
        raise ConfigError(f"{path} has scripts or external links; a report embeds neither")
    caption = html.escape(path.stem.replace("_", " ").replace("-", " "))
    return (
        f'<figure aria-label="{caption}">{text}'
        f'<figcaption class="note">{caption}</figcaption></figure>'
    )


def _figure(fig, caption: str) -> str:
    return (
        f'<figure aria-label="{html.escape(caption)}">{figures.svg_text(fig)}'
        f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>'
    )


#: A matplotlib figure as an inline SVG ``<figure>`` with its caption (for other pages).
figure = _figure


def _summary_table(results: Sequence[Result]) -> str:
    rows = summarise(results)
    head = [
        "scenario",
        "protocol",
        "strategy",
        "settings",
        "seeds",
        "ACC",
        "BWT",
        "FWT",
        "forgetting",
    ]
    lines = ["<table><tr>" + "".join(
        f'<th class="{"text" if i < 4 else ""}">{h}</th>' for i, h in enumerate(head)
    ) + "</tr>"]  # fmt: skip
    for row in rows:
        cells = [row["scenario"], row["protocol"], row["strategy"], row["settings"], row["n"]]
        for metric in ("acc", "bwt", "fwt", "forgetting"):
            cells.append(mean_and_spread(row[f"{metric}_mean"], row[f"{metric}_std"]))
        lines.append(
            "<tr>"
            + "".join(
                f'<td class="{"text" if i < 4 else ""}">{html.escape(str(c))}</td>'
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)
