"""The overview's charts as SVG drawn on the server by matplotlib (its object API: no global
figure state, so a chart may be drawn in a worker thread): the page runs no script."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bot.app.console.overview import Overview

__all__ = ["outcomes_chart", "questions_chart"]

COLOURS = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2")
# Text stays text in the SVG (not outlines): smaller, and read by screen readers and tests.
STYLE: Any = {"svg.fonttype": "none", "font.size": 9.0}


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    FigureCanvasSVG(figure).print_svg(out)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # the XML declaration and doctype have no place in HTML


def questions_chart(overview: Overview) -> str:
    """Questions a day, stacked by platform."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(7.5, 2.8))
        axes = figure.add_subplot()
        days = sorted(overview.per_day)
        labels = [day.strftime("%b %d") for day in days]
        bottom = [0] * len(days)
        for platform, colour in zip(overview.platforms, COLOURS * 4, strict=False):
            counts = [overview.per_day[day][platform] for day in days]
            axes.bar(labels, counts, bottom=bottom, label=platform, color=colour)
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.tick_params(axis="x", labelrotation=45 if len(days) > 7 else 0)
        if len(days) > 14:
            for i, label in enumerate(axes.get_xticklabels()):
                label.set_visible(i % (len(days) // 10) == 0)
        axes.spines[["top", "right"]].set_visible(False)
        if overview.platforms:
            axes.legend(frameon=False, ncols=len(overview.platforms))
        figure.tight_layout()
        return _svg(figure)


def outcomes_chart(outcomes: Mapping[str, int]) -> str:
    """What became of the questions, one bar each, its count beside it."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(7.5, 0.45 * len(outcomes) + 0.6))
        axes = figure.add_subplot()
        names = list(outcomes)[::-1]
        bars = axes.barh(names, [outcomes[n] for n in names], color=COLOURS[: len(names)][::-1])
        axes.bar_label(bars, padding=3)
        axes.xaxis.set_visible(False)
        axes.spines[["top", "right", "bottom"]].set_visible(False)
        figure.tight_layout()
        return _svg(figure)
