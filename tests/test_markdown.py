"""One Markdown parser, each platform's rendering: the web chat's HTML, Slack's mrkdwn, Discord's
2,000-character pieces. No input crashes a renderer, makes unsafe HTML, pings anyone on Slack,
or leaves a Discord piece over the limit or with its code fence open."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from adapters.discord_split import LIMIT, split_message
from adapters.markdown import open_fence, to_html, to_mrkdwn

# Text the way a model writes it: Markdown's markers, long words, and hostile bits.
MARKDOWNISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "word ",
                "end. ",
                "\n",
                "\n\n",
                "```py\n",
                "```\n",
                "~~~\n",
                "    ",
                "- ",
                "1. ",
                "> ",
                "# ",
                "**",
                "*",
                "_",
                "`",
                "[label](https://acme.example/a?b=1&c=2)",
                "[bad](javascript:alert(1))",
                "![pic](https://acme.example/p.png)",
                "<img src=x onerror=alert(1)>",
                "<script>alert(1)</script>",
                "https://acme.example/x.",
                "<!here> <@U123> ",
                "x" * 70,
            ]
        ),
        st.text(max_size=30),
    ),
    max_size=120,
).map("".join)


def test_html_of_an_answer() -> None:
    html = to_html(
        "## Steps\n1. Open **Settings**\n2. Pick *Plan*\n\n```sh\nrm -rf <dir>\n```\n"
        "See [docs](https://acme.example/d) or https://acme.example/help."
    )
    assert "<p><strong>Steps</strong></p>" in html
    assert "<ol>\n<li>Open <strong>Settings</strong></li>" in html
    assert '<pre><code class="language-sh">rm -rf &lt;dir&gt;\n</code></pre>' in html
    assert (
        '<a href="https://acme.example/d" rel="noopener noreferrer" target="_blank">docs</a>'
        in html
    )
    assert '<a href="https://acme.example/help" rel="noopener noreferrer"' in html


def test_hostile_markdown_stays_text() -> None:
    html = to_html(
        "<img src=x onerror=alert(1)> [x](javascript:alert(1)) ![p](https://t.example/p.png)"
    )
    assert "<img" not in html and 'href="javascript' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@given(MARKDOWNISH)
@example("[a](javascript:alert(1))")
@example("<a href='javascript:alert(1)'>x</a>")
def test_no_markdown_makes_unsafe_html(text: str) -> None:
    html = to_html(text)
    tags = re.findall(r"<\s*([a-zA-Z0-9]+)", html)
    assert set(tags) <= {
        "p",
        "strong",
        "em",
        "code",
        "pre",
        "ul",
        "ol",
        "li",
        "a",
        "br",
        "blockquote",
        "hr",
        "s",
    }
    for href in re.findall(r'href="([^"]*)"', html):
        assert href.startswith(("http://", "https://", "mailto:")), href
    assert not re.search(r"<[^>]*\son\w+\s*=", html)


@given(MARKDOWNISH)
def test_no_markdown_pings_anyone_on_slack(text: str) -> None:
    shown = to_mrkdwn(text)
    assert "<!" not in shown and "<@" not in shown and "<#" not in shown


@given(MARKDOWNISH, st.sampled_from([LIMIT, 300]))
@example("```py\n" + "x = 1\n" * 600, LIMIT)
@example("intro\n\n```\n" + "y" * 2500, LIMIT)
# Found by this test: a fence opened inside a list item closes only indented as the item.
@example("- ```py\n", LIMIT)
@example("> - ```py\n" + "z = 1\n" * 400, LIMIT)
@example("> ```py\n", LIMIT)
def test_discord_pieces_fit_and_leave_no_fence_open(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    assert all(len(piece) <= limit for piece in pieces)
    assert all(open_fence(piece) is None for piece in pieces)
    # What a split may add: fence markers (closing and reopening, a quote's ">" before a
    # closing one) and white space.
    squeeze = re.compile(r"(`{3,}|~{3,})[^\s`]*|[\s>]+")
    assert "".join(squeeze.sub("", piece) for piece in pieces) == squeeze.sub("", text)


def test_an_answer_cut_short_in_code_shows_its_code_as_code() -> None:
    (piece,) = split_message("Run this:\n```sh\nparley doctor")
    assert piece == "Run this:\n```sh\nparley doctor\n```"
