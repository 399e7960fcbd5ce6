"""The model's Markdown, parsed once by markdown-it-py (CommonMark), shown each platform's way.

- ``to_html``: the web chat's HTML. Raw HTML in the text stays text, images are not loaded,
  links go only to http(s) and mailto addresses and open in a new tab, bare addresses become
  links (linkify-it-py), headings read as bold lines.
- ``to_mrkdwn``: Slack's mrkdwn, every character of text escaped so nothing can ping.
- ``open_fence``: the code fence a Discord message piece leaves open (Discord renders Markdown
  itself; its splitting closes and reopens fences, ``discord_split``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

__all__ = ["Fence", "escape_mrkdwn", "open_fence", "to_html", "to_mrkdwn"]

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_NESTED_INDENT = "    "


def _safe_link(url: str) -> bool:
    return url.strip().lower().startswith(_SAFE_SCHEMES)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True})
    md.enable(["strikethrough", "linkify"]).disable("image")
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return md


_MD = _parser()


def _lines(text: str) -> str:
    """Line ends as markdown-it counts them, so its line numbers index ``split("\\n")``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _blank_lines_between(
    lines: Sequence[str], before: SyntaxTreeNode, after: SyntaxTreeNode
) -> int:
    """Blank source lines between two blocks (a list's range takes in the blank line after)."""
    if before.map is None or after.map is None:
        return 1
    end = before.map[1]
    while end > before.map[0] and not lines[end - 1].strip():
        end -= 1
    return after.map[0] - end


# -- HTML for the web chat ------------------------------------------------------------------
def _html_renderer() -> MarkdownIt:
    md = _parser()

    def link_open(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noopener noreferrer")
        tokens[idx].attrSet("target", "_blank")
        return str(self.renderToken(tokens, idx, options, env))

    def heading_open(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        return "<p><strong>"

    def heading_close(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        return "</strong></p>\n"

    md.add_render_rule("link_open", link_open)
    md.add_render_rule("heading_open", heading_open)
    md.add_render_rule("heading_close", heading_close)
    return md


_HTML = _html_renderer()


def to_html(markdown: str) -> str:
    """``markdown`` as HTML safe to put in the page: markdown-it escapes every character of
    text and attribute, and only the elements above are made."""
    return str(_HTML.render(markdown))


# -- Slack's mrkdwn --------------------------------------------------------------------------
def escape_mrkdwn(text: str) -> str:
    """``text`` with Slack's three control characters escaped: it can ping no one."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """The model's Markdown as Slack mrkdwn: **bold** as *bold*, *italic* as _italic_,
    ~~strike~~ as ~strike~, [label](url) as <url|label>, headings bold, bullets as •, code as
    code; blocks keep the blank lines between them."""
    markdown = _lines(markdown)
    root = SyntaxTreeNode(_MD.parse(markdown))
    return _blocks(root.children, markdown.split("\n")).strip("\n")


def _blocks(nodes: Sequence[SyntaxTreeNode], lines: Sequence[str], indent: str = "") -> str:
    """Blocks one after the other; lists inside a list item (``indent``) shifted right."""
    out = ""
    for index, node in enumerate(nodes):
        if index:
            out += "\n\n" if _blank_lines_between(lines, nodes[index - 1], node) > 0 else "\n"
        shown = _block(node, lines)
        if indent and node.type in ("bullet_list", "ordered_list"):
            shown = indent + shown.replace("\n", "\n" + indent)
        out += shown
    return out


def _block(node: SyntaxTreeNode, lines: Sequence[str]) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inline(node.children)
    if kind == "heading":
        return f"*{_inline(node.children)}*"
    if kind in ("fence", "code_block"):
        return f"```\n{escape_mrkdwn(node.content.rstrip(chr(10)))}\n```"
    if kind in ("bullet_list", "ordered_list"):
        first = int(node.attrs.get("start", 1)) if kind == "ordered_list" else 1
        items = []
        for number, item in enumerate(node.children, start=first):
            marker = f"{number}. " if kind == "ordered_list" else "• "
            items.append(marker + _blocks(item.children, lines, _NESTED_INDENT))
        return "\n".join(items)
    if kind == "blockquote":
        return "\n".join("> " + line for line in _blocks(node.children, lines).split("\n"))
    if kind == "hr":
        return "───"
    return escape_mrkdwn(node.content)


def _inline(nodes: Sequence[SyntaxTreeNode]) -> str:
    out = []
    for node in nodes:
        kind = node.type
        if kind == "inline":
            out.append(_inline(node.children))
        elif kind == "text":
            out.append(escape_mrkdwn(node.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "code_inline":
            out.append(f"`{escape_mrkdwn(node.content)}`")
        elif kind == "strong":
            out.append(f"*{_inline(node.children)}*")
        elif kind == "em":
            out.append(f"_{_inline(node.children)}_")
        elif kind == "s":
            out.append(f"~{_inline(node.children)}~")
        elif kind == "link":
            href = escape_mrkdwn(str(node.attrs.get("href", ""))).replace("|", "%7C")
            label = _plain(node.children).replace("|", "/")
            out.append(f"<{href}>" if node.markup == "linkify" else f"<{href}|{label}>")
        else:
            out.append(escape_mrkdwn(node.content))
    return "".join(out)


def _plain(nodes: Sequence[SyntaxTreeNode]) -> str:
    """A link's label: its text, escaped, without markup (Slack shows a label as it is)."""
    return "".join(
        escape_mrkdwn(node.content) if not node.children else _plain(node.children)
        for node in nodes
    )


# -- Discord's code fences -------------------------------------------------------------------
class Fence(NamedTuple):
    """A code fence left open: what a closing line needs (``indent``: the opener's container
    prefix, a quote's ``>`` kept and a list's marker as spaces) and its ``info`` string."""

    indent: str
    marker: str
    info: str


def open_fence(text: str) -> Fence | None:
    """The code fence ``text`` leaves open at its end, or None when every fence is closed."""
    text = _lines(text)
    lines = text.split("\n")
    written = len(lines)
    while written and not lines[written - 1].strip():
        written -= 1
    for token in reversed(_MD.parse(text)):
        if token.type != "fence" or token.map is None:
            continue
        start, end = token.map
        if end < written:
            return None  # closed by its marker or by the end of its list item or quote
        last = lines[end - 1].strip().lstrip(">").strip() if start < end - 1 < len(lines) else ""
        marker = token.markup[0]
        if len(last) >= len(token.markup) and set(last) == {marker}:
            return None
        opener = lines[start]
        prefix = opener[: max(opener.find(token.markup), 0)]
        indent = "".join(c if c == ">" else " " for c in prefix)
        return Fence(indent, token.markup, token.info.strip())
    return None
