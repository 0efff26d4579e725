"""Figures of results, drawn with matplotlib from :class:`~forgetless.result.Result` alone.

Each function returns a matplotlib ``Figure``; :func:`save` writes PNG and SVG, and
:func:`svg_text` gives the SVG markup for embedding in a page.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError
from forgetless.result import Result


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "figures and reports need matplotlib: pip install 'forgetless[report]'"
        ) from None
    return plt


def run_title(result: Result, what: str, label: str | None = None) -> str:
    """A figure title that says which run it shows: ``split-digits, ewc lam=10 s0: what``;
    ``label`` (from :func:`forgetless.labels.run_labels`) names the run among others, else
    its strategy and seed do."""
    name = label or f"{result.strategy} s{result.seed}"
    return f"{result.scenario} ({result.protocol}-IL), {name}: {what}"


def accuracy_heatmap(result: Result, title: str | None = None):
    """The accuracy matrix ``R[i, j]`` as a heatmap: rows are "after task i", columns "task j";
    each cell is labelled in percent. Forgetting shows as cells fading down a column."""
    plt = _pyplot()
    R = [[100 * v for v in row] for row in result.accuracy_matrix]
    n, rows = result.num_tasks, len(R)  # rows: a phase each, where a schedule revisits tasks
    fig, ax = plt.subplots(figsize=(0.8 * n + 2.2, 0.65 * rows + 1.6), layout="constrained")
    image = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for i in range(rows):
        for j in range(n):
            ax.text(j, i, f"{R[i][j]:.0f}", ha="center", va="center",
                    color="white" if R[i][j] < 60 else "black", fontsize=9)  # fmt: skip
    ax.set_xticks(range(n), [f"task {j + 1}" for j in range(n)], rotation=30, ha="right")
    names = [
        f"after {i + 1}" if result.schedule is None else f"{i + 1}: task {t + 1}"
        for i, t in enumerate(result.schedule or range(rows))
    ]
    ax.set_yticks(range(rows), names)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained up to")
    ax.set_title(title or run_title(result, "accuracy (%)"), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy (%)")
    return fig


def perplexity_heatmap(result: Result, title: str | None = None):
    """The perplexity matrix ``P[i, j]`` of a text run as a heatmap on a log colour scale
    (perplexities span orders of magnitude), each cell labelled; brighter is better, so
    forgetting shows as cells darkening down a column, as in :func:`accuracy_heatmap`."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    if not result.perplexity_matrix:
        raise ConfigError("this result has no perplexity matrix (only text runs have one)")
    P = result.perplexity_matrix
    n = len(P)
    finite = [v for row in P for v in row if v < float("inf")] or [1.0]
    low, high = max(1.0, min(finite)), max(max(finite), min(finite) * 1.01)
    fig, ax = plt.subplots(figsize=(0.9 * n + 2.2, 0.65 * n + 1.6), layout="constrained")
    image = ax.imshow(P, norm=LogNorm(vmin=low, vmax=high), cmap="viridis_r")
    middle = (low * high) ** 0.5
    for i in range(n):
        for j in range(n):
            label = f"{P[i][j]:.3g}" if P[i][j] < 1e4 else f"{P[i][j]:.1e}"
            ax.text(j, i, label, ha="center", va="center",
                    color="white" if P[i][j] > middle else "black", fontsize=8)  # fmt: skip
    ax.set_xticks(range(n), [f"task {j + 1}" for j in range(n)], rotation=30, ha="right")
    ax.set_yticks(range(n), [f"after {i + 1}" for i in range(n)])
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained up to")
    ax.set_title(title or run_title(result, "perplexity per token"), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="perplexity (log scale)")
    return fig


def forgetting_curves(result: Result, title: str | None = None):
    """Accuracy on each task along the stream: one line per task, from the moment it is learnt.

    With ``eval_every`` curves recorded, the lines follow every evaluation (the within-task
    fall); otherwise they join the evaluations after each task. Vertical lines mark task
    boundaries."""
    plt = _pyplot()
    n = result.num_tasks
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    if result.schedule is not None:  # a row per phase: each task from its first phase on
        phases = result.num_phases
        for j in range(n):
            xs = list(range(result.schedule.index(j) + 1, phases + 1))
            ax.plot(xs, [100 * result.accuracy_matrix[p - 1][j] for p in xs], marker="o",
                    label=f"task {j + 1}")  # fmt: skip
        ax.set_xticks(range(1, phases + 1))
        ax.set_xticklabels([f"{p + 1}:{t + 1}" for p, t in enumerate(result.schedule)])
        ax.set_xlabel("after phase (phase:task trained)")
    elif result.curves:
        # Steps of each task end: the curve points' steps, by task.
        ends = _task_end_steps(result)
        for j in range(n):
            xs, ys = [], []
            for point in result.curves:
                if point["task"] >= j:
                    xs.append(point["step"])
                    ys.append(100 * point["accuracy"][j])
            for i in range(j, n):
                xs.append(ends[i])
                ys.append(100 * result.accuracy_matrix[i][j])
            order = sorted(range(len(xs)), key=xs.__getitem__)
            ax.plot([xs[k] for k in order], [ys[k] for k in order], label=f"task {j + 1}")
        for end in ends[:-1]:
            ax.axvline(end, color="0.8", linewidth=0.8, zorder=0)
        ax.set_xlabel("training step")
    else:
        for j in range(n):
            xs = list(range(j + 1, n + 1))
            ax.plot(xs, [100 * result.accuracy_matrix[i - 1][j] for i in xs], marker="o",
                    label=f"task {j + 1}")  # fmt: skip
        ax.set_xticks(range(1, n + 1))
        ax.set_xlabel("after training task")
    ax.set_ylim(-2, 102)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or run_title(result, "accuracy on each task along the stream"), fontsize=10)
    ax.legend(fontsize=8, ncol=min(n, 5), loc="lower left")
    ax.grid(alpha=0.3)
    return fig


