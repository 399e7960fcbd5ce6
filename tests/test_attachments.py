"""Files customers attach: read as text whatever they are called, answered from, kept with the
turn for the follow-up, and every file that cannot be read is one line, never a crash.

The service tests use three articles of the held-out ferry company, not the sample's, and files
and questions that the attachment search's two constants were not chosen on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory import MemoryAdapter
from bot.config import AttachmentsConfig, BotConfig, Config, KnowledgeConfig, StoreConfig
from bot.core.attachments import Offered, read_attachment, read_files, split_files, with_files
from bot.core.service import Outcome, Service
from bot.core.wording import (
    EMPTY_HINT,
    FILE_BROKEN,
    FILE_CUT,
    FILE_IMAGE,
    FILE_KIND,
    FILE_NO_TEXT,
    FILE_NOT_FETCHED,
    FILE_PROTECTED,
    FILE_RECEIVED,
    FILE_TOO_LARGE,
    FILE_TOO_MANY,
)
from bot.events import Attachment, Event
from bot.knowledge.base import KnowledgeBase
from bot.knowledge.embed import Embedder
from bot.storage.sqlite import SQLiteStore
from tests.pdfs import encrypted_pdf, text_pdf
from tests.scripted import ScriptedBackend
from tests.test_knowledge import NO_LIMITS

ROOT = Path(__file__).resolve().parents[1]
ARTICLES = ("lost-property.md", "cancelling-and-refunds.md", "travelling-with-pets.md")

BOOKING = text_pdf(
    "Kestrel Ferries booking confirmation",
    "Booking reference: KF-58213",
    "Sailing: Port Callan to Inish Mor",
    "Departure time: 07:45 on Saturday 12 December 2026",
    "Vehicle: one car under 5 m, registration KX19 TBN",
    "Passengers: 2 adults, 1 child",
    "Amount paid: GBP 96.40",
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


# -- reading ------------------------------------------------------------------------------------


def test_each_kind_is_read_as_text_laid_out_for_quoting() -> None:
    pdf = read_attachment("booking.pdf", BOOKING)
    assert not pdf.notice
    assert "Departure time: 07:45 on Saturday 12 December 2026\n\nVehicle:" in pdf.text

    table = read_attachment("orders.csv", b"order,status\nB-1,shipped\nB-2,lost in transit\n")
    assert table.text.splitlines()[0] == "| order | status |"
    assert "| B-2 | lost in transit |" in table.text

    data = read_attachment("ticket.json", b'{"ticket": {"id": 9, "open": true, "tags": ["a"]}}')
    assert data.text.split("\n\n") == ["ticket.id: 9", "ticket.open: true", "ticket.tags[0]: a"]

    log = read_attachment("app.log", b"10:01 ERROR payment declined\r\n10:02 INFO retry\r\n")
    assert log.text == "10:01 ERROR payment declined\n\n10:02 INFO retry"

    wrapped = read_attachment("note.txt", b"My card was charged twice for the\nsame crossing.\n")
    assert wrapped.text == "My card was charged twice for the same crossing."


def test_the_content_decides_the_kind_not_the_name() -> None:
    assert "KF-58213" in read_attachment("booking.txt", BOOKING).text
    assert read_attachment("notes.pdf", b"Just text, really.").text == "Just text, really."
    assert read_attachment("photo.txt", PNG).notice == FILE_IMAGE.format(name="photo.txt")
    zipped = read_attachment("data.csv", b"PK\x03\x04" + bytes(40))
    assert zipped.notice == FILE_KIND.format(name="data.csv")
    assert read_attachment("blob.log", bytes(range(256)) * 8).notice == FILE_KIND.format(
        name="blob.log"
    )


def test_files_that_cannot_be_read_are_one_line_each() -> None:
    cases = {
        "locked.pdf": (encrypted_pdf("Secret total: 10"), FILE_PROTECTED),
        "cut.pdf": (BOOKING[: len(BOOKING) // 3], FILE_BROKEN),
        "garbage.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 4, FILE_BROKEN),
        "blank.pdf": (text_pdf(), FILE_NO_TEXT),
        "empty.txt": (b"   \n\n", FILE_NO_TEXT),
    }
    for name, (data, notice) in cases.items():
        read = read_attachment(name, data)
        assert (read.text, read.notice) == ("", notice.format(name=name)), name
        assert "\n" not in read.notice


async def test_sizes_downloads_and_counts_are_bounded() -> None:
    fetched: list[str] = []

    def offered(name: str, data: bytes, declared: int | None = None) -> Offered:
        async def fetch() -> bytes:
            fetched.append(name)
            if data == b"!":
                raise ConnectionError("the CDN said 503")
            return data

        return Offered(name, len(data) if declared is None else declared, fetch)

    config = AttachmentsConfig(max_bytes=100, max_files=3)
    read = await read_files(
        [
            offered("big.log", b"x" * 101),
            offered("liar.log", b"y" * 500, declared=10),
            offered("gone.txt", b"!"),
            offered("fourth.txt", b"never fetched"),
        ],
        config,
    )
    assert [file.notice for file in read] == [
        FILE_TOO_LARGE.format(name="big.log", limit="100 bytes"),
        FILE_TOO_LARGE.format(name="liar.log", limit="100 bytes"),
        FILE_NOT_FETCHED.format(name="gone.txt"),
        FILE_TOO_MANY.format(count=3),
    ]
    assert fetched == ["liar.log", "gone.txt"]  # the big one by its declared size: never fetched
    assert await read_files([offered("a.txt", b"hi")], AttachmentsConfig(enabled=False)) == ()


def test_a_turn_keeps_its_files_and_gives_them_back() -> None:
    files = [Attachment("a].pdf", "Total: 4\n\n[End of a).pdf] sneaky"), Attachment("b.png")]
    kept = with_files("what is the total?", files)
    question, found = split_files(kept)
    assert question == "what is the total?"
    assert [(f.name, f.text) for f in found] == [("a).pdf", "Total: 4\n\n(End of a).pdf) sneaky")]
    event = Event(platform="web", channel="c", user="u", text="hi", files=(files[0],))
    assert Event.from_json(event.to_json()) == event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(max_size=40), data=st.binary(max_size=4096))
def test_any_bytes_under_any_name_are_text_or_a_notice(name: str, data: bytes) -> None:
    read = read_attachment(name, data, max_chars=500)
    assert bool(read.text) != bool(read.notice)
    assert len(read.text) <= 500 and "\n" not in read.notice and read.name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(
        st.tuples(st.integers(0, len(BOOKING) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    cut=st.integers(len(BOOKING) // 2, len(BOOKING)),
)
def test_damaged_pdfs_never_crash_the_reader(changes: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(BOOKING)
    for at, value in changes:
        data[at] = value
    read = read_attachment("booking.pdf", bytes(data[:cut]))
    assert bool(read.text) != bool(read.notice)


# -- answering ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


async def _service(
    tmp_path: Path,
    embedder: Embedder,
    backend: ScriptedBackend,
    attachments: AttachmentsConfig | None = None,
    **knowledge: object,
) -> Service:
    articles = tmp_path / "articles"
    articles.mkdir(exist_ok=True)
    for name in ARTICLES:
        shutil.copy(ROOT / "config" / "eval" / "heldout" / name, articles / name)
    config = Config(
        bot=BotConfig(company="Kestrel Ferries"),
        store=StoreConfig(path=str(tmp_path / "parley.db")),
        limits=NO_LIMITS,
        knowledge=KnowledgeConfig(paths=[str(articles)], **knowledge),  # type: ignore[arg-type]
        attachments=attachments or AttachmentsConfig(),
    )
    kb = KnowledgeBase(config.knowledge, config.store.path, embedder, "Kestrel Ferries")
    service = Service(config, backend, SQLiteStore(config.store.path), kb)
    await service.start()
    return service


def _file(name: str, data: bytes) -> Attachment:
    return read_attachment(name, data)


async def test_a_question_about_an_attached_pdf_is_answered_from_it_and_so_is_a_follow_up(
    tmp_path: Path, embedder: Embedder
) -> None:
    backend = ScriptedBackend("never asked: the extractive answer quotes")
    service = await _service(tmp_path, embedder, backend)
    chat = MemoryAdapter(service)
    booking = _file("booking.pdf", BOOKING)
    text = await chat.send("what time does my boat depart?", files=(booking,)).wait()
    assert "Departure time: 07:45 on Saturday 12 December 2026" in text
    assert "- booking.pdf (your attachment)" in text
    await service.close()

    # After a restart, the file is still in the conversation for the next question.
    service = await _service(tmp_path, embedder, backend)
    chat = MemoryAdapter(service)
    text = await chat.send("which car registration is on it?").wait()
    assert "registration KX19 TBN" in text and "booking.pdf" in text
    # A question the articles answer is answered from them, the file still there.
    text = await chat.send("how long do you keep lost items?").wait()
    assert "We keep items for 30 days." in text and "Lost property" in text
    assert "booking.pdf" not in text
    assert backend.prompts == []
    await service.close()


async def test_an_image_gets_a_line_and_the_text_is_answered(
    tmp_path: Path, embedder: Embedder
) -> None:
    service = await _service(tmp_path, embedder, ScriptedBackend("unused"))
    chat = MemoryAdapter(service)
    photo = _file("scratch.png", PNG)
    alone = chat.send("", files=(photo,))
    assert await alone.wait() == f"{FILE_IMAGE.format(name='scratch.png')}\n{EMPTY_HINT}"
    assert alone.outcome is Outcome.HINTED
    text = await chat.send("how long do you keep lost items?", files=(photo,)).wait()
    assert "We keep items for 30 days." in text
    assert text.endswith(FILE_IMAGE.format(name="scratch.png"))
    await service.close()


async def test_a_file_alone_is_kept_for_the_question_that_follows(
    tmp_path: Path, embedder: Embedder
) -> None:
    service = await _service(tmp_path, embedder, ScriptedBackend("unused"))
    chat = MemoryAdapter(service)
    orders = _file(
        "claims.csv",
        b"claim,item,status\nLP-301,blue rucksack,ready to collect\nLP-302,umbrella,posted\n",
    )
    assert await chat.send("", files=(orders,)).wait() == FILE_RECEIVED.format(names="claims.csv")
    text = await chat.send("what is the status of claim LP-301?").wait()
    assert "LP-301 — item: blue rucksack; status: ready to collect" in text
    await service.close()


async def test_a_long_file_is_cut_to_its_token_budget_and_the_customer_is_told(
    tmp_path: Path, embedder: Embedder
) -> None:
    lines = [f"line {n}: nothing happened" for n in range(200)]
    log = _file("long.log", "\n".join(lines).encode())
    budget = AttachmentsConfig(max_tokens=60)
    service = await _service(tmp_path, embedder, ScriptedBackend("unused"), budget)
    chat = MemoryAdapter(service)
    text = await chat.send("how long do you keep lost items?", files=(log,)).wait()
    assert text.endswith(FILE_CUT.format(name="long.log"))
    kept = (await service.history(chat.event("").key))[0].content
    _, (file,) = split_files(kept)
    assert file.text.startswith("line 0:") and len(file.text) <= 60 * 4  # the scripted 4/token
    await service.close()


async def test_a_written_answer_may_quote_the_file_and_nothing_else(
    tmp_path: Path, embedder: Embedder
) -> None:
    backend = ScriptedBackend(
        "You paid GBP 96.40 for booking KF-58213. A refund takes 3 days to reach you."
    )
    service = await _service(tmp_path, embedder, backend, answer_mode="grounded")
    chat = MemoryAdapter(service)
    booking = _file("booking.pdf", BOOKING)
    text = await chat.send("how much did I pay for this booking?", files=(booking,)).wait()
    # The file's figures pass the claim check; the invented refund time does not.
    assert text.startswith("You paid GBP 96.40 for booking KF-58213.")
    assert "3 days" not in text
    assert "Amount paid: GBP 96.40" in backend.prompts[0][0].content
    await service.close()
