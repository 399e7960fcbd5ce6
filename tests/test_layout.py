"""One direction of imports: adapters → core → generation / knowledge / storage, no cycles.

Every import counts, a late one inside a function too. Below the app layer (``bot.app``, which
wires everything), ``bot`` may not import an adapter or a platform library (discord.py,
slack-bolt, slack-sdk), and no two project modules may import each other, however indirectly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_LIBRARIES = ("adapters", "discord", "slack_bolt", "slack_sdk")

#: The app layer on top wires the adapters: it may import anything.
APP = "bot.app"
#: The shared vocabulary: importable from anywhere, importing only each other.
SHARED = {"bot.config", "bot.events", "bot.errors", "bot.redact", "bot.typed_tables"}
#: Each part, and the parts it may import besides itself and the shared modules
#: (docs/architecture.md). None: anything.
LAYERS: dict[str, set[str] | None] = {
    "bot.app": None,
    "bot.__main__": None,
    "bot.evaluation": {"bot.core", "bot.generation", "bot.knowledge", "bot.storage"},
    "adapters": {"bot.core"},
    "bot.core": {"bot.generation", "bot.knowledge", "bot.storage"},
    "bot.training": {"bot.generation", "bot.storage"},
    "bot.generation": set(),
    "bot.knowledge": set(),
    "bot.storage": set(),
}
#: Imports against the direction today, which may only shrink.
KNOWN_AGAINST: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("bot", "adapters"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, name: str) -> set[str]:
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(imported: str) -> str:
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        return imported

    return {
        name: {resolve(i) for i in _imports(path, name)} - {"", name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_core_imports_no_adapter_and_no_platform_library() -> None:
    offenders = {
        name
        for name, path in _modules().items()
        if name.split(".")[0] == "bot"
        and name.split(".")[:2] != APP.split(".")
        and any(i.split(".")[0] in PLATFORM_LIBRARIES for i in _imports(path, name))
    }
    assert not offenders, offenders


def _part(module: str, parts: Iterable[str]) -> str:
    return next(
        (
            p
            for p in sorted(parts, key=len, reverse=True)
            if module == p or module.startswith(p + ".")
        ),
        "",
    )


def test_each_part_imports_only_the_parts_below_it() -> None:
    against = set()
    for name, imported in _graph().items():
        if name in SHARED:
            against |= {(name, i) for i in imported if i not in SHARED}
            continue
        part = _part(name, LAYERS)
        assert part or name == "bot", f"{name} belongs to no part: add it to LAYERS"
        allowed = LAYERS.get(part, set())
        if allowed is None:
            continue
        for other in imported:
            target = _part(other, LAYERS)
            if other not in SHARED and target != part and target not in allowed:
                against.add((name, other))
    assert against <= KNOWN_AGAINST, sorted(against - KNOWN_AGAINST)
    assert against == KNOWN_AGAINST, f"fixed, strike from KNOWN_AGAINST: {KNOWN_AGAINST - against}"


def test_no_new_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_checks_see_a_cycle_and_a_late_import(tmp_path: Path) -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from ..storage import base\n    import discord\n")
    assert _imports(module, "bot.core.late") == {"bot.storage", "discord"}
