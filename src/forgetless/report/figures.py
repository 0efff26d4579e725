"""Figures of results, drawn with matplotlib from :class:`~forgetless.result.Result` alone.

Each function returns a matplotlib ``Figure``; :func:`save` writes PNG and SVG, and
:func:`svg_text` gives the SVG markup for embedding in a page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

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


def accuracy_heatmap(result: Result, title: str | None = None):
    """The accuracy matrix ``R[i, j]`` as a heatmap: rows are "after task i", columns "task j";
    each cell is labelled in percent. Forgetting shows as cells fading down a column."""
    plt = _pyplot()
    R = [[100 * v for v in row] for row in result.accuracy_matrix]
    n = len(R)
    fig, ax = plt.subplots(figsize=(0.8 * n + 2.2, 0.65 * n + 1.6), layout="constrained")
    image = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{R[i][j]:.0f}", ha="center", va="center",
                    color="white" if R[i][j] < 60 else "black", fontsize=9)  # fmt: skip
    ax.set_xticks(range(n), [f"task {j + 1}" for j in range(n)], rotation=30, ha="right")
    ax.set_yticks(range(n), [f"after {i + 1}" for i in range(n)])
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained up to")
    ax.set_title(title or f"{result.strategy}: accuracy (%)", fontsize=10)
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
    ax.set_title(title or f"{result.strategy}: perplexity per token", fontsize=10)
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
    if result.curves:
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
    ax.set_title(title or f"{result.strategy}: accuracy on each task along the stream", fontsize=10)
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
    differ only in seed are averaged (seed Figure 5); settings of one strategy that differ
    (``lam=10`` and ``lam=100``) are points of their own, labelled with the parameters that
    vary."""
    plt = _pyplot()
    if not results:
        raise ConfigError("no results to compare")
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.strategy, _settings(r, results)), []).append(r)
    fastest = {}
    for (scenario, _, _), members in groups.items():
        t = min(m.timings.get("train", 0.0) for m in members) or 1e-9
        fastest[scenario] = min(fastest.get(scenario, t), t)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained", sharey=True)
    one_scenario = len({key[0] for key in groups}) == 1
    for (scenario, strategy, settings), members in groups.items():
        acc = 100 * sum(m.metrics["acc"] for m in members) / len(members)
        memory = sum(m.strategy_state_bytes for m in members) / len(members) / 2**20
        time = sum(m.timings.get("train", 0.0) for m in members) / len(members)
        label = " ".join(filter(None, (strategy, settings)))
        if not one_scenario:
            label += f" ({scenario})"
        left.scatter(memory, acc, s=40)
        left.annotate(label, (memory, acc), fontsize=8, xytext=(4, 3), textcoords="offset points")
        right.scatter(time / fastest[scenario], acc, s=40)
        right.annotate(label, (time / fastest[scenario], acc), fontsize=8, xytext=(4, 3),
                       textcoords="offset points")  # fmt: skip
    left.set_xlabel("memory held by the strategy (MB)")
    left.set_ylabel("ACC (%)")
    right.set_xlabel("training time / fastest run")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title or "accuracy against memory and compute", fontsize=10)
    return fig


def frontier_plot(frontiers: Sequence, title: str | None = None):
    """Stability (accuracy kept on old tasks) against plasticity (accuracy reached on new
    tasks) for each setting of each strategy (seed Figure 4): points with one-std error bars
    over seeds, labelled with their setting; each strategy's Pareto front joined by a line, its
    hypervolume in the legend. Takes :class:`~forgetless.analysis.frontier.Frontier` objects."""
    plt = _pyplot()
    if not frontiers:
        raise ConfigError("no frontiers to draw")
    fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    for frontier in frontiers:
        pts = frontier.points
        xs = [100 * q.plasticity for q in pts]
        ys = [100 * q.stability for q in pts]
        bars = ax.errorbar(
            xs, ys, xerr=[100 * q.plasticity_std for q in pts],
            yerr=[100 * q.stability_std for q in pts], fmt="o", capsize=2, markersize=5,
            alpha=0.85, label=f"{frontier.strategy} (hypervolume {frontier.hypervolume:.3f})",
        )  # fmt: skip
        colour = bars[0].get_color()
        front = sorted(frontier.front, key=lambda k: pts[k].plasticity)
        ax.plot([xs[k] for k in front], [ys[k] for k in front], color=colour, linewidth=1.5)
        for q, x, y in zip(pts, xs, ys, strict=True):
            if q.value is None:  # a strategy placed at its settings: its name is the label
                continue
            ax.annotate(f"{q.value:g}", (x, y), fontsize=7, color=colour, xytext=(4, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("plasticity: accuracy reached on new tasks (%)")
    ax.set_ylabel("stability: accuracy kept on old tasks (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    parameters = ", ".join(
        sorted({f"{f.strategy}: {f.parameter or 'as given'}" for f in frontiers})
    )
    ax.set_title(title or f"stability-plasticity frontier ({parameters})", fontsize=10)
    return fig


def _settings(result: Result, results: Sequence[Result]) -> str:
    """The strategy parameters of ``result`` whose values differ among the runs of its
    strategy, as ``name=value`` text (empty when they all agree)."""
    mine = (result.config or {}).get("strategy_params", {})
    peers = [
        (r.config or {}).get("strategy_params", {})
        for r in results
        if (r.scenario, r.strategy) == (result.scenario, result.strategy)
    ]
    varying = sorted(k for k in mine if len({repr(p.get(k)) for p in peers}) > 1)
    return " ".join(f"{k}={mine[k]:g}" if isinstance(mine[k], float) else f"{k}={mine[k]}"
                    for k in varying)  # fmt: skip


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
    """Write ``fig`` as ``path`` with each suffix in ``formats``; returns the files."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = path.with_suffix(f".{fmt}")
        fig.savefig(out, dpi=150)
        written.append(out)
    plt.close(fig)
    return written
