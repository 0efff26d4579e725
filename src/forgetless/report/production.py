"""Figures and pages of the production workflow: the gate's per-slice changes with their
intervals, the merge trade-off, and the monitor's slices across versions."""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence

from forgetless.report.figures import _pyplot
from forgetless.report.html import figure, page

COLOURS = {"pass": "#1a7f37", "fail": "#c62828", "inconclusive": "#d08700"}


def gate_figure(result, title: str | None = None):
    """Per slice (and overall) the change in accuracy, in points, as a bar with its one-sided
    bounds as the interval, coloured by verdict; a tick marks each slice's ``-max_drop``."""
    plt = _pyplot()
    rows = result.rows
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(rows) + 1.4), layout="constrained")
    ys = list(range(len(rows)))[::-1]
    for y, row in zip(ys, rows, strict=True):
        colour = COLOURS[row.verdict]
        change = 100 * row.change
        ax.barh(y, change, color=colour, alpha=0.35, height=0.6)
        ax.errorbar(change, y, xerr=[[change - 100 * row.low], [100 * row.high - change]],
                    fmt="o", color=colour, capsize=4, lw=1.5)  # fmt: skip
        ax.plot([-row.max_drop] * 2, [y - 0.4, y + 0.4], color="#444", lw=1.2, ls="--")
    ax.axvline(0, color="#888", lw=0.8)
    # Linear near the thresholds, logarithmic beyond: a slice that gains 80 points (the new
    # data) and one that loses 2 stay readable on one axis.
    linear = max(2.0, 2 * max(r.max_drop for r in rows))
    ax.set_xscale("symlog", linthresh=linear, linscale=1.5)
    lo = min(min(100 * r.low for r in rows), -max(r.max_drop for r in rows), 0.0)
    hi = max(max(100 * r.high for r in rows), 0.0)
    lo, hi = (1.4 * v if abs(v) > linear else v + (-1 if v <= 0 else 1) for v in (lo, hi))
    ax.set_xlim(lo, hi)
    ticks = [t for t in (-100, -30, -10, -2, -1, 0, 1, 2, 10, 30, 100)
             if lo <= t <= hi]  # fmt: skip
    ax.set_xticks(ticks, [f"{t:+g}" if t else "0" for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_yticks(ys, [f"{r.name} (n={r.examples:,})" for r in rows])
    ax.set_xlabel(
        f"change in accuracy (points, candidate - baseline; symmetric log beyond ±{linear:g})\n"
        f"bars: {100 * result.confidence:g}% bounds, dashes: -max drop"
    )
    ax.set_title(title or f"forgetting gate: {result.verdict}", fontsize=10)
    return fig


def gate_page(result, title: str = "forgetting gate", before: str = "baseline",
              after: str = "candidate") -> str:  # fmt: skip
    """A self-contained HTML page of a gate's (or an update's) comparison."""
    head = ["slice", "n", before, after, "change", "bounds", "flips −/+", "max drop", "verdict"]
    lines = ["<table><tr>" + "".join(
        f'<th class="{"text" if i in (0, 8) else ""}">{h}</th>' for i, h in enumerate(head)
    ) + "</tr>"]  # fmt: skip
    for row in result.rows:
        verdict = row.verdict
        if row.verdict == "inconclusive":
            verdict += f" (needs ~{row.needed:,} examples)" if row.needed else " (on the threshold)"
        cells = [
            html.escape(row.name),
            f"{row.examples:,}",
            f"{100 * row.baseline_accuracy:.1f}",
            f"{100 * row.candidate_accuracy:.1f}",
            f"{100 * row.change:+.1f}",
            f"[{100 * row.low:+.1f}, {100 * row.high:+.1f}]",
            f"{row.negative_flips}/{row.positive_flips}",
            f"{row.max_drop:g}",
            f'<span class="{row.verdict}">{html.escape(verdict)}</span>',
        ]
        lines.append("<tr>" + "".join(
            f'<td class="{"text" if i in (0, 8) else ""}">{c}</td>' for i, c in enumerate(cells)
        ) + "</tr>")  # fmt: skip
    lines.append("</table>")
    body = [
        f'<p>Verdict: <span class="{result.verdict}">{result.verdict.upper()}</span> '
        f"(exit code {result.exit_code}).</p>",
        f'<p class="note">Accuracies and changes in points, on the same examples for both '
        f"models. Bounds: each one-sided at {100 * result.confidence:g}% ({result.method}, "
        f"{result.resamples:,} draws, seed {result.seed}). A slice fails when its upper bound "
        "is below minus its max drop, passes when its lower bound is above it, and is "
        "inconclusive otherwise. Flips: examples right before and wrong after (−), wrong "
        "before and right after (+).</p>",
        "\n".join(lines),
        figure(gate_figure(result), "change per slice with its bounds"),
    ]
    return page(title, body)


def merge_figure(sweep, title: str | None = None):
    """Left: each old slice's accuracy against the new data's, along alpha (labelled). Right:
    every slice's accuracy against alpha."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.4), layout="constrained")
    colours = plt.get_cmap("tab20").colors
    new = [100 * v for v in sweep.accuracy[sweep.new_slice]]
    for i, name in enumerate(sweep.old_slices):
        old = [100 * v for v in sweep.accuracy[name]]
        left.plot(new, old, "o-", ms=3, lw=1, color=colours[i % 20], label=name)
    mean = [100 * v for v in sweep.old_mean()]
    if len(sweep.old_slices) > 1:
        left.plot(new, mean, "s--", color="black", ms=4, label="old slices (mean)")
    for alpha, x, y in zip(sweep.alphas, new, mean, strict=True):
        left.annotate(f"{alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                      fontsize=7)  # fmt: skip
    left.set_xlabel(f"{sweep.new_slice} accuracy (%)")
    left.set_ylabel("old-slice accuracy (%)")
    left.set_title("trade-off along alpha (labels: alpha)", fontsize=10)
    left.legend(fontsize=7, ncols=2)
    for name, values in sweep.accuracy.items():
        if name == sweep.new_slice:
            style = dict(color="black", lw=2.5)
        else:
            style = dict(color=colours[sweep.old_slices.index(name) % 20], lw=1)
        right.plot(sweep.alphas, [100 * v for v in values], "o-", ms=3, label=name, **style)
    right.set_xlabel("alpha (0: old weights, 1: updated weights)")
    right.set_ylabel("accuracy (%)")
    right.set_title(title or "weight interpolation (WiSE-FT)", fontsize=10)
    right.legend(fontsize=7, ncols=2)
    return fig


def monitor_figure(state, title: str | None = None):
    """Each slice's accuracy across versions; red rings mark the flagged versions."""
    plt = _pyplot()
    colours = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(state.versions) + 4), 4.6),
                           layout="constrained")  # fmt: skip
    xs = list(range(len(state.versions)))
    for i, name in enumerate(state.slices):
        points = [(x, 100 * v) for x, v in zip(xs, state.accuracy[name], strict=True)
                  if v is not None]  # fmt: skip
        if not points:
            continue
        style = dict(color="black", lw=2.2) if name == "overall" else dict(color=colours[i % 20])
        ax.plot(*zip(*points, strict=True), "o-", ms=3, label=name, **style)
        bad = [(x, 100 * state.accuracy[name][x]) for x in xs if state.flags[name][x]]
        if bad:
            ax.scatter(*zip(*bad, strict=True), s=110, facecolors="none", edgecolors="#c62828",
                       linewidths=1.5, zorder=3)  # fmt: skip
    labels = [
        textwrap.fill(v, 18) + (f"\n[{w}]" if w else "")
        for v, w in zip(state.versions, state.windows, strict=True)
    ]
    ax.set_xticks(xs, labels, fontsize=7, rotation=35, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("model version [data window]")
    ax.set_title(title or "slices across versions (red rings: flagged)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def monitor_page(state, title: str = "forgetless monitor") -> str:
    """A self-contained HTML page: the monitor's table, flags and figure."""
    head = "".join(f"<th>{html.escape(n)}</th>" for n in state.slices)
    lines = [f'<table><tr><th class="text">version</th><th class="text">window</th>{head}</tr>']
    for i, version in enumerate(state.versions):
        cells = []
        for name in state.slices:
            value = state.accuracy[name][i]
            text = "–" if value is None else f"{100 * value:.1f}"
            if state.flags[name][i]:
                text = f'<span class="fail">{text} !</span>'
            cells.append(f"<td>{text}</td>")
        window = html.escape(state.windows[i] or "")
        lines.append(
            f'<tr><td class="text">{html.escape(version)}</td><td class="text">{window}</td>'
            + "".join(cells) + "</tr>"
        )  # fmt: skip
    lines.append("</table>")
    flagged = state.flagged()
    items = "".join(
        f"<li>{html.escape(v)}: {html.escape(s)}: {html.escape(r)}</li>" for v, s, r in flagged
    )
    body = [
        f'<p class="note">{state.records} record(s), {len(state.versions)} version(s). '
        f"Accuracies in percent; '!' flags a version where the gate failed the slice or it "
        f"fell more than {state.max_drop:g} points.</p>",
        "\n".join(lines),
        f"<p>{len(flagged)} flag(s)</p><ul>{items}</ul>" if flagged else "<p>No flags.</p>",
        figure(monitor_figure(state), "slices across versions"),
    ]
    return page(title, body)


def save_page(text: str, path) -> None:
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


__all__: Sequence[str] = (
    "gate_figure",
    "gate_page",
    "merge_figure",
    "monitor_figure",
    "monitor_page",
)
