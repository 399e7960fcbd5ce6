"""Resolved conversations that teach the knowledge base, a person deciding what it learns: the
snippet proposed from a staff answer, masked; staff alone decide; an approved snippet answers a
differently worded question and is cited, a rejected one never; the queue survives a restart
(SQLite and Redis); `parley kb review` from the terminal.

The knowledge base is three articles of the held-out ferry company."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from bot.app.cli import main
from bot.app.commands.report import build_report, format_report
from bot.config import (
    BotConfig,
    Config,
    HandoffConfig,
    KnowledgeConfig,
    StoreConfig,
)
from bot.core.learning import mask, propose
from bot.core.service import Service
from bot.core.wording import NOT_STAFF_SNIPPET
from bot.knowledge.base import KnowledgeBase
from bot.knowledge.embed import Embedder
from bot.storage import build_store
from bot.storage.base import Turn
from tests.scripted import ScriptedBackend
from tests.test_knowledge import NO_LIMITS

ROOT = Path(__file__).resolve().parents[1]
ARTICLES = ("lost-property.md", "cancelling-and-refunds.md", "travelling-with-pets.md")
STAFF = {"user": "u9", "roles": ("support",), "user_name": "Bob Keane"}
TRAILER = (
    "Hi Alice! Thanks for waiting. Yes: a trailer up to 3 m long travels on night sailings for"
    " £18 each way, booked at least 24 hours ahead. Hope this helps!"
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def learning_config(tmp_path: Path, base: Config | None = None) -> Config:
    """``base`` (or a plain config) answering from three held-out articles."""
    articles = tmp_path / "articles"
    if not articles.exists():
        articles.mkdir()
        for name in ARTICLES:
            shutil.copy(ROOT / "config" / "eval" / "heldout" / name, articles / name)
    return dataclasses.replace(
        base or Config(limits=NO_LIMITS, handoff=HandoffConfig(staff_roles=["support"])),
        bot=BotConfig(company="Kestrel Ferries"),
        knowledge=KnowledgeConfig(paths=[str(articles)]),
    )


def _config(tmp_path: Path, store: StoreConfig) -> Config:
    return dataclasses.replace(learning_config(tmp_path), store=store)


async def learning_service(config: Config, embedder: Embedder | None = None) -> Service:
    """A started service with that knowledge base, whose model is never asked."""
    kb = KnowledgeBase(config.knowledge, config.store.path, embedder, config.bot.company)
    service = Service(config, ScriptedBackend("unused"), build_store(config), kb)
    await service.start()
    return service


async def _service(config: Config, embedder: Embedder) -> Service:
    return await learning_service(config, embedder)


async def _resolved(service: Service, channel: str, question: str, answer: str) -> str:
    """A customer's question, handed to staff, answered by them and resolved: the snippet id."""
    chat = MemoryAdapter(service)
    await chat.send(question, channel=channel).wait()
    await chat.send("human", channel=channel).wait()
    staff = chat.send(answer, channel=channel, **STAFF)
    await chat.drain()
    assert staff.text is None  # the bot stays quiet while a person has the conversation
    reply = chat.send("", channel=channel)  # a reply object for the bot's "I'm back"
    await chat.drain()
    key = chat.event("", channel=channel).key
    assert await service.resolve(key, "u9", ("support",), reply)
    [snippet] = [s for s in await service.store.snippets() if s.conversation == str(key)]
    return snippet.id


def test_a_snippet_is_the_question_and_the_staff_answer_cleaned_and_masked() -> None:
    at = datetime.now(UTC)
    turns = [
        Turn("user", "My name is Alice Grey and my email is alice@example.com.", at),
        Turn("user", "Can I bring a trailer on the night boat? Booking KF-58213.", at),
        Turn("assistant", "I'm sorry, I don't know the answer to that one.", at, "dont_know"),
        Turn("user", "human", at),
        Turn("assistant", "I've asked a member of our support team to take over.", at),
        Turn("user", f"[staff Bob Keane] {TRAILER}", at),
        Turn("user", "thanks!", at),
        Turn("user", "[staff Bob Keane] Call us on +44 20 7946 0958 if not. Bob", at),
    ]
    question, answer = propose(turns) or ("", "")
    assert question == "Can I bring a trailer on the night boat? Booking [number]."
    assert answer == (
        "Yes: a trailer up to 3 m long travels on night sailings for £18 each way, booked at"
        " least 24 hours ahead. Call us on [phone] if not. [name]"
    )
    assert mask("I'm Alice, card 4111 1111 1111 1111, mail a.b@c.io") == (
        "I'm [name], card [card], mail [email]"
    )
    # Nobody from the staff answered: nothing to learn.
    assert propose([t for t in turns if not t.content.startswith("[staff")]) is None


