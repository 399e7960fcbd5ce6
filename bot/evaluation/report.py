"""An evaluation written out: a table for the terminal, ``eval.json``, and ``eval.html``, a
self-contained page with one row per question (failures first)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.evaluation.run import Result
from bot.evaluation.score import LABELS, LOWER_IS_BETTER, Figures, verdict
from bot.knowledge.scope import Signals

__all__ = ["table", "write_html", "write_json"]


def _value(name: str, value: float) -> str:
    return f"{value:.1f}" if name.endswith(("_p50", "_p95")) else f"{value:.2f}"


def table(found: Figures, heading: str) -> str:
    """The figures as a Markdown table."""
    width = max(len(label) for label in LABELS.values())
    lines = [
        heading,
        "",
        f"| {'measure':<{width}} | value |",
        f"|{'-' * (width + 2)}|------:|",
    ]
    values = found.as_dict()
    for name, label in LABELS.items():
        lines.append(f"| {label:<{width}} | {_value(name, values[name]):>5} |")
    return "\n".join(lines)


def _row(result: Result) -> dict[str, Any]:
    ok, why = verdict(result)
    item = result.item
    return {
        "line": item.line,
        "question": item.question,
        "history": [{"role": t.role, "content": t.content} for t in item.history],
        "out_of_scope": item.out_of_scope,
        "document": item.document,
        "facts": [list(forms) for forms in item.facts],
        "answer": result.answer,
        "outcome": result.outcome,
        "sources": [s.path for s in result.sources],
        "retrieved": list(dict.fromkeys(s.path for s in result.retrieved)),
        "unsupported": [{"kind": s.kind, "text": s.text} for s in result.unsupported],
        "first_text_s": round(result.first_text, 3),
        "answer_s": round(result.seconds, 3),
        "ok": ok,
        "why": why,
        # The don't-know's signals, to see why a question was (not) answered, or refit by hand.
        "signals": _signals(result.signals),
    }


def _signals(signals: Signals | None) -> dict[str, Any] | None:
    if signals is None:
        return None
    rounded = {name: round(value, 4) for name, value in signals.values().items()}
    return {**rounded, "off_topic_kind": signals.kind, "off_topic_example": signals.example}


def write_json(
    path: Path, results: Sequence[Result], found: Figures, settings: Mapping[str, Any]
) -> None:
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": dict(settings),
        "figures": found.as_dict(),
        "questions": [_row(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #1d2430; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d4d9e1; padding: 6px 8px; vertical-align: top; text-align: left; }
th { background: #eef1f5; }
.figures td:nth-child(2) { text-align: right; font-variant-numeric: tabular-nums; }
td.answer { white-space: pre-wrap; max-width: 36em; }
tr.fail td.verdict { background: #fde8e8; }
tr.pass td.verdict { background: #e6f6ea; }
small, .muted { color: #5b6472; }
mark { background: #ffe08a; }
"""


def _question_cell(result: Result) -> str:
    e = html.escape
    earlier = "".join(
        f'<div class="muted">{e(t.role)}: {e(t.content)}</div>' for t in result.item.history
    )
    return f"{earlier}{e(result.item.question)}"


def _expected_cell(result: Result) -> str:
    e = html.escape
    item = result.item
    if item.out_of_scope:
        return "<i>out of scope</i>"
    facts = "".join(f"<br><small>fact: {e(' | '.join(forms))}</small>" for forms in item.facts)
    return e(item.document) + facts


def _answer_cell(result: Result) -> str:
    """The answer, escaped, with its unsupported specifics highlighted."""
    shown = html.escape(result.answer)
    for specific in result.unsupported:
        escaped = html.escape(specific.text)
        shown = shown.replace(escaped, f"<mark>{escaped}</mark>")
    return shown


def write_html(
    path: Path, results: Sequence[Result], found: Figures, settings: Mapping[str, Any]
) -> None:
    e = html.escape
    values = found.as_dict()
    lower = " <small>(lower is better)</small>"
    figure_rows = "".join(
        f"<tr><td>{e(label)}{lower if name in LOWER_IS_BETTER else ''}"
        f"</td><td>{_value(name, values[name])}</td></tr>"
        for name, label in LABELS.items()
    )
    judged = [(result, *verdict(result)) for result in results]
    # Failures first, then in the golden set's order.
    judged.sort(key=lambda row: (row[1], row[0].item.line))
    rows = []
    for result, ok, why in judged:
        sources = "<br>".join(e(s.path) for s in result.sources) or "<small>none</small>"
        rows.append(
            f'<tr class="{"pass" if ok else "fail"}"><td>{result.item.line}</td>'
            f"<td>{_question_cell(result)}</td><td>{_expected_cell(result)}</td>"
            f'<td class="answer">{_answer_cell(result)}</td><td>{sources}</td>'
            f'<td class="verdict">{"pass" if ok else "FAIL"}<br><small>{e(result.outcome)}'
            f"</small></td><td>{e(why)}<br><small>first text {result.first_text:.1f} s,"
            f" whole {result.seconds:.1f} s</small></td></tr>"
        )
    failed = sum(1 for _, ok, _ in judged if not ok)
    setting_text = " · ".join(f"{k}: {v}" for k, v in settings.items())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = e(f"Parley eval: {settings.get('golden', '')}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{_STYLE}</style></head><body>
<h1>Parley eval</h1>
<p class="muted">{e(when)} · {e(setting_text)}</p>
<table class="figures"><tr><th>measure</th><th>value</th></tr>
{figure_rows}</table>
<h2>{len(results)} questions ({found.answerable} answerable, {found.out_of_scope} out of scope),
{failed} failed</h2>
<p class="muted">Failures first. Highlighted: specifics found in no article, nor in the
conversation or the question.</p>
<table><tr><th>line</th><th>question</th><th>expected</th><th>answer</th><th>sources</th>
<th>verdict</th><th>why</th></tr>
{"".join(rows)}
</table></body></html>
"""
    path.write_text(page, encoding="utf-8")
