"""Figures of the analyses in :mod:`forgetless.analysis`; each function returns a matplotlib
``Figure`` (write PNG and SVG with :func:`forgetless.report.figures.save`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from forgetless.errors import ConfigError
from forgetless.report.figures import _pyplot


def _record(r: Any, cls):
    return r if isinstance(r, cls) else cls(**r)


def overlap_forgetting(records: Sequence, title: str | None = None, measure: str = "overlap"):
    """Overlap of the units two tasks use against the forgetting of the first (seed Figure 3).

    Left: each task pair's overlap (per hidden layer, on the network after task A) against the
    forgetting of A after learning B, coloured by B's rotation angle, with a least-squares line
    through the layer means. Right: linear CKA between each layer's representation of A before
    and after B, against the angle. ``measure`` picks the overlap drawn: ``"overlap"`` (units
    active for both, of those active for either) or ``"overlap_weighted"`` (from firing rates).
    Takes
    :class:`~forgetless.analysis.overlap_study.OverlapRecord` objects (or their dicts).
    """
    from forgetless.analysis.overlap_study import OverlapRecord, overlap_claim

    rows = [_record(r, OverlapRecord) for r in records]
    if not rows:
        raise ConfigError("no overlap records to draw")
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    angles = [r.angle for r in rows]
    markers = "osD^v<>"
    layers = rows[0].layers
    scatter = None
    for k, layer in enumerate(layers):
        scatter = ax.scatter(
            [100 * getattr(r, measure)[k] for r in rows],
            [100 * r.forgetting for r in rows],
            c=angles,
            cmap="viridis",
            marker=markers[k % len(markers)],
            vmin=min(angles),
            vmax=max(angles),
            edgecolors="black",
            linewidths=0.4,
            label=f"hidden layer {k + 1} (module {layer})",
        )
    if len(rows) >= 3:
        try:
            fit = overlap_claim(rows, measure=measure)
        except ConfigError:
            fit = None
        if fit is not None:
            lo, hi = fit["overlap_range"]
            xs = [lo, hi]
            ax.plot(
                [100 * x for x in xs],
                [100 * (fit["intercept"] + fit["slope"] * x) for x in xs],
                color="black",
                linewidth=1,
                label=f"fit on layer means (r = {fit['pearson']:.2f})",
            )
    if scatter is not None:
        fig.colorbar(scatter, ax=ax, label="rotation of task B (degrees)")
    ax.set_xlabel(
        "units active for both tasks (% of those active for either)"
        if measure == "overlap"
        else f"{measure.replace('_', ' ')} (%)"
    )
    ax.set_ylabel("forgetting of task A (points)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    order = sorted(range(len(rows)), key=lambda i: rows[i].angle)
    for k, layer in enumerate(layers):
        ax2.plot(
            [rows[i].angle for i in order],
            [rows[i].cka[k] for i in order],
            marker=markers[k % len(markers)],
            linestyle="none" if len({r.seed for r in rows}) > 1 else "-",
            label=f"hidden layer {k + 1} (module {layer})",
        )
    ax2.set_xlabel("rotation of task B (degrees)")
    ax2.set_ylabel("CKA of A's representation, before vs after B")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.suptitle(title or "representation overlap and forgetting", fontsize=10)
    return fig


PLASTICITY_PANELS = (
    ("accuracy", "accuracy on the new task (%)", 100.0),
    ("dormant", "dormant units (%)", 100.0),
    ("effective_rank", "effective rank, last hidden layer", 1.0),
    ("weight_magnitude", "mean |weight|", 1.0),
)


def plasticity_curves(runs: Sequence, title: str | None = None, smooth: int = 1):
    """Loss of plasticity along a stream, one line per strategy (Dohare et al. 2024, Fig. 1):
    accuracy reached on each new task, dormant units, effective rank of the last hidden layer
    and mean weight magnitude, against the task. Runs of the same strategy (seeds) are averaged,
    with their range shaded; ``smooth`` > 1 takes a running mean over that many tasks. Takes
    :class:`~forgetless.analysis.plasticity.PlasticityRun` objects (or their dicts).
    """
    from forgetless.analysis.plasticity import PlasticityRun

    rows = [r if isinstance(r, PlasticityRun) else PlasticityRun.from_dict(r) for r in runs]
    if not rows:
        raise ConfigError("no plasticity runs to draw")
    if smooth < 1:
        raise ConfigError(f"smooth must be a positive number of tasks, got {smooth}")
    groups: dict[str, list] = {}
    for run in rows:
        groups.setdefault(_label(run.strategy, run.params), []).append(run)
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained", sharex=True)
    for ax, (key, ylabel, scale) in zip(axes.flat, PLASTICITY_PANELS, strict=True):
        for label, group in groups.items():
            series = [_running_mean([scale * v for v in run.series(key)], smooth) for run in group]
            n = min(len(s) for s in series)
            tasks = list(range(1, n + 1))
            mean = [sum(s[i] for s in series) / len(series) for i in range(n)]
            line = ax.plot(tasks, mean, label=f"{label} ({len(group)} seed(s))", linewidth=1.2)
            if len(series) > 1:
                low = [min(s[i] for s in series) for i in range(n)]
                high = [max(s[i] for s in series) for i in range(n)]
                ax.fill_between(tasks, low, high, color=line[0].get_color(), alpha=0.2)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("task")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "plasticity along the stream", fontsize=10)
    return fig


def _label(strategy: str, params: Mapping[str, Any]) -> str:
    from forgetless.labels import strategy_text

    return strategy_text(strategy, params)


def _running_mean(values: list[float], window: int) -> list[float]:
    if window == 1:
        return values
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


# --- loss landscapes and weight trajectories (forgetless.analysis.landscape, .trajectory) ---


def loss_curves(lines: Mapping[str, Any], title: str | None = None):
    """1-D loss landscapes (Li et al. 2018, Fig. 3 style): loss (left) and accuracy (right)
    along ``theta + alpha d``, one colour per entry of ``lines`` (label ->
    :class:`~forgetless.analysis.landscape.LossLine`); a line with several directions draws one
    thin curve per direction and their mean thick."""
    if not lines:
        raise ConfigError("no loss lines to draw")
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for k, (label, line) in enumerate(lines.items()):
        colour = f"C{k}"
        alphas = line.alphas.tolist()
        for values, axis, scale in ((line.loss, ax, 1.0), (line.accuracy, ax2, 100.0)):
            rows = values.reshape(-1, len(alphas))
            if len(rows) > 1:
                for row in rows:
                    axis.plot(
                        alphas, (scale * row).tolist(), color=colour, linewidth=0.6, alpha=0.4
                    )
            axis.plot(alphas, (scale * rows.mean(dim=0)).tolist(), color=colour, linewidth=1.8,
                      label=label)  # fmt: skip
    ax.set_ylabel("loss (cross-entropy)")
    ax2.set_ylabel("accuracy (%)")
    for axis in (ax, ax2):
        axis.set_xlabel("alpha (filter-normalised direction)")
        axis.axvline(0, color="0.7", linewidth=0.8, zorder=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(title or "loss along random directions", fontsize=10)
    return fig


def loss_contour(plane: Any, title: str | None = None, levels: int = 20):
    """A 2-D loss landscape (Li et al. 2018, Fig. 5 style): contours of the loss over
    ``theta + alpha d1 + beta d2`` (a :class:`~forgetless.analysis.landscape.LossPlane`), the
    solution at the origin marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4), layout="constrained")
    loss = plane.loss.T.tolist()  # rows: betas, columns: alphas
    filled = ax.contourf(plane.alphas.tolist(), plane.betas.tolist(), loss, levels=levels,
                         cmap="viridis")  # fmt: skip
    lines = ax.contour(plane.alphas.tolist(), plane.betas.tolist(), loss, levels=levels,
                       colors="white", linewidths=0.4)  # fmt: skip
    ax.clabel(lines, lines.levels[::4], fontsize=6, fmt="%.2g")
    ax.plot([0], [0], marker="*", color="red", markersize=10, linestyle="none", label="solution")
    fig.colorbar(filled, ax=ax, label="loss")
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("beta (direction 2)")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or "loss around the solution", fontsize=10)
    return fig


