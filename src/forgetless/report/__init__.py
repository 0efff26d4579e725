"""Figures (matplotlib) and a self-contained HTML report, made from results alone."""

from forgetless.report.figures import (
    accuracy_heatmap,
    forgetting_curves,
    perplexity_heatmap,
    save,
    strategy_comparison,
)
from forgetless.report.html import build_report, write_report

__all__ = [
    "accuracy_heatmap",
    "build_report",
    "forgetting_curves",
    "perplexity_heatmap",
    "save",
    "strategy_comparison",
    "write_report",
]