async def test_staff_decide_what_is_learned_and_the_learned_snippet_is_cited(
    tmp_path: Path, embedder: Embedder, store_config: StoreConfig
) -> None:
    config = _config(tmp_path, store_config)
    service = await _service(config, embedder)
    question = "Can I take a small trailer on the overnight crossing?"
    taught = await _resolved(service, "c1", question, TRAILER)
    snippet = await service.snippet(taught)
    assert snippet is not None and snippet.state == "pending" and not snippet.note
    assert "Alice" not in snippet.answer and "Hope this helps" not in snippet.answer

    # Before anyone approves it, the bot does not know.
    chat = MemoryAdapter(service)
    asked = "how much is it to bring a trailer on a night sailing?"
    assert "£18" not in await chat.send(asked, channel="c2").wait()
    await service.close()

    # The queue outlives a restart; a customer cannot decide, staff can.
    service = await _service(config, embedder)
    assert await service.decide_snippet(taught, "approve", "u1") == (False, NOT_STAFF_SNIPPET)
    done, line = await service.decide_snippet(taught, "approve", "u9", ("support",), name="Bob")
    assert done and line == "This snippet was approved by Bob."
    assert not (await service.decide_snippet(taught, "reject", "u9", ("support",)))[0]

    chat = MemoryAdapter(service)
    text = await chat.send(asked, channel="c3").wait()
    assert "£18 each way" in text
    assert "- Can I take a small trailer on the overnight crossing? (from our support team)" in text
    await chat.drain()  # counted once the answer is posted
    assert (await service.snippet(taught)).cited == 1  # type: ignore[union-attr]

    # A rejected snippet is never learned, nor cited.
    dropped = await _resolved(
        service, "c4", "Do you sell ferry tickets for horses?", "Yes, horses travel for £40."
    )
    assert (await service.decide_snippet(dropped, "reject", "u9", ("support",)))[0]
    text = await chat.send("what does a horse cost on the ferry?", channel="c5").wait()
    assert "£40" not in text
    report = format_report(await build_report(service.store))
    assert "snippets proposed    2: 1 approved, 0 edited, 1 rejected, 0 pending" in report
    assert (
        "Learned from staff (the most cited first):\n     1  Can I take a small trailer" in report
    )
    await service.close()


async def test_a_snippet_that_contradicts_an_article_is_flagged(
    tmp_path: Path, embedder: Embedder
) -> None:
    config = _config(tmp_path, StoreConfig(path=str(tmp_path / "parley.db")))
    service = await _service(config, embedder)
    taught = await _resolved(
        service,
        "c1",
        "How long do you keep things left on the ferry?",
        "We keep lost items for 90 days before they go to charity.",
    )
    snippet = await service.snippet(taught)
    assert snippet is not None
    assert (
        snippet.note == 'The article "Lost property" says 30 days where this answer says 90 days.'
    )
    await service.close()


async def test_the_terminal_lists_and_decides(
    tmp_path: Path, embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, StoreConfig(path=str(tmp_path / "parley.db")))
    service = await _service(config, embedder)
    taught = await _resolved(
        service, "c1", "Can I take a small trailer on the overnight crossing?", TRAILER
    )
    path = tmp_path / "parley.toml"
    path.write_text(
        f'[knowledge]\npaths = ["{tmp_path / "articles"}"]\n[store]\npath = "{config.store.path}"\n'
    )

    async def parley(*args: str) -> int:
        return await asyncio.to_thread(main, ["--config", str(path), *args])

    capsys.readouterr()
    assert await parley("kb", "review") == 0
    listed = capsys.readouterr().out
    assert taught in listed and "A: Yes: a trailer up to 3 m long" in listed
    assert "1 waiting, 0 learned" in listed
    edited = "A trailer up to 3 m travels on night sailings for £18 each way."
    assert await parley("kb", "review", taught, "edit", edited) == 0
    assert await parley("kb", "review", taught, "approve") == 1
    assert await parley("kb", "search", "trailer at night price") == 0
    assert edited in capsys.readouterr().out
    # The service running all along learns it at its next sync (the terminal already wrote
    # the index they share), and one started afresh knows it at once.
    await service.learning.sync()
    assert edited in await MemoryAdapter(service).send("price of a trailer at night?").wait()
    await service.close()
    service = await _service(dataclasses.replace(config), embedder)
    text = await MemoryAdapter(service).send("price of a trailer at night?").wait()
    assert edited in text
    await service.close()


async def test_a_golden_line_only_a_resolved_thread_answers_passes_once_approved(
    tmp_path: Path, embedder: Embedder
) -> None:
    config = _config(tmp_path, StoreConfig(path=str(tmp_path / "parley.db")))
    service = await _service(config, embedder)
    question = "Can I take a small trailer on the overnight crossing?"
    taught = await _resolved(service, "c1", question, TRAILER)
    await service.close()
    golden = tmp_path / "golden.jsonl"
    line = {"question": "what's the fare for a trailer at night?", "document": question}
    golden.write_text(json.dumps({**line, "facts": ["£18 each way"]}) + "\n")
    path = tmp_path / "parley.toml"
    path.write_text(
        f'[knowledge]\npaths = ["{tmp_path / "articles"}"]\n[store]\npath = "{config.store.path}"\n'
    )

    async def passes() -> bool:
        out = tmp_path / "eval"
        args = ["--config", str(path), "eval", str(golden), "--out", str(out)]
        await asyncio.to_thread(main, args)
        return bool(json.loads((out / "eval.json").read_text())["questions"][0]["ok"])

    assert not await passes()
    assert (
        await asyncio.to_thread(main, ["--config", str(path), "kb", "review", taught, "approve"])
        == 0
    )
    assert await passes()