def interpolation_plot(lines: Mapping[str, Any], title: str | None = None):
    """Loss (left) and accuracy (right) along the straight line from the task-A solution
    (``alpha = 0``) to the task-B solution (``alpha = 1``), one curve per task's data
    (label -> :class:`~forgetless.analysis.landscape.LossLine`)."""
    if not lines:
        raise ConfigError("no interpolation lines to draw")
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for label, line in lines.items():
        ax.plot(line.alphas.tolist(), line.loss.tolist(), marker=".", label=label)
        ax2.plot(line.alphas.tolist(), (100 * line.accuracy).tolist(), marker=".", label=label)
    ax.set_ylabel("loss (cross-entropy)")
    ax2.set_ylabel("accuracy (%)")
    for axis in (ax, ax2):
        for x, name in ((0, "A solution"), (1, "B solution")):
            axis.axvline(x, color="0.6", linewidth=0.8, linestyle="--", zorder=0)
            axis.annotate(name, (x, 1), xycoords=("data", "axes fraction"), fontsize=7,
                          xytext=(2, -10), textcoords="offset points")  # fmt: skip
        axis.set_xlabel("alpha: (1 - alpha) theta_A + alpha theta_B")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(title or "from the task-A solution to the task-B solution", fontsize=10)
    return fig