def _task_end_steps(result: Result) -> list[int]:
    """The optimiser step at which each task ended, from the losses (one record per pass)."""
    ends = {}
    for record in result.losses:
        ends[record["task"]] = max(ends.get(record["task"], 0), record["step"])
    return [ends.get(i, 0) for i in range(result.num_tasks)]


def strategy_comparison(results: Sequence[Result], title: str | None = None):
    """Final ACC of each strategy against what it costs: the memory its state takes (MB, left)
    and its training time relative to the fastest run of the same scenario (right). Runs that
    differ only in seed are averaged, with bars of one sample std over the seeds (none for one
    seed); runs that differ in any other setting (``lam=10`` and ``lam=100``, or ``lr``) are
    points of their own, labelled with the settings that vary (:mod:`forgetless.labels`)."""
    plt = _pyplot()
    if not results:
        raise ConfigError("no results to compare")
    from forgetless.labels import ordered, run_labels

    configs = [_config_of(r) for r in results]
    order = ordered(configs)
    results = [results[i] for i in order]
    names = run_labels([configs[i] for i in order], seed=False, number_alike=False)
    groups: dict[tuple[str, str], list[Result]] = {}
    for r, name in zip(results, names, strict=True):
        groups.setdefault((r.scenario, name), []).append(r)
    fastest: dict[str, float] = {}
    for (scenario, _), members in groups.items():
        t = min(m.timings.get("train", 0.0) for m in members) or 1e-9
        fastest[scenario] = min(fastest.get(scenario, t), t)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained", sharey=True)
    points: dict[Any, list] = {left: [], right: []}
    seeds = set()
    for (scenario, name), members in groups.items():
        accs = [100 * m.metrics["acc"] for m in members]
        acc = statistics.fmean(accs)
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        memory = statistics.fmean(m.strategy_state_bytes for m in members) / 2**20
        time = statistics.fmean(m.timings.get("train", 0.0) for m in members)
        seeds.add(len(members))
        for ax, x in ((left, memory), (right, time / fastest[scenario])):
            bars = ax.errorbar(x, acc, yerr=spread or None, fmt="o", capsize=2, markersize=6)
            points[ax].append((x, acc, name, bars[0].get_color()))
    for ax, placed in points.items():
        place_labels(ax, placed)
    left.set_xlabel("memory held by the strategy (MB)")
    left.set_ylabel("ACC (%): mean accuracy on all tasks at the end")
    right.set_xlabel("training time / fastest run of the same scenario")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    scenarios = ", ".join(sorted({r.scenario for r in results}))
    counts = _seed_counts(seeds)
    bars = "bars: one std over seeds" if max(seeds) > 1 else "no error bars"
    fig.suptitle(
        title
        or f"{scenarios}: accuracy against memory and compute (points: mean over {counts}; {bars})",
        fontsize=10,
    )
    return fig


