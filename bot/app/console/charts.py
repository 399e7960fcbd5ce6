"""The overview's charts as SVG drawn on the server by matplotlib (its object API: no global
figure state, so a chart may be drawn in a worker thread): the page runs no script."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bot.app.console.overview import Overview, percentile

__all__ = ["latency_chart", "outcomes_chart", "questions_chart"]

COLOURS = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2")
# Text stays text in the SVG (not outlines): smaller, and read by screen readers and tests.
STYLE: Any = {"svg.fonttype": "none", "font.size": 9.0}


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    FigureCanvasSVG(figure).print_svg(out)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # the XML declaration and doctype have no place in HTML


def _days_along(axes: Any, days: int) -> None:
    """Day labels on the x axis that stay readable over 90 days."""
    axes.tick_params(axis="x", labelrotation=45 if days > 7 else 0)
    if days > 14:
        for i, label in enumerate(axes.get_xticklabels()):
            label.set_visible(i % (days // 10) == 0)
    axes.spines[["top", "right"]].set_visible(False)


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
        _days_along(axes, len(days))
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


def latency_chart(overview: Overview) -> str:
    """Seconds to the first text and to the whole answer a day: the median and the 95th
    percentile; a day without a timed answer is a gap in the lines."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(7.5, 2.6))
        axes = figure.add_subplot()
        days = sorted(overview.per_day)
        labels = [day.strftime("%b %d") for day in days]
        lines = (
            ("first text, median", overview.first_text, 50, "-"),
            ("first text, p95", overview.first_text, 95, "--"),
            ("whole answer, median", overview.whole_answer, 50, "-"),
            ("whole answer, p95", overview.whole_answer, 95, "--"),
        )
        colours = (COLOURS[0], COLOURS[0], COLOURS[1], COLOURS[1])
        for (name, by_day, q, style), colour in zip(lines, colours, strict=True):
            values = [percentile(by_day[d], q) if by_day.get(d) else float("nan") for d in days]
            axes.plot(range(len(days)), values, style, marker="o", color=colour, label=name)
        axes.set_xticks(range(len(days)), labels)
        axes.set_ylabel("seconds")
        axes.set_ylim(bottom=0)
        _days_along(axes, len(days))
        axes.legend(frameon=False, ncols=2)
        figure.tight_layout()
        return _svg(figure)