def trajectory_plot(study: Any, title: str | None = None, levels: int = 15):
    """The weight-space trajectory (seed Figure 1): on the plane of the paths' top two
    principal directions (a :class:`~forgetless.analysis.trajectory.TrajectoryStudy`), the
    contours of task A's loss (left) and task B's (right), each strategy's path over both, the
    start, the end of task A (the A optimum) and each path's end (fine-tuning's is the B
    optimum) marked."""
    plt = _pyplot()
    names = list(study.surfaces)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.6), layout="constrained",
                             squeeze=False)  # fmt: skip
    explained = study.plane.explained.tolist()
    from matplotlib.colors import LogNorm

    for ax, name, cmap in zip(axes[0], names, ("Blues_r", "Reds_r"), strict=False):
        surface = study.surfaces[name]
        # Log-spaced levels: the loss spans decades across the plane, and the valleys the
        # paths run along would all fall in the lowest of evenly spaced levels.
        low = max(float(surface.loss.min()), 1e-3)
        high = max(float(surface.loss.max()), 1.01 * low)
        bounds = [low * (high / low) ** (k / levels) for k in range(levels + 1)]
        filled = ax.contourf(surface.alphas.tolist(), surface.betas.tolist(),
                             surface.loss.clamp_min(low).T.tolist(), levels=bounds, cmap=cmap,
                             norm=LogNorm(low, high))  # fmt: skip
        fig.colorbar(filled, ax=ax, label=f"{name} loss (log scale)", format="%.2g")
        for k, (label, coords) in enumerate(study.coordinates.items()):
            trajectory = study.trajectories[label]
            xs, ys = coords[:, 0].tolist(), coords[:, 1].tolist()
            colour = ("black", "darkorange", "green", "purple")[k % 4]
            ax.plot(xs, ys, color=colour, linewidth=1.4, marker=".", markersize=3, label=label)
            end_a = trajectory.task_ends[0]
            ax.plot(xs[-1], ys[-1], marker="s", color=colour, markersize=8, linestyle="none",
                    markeredgecolor="white", label=f"{label}: end of task B")  # fmt: skip
            if k == 0:
                ax.plot(xs[0], ys[0], marker="o", color="grey", markersize=7, linestyle="none",
                        label="start")  # fmt: skip
                ax.plot(xs[end_a], ys[end_a], marker="*", color="gold", markersize=14,
                        markeredgecolor="black", linestyle="none", label="A optimum")  # fmt: skip
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of the path's variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}%)")
        ax.set_title(f"{name} loss on the paths' PCA plane", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="best", framealpha=0.7)
    fig.suptitle(title or "weight-space trajectory: task A, then task B", fontsize=10)
    return fig