def frontier_plot(frontiers: Sequence, title: str | None = None, scenario: str | None = None):
    """Stability (accuracy kept on old tasks) against plasticity (accuracy reached on new
    tasks) for each setting of each strategy (seed Figure 4): points with one-std error bars
    over seeds, labelled with their setting; each strategy's Pareto front joined by a line, its
    hypervolume in the legend. Takes :class:`~forgetless.summaries.Frontier` objects;
    ``scenario`` goes into the title."""
    plt = _pyplot()
    if not frontiers:
        raise ConfigError("no frontiers to draw")
    fig, ax = plt.subplots(figsize=(7.2, 5.4), layout="constrained")
    placed = []
    seeds = set()
    for frontier in frontiers:
        pts = frontier.points
        xs = [100 * q.plasticity for q in pts]
        ys = [100 * q.stability for q in pts]
        seeds.update(len(q.seeds) for q in pts)
        bars = ax.errorbar(
            xs, ys, xerr=[100 * q.plasticity_std for q in pts],
            yerr=[100 * q.stability_std for q in pts], fmt="o", capsize=2, markersize=5,
            alpha=0.85,
            label=" ".join(filter(None, (frontier.strategy, getattr(frontier, "settings", ""))))
            + f" (hypervolume {frontier.hypervolume:.3f})",
        )  # fmt: skip
        colour = bars[0].get_color()
        front = sorted(frontier.front, key=lambda k: pts[k].plasticity)
        ax.plot([xs[k] for k in front], [ys[k] for k in front], color=colour, linewidth=1.5)
        placed += [
            (x, y, f"{q.parameter}={q.value:g}", colour)
            for q, x, y in zip(pts, xs, ys, strict=True)
            if q.value is not None  # a strategy placed at its settings: the legend names it
        ]
    place_labels(ax, placed, fontsize=7)
    ax.set_xlabel("plasticity: accuracy reached on each new task (%)")
    ax.set_ylabel("stability: accuracy kept on old tasks at the end (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    parameters = ", ".join(
        sorted({f"{f.strategy}: {f.parameter or 'as given'}" for f in frontiers})
    )
    counts = _seed_counts(seeds)
    where = f"{scenario}: " if scenario else ""
    ax.set_title(
        title
        or f"{where}stability-plasticity frontier ({parameters})\n"
        f"points: mean over {counts}, bars: one std over seeds; lines: Pareto fronts",
        fontsize=9,
    )
    return fig


def place_labels(ax, points: Sequence[tuple[float, float, str, Any]], fontsize: int = 8) -> None:
    """Label each ``(x, y, text, colour)`` point of ``ax`` next to it without overlapping the
    labels placed before: each label takes the first of rings of offsets (right, left, above,
    below; then twice and three times as far, joined to its point by a thin line) whose box
    meets no earlier label and covers no other point, else the one that overlaps least. A
    small "repel", enough for a few dozen points."""
    fig = ax.figure
    ax.autoscale_view()
    fig.canvas.draw()  # fixes the axis limits, so display positions are final
    renderer = fig.canvas.get_renderer()
    dots = [tuple(ax.transData.transform((x, y))) for x, y, _, _ in points]
    frame = ax.get_window_extent(renderer)
    ring = [(5, 3), (5, -10), (-5, 3), (-5, -10), (0, 9), (0, -17)]
    offsets = [(k * dx, k * dy, k) for k in (1, 2, 3) for dx, dy in ring]
    boxes: list = []
    for (x, y, text, colour), dot in zip(points, dots, strict=True):
        best = None
        for dx, dy, k in offsets:
            line = {"arrowstyle": "-", "color": colour, "lw": 0.5, "alpha": 0.6}
            label = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                color=colour, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                arrowprops=line if k > 1 else None,
            )  # fmt: skip
            box = label.get_window_extent(renderer).expanded(1.08, 1.3)
            cost = sum(_overlap(box, b) for b in boxes)
            cost += box.width * box.height - _overlap(box, frame)  # the part outside the axes
            cost += sum(1e4 for q in dots if q != dot and box.contains(*q))
            if best is None or cost < best[1]:
                if best is not None:
                    best[0].remove()
                best = (label, cost, box)
            else:
                label.remove()
            if cost == 0:
                break
        boxes.append(best[2])


def _seed_counts(counts: set[int]) -> str:
    """``3 seeds``, ``1 seed``, or ``1 to 3 seeds`` when points average different numbers."""
    low, high = min(counts), max(counts)
    if low == high:
        return f"{low} seed" + ("s" if low > 1 else "")
    return f"{low} to {high} seeds"


def _overlap(a, b) -> float:
    """The area two display boxes share (0 when apart)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _config_of(result: Result) -> dict[str, Any]:
    """A result's config, with its scenario, strategy and seed filled in from the result (results
    made by ``train`` directly carry no config)."""
    return {
        **(result.config or {}),
        "scenario": result.scenario,
        "protocol": result.protocol,
        "strategy": result.strategy,
        "seed": result.seed,
    }


def svg_text(fig) -> str:
    """The figure as SVG markup (no XML header), and the figure closed."""
    plt = _pyplot()
    buffer = io.StringIO()
    # Text as text (not glyph outlines): a page a tenth the size, and searchable. No date or
    # creator metadata, so the same figure gives the same bytes.
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "forgetless"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def save(fig, path: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats`` added (a suffix ``path``
    already has of those formats is replaced); returns the files."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if path.suffix.lower().lstrip(".") in ("png", "svg", "pdf", *formats):
        path = path.with_suffix("")
    for fmt in formats:
        # Appended, not swapped in: a stem may hold dots of its own (``lr0.05``).
        out = path.with_name(f"{path.name}.{fmt}")
        fig.savefig(out, dpi=150)
        written.append(out)
    plt.close(fig)
    return written
