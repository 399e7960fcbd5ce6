"""The knowledge base: reading documents, finding the right passage, and answers that cite
their sources or say they don't know — through the real service, with a scripted model.

The embedding model (the bundled all-MiniLM-L6-v2) is loaded once for the module, and the sample
knowledge base ingested once; each test that changes an index gets its own database.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from adapters.memory import MemoryAdapter, MemoryReply
from bot.app import cli
from bot.config import Config, KnowledgeConfig, LimitsConfig, StoreConfig
from bot.core.conversation import ConversationManager
from bot.core.service import Outcome, Service
from bot.core.wording import HANDOFF, OFFER_A_PERSON
from bot.events import Event
from bot.knowledge import base as knowledge_base
from bot.knowledge.base import Knowledge, KnowledgeBase
from bot.knowledge.cite import FOOTER_HEADING, strip_sources
from bot.knowledge.embed import Embedder
from bot.knowledge.ingest import parse, read_document
from bot.storage.sqlite import SQLiteStore
from tests.scripted import ScriptedBackend

AnswerMode = Literal["extractive", "grounded", "free"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "config" / "knowledge"
QUESTIONS = ROOT / "tests" / "data" / "kb_questions.jsonl"
NO_LIMITS = LimitsConfig(user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def sample(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knowledge]:
    """The sample knowledge base, ingested once (read-only for the tests that use it)."""
    db = tmp_path_factory.mktemp("kb") / "parley.db"
    knowledge = Knowledge(KnowledgeConfig(paths=[str(SAMPLE)]), str(db), embedder)
    knowledge.open()
    knowledge.refresh()
    yield knowledge
    knowledge.close()


def _articles(found: object) -> list[str]:
    return [Path(s.path).name for s in found.sources()]  # type: ignore[attr-defined]


# -- reading documents ---------------------------------------------------------------------------


def test_markdown_splits_along_headings_with_title_and_front_matter() -> None:
    text = (
        "---\ntitle: Refunds\nurl: https://help.example.com/refunds\n---\n"
        "Intro before any section.\n\n"
        "## Who can ask\n\nAnyone within 30 days.\n\n"
        "### Exceptions\n\nNot gift cards.\n\n"
        "```sh\n# not a heading, a shell comment\ncurl …\n```\n\n"
        "## How\n\nWrite to us.\n"
    )
    document = parse(text, ".md", "kb/refunds.md", "digest", fallback_title="refunds")
    assert document.title == "Refunds"
    assert document.url == "https://help.example.com/refunds"
    assert [(s.heading, s.text.splitlines()[0]) for s in document.sections] == [
        ("", "Intro before any section."),
        ("Who can ask", "Anyone within 30 days."),
        ("Exceptions", "Not gift cards."),
        ("How", "Write to us."),
    ]
    assert "# not a heading" in document.sections[2].text


def test_markdown_title_comes_from_the_first_level_one_heading(tmp_path: Path) -> None:
    path = tmp_path / "shipping-times.md"
    path.write_text("# Delivery times\n\n## Europe\n\nFour days.\n")
    document = read_document(path)
    assert document.title == "Delivery times"
    assert [s.heading for s in document.sections] == ["Europe"]
    path.write_text("Just text, no heading.\n")
    assert read_document(path).title == "Shipping times"


def test_html_keeps_headings_and_text_and_drops_scripts_and_navigation() -> None:
    html = """<html><head><title>Help: Returns</title>
    <link rel="canonical" href="https://help.example.com/returns"><style>p{}</style></head>
    <body><nav>Home | Help</nav><h1>Returns</h1><p>Within 30 days.</p>
    <h2>Labels</h2><p>We email a <b>prepaid</b> label.</p><script>track()</script>
    <ul><li>Pack it</li><li>Send it</li></ul></body></html>"""
    document = parse(html, ".html", "returns.html", "d", fallback_title="returns")
    assert document.title == "Returns"
    assert document.url == "https://help.example.com/returns"
    assert [s.heading for s in document.sections] == ["", "Labels"]
    labels = document.sections[1].text
    assert "We email a prepaid label." in labels and "- Pack it" in labels
    assert "track()" not in labels and "Home | Help" not in document.sections[0].text


def test_a_long_section_is_cut_at_paragraphs_into_readable_passages() -> None:
    paragraphs = [f"Paragraph {n}. " + "word " * 60 for n in range(12)]
    document = parse("## Long\n\n" + "\n\n".join(paragraphs), ".md", "x.md", "d", "x")
    assert len(document.sections) > 2
    assert all(s.heading == "Long" and len(s.text) <= 1200 for s in document.sections)
    assert all(s.text.startswith("Paragraph") for s in document.sections)
    assert sum(s.text.count("Paragraph") for s in document.sections) == 12


# -- the index ----------------------------------------------------------------------------------


def test_reingesting_a_changed_file_replaces_its_passages(
    tmp_path: Path, embedder: Embedder
) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "hours.md").write_text("# Opening hours\n\n## Weekdays\n\nWe open at 9 am.\n")
    (folder / "notes.txt").write_text("Parking is behind the building.\n")
    knowledge = Knowledge(KnowledgeConfig(paths=[str(folder)]), str(tmp_path / "p.db"), embedder)
    knowledge.open()
    first = knowledge.refresh()
    assert len(first.added) == 2 and first.passages == 2

    (folder / "hours.md").write_text(
        "# Opening hours\n\n## Weekdays\n\nWe open at 10 am.\n\n## Weekends\n\nClosed.\n"
    )
    second = knowledge.refresh()
    assert [Path(p).name for p in second.updated] == ["hours.md"]
    assert [Path(p).name for p in second.unchanged] == ["notes.txt"]
    texts = [p.text for p in knowledge.retriever.passages]
    assert "We open at 10 am." in texts and "Closed." in texts
    assert "We open at 9 am." not in texts

    (folder / "notes.txt").unlink()
    third = knowledge.refresh()
    assert len(third.removed) == 1 and third.passages == 2
    assert [s.title for s in knowledge.sources()] == ["Opening hours"]
    knowledge.close()

    # The passages live in the store's database file, in their own tables.
    with sqlite3.connect(tmp_path / "p.db") as db:
        assert db.execute("SELECT COUNT(*) FROM kb_passages").fetchone() == (2,)


def test_collections_limit_where_answers_come_from(tmp_path: Path, embedder: Embedder) -> None:
    (tmp_path / "billing.md").write_text("# Invoices\n\nInvoices are emailed monthly.\n")
    (tmp_path / "tech.md").write_text("# Sync errors\n\nRestart the app to rescan files.\n")
    knowledge = Knowledge(KnowledgeConfig(paths=[]), str(tmp_path / "p.db"), embedder)
    knowledge.open()
    knowledge.ingest([tmp_path / "billing.md"], collection="billing")
    knowledge.ingest([tmp_path / "tech.md"], collection="tech")
    question = "where do i find my monthly invoice"
    assert knowledge.search(question).sources()[0].title == "Invoices"
    only_tech = knowledge.search(question, collections=["tech"])
    assert {s.title for s in only_tech.sources()} == {"Sync errors"}
    knowledge.close()


# -- retrieval on the sample knowledge base ------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "article"),
    [
        ("i forgot my pasword and cant log in", "resetting-your-password.md"),
        ("how do i get a refnud for my anual plan", "refund-policy.md"),
        ("do you deliver the backup device to australia?", "shipping.md"),
        ("are you open on sundays", "contacting-support.md"),
    ],
)
def test_customer_questions_find_the_article_that_answers_them(
    sample: Knowledge, question: str, article: str
) -> None:
    found = sample.retrieve(question)
    assert found.confident
    assert _articles(found)[0] == article


@pytest.mark.parametrize(
    "question", ["how do i bake sourdough bread", "who won the football world cup in 2018"]
)
def test_questions_the_knowledge_base_cannot_answer_are_not_confident(
    sample: Knowledge, question: str
) -> None:
    assert not sample.retrieve(question).confident


def test_the_evaluation_set_is_large_realistic_and_points_at_real_articles() -> None:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
    answerable = [r for r in rows if r["article"]]
    assert len(answerable) >= 60 and len(rows) - len(answerable) >= 15
    stemmer = Stemmer.Stemmer("english")
    ignore = set(STOPWORDS_EN) | {"your", "you", "my", "i"}

    def terms(text: str) -> set[str]:
        words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in ignore]
        return set(stemmer.stemWords(words))

    for row in answerable:
        title = read_document(SAMPLE / row["article"]).title
        # Phrased as customers write, not with the article's own words.
        assert not terms(title) & terms(row["question"]), row


def test_a_question_closer_to_an_off_topic_example_than_to_the_articles_is_not_confident(
    embedder: Embedder, tmp_path: Path
) -> None:
    config = KnowledgeConfig(paths=[str(SAMPLE)], off_topic=["can I book a table for dinner"])
    knowledge = Knowledge(config, str(tmp_path / "p.db"), embedder, company="Acme Cloud")
    knowledge.open()
    knowledge.refresh()
    # Close to the articles by their words (the company's name, "files", "table"), yet no
    # article answers them; the examples do: one built in, one named, one of the config's.
    for question in (
        "whos the boss at acme cloud these days",
        "write a short poem about my files",
        "can i reserve a table for two at 8pm",
    ):
        found = knowledge.retrieve(question)
        assert not found.confident, question
        assert found.judgement is not None and "closest off-topic" in found.judgement.why
        assert "margin" in found.judgement.why and any(
            line.startswith("margin") and line.endswith("don't know")
            for line in found.judgement.votes()
        ), found.judgement.votes()
    found = knowledge.retrieve("how do i reset my password")
    assert found.confident and found.judgement is not None
    assert found.judgement.log_odds > 0
    assert next(line for line in found.judgement.votes() if line.startswith("margin")).endswith(
        " answer"
    )
    knowledge.close()


# -- answers through the service -----------------------------------------------------------------


async def _service(
    tmp_path: Path,
    embedder: Embedder,
    backend: ScriptedBackend,
    paths: list[str] | None = None,
    sample: Knowledge | None = None,
    mode: AnswerMode = "free",
) -> Service:
    knowledge = KnowledgeConfig(paths=[str(SAMPLE)] if paths is None else paths, answer_mode=mode)
    if sample is not None:
        # A copy of the sample's index: start-up finds every file unchanged, nothing to embed.
        with sqlite3.connect(tmp_path / "parley.db") as copy:
            sample.index._conn().backup(copy)
    config = Config(
        store=StoreConfig(path=str(tmp_path / "parley.db")), limits=NO_LIMITS, knowledge=knowledge
    )
    kb = KnowledgeBase(knowledge, config.store.path, embedder)
    service = Service(config, backend, SQLiteStore(config.store.path), kb)
    await service.start()
    return service


async def test_an_answer_comes_from_the_sources_and_lists_them(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend("Yearly plans can be refunded within 30 days.")
    service = await _service(tmp_path, embedder, backend, sample=sample)
    text = (
        await MemoryAdapter(service)
        .send("i paid for a year yesterday and changed my mind, money back?")
        .wait()
    )

    system = backend.prompts[0][0].content
    assert "using only the numbered sources below" in system
    assert "[1] Refund policy" in system and "within 30 days of the first payment" in system
    answer, footer = text.split(f"\n\n{FOOTER_HEADING}\n")
    assert answer == "Yearly plans can be refunded within 30 days."
    assert footer.splitlines()[0] == "- Refund policy (config/knowledge/refund-policy.md)"
    await service.close()


async def test_a_question_nothing_answers_gets_the_dont_know_message_without_the_model(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend("Bread needs flour, water and salt.")
    service = await _service(tmp_path, embedder, backend, sample=sample)
    chat = MemoryAdapter(service)
    reply = chat.send("how do i bake sourdough bread")
    text = await reply.wait()
    await chat.drain()  # recorded once posted
    # It says so, what it can help with (the closest articles' titles), and offers a person.
    said, topics, offer = text.split("\n")
    assert said == KnowledgeConfig().dont_know_message
    assert re.fullmatch(r"I can help with questions about [^,]+, [^,]+ and [^,]+\.", topics)
    titles = {info.title for info in sample.sources()}
    assert any(title in topics for title in titles), topics
    assert offer == OFFER_A_PERSON
    assert not reply.started and backend.prompts == []
    with sqlite3.connect(tmp_path / "parley.db") as db:
        rows = db.execute("SELECT role, status FROM messages ORDER BY id").fetchall()
    # Recorded as a don't-know, which handoff and `parley report` count.
    assert rows == [("user", "complete"), ("assistant", "dont_know")]
    # Saying yes to the offer hands the conversation to a person.
    accepted = chat.send("yes please")
    await accepted.wait()
    assert accepted.handed_off and accepted.outcome is Outcome.HANDED_OFF
    await service.close()


async def test_yes_without_an_offer_is_an_ordinary_message(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    service = await _service(tmp_path, embedder, ScriptedBackend("Yes."), sample=sample)
    chat = MemoryAdapter(service)
    await chat.send("hi").wait()
    reply = chat.send("yes")
    await reply.wait()
    assert not reply.handed_off
    await service.close()


async def test_two_dont_knows_in_a_row_hand_the_customer_to_a_person(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend("Bread needs flour, water and salt.")
    service = await _service(tmp_path, embedder, backend, sample=sample)
    chat = MemoryAdapter(service)
    first = chat.send("how do i bake sourdough bread")
    assert (await first.wait()).endswith(OFFER_A_PERSON) and not first.handed_off
    second = chat.send("what movies are playing tonight")
    text = await second.wait()
    assert second.handed_off
    assert text.startswith(KnowledgeConfig().dont_know_message) and text.endswith(f"\n\n{HANDOFF}")
    assert OFFER_A_PERSON not in text
    # From now on the bot stays quiet here until staff hand the conversation back.
    quiet = chat.send("hello?")
    await chat.drain()
    assert quiet.outcome is Outcome.HANDED_OFF and quiet.text is None
    assert backend.prompts == []
    await service.close()


async def test_the_answer_result_says_dont_know_for_handoff_to_count(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    config = KnowledgeConfig(paths=[str(SAMPLE)], answer_mode="free")
    with sqlite3.connect(tmp_path / "parley.db") as copy:
        sample.index._conn().backup(copy)
    store = SQLiteStore(str(tmp_path / "parley.db"))
    await store.open()
    kb = KnowledgeBase(config, store.path, embedder)
    manager = ConversationManager(
        store, ScriptedBackend("ok"), Config().bot, Config().model, knowledge=kb
    )
    await manager.start()
    outside, inside = MemoryReply(), MemoryReply()
    event = Event(platform="memory", channel="c", user="u", text="")
    unknown = await manager.submit(event, "what movies are playing tonight", outside)
    known = await manager.submit(event, "can i pay with paypal", inside)
    assert unknown.outcome == "dont_know" and unknown.sources == ()
    assert known.outcome == "answered"
    assert known.sources[0].title == "Payment methods"
    await manager.close()
    await store.close()


async def test_small_talk_and_follow_ups_are_answered_without_a_dont_know(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend("Happy to help!")
    service = await _service(tmp_path, embedder, backend, sample=sample)
    chat = MemoryAdapter(service)
    assert await chat.send("hi there!").wait() == (
        "Hi! I'm Parley, Acme Cloud's support assistant. What can I help you with?"
    )
    assert await chat.send("thanks so much!!").wait() == (
        "You're welcome! Is there anything else I can help with?"
    )
    assert backend.prompts == []  # written replies: the model is not asked

    await chat.send("my card got declined when you tried to renew").wait()
    follow_up = await chat.send("and how many days before everything stops?").wait()
    assert "- When a payment fails (config/knowledge/failed-payments.md)" in follow_up
    # A new question is not a follow-up: it does not borrow the earlier one's topic.
    assert (await chat.send("how do i bake sourdough bread").wait()).startswith(
        KnowledgeConfig().dont_know_message
    )
    # The earlier answer is in the prompt without its footer: sources are numbered afresh.
    earlier = [m.content for m in backend.prompts[-1] if m.role == "assistant"]
    assert earlier[-1] == "Happy to help!" and earlier[1].startswith("You're welcome!")
    await service.close()


@pytest.mark.parametrize(
    ("mode", "answer", "link"),
    [
        # The model's answer, citing the document.
        ("free", "Within 30 days.", "[Getting your money back](https://help.example.com/refunds)"),
        # The quoted sentence, citing its section by the heading's anchor.
        (
            "extractive",
            "Refunds of a yearly plan are possible within 30 days of paying.",
            "[Getting your money back › Yearly plans]"
            "(https://help.example.com/refunds#yearly-plans)",
        ),
    ],
)
async def test_documents_with_a_url_are_cited_as_markdown_links(
    tmp_path: Path, embedder: Embedder, mode: AnswerMode, answer: str, link: str
) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "refunds.md").write_text(
        "---\nurl: https://help.example.com/refunds\n---\n# Getting your money back\n\n"
        "## Yearly plans\n\nRefunds of a yearly plan are possible within 30 days of paying.\n"
    )
    backend = ScriptedBackend("Within 30 days.")
    service = await _service(tmp_path, embedder, backend, paths=[str(folder)], mode=mode)
    text = await MemoryAdapter(service).send("can i get a refund on my yearly plan").wait()
    assert text == f"{answer}\n\n{FOOTER_HEADING}\n- {link}"
    await service.close()


async def test_an_empty_knowledge_base_answers_as_before(
    tmp_path: Path, embedder: Embedder
) -> None:
    backend = ScriptedBackend("Hello! How can I help?")
    service = await _service(tmp_path, embedder, backend, paths=[])
    text = await MemoryAdapter(service).send("how do i bake sourdough bread").wait()
    assert text == "Hello! How can I help?"
    assert backend.prompts[0][0].content == service.conversations.system_prompt
    await service.close()


async def test_an_extractive_answer_quotes_the_article_without_the_model(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend("Click on Settings, then Security, then Reset Password.")
    service = await _service(tmp_path, embedder, backend, sample=sample, mode="extractive")
    text = await MemoryAdapter(service).send("how do i reset my password?").wait()
    answer, footer = text.split(f"\n\n{FOOTER_HEADING}\n")
    assert backend.prompts == []
    assert 'On the sign-in page choose "Forgot password?"' in answer
    assert "Security" not in answer
    # The section quoted is named; without a URL, the document's path is shown.
    assert footer.splitlines()[0] == (
        "- Resetting a forgotten password › Getting a reset link"
        " (config/knowledge/resetting-your-password.md)"
    )
    await service.close()


async def test_an_extractive_answer_answers_each_part_of_a_question(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    service = await _service(
        tmp_path, embedder, ScriptedBackend(), sample=sample, mode="extractive"
    )
    text = (
        await MemoryAdapter(service)
        .send("how long does the reset link work and how do i turn on two-step verification?")
        .wait()
    )
    assert "works for 60 minutes" in text
    assert "resetting-your-password.md" in text and "two-step-verification.md" in text
    await service.close()


async def test_a_grounded_answer_drops_what_the_sentences_do_not_say(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend(
        'Choose "Forgot password?" on the sign-in page. Then click on Settings, then Security,'
        " then Reset Password. The link works for 60 days."
    )
    service = await _service(tmp_path, embedder, backend, sample=sample, mode="grounded")
    reply = MemoryAdapter(service).send("how do i reset my password?")
    text = await reply.wait()
    system = backend.prompts[0][0].content
    # The model is given the chosen sentences only, not whole sections.
    assert 'choose "Forgot password?"' in system and "[1]" not in system
    assert strip_sources(text) == 'Choose "Forgot password?" on the sign-in page.'
    # Nothing unchecked was ever shown, not even while streaming.
    assert all("Security" not in shown and "60 days" not in shown for shown in reply.updates)
    assert service.metrics.claims_dropped._value.get() == 2
    await service.close()


async def test_a_grounded_answer_with_nothing_grounded_left_is_the_dont_know(
    tmp_path: Path, embedder: Embedder, sample: Knowledge
) -> None:
    backend = ScriptedBackend("Call us on +1 800 555 0199 and we will reset it for you.")
    service = await _service(tmp_path, embedder, backend, sample=sample, mode="grounded")
    text = await MemoryAdapter(service).send("how do i reset my password?").wait()
    assert text.startswith(KnowledgeConfig().dont_know_message)
    await service.close()


@pytest.mark.parametrize("mode", ["extractive", "grounded"])
async def test_odd_knowledge_and_questions_get_a_clear_answer(
    tmp_path: Path, embedder: Embedder, mode: AnswerMode
) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    # A 50 KB article, and a section with no sentence end at all.
    long = "".join(f"Locker {n} opens with code {1000 + n}. " for n in range(1700))
    (folder / "lockers.md").write_text(f"# Lockers\n\n## Codes\n\n{long}\n")
    (folder / "notes.md").write_text("# Notes\n\n## Parking\n\nparking is behind the depot\n")
    assert len(long) > 50_000
    backend = ScriptedBackend("Parking is behind the depot.")
    service = await _service(tmp_path, embedder, backend, paths=[str(folder)], mode=mode)
    chat = MemoryAdapter(service)
    for question in (
        "where is the parking",
        "¿Dónde está el aparcamiento?",
        "what code opens locker 7",
    ):
        reply = chat.send(question)
        text = await reply.wait()
        assert text and not reply.failed, question
    await service.close()


# -- the command line ---------------------------------------------------------------------------


def test_kb_commands_ingest_search_and_list(
    tmp_path: Path,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(knowledge_base, "Embedder", lambda name: embedder)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "hours.md").write_text(
        "# Opening hours\n\n## Weekdays\n\nThe help desk answers from 9 am to 5 pm.\n"
    )
    (folder / "faq.html").write_text(
        "<title>FAQ</title><h2>Parking</h2><p>Visitors park behind the building.</p>"
    )
    config = tmp_path / "parley.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "parley.db"}"\n[knowledge]\npaths = []\n')
    assert cli.main(["--config", str(config), "kb", "ingest", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "2 added" in out and "2 passages" in out

    assert cli.main(["--config", str(config), "kb", "search", "where can visitors leave cars"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "The bot answers from these passages."
    # Why: the log-odds, and which way each signal voted.
    assert lines[1].strip().startswith("log-odds +")
    assert any(re.fullmatch(r"\s*margin\s+-?\d\.\d\d\s+[+-]\d+\.\d\d\s+answer", x) for x in lines)
    hit = next(line for line in lines if "FAQ › Parking" in line)
    assert re.match(r"\s*1\s+0\.\d+\s+0\.\d\d\s+\d+\.\d\s+FAQ › Parking", hit)
    # And the sentence an answer would quote, with where it is from.
    quoted = lines[
        lines.index("The sentences an answer rests on (answer_mode = 'extractive'), best first:")
        + 1
    ]
    assert quoted.endswith("Visitors park behind the building.  (FAQ › Parking)")

    assert cli.main(["--config", str(config), "kb", "list"]) == 0
    out = capsys.readouterr().out
    assert "FAQ" in out and "Opening hours" in out and "2 documents, 2 passages" in out

    assert cli.main(["--config", str(config), "kb", "ingest", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_the_shipped_default_answers_from_the_sample_knowledge_base() -> None:
    config = Config()
    assert config.knowledge.enabled and config.knowledge.auto_ingest
    assert [knowledge_base.resolve(p) for p in config.knowledge.paths] == [SAMPLE.resolve()]
    assert 20 <= len(list(SAMPLE.glob("*.md"))) <= 40
    assert dataclasses.asdict(config.knowledge)["min_score"] > 0
